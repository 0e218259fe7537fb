"""Generate a small deterministic ImageNet-layout classification set: one textured shape per image.

    python tools/data/make_toy_imagenet.py [--out data/toy_imagenet] [--per-class-train 160] [--per-class-val 32]

Layout: OUT/{train,val}/<class>/<name>.png with classes square, circle, triangle
(script_utils.toy_shapes; colours and textures random, so only the shape tells the class).
"""
import argparse
import os
import os.path as osp
import sys

from PIL import Image

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.toy_shapes import SHAPE_CLASSES, make_image  # noqa: E402


def write_split(out_dir, split, per_class, seed, size):
    counts = {name: 0 for name in SHAPE_CLASSES}
    index = 0
    while min(counts.values()) < per_class:
        image, objects = make_image(seed * 1_000_003 + index, size, size, max_objects=1)
        index += 1
        cls = SHAPE_CLASSES[objects[0][0]] if objects else None
        if cls is None or counts[cls] >= per_class:
            continue
        os.makedirs(osp.join(out_dir, split, cls), exist_ok=True)
        Image.fromarray(image).save(osp.join(out_dir, split, cls, f'{cls}_{counts[cls]:05d}.png'))
        counts[cls] += 1
        done = sum(counts.values())
        if done % 100 == 0 or done == per_class * len(SHAPE_CLASSES):
            print(f'  {split}: {done}/{per_class * len(SHAPE_CLASSES)} images', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/toy_imagenet')
    parser.add_argument('--per-class-train', type=int, default=160)
    parser.add_argument('--per-class-val', type=int, default=32)
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(f'writing a toy ImageNet-layout set to {args.out} (classes: {", ".join(SHAPE_CLASSES)})')
    write_split(args.out, 'train', args.per_class_train, args.seed, args.size)
    write_split(args.out, 'val', args.per_class_val, args.seed + 1, args.size)


if __name__ == '__main__':
    main()
