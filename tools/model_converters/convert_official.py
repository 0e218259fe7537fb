"""Convert a released TransNeXt checkpoint into one that tools/test.py loads with no missing keys.

    python tools/model_converters/convert_official.py SRC DST [--config CONFIG]

SRC: the authors' ImageNet classifier, or their Mask R-CNN / DINO / UperNet / Mask2Former file (plain
state dict or wrapped in 'model' / 'state_dict'). With --config, the result is checked against the
model that config builds, and any missing or unexpected key is reported (exit status 1).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader

import mmtransnext  # noqa: F401
from mmtransnext.utils import convert_official_checkpoint

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.config import add_trust_checkpoint_argument, apply_trust_checkpoint  # noqa: E402


def check_against_config(state_dict, config_path):
    """Missing and unexpected keys of ``state_dict`` for the model ``config_path`` builds."""
    cfg = Config.fromfile(config_path)
    if cfg.model.get('backbone'):
        cfg.model.backbone.init_cfg = None  # only the keys matter; do not read pretrained weights
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        model = MODELS.build(cfg.model)
    own = set(model.state_dict())
    missing, unexpected = sorted(own - set(state_dict)), sorted(set(state_dict) - own)
    return missing, unexpected


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--config', help='check the converted keys against the model this config builds')
    add_trust_checkpoint_argument(parser)
    args = parser.parse_args()
    apply_trust_checkpoint(args)
    print(f'reading {args.src}')
    try:
        converted = convert_official_checkpoint(CheckpointLoader.load_checkpoint(args.src, map_location='cpu'))
    except ValueError as error:
        sys.exit(f'{args.src}: {error}')
    if args.config:
        missing, unexpected = check_against_config(converted['state_dict'], args.config)
        if missing or unexpected:
            sys.exit(f'{args.src} does not fit {args.config}: missing keys {missing}, unexpected keys {unexpected}')
        print(f'all {len(converted["state_dict"])} keys fit {args.config}')
    torch.save(converted, args.dst)
    print(f'wrote {args.dst} ({len(converted["state_dict"])} tensors)')


if __name__ == '__main__':
    main()
