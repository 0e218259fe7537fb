"""The bundled default job: generate the toy data, train, evaluate, draw, in one command.

    python tools/toy_job.py [--work-dir work_dirs/toy_maskrcnn] [--cfg-options ...]

Detection: a TransNeXt Mask R-CNN learns the generated shapes set (tools/data/make_toy_coco.py) from
scratch on the CPU, tools/test.py reports COCO box / mask AP, predictions are drawn into PNGs and the
loss curve is plotted. Each step is the tool a user would run by hand.
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
CONFIG = 'configs/toy/maskrcnn_transnext_toy.py'
DATA = 'data/toy_coco'


def run(*args):
    print('$ python ' + ' '.join(args), flush=True)
    result = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode:
        print(result.stdout[-6000:])
        sys.exit(f'step failed: python {" ".join(args)}')
    return result.stdout


def montage(paths, out, columns=3):
    tiles = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * h:r * h + tile.shape[0], c * w:c * w + tile.shape[1]] = tile
    Image.fromarray(canvas).save(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/toy_maskrcnn')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='passed to tools/train.py')
    args = parser.parse_args()
    start = time.time()
    work_dir = osp.join(ROOT, args.work_dir)

    if not osp.exists(osp.join(ROOT, DATA, 'annotations', 'val.json')):
        run('tools/data/make_toy_coco.py', '--out', DATA)
    else:
        print(f'using the existing {DATA}')
    train_args = ['tools/train.py', CONFIG, '--work-dir', work_dir]
    run(*train_args, *(['--cfg-options', *args.cfg_options] if args.cfg_options else []))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    show_dir = osp.join(work_dir, 'predictions')
    output = run('tools/test.py', CONFIG, checkpoint, '--work-dir', work_dir, '--show-dir', show_dir)
    metrics = json.loads(output.rsplit('metrics: ', 1)[1].splitlines()[0])
    print(run('tools/analysis/plot_loss.py', work_dir).strip())
    drawn = sorted(glob.glob(osp.join(show_dir, '*.png')))
    montage(drawn[:6], osp.join(work_dir, 'predictions.png'))

    print(f'\nTransNeXt Mask R-CNN on the toy shapes set ({time.time() - start:.0f} s)')
    for name in ('bbox', 'segm'):
        print(f'  {name:<4} AP {metrics[f"coco/{name}_mAP"]:.3f}   AP50 {metrics[f"coco/{name}_mAP_50"]:.3f}   '
              f'AP75 {metrics[f"coco/{name}_mAP_75"]:.3f}')
    print(f'  checkpoint        {checkpoint}\n  loss curve        {work_dir}/loss_curve.png\n'
          f'  predictions       {work_dir}/predictions.png (GT left, prediction right; all in {show_dir})')


if __name__ == '__main__':
    main()
