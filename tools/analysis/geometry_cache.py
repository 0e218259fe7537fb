"""How often a training pipeline makes TransNeXt rebuild its per-size geometry, for several cache sizes.

    python tools/analysis/geometry_cache.py [CONFIG] [--iters 2000] [--cache-sizes 8 16 32 64 128 256]

The backbone keeps the geometry of each (stage, feature size) it has seen (masks, scales, bias taps) in an
LRU cache of ``TransNeXt.geometry_cache_size`` entries. Multi-scale detection pipelines make the input size
change almost every iteration. This tool runs the config's own train transforms (mmdet's, after image
loading) on blank images whose sizes follow COCO's common shapes (long side 640, the short side one of
COCO's usual values, 70% landscape), pads each batch as the config's data preprocessor does, replays the
stage sizes through an LRU cache of each size and prints the share of iterations that rebuild at least one
stage, and the time one rebuild of all four stages takes here (the backbone's own ``stage_geometry``).
Default CONFIG: configs/dino-5scale_transnext_tiny.py.
"""
import argparse
import os.path as osp
import random
import statistics
import sys
import time
import warnings
from collections import OrderedDict

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.model_input import read_config, transnext_settings  # noqa: E402

COCO_SHORT_SIDES = (360, 375, 400, 424, 425, 426, 427, 428, 480, 512, 640)  # with a long side of 640


def input_sizes(cfg, iters, seed):
    """Padded (H, W) of each training batch the config's transforms produce."""
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    steps = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if t['type'] not in ('LoadImageFromFile', 'LoadAnnotations', 'PackDetInputs')
    ]
    transforms = Compose(steps)
    preprocessor = cfg.model.get('data_preprocessor', {})
    divisor = preprocessor.get('pad_size_divisor', 1)
    batch = cfg.train_dataloader.get('batch_size', 1)
    rng = random.Random(seed)
    np.random.seed(seed)  # mmcv's random transforms draw from numpy
    sizes = []
    for _ in range(iters):
        shapes = []
        for _ in range(batch):
            short, long = rng.choice(COCO_SHORT_SIDES), 640
            h, w = (short, long) if rng.random() < 0.7 else (long, short)
            result = transforms(
                dict(img=np.zeros((h, w, 3), np.uint8),
                     img_shape=(h, w),
                     ori_shape=(h, w),
                     gt_bboxes=HorizontalBoxes(np.array([[0., 0., w / 2, h / 2]], np.float32)),
                     gt_bboxes_labels=np.zeros(1, np.int64),
                     gt_ignore_flags=np.zeros(1, bool)))
            shapes.append(result['img'].shape[:2])
        H, W = (max(s[i] for s in shapes) for i in (0, 1))
        sizes.append((-(-H // divisor) * divisor, -(-W // divisor) * divisor))
    return sizes


def stage_sizes(backbone, H, W):
    """Feature size (H, W) of each stage for an input of H x W."""
    return list(zip(backbone.stage_sides(H), backbone.stage_sides(W)))


def rebuild_share(keys_per_iter, capacity):
    """Share of iterations in which an LRU cache of ``capacity`` misses at least one (stage, size)."""
    cache, rebuilt = OrderedDict(), 0
    for keys in keys_per_iter:
        missed = False
        for key in keys:
            if key in cache:
                cache.move_to_end(key)
            else:
                missed = True
                cache[key] = None
                while len(cache) > capacity:
                    cache.popitem(last=False)
        rebuilt += missed
    return rebuilt / len(keys_per_iter)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default='configs/dino-5scale_transnext_tiny.py')
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--cache-sizes', type=int, nargs='+', default=[8, 16, 32, 64, 128, 256])
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    cfg = read_config(args.config)
    from mmtransnext.models import TransNeXt
    backbone = TransNeXt(**dict(transnext_settings(cfg, args.config), init_cfg=None))
    sizes = input_sizes(cfg, args.iters, args.seed)
    keys = [list(enumerate(stage_sizes(backbone, *hw))) for hw in sizes]
    print(f'{args.config}: {args.iters} iterations, {len(set(sizes))} distinct input sizes, '
          f'{len({k for ks in keys for k in ks})} distinct (stage, size) keys; the cache holds '
          f'{TransNeXt.geometry_cache_size} entries')
    print('| cache entries | iterations that rebuild geometry |')
    print('|---|---|')
    for capacity in args.cache_sizes:
        print(f'| {capacity} | {100 * rebuild_share(keys, capacity):.1f}% |')
    timings = []
    for hw in random.Random(args.seed).sample(sorted(set(sizes)), min(20, len(set(sizes)))):
        backbone._geometry_cache.clear()
        start = time.perf_counter()
        for s, size in enumerate(stage_sizes(backbone, *hw)):
            backbone.stage_geometry(s, size, torch.device('cpu'))
        timings.append(time.perf_counter() - start)
    print(f'one rebuild of all stages (CPU, median of {len(timings)} sizes): {1e3 * statistics.median(timings):.1f} ms')


if __name__ == '__main__':
    main()
