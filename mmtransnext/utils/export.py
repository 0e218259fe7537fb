"""``torch.export`` of a TransNeXt model with a symbolic batch, height and width: one program for every size in a
declared range (what the deployment tools and AOTInductor build on)."""
from typing import Optional, Tuple

import torch


def export_dynamic(module: torch.nn.Module,
                   image: torch.Tensor,
                   size_range: Optional[Tuple[int, int]] = None) -> 'torch.export.ExportedProgram':
    """``torch.export.export(module, (image,))`` with a symbolic batch and, given ``size_range`` = (low, high), a
    symbolic height and width in it (inclusive).

    The geometry is a function of the sizes (``models/layers/position_bias.py``), so it traces into the program.
    The strided convolutions' size arithmetic (``(H - 1) // 4 + 1``, ...) leaves shape checks that torch's solver
    cannot prove over a whole range although they hold for every size in it (a pooled grid of at least 2 x 2, a
    reshape's divisibility): they become checks the program runs (``prefer_deferred_runtime_asserts_over_guards``),
    not a refusal to export. An input outside the range is refused by the program, naming the range.

    ``image`` is an example (B, C, H, W) batch inside the range; its values do not matter. A batch of 1 is traced as
    two copies of the image: torch.export fixes a dimension its example has at 1 (0/1 specialisation).
    """
    if image.dim() != 4:
        raise ValueError(f'export_dynamic traces an image batch (B, C, H, W); got an example of shape '
                         f'{tuple(image.shape)}')
    if image.shape[0] == 1:
        image = torch.cat([image, image])
    dims = {0: torch.export.Dim('batch', min=1)}
    if size_range is not None:
        low, high = _checked_range(module, image, size_range)
        dims.update({2: torch.export.Dim('height', min=low, max=high), 3: torch.export.Dim('width', min=low, max=high)})
    with torch.no_grad():
        return torch.export.export(module, (image, ),
                                   dynamic_shapes=(dims, ),
                                   prefer_deferred_runtime_asserts_over_guards=True)


def _checked_range(module: torch.nn.Module, image: torch.Tensor, size_range: Tuple[int, int]) -> Tuple[int, int]:
    """``size_range`` where every TransNeXt in ``module`` can run all of it and the example lies in it; else an error
    naming the range and what to change."""
    from ..models.backbones.transnext import TransNeXt
    low, high = size_range
    smallest = max((smallest_exported_side(m) for m in module.modules() if isinstance(m, TransNeXt)), default=1)
    if low < smallest:
        raise ValueError(f'size_range {tuple(size_range)}: a program for a range of sizes takes at least {smallest} '
                         'pixels a side (every stage keeps a pooled grid of at least 2 x 2; '
                         'smallest_exported_side(backbone)); export smaller sizes one at a time (size_range=None)')
    if low > high:
        raise ValueError(f'size_range {tuple(size_range)}: the smallest side is above the largest')
    if not all(low <= side <= high for side in image.shape[2:]):
        raise ValueError(f'the example image is {tuple(image.shape[2:])}, outside size_range {tuple(size_range)}: '
                         'trace at a height and width inside the range')
    return low, high


def smallest_exported_side(backbone) -> int:
    """The smallest height / width an exported program takes: every stage's pooled grid at least 2 x 2. Tracing a
    symbolic size, torch's layout checks decide whether a pooled grid is 1 wide (a size-1 dimension's stride is
    free) and so pin that choice; at least 2 is the side of every size worth running (61 px for sr_ratio 8)."""
    side = backbone.min_input_size
    while any(s // r < 2 for s, r in zip(backbone.stage_sides(side), backbone.sr_ratios)):
        side += 1
    return side


def range_decompositions() -> dict:
    """{torch op: decomposition} for ``ExportedProgram.run_decompositions`` before AOTInductor compiles a program for
    a range of sizes: ``adaptive_avg_pool2d`` as products with averaging matrices
    (``mmtransnext/models/layers/pooling.py``). Inductor's own pooling lowering fixes the windows from the export
    size, so the package was wrong at other sizes (0.28 relative error at 104 px for a 64 px export, torch 2.14 CPU)."""
    from ..models.layers.pooling import adaptive_avg_pool2d
    aten = torch.ops.aten
    return {
        aten.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
        aten._adaptive_avg_pool2d.default: adaptive_avg_pool2d
    }


def onnx_translations() -> dict:
    """{torch op: ONNX translation} that a program with a symbolic height and width needs beyond torch.onnx's own,
    for ``torch.onnx.export(..., custom_translation_table=...)``.

    ``adaptive_avg_pool2d`` (the pooled keys): torch.onnx has no translation of its own and decomposes it into an
    ``avg_pool2d`` whose kernel and stride are fixed from the trace's sizes (exact only where each side is a multiple
    of the pooled grid's), so a file for a range of sizes would be wrong at most of them (seen: 0.1-0.3 relative to
    the output's scale at 72 x 72 for a 64 x 64 trace). Here it is written out for any size: each side is averaged by
    a (pooled, input) matrix of PyTorch's windows, rows ``floor(i n / m)`` to ``ceil((i + 1) n / m)``.
    """
    import torch
    from onnxscript import opset18 as op

    def scalar(size):  # an int or a symbolic size's INT64 value -> a 0-d INT64 tensor
        if isinstance(size, int):
            return op.Constant(value_int=size)
        return op.Squeeze(op.Reshape(size, op.Constant(value_ints=[1])))

    def averaging(like, n, m):  # (m, n): row i averages input positions [floor(i n / m), ceil((i + 1) n / m))
        zero, one = op.Constant(value_int=0), op.Constant(value_int=1)
        rows = op.Range(zero, m, one)
        start = op.Unsqueeze(op.Div(op.Mul(rows, n), m), op.Constant(value_ints=[1]))
        end = op.Unsqueeze(op.Div(op.Sub(op.Add(op.Mul(op.Add(rows, one), n), m), one), m), op.Constant(value_ints=[1]))
        columns = op.Range(zero, n, one)
        inside = op.And(op.GreaterOrEqual(columns, start), op.Less(columns, end))
        return op.Div(op.CastLike(inside, like), op.CastLike(op.Sub(end, start), like))

    def adaptive_avg_pool2d(x, output_size):
        height = scalar(op.Shape(x, start=-2, end=-1))
        width = scalar(op.Shape(x, start=-1))
        out_h, out_w = (scalar(s) for s in output_size)
        rows = averaging(x, height, out_h)  # (out_h, H)
        cols = op.Transpose(averaging(x, width, out_w), perm=[1, 0])  # (W, out_w)
        return op.MatMul(op.MatMul(rows, x), cols)

    aten = torch.ops.aten
    return {
        aten.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
        aten._adaptive_avg_pool2d.default: adaptive_avg_pool2d
    }
