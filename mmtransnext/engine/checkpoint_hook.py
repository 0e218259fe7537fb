"""A CheckpointHook whose saves an interruption cannot turn into a lost run.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest kept checkpoint (``max_keep_ckpts``) before it
writes the new one, and writes the new one in place: a run killed during that write is left with a
truncated file, no complete checkpoint, and a ``last_checkpoint`` that names the deleted one.
``AtomicCheckpointHook`` writes each checkpoint under a temporary name in the same folder and renames it
into place, then points ``last_checkpoint`` at it (also by rename), and only then deletes the checkpoint
that falls out of ``max_keep_ckpts``. Other file backends (not a local folder) keep mmengine's behaviour.
"""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS


def _replace_text(path: str, text: str):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) with atomic saves; see the module docstring."""

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        # the bookkeeping mmengine does, recorded in the checkpoint's message hub as before ...
        expired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        # ... but the file is complete before it gets its name, and nothing is deleted before that
        runner.save_checkpoint(self.out_dir, filename + '.tmp', self.file_client_args,
                               save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
                               meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        os.replace(self.last_ckpt + '.tmp', self.last_ckpt)
        _replace_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if expired is not None:
            old = osp.join(self.out_dir, self.filename_tmpl.format(expired))
            if osp.isfile(old):
                os.remove(old)
