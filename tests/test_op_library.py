"""The extension's ops as a torch library: ``torch.ops.load_library`` of the built module alone (no ``import
mmtransnext``, as a process that runs an exported program or an AOTInductor package has it) defines
``torch.ops.mmtransnext.<op>`` with its CPU kernels (C++ ``TORCH_LIBRARY_FRAGMENT`` / ``TORCH_LIBRARY_IMPL``), and they
compute what the package's ops compute."""
import subprocess
import sys

import pytest
import torch

from mmtransnext.ops import ext_loader, local_similarity, pooled_attention
from .conftest import needs_cuda_ext, needs_custom_op, needs_ext
from .test_ops import _inputs as local_inputs
from .test_pooled_attention import _inputs as pooled_inputs

# (B, heads, H, W, ph, pw, D, L, U, taps): local keys and resized-bias taps
POOLED_SHAPE = (2, 2, 3, 5, 2, 3, 4, 9, 7, 2)
LOCAL_SHAPE = (2, 2, 5, 7, 16, 3)

# run with only torch: the ops' forward and backward on the parent's inputs
CHILD = '''
import sys
import torch
torch.ops.load_library(sys.argv[1])
assert not any(name.split('.')[0] == 'mmtransnext' for name in sys.modules), 'the package was imported'
ops = torch.ops.mmtransnext
t = torch.load(sys.argv[2])
q, k, v, rows, index, weight, local, (H, W) = t['pooled']
out, local_weights, lse = ops.pooled_attention(q, k, v, rows, index, weight, local, H, W)
grads = ops.pooled_attention_backward(t['grad_out'], t['grad_local_weights'], torch.zeros_like(lse), q, k, v, rows,
                                      index, weight, out, local_weights, lse, H, W)
q, k, bias, (H, W, window) = t['local']
torch.save({'pooled': [out, local_weights, *grads], 'local': ops.local_similarity(q, k, bias, H, W, window)},
           sys.argv[3])
'''


@needs_ext
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=needs_cuda_ext)])
def test_the_ops_run_with_torch_alone(tmp_path, device):
    B, heads, H, W = POOLED_SHAPE[:4]
    # query, key, value in bfloat16: the op casts them to float32 for its kernels and their gradients back
    q, k, v, rows, index, weight, local = pooled_inputs(*POOLED_SHAPE, dtype=torch.float32, device=device)
    q, k, v = (t.bfloat16().requires_grad_() for t in (q, k, v))
    rows, local = rows.requires_grad_(), local.requires_grad_()
    out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (H, W), 'ext')
    g = torch.Generator().manual_seed(0)
    grad_out = torch.randn(out.shape, generator=g).to(device)
    grad_local_weights = torch.randn(local_weights.shape, generator=g).to(device)
    torch.autograd.backward((out, local_weights), (grad_out.bfloat16(), grad_local_weights))
    lq, lk, _, lbias, _ = local_inputs(*LOCAL_SHAPE, dtype=torch.float32, device=device)
    Hl, Wl, window = LOCAL_SHAPE[2], LOCAL_SHAPE[3], LOCAL_SHAPE[5]
    torch.save(
        {
            'pooled': [t.detach() for t in (q, k, v, rows, index, weight, local)] + [(H, W)],
            # what autograd hands the op's backward: the outputs' gradients in the op's float32
            'grad_out': grad_out.bfloat16().float(),
            'grad_local_weights': grad_local_weights,
            'local': [lq, lk, lbias, (Hl, Wl, window)],
        },
        tmp_path / 'inputs.pt')
    run = subprocess.run(
        [sys.executable, '-c', CHILD, ext_loader.ext.__file__, tmp_path / 'inputs.pt', tmp_path / 'outputs.pt'],
        capture_output=True,
        text=True,
        timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(tmp_path / 'outputs.pt')
    # the same kernels: the same bits on the CPU; the CUDA backward sums the key side with atomic adds (any order)
    exact = dict(rtol=0, atol=0) if device == 'cpu' else {}
    child_out, child_local_weights, *child_grads = got['pooled']
    assert child_out.dtype == torch.float32 and [g.dtype for g in child_grads[:3]] == [torch.bfloat16] * 3
    torch.testing.assert_close(child_out.bfloat16(), out, rtol=0, atol=0)
    torch.testing.assert_close(child_local_weights, local_weights, rtol=0, atol=0)
    for name, ours, theirs in zip(['query', 'key', 'value', 'bias rows', 'local logits'], (q, k, v, rows, local),
                                  child_grads):
        torch.testing.assert_close(theirs, ours.grad, **exact, msg=lambda m: f'd {name}: {m}')
    torch.testing.assert_close(got['local'], local_similarity(lq, lk, lbias, (Hl, Wl), window, 'ext'), rtol=0, atol=0)


@needs_ext
@needs_custom_op
def test_the_cpp_ops_have_fake_kernels_and_autograd():
    """torch.library's own checks of the C++-defined ops with the fake kernels and autograd added from Python."""
    q, k, v, rows, index, weight, local = pooled_inputs(*POOLED_SHAPE, dtype=torch.float32)
    utils = ('test_schema', 'test_faketensor', 'test_autograd_registration')
    torch.library.opcheck(torch.ops.mmtransnext.pooled_attention.default,
                          (q.requires_grad_(), k, v, rows, index, weight, local, *POOLED_SHAPE[2:4]),
                          test_utils=utils)
    lq, lk, lv, lbias, weights = local_inputs(*LOCAL_SHAPE, dtype=torch.float32)
    Hl, Wl, window = LOCAL_SHAPE[2], LOCAL_SHAPE[3], LOCAL_SHAPE[5]
    torch.library.opcheck(torch.ops.mmtransnext.local_similarity.default,
                          (lq.requires_grad_(), lk, lbias, Hl, Wl, window),
                          test_utils=utils)
    torch.library.opcheck(torch.ops.mmtransnext.local_aggregation.default,
                          (weights.requires_grad_(), lv, Hl, Wl, window),
                          test_utils=utils)


@needs_ext
@pytest.mark.parametrize('name, source', [('local_similarity', 'local_attention'),
                                          ('local_aggregation', 'local_attention'),
                                          ('pooled_attention', 'pooled_attention'), ('gelu_gate', 'gelu_gate'),
                                          ('position_bias_mlp', 'position_bias_mlp')])
def test_each_op_is_defined_in_its_dispatcher(name, source):
    """Forward and backward are defined in C++ by the op's own dispatcher (their fakes and autograd come from
    Python), not as Python custom ops."""
    for op in (f'mmtransnext::{name}', f'mmtransnext::{name}_backward'):
        registrations = dict(line.split(': ', 1) for line in torch._C._dispatch_dump(op).splitlines() if ': ' in line)
        for what in ('debug', 'CPU'):  # the schema, the CPU kernel
            assert f'csrc/pytorch/{source}.cpp' in registrations[what], registrations
