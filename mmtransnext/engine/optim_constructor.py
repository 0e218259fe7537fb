from typing import List

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ..models import TransNeXt


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TransNeXtOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, plus the paper's no-weight-decay rule for every TransNeXt
    backbone, written once (:meth:`TransNeXt.no_decay_parameters`): no decay on the position-bias
    MLPs, temperatures, query embeddings, local biases and norms, and on the biases unless
    ``paramwise_cfg=dict(backbone_bias_decay=True)`` (the authors' Mask R-CNN and UperNet recipes
    decay them; their ImageNet, DINO and Mask2Former recipes do not).

    With the default constructor, the longest ``custom_keys`` entry matching a parameter overrides
    all other rules, so ``'backbone': dict(lr_mult=0.1)`` would also give the backbone's norms and
    biases weight decay. Here ``custom_keys`` set the learning rate (and decay elsewhere) as usual,
    and the exemption is applied on top, whatever key matched.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        # a non-empty paramwise_cfg makes the default constructor call add_params
        super().__init__(optim_wrapper_cfg, paramwise_cfg or dict(custom_keys={}))

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        # mmengine's config dict turns the groups built here into ConfigDicts; torch.compile of the optimizer step (what
        # mmengine's compile=True does with train_step) fails on a dict subclass, so the optimizer keeps plain dicts
        optimizer = optim_wrapper.optimizer
        optimizer.param_groups = [dict(group) for group in optimizer.param_groups]
        return optim_wrapper

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '', is_dcn_module=None) -> None:
        first = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix:  # a recursive call for a submodule; the top-level call finishes the job
            return
        biases = not self.paramwise_cfg.get('backbone_bias_decay', False)
        exempt = {id(p) for m in module.modules() if isinstance(m, TransNeXt) for p in m.no_decay_parameters(biases)}
        for group in params[first:]:
            if any(id(p) in exempt for p in group['params']):
                group['weight_decay'] = 0.
