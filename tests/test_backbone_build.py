"""Construction, state-dict compatibility and registries of the TransNeXt backbone."""
import subprocess
import sys
import textwrap

import pytest
import torch

from mmtransnext.models import TransNeXt
from .conftest import golden_arch

PAPER_PARAMS_M = dict(micro=12.8, tiny=28.2, small=49.7, base=89.7)  # with a 1000-class head
VARIANTS = sorted(PAPER_PARAMS_M)


def test_every_variant_of_the_arch_zoo_is_checked_against_the_paper():
    """A variant added to TransNeXt.arch_zoo needs its paper size here (docs/developers.md, "Adding a variant");
    micro_aaaa has its own test below."""
    assert set(TransNeXt.variants) == set(PAPER_PARAMS_M) | {'micro_aaaa'}


@pytest.mark.parametrize('variant', VARIANTS)
def test_state_dict_keys_and_shapes_match_official(variant, official_keys):
    model = TransNeXt(arch=variant, img_size=224)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_keys[variant]['backbone_state_dict']


@pytest.mark.parametrize('variant', VARIANTS)
def test_parameter_counts(variant, official_keys):
    model = TransNeXt(arch=variant)
    backbone = sum(p.numel() for p in model.parameters())
    assert backbone == official_keys[variant]['num_params_backbone']
    with_head = backbone + model.embed_dims[-1] * 1000 + 1000
    assert with_head == official_keys[variant]['num_params_classifier']
    assert abs(with_head / 1e6 - PAPER_PARAMS_M[variant]) < 0.1  # the paper truncates (28.26M -> 28.2M)


def test_micro_aaaa_uses_aggregated_attention_everywhere():
    model = TransNeXt(arch='micro_aaaa', img_size=256, pretrain_size=256, out_indices=(3, ))
    assert type(model.block4[0].attn).__name__ == 'AggregatedAttention'
    assert model.block4[0].attn.sr_ratio == 2
    out, = model(torch.randn(1, 3, 96, 128))
    assert out.shape == (1, 384, 3, 4)
    # 13.1M with a 1000-class head, as in the paper
    assert round((sum(p.numel() for p in model.parameters()) + 384 * 1001) / 1e6, 1) == 13.1


def _require_library(scope):
    """Skip (saying why) where the library's models cannot be imported: the minimal torch 2.1 test venv has only
    mmengine and mmcv-lite (tools/test_oldest_torch.sh)."""
    pytest.importorskip(f'{scope}.models', reason=f'needs {scope} with the full mmcv (its models import mmcv.ops)')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_builds_from_each_registry(scope):
    _require_library(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(dict(type='TransNeXt', arch='micro', out_indices=(2, 3)))
    assert isinstance(model, TransNeXt)
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [192, 384]


def test_custom_imports_registers_in_a_fresh_interpreter(tmp_path):
    _require_library('mmdet')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        textwrap.dedent("""
        custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)
        backbone = dict(type='TransNeXt', arch='micro')
    """))
    code = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmdet.registry import MODELS
        cfg = Config.fromfile({str(cfg)!r})
        print(type(MODELS.build(cfg.backbone)).__name__)
    """)
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == 'TransNeXt'


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(KeyError, match=r"unknown TransNeXt arch 'huge'.*'tiny'"):
        TransNeXt(arch='huge')


@pytest.mark.parametrize('arch, message', [
    (dict(embed_dims=[24, 48], depths=[1, 1]), 'lacks'),
    (dict(embed_dims=[24, 48], depths=[1, 1, 1], num_heads=[1, 2]), 'entries'),
    (dict(embed_dims=[24, 50], depths=[1, 1], num_heads=[1, 4], mlp_ratios=[4, 4], sr_ratios=[2, 1]), 'divisible'),
    (dict(embed_dims=[24, 48], depths=[1, 1], num_heads=[1, 2], mlp_ratios=[4, 4], sr_ratios=[2, 1],
          window_size=4), 'odd'),
    (dict(embed_dims=[24], depths=[1], num_heads=[1], colour='red'), 'unknown keys'),
])
def test_inconsistent_arch_dict_is_a_clear_error(arch, message):
    with pytest.raises((KeyError, ValueError), match=message):
        TransNeXt(arch=arch)


@pytest.mark.parametrize('kwargs, message', [
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
])
def test_index_arguments_out_of_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransNeXt(arch='micro', **kwargs)


def test_frozen_stages_freeze_and_stay_in_eval(golden):
    model = TransNeXt(arch=golden_arch(golden), img_size=64, drop_path_rate=0.1, frozen_stages=2)
    model.train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(
        n.split('.')[0] in {'patch_embed1', 'block1', 'norm1', 'patch_embed2', 'block2', 'norm2'} for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(('block3', 'norm4')))
    assert not model.block2.training and model.block3.training
    stem_only = TransNeXt(arch=golden_arch(golden), frozen_stages=0)
    assert {n.split('.')[0] for n, p in stem_only.named_parameters() if not p.requires_grad} == {'patch_embed1'}


def test_non_multiple_of_32_inputs(golden):
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 77, 45))
    assert [tuple(o.shape[-2:]) for o in outs] == [(20, 12), (10, 6), (5, 3), (3, 2)]


def test_wrong_channels_and_empty_batch(golden):
    model = TransNeXt(arch=golden_arch(golden), img_size=64)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\).*\(1, 1, 64, 64\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='empty batch'):
        model(torch.randn(0, 3, 64, 64))
    for bad in (float('nan'), float('inf')):
        x = torch.randn(1, 3, 64, 64)
        x[0, 1, 5, 7] = bad
        with pytest.raises(ValueError, match='NaN or inf'):
            model(x)


def test_geometry_cache_is_bounded(golden):
    model = TransNeXt(arch=golden_arch(golden), img_size=64).eval()
    with torch.no_grad():
        for side in range(64, 64 + 4 * 20, 4):
            model(torch.randn(1, 3, side, 64))
    assert len(model._geometry_cache) == model.geometry_cache_size


def test_too_small_input_states_the_smallest_size(golden):
    model = TransNeXt(arch=golden_arch(golden), img_size=64).eval()
    assert model.min_input_size == 29
    with torch.no_grad():
        model(torch.randn(1, 3, 29, 29))
    with pytest.raises(ValueError, match=r'\(28, 40\) is too small.*at least 29 x 29'):
        model(torch.randn(1, 3, 28, 40))


def test_too_small_img_size_or_pretrain_size():
    with pytest.raises(ValueError, match='img_size'):
        TransNeXt(arch='micro', img_size=16)
    with pytest.raises(ValueError, match='pretrain_size'):
        TransNeXt(arch='micro', pretrain_size=32)


def test_frozen_parameters_stay_unchanged_after_an_optimizer_step(golden):
    torch.manual_seed(0)
    model = TransNeXt(arch=golden_arch(golden), img_size=64, frozen_stages=1)
    model.load_state_dict(golden['backbone_state_dict'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # every parameter handed to the optimizer, as a config's optim_wrapper would; weight decay and momentum
    # would move a frozen parameter that had a gradient or were updated regardless of it
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    model.train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    optimizer.step()
    for name, param in model.named_parameters():
        moved = not torch.equal(param, before[name])
        assert moved == param.requires_grad, f'{name}: requires_grad={param.requires_grad}, moved={moved}'


def test_drop_path_rates_rise_linearly_over_all_blocks(golden):
    arch = golden_arch(golden)
    model = TransNeXt(arch=arch, img_size=64, drop_path_rate=0.3)
    blocks = [block for i in range(4) for block in getattr(model, f'block{i + 1}')]
    expected = torch.linspace(0, 0.3, sum(arch['depths'])).tolist()
    assert len(blocks) == len(expected) == 5
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)  # rate 0: no layer at all
    assert [b.drop_path.drop_prob for b in blocks[1:]] == pytest.approx(expected[1:])


def test_tuple_img_size_is_height_then_width(golden):
    """In interpolation mode the bias is generated for img_size and resized to the input: at an input of
    exactly img_size that is the identity, so the output equals extrapolation mode's; transposed, it is not."""
    torch.manual_seed(0)
    modes = [
        TransNeXt(arch=golden_arch(golden), img_size=(64, 96), pretrain_size=64, is_extrapolation=e).eval()
        for e in (False, True)
    ]
    for model in modes:
        model.load_state_dict(golden['backbone_state_dict'])
    with torch.no_grad():
        for size, same in (((64, 96), True), ((96, 64), False)):
            x = torch.randn(1, 3, *size)
            interpolated, extrapolated = (model(x)[-1] for model in modes)
            assert torch.allclose(interpolated, extrapolated, atol=1e-5) == same, size


def test_with_cp_checkpoints_every_block_with_the_same_gradients(golden, monkeypatch):
    import torch.utils.checkpoint
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', spy)
    x = torch.randn(1, 3, 72, 104)
    grads = []
    for with_cp in (False, True):
        model = TransNeXt(arch=golden_arch(golden), img_size=64, with_cp=with_cp)
        model.load_state_dict(golden['backbone_state_dict'])
        model.train()
        sum(o.sum() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    blocks = [block for i in range(4) for block in getattr(model, f'block{i + 1}')]
    assert calls == blocks  # each block once, in order, in the with_cp run only
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_patch_size_other_than_4_is_refused():
    with pytest.raises(ValueError, match='patch_size must be 4 .*got 2'):
        TransNeXt(arch='micro', patch_size=2)
