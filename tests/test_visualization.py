"""tools/analysis/visualize_attention.py and visualize_erf.py: what they draw is what they claim."""
import importlib
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmtransnext.models import TransNeXt
from .helpers import ROOT, run_tool

TOY_CLS = ROOT / 'configs/toy/transnext_toy_cls.py'


@pytest.fixture(scope='module')
def tools():
    sys.path.insert(0, str(ROOT / 'tools/analysis'))
    try:
        yield importlib.import_module('visualize_attention'), importlib.import_module('visualize_erf')
    finally:
        sys.path.remove(str(ROOT / 'tools/analysis'))


def test_attention_maps_sum_to_one_at_image_size(tmp_path):
    result = run_tool('tools/analysis/visualize_attention.py',
                      'sample',
                      TOY_CLS,
                      '--points',
                      '0,0',
                      '50,70',
                      '95,127',
                      '--size',
                      '128',
                      '96',
                      '--out-dir',
                      'out',
                      cwd=tmp_path)
    assert 'untrained' in result.stderr  # no checkpoint: it says so, and still draws
    for name in ('attention_0_0', 'attention_50_70', 'attention_95_127'):
        assert (tmp_path / 'out' / f'{name}.png').stat().st_size > 0
        maps = np.load(tmp_path / 'out' / f'{name}.npz')
        assert sorted(maps) == ['stage1_block0', 'stage2_block0', 'stage3_block1', 'stage4_block0']
        for amap in maps.values():  # a corner point has only 4 in-map neighbours: still sums to 1
            assert amap.shape == (128, 96) and amap.min() >= 0
            np.testing.assert_allclose(amap.sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize('config', ['maskrcnn_transnext_toy', 'upernet_transnext_toy'])
def test_attention_of_detector_and_segmentor_backbones(tmp_path, config):
    run_tool('tools/analysis/visualize_attention.py',
             'sample',
             ROOT / 'configs/toy' / f'{config}.py',
             '--points',
             '20,30',
             '--size',
             '128',
             '128',
             '--out-dir',
             'out',
             cwd=tmp_path)
    maps = np.load(tmp_path / 'out' / 'attention_20_30.npz')
    assert len(maps) == 4 and all(abs(m.sum() - 1) < 1e-6 for m in maps.values())


def test_attention_per_head_and_chosen_blocks(tmp_path):
    run_tool('tools/analysis/visualize_attention.py',
             'sample',
             TOY_CLS,
             '--points',
             '40,40',
             '--size',
             '96',
             '96',
             '--blocks',
             '1.0',
             '3.0',
             '--per-head',
             '--log',
             '--out-dir',
             'out',
             cwd=tmp_path)
    maps = np.load(tmp_path / 'out' / 'attention_40_40.npz')
    assert maps['stage1_block0'].shape == (1, 96, 96) and maps['stage3_block0'].shape == (4, 96, 96)
    np.testing.assert_allclose(maps['stage3_block0'].sum(axis=(1, 2)), np.ones(4), rtol=1e-6)


def test_attention_refuses_other_backbones_and_bad_points(tmp_path):
    other = run_tool('tools/analysis/visualize_attention.py',
                     'sample',
                     'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
                     '--points',
                     '10,10',
                     '--size',
                     '64',
                     '64',
                     '--out-dir',
                     'out',
                     cwd=tmp_path,
                     check=False)
    assert other.returncode == 1 and "backbone is ResNet" in other.stderr
    outside = run_tool('tools/analysis/visualize_attention.py',
                       'sample',
                       TOY_CLS,
                       '--points',
                       '64,10',
                       '--size',
                       '64',
                       '64',
                       '--out-dir',
                       'out',
                       cwd=tmp_path,
                       check=False)
    assert outside.returncode == 1 and 'outside the 64 x 64' in outside.stderr


def test_stage1_map_places_local_and_pooled_weights(tools):
    """Hand-made weights: 9 local weights land on the query's 3 x 3 token neighbourhood, each pooled key's
    weight spreads over its pooling cell; one pixel per token (stride 1) keeps the numbers readable."""
    attention_tool, _ = tools
    H, W, sr = 4, 6, 2  # pooled grid 2 x 3, cells of 2 x 2 tokens
    weights = torch.zeros(1, H * W, 9 + 6)
    weights[0, 1 * W + 2, 4] = 0.5  # the query's own token (window centre)
    weights[0, 1 * W + 2, 9 + 5] = 0.5  # pooled cell (1, 2): tokens rows 2-3, cols 4-5
    masses = attention_tool.token_masses(weights, (H, W), (1, 2), 3, sr)[0]
    expected = np.zeros((H, W))
    expected[1, 2] = 0.5
    expected[2:4, 4:6] = 0.125
    np.testing.assert_array_equal(masses, expected)
    spread = attention_tool.pixel_map(masses, 4, (16, 22))  # the last token column covers 2 pixels
    assert spread.shape == (16, 22)
    np.testing.assert_allclose(spread.sum(), 1.0)
    np.testing.assert_allclose(spread[4:8, 8:12], 0.5 / 16)


def test_recording_keeps_the_output_and_matches_the_reference_weights(tools):
    attention_tool, _ = tools
    torch.manual_seed(0)
    arch = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    x = torch.randn(1, 3, 72, 88)
    recorded = {}
    for impl in ('auto', 'pytorch'):
        torch.manual_seed(1)
        model = TransNeXt(arch=arch, img_size=64, pretrain_size=64, attn_impl=impl).eval()
        with torch.no_grad():
            plain = model(x)
        blocks = [(s, 0) for s in range(4)]
        recorded[impl] = attention_tool.record_attention(model, x, blocks)
        with torch.no_grad():  # recording is undone: the same output after it, and no weights kept
            for a, b in zip(plain, model(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not any(hasattr(getattr(model, f'block{s + 1}')[0].attn, 'recorded_weights') for s in range(4))
    for (w_op, size_op), (w_ref, size_ref) in zip(recorded['auto'], recorded['pytorch']):
        assert size_op == size_ref
        torch.testing.assert_close(w_op, w_ref, rtol=0, atol=2e-6)  # local logits from the op, same softmax
        torch.testing.assert_close(w_op.sum(-1), torch.ones(w_op.shape[:2]), rtol=0, atol=1e-5)


@pytest.mark.parametrize('convs', [1, 2])
def test_erf_of_stacked_3x3_convs_is_exactly_their_footprint(tools, convs):
    _, erf_tool = tools
    layers = [nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1, bias=False) for i in range(convs)]
    for layer in layers:
        nn.init.uniform_(layer.weight, 0.1, 1.0)  # positive: no cancellation, the centre stays above ReLU's 0
    images = [torch.rand(1, 3, 15, 17) + 0.1 for _ in range(2)]
    erf = erf_tool.effective_receptive_field(nn.Sequential(*layers), images)
    side = 2 * convs + 1
    footprint = np.zeros((15, 17), dtype=bool)
    footprint[7 - convs:8 + convs, 8 - convs:9 + convs] = True
    np.testing.assert_array_equal(erf > 0, footprint)
    assert erf_tool.high_contribution_area_ratio(erf, 0.99) <= side * side / (15 * 17)
    assert erf_tool.high_contribution_area_ratio(erf, 1.0) == side * side / (15 * 17)


def test_erf_tool_compares_with_a_plain_mmdet_backbone(tmp_path):
    result = run_tool('tools/analysis/visualize_erf.py',
                      TOY_CLS,
                      '--size',
                      '64',
                      '64',
                      '--out',
                      'erf.png',
                      '--compare',
                      'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
                      cwd=tmp_path)
    rows = [line for line in result.stdout.splitlines() if line.startswith('| ') and 'model' not in line]
    assert [row.split('|')[1].strip() for row in rows] == ['transnext_toy_cls', 'mask-rcnn_r50_fpn_1x_coco']
    for row in rows:
        ratios = [float(v) for v in row.split('|')[2:6]]
        assert 0 < ratios[0] <= ratios[1] <= ratios[2] <= ratios[3] <= 1
    maps = np.load(tmp_path / 'erf.npz')
    assert all(m.shape == (64, 64) and m.sum() > 0 for m in maps.values())
    assert (tmp_path / 'erf.png').stat().st_size > 0
