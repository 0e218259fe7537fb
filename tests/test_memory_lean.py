"""The op path keeps less for backward than autograd would (README, Benchmarks): the same values and
gradients as the reference expressions, and only the tensors it says it keeps."""
import pytest
import torch
import torch.nn.functional as F

from mmtransnext.models.layers import ConvolutionalGLU
from mmtransnext.models.layers.attention import AggregatedAttention, _AvgPool, _Normalize, _ScaleQueries, _TokenWeights
from mmtransnext.models.layers.position_bias import stage_geometry
from mmtransnext.ops import gelu_gate, position_bias_mlp_reference
from mmtransnext.ops.position_bias_mlp import _RecomputedHidden
from mmtransnext.utils.cuda_autocast import CudaAutocast
from .conftest import needs_ext

# the op's CPU kernels split their work over threads; that split is part of what is tested
pytestmark = pytest.mark.usefixtures('all_cores')


def _kept_storages(fn):
    """Run ``fn`` (a forward) and return the sizes (numel) of the distinct storages autograd keeps."""
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, list(kept.values())


def _grads(module, x, out):
    grads = torch.autograd.grad(out.square().sum(), [x] + [p for p in module.parameters() if p.requires_grad])
    return [g.detach().clone() for g in grads]


@needs_ext
@pytest.mark.parametrize('frozen', [(), ('fc2', ), ('dwconv', 'fc1')])
def test_convglu_keeps_gate_and_value_only_with_the_same_gradients(frozen):
    torch.manual_seed(0)
    lean = ConvolutionalGLU(16, 64, attn_impl='ext').double()
    for name in frozen:
        getattr(lean, name).requires_grad_(False)
    x = torch.randn(2, 7 * 5, 16, dtype=torch.float64, requires_grad=True)
    out, kept = _kept_storages(lambda: lean(x, 7, 5))
    # the same layers through plain autograd (which keeps every intermediate)
    hidden = lean.fc1.out_features // 2
    gate = F.linear(x, lean.fc1.weight[:hidden], lean.fc1.bias[:hidden])
    value = F.linear(x, lean.fc1.weight[hidden:], lean.fc1.bias[hidden:])
    expected = lean.fc2(gelu_gate(lean.dwconv(gate, 7, 5), value, 'ext'))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for got, want in zip(_grads(lean, x, out), _grads(lean, x, expected)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # gate and value; not dwconv's output nor fc2's input
    assert sorted(n for n in kept if n >= 2 * 35 * hidden) == [2 * 35 * hidden] * 2


@needs_ext
def test_convglu_recomputes_under_the_forwards_autocast():
    torch.manual_seed(0)
    lean = ConvolutionalGLU(16, 64, attn_impl='ext')
    x = torch.randn(1, 36, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = lean(x, 6, 6)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lean.parameters())
    # the same values as the reference layer under the same autocast (its gradients within bfloat16 rounding)
    reference = ConvolutionalGLU(16, 64, attn_impl='pytorch')
    reference.load_state_dict(lean.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_ref = reference(x_ref, 6, 6)
    out_ref.float().sum().backward()
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    for (name, p), p_ref in zip(lean.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=2e-2, atol=2e-2 * p_ref.grad.abs().max().item(), msg=name)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=2e-2, atol=2e-2 * x_ref.grad.abs().max().item())


def test_lean_functions_compute_the_reference_expressions():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    x[0, 0, 0] = 0  # a zero vector: the clamped norm
    torch.testing.assert_close(_Normalize.apply(x), F.normalize(x, dim=-1), rtol=0, atol=0)
    torch.autograd.gradcheck(lambda t: _Normalize.apply(t), (x[:, :, 1:].clone().requires_grad_(), ))
    zero = x.clone().requires_grad_()
    _Normalize.apply(zero).sum().backward()
    reference = x.clone().requires_grad_()
    F.normalize(reference, dim=-1).sum().backward()
    torch.testing.assert_close(zero.grad, reference.grad)

    embedding, temperature = torch.randn(3, 1, 8, dtype=torch.float64), torch.randn(3, 1, 1, dtype=torch.float64)
    scale = torch.rand(10, 1, dtype=torch.float64) + 1
    torch.testing.assert_close(_ScaleQueries.apply(x, embedding, temperature, scale),
                               (x + embedding) * F.softplus(temperature) * scale,
                               rtol=0,
                               atol=0)
    torch.autograd.gradcheck(lambda q, e, t: _ScaleQueries.apply(q, e, t, scale),
                             tuple(t.clone().requires_grad_() for t in (x, embedding, temperature)))

    maps = torch.randn(2, 4, 9, 7, dtype=torch.float64).permute(0, 1, 3, 2)  # not contiguous, as in the model
    torch.testing.assert_close(_AvgPool.apply(maps, (3, 2)), F.adaptive_avg_pool2d(maps, (3, 2)), rtol=0, atol=0)
    torch.autograd.gradcheck(lambda t: _AvgPool.apply(t, (3, 2)), (maps.clone().requires_grad_(), ))
    # the gradient comes back in the input's layout (channels_last in the model), as autograd's own pooling gives
    # it: torch 2.1's CPU GELU backward, upstream, is wrong for a strided gradient
    tokens = torch.randn(2, 9 * 7, 4, dtype=torch.float64, requires_grad=True)
    as_map = tokens.reshape(2, 9, 7, 4).permute(0, 3, 1, 2)
    grad = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    lean, = torch.autograd.grad(_AvgPool.apply(as_map, (3, 2)), as_map, grad)
    reference, = torch.autograd.grad(F.adaptive_avg_pool2d(as_map, (3, 2)), as_map, grad)
    assert lean.stride() == reference.stride() == as_map.stride()
    torch.testing.assert_close(lean, reference, rtol=0, atol=0)


def test_autocast_lean_functions_keep_the_reduced_copies_only():
    """Under CUDA autocast (its rules, on CPU tensors) the attention keeps reduced copies: the normalisation of the
    keys keeps its (reduced) input, the learnable-token product its float32 query (kept anyway), both with
    autograd's own values and gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 8, dtype=torch.bfloat16)
    with CudaAutocast(torch.bfloat16):
        keys = x.clone().requires_grad_()
        out, kept = _kept_storages(lambda: _Normalize.apply(keys, True))
        reference = x.clone().requires_grad_()
        expected = F.normalize(reference, dim=-1)
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert sorted(kept) == [2 * 3 * 10, x.numel()]  # the norms and the bfloat16 input, not the float32 output
    grad = torch.randn(out.shape)
    got, want = torch.autograd.grad(out, keys, grad)[0], torch.autograd.grad(expected, reference, grad)[0]
    assert got.dtype == want.dtype == torch.bfloat16
    assert (got - want).abs().max() <= 2**-7 * want.abs().max()  # the same formula, rounded in another order

    q_norm = F.normalize(torch.randn(2, 3, 10, 8), dim=-1).requires_grad_()
    tokens = torch.randn(3, 8, 9, requires_grad=True)
    with CudaAutocast(torch.bfloat16):
        out, kept = _kept_storages(lambda: _TokenWeights.apply(q_norm, tokens, torch.bfloat16))
        expected = q_norm @ tokens
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert sorted(kept) == [tokens.numel(), q_norm.numel()]  # the float32 leaves, no bfloat16 copies
    grad = torch.randn(out.shape).bfloat16()
    for got, want in zip(torch.autograd.grad(out, (q_norm, tokens), grad),
                         torch.autograd.grad(expected, (q_norm, tokens), grad)):
        assert got.dtype == want.dtype
        assert (got - want).abs().max() <= 2**-7 * want.abs().max()  # bfloat16 sums, in another order


def test_position_bias_mlp_recomputes_its_hidden_layer():
    """Off the CPU's fused op (GPUs; here forced), with a kernel backend the bias MLP keeps its inputs, not the
    (offsets x 512) hidden layer, with the reference's values and gradients."""
    torch.manual_seed(0)
    coords = torch.randn(300, 2, dtype=torch.float64)
    weights = [torch.randn(512, 2), torch.randn(512), torch.randn(4, 512), torch.randn(4)]
    weights = [w.double().requires_grad_() for w in weights]
    out, kept = _kept_storages(lambda: _RecomputedHidden.apply(coords, *weights))
    expected = position_bias_mlp_reference(coords, *weights)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert max(kept) < 300 * 512  # no hidden layer
    grad = torch.randn(out.shape, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad(out, weights, grad), torch.autograd.grad(expected, weights, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda *w: _RecomputedHidden.apply(coords[:20], *w), weights)


@needs_ext
def test_aggregated_attention_keeps_no_copies():
    """What the op path keeps of (tokens x channels) size: the input, q's and k's unit vectors, the scaled
    queries, v, the pooling branch's pre-activation, the pooled output and the projection's input. The
    reference path keeps more (raw q and k, q + embedding, the pooling input, the ops' own copies)."""
    torch.manual_seed(0)
    attn = AggregatedAttention(48, 3, sr_ratio=2, attn_impl='ext')
    geometry = stage_geometry((12, 10), sr_ratio=2, window_size=3, pretrain_grid=(8, 8), trained_grid=(12, 10))
    x = torch.randn(1, 120, 48, requires_grad=True)
    _, kept = _kept_storages(lambda: attn(x, geometry))
    assert sum(n == 120 * 48 for n in kept) == 8
