"""Time and peak memory of TransNeXt-T against mmdet's Swin-T, batch 1, all rows in one run.

    python tools/analysis/benchmark.py [--sizes 512x512 800x1216] [--repeats 3] [--rows ...]

Each row runs in a fresh subprocess, so that peak memory is that row's alone: on the CPU the peak
resident set size (ru_maxrss) above the process's size just before the first forward; on a GPU
torch.cuda.max_memory_allocated. Times are the median over --repeats after one warm-up.
Rows: transnext (pure-PyTorch attention), transnext_cp (with_cp=True), swin.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

ROWS = ('transnext', 'transnext_cp', 'swin')


def build(row):
    warnings.filterwarnings('ignore')
    if row == 'swin':
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                               drop_path_rate=0.2)
    from mmtransnext.models import TransNeXt
    return TransNeXt(arch='tiny', img_size=800, pretrain_size=224, drop_path_rate=0.2, with_cp=row.endswith('_cp'))


def measure(row, h, w, repeats):
    """One row in this process: {'forward': s, 'train': s, 'peak_mb': MB}."""
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model = build(row).to(device)
    x = torch.randn(1, 3, h, w, device=device)

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        sum(o.float().mean() for o in model(x)).backward()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {}
    for name, fn in (('forward', forward), ('train', train_step)):
        fn()
        sync()
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
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', default=['512x512', '800x1216'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rows', nargs='+', default=list(ROWS), choices=ROWS)
    parser.add_argument('--child', nargs=4, metavar=('ROW', 'H', 'W', 'REPEATS'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, h, w, repeats = args.child
        print(json.dumps(measure(row, int(h), int(w), int(repeats))))
        return

    print('| input | backbone | forward (s) | fwd+bwd (s) | peak memory (MiB) | fwd+bwd / Swin-T | memory / Swin-T |')
    print('|---|---|---|---|---|---|---|')
    for size in args.sizes:
        h, w = map(int, size.split('x'))
        results = {}
        for row in args.rows:
            out = subprocess.run([sys.executable, __file__, '--child', row, str(h), str(w), str(args.repeats)],
                                 capture_output=True, text=True, check=True).stdout
            results[row] = json.loads(out.strip().splitlines()[-1])
            print(f'  measured {row} at {size}', file=sys.stderr, flush=True)
        swin = results.get('swin')
        for row, r in results.items():
            ratio_t = f'{r["train"] / swin["train"]:.2f}x' if swin else '-'
            ratio_m = f'{r["peak_mb"] / swin["peak_mb"]:.2f}x' if swin else '-'
            print(f'| {h} x {w} | {row} | {r["forward"]:.2f} | {r["train"]:.2f} | {r["peak_mb"]:.0f} | {ratio_t} | '
                  f'{ratio_m} |', flush=True)


if __name__ == '__main__':
    main()
