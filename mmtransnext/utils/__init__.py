from .checkpoint import (backbone_state_dict, convert_official_checkpoint, is_transnext_state_dict,
                         load_backbone_weights, official_classifier_to_mmpretrain, unwrap_state_dict)
from .mmengine_compat import (CheckpointReadError, UntrustedCheckpointError, load_local_checkpoint,
                              patch_mmengine_checkpoint_loading)

__all__ = [
    'backbone_state_dict', 'convert_official_checkpoint', 'is_transnext_state_dict', 'load_backbone_weights',
    'official_classifier_to_mmpretrain', 'unwrap_state_dict', 'CheckpointReadError', 'UntrustedCheckpointError',
    'load_local_checkpoint', 'patch_mmengine_checkpoint_loading'
]
