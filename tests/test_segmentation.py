"""MMSegmentation: the paper configs, multi-scale test in both position-bias modes, toy training."""
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

from mmtransnext.models import TransNeXt
from .conftest import golden_arch
from .helpers import ROOT, logged_losses, run_tool, tool_metrics, validated_metrics

PAPER_PARAMS_M = {
    'upernet_transnext_tiny': 59,
    'upernet_transnext_small': 80,
    'upernet_transnext_base': 121,
    'mask2former_transnext_tiny': 47.5,
    'mask2former_transnext_small': 69.0,
    'mask2former_transnext_base': 109,
}
UPERNET_TOY = ROOT / 'configs/toy/upernet_transnext_toy.py'
MASK2FORMER_TOY = ROOT / 'configs/toy/mask2former_transnext_toy.py'


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS_M))
def test_paper_config_builds_with_paper_parameter_count(name):
    cfg = Config.fromfile(ROOT / 'configs' / f'{name}.py')
    assert cfg.model.backbone.img_size == 512 and cfg.model.backbone.pretrain_size == 224
    with DefaultScope.overwrite_default_scope('mmseg'):
        params = sum(p.numel() for p in MODELS.build(cfg.model).parameters()) / 1e6
    assert abs(params - PAPER_PARAMS_M[name]) < 0.5, params


@pytest.mark.parametrize('variant', ['tiny', 'small', 'base'])
def test_multiscale_configs(variant):
    ss = Config.fromfile(ROOT / f'configs/upernet_transnext_{variant}.py')
    assert ss.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    for suffix, extrapolation in (('_ms', False), ('_ms_extrapolation', True)):
        cfg = Config.fromfile(ROOT / f'configs/upernet_transnext_{variant}{suffix}.py')
        assert cfg.model.backbone.img_size == 800
        assert cfg.model.backbone.get('is_extrapolation', False) is extrapolation
        assert cfg.model.test_cfg.mode == 'whole'
        assert cfg.tta_model.type == 'SegTTAModel'
        resizes = cfg.tta_pipeline[1].transforms[0]
        assert [t.scale_factor for t in resizes] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_interpolation_and_extrapolation_agree_at_img_size_only(golden):
    """Both modes generate the same bias at img_size; beyond it, resizing != regenerating."""
    interp = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224).eval()
    extrap = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224, is_extrapolation=True).eval()
    interp.load_state_dict(golden['backbone_state_dict'])
    extrap.load_state_dict(golden['backbone_state_dict'])
    with torch.no_grad():
        at_size = torch.randn(1, 3, 64, 64)
        for a, b in zip(interp(at_size), extrap(at_size)):
            assert torch.equal(a, b)
        larger = torch.randn(1, 3, 128, 160)
        # well above float32 noise (the outputs above are bit-identical)
        assert all((a - b).abs().max() > 2e-5 for a, b in zip(interp(larger), extrap(larger)))
        attn = interp.block1[0].attn
        bias_interp = attn.position_bias(interp.stage_geometry(0, (32, 40), 'cpu'))
        bias_extrap = attn.position_bias(extrap.stage_geometry(0, (32, 40), 'cpu'))
    assert bias_interp.shape == bias_extrap.shape == (1, 32 * 40, 4 * 5)
    assert (bias_interp - bias_extrap).abs().max() > 0.05 * bias_extrap.abs().max()


# Two iterations of the toy UperNet at a constant learning rate, every loss logged: the run the TTA test evaluates and
# the one mmengine's compile setting must reproduce (a scheduled rate would make dynamo trace train_step again for each
# new float in the optimizer's param groups: torch's behaviour, 47 s of that test).
TWO_ITERATIONS = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.logger.interval=1', 'param_scheduler=[]'
]
# mmengine's compile setting through dynamo alone: what failed here (the optimizer's param groups) fails in dynamo, and
# inductor's code generation would add minutes
COMPILE = 'compile.backend=eager'


@pytest.fixture(scope='module')
def upernet_two_iterations(tmp_path_factory):
    """(directory, logged losses) of an eager run of TWO_ITERATIONS on a small generated set, work dir 'up'."""
    cwd = tmp_path_factory.mktemp('toy_seg')
    run_tool('tools/data/make_toy_ade.py', '--out', 'data/toy_ade', '--num-train', 8, '--num-val', 4, cwd=cwd)
    result = run_tool('tools/train.py', UPERNET_TOY, '--work-dir', 'up', '--cfg-options', *TWO_ITERATIONS, cwd=cwd)
    assert 'Model has been "compiled"' not in result.stdout + result.stderr  # compile is off unless asked for
    return cwd, logged_losses(cwd / 'up')


@pytest.mark.slow
@pytest.mark.xdist_group('upernet_two_iterations')
def test_runner_compile_trains_like_eager(upernet_two_iterations):
    """mmengine's ``compile`` setting (``torch.compile`` of the model's ``train_step``, optimizer step included), as a
    user switches it on for any config: ``--cfg-options compile=True`` (inductor), or a dict of torch.compile's options.
    Two compiled iterations log the losses the eager run of the same seed logged (about 90 s on 2 cores: dynamo traces
    mmengine's train_step and retraces the frames around mmseg's graph breaks; the backbone traces whole,
    ``test_pytorch2.py``)."""
    cwd, eager_losses = upernet_two_iterations
    result = run_tool('tools/train.py',
                      UPERNET_TOY,
                      '--work-dir',
                      'compiled',
                      '--cfg-options',
                      *TWO_ITERATIONS,
                      COMPILE,
                      cwd=cwd)
    assert 'Model has been "compiled"' in result.stdout + result.stderr
    assert len(eager_losses) == 2
    assert logged_losses(cwd / 'compiled') == pytest.approx(eager_losses, rel=1e-4)


@pytest.mark.slow
@pytest.mark.xdist_group('upernet_two_iterations')
def test_upernet_trains_and_reports_miou_with_and_without_tta(upernet_two_iterations):
    tmp_path, _ = upernet_two_iterations
    checkpoint = (tmp_path / 'up' / 'last_checkpoint').read_text().strip()
    run_tool('tools/test.py', UPERNET_TOY, checkpoint, '--work-dir', 'up', cwd=tmp_path)
    plain = tool_metrics(tmp_path / 'up')
    assert {'mIoU', 'aAcc', 'mAcc'} <= set(plain)
    logits = {}
    for extrapolation in ('False', 'True'):
        dumping = tmp_path / f'upernet_dump_{extrapolation}.py'  # the TTA predictions too (mmengine's DumpResults)
        dumping.write_text(f"_base_ = {str(UPERNET_TOY)!r}\n"
                           "test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), "
                           f"dict(type='DumpResults', out_file_path='up/tta_{extrapolation}.pkl')]\n")
        run_tool('tools/test.py',
                 dumping,
                 checkpoint,
                 '--tta',
                 '--work-dir',
                 'up',
                 '--cfg-options',
                 f'model.backbone.is_extrapolation={extrapolation}',
                 cwd=tmp_path)
        tta = tool_metrics(tmp_path / 'up')
        assert 'mIoU' in tta
        with open(tmp_path / f'up/tta_{extrapolation}.pkl', 'rb') as f:
            logits[extrapolation] = [p['seg_logits']['data'] for p in pickle.load(f)]  # this test's own file
    # the override reaches the model under TTA: the two position-bias modes give other logits
    assert any(not torch.allclose(a, b) for a, b in zip(logits['False'], logits['True']))


@pytest.mark.slow
def test_upernet_learns_the_toy_regions(tmp_path):
    """160 iterations on the generated set: the loss falls and the run's own validation at the last iteration finds
    the sky / ground regions well above chance (measured: loss 2.00 -> 1.09, mIoU 29.7 with sky 73 / ground 75 IoU,
    aAcc 78.0; one class everywhere gives aAcc 42, mIoU 8). tools/test.py evaluates checkpoints in the TTA test."""
    run_tool('tools/data/make_toy_ade.py', '--out', 'data/toy_ade', cwd=tmp_path)
    run_tool('tools/train.py',
             UPERNET_TOY,
             '--work-dir',
             'up',
             '--cfg-options',
             'train_cfg.max_iters=160',
             'train_cfg.val_interval=160',
             'param_scheduler.1.end=160',
             'default_hooks.logger.interval=10',
             cwd=tmp_path)
    losses = logged_losses(tmp_path / 'up')
    assert len(losses) >= 10 and losses[-1] < 0.7 * losses[0], losses
    metrics = validated_metrics(tmp_path / 'up')
    assert metrics['mIoU'] >= 20 and metrics['aAcc'] >= 65, metrics


@pytest.mark.slow
def test_mask2former_trains_and_reports_miou(tmp_path):
    run_tool('tools/data/make_toy_ade.py', '--out', 'data/toy_ade', '--num-train', 4, '--num-val', 2, cwd=tmp_path)
    run_tool('tools/train.py',
             MASK2FORMER_TOY,
             '--work-dir',
             'm2f',
             '--cfg-options',
             'train_cfg.max_iters=2',
             'train_cfg.val_interval=2',
             cwd=tmp_path)
    checkpoint = (tmp_path / 'm2f' / 'last_checkpoint').read_text().strip()
    run_tool('tools/test.py', MASK2FORMER_TOY, checkpoint, '--work-dir', 'm2f', cwd=tmp_path)
    metrics = tool_metrics(tmp_path / 'm2f')
    assert 'mIoU' in metrics


@pytest.mark.slow
def test_official_upernet_layout_loads_without_missing_keys(tmp_path):
    """A checkpoint as the authors' mmseg 0.x UperNet saved it (meta + state_dict, mmcv-1.x optimizer)."""
    cfg = Config.fromfile(UPERNET_TOY)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        state = MODELS.build(cfg.model).state_dict()
    torch.save(
        {
            'meta': {
                'mmseg_version': '0.30.0',
                'CLASSES': ('sky', 'ground', 'square', 'circle', 'triangle')
            },
            'state_dict': state,
            'optimizer': {
                'state': {},
                'param_groups': []
            }
        }, tmp_path / 'official.pth')
    result = run_tool('tools/model_converters/convert_official.py',
                      'official.pth',
                      'converted.pth',
                      '--config',
                      UPERNET_TOY,
                      cwd=tmp_path)
    assert 'keys fit' in result.stdout
    converted = torch.load(tmp_path / 'converted.pth', weights_only=True)
    assert set(converted['state_dict']) == set(state)
