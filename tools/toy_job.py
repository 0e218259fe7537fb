"""The bundled jobs: generate toy data, train from scratch on the CPU, evaluate, draw, in one command.

    python tools/toy_job.py [det|seg|cls] [--work-dir DIR] [--seeds N] [--cfg-options k=v ...]

det (the default job): a TransNeXt Mask R-CNN on the generated shapes set (tools/data/make_toy_coco.py),
    COCO box / mask AP from mmdet's CocoMetric.
seg: a TransNeXt UperNet on the generated ADE20K-layout set (tools/data/make_toy_ade.py), mIoU from
    mmseg's IoUMetric.
cls: a TransNeXt classifier on a generated ImageNet-layout set (tools/data/make_toy_imagenet.py), top-1
    from mmpretrain's Accuracy.
Each step is the tool a user would run by hand (tools/train.py, tools/test.py --show-dir,
tools/analysis/plot_loss.py); the job adds a loss curve and a montage of drawn predictions.
--seeds N runs the job N times (randomness.seed = 0 .. N-1, work dirs DIR_seed<k>) and prints each run's
metrics and their mean and range: one run's number says little, since training amplifies the rounding
differences between CPUs (and seeds).
"""
import argparse
import glob
import json
import os.path as osp
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TASKS = {
    'det':
    dict(config='configs/toy/maskrcnn_transnext_toy.py',
         data='data/toy_coco',
         ready='annotations/val.json',
         generator='tools/data/make_toy_coco.py',
         title='TransNeXt Mask R-CNN on the toy shapes set',
         metrics=[('box AP', 'coco/bbox_mAP'), ('box AP50', 'coco/bbox_mAP_50'), ('mask AP', 'coco/segm_mAP'),
                  ('mask AP50', 'coco/segm_mAP_50')]),
    'seg':
    dict(config='configs/toy/upernet_transnext_toy.py',
         data='data/toy_ade',
         ready='annotations/validation',
         generator='tools/data/make_toy_ade.py',
         title='TransNeXt UperNet on the toy ADE20K-layout set',
         metrics=[('mIoU', 'mIoU'), ('mAcc', 'mAcc'), ('aAcc', 'aAcc')]),
    'cls':
    dict(config='configs/toy/transnext_toy_cls.py',
         data='data/toy_imagenet',
         ready='val',
         generator='tools/data/make_toy_imagenet.py',
         title='TransNeXt classifier on the toy shapes set',
         metrics=[('top-1', 'accuracy/top1')]),
}


def run(*args):
    """Run ``python ARGS`` in the repo root, streaming its output (the tools log their progress)."""
    print('$ python ' + ' '.join(args), flush=True)
    lines = []
    with subprocess.Popen([sys.executable, *args],
                          cwd=ROOT,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end='', flush=True)
            lines.append(line)
    if proc.returncode:
        sys.exit(f'step failed ({proc.returncode}): python {" ".join(args)}')
    return ''.join(lines)


def montage(paths, out, columns=3):
    tiles = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * h:r * h + tile.shape[0], c * w:c * w + tile.shape[1]] = tile
    Image.fromarray(canvas).save(out)


def run_job(task, work_dir, cfg_options):
    """Train, test, draw; returns (metrics, checkpoint)."""
    run('tools/train.py', task['config'], '--work-dir', work_dir,
        *(['--cfg-options', *cfg_options] if cfg_options else []))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    show_dir = osp.join(work_dir, 'predictions')
    run('tools/test.py', task['config'], checkpoint, '--work-dir', work_dir, '--show-dir', show_dir)
    with open(osp.join(work_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    run('tools/analysis/plot_loss.py', work_dir)
    drawn = sorted(glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True))
    montage(drawn[:6], osp.join(work_dir, 'predictions.png'))
    return metrics, checkpoint


def formatted(value):
    return f'{value:.3f}' if value <= 1 else f'{value:.2f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('task', nargs='?', default='det', choices=sorted(TASKS))
    parser.add_argument('--work-dir', help='default: work_dirs/toy_<task>')
    parser.add_argument('--seeds',
                        type=int,
                        default=0,
                        help='run with seeds 0 .. N-1 and summarise (default: once, '
                        "with the config's seed)")
    parser.add_argument('--cfg-options', nargs='+', default=[], help='passed to tools/train.py')
    args = parser.parse_args()
    task = TASKS[args.task]
    start = time.time()
    work_dir = osp.join(ROOT, args.work_dir or f'work_dirs/toy_{args.task}')

    if osp.exists(osp.join(ROOT, task['data'], task['ready'])):
        print(f'using the existing {task["data"]}')
    else:
        run(task['generator'], '--out', task['data'])
    if not args.seeds:
        metrics, checkpoint = run_job(task, work_dir, args.cfg_options)
        print(f'\n{task["title"]} ({time.time() - start:.0f} s)')
        print('  ' + '   '.join(f'{name} {formatted(metrics[key])}' for name, key in task['metrics']))
        print(f'  checkpoint   {checkpoint}\n  loss curve   {work_dir}/loss_curve.png\n'
              f'  predictions  {work_dir}/predictions.png (ground truth left, prediction right; all in '
              f'{work_dir}/predictions)')
        return

    runs = []
    for seed in range(args.seeds):
        metrics, _ = run_job(task, f'{work_dir}_seed{seed}', [*args.cfg_options, f'randomness.seed={seed}'])
        runs.append(metrics)
    print(f'\n{task["title"]}, seeds 0-{args.seeds - 1} ({time.time() - start:.0f} s)')
    for name, key in task['metrics']:
        values = [m[key] for m in runs]
        print(f'  {name:9s} ' + ' '.join(formatted(v) for v in values) + f'   mean {formatted(np.mean(values))}'
              f'   range {formatted(min(values))} - {formatted(max(values))}')


if __name__ == '__main__':
    main()
