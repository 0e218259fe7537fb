"""Export a classifier, a UperNet segmentor or any config's backbone to ONNX, and check the file in
ONNX Runtime against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W ...] [--backbone]
        [--custom-attention] [--dynamic [--min-size S] [--max-size S]] [--benchmark N]

What is exported: an mmpretrain classifier (image -> class logits), an mmseg UperNet segmentor's
``encode_decode`` (image -> per-pixel logits at the input size, no test-time augmentation), or with
``--backbone`` the backbone of any config (image -> one feature map per output stage). Detectors are
refused: their RoI ops and NMS belong to mmdeploy, which can take our backbone file's graph.

The exporter is torch.onnx's torch.export-based one (``dynamo=True``, onnxscript). The attention is
written out in standard ONNX operators (the reference arithmetic, ``attn_impl='pytorch'``), or with
``--custom-attention`` as nodes of the custom domain ``mmtransnext`` (``mmtransnext.ops.onnx_export``)
for runtimes that implement the fused op; ONNX Runtime cannot run those, so that file is only checked
by ``onnx.checker``.

Without ``--dynamic``, one file serves one input size: the position-bias geometry (the bias tables' bilinear
taps, the pooled grid, the window masks) enters the graph as constants of the export size; several ``--shape`` give
one file per size (FILE's name + _HxW). With ``--dynamic``, ONE file serves every batch and every height / width from
``--min-size`` (default: the smallest side whose every stage keeps a 2 x 2 pooled grid, 61 px for TransNeXt) to
``--max-size`` (default 2048): it is converted from the ``torch.export`` program of
``mmtransnext.utils.export.export_dynamic``, traced at the first ``--shape`` (batch 2), with the geometry computed in
the graph from the input's size, and ``adaptive_avg_pool2d`` translated for any size
(``mmtransnext.utils.export.onnx_translations``). The range is stored in the file's ``metadata_props``
(``mmtransnext.min_side``, ``mmtransnext.max_side``); ONNX Runtime does not check it, ``load_onnx.py`` does. The
custom-domain nodes (``--custom-attention``) take the feature map's size as attributes, fixed at export, so
``--dynamic --custom-attention`` is refused.

After export, ONNX Runtime (CPU) runs each file on a random input (a --dynamic file: at every ``--shape``, batch 1,
and at another size in the range whose sides are odd, batch 2); the tool prints the largest difference from PyTorch
relative to the output's scale and fails above 1e-4. ``--benchmark N`` times ONNX Runtime against PyTorch (and, with
``--dynamic``, against a per-size file of the traced size, which it then also writes).
"""
import argparse
import os
import os.path as osp
import re
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # load_onnx
from load_onnx import MAX_SIDE, MIN_SIDE, load_model, median_seconds, median_seconds_interleaved  # noqa: E402

from mmtransnext.models import TransNeXt  # noqa: E402
from mmtransnext.utils.export import export_dynamic, onnx_translations, smallest_exported_side  # noqa: E402
from script_utils.model_input import add_model_arguments, build_model, parse_model_arguments, read_config  # noqa: E402

TOLERANCE = 1e-4  # of the output's largest magnitude

DEFAULT_MAX_SIZE = 2048
DYNAMIC_CUSTOM_REFUSED = ('--dynamic --custom-attention: the mmtransnext-domain nodes take the feature map\'s height '
                          'and width as attributes (their schema, mmtransnext/ops/onnx_export.py), and an ONNX '
                          'attribute is fixed when the file is written, so they cannot serve a range of sizes. Export '
                          'them one file per size (--custom-attention with --shape once per size), or the standard-'
                          'operator attention for a range (--dynamic without --custom-attention).')


class SegmentorLogits(nn.Module):
    """An mmseg EncoderDecoder's ``encode_decode``: image -> logits at the image's size."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image):
        shape = tuple(image.shape[-2:])
        return self.segmentor.encode_decode(image, [dict(img_shape=shape, ori_shape=shape, pad_shape=shape)])


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier's ``mode='tensor'``: image -> class logits."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, image):
        return self.classifier(image, mode='tensor')


def whole_model_kind(cfg):
    """'classifier' or 'segmentor' where the config's model is exported whole, else None (read from the config, so
    that a detector is refused before it is built)."""
    scope, kind = cfg.get('default_scope'), cfg.model.type
    if scope == 'mmpretrain':
        return 'classifier'
    decode_head = cfg.model.get('decode_head', {}).get('type')
    return 'segmentor' if scope == 'mmseg' and kind == 'EncoderDecoder' and decode_head == 'UPerHead' else None


def refuse_whole_model(cfg, config):
    """Exits naming what export_onnx.py exports whole, and how to deploy the rest."""
    decode_head = cfg.model.get('decode_head', {}).get('type')
    what = f'{cfg.model.type} with {decode_head}' if decode_head else cfg.model.type
    sys.exit(f'{config}: a {what} is not exported whole. export_onnx.py exports mmpretrain classifiers, UperNet '
             'segmentors (EncoderDecoder + UPerHead) and, with --backbone, the backbone of any config. A detector '
             "(Mask R-CNN, DINO) needs RoI ops, NMS or deformable attention that mmdeploy provides: export its "
             'backbone with --backbone and deploy the rest with mmdeploy.')


def exported_part(model, cfg, config, backbone_only):
    """(module to export, output names)."""
    if backbone_only:
        outputs = len(getattr(model.backbone, 'out_indices', ())) or None
        return model.backbone, [f'stage{i}' for i in range(outputs)] if outputs else None
    kind = whole_model_kind(cfg)
    if kind == 'classifier' and hasattr(model, 'extract_feat'):
        return ClassifierLogits(model), ['logits']
    if kind == 'segmentor':
        return SegmentorLogits(model), ['seg_logits']
    refuse_whole_model(cfg, config)


def export_one(module, image, out_file, output_names, custom_attention):
    from mmtransnext.ops.onnx_export import custom_translation_table
    with torch.no_grad():
        expected = module(image)  # also fills the backbone's geometry cache for this size (constants below)
    program = torch.onnx.export(module, (image, ),
                                dynamo=True,
                                input_names=['image'],
                                output_names=output_names,
                                custom_translation_table=custom_translation_table() if custom_attention else None,
                                verbose=False)
    program.save(out_file)
    return expected if isinstance(expected, (tuple, list)) else [expected]


def export_range(module, size, size_range, out_file, output_names):
    """One file for every batch and every height / width in ``size_range``: ``torch.export`` traced at ``size``
    (batch 2: a batch of 1 would be specialised), converted to ONNX, its axes named and its range stored."""
    image = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        program = export_dynamic(module, image, size_range)
    except Exception as error:  # noqa: BLE001 (torch.export's errors have many types: each is reported)
        lines = str(error).strip().splitlines()
        detail = '\n'.join(lines[:12] + (['...'] if len(lines) > 12 else []))
        sys.exit(f'torch.export could not trace the model with a symbolic batch, height and width in {size_range}: '
                 f'{type(error).__name__}:\n{detail}\nNarrow --min-size / --max-size, or export one file per size '
                 '(without --dynamic).')
    torch.onnx.export(program,
                      dynamo=True,
                      input_names=['image'],
                      output_names=output_names,
                      custom_translation_table=onnx_translations(),
                      verbose=False).save(out_file)
    describe_range(out_file, size, size_range)


def describe_range(out_file, size, size_range):
    """Names the input's symbolic axes batch / height / width (everywhere they appear, output sizes included) and
    stores the range in the file's metadata_props."""
    import onnx
    model = onnx.load(out_file, load_external_data=False)  # the weights stay where the exporter wrote them
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {dims[i].dim_param: name for i, name in ((0, 'batch'), (2, 'height'), (3, 'width')) if dims[i].dim_param}
    if names:
        symbol = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
        for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = symbol.sub(lambda m: names[m[1]], dim.dim_param)
    low, high = size_range
    for key, value in ((MIN_SIDE, low), (MAX_SIDE, high), ('mmtransnext.traced_size', f'{size[0]}x{size[1]}'),
                       ('mmtransnext.input', f'image: (batch >= 1, 3, height, width), height and width from {low} to '
                        f'{high} pixels')):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, out_file)


def other_size(size, size_range):
    """A size in the range with odd sides (so not multiples of 32), other than ``size``: about 5/4 x its height
    and 3/4 x its width (the other way where that leaves the range)."""
    low, high = size_range

    def side(s, factors):
        for f in factors:
            candidate = int(s * f) | 1
            if low <= candidate <= high and candidate != s:
                return candidate
        return low | 1 if (low | 1) <= high else low

    return side(size[0], (1.25, 0.75)), side(size[1], (0.75, 1.25))


def check_in_onnxruntime(out_file, image, expected):
    """Largest |ONNX Runtime - PyTorch| over each output's largest magnitude (the file loaded by load_onnx.py, which
    checks a --dynamic file's range)."""
    model = load_model(out_file)
    got = model(image.numpy())
    if [g.shape for g in got] != [tuple(e.shape) for e in expected]:
        return float('inf'), model.session  # not broadcast into a difference: a wrong shape fails
    return max(float(np.abs(g - e.numpy()).max() / max(np.abs(e.numpy()).max(), 1e-12))
               for g, e in zip(got, expected)), model.session


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument('--out', required=True, help='.onnx file to write')
    parser.add_argument('--shape',
                        nargs=2,
                        type=int,
                        action='append',
                        metavar=('H', 'W'),
                        help='input size; repeat for one file per size (with --dynamic: the first is traced, all are '
                        'checked; default: the backbone\'s img_size, else 512 x 512)')
    parser.add_argument('--backbone', action='store_true', help='export the backbone only (any config)')
    parser.add_argument('--custom-attention',
                        action='store_true',
                        help='attention as mmtransnext-domain nodes (needs the built op; not runnable in ONNX Runtime)')
    parser.add_argument('--dynamic',
                        action='store_true',
                        help='one file for every batch and every height / width from --min-size to --max-size')
    parser.add_argument('--min-size',
                        type=int,
                        help='with --dynamic: smallest height / width (default: the smallest the traced program takes, '
                        '61 for TransNeXt)')
    parser.add_argument('--max-size',
                        type=int,
                        default=DEFAULT_MAX_SIZE,
                        help=f'with --dynamic: largest height / width (default: {DEFAULT_MAX_SIZE})')
    parser.add_argument('--benchmark',
                        type=int,
                        default=0,
                        metavar='N',
                        help='also time N runs of ONNX Runtime and of PyTorch (median; with --dynamic also of a '
                        'per-size file of the traced size)')
    return parse_model_arguments(parser)


def dynamic_range(args, backbone, shapes):
    """(min, max) height / width of a --dynamic file; exits where the range or a --shape is not possible."""
    smallest = smallest_exported_side(backbone) if isinstance(backbone, TransNeXt) else 1
    low, high = args.min_size or smallest, args.max_size
    if low < smallest:
        sys.exit(f'--min-size {low}: a file for a range of sizes takes at least {smallest} pixels a side (every stage '
                 'keeps a pooled grid of at least 2 x 2); export smaller sizes one file per size (without --dynamic)')
    if low > high:
        sys.exit(f'--min-size {low} is above --max-size {high}')
    for h, w in shapes:
        if not (low <= h <= high and low <= w <= high):
            sys.exit(f'--shape {h} {w} is outside --min-size {low} / --max-size {high}')
    return low, high


def main():
    args = parse_args()
    if args.dynamic and args.custom_attention:
        sys.exit(DYNAMIC_CUSTOM_REFUSED)
    if args.custom_attention:
        from mmtransnext.ops import ext_available
        if not ext_available('cpu'):
            sys.exit('--custom-attention exports the op path, and mmtransnext._ext is not built here '
                     '(pip install -e . builds it)')

    cfg = read_config(args.config, args.cfg_options)
    if not args.backbone and whole_model_kind(cfg) is None:
        refuse_whole_model(cfg, args.config)
    is_transnext = cfg.model.backbone.get('type') == 'TransNeXt'
    configured_impl = cfg.model.backbone.get('attn_impl', 'auto')
    options = dict(attn_impl='ext' if args.custom_attention else 'pytorch') if is_transnext else None
    model, cfg = build_model(args.config, args.checkpoint, backbone_options=options, cfg_options=args.cfg_options)
    module, output_names = exported_part(model, cfg, args.config, args.backbone)
    side = cfg.model.backbone.get('img_size', 512) if is_transnext else 512
    shapes = [tuple(s) for s in args.shape] if args.shape else [(side, side)]
    if isinstance(model.backbone, TransNeXt):
        for h, w in shapes:
            if min(h, w) < model.backbone.min_input_size:
                sys.exit(
                    f'--shape {h} {w}: this TransNeXt needs at least {model.backbone.min_input_size} pixels a side')

    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    stem, ext = osp.splitext(args.out)
    generator = torch.Generator().manual_seed(0)
    if args.dynamic:
        size_range = dynamic_range(args, model.backbone, shapes)
        export_range(module, shapes[0], size_range, args.out, output_names)
        print(f'{args.out}: one file for any batch and every height / width from {size_range[0]} to {size_range[1]} '
              f'pixels (traced at {shapes[0][0]} x {shapes[0][1]}; metadata_props {MIN_SIDE} / {MAX_SIDE}). ONNX '
              'Runtime does not check the range: tools/deployment/load_onnx.py does')
        checks = [(args.out, torch.randn(1, 3, *s, generator=generator)) for s in shapes]
        checks.append((args.out, torch.randn(2, 3, *other_size(shapes[0], size_range), generator=generator)))
    else:
        checks = []
        for h, w in shapes:
            out_file = args.out if len(shapes) == 1 else f'{stem}_{h}x{w}{ext or ".onnx"}'
            image = torch.randn(1, 3, h, w, generator=generator)
            checks.append((out_file, image))
            expected = export_one(module, image, out_file, output_names, args.custom_attention)
            if args.custom_attention:
                import onnx
                onnx.checker.check_model(out_file)
                nodes = [n.op_type for n in onnx.load(out_file).graph.node if n.domain == 'mmtransnext']
                print(f'{out_file}: {h} x {w}, {len(nodes)} mmtransnext nodes ({", ".join(sorted(set(nodes)))}); '
                      'onnx.checker passed; ONNX Runtime has no kernels for them, so outputs are not compared')
        if args.custom_attention:
            return

    failed = False
    for out_file, image in checks:
        batch, _, h, w = image.shape
        with torch.no_grad():
            expected = module(image)
        expected = expected if isinstance(expected, (tuple, list)) else [expected]
        difference, session = check_in_onnxruntime(out_file, image, expected)
        verdict = 'ok' if difference <= TOLERANCE else f'FAILED (tolerance {TOLERANCE:g})'
        failed |= difference > TOLERANCE
        print(f'{out_file}: {h} x {w} (batch {batch}), ONNX Runtime vs PyTorch: max abs difference / output scale = '
              f'{difference:.2e} {verdict}')
        if args.benchmark and batch == 1:
            benchmark(args, cfg, configured_impl, module, image, session, stem, ext, output_names)
    if failed:
        sys.exit(1)


def benchmark(args, cfg, configured_impl, module, image, session, stem, ext, output_names):
    """Median times of ONNX Runtime (the dynamic file and a per-size file of this size, with --dynamic) and PyTorch
    (the config's attn_impl and the reference path) on ``image``, as a markdown table."""
    import onnxruntime
    h, w = image.shape[-2:]
    feed = {'image': image.numpy()}
    if args.dynamic:
        per_size = f'{stem}_{h}x{w}{ext or ".onnx"}'
        export_one(module, image, per_size, output_names, False)
        fixed = onnxruntime.InferenceSession(per_size, providers=['CPUExecutionProvider'])
        times = dict(
            zip(('onnxruntime', 'per_size'),
                median_seconds_interleaved([lambda: session.run(None, feed), lambda: fixed.run(None, feed)],
                                           args.benchmark)))
    else:
        times = dict(onnxruntime=median_seconds(lambda: session.run(None, feed), args.benchmark))
    # the config's own attn_impl (the op where built)
    fast, _ = build_model(args.config, args.checkpoint, cfg_options=args.cfg_options)
    fast = exported_part(fast, cfg, args.config, args.backbone)[0]
    with torch.no_grad():
        times['pytorch_reference'] = median_seconds(lambda: module(image), args.benchmark)
        times['pytorch'] = median_seconds(lambda: fast(image), args.benchmark)
    if args.dynamic:
        print(f'| input | ONNX Runtime, dynamic file (s) | ONNX Runtime, {h} x {w} file (s) | dynamic / per-size | '
              f'PyTorch, attn_impl={configured_impl!r} (s) | PyTorch, reference path (s) |')
        print('|---|---|---|---|---|---|')
        print(f'| {h} x {w} | {times["onnxruntime"]:.3f} | {times["per_size"]:.3f} | '
              f'{times["onnxruntime"] / times["per_size"]:.2f}x | {times["pytorch"]:.3f} | '
              f'{times["pytorch_reference"]:.3f} |')
        print(f'(per-size file: {per_size})')
        return
    print(f'| input | ONNX Runtime (s) | PyTorch, attn_impl={configured_impl!r} '
          '(s) | PyTorch, reference path (s) | ONNX Runtime / PyTorch |')
    print('|---|---|---|---|---|')
    print(f'| {h} x {w} | {times["onnxruntime"]:.3f} | {times["pytorch"]:.3f} | '
          f'{times["pytorch_reference"]:.3f} | {times["onnxruntime"] / times["pytorch"]:.2f}x |')


if __name__ == '__main__':
    main()
