"""Parameters and FLOPs of any of our configs (classification, detection, segmentation).

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...]

FLOPs are counted by tracing one forward pass with mmengine's FlopAnalyzer, which counts every
matrix product (the attention's query-key and attention-value products included) as multiply-adds,
the convention of the paper's tables. Default input: the backbone's img_size for classifiers
(224, 256 or 384), 512 x 512 for segmentors, 1280 x 800 (W x H) for detectors. The backbone is traced
with attn_impl='pytorch': FLOPs belong to the model, and the tracer cannot see inside the C++ op.
"""
import argparse
import inspect
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.analysis import FlopAnalyzer, parameter_count  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import MODELS, DefaultScope  # noqa: E402

import mmtransnext  # noqa: E402,F401

DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmseg': (512, 512), 'mmdet': (800, 1280)}


class TensorForward(nn.Module):
    """The model's plain tensor forward (no losses, no post-processing) on one image batch."""

    def __init__(self, model, scope, shape):
        super().__init__()
        self.model = model
        self.data_samples = None
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            h, w = shape
            self.data_samples = [
                DetDataSample(metainfo=dict(img_shape=(h, w),
                                            pad_shape=(h, w),
                                            ori_shape=(h, w),
                                            batch_input_shape=(h, w),
                                            scale_factor=(1., 1.)))
            ]
        elif scope == 'mmseg':  # Mask2Former's head reads the image shapes in its tensor forward too
            from mmseg.structures import SegDataSample
            h, w = shape
            self.data_samples = [
                SegDataSample(
                    metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w)))
            ]

    def forward(self, inputs):
        head = getattr(self.model, 'decode_head', None)
        if head is not None and 'batch_data_samples' in inspect.signature(head.forward).parameters:
            # mmseg's tensor mode calls the head without data samples, which Mask2Former's head needs
            return head(self.model.extract_feat(inputs), self.data_samples)
        return self.model(inputs, self.data_samples, mode='tensor')


def count(config, shape=None, cfg_options=None):
    """(parameters, FLOPs, input shape) of the model ``config`` builds."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmengine')
    if shape is None and scope == 'mmpretrain':  # classifiers: their training resolution
        size = cfg.model.backbone.get('img_size', 224)
        shape = (size, size) if isinstance(size, int) else size
    shape = tuple(shape or DEFAULT_SHAPES.get(scope, (224, 224)))
    if cfg.model.get('backbone'):
        cfg.model.backbone.init_cfg = None
        if cfg.model.backbone.get('type') == 'TransNeXt':
            cfg.model.backbone.attn_impl = 'pytorch'  # count the matrix products the op computes too
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model).eval()
    wrapped = TensorForward(model, scope, shape)
    inputs = torch.randn(1, 3, *shape)
    with torch.no_grad():
        analyzer = FlopAnalyzer(wrapped, (inputs, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    return parameter_count(model)[''], flops, shape


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='input size (default per task)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    params, flops, shape = count(args.config, args.shape, args.cfg_options)
    print(f'{args.config}: input 3 x {shape[0]} x {shape[1]}, {params / 1e6:.2f}M parameters, '
          f'{flops / 1e9:.2f} GFLOPs')


if __name__ == '__main__':
    main()
