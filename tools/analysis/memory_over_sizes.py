"""Resident memory of a training loop whose input size changes every iteration.

    python tools/analysis/memory_over_sizes.py [--arch micro] [--iters 120] [--sizes 40] [--min-side 128] [--step 8]

Trains the backbone (forward + backward + AdamW step) on random inputs whose sides are drawn from
--sizes distinct values (more than TransNeXt.geometry_cache_size), and prints the process's resident
set size every 20 iterations: with the per-size cache bounded it levels off instead of growing.
--trim calls glibc's malloc_trim(0) before each measurement, so that the number is what the process holds
rather than that plus the freed heap glibc keeps: it tells a leak (grows with --trim too) from allocator
retention (flat with --trim).
"""
import argparse
import ctypes
import random

import torch

from mmtransnext.models import TransNeXt


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='micro')
    parser.add_argument('--iters', type=int, default=120)
    parser.add_argument('--sizes', type=int, default=40, help='distinct input sides')
    parser.add_argument('--min-side', type=int, default=128, help='smallest side')
    parser.add_argument('--step', type=int, default=8, help='difference between consecutive sides')
    parser.add_argument('--trim', action='store_true', help="glibc's malloc_trim(0) before each measurement")
    args = parser.parse_args()
    random.seed(0)
    model = TransNeXt(arch=args.arch, img_size=224)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sides = [args.min_side + args.step * i for i in range(args.sizes)]
    print(f'{"iter":>5} {"RSS (MiB)":>10} {"cached sizes":>13}')
    for it in range(1, args.iters + 1):
        x = torch.randn(1, 3, random.choice(sides), random.choice(sides))
        loss = sum(o.mean() for o in model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 20 == 0:
            if args.trim:
                ctypes.CDLL('libc.so.6').malloc_trim(0)
            print(f'{it:>5} {rss_mib():>10.0f} {len(model._geometry_cache):>13}', flush=True)


if __name__ == '__main__':
    main()
