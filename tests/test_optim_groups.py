"""The paper's optimiser rules as the configs' optim_wrapper builds them: every parameter's lr and weight decay."""
import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mmtransnext.models import TransNeXt
from .helpers import ROOT


def _groups(name, scope):
    cfg = Config.fromfile(ROOT / 'configs' / f'{name}.py')
    cfg.model.backbone.init_cfg = None
    cfg.optim_wrapper.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU; the groups are the same
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import MODELS
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # plain dicts, not ConfigDicts: torch.compile of the optimizer step (mmengine's compile=True) fails on those
    assert all(type(g) is dict for g in wrapper.optimizer.param_groups)
    settings = {id(p): (g['lr'], g['weight_decay']) for g in wrapper.optimizer.param_groups for p in g['params']}
    base = cfg.optim_wrapper.optimizer
    return model, settings, base.lr, base.weight_decay


def _backbone(model):
    return next(m for m in model.modules() if isinstance(m, TransNeXt))


@pytest.mark.parametrize('name, scope, backbone_lr_mult, biases_decay',
                         [('transnext_tiny_in1k', 'mmpretrain', 1.0, False),
                          ('mask2former_transnext_tiny', 'mmseg', 0.1, False),
                          ('dino-5scale_transnext_tiny', 'mmdet', 0.1, False),
                          ('maskrcnn_transnext_tiny', 'mmdet', 1.0, True),
                          ('upernet_transnext_tiny', 'mmseg', 1.0, True)])
def test_backbone_groups_follow_the_paper(name, scope, backbone_lr_mult, biases_decay):
    model, settings, lr, wd = _groups(name, scope)
    backbone = _backbone(model)
    # what the paper exempts in every recipe: position-bias MLPs, temperatures, query embeddings, local biases,
    # norms; biases too except in the Mask R-CNN and UperNet recipes (as the authors' configs)
    special = ('cpb', 'temperature', 'query_embedding', 'relative_pos_bias_local', 'norm')  # every norm is 'norm*'
    for pname, param in backbone.named_parameters():
        exempt = any(k in pname for k in special) or (pname.endswith('.bias') and not biases_decay)
        assert settings[id(param)] == pytest.approx((lr * backbone_lr_mult, 0. if exempt else wd)), pname
    names = dict(backbone.named_parameters())
    for kind in ('attn.q.bias', 'mlp.fc1.bias', 'attn.q.weight', 'mlp.fc1.weight', 'cpb_fc1.weight'):
        assert any(n.endswith(kind) for n in names), kind  # the rules above were checked on these


def test_mask2former_head_groups():
    model, settings, lr, wd = _groups('mask2former_transnext_tiny', 'mmseg')
    head = dict(model.decode_head.named_parameters())
    for pname in ('query_embed.weight', 'query_feat.weight', 'level_embed.weight'):  # as mmseg's Mask2Former
        assert settings[id(head[pname])] == pytest.approx((lr, 0.)), pname
    norms = [n for n in head if '.norm' in n or 'norms.' in n]
    assert norms and all(settings[id(head[n])][1] == 0. for n in norms)
    linear = [n for n in head if n.endswith('cls_embed.weight')]
    assert linear and all(settings[id(head[n])] == pytest.approx((lr, wd)) for n in linear)
