"""The GPU-memory count on meta tensors (mmtransnext.utils.memory_count) and the planner built on it
(tools/analysis/gpu_memory.py): its kernels' fakes against the real kernels, and the count against the H200."""
import gc

import pytest
import torch

from mmtransnext.ops import local_aggregation, local_similarity, pooled_attention
from mmtransnext.ops.backend import planning_for
from mmtransnext.ops.pooled_attention import invert_cols_taps
from mmtransnext.utils.memory_count import MemoryCounter
from .conftest import needs_triton
from .test_pooled_attention import _inputs

# one aggregated-attention step: head size 24 in float32 is the CPU kernels' tiled path (their most workspaces)
OP_SHAPE = dict(B=2, heads=3, H=8, W=12, ph=2, pw=3, D=24, L=9, U=5, taps=2)


def _attention_step(device, attn_impl):
    """Count one forward + backward of the local and pooled ops on ``device`` tensors ('meta': their fakes)."""
    s = OP_SHAPE
    q, key, value, rows, index, weight, _ = _inputs(*s.values(), dtype=torch.float32)
    pixels = torch.randn(2, *q.shape, generator=torch.Generator().manual_seed(0))  # the local keys and values
    leaves = [
        t.to(device).clone(memory_format=torch.contiguous_format).requires_grad_()
        for t in (q, *pixels, key, value[..., :s['D']], rows, torch.randn(s['heads'], s['L']))
    ]
    inverse = [t.to(device) for t in invert_cols_taps(index, weight, s['U'])]  # geometry: built on the CPU
    index, weight = index.to(device), weight.to(device)
    counter = MemoryCounter(device)
    counter.track(leaves + [index, weight] + inverse)
    size = (s['H'], s['W'])
    with planning_for('cpu'), counter:
        q, k_local, v_local, key, value, rows, bias = leaves
        local = local_similarity(q, k_local, bias, size, 3, attn_impl)
        out, local_weights = pooled_attention(q, key, value, rows, index, weight, local, size, attn_impl, inverse)
        x_local = local_aggregation(local_weights, v_local, size, 3, attn_impl)
        gc.collect()  # Triton's interpreter holds a launch's arguments in reference cycles; a GPU launch does not
        loss = (out + x_local).square().sum()
        del out, local, local_weights, x_local
        loss.backward()
    return counter


@pytest.mark.parametrize('attn_impl', ['ext', pytest.param('triton', marks=needs_triton)])
def test_fake_kernels_allocate_what_the_kernels_allocate(attn_impl):
    """The count of a step on meta tensors (the ops' fake kernels, or the Triton launchers launching nothing) equals
    the count of the same step on CPU tensors (the real kernels, their inner allocations included)."""
    real, planned = _attention_step('cpu', attn_impl), _attention_step('meta', attn_impl)
    assert real.category_peaks['workspaces'] > 0  # the kernels' own buffers are seen
    assert planned.peak == real.peak
    assert planned.peak_categories == real.peak_categories
    assert planned.category_peaks['workspaces'] == real.category_peaks['workspaces']
    assert not planned.approximations
