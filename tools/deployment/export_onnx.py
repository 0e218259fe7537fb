"""Export a classifier, a UperNet segmentor or any config's backbone to ONNX, and check the file in
ONNX Runtime against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W ...] [--backbone]
        [--custom-attention] [--dynamic] [--benchmark N]

What is exported: an mmpretrain classifier (image -> class logits), an mmseg UperNet segmentor's
``encode_decode`` (image -> per-pixel logits at the input size, no test-time augmentation), or with
``--backbone`` the backbone of any config (image -> one feature map per output stage). Detectors are
refused: their RoI ops and NMS belong to mmdeploy, which can take our backbone file's graph.

The exporter is torch.onnx's torch.export-based one (``dynamo=True``, onnxscript). The attention is
written out in standard ONNX operators (the reference arithmetic, ``attn_impl='pytorch'``), or with
``--custom-attention`` as nodes of the custom domain ``mmtransnext`` (``mmtransnext.ops.onnx_export``)
for runtimes that implement the fused op; ONNX Runtime cannot run those, so that file is only checked
by ``onnx.checker``.

One file serves one input size: TransNeXt's position-bias geometry (the bias tables' bilinear taps, the
pooled grid, the window masks) is computed in Python from the feature map's size, so it enters the graph
as constants of the export size. ``--dynamic`` is refused with that reason; several ``--shape`` give one
file per size (FILE's name + _HxW). After export, ONNX Runtime (CPU) runs each file on a random input;
the tool prints the largest difference from PyTorch relative to the output's scale and fails above 1e-4.
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from mmtransnext.models import TransNeXt  # noqa: E402
from script_utils.model_input import add_model_arguments, build_model, parse_model_arguments, read_config  # noqa: E402

TOLERANCE = 1e-4  # of the output's largest magnitude

DYNAMIC_REFUSED = ("--dynamic: one TransNeXt graph cannot serve every input size. The position-bias geometry "
                   "(the bias tables' bilinear taps, the pooled grid, the local-window masks) is computed in "
                   "Python from the feature map's size, so an exported graph holds it as constants of one size. "
                   "Give --shape once per input size you deploy: the tool writes one file per size.")


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


def exported_part(model, cfg, config, backbone_only):
    """(module to export, output names)."""
    if backbone_only:
        outputs = len(getattr(model.backbone, 'out_indices', ())) or None
        return model.backbone, [f'stage{i}' for i in range(outputs)] if outputs else None
    scope, kind = cfg.get('default_scope'), cfg.model.type
    if scope == 'mmpretrain' and hasattr(model, 'extract_feat'):
        return ClassifierLogits(model), ['logits']
    decode_head = cfg.model.get('decode_head', {}).get('type')
    if scope == 'mmseg' and kind == 'EncoderDecoder' and decode_head == 'UPerHead':
        return SegmentorLogits(model), ['seg_logits']
    what = f'{kind} with {decode_head}' if decode_head else kind
    sys.exit(f'{config}: a {what} is not exported whole. export_onnx.py exports mmpretrain classifiers, UperNet '
             'segmentors (EncoderDecoder + UPerHead) and, with --backbone, the backbone of any config. A detector '
             "(Mask R-CNN, DINO) needs RoI ops, NMS or deformable attention that mmdeploy provides: export its "
             'backbone with --backbone and deploy the rest with mmdeploy.')


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


def check_in_onnxruntime(out_file, image, expected):
    """Largest |ONNX Runtime - PyTorch| over each output's largest magnitude."""
    import onnxruntime
    session = onnxruntime.InferenceSession(out_file, providers=['CPUExecutionProvider'])
    got = session.run(None, {'image': image.numpy()})
    return max(float(np.abs(g - e.numpy()).max() / max(np.abs(e.numpy()).max(), 1e-12))
               for g, e in zip(got, expected)), session


def median_seconds(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument('--out', required=True, help='.onnx file to write')
    parser.add_argument('--shape',
                        nargs=2,
                        type=int,
                        action='append',
                        metavar=('H', 'W'),
                        help='input size; repeat for one file per size (default: the backbone\'s img_size, '
                        'else 512 x 512)')
    parser.add_argument('--backbone', action='store_true', help='export the backbone only (any config)')
    parser.add_argument('--custom-attention',
                        action='store_true',
                        help='attention as mmtransnext-domain nodes (needs the built op; not runnable in ONNX Runtime)')
    parser.add_argument('--dynamic', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--benchmark',
                        type=int,
                        default=0,
                        metavar='N',
                        help='also time N runs of ONNX Runtime and of PyTorch (median)')
    args = parse_model_arguments(parser)
    if args.dynamic:
        sys.exit(DYNAMIC_REFUSED)
    if args.custom_attention:
        from mmtransnext.ops import ext_available
        if not ext_available('cpu'):
            sys.exit('--custom-attention exports the op path, and mmtransnext._ext is not built here '
                     '(pip install -e . builds it)')

    cfg = read_config(args.config, args.cfg_options)
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
    failed = False
    for h, w in shapes:
        out_file = args.out if len(shapes) == 1 else f'{stem}_{h}x{w}{ext or ".onnx"}'
        image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        expected = export_one(module, image, out_file, output_names, args.custom_attention)
        if args.custom_attention:
            import onnx
            onnx.checker.check_model(out_file)
            nodes = [n.op_type for n in onnx.load(out_file).graph.node if n.domain == 'mmtransnext']
            print(f'{out_file}: {h} x {w}, {len(nodes)} mmtransnext nodes ({", ".join(sorted(set(nodes)))}); '
                  'onnx.checker passed; ONNX Runtime has no kernels for them, so outputs are not compared')
            continue
        difference, session = check_in_onnxruntime(out_file, image, expected)
        verdict = 'ok' if difference <= TOLERANCE else f'FAILED (tolerance {TOLERANCE:g})'
        failed |= difference > TOLERANCE
        print(f'{out_file}: {h} x {w}, ONNX Runtime vs PyTorch: max abs difference / output scale = '
              f'{difference:.2e} {verdict}')
        if args.benchmark:
            feed = {'image': image.numpy()}
            # the config's own attn_impl (the op where built)
            fast, _ = build_model(args.config, args.checkpoint, cfg_options=args.cfg_options)
            fast = exported_part(fast, cfg, args.config, args.backbone)[0]
            with torch.no_grad():
                times = dict(onnxruntime=median_seconds(lambda: session.run(None, feed), args.benchmark),
                             pytorch_reference=median_seconds(lambda: module(image), args.benchmark),
                             pytorch=median_seconds(lambda: fast(image), args.benchmark))
            print(f'| input | ONNX Runtime (s) | PyTorch, attn_impl={configured_impl!r} '
                  '(s) | PyTorch, reference path (s) | ONNX Runtime / PyTorch |')
            print('|---|---|---|---|---|')
            print(f'| {h} x {w} | {times["onnxruntime"]:.3f} | {times["pytorch"]:.3f} | '
                  f'{times["pytorch_reference"]:.3f} | {times["onnxruntime"] / times["pytorch"]:.2f}x |')
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
