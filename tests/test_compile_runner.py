"""mmengine's ``compile`` setting (``torch.compile`` of the model's ``train_step``, optimizer step included) on the toy
segmentor, as a user switches it on for any config: ``--cfg-options compile=True`` (inductor), or a dict of
torch.compile's options. The heads' graph breaks are mmseg's; the backbone traces whole (``test_pytorch2.py``)."""
import pytest

from .helpers import ROOT, logged_losses, run_tool

UPERNET_TOY = ROOT / 'configs/toy/upernet_transnext_toy.py'
# dynamo alone: what failed here (the optimizer's param groups) fails in dynamo; code generation would add minutes
COMPILE = 'compile.backend=eager'


@pytest.mark.slow
def test_runner_compile_trains_like_eager(tmp_path):
    """Two iterations with mmengine's ``compile`` setting log the losses an eager run of the same seed logs (about
    90 s on 2 cores: dynamo traces mmengine's train_step and retraces the frames around mmseg's graph breaks). At a
    constant learning rate: a scheduled one is a new float in the optimizer's param groups each iteration, for which
    dynamo traces the whole train_step again (torch's behaviour: it worked, and cost this test 47 s)."""
    run_tool('tools/data/make_toy_ade.py', '--out', 'data/toy_ade', '--num-train', 4, '--num-val', 1, cwd=tmp_path)
    options = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.logger.interval=1', 'param_scheduler=[]'
    ]
    losses = {}
    for mode, extra in (('eager', []), ('compiled', [COMPILE])):
        result = run_tool('tools/train.py',
                          UPERNET_TOY,
                          '--work-dir',
                          mode,
                          '--cfg-options',
                          *options,
                          *extra,
                          cwd=tmp_path)
        assert ('Model has been "compiled"' in result.stdout + result.stderr) == (mode == 'compiled')
        losses[mode] = logged_losses(tmp_path / mode)
    assert len(losses['eager']) == 2
    assert losses['compiled'] == pytest.approx(losses['eager'], rel=1e-4)
