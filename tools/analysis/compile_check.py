"""Does ``torch.compile(fullgraph=True)`` serve a TransNeXt backbone at your sizes, and does it compute what eager does?

    python tools/analysis/compile_check.py [CONFIG] [--arch ARCH] [--attn-impl auto] [--sizes 512x512 640x480 ...]
        [--batch 2] [--eval] [--amp bfloat16] [--backend inductor] [--dynamic-batch] [--device cpu] [--json FILE]

Builds CONFIG's backbone (mmdet / mmseg / mmpretrain; untrained) or a TransNeXt of ``--arch`` (a name, or a dict such
as ``"dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])"``), compiles a copy with
``torch.compile(fullgraph=True)`` and runs both at each size, height and width marked dynamic
(``torch._dynamo.mark_dynamic``; with ``--dynamic-batch`` the batch too): a training step (forward and the backward of
a loss that reaches every output value) or, with ``--eval``, an inference. One row per size: the graphs dynamo has
compiled so far (a new one is a recompilation: ``TORCH_LOGS=recompiles`` prints the guard that failed), the compiled
call's time (compiling included), and the largest difference from eager of the outputs and of the gradients, each
relative to the largest magnitude. Under ``--amp`` both runs are under autocast, and the rows add each one's distance
from float32 eager. Exits 1 where compiled and eager differ by more than the computing type's rounding: 1e-4 in
float32; under autocast, a distance from float32 more than twice eager's (plus 1e-3).

The check's process sets ``torch._dynamo.config.specialize_float`` (dynamo's default first traces the modules' float
attributes as symbols and then traces everything again: the same graph in twice the time, README), so a default
``torch.compile`` takes longer than the times printed here.
"""
import argparse
import ast
import copy
import json
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

FLOAT32_TOLERANCE = 1e-4


def parse_size(text: str):
    try:
        height, width = (int(side) for side in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'a size is HxW, e.g. 512x512; got {text!r}')
    return height, width


def parse_arch(text: str):
    """An arch name, or a dict written as Python (``dict(...)`` or ``{...}``)."""
    if not text.startswith(('dict(', '{')):
        return text
    try:
        if text.startswith('{'):
            return ast.literal_eval(text)
        call = ast.parse(text, mode='eval').body
        if not isinstance(call, ast.Call) or call.args or any(keyword.arg is None for keyword in call.keywords):
            raise ValueError(text)  # dict(...) + 1, dict(x), dict(**x): not keywords alone
        return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    except (SyntaxError, ValueError):
        raise argparse.ArgumentTypeError(f'not a name or a dict of literals: {text!r}')


def build_backbone(args):
    from mmtransnext.models import TransNeXt
    settings = dict(arch=args.arch)
    if args.config:
        from script_utils.model_input import read_config, transnext_settings
        settings = transnext_settings(read_config(args.config), args.config)
    settings.update(init_cfg=None, attn_impl=args.attn_impl)
    torch.manual_seed(0)
    return TransNeXt(**settings).to(args.device).train(not args.eval)


def weighted_sum(outputs):
    """A loss that reaches every output value with its own weight (a plain mean of normalised maps has ~0 gradient)."""
    return sum((o.float() * torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(o.device)).sum()
               for i, o in enumerate(outputs))


def run(model, image, training: bool, amp):
    """(outputs, gradients) of one forward (and backward) of ``model``; gradients are cleared after."""
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None), torch.set_grad_enabled(training):
        outputs = model(image)
    if not training:
        return outputs, []
    weighted_sum(outputs).backward()
    gradients = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return outputs, gradients


def difference(got, expected) -> float:
    """Largest |got - expected| relative to the largest |expected| over the tensors."""
    if not expected:
        return 0.0
    scale = max(e.float().abs().max() for e in expected).clamp(min=1e-12)
    return max((g.float() - e.float()).abs().max() for g, e in zip(got, expected)).div(scale).item()


def graphs_compiled() -> int:
    """Graphs dynamo compiled in this process so far (its counters outlive ``torch._dynamo.reset()``)."""
    return torch._dynamo.utils.counters['stats']['unique_graphs']


def check(args, eager) -> list:
    import torch._dynamo
    torch._dynamo.config.specialize_float = True
    compiled_copy = copy.deepcopy(eager)
    torch._dynamo.reset()
    before = graphs_compiled()
    compiled = torch.compile(compiled_copy, fullgraph=True, backend=args.backend)
    rows = []
    for height, width in args.sizes:
        image = torch.randn(args.batch, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        image = image.to(args.device)
        torch._dynamo.mark_dynamic(image, (0, 2, 3) if args.dynamic_batch else (2, 3))
        began = time.perf_counter()
        got = run(compiled, image, not args.eval, args.amp)
        seconds = time.perf_counter() - began
        expected = run(eager, image, not args.eval, args.amp)
        row = dict(size=[height, width],
                   graphs=graphs_compiled() - before,
                   seconds=round(seconds, 2),
                   outputs=difference(got[0], expected[0]),
                   gradients=None if args.eval else difference(got[1], expected[1]))
        if args.amp is not None:
            reference = run(eager, image, not args.eval, None)
            for name, result in (('eager', expected), ('compiled', got)):
                row[f'{name}_from_float32'] = max(difference(result[0], reference[0]),
                                                  difference(result[1], reference[1]))
        row['ok'] = within_rounding(row)
        rows.append(row)
        print_row(row, args.amp)
    return rows


def within_rounding(row) -> bool:
    if 'eager_from_float32' not in row:
        return max(row['outputs'], row['gradients'] or 0) <= FLOAT32_TOLERANCE
    return row['compiled_from_float32'] <= 2 * row['eager_from_float32'] + 1e-3


def print_row(row, amp):
    gradients = '-' if row['gradients'] is None else f'{row["gradients"]:.1e}'
    cells = [
        f'{row["size"][0]} x {row["size"][1]}', row['graphs'], f'{row["seconds"]:.1f}', f'{row["outputs"]:.1e}',
        gradients
    ]
    if amp is not None:
        cells += [f'{row["eager_from_float32"]:.1e}', f'{row["compiled_from_float32"]:.1e}']
    print('| ' + ' | '.join(str(c) for c in cells + ['yes' if row['ok'] else '**no**']) + ' |', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help="check this config's backbone (default: a TransNeXt of --arch)")
    parser.add_argument('--arch', type=parse_arch, default='micro', help='without CONFIG: a name or a dict')
    parser.add_argument('--attn-impl', default='auto', choices=('auto', 'ext', 'triton', 'pytorch'))
    parser.add_argument('--sizes',
                        type=parse_size,
                        nargs='+',
                        default=[(224, 224), (256, 320), (250, 190)],
                        metavar='HxW',
                        help='input sizes, in order (default: 224x224 256x320 250x190)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--eval', action='store_true', help='inference instead of a training step')
    parser.add_argument('--amp', choices=('bfloat16', 'float16'), help='both runs under autocast in this type')
    parser.add_argument('--backend', default='inductor', help="torch.compile's backend (aot_eager: no code generation)")
    parser.add_argument('--dynamic-batch', action='store_true', help='mark the batch dynamic too')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', metavar='FILE', help='also write the rows to FILE')
    args = parser.parse_args()
    if args.config and not (osp.isfile(args.config) or '::' in args.config):
        parser.error(f'config {args.config} not found')
    args.amp = getattr(torch, args.amp) if args.amp else None
    eager = build_backbone(args)
    what = 'inference' if args.eval else 'training step'
    print(f'torch.compile(fullgraph=True, backend={args.backend!r}) of {args.config or args.arch}, '
          f'attn_impl={args.attn_impl!r}, {what}, batch {args.batch}, {args.device}, '
          f'{"autocast " + str(args.amp).split(".")[-1] if args.amp else "float32"}, torch {torch.__version__}\n')
    header = ['input', 'graphs so far', 'compiled call (s)', 'outputs vs eager', 'gradients vs eager']
    if args.amp is not None:
        header += ['eager vs float32', 'compiled vs float32']
    print('| ' + ' | '.join(header + ['within rounding']) + ' |\n' + '|---' * (len(header) + 1) + '|', flush=True)
    rows = check(args, eager)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    sys.exit(0 if all(row['ok'] for row in rows) else 1)


if __name__ == '__main__':
    main()
