from .utils import patch_mmengine_checkpoint_loading
from .version import __version__

patch_mmengine_checkpoint_loading()

from . import models  # noqa: E402,F401  (registers TransNeXt in the mm registries)

__all__ = ['__version__']
