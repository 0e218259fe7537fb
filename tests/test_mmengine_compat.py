"""mmengine 0.10.7's checkpoint loading under torch's weights_only default (torch >= 2.6), safely."""
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint

import mmtransnext  # noqa: F401  (installs the loader)
from mmtransnext.models import TransNeXt
from mmtransnext.utils import CheckpointReadError, UntrustedCheckpointError
from mmtransnext.utils.mmengine_compat import RUNNER_CHECKPOINT_GLOBAL_NAMES, TRUST_ENV
from .helpers import ROOT, make_toy_imagenet, run_tool

TOY_CLS = ROOT / 'configs/toy/transnext_toy_cls.py'


class _Regressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.fc(inputs).squeeze(-1)
        return dict(loss=((out - targets)**2).mean()) if mode == 'loss' else out


class _Data(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), targets=torch.randn((), generator=g))


class _FirstIteration(Hook):
    """Records the iteration a run's training starts at."""

    def __init__(self):
        self.first = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.first is None:
            self.first = runner.iter


def _first_iteration(runner):
    return next(hook.first for hook in runner.hooks if isinstance(hook, _FirstIteration))


def _runner(work_dir, max_iters, resume=False):
    torch.manual_seed(0)  # the model is built before the Runner seeds: every run starts from the same weights
    return Runner(model=_Regressor(),
                  work_dir=str(work_dir),
                  experiment_name='resume',
                  train_dataloader=dict(dataset=_Data(),
                                        sampler=dict(type='DefaultSampler', shuffle=False),
                                        batch_size=2,
                                        collate_fn=dict(type='default_collate')),
                  train_cfg=dict(by_epoch=False, max_iters=max_iters),
                  optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
                  default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
                  custom_hooks=[_FirstIteration()],
                  resume=resume,
                  randomness=dict(seed=0))


def test_runner_resume_restores_iteration_and_optimizer(tmp_path):
    _runner(tmp_path / 'resumed', max_iters=2).train()
    second = _runner(tmp_path / 'resumed', max_iters=4, resume=True)
    second.train()  # resumes from iter_2.pth: loads the message hub pickled by mmengine
    assert _first_iteration(second) == 2 and second.iter == 4  # began at iteration 2, not 0
    straight = _runner(tmp_path / 'straight', max_iters=4)
    straight.train()
    assert _first_iteration(straight) == 0
    # the optimizer state came back too: AdamW's moments would otherwise restart and change the weights
    for (name, got), want in zip(second.model.state_dict().items(), straight.model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / 'broken.pth'
    torch.save({'w': torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointReadError, match='broken.pth.*truncated, corrupt'):
        _load_checkpoint(str(path))


# ----------------------------------------------------------------------------- safe loading (README: Checkpoints)


class _Payload:
    """What an attacker would pickle: creating a directory stands for running any code."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.makedirs, (self.target, ))


def crafted_checkpoint(tmp_path):
    """A checkpoint whose unpickling runs code: (its path, the path the code would create)."""
    target = tmp_path / 'payload_ran'
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(1, 4)}, 'meta': _Payload(target)}, path)
    return path, target


def _entry_points(path):
    """Every in-process way a user hands mmengine / mmtransnext a checkpoint file."""
    yield 'CheckpointLoader', lambda: CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    yield 'load_checkpoint', lambda: load_checkpoint(nn.Linear(4, 1), str(path), map_location='cpu')
    yield 'init_cfg Pretrained', lambda: TransNeXt(
        arch='micro', img_size=64, pretrain_size=64, init_cfg=dict(type='Pretrained', checkpoint=str(path)
                                                                   )).init_weights()


def test_crafted_checkpoint_is_refused_and_its_code_does_not_run(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    path, target = crafted_checkpoint(tmp_path)
    for name, load in _entry_points(path):
        with pytest.raises(UntrustedCheckpointError) as refused:
            load()
        message = str(refused.value)
        assert 'crafted.pth' in message and 'makedirs' in message and TRUST_ENV in message, name
        assert '--trust-checkpoint' in message
        assert not target.exists(), f'{name}: the payload ran'


def test_trusted_checkpoint_loads_with_full_unpickling(tmp_path, monkeypatch):
    path, target = crafted_checkpoint(tmp_path)
    monkeypatch.setenv(TRUST_ENV, '1')
    checkpoint = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert target.exists()  # the opt-in does what it says: the file's code ran
    assert torch.equal(checkpoint['state_dict']['fc.weight'], torch.zeros(1, 4))


def test_runner_checkpoints_need_exactly_the_allowlist(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    _runner(tmp_path, max_iters=2).train()
    path = str(tmp_path / 'iter_2.pth')
    with pytest.raises(pickle.UnpicklingError):  # torch's own safe loader refuses it ...
        torch.load(path, weights_only=True)
    checkpoint = _load_checkpoint(path)  # ... ours loads it, safely
    assert checkpoint['message_hub']['log_scalars']['train/loss'].current() > 0
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= RUNNER_CHECKPOINT_GLOBAL_NAMES


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)

    class _Reach:  # getattr(HistoryBuffer, '__init__'): an attribute mmengine's checkpoints never hold

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'getattr.pth'
    torch.save({'meta': _Reach()}, path)
    with pytest.raises(UntrustedCheckpointError, match='getattr.pth'):
        _load_checkpoint(str(path))


@pytest.fixture(scope='module')
def toy_cls(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('safe_cls')
    make_toy_imagenet(cwd, 2, 1)
    return cwd


def _tool_commands(cwd, checkpoint):
    image = sorted((cwd / 'data/toy_imagenet/val').rglob('*.*'))[0]
    return {
        'test.py': ('tools/test.py', TOY_CLS, checkpoint),
        'train.py --resume': ('tools/train.py', TOY_CLS, '--resume', checkpoint, '--work-dir', cwd / 'wd'),
        'image_demo.py': ('tools/demo/image_demo.py', image, TOY_CLS, checkpoint, '--out', cwd / 'demo.png'),
        'convert_official.py': ('tools/model_converters/convert_official.py', checkpoint, cwd / 'converted.pth'),
    }


@pytest.mark.parametrize('tool', ['test.py', 'train.py --resume', 'image_demo.py', 'convert_official.py'])
def test_tools_refuse_a_crafted_checkpoint(toy_cls, tool, tmp_path):
    path, target = crafted_checkpoint(tmp_path)
    result = run_tool(*_tool_commands(toy_cls, path)[tool], cwd=toy_cls, check=False)
    assert result.returncode != 0
    assert 'safe unpickler' in result.stderr and '--trust-checkpoint' in result.stderr, result.stderr[-2000:]
    assert not target.exists(), 'the payload ran'


def test_tools_load_a_trusted_checkpoint_with_the_flag(toy_cls, tmp_path):
    path, target = crafted_checkpoint(tmp_path)
    result = run_tool(*_tool_commands(toy_cls, path)['test.py'], '--trust-checkpoint', cwd=toy_cls, check=False)
    assert target.exists()  # loaded with full unpickling; its weights then do not fit the model:
    assert result.returncode != 0 and 'does not fit' in result.stderr
