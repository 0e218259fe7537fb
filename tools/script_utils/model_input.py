"""What the tools share: a backbone built from any mmdet / mmseg / mmpretrain config, with its checkpoint (or a
config's TransNeXt settings, to build it alone), and images prepared as that config's data preprocessor prepares
them (visualize_attention.py, visualize_erf.py)."""
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmtransnext  # noqa: E402,F401
from .images import read_image  # noqa: E402 (gray / RGBA / 16-bit images as 8-bit BGR)


def sample_photo() -> str:
    """A real photograph that ships with matplotlib (Grace Hopper, 512 x 600)."""
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


def add_model_arguments(parser):
    """How the model tools name a model: CONFIG, an optional CHECKPOINT, --cfg-options, --trust-checkpoint."""
    from mmengine.config import DictAction

    from .config import add_trust_checkpoint_argument
    parser.add_argument('config', help='a config file, or a packaged one such as mmdet::swin/...py')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: none, an untrained model)')
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help="override CONFIG's entries, e.g. model.backbone.is_extrapolation=True")
    add_trust_checkpoint_argument(parser)


def parse_model_arguments(parser):
    """``parser.parse_args()``, with --trust-checkpoint applied to this process."""
    from .config import apply_trust_checkpoint
    args = parser.parse_args()
    apply_trust_checkpoint(args)
    return args


def read_config(path: str, cfg_options=None) -> Config:
    """A config file, or a packaged one named as ``mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``, with
    ``--cfg-options`` merged."""
    if '::' in path:
        from mmengine.hub import get_config
        cfg = get_config(path)
    elif not osp.isfile(path):
        sys.exit(f'config {path} not found')
    else:
        cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def transnext_settings(cfg: Config, config: str) -> dict:
    """The keyword arguments of ``cfg``'s TransNeXt (its model's ``backbone``, or the model itself) without ``type``,
    to build the backbone alone; exits naming ``config`` where that is not a TransNeXt."""
    settings = dict(cfg.model['backbone'] if 'backbone' in cfg.model else cfg.model)
    if settings.pop('type', 'TransNeXt').split('.')[-1] != 'TransNeXt':
        sys.exit(f'{config}: its backbone is not a TransNeXt')
    return settings


def build_model(config: str, checkpoint=None, device='cpu', backbone_options=None, cfg_options=None):
    """``config``'s whole model (``backbone_options`` merged into its backbone's settings) with
    ``checkpoint``'s weights, in eval mode, and the config.

    Without a checkpoint the weights are the constructors' random ones: a warning says so. Checkpoints
    load through mmengine with the safe unpickler (``--trust-checkpoint`` for a file that needs full
    unpickling)."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint
    cfg = read_config(config, cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        sys.exit(f'{config}: default_scope {scope!r} is not mmdet, mmseg or mmpretrain')
    init_default_scope(scope)
    if backbone_options:
        cfg.model.backbone.update(backbone_options)
    model = MODELS.build(cfg.model)
    if checkpoint is None:
        warnings.warn(f'{config}: no checkpoint given, so the model is untrained (random weights)',
                      UserWarning,
                      stacklevel=2)
    else:
        if not osp.isfile(checkpoint):
            sys.exit(f'checkpoint {checkpoint} not found')
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    model = model.to(device)
    model.eval()  # not chained: some models' train() returns None
    return model, cfg


def build_backbone(config: str, checkpoint=None, device='cpu', cfg_options=None):
    """The backbone of ``config``'s model (detector, segmentor or classifier), as :func:`build_model`
    builds it, and the mean / std / channel order its data preprocessor applies."""
    model, cfg = build_model(config, checkpoint, device, cfg_options=cfg_options)
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    mean = preprocessor.get('mean') or [0., 0., 0.]
    std = preprocessor.get('std') or [1., 1., 1.]
    to_rgb = preprocessor.get('bgr_to_rgb', preprocessor.get('to_rgb', False))
    return model.backbone, dict(mean=mean, std=std, to_rgb=bool(to_rgb))


def read_rgb(path: str, size=None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, resized to ``size`` (H, W) when given; exits naming the file it cannot read."""
    import mmcv
    if not osp.isfile(path):
        sys.exit(f'image {path} not found')
    image = read_image(path)
    if size is not None:
        image = mmcv.imresize(image, (size[1], size[0]))
    return np.ascontiguousarray(image[:, :, ::-1])


def to_input(rgb: np.ndarray, preprocess: dict, device='cpu') -> torch.Tensor:
    """(1, 3, H, W) float input from an RGB image, as the config's data preprocessor makes it."""
    image = rgb if preprocess['to_rgb'] else rgb[:, :, ::-1]  # the preprocessor sees BGR files
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    mean = torch.tensor(preprocess['mean']).view(3, 1, 1)
    std = torch.tensor(preprocess['std']).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).to(device)
