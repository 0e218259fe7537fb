"""Draw TransNeXt's attention of chosen query pixels over the image: fine in each pixel's 3 x 3
neighbourhood, coarse over the pooled keys (the paper's foveal attention).

    python tools/analysis/visualize_attention.py IMAGE CONFIG [CHECKPOINT] --points X,Y [X,Y ...]
        --out-dir DIR [--blocks S.B ...] [--per-head] [--log] [--size H W]

For each point one PNG (a panel per block; default: each stage's last block) and an .npz with the maps
drawn. A map is the post-softmax attention of the query's token, averaged over heads (or one per head),
spread over image pixels: in stages 1-3 each of the 9 local weights over its token's pixels and each
pooled key's weight evenly over the pixels its pooling cell averages; in stage 4 the full attention. A
map sums to 1 over the image. The weights come from the model's own forward (``record_weights`` of the
attention modules, which runs the reference softmax where the fused op would run).
IMAGE 'sample' is a photograph that ships with matplotlib. CONFIG may be any mmdet / mmseg /
mmpretrain config with a TransNeXt backbone.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.model_input import (add_model_arguments, build_backbone, parse_model_arguments, read_rgb,
                                      sample_photo, to_input)


def parse_point(text):
    try:
        x, y = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'point {text!r} is not X,Y in pixels, e.g. 120,80')
    return x, y


def require_transnext(backbone):
    from mmtransnext.models import TransNeXt
    if not isinstance(backbone, TransNeXt):
        sys.exit(f'the config\'s backbone is {type(backbone).__name__}; this tool draws TransNeXt\'s attention '
                 '(visualize_erf.py draws any backbone\'s effective receptive field)')


def choose_blocks(backbone, specs):
    """[(stage, block)] (0-based) from 'S.B' specs (1-based stage, block index; negative counts from the
    end); default: each stage's last block."""
    depths = [len(getattr(backbone, f'block{i + 1}')) for i in range(backbone.num_stages)]
    if not specs:
        return [(s, depths[s] - 1) for s in range(len(depths))]
    chosen = []
    for spec in specs:
        try:
            stage, block = (int(v) for v in spec.split('.'))
        except ValueError:
            sys.exit(f'--blocks {spec!r}: expected STAGE.BLOCK, e.g. 3.-1 for the last block of stage 3')
        if not 1 <= stage <= len(depths) or not -depths[stage - 1] <= block < depths[stage - 1]:
            sys.exit(f'--blocks {spec!r}: this model has stages 1-{len(depths)} with {depths} blocks')
        chosen.append((stage - 1, block % depths[stage - 1]))
    return chosen


def record_attention(backbone, x, blocks):
    """One forward of a TransNeXt; per chosen block its post-softmax weights (heads, N, keys) and its stage's
    feature size."""
    sizes, hooks = {}, []
    for s in range(backbone.num_stages):
        hooks.append(
            getattr(backbone, f'patch_embed{s + 1}').register_forward_hook(
                lambda module, args, out, s=s: sizes.__setitem__(s, tuple(out[1]))))
    attentions = [getattr(backbone, f'block{s + 1}')[b].attn for s, b in blocks]
    for attention in attentions:
        attention.record_weights = True
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for hook in hooks:
            hook.remove()
        for attention in attentions:
            del attention.record_weights  # back to the class default
    return [(attention.__dict__.pop('recorded_weights')[0].float(), sizes[s])
            for attention, (s, _) in zip(attentions, blocks)]


def token_masses(weights, size, token, window_size, sr_ratio):
    """(heads, H_s, W_s) attention mass on the stage's token grid for the query token (ty, tx)."""
    H, W = size
    ty, tx = token
    row = weights[:, ty * W + tx].numpy().astype(np.float64)  # (heads, keys)
    heads = row.shape[0]
    if sr_ratio == 1:  # full attention: one weight per token
        return row.reshape(heads, H, W)
    masses = np.zeros((heads, H, W))
    r, local_len = window_size // 2, window_size**2
    for k in range(local_len):  # row-major window, as the op and the reference lay it out
        y, x = ty + k // window_size - r, tx + k % window_size - r
        if 0 <= y < H and 0 <= x < W:  # outside the map the weight is exactly 0 (logit -inf)
            masses[:, y, x] += row[:, k]
    ph, pw = H // sr_ratio, W // sr_ratio
    for p in range(ph * pw):  # adaptive average pooling's cells (they overlap where sr does not divide)
        i, j = divmod(p, pw)
        y0, y1 = i * H // ph, -(-(i + 1) * H // ph)
        x0, x1 = j * W // pw, -(-(j + 1) * W // pw)
        masses[:, y0:y1, x0:x1] += row[:, local_len + p, None, None] / ((y1 - y0) * (x1 - x0))
    return masses


def pixel_map(masses, stride, image_size):
    """Token masses (..., H_s, W_s) spread evenly over each token's pixels: (..., H, W), same sum."""
    H, W = image_size
    ys = np.minimum(np.arange(H) // stride, masses.shape[-2] - 1)
    xs = np.minimum(np.arange(W) // stride, masses.shape[-1] - 1)
    counts = np.bincount(ys, minlength=masses.shape[-2])[:, None] * np.bincount(xs, minlength=masses.shape[-1])
    if (counts == 0).any():
        raise ValueError(f'stride {stride} leaves tokens without pixels for a {H} x {W} image')
    return (masses / counts)[..., ys[:, None], xs[None, :]]


def attention_maps(backbone, x, points, blocks, per_head=False):
    """{(stage, block): [map per point]}, each map (H, W), or (heads, H, W) with per_head, summing to 1."""
    image_size = tuple(x.shape[-2:])
    recorded = record_attention(backbone, x, blocks)
    maps = {}
    for (s, b), (weights, size) in zip(blocks, recorded):
        attention = getattr(backbone, f'block{s + 1}')[b].attn
        stride = 2**(s + 2)  # patch_size 4, then 2 per stage
        window = getattr(attention, 'window_size', 0)
        sr_ratio = getattr(attention, 'sr_ratio', 1)
        maps[s, b] = []
        for px, py in points:
            token = (min(py // stride, size[0] - 1), min(px // stride, size[1] - 1))
            masses = token_masses(weights, size, token, window, sr_ratio)
            maps[s, b].append(pixel_map(masses if per_head else masses.mean(0), stride, image_size))
    return maps


def draw(rgb, point, panels, out_file, log_scale):
    """panels: [(title, (H, W) map)] in rows of ``len(panels[0])``; one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize
    rows, cols = len(panels), len(panels[0])
    fig, axes = plt.subplots(rows,
                             cols,
                             figsize=(3.2 * cols, 3.2 * rows * rgb.shape[0] / rgb.shape[1] + 0.6),
                             squeeze=False)
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            ax.axis('off')
            if panel is None:
                continue
            title, amap = panel
            top = float(amap.max())
            norm = LogNorm(vmin=top * 1e-4, vmax=top) if log_scale else Normalize(vmin=0, vmax=top)
            ax.imshow(rgb)
            shown = np.ma.masked_less_equal(amap, top * 1e-4) if log_scale else amap
            image = ax.imshow(shown, cmap='inferno', norm=norm, alpha=0.7)
            ax.plot(*point, marker='x', color='cyan', markersize=9, markeredgewidth=2.5)
            ax.set_title(title, fontsize=8)
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=6)
            bar.set_label('weight per pixel' + (' (log)' if log_scale else ''), fontsize=6)
    fig.suptitle(f'attention of pixel ({point[0]}, {point[1]}); each map sums to 1', fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help="image file, or 'sample' for matplotlib's photograph")
    add_model_arguments(parser)
    parser.add_argument('--points', nargs='+', type=parse_point, required=True, help='query pixels X,Y')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--blocks', nargs='+', help='STAGE.BLOCK (1-based stage; default: each stage\'s last)')
    parser.add_argument('--per-head', action='store_true', help='one row per head instead of their mean')
    parser.add_argument('--log', action='store_true', help='log colour scale (4 decades)')
    parser.add_argument('--size', nargs=2, type=int, metavar=('H', 'W'), help='resize the image first')
    parser.add_argument('--device', default='cpu')
    args = parse_model_arguments(parser)

    rgb = read_rgb(sample_photo() if args.image == 'sample' else args.image, args.size)
    for px, py in args.points:
        if not (0 <= px < rgb.shape[1] and 0 <= py < rgb.shape[0]):
            sys.exit(f'point {px},{py} is outside the {rgb.shape[1]} x {rgb.shape[0]} (W x H) image')
    backbone, preprocess = build_backbone(args.config, args.checkpoint, args.device, args.cfg_options)
    require_transnext(backbone)
    blocks = choose_blocks(backbone, args.blocks)
    maps = attention_maps(backbone, to_input(rgb, preprocess, args.device), args.points, blocks, args.per_head)

    os.makedirs(args.out_dir, exist_ok=True)
    for i, point in enumerate(args.points):
        columns = [(f'stage {s + 1} block {b}', maps[s, b][i]) for s, b in blocks]
        if args.per_head:
            heads = max(m.shape[0] for _, m in columns)
            panels = [[(f'{t}, head {h}', m[h]) if h < m.shape[0] else None for t, m in columns] for h in range(heads)]
        else:
            panels = [[(f'{t} (mean of heads)', m) for t, m in columns]]
        name = osp.join(args.out_dir, f'attention_{point[0]}_{point[1]}')
        draw(rgb, point, panels, name + '.png', args.log)
        np.savez_compressed(name + '.npz', **{
            f'stage{s + 1}_block{b}': m
            for (s, b), m in ((k, maps[k][i]) for k in blocks)
        })
        print(f'wrote {name}.png and {name}.npz')


if __name__ == '__main__':
    main()
