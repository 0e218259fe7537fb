"""A CheckpointHook whose saves an interruption cannot turn into a lost run.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest kept checkpoint (``max_keep_ckpts``) before it
writes the new one, and writes the new one in place: a run killed during that write is left with a
truncated file, no complete checkpoint, and a ``last_checkpoint`` that names the deleted one.
``AtomicCheckpointHook`` writes each checkpoint under a temporary name in the same folder and renames it
into place, then points ``last_checkpoint`` at it (also by rename), and only then deletes the checkpoint
that falls out of ``max_keep_ckpts``. ``save_best`` gets the same treatment: mmengine removes the previous
best checkpoint and then writes the new one in place; here the new one is written under a temporary name and
renamed, and the previous one is removed after that. Other file backends (not a local folder) keep
mmengine's behaviour.
"""
import os
import os.path as osp
from contextlib import contextmanager
from functools import partial

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
        _save_then_rename(runner.save_checkpoint,
                          self.out_dir,
                          filename,
                          self.file_client_args,
                          save_optimizer=self.save_optimizer,
                          save_param_scheduler=self.save_param_scheduler,
                          meta=meta,
                          by_epoch=self.by_epoch,
                          backend_args=self.backend_args,
                          **self.args)
        if not is_main_process():
            return
        _replace_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if expired is not None:
            old = osp.join(self.out_dir, self.filename_tmpl.format(expired))
            if osp.isfile(old):
                os.remove(old)

    def _save_best_checkpoint(self, runner, metrics):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        previous = []
        with self._deferred_removal(previous), _atomic_saves(runner):
            super()._save_best_checkpoint(runner, metrics)
        if is_main_process():
            current = {getattr(self, 'best_ckpt_path', None), *getattr(self, 'best_ckpt_path_dict', {}).values()}
            for path in previous:
                if path not in current and osp.isfile(path):
                    os.remove(path)

    @contextmanager
    def _deferred_removal(self, removed: list):
        """mmengine removes the previous best checkpoint through the file backend: note it instead."""
        self.file_backend.remove = removed.append
        try:
            yield
        finally:
            del self.file_backend.remove  # the backend's own method again


def _save_then_rename(save, out_dir, filename, *args, **kwargs):
    """``save(out_dir, filename, ...)`` under FILENAME.tmp, renamed into place once complete."""
    save(out_dir, filename + '.tmp', *args, **kwargs)
    if is_main_process():
        os.replace(osp.join(out_dir, filename + '.tmp'), osp.join(out_dir, filename))


@contextmanager
def _atomic_saves(runner):
    """``runner.save_checkpoint`` writes under FILENAME.tmp and renames into place."""
    runner.save_checkpoint = partial(_save_then_rename, runner.save_checkpoint)
    try:
        yield
    finally:
        del runner.save_checkpoint  # the Runner's own method again
