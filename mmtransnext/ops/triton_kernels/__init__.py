"""Triton kernels of the attention ops (the ``'triton'`` backend; ``mmtransnext.ops.backend`` decides when).

Imported only when that backend runs: Triton reads ``TRITON_INTERPRET`` when a kernel is defined, and a machine
without Triton never needs it.
"""
import os


def interpreting() -> bool:
    """Whether Triton runs kernels through its interpreter (on CPU tensors) in this process."""
    return os.environ.get('TRITON_INTERPRET') == '1'
