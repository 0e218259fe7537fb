"""Effective receptive field of a backbone (Luo et al., NeurIPS 2016; drawn as RepLKNet draws it), with
other backbones side by side.

    python tools/analysis/visualize_erf.py CONFIG [CHECKPOINT] --out FILE [--images PATH ...]
        [--compare CONFIG[:CHECKPOINT] ...] [--stage S] [--size H W]

For each image (default: a photograph that ships with matplotlib), the gradient of the centre position of
a stage's output (default: the last), ReLU'd and summed over its channels as RepLKNet does (a plain channel
sum of a LayerNorm'd output is nearly constant), with respect to the input image; absolute
values summed over the input channels and averaged over the images: (H, W). Drawn on a log scale,
normalised to its maximum; also written as FILE's .npz. Printed: the high-contribution area ratio
(RepLKNet): the area, as a fraction of the image, of the smallest square around the centre that holds
20% / 30% / 50% / 99% of the total contribution (computed here on the contributions themselves).
A CONFIG is a file or a packaged config such as mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.model_input import (add_model_arguments, build_backbone, parse_model_arguments, read_rgb,
                                      sample_photo, to_input)

FRACTIONS = (0.2, 0.3, 0.5, 0.99)


def effective_receptive_field(model, inputs, stage=-1):
    """Mean over ``inputs`` (each (1, C, H, W)) of |d sum_c relu(out[c, centre]) / d input| summed over
    the input's channels, out being the model's output (a tensor, or stage ``stage`` of a tuple): (H, W)."""
    total = None
    for x in inputs:
        x = x.detach().clone().requires_grad_(True)
        out = model(x)
        out = out[stage] if isinstance(out, (tuple, list)) else out
        h, w = out.shape[-2:]
        out[:, :, h // 2, w // 2].relu().sum().backward()
        contribution = x.grad.abs().sum(dim=1)[0].double()
        total = contribution if total is None else total + contribution
    return (total / len(inputs)).cpu().numpy()


def high_contribution_area_ratio(erf, fraction):
    """Area (fraction of the image) of the smallest square centred at (H // 2, W // 2), clipped to the
    image, whose contributions sum to at least ``fraction`` of the total."""
    H, W = erf.shape
    cy, cx = H // 2, W // 2
    total = erf.sum()
    for r in range(max(H, W)):
        window = erf[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1]
        if window.sum() >= fraction * total * (1 - 1e-12):
            return window.size / erf.size
    return 1.0


def parse_model(text):
    """CONFIG[:CHECKPOINT] -> (config, checkpoint or None); a packaged config keeps its 'mmdet::' prefix."""
    scope, sep, rest = text.rpartition('::')
    path, _, checkpoint = rest.partition(':')
    return scope + sep + path, checkpoint or None


def draw(results, out_file):
    """results: [(name, erf)] side by side, log scale normalised to each map's maximum."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.9), squeeze=False)
    for ax, (name, erf, ratios) in zip(axes[0], results):
        image = ax.imshow(np.maximum(erf / erf.max(), 1e-4), cmap='viridis', norm=LogNorm(vmin=1e-4, vmax=1))
        ax.set_title(f'{name}\n' + ', '.join(f'{int(f * 100)}%: {r:.3f}' for f, r in zip(FRACTIONS, ratios)),
                     fontsize=7)
        ax.axis('off')
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        bar.set_label('contribution / max (log)', fontsize=6)
    fig.suptitle('effective receptive field (titles: area ratio holding 20 / 30 / 50 / 99% of it)', fontsize=8)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument('--out', required=True, help='PNG to write (and the maps as .npz beside it)')
    parser.add_argument('--images', nargs='+', help='images (default: the photograph that ships with matplotlib)')
    parser.add_argument('--compare',
                        nargs='+',
                        default=[],
                        metavar='CONFIG[:CHECKPOINT]',
                        help='other models drawn beside it, e.g. mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    parser.add_argument('--stage', type=int, default=-1, help='output stage (0-based; default: the last)')
    parser.add_argument('--size',
                        nargs=2,
                        type=int,
                        default=(512, 512),
                        metavar=('H', 'W'),
                        help='input size every image is resized to (default: 512 512)')
    parser.add_argument('--device', default='cpu')
    args = parse_model_arguments(parser)

    images = [read_rgb(path, args.size) for path in (args.images or [sample_photo()])]
    results = []
    print('| model | ' + ' | '.join(f'area for {int(f * 100)}%' for f in FRACTIONS) + ' |')
    print('|---|' + '---|' * len(FRACTIONS))
    models = [(args.config, args.checkpoint, args.cfg_options)] + [(*parse_model(m), None) for m in args.compare]
    for config, checkpoint, cfg_options in models:  # --cfg-options apply to CONFIG only
        backbone, preprocess = build_backbone(config, checkpoint, args.device, cfg_options)
        try:
            erf = effective_receptive_field(backbone, [to_input(rgb, preprocess, args.device) for rgb in images],
                                            args.stage)
        except IndexError:
            sys.exit(f'{config}: --stage {args.stage} is not one of its output stages')
        ratios = [high_contribution_area_ratio(erf, f) for f in FRACTIONS]
        name = osp.splitext(osp.basename(config))[0]
        print(f'| {name} | ' + ' | '.join(f'{r:.4f}' for r in ratios) + ' |', flush=True)
        results.append((name, erf, ratios))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    draw(results, args.out)
    np.savez_compressed(osp.splitext(args.out)[0] + '.npz', **{name: erf for name, erf, _ in results})
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
