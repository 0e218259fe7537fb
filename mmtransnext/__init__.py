from .utils import patch_mmengine_checkpoint_loading
from .version import __version__

patch_mmengine_checkpoint_loading()

from . import engine, models  # noqa: E402,F401  (registers TransNeXt and its optimizer constructor)

__all__ = ['__version__']
