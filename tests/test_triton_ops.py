"""The Triton kernels (attn_impl='triton') against the reference path and the authors' fixtures.

Without a GPU they run on CPU tensors through Triton's interpreter (conftest sets TRITON_INTERPRET=1): their
arithmetic is checked here, their speed on a GPU (tools/gpu_check.sh). The interpreter is slow, so the shapes are
small; each op runs with the interpreter's large tiles and with small tiles (several programs, ragged last tiles).
"""
import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.ops import local_aggregation, local_similarity, pooled_attention, pooled_attention_reference
from mmtransnext.ops.pooled_attention import invert_cols_taps
from .conftest import TRITON_DEVICE, golden_case, needs_custom_op, needs_triton
from .test_backbone_exactness import (INPUT_GRAD_RTOL, LOSS_RTOL, OUTPUT_ATOL, PARAM_GRAD_RTOL, _assert_grad_close,
                                      _rungolden_case)
from .test_pooled_attention import SHAPES, _inputs

pytestmark = needs_triton

# small tiles: many programs per op, ragged last tiles, several query splits of the key gradient, bias-table rows
# shared unevenly between programs
SMALL_TILES = dict(pooled=dict(M=16, N=16, KEY_M=32, ENTRIES=64, KEY_PROGRAMS=64, BIAS_ROWS=2), local=dict(PIXELS=16))


@pytest.fixture(params=['default_tiles', 'small_tiles'])
def tiles(request, monkeypatch):
    from mmtransnext.ops.triton_kernels import local_attention
    from mmtransnext.ops.triton_kernels import pooled_attention as pooled
    if request.param == 'small_tiles':
        for key, value in SMALL_TILES['pooled'].items():
            monkeypatch.setitem(pooled.TILES, key, value)
        monkeypatch.setitem(local_attention.TILES, 'PIXELS', SMALL_TILES['local']['PIXELS'])
    return request.param


def _on(device, tensors, dtype=None):
    return [t.to(device=device, dtype=dtype if t.is_floating_point() and dtype else t.dtype) for t in tensors]


def _pooled_grads(inputs, attn_impl, seed=0):
    """Output, local weights and the gradients of q, k, v, bias rows, local logits for fixed output gradients."""
    q, k, v, rows, index, weight, local = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    H, W = rows.shape[1], index.shape[1]
    if attn_impl == 'pytorch':
        out, local_weights, _ = pooled_attention_reference(q, k, v, rows, index, weight, local)
    else:
        out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (H, W), attn_impl)
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    grad_local = torch.randn(local_weights.shape, generator=g, dtype=torch.float64).to(local_weights)
    loss = (out * grad_out).sum() + (local_weights * grad_local).sum()
    grads = torch.autograd.grad(loss, (q, k, v, rows, local))
    return [out.detach(), local_weights.detach(), *grads]


NAMES = ['out', 'local weights', 'd query', 'd key', 'd value', 'd bias rows', 'd local logits']


@pytest.mark.parametrize('shape',
                         SHAPES,
                         ids=[f'B{s[0]}h{s[1]}_{s[2]}x{s[3]}_p{s[4]}x{s[5]}_L{s[7]}_t{s[9]}' for s in SHAPES])
def test_pooled_attention_equals_the_reference(shape, tiles):
    """1x1 maps, maps smaller than the window, odd sizes, batch 2, stage 4 (no local keys), interpolation taps,
    value head size != key head size (padded, masked tiles), many pooled keys (with the default tiles only: the
    small ones take minutes there in the interpreter)."""
    if tiles == 'small_tiles' and shape[4] * shape[5] > 256 and TRITON_DEVICE.type == 'cpu':
        pytest.skip('needs a GPU to run the small tiles on 1080 pooled keys in reasonable time (interpreter)')
    inputs = _inputs(*shape)
    want = _pooled_grads(inputs, 'pytorch')  # float64 reference
    got = _pooled_grads(_on(TRITON_DEVICE, inputs, torch.float32), 'triton')
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == torch.float32, name
        scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
        torch.testing.assert_close(a.cpu().double(), b, rtol=0, atol=2e-5 * scale, msg=name)


def test_pooled_attention_gradients_are_bitwise_repeatable():
    """No float atomics: the key / value partial sums and the bias-table gradient are reduced in a fixed order."""
    inputs = _on(TRITON_DEVICE, _inputs(2, 2, 5, 7, 2, 3, 6, 9, 5, 4), torch.float32)
    first, second = _pooled_grads(inputs, 'triton'), _pooled_grads(inputs, 'triton')
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


def test_inverse_taps_list_every_tap_once():
    """invert_cols_taps: each u's list holds exactly the (x, kx, tap) entries with that index and their weights."""
    _, _, _, _, index, weight, _ = _inputs(1, 1, 3, 7, 2, 3, 2, 9, 6, 4, dtype=torch.float32)
    weight[0, 0, 0] = 0  # an unused tap is left out
    inv_index, inv_weight = invert_cols_taps(index, weight, 6)
    taps, W, pw = index.shape
    dense = torch.zeros(6, W * pw)  # sum of weights per (u, x * pw + kx), both ways
    dense.index_put_((index.reshape(taps, -1), torch.arange(W * pw).expand(taps, -1)),
                     weight.reshape(taps, -1),
                     accumulate=True)
    mine = torch.zeros(6, W * pw).scatter_add_(1, inv_index.long(), inv_weight)
    torch.testing.assert_close(mine, dense)
    assert int((inv_weight != 0).sum()) == int((weight != 0).sum())


def _local_inputs(B, heads, H, W, D, window_size, dtype=torch.float32):
    g = torch.Generator().manual_seed(H * 100 + W)
    q, k, v = (torch.randn(B, heads, H * W, D, generator=g, dtype=dtype) for _ in range(3))
    bias = torch.randn(heads, window_size**2, generator=g, dtype=dtype)
    weights = torch.randn(B, heads, H * W, window_size**2, generator=g, dtype=dtype)
    return q, k, v, bias, weights


LOCAL_SHAPES = [(1, 1, 1, 1, 8, 3), (2, 2, 2, 1, 5, 3), (2, 3, 5, 7, 24, 3), (1, 2, 6, 4, 3, 5), (1, 1, 9, 13, 16, 3)]


@pytest.mark.parametrize('shape', LOCAL_SHAPES, ids=[f'B{s[0]}_{s[2]}x{s[3]}_d{s[4]}_w{s[5]}' for s in LOCAL_SHAPES])
def test_local_ops_equal_the_reference(shape, tiles):
    """Similarity and aggregation with their gradients: 1x1 and 2x1 maps (smaller than the window), odd sizes,
    window 5, head sizes that are not powers of two."""
    B, heads, H, W, D, ws = shape
    results = {}
    for impl in ('pytorch', 'triton'):
        device, dtype = ('cpu', torch.float64) if impl == 'pytorch' else (TRITON_DEVICE, torch.float32)
        q, k, v, bias, weights = (t.to(device, dtype).requires_grad_() for t in _local_inputs(*shape))
        sim = local_similarity(q, k, bias, (H, W), ws, impl)
        agg = local_aggregation(weights, v, (H, W), ws, impl)
        finite = sim.masked_fill(sim.isinf(), 0)
        g = torch.Generator().manual_seed(1)
        loss = (finite * torch.randn(finite.shape, generator=g, dtype=torch.float64).to(finite)).sum() + \
            (agg * torch.randn(agg.shape, generator=g, dtype=torch.float64).to(agg)).sum()
        results[impl] = [sim.isinf(), finite, agg, *torch.autograd.grad(loss, (q, k, bias, weights, v))]
    assert torch.equal(results['triton'][0].cpu(), results['pytorch'][0])  # -inf exactly outside the map
    for name, a, b in zip(['similarity', 'aggregation', 'd q', 'd k', 'd bias', 'd weights', 'd v'],
                          results['triton'][1:], results['pytorch'][1:]):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_multiply_in_their_type_and_accumulate_in_float32(dtype):
    """Under autocast q / k / v come as half / bfloat16: the products run in that type, the softmax in float32.
    Equal to the float32 reference on the same (rounded) inputs within the rounding of the probabilities."""
    q, k, v, rows, index, weight, local = _inputs(2, 2, 5, 7, 2, 3, 8, 9, 5, 4, dtype=torch.float32)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    want_out, want_local, _ = pooled_attention_reference(q.float(), k.float(), v.float(), rows, index, weight, local)
    got = pooled_attention(*_on(TRITON_DEVICE, (q, k, v, rows, index, weight, local)), (5, 7), 'triton')
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    torch.testing.assert_close(got[0].cpu().float(), want_out, rtol=0, atol=3e-2 if dtype == torch.bfloat16 else 4e-3)
    torch.testing.assert_close(got[1].cpu(), want_local, rtol=0, atol=1e-6)


def test_autocast_multiplies_in_its_dtype(monkeypatch):
    """Under autocast the scaled queries come as float32 (a float32 scale promotes them) beside bfloat16 keys and
    values: the kernels multiply in bfloat16, as the reference path's matmuls do under autocast, not in float32."""
    from mmtransnext.ops.triton_kernels import pooled_attention as kernels
    seen, launch = [], kernels.pooled_forward
    monkeypatch.setattr(kernels, 'pooled_forward', lambda *args: seen.append(args[0].dtype) or launch(*args))
    q, k, v, rows, index, weight, local = _on(TRITON_DEVICE, _inputs(2, 2, 5, 7, 2, 3, 8, 9, 5, 4, dtype=torch.float32))
    with torch.autocast(TRITON_DEVICE.type, dtype=torch.bfloat16):
        out, local_weights = pooled_attention(q, k.bfloat16(), v.bfloat16(), rows, index, weight, local, (5, 7),
                                              'triton')
    assert seen == [torch.bfloat16]
    assert out.dtype == torch.float32 and local_weights.dtype == torch.float32  # the inputs' promoted type
    rounded = [t.bfloat16().float().cpu() for t in (q, k, v)]
    want, _, _ = pooled_attention_reference(*rounded, *(t.cpu() for t in (rows, index, weight, local)))
    torch.testing.assert_close(out.cpu(), want, rtol=0, atol=3e-2)


def test_backbone_under_autocast_follows_the_reference():
    """A small TransNeXt under bfloat16 autocast (CPU here): the Triton path against the reference path under the
    same autocast, outputs and input gradient."""
    arch = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96, device=TRITON_DEVICE)
    results = {}
    for impl in ('pytorch', 'triton'):
        torch.manual_seed(0)
        model = TransNeXt(arch=arch, img_size=64, pretrain_size=64, attn_impl=impl).to(TRITON_DEVICE)
        inp = x.clone().requires_grad_()
        with torch.autocast(TRITON_DEVICE.type, dtype=torch.bfloat16):
            outs = model(inp)
        # random weights: a plain sum of LayerNorm outputs has no gradient (only rounding noise)
        g = torch.Generator().manual_seed(1)
        sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outs).backward()
        results[impl] = [o.float() for o in outs] + [inp.grad]
    for name, a, b in zip(['stage 1', 'stage 2', 'stage 3', 'stage 4', 'input grad'], results['triton'],
                          results['pytorch']):
        err = (a - b).abs().max().item() / b.abs().max().item()
        assert err < 0.03, f'{name}: {err:.3g} relative'  # bfloat16 has 8 bits: 2^-8 = 0.004 per rounding


@needs_custom_op
def test_torch_compile_traces_the_triton_ops():
    """Registered with torch.library: fake tensors trace them (opcheck), and dynamo captures forward and backward
    of the attention core in one graph, with the same gradients as eager."""
    q, k, v, rows, index, weight, local = _on(TRITON_DEVICE, _inputs(1, 2, 3, 5, 2, 2, 4, 9, 3, 2), torch.float32)
    inverse = invert_cols_taps(index, weight, rows.shape[-1])
    torch.library.opcheck(torch.ops.mmtransnext.triton_pooled_attention.default,
                          (q, k, v, rows, index, weight, local, *inverse, 'ieee'),
                          test_utils=('test_schema', 'test_faketensor', 'test_autograd_registration'))

    def core(q, k, v, rows, local):
        out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (3, 5), 'triton', inverse)
        return out.sum() + local_aggregation(local_weights, q, (3, 5), 3, 'triton').sum()

    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
    compiled = torch.autograd.grad(torch.compile(core, backend='aot_eager', fullgraph=True)(*leaves), leaves)
    eager = torch.autograd.grad(core(*leaves), leaves)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the authors' fixtures


@pytest.mark.slow
@pytest.mark.skipif(TRITON_DEVICE.type == 'cuda',
                    reason='on a GPU the Triton path runs the fixtures compiled '
                    '(test_backbone_exactness.py::test_fixture_cases_on_cuda)')
@pytest.mark.parametrize('name', ['interpolate', 'extrapolate_odd'])
def test_fixtures_through_the_triton_path(golden, name):
    """Both position-bias modes, an odd size, batch 2: outputs, loss, input gradient and (interpolation) every
    parameter gradient, the bias MLP's included, within the tolerances of the other backends."""
    case = golden_case(golden, name)
    model, x, outputs, loss = _rungolden_case(golden, case, attn_impl='triton')
    for i, (out, ref) in enumerate(zip(outputs, case['outputs'])):
        err = (out - ref).abs().max().item()
        assert err <= OUTPUT_ATOL, f'stage {i + 1} output: max error {err:.3e}'
    _assert_grad_close(loss.detach(), case['loss'], 'loss', LOSS_RTOL)
    _assert_grad_close(x.grad, case['input_grad'], 'input grad', INPUT_GRAD_RTOL)
    if 'param_grads' in case:
        params = dict(model.named_parameters())
        largest = max(ref.abs().max().item() for ref in case['param_grads'].values())
        assert any('cpb_fc1' in n for n in case['param_grads'])
        for pname, ref in case['param_grads'].items():
            if ref.abs().max().item() >= 1e-8 * largest:
                _assert_grad_close(params[pname].grad, ref, pname, PARAM_GRAD_RTOL)


# ----------------------------------------------------------------------------- bad input


def test_triton_on_the_cpu_without_the_interpreter_says_how(monkeypatch):
    from mmtransnext.ops import choose_backend
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(RuntimeError, match='set TRITON_INTERPRET=1 before starting Python'):
        choose_backend('pooled_attention', 'triton', 'cpu')


def test_triton_without_triton_says_how(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'triton', None)  # import triton now fails
    with pytest.raises(RuntimeError, match='Triton is not installed'):
        TransNeXt(arch='micro', attn_impl='triton')


def test_triton_on_an_unsupported_dtype_says_so():
    q, k, v, rows, index, weight, local = _inputs(1, 1, 3, 3, 1, 1, 4, 9, 2, 1)  # float64
    with pytest.raises(RuntimeError, match='triton kernels take float16, bfloat16, float32, not float64'):
        pooled_attention(q, k, v, rows, index, weight, local, (3, 3), 'triton')
    with pytest.raises(RuntimeError, match='triton kernels take float16, bfloat16, float32, not float64'):
        local_similarity(q, q, torch.zeros(1, 9, dtype=torch.float64), (3, 3), 3, 'triton')
