"""Several processes, interrupted runs, mixed precision, memory: the backbone and tools at scale."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.ops import ext_available
from mmtransnext.ops.backend import triton_status
from .conftest import TRITON_DEVICE, golden_arch, golden_case
from .helpers import ROOT, make_toy_imagenet, run_tool, tool_metrics

TOY_CLS = ROOT / 'configs/toy/transnext_toy_cls.py'


def _deterministic_cls_config(tmp_path, max_iters):
    """The toy classifier without random augmentation, checkpointing every iteration. SGD, because
    Adam turns float32 rounding noise in near-zero gradients into full-size steps."""
    config = tmp_path / 'cls_det.py'
    config.write_text(
        textwrap.dedent(f"""
        _base_ = {str(TOY_CLS)!r}
        train_dataloader = dict(num_workers=0, persistent_workers=False,
                                dataset=dict(pipeline={{{{_base_.test_pipeline}}}}))
        val_dataloader = dict(num_workers=0, persistent_workers=False)
        test_dataloader = val_dataloader
        train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={max_iters}, val_interval=1000)
        param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end={max_iters})]
        optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
        default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1, max_keep_ckpts=-1))
        randomness = dict(seed=0, deterministic=True)
    """))
    return config


@pytest.fixture(scope='module')
def toy_imagenet(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('toy_cls')
    make_toy_imagenet(cwd, 8, 4)
    return cwd


def _dist(script, *args, cwd):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run(['bash', str(ROOT / 'tools' / script), *map(str, args)],
                            cwd=cwd,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.slow
def test_two_processes_follow_the_single_process_trajectory(toy_imagenet):
    cwd = toy_imagenet
    config = _deterministic_cls_config(cwd, max_iters=3)
    run_tool('tools/train.py', config, '--work-dir', 'one', '--cfg-options', 'train_dataloader.batch_size=8', cwd=cwd)
    _dist('dist_train.sh', config, 2, '--work-dir', 'two', '--cfg-options', 'train_dataloader.batch_size=4', cwd=cwd)
    for it in (1, 2, 3):  # same weights after every step, hence the same loss trajectory
        one, two = _weights(cwd / f'one/iter_{it}.pth'), _weights(cwd / f'two/iter_{it}.pth')
        for key in one:
            torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=f'iter {it} {key}')
    run_tool('tools/test.py', config, 'one/iter_3.pth', '--work-dir', 'one', cwd=cwd)
    single = tool_metrics(cwd / 'one')
    dumping = cwd / 'cls_det_dump.py'  # also dump the gathered predictions (mmengine's DumpResults)
    dumping.write_text(f"_base_ = {str(config)!r}\n"
                       "test_evaluator = [dict(type='Accuracy', topk=(1, )), "
                       "dict(type='DumpResults', out_file_path='two/predictions.pkl')]\n")
    _dist('dist_test.sh', dumping, 'two/iter_3.pth', 2, '--work-dir', 'two', cwd=cwd)
    assert tool_metrics(cwd / 'two') == single
    with open(cwd / 'two/predictions.pkl', 'rb') as f:
        predictions = pickle.load(f)  # written by this test's own run
    # gathered from both ranks' halves: every one of the 12 validation images once
    assert sorted(p['sample_idx'] for p in predictions) == list(range(12))


@pytest.fixture(scope='module')
def straight_run(toy_imagenet):
    """Six iterations of the deterministic config without interruption, a checkpoint after each (the weights that
    the interrupted runs must end with); the constant learning rate makes iteration k's weights the same for any
    max_iters >= k."""
    run_tool('tools/train.py',
             _deterministic_cls_config(toy_imagenet, max_iters=6),
             '--work-dir',
             'straight',
             cwd=toy_imagenet)
    return toy_imagenet / 'straight'


@pytest.mark.slow
@pytest.mark.xdist_group('toy_imagenet_straight_run')
def test_killed_run_resumes_to_the_same_weights(toy_imagenet, straight_run):
    cwd = toy_imagenet
    config = _deterministic_cls_config(cwd, max_iters=6)
    cmd = [sys.executable, str(ROOT / 'tools/train.py'), str(config), '--work-dir', 'killed']
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cwd / 'killed/iter_3.pth').exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cwd / 'killed/iter_3.pth').exists(), 'no checkpoint before the kill'
    assert not (cwd / 'killed/iter_6.pth').exists(), 'the run ended before it could be killed'
    last = int((cwd / 'killed/last_checkpoint').read_text().rsplit('iter_', 1)[1].split('.')[0])
    resumed = run_tool('tools/train.py', config, '--work-dir', 'killed', '--resume', cwd=cwd)
    # it continued from the checkpoint, not from iteration 0 (which would also end with the same weights)
    assert f'resumed epoch: 0, iter: {last}' in resumed.stdout + resumed.stderr and last >= 3
    straight, resumed = _weights(straight_run / 'iter_6.pth'), _weights(cwd / 'killed/iter_6.pth')
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
@pytest.mark.xdist_group('toy_imagenet_straight_run')
def test_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(toy_imagenet, straight_run):
    """mmengine's CheckpointHook would have deleted iter_2.pth (max_keep_ckpts=1) before writing iter_3.pth in
    place: no complete checkpoint left. The configs' AtomicCheckpointHook keeps iter_2.pth until iter_3.pth is
    complete and renamed into place."""
    cwd = toy_imagenet
    config = cwd / 'cls_keep1.py'
    config.write_text(f"_base_ = {str(_deterministic_cls_config(cwd, max_iters=5))!r}\n"
                      "default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))\n")
    crashing = cwd / 'cls_keep1_crash.py'
    crashing.write_text(f"_base_ = {str(config)!r}\n"
                        "custom_imports = dict(imports=['mmtransnext', 'tests.crash_during_save'], "
                        "allow_failed_imports=False)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    died = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'),
         str(crashing), '--work-dir', 'atomic'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    assert died.returncode == 137, died.stderr[-3000:]
    work = cwd / 'atomic'
    assert (work / 'iter_2.pth').is_file() and not (work / 'iter_3.pth').exists()
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    resumed = run_tool('tools/train.py', config, '--work-dir', 'atomic', '--resume', cwd=cwd)
    assert 'resumed epoch: 0, iter: 2' in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_5.pth']  # max_keep_ckpts still holds
    straight, recovered = _weights(straight_run / 'iter_5.pth'), _weights(work / 'iter_5.pth')
    for key in straight:
        torch.testing.assert_close(recovered[key], straight[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
def test_best_checkpoint_saves_are_atomic(toy_imagenet):
    """mmengine removes the previous best checkpoint, then writes the new one in place; AtomicCheckpointHook
    writes it under a temporary name, renames it, and removes the previous one after that."""
    cwd = toy_imagenet
    config = cwd / 'cls_best.py'
    config.write_text(f"_base_ = {str(_deterministic_cls_config(cwd, max_iters=3))!r}\n"
                      "custom_imports = dict(imports=['mmtransnext', 'tests.evaluation_count'], "
                      "allow_failed_imports=False)\n"
                      "train_cfg = dict(val_interval=1)\n"
                      "val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='EvaluationCount')]\n"
                      "default_hooks = dict(checkpoint=dict(save_best='evaluations', rule='greater'))\n")
    crashing = cwd / 'cls_best_crash.py'
    crashing.write_text(f"_base_ = {str(config)!r}\n"
                        "custom_imports = dict(imports=['mmtransnext', 'tests.evaluation_count', "
                        "'tests.crash_during_best_save'], allow_failed_imports=False)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    finished = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'),
         str(config), '--work-dir', 'best'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    # three evaluations, three new bests: only the last is kept, complete, and no temporary file is left
    assert [p.name for p in (cwd / 'best').glob('best_*')] == ['best_evaluations_iter_3.pth']
    assert _weights(cwd / 'best/best_evaluations_iter_3.pth')
    died = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'),
         str(crashing), '--work-dir', 'best_crash'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    assert died.returncode == 137, died.stderr[-3000:]
    # killed while writing the second best: the first one is still there and complete, the partial one has
    # only its temporary name
    work = cwd / 'best_crash'
    assert sorted(p.name
                  for p in work.glob('best_*')) == ['best_evaluations_iter_1.pth', 'best_evaluations_iter_2.pth.tmp']
    assert _weights(work / 'best_evaluations_iter_1.pth')


def test_truncated_checkpoint_refused_by_resume(toy_imagenet, tmp_path):
    work = tmp_path / 'wd'
    work.mkdir()
    (work / 'iter_2.pth').write_bytes(b'PK\x03\x04 not really a zip')
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    config = _deterministic_cls_config(tmp_path, max_iters=4)
    result = run_tool('tools/train.py', config, '--work-dir', work, '--resume', cwd=toy_imagenet, check=False)
    assert result.returncode != 0
    assert 'iter_2.pth' in result.stderr and 'truncated, corrupt' in result.stderr


_AUTOCAST = [('cpu', torch.bfloat16, impl) for impl in ('pytorch', 'ext')] + [
    pytest.param('cuda', dtype, impl, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU'))
    for dtype in (torch.float16, torch.bfloat16) for impl in ('pytorch', 'ext', 'triton')
]


def _golden_model(golden, device: str, attn_impl: str) -> TransNeXt:
    """The fixtures' backbone with their weights, for ``attn_impl`` (skipped where it cannot run on ``device``)."""
    if attn_impl == 'ext' and not ext_available(device):
        pytest.skip(f'mmtransnext._ext has no {device} kernels in this build')
    if attn_impl == 'triton' and not triton_status(device)[0]:
        pytest.skip(f'needs Triton: {triton_status(device)[1]}')
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224, attn_impl=attn_impl).eval()
    model.load_state_dict(golden['backbone_state_dict'])
    return model


@pytest.mark.parametrize('device, dtype, attn_impl', _AUTOCAST)
def test_autocast_close_to_float32(golden, device, dtype, attn_impl):
    model = _golden_model(golden, device, attn_impl).to(device)
    case = golden_case(golden, 'interpolate_odd')
    x = case['input'].clone().to(device).requires_grad_(True)
    with torch.autocast(device, dtype=dtype):
        outs = model(x)
        loss = sum((o.float() * w.to(device)).sum() for o, w in zip(outs, case['loss_weights']))
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs) and torch.isfinite(x.grad).all()
    # measured on the CPU with bfloat16: outputs within 0.9%, input gradient within 0.7% (both attn_impls)
    for out, ref in zip(outs, case['outputs']):
        rel = (out.float().cpu() - ref).norm() / ref.norm()
        assert rel < 0.02, rel
    grad_rel = (x.grad.cpu() - case['input_grad']).norm() / case['input_grad'].norm()
    assert grad_rel < 0.02, grad_rel


_HALF_MODEL = [
    (TRITON_DEVICE.type if impl == 'triton' else 'cpu', torch.bfloat16, impl) for impl in ('pytorch', 'ext', 'triton')
] + [('cpu', torch.float16, 'pytorch')] + [
    pytest.param('cuda', dtype, impl, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU'))
    for dtype in (torch.float16, torch.bfloat16) for impl in ('pytorch', 'ext')
]


@pytest.mark.parametrize('device, dtype, attn_impl', _HALF_MODEL)
def test_model_converted_to_half_close_to_float32(golden, device, dtype, attn_impl):
    """``model.bfloat16()`` / ``.half()`` (inference in half precision, without autocast): the per-size geometry
    (bias coordinates, tap weights, length scale) follows the parameters' type, as the authors' buffers would.
    Measured on the CPU: bfloat16 within 1.1%, float16 within 0.2% of the float32 outputs."""
    model = _golden_model(golden, device, attn_impl).to(device=device, dtype=dtype)
    case = golden_case(golden, 'interpolate_odd')
    with torch.no_grad():
        outs = model(case['input'].to(device=device, dtype=dtype))
    for out, ref in zip(outs, case['outputs']):
        assert out.dtype == dtype
        rel = (out.float().cpu() - ref).norm() / ref.norm()
        assert rel < 0.03, rel
