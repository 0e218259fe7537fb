"""Compile a config's backbone ahead of time with AOTInductor: one .pt2 package for every batch size and every input
size in a range, which runs where torch and mmtransnext's op library are (no mmtransnext import).

    python tools/deployment/export_aoti.py CONFIG [CHECKPOINT] --out FILE.pt2 [--shape H W]
        [--min-size S] [--max-size S] [--static] [--attn-impl ext|pytorch] [--device cpu|cuda]

The backbone (image -> one feature map per output stage) is traced by ``torch.export`` with a symbolic batch, height
and width (``torch.export.Dim``: height and width from --min-size to --max-size; with --static the height and width
of --shape only), compiled by AOTInductor (``torch._inductor.aoti_compile_and_package``) and written to FILE.pt2.

With ``--attn-impl ext`` (the default) the package calls the extension's ops (``mmtransnext::local_similarity``,
``mmtransnext::pooled_attention`` ...), whose schemas and CPU / CUDA kernels the built module
``mmtransnext/_ext*.so`` registers when it is loaded; a process that runs the package loads it first::

    torch.ops.load_library('<mmtransnext>/_ext....so')
    model = torch._inductor.aoti_load_package('FILE.pt2')

(``tools/deployment/load_aoti.py`` does both, and says what is missing where torch says only "Could not find schema
for mmtransnext::..."). ``--attn-impl pytorch`` writes the attention out in ATen operators: no library needed, slower.

The tool then runs the package here and compares its outputs with the eager backbone's, on the export size and, unless
--static, on another size and batch: it prints the largest difference relative to the output's scale and fails above
export_onnx.py's tolerance.
"""
import argparse
import contextlib
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # export_onnx
from export_onnx import TOLERANCE, exported_part  # noqa: E402
from load_aoti import HEIGHTS, WIDTHS, load_package  # noqa: E402

from mmtransnext.models import TransNeXt  # noqa: E402
from mmtransnext.models.layers.pooling import pooling_as_products  # noqa: E402
from mmtransnext.ops import ext_available, ext_loader  # noqa: E402
from mmtransnext.utils.export import export_dynamic, range_decompositions, smallest_exported_side  # noqa: E402
from script_utils.model_input import add_model_arguments, build_model, parse_model_arguments, read_config  # noqa: E402

DEFAULT_MAX_SIZE = 2048


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument('--out', required=True, help='.pt2 package to write')
    parser.add_argument('--shape',
                        nargs=2,
                        type=int,
                        metavar=('H', 'W'),
                        help='the input size traced and checked (default: the backbone\'s img_size, else 512 x 512)')
    parser.add_argument('--min-size',
                        type=int,
                        help='smallest height / width the package takes (default: the smallest the backbone takes)')
    parser.add_argument('--max-size',
                        type=int,
                        default=DEFAULT_MAX_SIZE,
                        help=f'largest height / width the package takes (default: {DEFAULT_MAX_SIZE})')
    parser.add_argument('--static', action='store_true', help='the height and width of --shape only (any batch)')
    parser.add_argument('--attn-impl',
                        choices=('ext', 'pytorch'),
                        default='ext',
                        help="TransNeXt's attention: the extension's ops (default; the package needs their library) "
                        'or ATen operators')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu', help='the device compiled for')
    return parse_model_arguments(parser)


def input_sizes(args, backbone, side):
    """(export size, (min, max) of the symbolic height / width or None with --static, another size to check)."""
    height, width = args.shape or (side, side)
    smallest = getattr(backbone, 'min_input_size', 1)
    if min(height, width) < smallest:
        sys.exit(f'--shape {height} {width}: this backbone needs at least {smallest} pixels a side')
    if args.static:
        return (height, width), None, None
    smallest = smallest_exported_side(backbone)
    low, high = args.min_size or smallest, args.max_size
    if low < smallest:
        sys.exit(f'--min-size {low}: a program for a range of sizes takes at least {smallest} pixels a side (every '
                 'stage keeps a pooled grid of at least 2 x 2); export smaller sizes one at a time with --static')
    if not low <= min(height, width) <= max(height, width) <= high:
        sys.exit(f'--shape {height} {width} is outside --min-size {low} / --max-size {high}')

    def other(side):  # another size in the range (not a multiple of 32 away)
        return side + 40 if side + 40 <= high else max(low, side - 40)

    return (height, width), (low, high), (other(height), other(width))


def mmtransnext_ops(program):
    """The mmtransnext ops an exported program calls."""
    return sorted(
        {
            node.target
            for node in program.graph.nodes if node.op == 'call_function'
            and isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == 'mmtransnext'
        },
        key=str)


def export(module, image, size_range):
    """``torch.export`` of ``module`` with a symbolic batch (and height / width in ``size_range``, TransNeXt's pooling
    as products: inductor's own pooling lowering keeps the export size's windows); exits naming what failed."""
    try:
        with contextlib.nullcontext() if size_range is None else pooling_as_products():
            return export_dynamic(module, image, size_range)
    except Exception as error:  # noqa: BLE001 (torch.export's errors have many types: each is reported)
        lines = str(error).strip().splitlines()
        detail = '\n'.join(lines[:12] + (['...'] if len(lines) > 12 else []))
        what = 'with a symbolic batch' + ('' if size_range is None else f', height and width in {size_range}')
        sys.exit(f'torch.export could not trace the backbone {what}: {type(error).__name__}:\n{detail}\n' +
                 ('' if size_range is
                  None else 'Export one input size with --static (any batch), or narrow --min-size / --max-size.'))


def largest_difference(got, expected):
    """Largest |got - expected| over each output's largest magnitude."""
    return max(((g - e).abs().max() / e.abs().max().clamp(min=1e-12)).item() for g, e in zip(got, expected))


def main():
    args = parse_args()
    if not hasattr(torch._inductor, 'aoti_compile_and_package'):
        sys.exit(f'torch {torch.__version__} has no torch._inductor.aoti_compile_and_package (PyTorch >= 2.6)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no GPU here; AOTInductor compiles for the device it traces on')
    cfg = read_config(args.config, args.cfg_options)
    is_transnext = cfg.model.backbone.get('type') == 'TransNeXt'
    if is_transnext and args.attn_impl == 'ext' and not ext_available(args.device):
        sys.exit(f'--attn-impl ext: mmtransnext._ext is not built here{" with CUDA" if args.device == "cuda" else ""} '
                 '(bash tools/setup_env.sh builds it; FORCE_CUDA=1 for its CUDA kernels); or export the attention '
                 'in ATen operators with --attn-impl pytorch')
    options = dict(attn_impl=args.attn_impl) if is_transnext else None
    model, cfg = build_model(args.config,
                             args.checkpoint,
                             device=args.device,
                             backbone_options=options,
                             cfg_options=args.cfg_options)
    backbone, _ = exported_part(model, cfg, args.config, backbone_only=True)
    side = cfg.model.backbone.get('img_size', 512) if isinstance(backbone, TransNeXt) else 512
    (height, width), size_range, other = input_sizes(args, backbone, side)

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, height, width, generator=generator).to(args.device)  # batch 1 would be specialised
    program = export(backbone, image, size_range)
    ops = mmtransnext_ops(program)
    in_python = [str(op) for op in ops if op._defined_in_python]
    if in_python:
        sys.exit(f'the backbone calls {", ".join(in_python)}, defined in Python: an AOTInductor package cannot call '
                 'them outside this process; export with --attn-impl ext or pytorch')
    decompositions = range_decompositions()
    if size_range is not None and any(node.target in decompositions for node in program.graph.nodes):
        program = program.run_decompositions(decompositions)  # another backbone's adaptive pooling, as products too
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    low, high = size_range or (None, None)
    sides = {HEIGHTS: f'{low or height}-{high or height}', WIDTHS: f'{low or width}-{high or width}'}
    package = torch._inductor.aoti_compile_and_package(program,
                                                       package_path=args.out,
                                                       inductor_configs={'aot_inductor.metadata': sides})
    sizes = f'{height} x {width}' if size_range is None else f'{size_range[0]} to {size_range[1]} a side'
    library = ext_loader.ext.__file__ if ops else None
    print(f'{package}: backbone for {args.device}, any batch, {sizes}; calls ' +
          (f'{", ".join(op.name() for op in ops)} (op library {library})' if ops else 'no mmtransnext op'))

    runner = load_package(package)
    checks = [image] + ([] if other is None else [torch.randn(1, 3, *other, generator=generator).to(args.device)])
    failed = False
    for x in checks:
        with torch.no_grad():
            expected, got = backbone(x), runner(x)
        difference = largest_difference(got, expected)
        failed |= difference > TOLERANCE
        verdict = 'ok' if difference <= TOLERANCE else f'FAILED (tolerance {TOLERANCE:g})'
        print(f'{package}: {" x ".join(map(str, x.shape))}, AOTInductor vs PyTorch: max abs difference / output '
              f'scale = {difference:.2e} {verdict}')

    example = f'torch.randn(1, 3, {height}, {width}' + (", device='cuda')" if args.device == 'cuda' else ')')
    lines = ['import torch'] + ([f'torch.ops.load_library({library!r})'] if ops else [])
    lines += [f'model = torch._inductor.aoti_load_package({package!r})', f'features = model({example})']
    library_note = 'the op library must be built for that torch; ' if ops else ''
    print(f'Run it where torch is (mmtransnext need not be importable; {library_note}the package does not check the '
          f'input size: keep to {sizes}, or load it with load_aoti.load_package, which does):')
    for line in lines:
        print(f'    {line}')
    print(f'or try it with: python tools/deployment/load_aoti.py {package} --shape 1 3 {height} {width}' +
          (' --device cuda' if args.device == 'cuda' else ''))
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
