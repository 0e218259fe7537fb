from .utils import patch_mmengine_checkpoint_loading
from .version import __version__

patch_mmengine_checkpoint_loading()

from . import engine, models  # noqa: E402,F401  (registers TransNeXt and its optimizer constructor)
from .utils.model_hub import register_in_mmpretrain_hub  # noqa: E402

register_in_mmpretrain_hub()  # mmpretrain.get_model('transnext_tiny_in1k') and the inferencers by name

__all__ = ['__version__']
