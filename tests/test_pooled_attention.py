"""The split-softmax op ``pooled_attention`` against a softmax written out independently."""
import pytest
import torch

from mmtransnext.models.layers.position_bias import (bias_taps, gather_position_bias, position_bias_rows,
                                                     relative_position_table)
from mmtransnext.ops import expand_position_bias, ext_available, pooled_attention, pooled_attention_reference
from .conftest import needs_cuda_ext, needs_custom_op, needs_ext

# the op's CPU kernels split their work over threads; that split is part of what is tested
pytestmark = pytest.mark.usefixtures('all_cores')

# (B, heads, H, W, ph, pw, D, L, U, taps): 1x1, maps smaller than the window, odd sizes, batch > 1,
# stage 4 (no local keys), interpolation taps, and P > 16384 / W so a row runs as several blocks with a
# ragged last one (the CPU kernel's blocks hold 32768 logits)
SHAPES = [(1, 1, 1, 1, 1, 1, 3, 9, 2, 1), (2, 2, 2, 1, 1, 1, 4, 9, 3, 1), (2, 2, 3, 5, 2, 3, 4, 9, 7, 4),
          (1, 3, 7, 9, 3, 4, 5, 9, 11, 2), (2, 1, 4, 4, 4, 4, 5, 0, 6, 1), (1, 1, 3, 37, 30, 36, 2, 9, 40, 4)]


def _inputs(B, heads, H, W, ph, pw, D, L, U, taps, dtype=torch.float64, device='cpu'):
    g = torch.Generator().manual_seed(B * 1000 + H * 10 + W)
    N, P = H * W, ph * pw
    q, k = torch.randn(B, heads, N, D, generator=g, dtype=dtype), torch.randn(B, heads, P, D, generator=g, dtype=dtype)
    v = torch.randn(B, heads, P, D + 1, generator=g, dtype=dtype)
    rows = torch.randn(heads, H, ph, U, generator=g, dtype=dtype)
    index = torch.randint(0, U, (taps, W, pw), generator=g)
    weight = torch.rand(taps, W, pw, generator=g, dtype=dtype)
    local = torch.randn(B, heads, N, L, generator=g, dtype=dtype)
    if L:
        local[..., :2] = float('-inf')  # neighbours outside the map
    return [t.to(device) for t in (q, k, v, rows, index, weight, local)]


def _softmax_by_hand(q, k, v, rows, index, weight, local):
    """exp / sum written out per query, the bias gathered entry by entry: no code shared with the op."""
    B, heads, N, _ = q.shape
    taps, W, pw = index.shape
    H, ph = rows.shape[1], rows.shape[2]
    bias = torch.zeros(heads, N, ph * pw, dtype=q.dtype)
    for y in range(H):
        for x in range(W):
            for ky in range(ph):
                for kx in range(pw):
                    bias[:, y * W + x,
                         ky * pw + kx] = sum(weight[t, x, kx] * rows[:, y, ky, index[t, x, kx]] for t in range(taps))
    pooled = torch.einsum('bhnd,bhpd->bhnp', q, k) + bias
    peak = torch.maximum(pooled.amax(-1), local.amax(-1) if local.shape[-1] else pooled.amax(-1))[..., None]
    e_pool, e_local = torch.exp(pooled - peak), torch.exp(local - peak)
    total = e_pool.sum(-1, keepdim=True) + e_local.sum(-1, keepdim=True)
    return torch.einsum('bhnp,bhpd->bhnd', e_pool / total, v), e_local / total


@pytest.mark.parametrize('shape', SHAPES[:5])
def test_reference_equals_the_softmax_by_hand(shape):
    q, k, v, rows, index, weight, local = _inputs(*shape)
    out, local_weights, lse = pooled_attention_reference(q, k, v, rows, index, weight, local)
    want_out, want_local = _softmax_by_hand(q, k, v, rows, index, weight, local)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(local_weights, want_local)
    assert (local_weights[..., :2] == 0).all() if shape[7] else local_weights.numel() == 0


@needs_ext
@pytest.mark.parametrize('shape', SHAPES)
def test_gradcheck_float64(shape):
    H, W = shape[2], shape[3]
    q, k, v, rows, index, weight, local = _inputs(*shape)
    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]

    def op(q, k, v, rows, local):
        return pooled_attention(q, k, v, rows, index, weight, local, (H, W), 'ext')

    # the several-blocks shape has ~8000 inputs: check random projections of its Jacobian
    assert torch.autograd.gradcheck(op, leaves, fast_mode=shape == SHAPES[-1])


@needs_ext
@pytest.mark.parametrize('shape', SHAPES)
def test_ext_matches_the_reference_in_float32(shape):
    H, W = shape[2], shape[3]
    inputs = _inputs(*shape, dtype=torch.float32)
    results = []
    for impl in ('pytorch', 'ext'):
        q, k, v, rows, index, weight, local = [t.clone() for t in inputs]
        leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
        out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (H, W), impl)
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g)).sum() + (
            local_weights * torch.randn(local_weights.shape, generator=g)).sum()
        loss.backward()
        results.append([out, local_weights] + [t.grad for t in leaves])
    for name, ref, ours in zip(['out', 'local weights', 'd query', 'd key', 'd value', 'd bias rows', 'd local'],
                               *results):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=name)


@needs_ext
def test_lse_gradient_and_unused_outputs():
    """The log-sum-exp output carries its gradient; outputs that do not reach the loss get zeros."""
    from mmtransnext.ops.pooled_attention import _forward_apply
    q, k, v, rows, index, weight, local = _inputs(2, 2, 3, 5, 2, 3, 4, 9, 7, 4)
    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
    assert torch.autograd.gradcheck(lambda *t: _forward_apply(*t[:4], index, weight, t[4], 3, 5)[2], leaves)
    assert torch.autograd.gradcheck(lambda *t: _forward_apply(*t[:4], index, weight, t[4], 3, 5)[0], leaves)


@needs_ext
def test_position_bias_taps_read_the_same_bias_as_the_gather():
    """The op's per-row table and W-axis taps give the bias of ``gather_position_bias``, with and
    without bilinear resizing."""
    for grid, pool, size, pool_size in [((16, 16), (2, 2), (16, 16), (2, 2)), ((12, 20), (3, 5), (31, 17), (7, 4)),
                                        ((8, 8), (8, 8), (5, 11), (5, 11))]:
        inverse_h, inverse_w, table, shape = relative_position_table(grid, pool, (14, 14))
        taps = bias_taps(inverse_h, inverse_w, size, pool_size, shape)
        values = torch.randn(3, table.shape[0])
        rows = position_bias_rows(values, taps, size, pool_size)
        ours = expand_position_bias(rows, taps.cols_taps_index, taps.cols_taps_weight)
        torch.testing.assert_close(ours, gather_position_bias(values, taps, size, pool_size), rtol=1e-5, atol=1e-6)


@needs_ext
def test_bad_arguments_name_the_problem():
    q, k, v, rows, index, weight, local = _inputs(1, 2, 3, 4, 2, 2, 4, 9, 5, 1, dtype=torch.float32)
    with pytest.raises(RuntimeError, match='query must hold H \\* W'):
        pooled_attention(q, k, v, rows, index, weight, local, (3, 5), 'ext')
    with pytest.raises(RuntimeError, match='bias_rows must be'):
        pooled_attention(q, k, v, rows[:1], index, weight, local, (3, 4), 'ext')
    with pytest.raises(RuntimeError, match='cols_index must be'):
        pooled_attention(q, k, v, rows, index[:, :2], weight[:, :2], local, (3, 4), 'ext')
    with pytest.raises(RuntimeError, match='value must be'):
        pooled_attention(q, k, v[:, :, :1], rows, index, weight, local, (3, 4), 'ext')


@needs_ext
def test_low_precision_inputs_run_in_float32():
    q, k, v, rows, index, weight, local = _inputs(1, 2, 3, 4, 2, 2, 4, 9, 5, 1, dtype=torch.float32)
    ref, ref_local = pooled_attention(q, k, v, rows, index, weight, local, (3, 4), 'ext')
    out, out_local = pooled_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), rows, index, weight, local, (3, 4),
                                      'ext')
    assert out.dtype == torch.bfloat16 and out_local.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


@needs_ext
@needs_custom_op
def test_torch_compile_traces_through_the_op():
    q, k, v, rows, index, weight, local = _inputs(2, 2, 3, 5, 2, 3, 4, 9, 7, 4, dtype=torch.float32)

    def block(q, k, v, rows, local):
        out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (3, 5), 'ext')
        return out.sum() + local_weights.square().sum()

    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    compiled(*leaves).backward()
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    block(*leaves).backward()
    for ours, ref in zip(grads, [t.grad for t in leaves]):
        torch.testing.assert_close(ours, ref)


@needs_cuda_ext
@pytest.mark.parametrize('shape', SHAPES)
def test_cuda_matches_cpu(shape):
    H, W = shape[2], shape[3]
    results = []
    for device in ('cpu', 'cuda'):
        q, k, v, rows, index, weight, local = _inputs(*shape, dtype=torch.float64, device=device)
        leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
        out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (H, W), 'ext')
        (out.sin().sum() + local_weights.square().sum()).backward()
        results.append([t.detach().cpu() for t in [out, local_weights] + [t.grad for t in leaves]])
    for ours, ref in zip(*results[::-1]):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('attn_impl, fused', [('auto', True), ('ext', True), ('pytorch', False)])
def test_which_attentions_run_the_split_softmax_on_the_cpu(monkeypatch, attn_impl, fused):
    """'auto' (its static table: what it measures is tests/test_autotune.py's) and 'ext' put every attention block
    (stages 1-4) through the op on the CPU; 'pytorch' writes the softmax out; dropout on the attention weights needs
    them all, so it writes them out too."""
    if attn_impl != 'pytorch' and not ext_available('cpu'):
        pytest.skip('mmtransnext._ext is not built')
    monkeypatch.setenv('MMTRANSNEXT_AUTOTUNE', '0')
    from mmtransnext.models import TransNeXt
    from mmtransnext.models.layers import attention
    calls = []
    monkeypatch.setattr(attention, 'pooled_attention', lambda *args: calls.append(args[8]) or pooled_attention(*args))
    arch = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])
    model = TransNeXt(arch=arch, img_size=64, attn_impl=attn_impl)
    model(torch.randn(1, 3, 64, 64)).__len__()
    assert len(calls) == (5 if fused else 0) and set(calls) <= {attn_impl}
    calls.clear()
    model = TransNeXt(arch=arch, img_size=64, attn_impl=attn_impl, attn_drop_rate=0.1).train()
    model(torch.randn(1, 3, 64, 64))
    assert not calls
