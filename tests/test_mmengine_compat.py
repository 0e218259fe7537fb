"""mmengine 0.10.7's checkpoint loading under torch's weights_only default (torch >= 2.6)."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import mmtransnext  # noqa: F401  (installs the loader)
from mmtransnext.utils import CheckpointReadError


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


def _runner(work_dir, max_iters, resume=False):
    return Runner(
        model=_Regressor(), work_dir=str(work_dir), experiment_name='resume',
        train_dataloader=dict(dataset=_Data(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        resume=resume, randomness=dict(seed=0))


def test_runner_resume_restores_iteration_and_optimizer(tmp_path):
    first = _runner(tmp_path, max_iters=2)
    first.train()
    saved = first.optim_wrapper.optimizer.state_dict()
    second = _runner(tmp_path, max_iters=4, resume=True)
    second.train()  # resumes from iter_2.pth: loads the message hub pickled by mmengine
    assert second.iter == 4
    ckpt = _load_checkpoint(str(tmp_path / 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2
    torch.testing.assert_close(ckpt['optimizer']['state'][0]['exp_avg'], saved['state'][0]['exp_avg'])


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / 'broken.pth'
    torch.save({'w': torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointReadError, match='broken.pth.*truncated, corrupt'):
        _load_checkpoint(str(path))
