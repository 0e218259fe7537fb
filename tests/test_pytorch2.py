"""PyTorch 2's compiler on the whole backbone: the geometry is a function of the sizes (no data-dependent step), so
``torch.export`` captures one program for a range of sizes and ``torch.compile(fullgraph=True)`` traces it whole."""
import copy
import importlib.util
import json
import sys

import pytest
import torch
import torch._dynamo

from mmtransnext.models import TransNeXt
from mmtransnext.models.layers.attention import _AvgPool, _Normalize, _ScaleQueries, _TokenWeights
from mmtransnext.models.layers.conv_glu import _GatedProjection
from mmtransnext.ops.position_bias_mlp import _RecomputedHidden
from mmtransnext.utils.export import export_dynamic, smallest_exported_side
from .conftest import needs_ext
from .helpers import ROOT, run_tool

# the smallest TransNeXt: tracing cost grows with the blocks (2 cores: ~20 s an export, ~50 s a compile)
TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
SIZES = [(96, 160), (128, 128), (112, 72), (250, 190)]  # the last ones not multiples of 32

# Dynamo (torch 2.14, dynamic=True) first traces the modules' float attributes (LayerNorm eps, dropout p) as symbolic
# inputs, then specialises them and traces everything again ("Restarting analysis due to _tensorify_python_scalars"):
# half of each compile's time. The second trace is what specialize_float=True traces at once, so the compile tests
# below take that shortcut; the memory-lean test keeps torch's default, where a symbolic float was the bug it guards.
floats_specialized = torch._dynamo.config.patch(specialize_float=True)


def _backbone(attn_impl='auto', **kwargs):
    torch.manual_seed(0)
    return TransNeXt(arch=TINY, attn_impl=attn_impl, img_size=128, **kwargs)


def _load_compile_check():
    """tools/analysis/compile_check.py as a module, ``sys.path`` left as it was (the script adds tools/ to it, where
    ``test.py`` would shadow the standard library's ``test``)."""
    path = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location('compile_check', ROOT / 'tools/analysis/compile_check.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = path


# the tool's loss and graph count, so the tests hold compiled training to what compile_check.py reports to users
_compile_check = _load_compile_check()
_graphs_compiled, _weighted_sum = _compile_check.graphs_compiled, _compile_check.weighted_sum


@needs_ext
@pytest.mark.parametrize('is_extrapolation', [False, True], ids=['interpolation', 'extrapolation'])
def test_export_captures_one_program_for_every_size(is_extrapolation):
    """One exported program (symbolic batch, height and width) gives eager's features at four sizes, two of them not
    multiples of 32; the 'ext' op is in it as its torch.library op; a size outside the range is refused, naming it.
    The example is a batch of 1, which torch.export alone would fix at 1."""
    backbone = _backbone(is_extrapolation=is_extrapolation).eval()
    low = smallest_exported_side(backbone)
    assert low == 61  # sr_ratio 8: a 2 x 2 pooled grid in stage 1
    program = export_dynamic(backbone, torch.randn(1, 3, 96, 160), (low, 256))
    ops = {str(n.target) for n in program.graph.nodes if n.op == 'call_function'}
    assert 'mmtransnext.pooled_attention.default' in ops and 'mmtransnext.local_similarity.default' in ops
    data_dependent = ('aten._unique2', 'aten.unique_dim', 'aten.nonzero', 'aten._local_scalar_dense', 'aten.item')
    assert not any(op.startswith(data_dependent) for op in ops)
    for batch, size in enumerate(SIZES, 1):
        image = torch.randn(batch, 3, *size)
        with torch.no_grad():
            got, expected = program.module()(image), backbone(image)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match='256'):
        program.module()(torch.randn(1, 3, 96, 288))


def test_export_dynamic_refuses_a_range_it_cannot_serve():
    """Before tracing: a range below the smallest side every stage pools at 2 x 2 (here of a classifier-like wrapper's
    backbone), an empty range and an example outside the range are errors that name the range and the fix."""
    wrapped = torch.nn.Sequential(_backbone())
    image = torch.randn(1, 3, 96, 96)
    with pytest.raises(ValueError, match=r'\(32, 256\).* at least 61 pixels'):
        export_dynamic(wrapped, image, (32, 256))
    with pytest.raises(ValueError, match=r'\(128, 64\).*above the largest'):
        export_dynamic(wrapped, image, (128, 64))
    with pytest.raises(ValueError, match=r'\(96, 96\), outside size_range \(61, 80\)'):
        export_dynamic(wrapped, image, (61, 80))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        export_dynamic(wrapped, image[0], (61, 128))


@needs_ext
def test_compiled_inference_compiles_once_for_dynamic_sizes(tmp_path):
    """``torch.compile(fullgraph=True)``: one graph serves three sizes marked dynamic (no guard pins a size), with
    eager's features; as ``tools/analysis/compile_check.py`` shows it to a user. Traced through dynamo and AOTAutograd
    (``aot_eager``): inductor's code generation costs minutes a graph on 2 cores. Height and width are marked dynamic
    (``mark_dynamic``, README's tip); the exports' tests make the batch symbolic."""
    run_tool('tools/analysis/compile_check.py',
             '--arch',
             str(TINY),
             '--eval',
             '--backend',
             'aot_eager',
             '--sizes',
             *(f'{h}x{w}' for h, w in SIZES[:3]),
             '--json',
             'rows.json',
             cwd=tmp_path)
    rows = json.loads((tmp_path / 'rows.json').read_text())
    assert [row['size'] for row in rows] == [list(size) for size in SIZES[:3]]
    assert [row['graphs'] for row in rows] == [1, 1, 1]
    assert all(row['outputs'] <= 1e-4 and row['gradients'] is None for row in rows)


def test_memory_lean_functions_compile_called_twice():
    """Each memory-lean autograd function of the kernel path, called twice in one graph (as every block calls them),
    traces with symbolic sizes and gives eager's values and gradients. Issue 35: a float default argument (or a global)
    read in a function's forward became a symbolic input of the first call's subgraph that the second call reused."""
    import torch._dynamo

    def lean(x, tokens, embedding, temperature, maps, coords, w1, b1, w2, b2, conv_weight, conv_bias, fc_weight,
             fc_bias):
        B, heads, N, _ = x.shape
        out = 0
        for keep_input in (False, True):  # two blocks
            q = _Normalize.apply(x, keep_input)
            scale = _ScaleQueries.apply(q, embedding, temperature, torch.full((N, 1), N**0.5))
            out = out + scale.sum() + _TokenWeights.apply(q, tokens, torch.float32).sum()
            out = out + _AvgPool.apply(maps.permute(0, 3, 1, 2), (2, 2)).sum()
            out = out + _RecomputedHidden.apply(coords, w1, b1, w2, b2).sum()
            gate, value = x[:, 0], x[:, 1]  # (B, N = 4 * (N // 4), C) tokens of a 4 x N // 4 map
            out = out + _GatedProjection.apply(gate, value, conv_weight, conv_bias, fc_weight, fc_bias,
                                               (4, N // 4), 'auto').sum()
        return out

    torch.manual_seed(0)
    shapes = [(2, 2, 12, 8), (2, 8, 9), (2, 1, 8), (2, 1, 1), (2, 4, 6, 3), (10, 2), (16, 2), (16, ), (2, 16), (2, ),
              (8, 1, 3, 3), (8, ), (5, 8), (5, )]
    inputs = [torch.randn(s, dtype=torch.float64, requires_grad=i != 5) for i, s in enumerate(shapes)]  # not coords
    torch._dynamo.reset()
    graphs_before = _graphs_compiled()
    compiled = torch.compile(lean, fullgraph=True, dynamic=True, backend='aot_eager')
    for n in (12, 20):  # two sizes, one graph
        inputs[0] = torch.randn(2, 2, n, 8, dtype=torch.float64, requires_grad=True)
        differentiated = [t for t in inputs if t.requires_grad]
        got = torch.autograd.grad(compiled(*inputs), differentiated)
        expected = torch.autograd.grad(lean(*inputs), differentiated)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert _graphs_compiled() - graphs_before == 1


@needs_ext
@floats_specialized
@pytest.mark.parametrize('attn_impl', ['auto', 'pytorch'])
def test_compiled_training_gives_eager_gradients(attn_impl):
    """``torch.compile(fullgraph=True)`` trains at three sizes (one not a multiple of 32): outputs and every gradient
    equal eager's within float32 rounding. Traced with symbolic sizes through dynamo and AOTAutograd (the
    ``aot_eager`` backend: inductor's own code generation costs minutes a size on 2 cores). Height and width are
    marked dynamic, the batch is not (a training run's batch is fixed; a symbolic one cost a fifth more time here)."""
    import torch._dynamo
    eager = _backbone(attn_impl).train()
    compiled_model = copy.deepcopy(eager)
    torch._dynamo.reset()
    graphs_before = _graphs_compiled()
    compiled = torch.compile(compiled_model, fullgraph=True, backend='aot_eager')
    for size in SIZES[:2] + SIZES[3:]:
        image = torch.randn(2, 3, *size)
        torch._dynamo.mark_dynamic(image, (2, 3))
        _weighted_sum(compiled(image)).backward()
        _weighted_sum(eager(image)).backward()
        scale = max(p.grad.abs().max() for p in eager.parameters())
        for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
            assert (p.grad - q.grad).abs().max() <= 1e-5 * scale, (size, name)
            p.grad = q.grad = None
    assert _graphs_compiled() - graphs_before == 1


@needs_ext
@pytest.mark.slow
@floats_specialized
@pytest.mark.parametrize('attn_impl', ['auto'])  # 'pytorch' passes too: CI's budget runs the default only
def test_inductor_trains_a_stage_in_one_graph_for_dynamic_sizes(attn_impl):
    """Inductor (the default backend) compiles training with symbolic sizes: patch embedding, an aggregated-attention
    block (geometry, attention, ConvGLU) and the next patch embedding (a convolution whose input needs its gradient),
    one graph for three sizes, every gradient equal to eager's within float32 rounding. Under torch.compile the
    depthwise convolution, the pooling and the patch embeddings are spelled as products inductor compiles for any size
    (conv_glu.py, attention.py, patch_embed.py). About 2.5 minutes a parameter on 2 cores (floats specialised): the
    whole backbone takes 10-15 minutes, and where a reduction crosses inductor's 4096-element accumulation threshold
    it compiles a second graph (torch 2.14's CPU code generation)."""
    import torch._dynamo
    backbone = _backbone(attn_impl).train()

    def stage(image):
        x, size = backbone.patch_embed1(image)
        x = backbone.block1[0](x, backbone.stage_geometry(0, size, x.device))
        x, _ = backbone.patch_embed2(x.reshape(x.shape[0], *size, -1).permute(0, 3, 1, 2))
        return x

    torch._dynamo.reset()
    graphs_before = _graphs_compiled()
    compiled = torch.compile(stage, fullgraph=True, dynamic=True)
    for size in [(64, 96), (80, 80), (72, 68)]:  # reductions under 4096 elements, pooled grids over 1 x 1: one graph
        image = torch.randn(2, 3, *size)
        got = torch.autograd.grad(_weighted_sum([compiled(image)]), list(backbone.parameters()), allow_unused=True)
        expected = torch.autograd.grad(_weighted_sum([stage(image)]), list(backbone.parameters()), allow_unused=True)
        scale = max(e.abs().max() for e in expected if e is not None)
        for (name, _), g, e in zip(backbone.named_parameters(), got, expected):
            assert (g is None) == (e is None), name
            assert e is None or (g - e).abs().max() <= 1e-5 * scale, (size, name)
    assert _graphs_compiled() - graphs_before == 1


def test_backbone_pools_as_products_where_aoti_exports_a_range_of_sizes():
    """Under ``pooling_as_products()`` (export_aoti.py's export for a range of sizes) the backbone calls no adaptive
    pooling, whose inductor lowering keeps the export size's windows, and gives eager's features."""
    from torch.overrides import TorchFunctionMode

    from mmtransnext.models.layers.pooling import pooling_as_products

    class CalledFunctions(TorchFunctionMode):

        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.add(getattr(func, '__name__', str(func)))
            return func(*args, **(kwargs or {}))

    backbone, image = _backbone().eval(), torch.randn(2, 3, 72, 100)
    with torch.no_grad():
        with CalledFunctions() as eager_calls:
            expected = backbone(image)
        with pooling_as_products(), CalledFunctions() as product_calls:
            got = backbone(image)
    assert 'adaptive_avg_pool2d' in eager_calls.names  # what the check below would see
    assert not any('adaptive_avg_pool' in name for name in product_calls.names), product_calls.names
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_pooling_as_products_equals_adaptive_avg_pool2d():
    """The averaging-matrix pooling (torch.compile's and AOTInductor's spelling) is F.adaptive_avg_pool2d, on windows
    that overlap (sides not multiples of the grid) and where a side grows (fewer inputs than outputs)."""
    from mmtransnext.models.layers.pooling import adaptive_avg_pool2d, pool_tokens
    x = torch.randn(2, 5, 23, 17, dtype=torch.float64)
    for grid in [(3, 4), (7, 7), (1, 1), (30, 2)]:
        expected = torch.nn.functional.adaptive_avg_pool2d(x, grid)
        torch.testing.assert_close(adaptive_avg_pool2d(x, grid), expected, rtol=1e-12, atol=1e-12)
        tokens = x.permute(0, 2, 3, 1).reshape(2, 23 * 17, 5)
        torch.testing.assert_close(pool_tokens(tokens, (23, 17), grid), expected.flatten(2).transpose(1, 2))
