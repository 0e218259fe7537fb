"""Triton kernels of the attention ops (the ``'triton'`` backend; ``mmtransnext.ops.backend`` decides when).

Imported only when that backend runs: Triton reads ``TRITON_INTERPRET`` when a kernel is defined, and a machine
without Triton never needs it.
"""
import os


def interpreting() -> bool:
    """Whether Triton runs kernels through its interpreter (on CPU tensors) in this process."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def launch(kernel, grid, like):
    """``kernel[grid]``, or nothing for meta tensors (``like``): the memory count (``mmtransnext.utils.memory_count``)
    runs the launchers on meta tensors for what they allocate, which is what they allocate on a GPU."""
    if like.is_meta:
        return lambda *args, **kwargs: None
    return kernel[grid]
