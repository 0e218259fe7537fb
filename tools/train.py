"""Train a detector, segmentor or classifier from a config (its default_scope picks the library).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
"""
import argparse
import sys
import warnings

# mmengine imports pkg_resources (kept on purpose: it resolves mmdet:: / mmseg:: base configs)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmtransnext  # noqa: E402,F401  (registers TransNeXt, fixes mmengine checkpoint loading)
from script_utils.config import add_runner_args, load_config, parse_runner_args  # noqa: E402
from script_utils.dist import destroy_distributed, prepare_cpu_distributed  # noqa: E402
from script_utils.preflight import format_problems, missing_inputs  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with mmengine\'s Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume',
                        nargs='?',
                        const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir when no CKPT given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr',
                        action='store_true',
                        help='scale the learning rate by actual batch / auto_scale_lr.base_batch_size')
    add_runner_args(parser, 'logs and checkpoints')
    return parse_runner_args(parser)


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            sys.exit(f'{args.config} has no auto_scale_lr.base_batch_size; --auto-scale-lr needs it')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    problems = missing_inputs(cfg, splits=('train', 'val'))
    if problems:
        sys.exit(format_problems(args.config, problems))

    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    try:
        main()
    finally:
        destroy_distributed()
