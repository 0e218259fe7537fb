"""tools/model_converters/convert_official.py's conversion, key by key, for every layout it accepts."""
import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.utils import convert_official_checkpoint


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return {k: torch.randn_like(v) for k, v in TransNeXt(arch='micro', img_size=64).state_dict().items()}


def _assert_same_tensors(converted, expected):
    assert set(converted) == set(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_classifier(backbone):
    head = {'head.weight': torch.randn(1000, 384), 'head.bias': torch.randn(1000)}
    converted = convert_official_checkpoint({'model': {**backbone, **head}})['state_dict']
    _assert_same_tensors(
        converted, {
            **{
                'backbone.' + k: v
                for k, v in backbone.items()
            }, 'head.fc.weight': head['head.weight'],
            'head.fc.bias': head['head.bias']
        })


def test_bare_backbone(backbone):
    converted = convert_official_checkpoint(dict(backbone))['state_dict']
    _assert_same_tensors(converted, {'backbone.' + k: v for k, v in backbone.items()})


# head keys as the authors' downstream code names them (detection/ and segmentation/ of their release)
DOWNSTREAM_HEADS = {
    'mask_rcnn': ('neck.lateral_convs.0.conv.weight', 'rpn_head.rpn_conv.weight', 'roi_head.bbox_head.fc_cls.weight',
                  'roi_head.mask_head.conv_logits.weight'),
    'dino': ('neck.convs.0.conv.weight', 'query_embedding.weight', 'memory_trans_fc.weight',
             'encoder.layers.0.self_attn.value_proj.weight', 'bbox_head.cls_branches.0.weight',
             'dn_query_generator.label_embedding.weight'),
    'upernet':
    ('decode_head.psp_modules.0.1.conv.weight', 'decode_head.conv_seg.weight', 'auxiliary_head.conv_seg.weight'),
    'mask2former': ('decode_head.pixel_decoder.input_convs.0.conv.weight', 'decode_head.query_embed.weight',
                    'decode_head.transformer_decoder.layers.0.cross_attn.attn.in_proj_weight'),
}


@pytest.mark.parametrize('layout', sorted(DOWNSTREAM_HEADS))
@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_downstream_models_keep_every_key(backbone, layout, prefix):
    torch.manual_seed(1)
    heads = {k: torch.randn(3, 2) for k in DOWNSTREAM_HEADS[layout]}
    state = {**{'backbone.' + k: v for k, v in backbone.items()}, **heads}
    checkpoint = {
        'state_dict': {
            prefix + k: v
            for k, v in state.items()
        },
        'optimizer': {
            'state': {}
        },
        'meta': {
            'epoch': 12
        }
    }
    converted = convert_official_checkpoint(checkpoint)
    _assert_same_tensors(converted['state_dict'], state)  # the training state is dropped, the meta kept
    assert converted['meta']['epoch'] == 12 and 'optimizer' not in converted


def test_not_a_transnext_checkpoint_is_refused():
    with pytest.raises(ValueError, match='not a TransNeXt checkpoint.*conv1.weight'):
        convert_official_checkpoint({'state_dict': {'conv1.weight': torch.zeros(1)}})
