"""The op's CUDA kernels, run here without a GPU and held to the PyTorch reference path.

tests/cuda_emulation/ compiles the extension's CUDA path (the dispatchers, the .cu launchers and the kernels of
mmtransnext/ops/csrc: the sources nvcc builds, launch configurations included) as C++ over an emulation of CUDA's
execution model: the threads of a block run concurrently, __syncthreads() is a real barrier, shared memory is shared
by the block's threads, atomicAdd is atomic. With that module as the extension, ``attn_impl='ext'`` on CPU tensors
runs the CUDA kernels through the op's own registration (its functions replace the built extension's kernels,
``ext_loader.replaced``). The shapes are those of the CPU op tests, plus what
only the CUDA launch configuration splits: several key tiles, query blocks and query chunks, and each head-size
register width. Every launch is also held to what each GPU architecture the project builds for allows a launch
(cuda_emulation.h, kArchitectures), and a training step's launches are checked so without running every block.
"""
import pytest
import torch

from mmtransnext.ops import ext_loader, local_aggregation, local_similarity, pooled_attention
from .conftest import needs_ext
from .helpers import ROOT
from .test_ops import SHAPES as LOCAL_SHAPES
from .test_ops import _compare as compare_local
from .test_ops import _inputs as local_inputs
from .test_pooled_attention import SHAPES as POOLED_SHAPES
from .test_pooled_attention import _inputs as pooled_inputs

EMULATION = ROOT / 'tests' / 'cuda_emulation'

# (B, heads, H, W, ph, pw, D, L, U, taps) beyond the CPU tests' shapes, for the CUDA launch configuration:
# head size 24 (registers for 32) with 72 keys (two key tiles of 64); head size 40 (registers for 64, key tiles of
# 32); 1056 queries: nine query blocks of 128 and two key-side chunks of 1024 queries, the last one ragged
POOLED_CUDA_SHAPES = [(2, 2, 6, 5, 9, 8, 24, 9, 10, 2), (1, 2, 5, 7, 5, 8, 40, 9, 12, 4),
                      (1, 1, 33, 32, 4, 5, 8, 9, 6, 2)]


def build_emulated_extension(sanitizer=None):
    """The emulated CUDA build of the extension, compiled once into build/cuda_emulation[_SANITIZER] (torch
    recompiles it when the sources change). ``sanitizer='thread'`` builds it for ThreadSanitizer
    (tools/analysis/cuda_emulation_tsan.py)."""
    from torch.utils.cpp_extension import load
    suffix = f'_{sanitizer}' if sanitizer else ''
    build = ROOT / 'build' / f'cuda_emulation{suffix}'
    build.mkdir(parents=True, exist_ok=True)
    sanitize = ['-g', f'-fsanitize={sanitizer}'] if sanitizer else []
    return load(name=f'mmtransnext_cuda_emulation{suffix}',
                sources=[str(EMULATION / 'emulated_ext.cpp')],
                extra_include_paths=[str(EMULATION / 'include')],
                extra_cflags=['-std=c++20', '-O1', '-pthread', '-Wno-unknown-pragmas', *sanitize],
                extra_ldflags=['-pthread', *sanitize[1:]],
                build_directory=str(build),
                verbose=False)


@pytest.fixture(scope='module')
def emulated():
    return build_emulated_extension()


@pytest.fixture
def cuda_kernels(emulated):
    """``attn_impl='ext'`` runs the emulated CUDA build during the test (its functions replace the extension's
    registered kernels)."""
    with ext_loader.replaced(emulated):
        yield


# ----------------------------------------------------------------------------- local window ops


@pytest.mark.parametrize('shape', LOCAL_SHAPES)
@pytest.mark.parametrize('dtype, atol', [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=['float32', 'float64'])
def test_local_ops_match_the_reference(cuda_kernels, shape, dtype, atol):
    compare_local(shape, dtype, 'cpu', atol=atol)


@pytest.mark.parametrize('dtype, atol', [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)], ids=['bfloat16', 'float16'])
def test_local_ops_in_half_types(cuda_kernels, dtype, atol):
    compare_local((2, 2, 5, 7, 16, 3), dtype, 'cpu', atol=atol)


@pytest.mark.parametrize('shape', [(1, 1, 1, 1, 4, 3), (2, 3, 2, 1, 5, 3), (2, 2, 3, 5, 4, 3)])
def test_local_ops_gradcheck_float64(cuda_kernels, shape):
    B, heads, H, W, D, ws = shape
    q, k, v, bias, weights = (t.requires_grad_() for t in local_inputs(*shape))
    outside = torch.isinf(local_similarity(q, k, bias, (H, W), ws, 'pytorch')).detach()

    def similarity(q, k, bias):  # -inf entries do not depend on the inputs
        return local_similarity(q, k, bias, (H, W), ws, 'ext').masked_fill(outside, 0)

    # fast mode (random projections of the Jacobian): every evaluation is a launch of emulated threads
    assert torch.autograd.gradcheck(similarity, (q, k, bias), fast_mode=True)
    assert torch.autograd.gradcheck(lambda w, v: local_aggregation(w, v, (H, W), ws, 'ext'), (weights, v),
                                    fast_mode=True)


# ----------------------------------------------------------------------------- pooled attention


def _pooled_step(inputs, shape, impl):
    """Outputs and input gradients of one forward + backward under a fixed random loss."""
    H, W = shape[2], shape[3]
    q, k, v, rows, index, weight, local = [t.clone() for t in inputs]
    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]
    out, local_weights = pooled_attention(q, k, v, rows, index, weight, local, (H, W), impl)
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + (
        local_weights * torch.randn(local_weights.shape, generator=g, dtype=out.dtype)).sum()
    loss.backward()
    return [out, local_weights] + [t.grad for t in leaves]


@pytest.mark.parametrize('shape', POOLED_SHAPES + POOLED_CUDA_SHAPES)
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.float64, 1e-11)], ids=['float32', 'float64'])
def test_pooled_attention_matches_the_reference(cuda_kernels, shape, dtype, tol):
    inputs = pooled_inputs(*shape, dtype=dtype)
    want, got = _pooled_step(inputs, shape, 'pytorch'), _pooled_step(inputs, shape, 'ext')
    for name, ref, ours in zip(['out', 'local weights', 'd query', 'd key', 'd value', 'd bias rows', 'd local'], want,
                               got):
        # atomic adds sum the key side's chunks and the bias bins in any order: rounding relative to the largest
        scale = ref.abs().max().clamp(min=1).item() if ref.numel() else 1
        torch.testing.assert_close(ours, ref, rtol=tol, atol=tol * scale, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('shape', [POOLED_SHAPES[1], POOLED_SHAPES[2], POOLED_SHAPES[4]])
def test_pooled_attention_gradcheck_float64(cuda_kernels, shape):
    H, W = shape[2], shape[3]
    q, k, v, rows, index, weight, local = pooled_inputs(*shape)
    leaves = [t.requires_grad_() for t in (q, k, v, rows, local)]

    def op(q, k, v, rows, local):
        return pooled_attention(q, k, v, rows, index, weight, local, (H, W), 'ext')

    # atomic adds in another order from one backward to the next: not bit-reentrant (as on a GPU)
    assert torch.autograd.gradcheck(op, leaves, nondet_tol=1e-12, fast_mode=True)


def test_the_emulated_build_is_the_cuda_path(emulated):
    """The tensors took the CUDA kernels, not a CPU fallback: the emulated module has no CPU path."""
    q, k, v, bias, weights = local_inputs(1, 1, 2, 2, 4, 3)
    with pytest.raises(RuntimeError, match='expected H \\* W = 9 pixels'):  # the dispatcher's own check ran
        emulated.local_similarity_forward(q, k, bias, 3, 3, 3)
    out = emulated.local_similarity_forward(q, k, bias, 2, 2, 3)
    assert out.shape == (1, 1, 4, 9)


# ----------------------------------------------------------------------------- launch configurations

KERNELS = {
    'local_similarity_forward_kernel', 'local_similarity_backward_qk_kernel', 'local_similarity_backward_bias_kernel',
    'local_weighted_sum_kernel', 'local_aggregation_backward_weights_kernel', 'pooled_attention_forward_kernel',
    'pooled_attention_backward_query_kernel', 'pooled_attention_backward_key_kernel',
    'pooled_attention_backward_bias_kernel'
}


def test_launch_limits_of_each_architecture(emulated):
    """What the emulation refuses, and on which architecture it says so first."""
    assert [a['compute_capability'] for a in emulated.emulation_architectures()] == [75, 80, 86, 89, 90, 100, 120]
    fits = emulated.emulation_misfit
    assert fits((65535 * 8, 65535, 65535), (256, 1, 1), 0, 48 * 1024) == ''
    assert 'block dimension 2 of 65' in fits((1, 1, 1), (1, 1, 65), 0, 0)
    assert 'grid dimension 1 of 65536: 1 to 65535 on sm_75' in fits((1, 65536, 1), (256, 1, 1), 0, 0)
    assert 'block dimension 0 of 1025: 1 to 1024' in fits((1, 1, 1), (1025, 1, 1), 0, 0)
    assert '2048 threads per block: at most 1024 on sm_75' in fits((1, 1, 1), (32, 32, 2), 0, 0)
    # without __launch_bounds__ a block of more than 256 threads may need more than the 64 K registers a block has
    assert 'a block needs 131072 registers, 65536 on sm_75' in fits((1, 1, 1), (512, 1, 1), 0, 0)
    message = fits((1, 1, 1), (128, 1, 1), 40 * 1024, 9 * 1024)
    assert '50176 bytes of shared memory per block (40960 static, 9216 dynamic): at most 49152' in message
    assert 'at most 65536 with it) on sm_75' in message


class _AttentionFrom:
    """The emulated CUDA build for the attention ops, the built extension for the ops it does not have (the
    position-bias MLP and the GELU gate have CPU kernels only)."""

    def __init__(self, emulated, built):
        self.emulated, self.built = emulated, built

    def __getattr__(self, name):
        return getattr(self.emulated if hasattr(self.emulated, name) else self.built, name)


@needs_ext
def test_training_step_launches_fit_every_architecture(emulated):
    """Every launch of a TransNeXt training step (the model's own 224 grid and a resized input: both position-bias
    modes) fits every architecture: the emulation checks each launch as it starts and once its first block has
    declared its static shared memory, and runs only that block (the outputs are left unwritten: any values do)."""
    from mmtransnext.models import TransNeXt
    emulated.emulation_launches()  # (clears the log)
    emulated.emulation_first_block_only(True)
    try:
        with ext_loader.replaced(_AttentionFrom(emulated, ext_loader.ext)):
            torch.manual_seed(0)
            net = TransNeXt(arch='micro', attn_impl='ext')
            for size in ((224, 224), (256, 320)):
                outs = net(torch.randn(2, 3, *size))
                sum(o.sum() for o in outs).backward()
    finally:
        emulated.emulation_first_block_only(False)
    launches = emulated.emulation_launches()
    assert {launch['kernel'].split('<')[0].split('::')[-1] for launch in launches} == KERNELS
    # the static arrays were counted: the forward stages 64 keys and 64 values of 32 float32 elements per block
    forward = [launch for launch in launches if 'pooled_attention_forward_kernel<float, 32>' in launch['kernel']]
    assert forward and all(launch['static_shared'] == 2 * 64 * 32 * 4 for launch in forward)
    worst = max(launch['static_shared'] + launch['dynamic_shared'] for launch in launches)
    assert worst <= min(a['shared_per_block'] for a in emulated.emulation_architectures())
