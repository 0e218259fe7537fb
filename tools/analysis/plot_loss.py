"""Plot the training losses mmengine logged in a work dir (its latest run) to a PNG.

    python tools/analysis/plot_loss.py WORK_DIR [--out loss_curve.png]
"""
import argparse
import glob
import json
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def read_train_scalars(work_dir):
    """Training records (dicts with 'iter' and losses) of the newest run in ``work_dir``."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'no */vis_data/scalars.json under {work_dir}: is it an mmengine work dir?')
    with open(runs[-1]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if 'loss' in r and 'iter' in r]


def plot_losses(work_dir, out):
    records = read_train_scalars(work_dir)
    keys = [k for k in records[0] if k.startswith('loss')]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for key in keys:
        ax.plot([r['iter'] for r in records], [r[key] for r in records],
                label=key,
                linewidth=2.0 if key == 'loss' else 1.0)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(osp.basename(osp.normpath(work_dir)))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', help='PNG path (default: WORK_DIR/loss_curve.png)')
    args = parser.parse_args()
    out = args.out or osp.join(args.work_dir, 'loss_curve.png')
    records = plot_losses(args.work_dir, out)
    print(f'{out}: loss {records[0]["loss"]:.3f} at iter {records[0]["iter"]} -> '
          f'{records[-1]["loss"]:.3f} at iter {records[-1]["iter"]}')


if __name__ == '__main__':
    main()
