"""The compiled op ``mmtransnext._ext``, loaded in this one place (as mmcv's ``ext_loader``).

Loading the module registers its ops with torch's dispatcher (``torch.ops.mmtransnext.<op>``: schemas and CPU / CUDA
kernels from C++, fake kernels and autograd from ``registration.py``); its Python functions are the same kernels.
``replaced(module)`` makes every op of the extension run ``module``'s functions instead (tests: the CUDA emulation's
build, wrappers of the built module). Which backend an op runs on is decided in ``backend.py``.
"""
import contextlib
import warnings
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


@contextlib.contextmanager
def replaced(module):
    """While active, ``ext`` is ``module`` (an object with the extension's Python functions) and the extension's ops
    run their CPU kernels from it: each op's Python function (``registration.EXTENSION_KERNELS``, which calls
    ``ext.<function>``) replaces the registered C++ kernel on the dispatcher, for every caller, until exit."""
    global ext
    from .registration import EXTENSION_KERNELS
    previous, ext = ext, module
    library = torch.library.Library('mmtransnext', 'IMPL')
    try:
        with warnings.catch_warnings():  # torch < 2.4 warns that the registered kernels are overridden: the point
            warnings.filterwarnings('ignore', message='(?s).*Overriding a previously registered kernel')
            for name, kernel in EXTENSION_KERNELS.items():
                library.impl(name, kernel, 'CPU')
        yield module
    finally:
        ext = previous
        if hasattr(library, '_destroy'):
            library._destroy()
        else:  # torch < 2.4: the registrations go with the library object
            library.m = None
