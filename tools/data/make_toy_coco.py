"""Generate a small deterministic COCO-format instance-segmentation set of textured shapes.

Three classes (square, circle, triangle) with random sizes, positions and textures on textured
backgrounds (script_utils.toy_shapes); masks are exact and stored as RLE.

    python tools/data/make_toy_coco.py [--out data/toy_coco] [--num-train 320] [--num-val 64]
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.toy_shapes import SHAPE_CLASSES, make_image  # noqa: E402


def write_split(out_dir, split, num_images, seed, size):
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, objects = make_image(seed * 1_000_003 + index, size, size)
        file_name = f'{index:05d}.png'
        Image.fromarray(image).save(osp.join(out_dir, split, file_name))
        images.append(dict(id=index + 1, file_name=file_name, height=size, width=size))
        for cls, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            annotations.append(
                dict(id=len(annotations) + 1,
                     image_id=index + 1,
                     category_id=cls + 1,
                     iscrowd=0,
                     area=float(mask.sum()),
                     bbox=[x, y, w, h],
                     segmentation=dict(size=list(rle['size']), counts=rle['counts'].decode())))
        if (index + 1) % 50 == 0 or index + 1 == num_images:
            print(f'  {split}: {index + 1}/{num_images} images', flush=True)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPE_CLASSES)]
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    with open(osp.join(out_dir, 'annotations', f'{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return len(images), len(annotations)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/toy_coco')
    parser.add_argument('--num-train', type=int, default=320)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(f'writing a toy COCO set to {args.out}')
    for split, num, seed in (('train', args.num_train, args.seed), ('val', args.num_val, args.seed + 1)):
        n_img, n_ann = write_split(args.out, split, num, seed, args.size)
        print(f'{split}: {n_img} images, {n_ann} objects')


if __name__ == '__main__':
    main()
