"""The compiled op ``mmtransnext._ext``, loaded in this one place (as mmcv's ``ext_loader``), and the choice
between it and the PyTorch reference that every op makes the same way (``attn_impl``).

Ops call ``ext_loader.ext.<kernel>``: replacing ``ext`` here (tests) affects them all.
"""
from typing import Optional

import torch

try:
    from .. import _ext as ext
except ImportError:  # built without the op (MMTRANSNEXT_WITH_OPS=0, or torch missing at build time)
    ext = None

ATTN_IMPLS = ('auto', 'ext', 'pytorch')
BUILD_HINT = ('build it with `bash tools/setup_env.sh` (or `pip install --no-build-isolation -e .` with torch '
              'installed; add FORCE_CUDA=1 for the CUDA kernels), or set attn_impl="pytorch"')


def ext_available(device: Optional[torch.device] = None) -> bool:
    """Whether the extension is built, and (given a device) has kernels for it."""
    if ext is None:
        return False
    if device is None:
        return True
    device = torch.device(device)
    return device.type == 'cpu' or (device.type == 'cuda' and bool(ext.with_cuda))


def resolve_attn_impl(attn_impl: str, device: torch.device) -> str:
    """'ext' or 'pytorch' for tensors on ``device``; a clear error when 'ext' cannot run there."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
    if attn_impl == 'auto':
        return 'ext' if ext_available(device) else 'pytorch'
    if attn_impl == 'ext' and not ext_available(device):
        what = 'is not built' if ext is None else f'was built without kernels for {torch.device(device).type}'
        raise RuntimeError(f'attn_impl="ext": the attention op mmtransnext._ext {what}; {BUILD_HINT}')
    return attn_impl
