"""Time and peak memory of TransNeXt-T (each attention implementation) against Swin-T, all rows
measured in one run.

    python tools/analysis/benchmark.py [--sizes 512x512 800x1216] [--batch 1] [--repeats 3] [--rows ...]
                                       [--amp bf16] [--profile DIR]

Each row runs in a fresh subprocess, so that peak memory is that row's alone: on the CPU the peak
resident set size (ru_maxrss) above the process's size just before the first forward; on a GPU
torch.cuda.max_memory_allocated. Times are the median over --repeats after one warm-up.
Rows: transnext_pytorch (attn_impl='pytorch', the reference arithmetic), transnext_auto (the default;
on a GPU it trains with the written-out softmax), transnext_ext (the C++/CUDA op: local window and split
softmax), transnext_ext_cp (the op and with_cp=True), transnext_triton (the Triton kernels; on a GPU, or on the
CPU under TRITON_INTERPRET=1, which is far too slow to time), swin (mmdet's Swin-T
backbone, as the detection configs use it; where mmdet is absent, torchvision's ``swin_t`` features,
the same architecture). Ratios are to Swin-T when it is measured, else to transnext_pytorch. Under the table,
each TransNeXt row's backend per op in its training step, with the reason (``mmtransnext.ops.backend``).

--profile DIR writes a torch.profiler table of one training step of each TransNeXt row to
DIR/profile_<row>_<H>x<W>_<amp>.txt (operators sorted by their device time, or CPU time without a GPU).

--runtimes eager compile aoti onnx: each row also under PyTorch 2's compiler and the deployment runtimes (one
subprocess per row and runtime): ``torch.compile`` (inductor, default options; forward and training step),
an AOTInductor package of ``torch.export``'s program (``torch._inductor.aoti_compile_and_package``; forward) and
ONNX Runtime on torch.onnx's export (forward, CPU; TransNeXt exported on its reference path, which is what ONNX
Runtime runs). The table adds each runtime's first call (compile / export included) and its ratio to eager.

--flops adds each row's forward arithmetic (torch.utils.flop_counter; TransNeXt's rows all count the
PyTorch path, whose arithmetic the op reproduces) and the training step's throughput: 3 x forward FLOPs
(forward + two backward products) over the fwd+bwd time. Rows with equal throughput would have the
ratio of their FLOPs; what a row loses beyond that is overhead (softmax, bias, layout, memory traffic).
"""
import argparse
import importlib.util
import json
import resource
import signal
import statistics
import subprocess
import sys
import time
import warnings

ROWS = ('transnext_pytorch', 'transnext_auto', 'transnext_ext', 'transnext_ext_cp', 'transnext_triton', 'swin')
DEFAULT_ROWS = ('transnext_pytorch', 'transnext_ext', 'transnext_ext_cp', 'swin')
RUNTIMES = ('eager', 'compile', 'aoti', 'onnx')
TRAINING_RUNTIMES = ('eager', 'compile')  # the deployment runtimes run inference only


def build(row, img_size):
    warnings.filterwarnings('ignore')
    if row == 'swin':
        if importlib.util.find_spec('mmdet') is None:
            import torchvision
            return torchvision.models.swin_t().features  # stochastic depth 0.2, as mmdet's config
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(embed_dims=96,
                               depths=[2, 2, 6, 2],
                               num_heads=[3, 6, 12, 24],
                               window_size=7,
                               drop_path_rate=0.2)
    from mmtransnext.models import TransNeXt
    impl = row.split('_')[1]
    return TransNeXt(arch='tiny',
                     img_size=img_size,
                     pretrain_size=224,
                     drop_path_rate=0.2,
                     with_cp=row.endswith('_cp'),
                     attn_impl=impl)


def forward_flops(row, h, w, img_size, batch=1):
    """Forward FLOPs of a row's model (TransNeXt counted on the PyTorch path: the custom op has no formula)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    model = build('swin' if row == 'swin' else 'transnext_pytorch', img_size)
    model.eval()  # not chained: mmdet's Swin train() returns None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(batch, 3, h, w))
    return counter.get_total_flops()


def deployed_forward(model, runtime, x, workdir):
    """Inference of ``model`` (eval mode) at ``x``'s size through a deployment runtime: a callable taking ``x``."""
    import os

    import torch
    model.eval()
    if runtime == 'aoti':
        with torch.no_grad():
            program = torch.export.export(model, (x, ))
        package = torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(workdir, 'model.pt2'))
        return torch._inductor.aoti_load_package(package)
    import onnxruntime
    path = os.path.join(workdir, 'model.onnx')
    with torch.no_grad():
        torch.onnx.export(model, (x, ), dynamo=True, input_names=['image'], verbose=False).save(path)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return lambda image: session.run(None, {'image': image.cpu().numpy()})


def measure(row, h, w, repeats, amp, img_size, batch=1, profile_dir=None, runtime='eager'):
    """One row in this process: {'forward': s, 'train': s, 'forward_first': s, 'train_first': s, 'peak_mb': MB,
    'backends': {op: choice}} (no training under a deployment runtime)."""
    import contextlib
    import tempfile

    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if runtime == 'onnx' and row != 'swin':
        row = 'transnext_pytorch'  # ONNX Runtime runs the attention written out in standard operators
    model = build(row, img_size).to(device)
    x = torch.randn(batch, 3, h, w, device=device)
    dtype = dict(fp16=torch.float16, bf16=torch.bfloat16).get(amp)
    autocast = (lambda: torch.autocast(device, dtype=dtype)) if dtype else contextlib.nullcontext
    workdir = tempfile.mkdtemp(prefix='benchmark_')
    run = torch.compile(model) if runtime == 'compile' else model

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    def forward():
        model.eval()
        with torch.no_grad(), autocast():
            run(x)

    def train_step():
        model.train()
        with autocast():
            outputs = run(x)
            loss = sum(o.float().mean() for o in (outputs if isinstance(outputs, (tuple, list)) else [outputs]))
        loss.backward()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {}
    steps = [('forward', forward)] + [('train', train_step)] * (runtime in TRAINING_RUNTIMES)
    if runtime not in TRAINING_RUNTIMES:
        start = time.perf_counter()
        deployed = deployed_forward(model, runtime, x, workdir)
        result['prepare'] = time.perf_counter() - start
        steps = [('forward', lambda: deployed(x))]
    for name, fn in steps:
        start = time.perf_counter()
        fn()  # the first call: compiles under torch.compile
        sync()
        result[f'{name}_first'] = time.perf_counter() - start + result.get('prepare', 0)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    if device == 'cuda':
        result['peak_mb'] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result['peak_mb'] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    if row != 'swin' and runtime in TRAINING_RUNTIMES:
        from mmtransnext.ops import backend_table
        table = backend_table(model.attn_impl, device, torch.float32, training=True)
        result['backends'] = {op: f'{c.backend} ({c.reason})' for op, c in table.items()}
        if profile_dir and runtime == 'eager':
            write_profile(train_step, device, f'{profile_dir}/profile_{row}_{h}x{w}_{amp}.txt')
    return result


def write_profile(step, device, path):
    """A torch.profiler table of one call of ``step``."""
    import os

    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
    with profile(activities=activities) as prof:
        step()
        if device == 'cuda':
            import torch
            torch.cuda.synchronize()
    sort = 'self_cuda_time_total' if device == 'cuda' else 'self_cpu_time_total'
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write(prof.key_averages().table(sort_by=sort, row_limit=40))


def measure_in_subprocess(args, row, h, w, runtime):
    """``measure`` in a fresh process (its own peak memory): the result, or {'failed': why} after printing the error."""
    proc = subprocess.run([
        sys.executable, __file__, '--child', row,
        str(h),
        str(w),
        str(args.repeats), runtime, '--amp', args.amp, '--img-size',
        str(args.img_size or min(h, w)), '--batch',
        str(args.batch)
    ] + ['--flops'] * args.flops + (['--profile', args.profile] if args.profile else []),
                          capture_output=True,
                          text=True)
    if proc.returncode != 0:
        why = f'exit status {proc.returncode}'
        if proc.returncode < 0:  # killed by a signal: no traceback to show
            name = signal.Signals(-proc.returncode).name
            why = f'killed by {name}' + (' (on Linux usually the out-of-memory killer)' if name == 'SIGKILL' else '')
        print(f'  {row} ({runtime}) at {h}x{w} failed, {why}:\n{proc.stderr[-2000:]}', file=sys.stderr, flush=True)
        return {'failed': why}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    times = ', '.join(f'{key} {value:.3f} s' for key, value in result.items() if key in ('forward', 'train'))
    print(f'  measured {row} ({runtime}) at {h}x{w}: {times}', file=sys.stderr, flush=True)
    return result


def measured(result):
    """A row's result where there is one: None for a row not run or failed (the ratios against it are '-')."""
    return None if result is None or 'failed' in result else result


def print_runtime_row(h, w, row, runtime, r, eager, base):
    """A row of the runtimes table: times, their ratio to the same backbone in eager mode and to the baseline's."""

    def ratio(key, of):
        return f'{r[key] / of[key]:.2f}x' if of and key in r and key in of else '-'

    def seconds(key):
        return f'{r[key]:.3f}' if key in r else '-'

    if runtime == 'onnx' and row != 'swin':
        runtime = 'onnx (attention written out)'
    print(
        f'| {h} x {w} | {row} | {runtime} | {seconds("forward")} | {ratio("forward", eager)} | {seconds("train")} | '
        f'{ratio("train", eager)} | {seconds("forward_first")} | {seconds("train_first")} | {r["peak_mb"]:.0f} | '
        f'{ratio("train", base)} |',
        flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', default=['512x512', '800x1216'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--rows', nargs='+', default=list(DEFAULT_ROWS), choices=ROWS)
    parser.add_argument('--img-size',
                        type=int,
                        help="TransNeXt's img_size (default: the input's shorter side, as "
                        'the paper configs set it: 512 for ADE20K crops, 800 for COCO)')
    parser.add_argument('--amp', choices=['none', 'fp16', 'bf16'], default='none', help='torch.autocast dtype')
    parser.add_argument('--runtimes',
                        nargs='+',
                        default=['eager'],
                        choices=RUNTIMES,
                        help='also measure each row under torch.compile, an AOTInductor package, ONNX Runtime')
    parser.add_argument('--flops', action='store_true', help='add forward GFLOP and the training GFLOP/s per row')
    parser.add_argument('--profile',
                        metavar='DIR',
                        help="write a torch.profiler table of each TransNeXt row's "
                        'training step under DIR')
    parser.add_argument('--child', nargs=5, metavar=('ROW', 'H', 'W', 'REPEATS', 'RUNTIME'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, h, w, repeats, runtime = args.child
        result = measure(row, int(h), int(w), int(repeats), args.amp, args.img_size, args.batch, args.profile, runtime)
        if args.flops:
            result['flops'] = forward_flops(row, int(h), int(w), args.img_size, args.batch)
        print(json.dumps(result))
        return
    rows = list(args.rows)
    if 'swin' in rows and importlib.util.find_spec('mmdet') is None:
        print("mmdet is not installed: Swin-T is torchvision's swin_t features", file=sys.stderr)
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU, {torch.get_num_threads()} threads'
    print(f'device: {device}; batch {args.batch}; autocast: {args.amp}; median of {args.repeats}')
    baseline = 'swin' if 'swin' in rows else 'transnext_pytorch'
    base_name = 'Swin-T' if baseline == 'swin' else 'PyTorch path'

    runtimes_table = args.runtimes != ['eager']
    if runtimes_table:
        print(f'| input | backbone | runtime | forward (s) | forward / eager | fwd+bwd (s) | fwd+bwd / eager | '
              f'first forward (s) | first fwd+bwd (s) | peak memory (MiB) | fwd+bwd / {base_name} eager |')
        print('|---|---|---|---|---|---|---|---|---|---|---|')
    else:
        flops_head = ' forward GFLOP | fwd+bwd GFLOP/s |' if args.flops else ''
        print(f'| input | backbone | forward (s) | fwd+bwd (s) | peak memory (MiB) | fwd+bwd / {base_name} | '
              f'memory / {base_name} |{flops_head}')
        print('|---|---|---|---|---|---|---|' + '---|---|' * args.flops)
    for size in args.sizes:
        h, w = map(int, size.split('x'))
        results = {}
        for row in rows:
            for runtime in args.runtimes:
                results[row, runtime] = measure_in_subprocess(args, row, h, w, runtime)
        base = measured(results.get((baseline, 'eager')))
        for (row, runtime), r in results.items():
            if 'failed' in r:  # a row of its own, so that the table does not silently lose it
                print(f'| {h} x {w} | {row} |{f" {runtime} |" * runtimes_table} failed: {r["failed"]} |', flush=True)
                continue
            if runtimes_table:
                print_runtime_row(h, w, row, runtime, r, measured(results.get((row, 'eager'))), base)
                continue
            ratio_t = f'{r["train"] / base["train"]:.2f}x' if base else '-'
            ratio_m = f'{r["peak_mb"] / base["peak_mb"]:.2f}x' if base else '-'
            flops = f' {r["flops"] / 1e9:.2f} | {3 * r["flops"] / r["train"] / 1e9:.0f} |' if 'flops' in r else ''
            print(
                f'| {h} x {w} | {row} | {r["forward"]:.3f} | {r["train"]:.3f} | {r["peak_mb"]:.0f} | {ratio_t} | '
                f'{ratio_m} |{flops}',
                flush=True)
        backends = {
            (row if runtime == 'eager' else f'{row} ({runtime})'): r['backends']
            for (row, runtime), r in results.items() if 'backends' in r
        }
        if backends:
            print(f'\nbackends of the training step at {size}:')
            for row, table in backends.items():
                print(f'  {row}: ' + '; '.join(f'{op} {choice}' for op, choice in table.items()))
            print()


if __name__ == '__main__':
    main()
