"""Build every TransNeXt variant and print its parameters and output shapes.

    python tools/analysis/summarize_variants.py [--shape H W]
"""
import argparse
import time

import torch

from mmtransnext.models import TransNeXt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--variants', nargs='+', default=list(TransNeXt.variants), choices=TransNeXt.variants)
    args = parser.parse_args()
    h, w = args.shape
    print(f'{"variant":<11} {"backbone":>9} {"+1k head":>9}  {"forward":>8}  output shapes (C x H x W) at {h} x {w}')
    for name in args.variants:
        model = TransNeXt(arch=name, img_size=224).eval()
        model.init_weights()
        params = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        with torch.no_grad():
            outs = model(torch.randn(1, 3, h, w))
        elapsed = time.perf_counter() - start
        shapes = ', '.join('x'.join(map(str, o.shape[1:])) for o in outs)
        head = params + (model.embed_dims[-1] + 1) * 1000  # Linear(C, 1000): weight and bias
        print(f'{name:<11} {params / 1e6:>8.2f}M {head / 1e6:>8.2f}M  {elapsed:>7.2f}s  {shapes}')


if __name__ == '__main__':
    main()
