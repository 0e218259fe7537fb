"""Load released TransNeXt weights into the backbone."""
import os.path as osp
from typing import Dict

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader


def unwrap_state_dict(checkpoint) -> Dict:
    """The state dict inside a checkpoint: plain, or under 'state_dict' / 'model'."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def _plain_state_dict(checkpoint) -> Dict:
    """The state dict inside ``checkpoint`` with DataParallel's ``module.`` prefix stripped."""
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in unwrap_state_dict(checkpoint).items()}


def backbone_state_dict(checkpoint) -> Dict:
    """Backbone weights from an ImageNet classifier (``head.*`` dropped), a downstream model
    (``backbone.*`` kept, prefix stripped) or a bare backbone state dict."""
    state = _plain_state_dict(checkpoint)
    if any(k.startswith('backbone.') for k in state):
        return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return {k: v for k, v in state.items() if not k.startswith('head.')}


def load_backbone_weights(model: nn.Module, filename: str, strict: bool = True, map_location='cpu'):
    """Load a TransNeXt checkpoint into ``model``, naming every key that does not fit.

    Args:
        model (nn.Module): the backbone.
        filename (str): local path or URL of the checkpoint.
        strict (bool): raise on missing / unexpected / mis-shaped keys (default). With False, load
            what fits and warn with the names of the rest.
    """
    if '://' not in filename and not osp.isfile(osp.expanduser(filename)):
        raise FileNotFoundError(
            f'pretrained checkpoint {filename} does not exist. Download the released TransNeXt ImageNet '
            'weights (https://github.com/DaiShiResearch/TransNeXt) to that path, point '
            'init_cfg.checkpoint at them, or set init_cfg=None to train from scratch')
    state = backbone_state_dict(CheckpointLoader.load_checkpoint(filename, map_location=map_location))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    problems = []
    if missing:
        problems.append(f'missing keys: {missing}')
    if unexpected:
        problems.append(f'unexpected keys: {unexpected}')
    if mismatched:
        problems.append('shape mismatches: ' +
                        ', '.join(f'{k} {tuple(state[k].shape)} in checkpoint vs {tuple(own[k].shape)} in model'
                                  for k in mismatched))
    if problems:
        message = f'checkpoint {filename} does not fit {type(model).__name__}: ' + '; '.join(problems)
        if strict:
            raise KeyError(message + '. Is it a checkpoint of this arch? To load only the matching keys, '
                           "add strict=False to the backbone's init_cfg")
        print_log(message + ' (loading the matching keys: strict=False)', logger='current', level=30)
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    print_log(f'loaded {len(own) - len(missing) - len(mismatched)}/{len(own)} backbone tensors from {filename}',
              logger='current')


def is_transnext_state_dict(state: Dict, prefix: str = '') -> bool:
    return f'{prefix}patch_embed1.proj.weight' in state and any(k.startswith(f'{prefix}block1.0.attn.') for k in state)


def convert_official_checkpoint(checkpoint) -> Dict:
    """Any released TransNeXt checkpoint -> ``{'state_dict': ..., 'meta': ...}`` that our configs load.

    - ImageNet classifier (``head.*`` + backbone keys): mmpretrain ``ImageClassifier`` keys.
    - Downstream model (``backbone.*``, from the authors' mmdet 2.x / 3.x or mmseg 0.x / 1.x code): the
      same keys (the heads' names did not change between those versions); training state is dropped.
    - Bare backbone: keys prefixed with ``backbone.``.
    Raises ValueError for a file that is not a TransNeXt checkpoint.
    """
    state = _plain_state_dict(checkpoint)
    if is_transnext_state_dict(state, 'backbone.'):
        converted = state
    elif is_transnext_state_dict(state):
        converted = (official_classifier_to_mmpretrain(state) if 'head.weight' in state else {
            'backbone.' + k: v
            for k, v in state.items()
        })
    else:
        sample = ', '.join(list(state)[:5])
        raise ValueError(f'not a TransNeXt checkpoint: no patch_embed1 / block1 attention keys (first keys: {sample})')
    meta = dict(checkpoint.get('meta') or {}) if isinstance(checkpoint, dict) else {}
    meta['converted_by'] = 'mmtransnext convert_official'
    return dict(state_dict=converted, meta=meta)


def official_classifier_to_mmpretrain(checkpoint) -> Dict:
    """Keys of a released ImageNet classifier -> an mmpretrain ``ImageClassifier`` with a TransNeXt
    backbone and a ``LinearClsHead`` (``head.weight`` becomes ``head.fc.weight``)."""
    converted = {}
    for key, value in unwrap_state_dict(checkpoint).items():
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        else:
            converted['backbone.' + key] = value
    return converted
