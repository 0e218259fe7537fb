"""Released checkpoints load into the backbone and the mmpretrain classifier unchanged."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from mmtransnext.models import TransNeXt
from mmtransnext.utils import official_classifier_to_mmpretrain
from .conftest import golden_arch, golden_part


def _build_classifier(golden, **backbone):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(_classifier_cfg(golden, **backbone))


def _classifier_cfg(golden, **backbone):
    return ConfigDict(type='ImageClassifier',
                      backbone=dict(type='TransNeXt',
                                    arch=golden_arch(golden),
                                    img_size=64,
                                    pretrain_size=64,
                                    out_indices=(3, ),
                                    **backbone),
                      neck=dict(type='GlobalAveragePooling'),
                      head=dict(type='LinearClsHead', num_classes=10, in_channels=192))


def test_classifier_logits_match_official(golden):
    ref = golden_part(golden, 'classifier')
    model = _build_classifier(golden).eval()
    model.load_state_dict(official_classifier_to_mmpretrain(ref['state_dict']), strict=True)
    with torch.no_grad():
        logits = model(ref['input'], mode='tensor')
    torch.testing.assert_close(logits, ref['logits'], atol=1e-4, rtol=0)


def test_init_cfg_loads_released_classifier_and_ignores_head(golden, tmp_path):
    path = tmp_path / 'transnext_mini_in1k.pth'
    torch.save({'model': golden_part(golden, 'classifier')['state_dict']}, path)
    model = _build_classifier(golden, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in golden['backbone_state_dict'].items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, atol=0, rtol=0)


def test_init_cfg_loads_downstream_checkpoint_with_backbone_prefix(golden, tmp_path):
    path = tmp_path / 'maskrcnn.pth'
    state = {'backbone.' + k: v for k, v in golden['backbone_state_dict'].items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': state, 'meta': {}}, path)
    model = TransNeXt(arch=golden_arch(golden), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.norm4.weight, golden['backbone_state_dict']['norm4.weight'])


def test_mismatched_checkpoint_names_keys_and_refuses(golden, tmp_path):
    state = dict(golden['backbone_state_dict'])
    del state['block1.0.attn.temperature']
    state['block9.0.attn.q.weight'] = torch.zeros(1)
    path = tmp_path / 'other.pth'
    torch.save(state, path)
    model = TransNeXt(arch=golden_arch(golden), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = model.norm1.weight.detach().clone()
    with pytest.raises(KeyError,
                       match=r"missing keys: \['block1.0.attn.temperature'\].*"
                       r"unexpected keys: \['block9.0.attn.q.weight'\].*strict=False"):
        model.init_weights()
    assert torch.equal(model.norm1.weight, before), 'a refused checkpoint must not be half-loaded'
    # explicitly allowed partial loading loads the rest
    model.init_cfg['strict'] = False
    model.init_weights()
    torch.testing.assert_close(model.norm1.weight, golden['backbone_state_dict']['norm1.weight'])


def test_missing_pretrained_file_says_what_to_do(golden):
    model = TransNeXt(arch=golden_arch(golden), init_cfg=dict(type='Pretrained', checkpoint='nowhere/x.pth'))
    with pytest.raises(FileNotFoundError, match='nowhere/x.pth.*init_cfg=None'):
        model.init_weights()
