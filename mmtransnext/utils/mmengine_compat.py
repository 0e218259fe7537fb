"""Make mmengine 0.10.x read checkpoints under torch >= 2.6.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch 2.6 changed its default to
True, which refuses mmengine's own checkpoints (their ``message_hub`` holds numpy / mmengine
objects), so ``--resume`` and ``load_from`` fail with "Weights only load failed". We re-register
mmengine's loader for local paths: plain tensors load with the safe unpickler as before, full
training checkpoints fall back to regular unpickling, as mmengine did under older torch (only load
checkpoints you trust). A truncated or corrupt file raises an error naming it.
"""
import os.path as osp
import pickle

import torch
from mmengine.runner.checkpoint import CheckpointLoader


class CheckpointReadError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt or not a torch file)."""


def load_local_checkpoint(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename} does not exist')
    try:
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as safe_error:
            if 'Weights only load failed' not in str(safe_error):
                raise
            return torch.load(filename, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001  (any failure: say which file, keep the cause)
        raise CheckpointReadError(
            f'cannot read checkpoint {filename}: {type(error).__name__}: {error}. The file is '
            'truncated, corrupt or not a PyTorch checkpoint; re-download or re-save it') from error


def patch_mmengine_checkpoint_loading():
    """Route mmengine's local-file checkpoint loading through :func:`load_local_checkpoint`."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
