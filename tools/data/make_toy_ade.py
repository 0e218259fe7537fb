"""Generate a small deterministic ADE20K-layout semantic segmentation set of textured scenes.

Each image has a 'sky' and a 'ground' region split by a wavy horizon, textured shapes (square,
circle, triangle; script_utils.toy_shapes) on top, and an unlabelled noise patch. Label PNGs
follow ADE20K: 0 is "other" (ignored with reduce_zero_label), classes are 1..5.

    python tools/data/make_toy_ade.py [--out data/toy_ade] [--num-train 320] [--num-val 64]

Layout: OUT/images/{training,validation}/*.jpg, OUT/annotations/{training,validation}/*.png
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.toy_shapes import SHAPE_CLASSES, make_image, texture  # noqa: E402

CLASSES = ('sky', 'ground') + SHAPE_CLASSES


def make_scene(seed, size):
    """Image (uint8) and ADE-style label map (0 other, 1 + index into CLASSES)."""
    rng = np.random.default_rng(seed + 7)
    xs = np.arange(size)
    horizon = size * rng.uniform(
        0.3, 0.7) + size * 0.08 * np.sin(xs / size * 2 * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 2 * np.pi))
    ground = np.arange(size)[:, None] >= horizon[None, :]
    background = np.where(ground[..., None], texture(rng, size, size, rng.uniform(30, 200, 3)),
                          texture(rng, size, size, rng.uniform(30, 200, 3)))
    image, objects = make_image(seed, size, size, background=background)
    label = np.where(ground, 2, 1).astype(np.uint8)
    for cls, mask in objects:
        label[mask] = 3 + cls
    # an unlabelled patch of noise: ADE20K's "other", ignored in training and evaluation
    h, w = rng.integers(8, 20, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    free = label[y:y + h, x:x + w] <= 2
    image[y:y + h, x:x + w][free] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)[free]
    label[y:y + h, x:x + w][free] = 0
    return image, label


def write_split(out_dir, split, num_images, seed, size):
    image_dir, label_dir = osp.join(out_dir, 'images', split), osp.join(out_dir, 'annotations', split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for index in range(num_images):
        image, label = make_scene(seed * 1_000_003 + index, size)
        name = f'toy_{split}_{index:05d}'
        Image.fromarray(image).save(osp.join(image_dir, name + '.jpg'), quality=95)
        Image.fromarray(label).save(osp.join(label_dir, name + '.png'))
        if (index + 1) % 50 == 0 or index + 1 == num_images:
            print(f'  {split}: {index + 1}/{num_images} images', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/toy_ade')
    parser.add_argument('--num-train', type=int, default=320)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(f'writing a toy ADE20K-layout set to {args.out} (classes: {", ".join(CLASSES)})')
    write_split(args.out, 'training', args.num_train, args.seed, args.size)
    write_split(args.out, 'validation', args.num_val, args.seed + 1, args.size)


if __name__ == '__main__':
    main()
