"""The compiled op ``mmtransnext._ext``, loaded in this one place (as mmcv's ``ext_loader``).

Ops call ``ext_loader.ext.<kernel>``: replacing ``ext`` here (tests) affects them all. Which backend an op runs on
is decided in ``backend.py``.
"""
from typing import Optional

import torch

try:
    from .. import _ext as ext
except ImportError:  # built without the op (MMTRANSNEXT_WITH_OPS=0, or torch missing at build time)
    ext = None


def ext_available(device: Optional[torch.device] = None) -> bool:
    """Whether the extension is built, and (given a device) has kernels for it."""
    if ext is None:
        return False
    if device is None:
        return True
    device = torch.device(device)
    return device.type == 'cpu' or (device.type == 'cuda' and bool(ext.with_cuda))
