"""Make mmengine 0.10.x read its own checkpoints under torch >= 2.6, safely.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch 2.6 changed its default to True,
which refuses mmengine's own checkpoints (their ``message_hub`` holds numpy and mmengine objects), so
``--resume`` and ``load_from`` fail with "Weights only load failed". Importing ``mmtransnext`` registers
:func:`load_local_checkpoint` as mmengine's loader for local paths (``CheckpointLoader``'s default
scheme; URLs keep mmengine's loaders). It reads every file with torch's safe (weights-only) unpickler,
allowing exactly the objects that mmengine's Runner checkpoints hold besides tensors (numpy arrays,
scalars and dtypes, mmengine's ``HistoryBuffer``). Anything else is refused with an error naming the
file and what was refused; a file the user trusts can be loaded with full unpickling through
``--trust-checkpoint`` on the tools or ``MMTRANSNEXT_TRUST_CHECKPOINTS=1``. A truncated or corrupt file
raises an error naming it.
"""
import contextlib
import os
import os.path as osp
import pickle

import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

try:  # numpy >= 2
    from numpy._core import multiarray
except ImportError:  # pragma: no cover
    from numpy.core import multiarray
import numpy as np

TRUST_ENV = 'MMTRANSNEXT_TRUST_CHECKPOINTS'


class CheckpointReadError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt or not a torch file)."""


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects the safe unpickler does not allow, and the user did not mark it trusted."""


def _history_buffer_attribute(owner, name: str):
    """``getattr`` as mmengine's checkpoints use it: the statistics methods of ``HistoryBuffer`` (pickled
    by qualified name). Anything else would give a crafted file a way to reach arbitrary attributes."""
    if owner is HistoryBuffer and name in {'min', 'max', 'mean', 'current', *HistoryBuffer._statistics_methods}:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not a HistoryBuffer statistics method')


# What mmengine's Runner checkpoints hold besides tensors and builtins: found by loading the toy jobs'
# checkpoints (torch.serialization.get_unsafe_globals_in_checkpoint, then what the unpickler refused).
RUNNER_CHECKPOINT_GLOBALS = [
    np.ndarray,
    np.dtype,
    HistoryBuffer,
    (_history_buffer_attribute, 'builtins.getattr'),
    *[(fn, f'{module}.{fn.__name__}') for fn in (multiarray._reconstruct, multiarray.scalar)
      for module in ('numpy._core.multiarray', 'numpy.core.multiarray')],  # written under numpy 2 / 1
    # the dtypes of numpy scalars and arrays (their state is set through their class)
    *{
        type(np.dtype(name))
        for name in ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64', 'float16',
                     'float32', 'float64')
    },
]
# the same, by the names torch.serialization reports for a checkpoint's globals
RUNNER_CHECKPOINT_GLOBAL_NAMES = frozenset(g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
                                           for g in RUNNER_CHECKPOINT_GLOBALS)


def _safe_globals(allowed):
    # torch < 2.5 has no scoped allowlist: there only plain tensor files load without the opt-in
    scoped = getattr(torch.serialization, 'safe_globals', None)
    return scoped(allowed) if scoped is not None else contextlib.nullcontext()


def checkpoint_trusted() -> bool:
    return os.environ.get(TRUST_ENV, '0') == '1'


def load_local_checkpoint(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename} does not exist')
    try:
        try:
            with _safe_globals(RUNNER_CHECKPOINT_GLOBALS):
                return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as safe_error:
            if 'Weights only load failed' not in str(safe_error):
                raise
            if not checkpoint_trusted():
                raise _untrusted(filename, safe_error) from None
            return torch.load(filename, map_location=map_location, weights_only=False)
    except UntrustedCheckpointError:
        raise
    except Exception as error:  # noqa: BLE001  (any failure: say which file, keep the cause)
        raise CheckpointReadError(
            f'cannot read checkpoint {filename}: {type(error).__name__}: {error}. The file is '
            'truncated, corrupt or not a PyTorch checkpoint; re-download or re-save it') from error


def _untrusted(filename: str, safe_error: Exception) -> UntrustedCheckpointError:
    try:
        refused = [
            g for g in torch.serialization.get_unsafe_globals_in_checkpoint(filename)
            if g not in RUNNER_CHECKPOINT_GLOBAL_NAMES
        ]
    except Exception:  # noqa: BLE001  (not a zip checkpoint: fall back to torch's message)
        refused = []
    what = ', '.join(refused) if refused else str(safe_error).splitlines()[0]
    return UntrustedCheckpointError(
        f'checkpoint {filename} holds objects that loading it would have to construct by running code '
        f'({what}); mmtransnext loads checkpoints with the safe unpickler and refused it. A file from a '
        'source you trust can be loaded with --trust-checkpoint (tools/train.py, test.py, demo/image_demo.py, '
        f'model_converters/convert_official.py) or by setting {TRUST_ENV}=1.')


def patch_mmengine_checkpoint_loading():
    """Route mmengine's local-file checkpoint loading through :func:`load_local_checkpoint`."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
