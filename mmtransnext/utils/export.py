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
    """
    dims = {0: torch.export.Dim('batch', min=1)}
    if size_range is not None:
        low, high = size_range
        dims.update({2: torch.export.Dim('height', min=low, max=high), 3: torch.export.Dim('width', min=low, max=high)})
    with torch.no_grad():
        return torch.export.export(module, (image, ),
                                   dynamic_shapes=(dims, ),
                                   prefer_deferred_runtime_asserts_over_guards=True)


def smallest_exported_side(backbone) -> int:
    """The smallest height / width an exported program takes: every stage's pooled grid at least 2 x 2. Tracing a
    symbolic size, torch's layout checks decide whether a pooled grid is 1 wide (a size-1 dimension's stride is
    free) and so pin that choice; at least 2 is the side of every size worth running (61 px for sr_ratio 8)."""
    side = backbone.min_input_size
    while any(s // r < 2 for s, r in zip(backbone.stage_sides(side), backbone.sr_ratios)):
        side += 1
    return side
