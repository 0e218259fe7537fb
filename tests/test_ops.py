"""The attention op mmtransnext._ext against its PyTorch reference (CPU always, CUDA when present)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmtransnext.ops import ext_available, local_aggregation, local_similarity, local_similarity_reference
from .conftest import WORKER_CORES, needs_cuda_ext, needs_custom_op, needs_ext

# the op's CPU kernels split their work over threads; that split is part of what is tested
pytestmark = pytest.mark.usefixtures('all_cores')

REPO = Path(__file__).resolve().parents[1]

# (B, heads, H, W, D, window): 1x1 maps, maps smaller than the window, odd sizes, several heads / dims
SHAPES = [(1, 1, 1, 1, 4, 3), (2, 3, 2, 1, 5, 3), (1, 2, 2, 2, 8, 5), (2, 2, 5, 7, 16, 3), (1, 4, 9, 4, 32, 3),
          (3, 1, 6, 11, 3, 5), (1, 2, 13, 13, 24, 7)]


def _inputs(B, heads, H, W, D, ws, dtype=torch.float64, device='cpu'):
    g = torch.Generator().manual_seed(B * 1000 + H * 10 + W)
    q, k, v = (torch.randn(B, heads, H * W, D, generator=g, dtype=dtype).to(device) for _ in range(3))
    bias = torch.randn(heads, ws * ws, generator=g, dtype=dtype).to(device)
    weights = torch.randn(B, heads, H * W, ws * ws, generator=g, dtype=dtype).to(device)
    return q, k, v, bias, weights


def test_ci_builds_the_extension():
    """CI (MMTRANSNEXT_REQUIRE_EXT=1) must not silently fall back to the PyTorch path."""
    if os.environ.get('MMTRANSNEXT_REQUIRE_EXT') == '1':
        assert ext_available('cpu'), 'mmtransnext._ext failed to build or import'


@needs_ext
@pytest.mark.parametrize('shape', [(1, 1, 1, 1, 4, 3), (2, 3, 2, 1, 5, 3), (1, 2, 2, 2, 3, 5), (2, 2, 3, 5, 4, 3),
                                   (1, 1, 4, 3, 2, 5)])
def test_gradcheck_float64(shape):
    B, heads, H, W, D, ws = shape
    q, k, v, bias, weights = (t.requires_grad_() for t in _inputs(*shape))
    outside = ~torch.isfinite(local_similarity_reference(q, k, bias, H, W, ws))

    def similarity(q, k, bias):  # -inf entries do not depend on the inputs
        return local_similarity(q, k, bias, (H, W), ws, 'ext').masked_fill(outside, 0)

    assert torch.autograd.gradcheck(similarity, (q, k, bias))
    assert torch.autograd.gradcheck(lambda w, v: local_aggregation(w, v, (H, W), ws, 'ext'), (weights, v))


def _compare(shape, dtype, device, atol):
    B, heads, H, W, D, ws = shape
    q, k, v, bias, weights = _inputs(*shape, dtype=torch.float64, device=device)
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, bias, weights, v)]
    ext_inputs = [t.to(dtype).requires_grad_() for t in (q, k, bias, weights, v)]
    results = []
    for impl, (q_, k_, b_, w_, v_) in (('pytorch', ref_inputs), ('ext', ext_inputs)):
        sim = local_similarity(q_, k_, b_, (H, W), ws, impl)
        agg = local_aggregation(w_, v_, (H, W), ws, impl)
        finite = torch.isfinite(sim)
        (sim.masked_fill(~finite, 0).double().sum() * 0.5 + (agg.double()**2).sum()).backward()
        results.append([sim.double(), agg.double()] + [t.grad.double() for t in (q_, k_, b_, w_, v_)])
    names = ['similarity', 'aggregation', 'grad query', 'grad key', 'grad bias', 'grad weights', 'grad value']
    for name, ref, ext in zip(names, *results):
        assert torch.equal(torch.isinf(ref), torch.isinf(ext)), f'{name}: -inf pattern differs'
        scale = ref[torch.isfinite(ref)].abs().max().clamp(min=1).item()
        torch.testing.assert_close(ext.nan_to_num(0, 0, 0),
                                   ref.nan_to_num(0, 0, 0),
                                   rtol=0,
                                   atol=atol * scale,
                                   msg=lambda m: f'{name} ({dtype}): {m}')


@needs_ext
@pytest.mark.parametrize('shape', SHAPES)
def test_ext_matches_pytorch_on_cpu(shape):
    _compare(shape, torch.float32, 'cpu', atol=1e-5)


@needs_ext
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_ext_low_precision_on_cpu(dtype):
    _compare((2, 2, 5, 7, 16, 3), dtype, 'cpu', atol=3e-2 if dtype == torch.bfloat16 else 4e-3)


@needs_ext
def test_ext_mixed_dtypes_are_promoted():
    """autocast may hand over a bfloat16 query and float32 key: one kernel dtype, grads in each input's."""
    q, k, v, bias, weights = _inputs(1, 2, 4, 5, 8, 3, dtype=torch.float32)
    q = q.bfloat16().requires_grad_()
    k.requires_grad_()
    out = local_similarity(q, k, bias, (4, 5), 3, 'ext')
    assert out.dtype == torch.float32
    out.masked_fill(torch.isinf(out), 0).sum().backward()
    assert q.grad.dtype == torch.bfloat16 and k.grad.dtype == torch.float32
    # the values are those of the float32 kernel on the promoted query; its gradient rounded back to bfloat16
    q32, k32 = q.detach().float().requires_grad_(), k.detach().clone().requires_grad_()
    ref = local_similarity(q32, k32, bias, (4, 5), 3, 'ext')
    ref.masked_fill(torch.isinf(ref), 0).sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(q.grad, q32.grad.bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(k.grad, k32.grad, rtol=0, atol=0)


@needs_ext
def test_bad_arguments_name_the_problem():
    q, k, v, bias, weights = _inputs(1, 2, 4, 5, 8, 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match='expected H \\* W = 21 pixels'):
        local_similarity(q, k, bias, (3, 7), 3, 'ext')
    with pytest.raises(RuntimeError, match='window_size must be a positive odd number'):
        local_aggregation(weights, v, (4, 5), 2, 'ext')
    with pytest.raises(RuntimeError, match='bias must be \\(heads, window_size\\*\\*2\\)'):
        local_similarity(q, k, bias[:, :4], (4, 5), 3, 'ext')
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        local_aggregation(weights, v, (4, 5), 3, 'fast')


def test_missing_extension_says_how_to_build_it(monkeypatch):
    from mmtransnext.models import TransNeXt
    from mmtransnext.ops import ext_loader
    monkeypatch.setattr(ext_loader, 'ext', None)  # the backends read from here whether it is built
    with pytest.raises(RuntimeError, match='is not built; build it with `bash tools/setup_env.sh`'):
        TransNeXt(arch='micro', attn_impl='ext')
    model = TransNeXt(arch='micro', img_size=64, attn_impl='auto').eval()  # falls back to PyTorch
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 48, 16, 16)


@needs_ext
@needs_custom_op
def test_torch_compile_traces_through_the_op():
    """Registered with torch.library: dynamo captures forward and backward in one graph, no break."""
    q, k, v, bias, weights = (t.float().requires_grad_() for t in _inputs(1, 2, 4, 5, 8, 3))

    def block(q, k, v, bias):
        attn = local_similarity(q, k, bias, (4, 5), 3, 'ext').softmax(-1)
        return local_aggregation(attn, v, (4, 5), 3, 'ext')

    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    out = compiled(q, k, v, bias)
    out.sum().backward()
    grads = [t.grad.clone() for t in (q, k, v, bias)]
    for t in (q, k, v, bias):
        t.grad = None
    block(q, k, v, bias).sum().backward()
    for got, t in zip(grads, (q, k, v, bias)):
        torch.testing.assert_close(got, t.grad)


@needs_cuda_ext
@pytest.mark.parametrize('dtype, atol', [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2),
                                         (torch.float64, 1e-12)])
@pytest.mark.parametrize('shape', SHAPES)
def test_ext_matches_pytorch_on_cuda(shape, dtype, atol):
    _compare(shape, dtype, 'cuda', atol=atol)


@needs_cuda_ext
def test_gradcheck_cuda_float64():
    B, heads, H, W, D, ws = shape = (2, 2, 5, 7, 8, 3)
    q, k, v, bias, weights = (t.requires_grad_() for t in _inputs(*shape, device='cuda'))
    outside = ~torch.isfinite(local_similarity_reference(q, k, bias, H, W, ws))
    assert torch.autograd.gradcheck(
        lambda q, k, b: local_similarity(q, k, b, (H, W), ws, 'ext').masked_fill(outside, 0), (q, k, bias))
    assert torch.autograd.gradcheck(lambda w, v: local_aggregation(w, v, (H, W), ws, 'ext'), (weights, v))


def _nvcc():
    """(CUDA home, its CUDA version) for a CUDA build: $CUDA_HOME or /usr/local/cuda, else where the nvcc on PATH
    lives; (None, None) without nvcc."""
    home = Path(os.environ.get('CUDA_HOME', '/usr/local/cuda'))
    if not (home / 'bin' / 'nvcc').exists():
        on_path = shutil.which('nvcc')
        if on_path is None:
            return None, None
        home = Path(on_path).resolve().parents[1]
    release = subprocess.run([str(home / 'bin' / 'nvcc'), '--version'], capture_output=True, text=True).stdout
    return home, release.split('release ')[-1].split(',')[0]


CUDA_HOME, NVCC_CUDA = _nvcc()


@pytest.mark.slow
@pytest.mark.skipif(CUDA_HOME is None, reason='nvcc not found')
@pytest.mark.skipif(CUDA_HOME is not None and (torch.version.cuda or '').split('.')[0] != NVCC_CUDA.split('.')[0],
                    reason=f'needs the nvcc of torch\'s CUDA major version: torch {torch.__version__} is built with '
                    f'CUDA {torch.version.cuda}, nvcc here is CUDA {NVCC_CUDA} (torch refuses the mix)')
def test_cuda_sources_compile(tmp_path):
    """Compile the CUDA kernels (PTX for sm_90) even without a GPU, so a broken kernel cannot land: the .cu files
    and the dispatchers built with WITH_CUDA; the CPU kernels compile to the same code as in the CPU build."""
    env = dict(os.environ,
               FORCE_CUDA='1',
               MMTRANSNEXT_CUDA_PARTS_ONLY='1',
               TORCH_CUDA_ARCH_LIST='9.0',
               MAX_JOBS=str(WORKER_CORES),
               CUDA_HOME=str(CUDA_HOME))
    proc = subprocess.run([
        sys.executable, 'setup.py', 'build_ext', '--build-temp',
        str(tmp_path / 'tmp'), '--build-lib',
        str(tmp_path / 'lib')
    ],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = list((tmp_path / 'lib').rglob('_ext*.so'))
    assert built and b'local_similarity_forward_kernel' in built[0].read_bytes()
    assert b'pooled_attention_backward_bias_kernel' in built[0].read_bytes()


@needs_ext
def test_position_bias_mlp_gradcheck_and_reference():
    from mmtransnext.ops import position_bias_mlp, position_bias_mlp_reference
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(2, 512).double(), torch.nn.Linear(512, 3).double()
    coords = torch.randn(37, 2, dtype=torch.float64)
    params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    assert torch.autograd.gradcheck(lambda *p: position_bias_mlp(coords, *p, attn_impl='ext'), params)

    fc1, fc2 = torch.nn.Linear(2, 512), torch.nn.Linear(512, 5)
    coords, grad = torch.randn(3000, 2) * 2, torch.randn(5, 3000)
    results = []
    for use_ext in (True, False):
        fc1.zero_grad(), fc2.zero_grad()
        out = position_bias_mlp(coords, *fc1.parameters(), *fc2.parameters(), 'ext' if use_ext else 'pytorch')
        out.backward(grad)
        results.append([out.detach()] + [p.grad.clone() for p in (*fc1.parameters(), *fc2.parameters())])
    for ext, ref in zip(*results):
        torch.testing.assert_close(ext, ref, rtol=0, atol=2e-6 * ref.abs().max().item())
    # the reference against an independent writing of the same MLP (heads, offsets)
    by_hand = ((coords @ fc1.weight.T + fc1.bias).clamp_min(0) @ fc2.weight.T + fc2.bias).T
    torch.testing.assert_close(position_bias_mlp_reference(coords, *fc1.parameters(), *fc2.parameters()),
                               by_hand,
                               rtol=1e-6,
                               atol=1e-6)


@needs_ext
def test_gelu_gate_matches_gelu_times_value():
    from mmtransnext.ops import gelu_gate, gelu_gate_reference
    g = torch.Generator().manual_seed(0)
    gate = torch.randn(64, 37, generator=g, dtype=torch.float64) * 4
    gate[0, :5] = torch.tensor([0., -30., 30., -9., 9.], dtype=torch.float64)  # both tails and 0
    value = torch.randn(64, 37, generator=g, dtype=torch.float64)
    small = [gate[:12, :5].clone().requires_grad_(), value[:12, :5].clone().requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, v: gelu_gate(a, v, 'ext'), small)
    results = []
    for fn in (lambda a, v: gelu_gate(a, v, 'ext'), gelu_gate_reference):
        a, v = gate.float().requires_grad_(), value.float().requires_grad_()
        out = fn(a, v)
        out.backward(torch.ones_like(out))
        results.append((out, a.grad, v.grad))
    for ours, ref in zip(*results):  # float32 erfc fit: about 2e-7 relative to the largest value
        torch.testing.assert_close(ours, ref, rtol=0, atol=4e-7 * ref.abs().max().item())


@needs_ext
def test_gelu_gate_falls_back_where_it_has_no_kernel():
    from mmtransnext.ops import gelu_gate, gelu_gate_reference
    gate, value = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16)
    assert torch.equal(gelu_gate(gate, value, 'ext'), gelu_gate_reference(gate, value))
    gate, value = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(gelu_gate(gate, value, 'pytorch'), gelu_gate_reference(gate, value))


@needs_ext
def test_register_op_fallback_gives_the_same_op():
    """torch < 2.4 has no torch.library.register_fake / register_autograd: register_op builds an autograd.Function
    from the same pieces, calling the ops that the extension defines in C++."""
    from mmtransnext.ops import local_attention as la
    fallback = la._register(
        'local_similarity',
        la._similarity_forward,
        la._similarity_backward,
        la._similarity_fake,  # (the memory count reads them from the registry: keep them there)
        la._similarity_backward_fake,
        custom_op=False,
        in_extension=True)
    torch.manual_seed(0)
    q, k = (torch.randn(2, 3, 20, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    bias = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    outside = fallback(q, k, bias, 4, 5, 3).isinf()  # neighbours outside the map: -inf, no gradient

    def finite(op):
        return lambda *t: op(*t, 4, 5, 3).masked_fill(outside, 0)

    assert torch.autograd.gradcheck(finite(fallback), (q, k, bias))
    for got, want in zip(torch.autograd.grad(finite(fallback)(q, k, bias).sum(), (q, k, bias)),
                         torch.autograd.grad(finite(la._SIMILARITY['ext'])(q, k, bias).sum(), (q, k, bias))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class _CountingExt:
    """The built extension, counting the kernels called through it."""

    def __init__(self, ext):
        self._ext, self.calls = ext, {}

    def __getattr__(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(self._ext, name)


@needs_ext
@pytest.mark.parametrize('attn_impl, uses_op', [('auto', True), ('ext', True), ('pytorch', False)])
def test_auto_picks_the_op_where_it_is_built(monkeypatch, attn_impl, uses_op):
    monkeypatch.setenv('MMTRANSNEXT_AUTOTUNE', '0')  # the static table; what 'auto' measures: test_autotune.py
    from mmtransnext.models import TransNeXt
    from mmtransnext.ops import ext_loader
    counting = _CountingExt(ext_loader.ext)
    arch = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    with ext_loader.replaced(counting):
        model = TransNeXt(arch=arch, img_size=64, pretrain_size=64, attn_impl=attn_impl)
        sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    kernels = {
        'pooled_attention_forward', 'pooled_attention_backward', 'local_similarity_forward', 'local_aggregation_forward'
    }
    if uses_op:
        assert kernels <= set(counting.calls), counting.calls  # forward and backward through the op
    else:
        assert not counting.calls


def test_auto_falls_back_to_pytorch_without_the_build(monkeypatch):
    from mmtransnext.ops import ext_loader, resolve_attn_impl
    monkeypatch.setattr(ext_loader, 'ext', None)
    assert resolve_attn_impl('auto', torch.device('cpu')) == 'pytorch'
    with pytest.raises(RuntimeError, match='is not built'):
        resolve_attn_impl('ext', torch.device('cpu'))
