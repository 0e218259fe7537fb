"""PyTorch 2's compiler on a GPU: ``torch.compile(fullgraph=True)`` with inductor (its default backend, which on a GPU
generates Triton kernels in seconds) trains and infers the backbone with every ``attn_impl`` that runs there, in
float32 and under bfloat16 autocast, at sizes marked dynamic. Skipped without CUDA (``tools/gpu_check.sh`` runs them);
the CPU's compile tests are ``test_pytorch2.py``."""
import contextlib
import copy

import pytest
import torch

from .conftest import needs_cuda_ext, needs_triton
from .test_pytorch2 import SIZES, _backbone, _graphs_compiled, _weighted_sum

pytestmark = needs_cuda_ext

# (attn_impl, autocast dtype): every backend in float32; the default also under bfloat16 autocast
CASES = [('auto', None), ('auto', torch.bfloat16), ('pytorch', None), ('ext', None),
         pytest.param('triton', None, marks=needs_triton)]


def _autocast(dtype):
    return torch.autocast('cuda', dtype=dtype) if dtype else contextlib.nullcontext()


def _tolerance(dtype):
    """Relative to the largest magnitude: float32 rounding, or bfloat16's (8 bits) where autocast runs in it."""
    return 1e-5 if dtype is None else 3e-2


def test_cuda_compiled_inference_compiles_once_for_dynamic_sizes():
    import torch._dynamo
    backbone = _backbone().cuda().eval()
    torch._dynamo.reset()
    graphs_before = _graphs_compiled()
    compiled = torch.compile(backbone, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for size in SIZES[:3]:
            image = torch.randn(2, 3, *size, device='cuda')
            for g, e in zip(compiled(image), backbone(image)):
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    assert _graphs_compiled() - graphs_before == 1


@pytest.mark.parametrize('attn_impl,dtype', CASES)
def test_cuda_compiled_training_gives_eager_gradients(attn_impl, dtype):
    """Three sizes marked dynamic, one not a multiple of 32: outputs and every gradient equal eager's; one graph."""
    import torch._dynamo
    eager = _backbone(attn_impl).cuda().train()
    compiled_model = copy.deepcopy(eager)
    torch._dynamo.reset()
    graphs_before = _graphs_compiled()
    compiled = torch.compile(compiled_model, fullgraph=True, dynamic=True)
    for size in SIZES[:2] + SIZES[3:]:
        image = torch.randn(2, 3, *size, device='cuda')
        with _autocast(dtype):
            got, expected = compiled(image), eager(image)
        for g, e in zip(got, expected):
            assert (g.float() - e.float()).abs().max() <= _tolerance(dtype) * e.float().abs().max(), size
        _weighted_sum(got).backward()
        _weighted_sum(expected).backward()
        scale = max(p.grad.abs().max() for p in eager.parameters())
        for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
            assert (p.grad - q.grad).abs().max() <= _tolerance(dtype) * scale, (size, name)
            p.grad = q.grad = None
    assert _graphs_compiled() - graphs_before == 1
