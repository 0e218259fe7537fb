"""Evaluate a checkpoint on a config's test set (COCO AP, mIoU or top-1, per the config's metric).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--tta] [--cfg-options k=v ...]
"""
import argparse
import json
import os
import sys
import warnings

# mmengine imports pkg_resources (kept on purpose: it resolves mmdet:: / mmseg:: base configs)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.dist import is_main_process  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmtransnext  # noqa: E402,F401  (registers TransNeXt, fixes mmengine checkpoint loading)
from script_utils.config import add_runner_args, enable_visualization, load_config, parse_runner_args  # noqa: E402
from script_utils.dist import destroy_distributed, prepare_cpu_distributed  # noqa: E402
from script_utils.preflight import format_problems, missing_inputs  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Test a checkpoint with mmengine\'s Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='draw predictions into this folder (under the work dir for mmseg)')
    parser.add_argument('--tta',
                        action='store_true',
                        help='test-time augmentation (the config\'s tta_model / '
                        'tta_pipeline)')
    add_runner_args(parser, 'logs and metrics')
    return parse_runner_args(parser)


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            sys.exit(f'{args.config} defines no tta_model / tta_pipeline, so --tta cannot be used with it')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    problems = missing_inputs(cfg, splits=('test', ), check_pretrained=False)
    if not os.path.isfile(args.checkpoint) and '://' not in args.checkpoint:
        problems.append(f'checkpoint {args.checkpoint} not found')
    if problems:
        sys.exit(format_problems(args.config, problems))

    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    # Strict: a checkpoint whose keys do not fit evaluates a half-random model; refuse it.
    try:
        runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
    except RuntimeError as error:
        sys.exit(f'checkpoint {args.checkpoint} does not fit the model of {args.config}:\n{error}\n'
                 'A released TransNeXt checkpoint in another layout can be converted with '
                 f'tools/model_converters/convert_official.py {args.checkpoint} CONVERTED.pth --config {args.config}')
    metrics = {k: float(v) for k, v in runner.test().items()}
    print('metrics: ' + json.dumps(metrics))
    if is_main_process():  # for the next tool: the toy jobs and the tests read this file, not the printout
        path = os.path.join(runner.work_dir, 'metrics.json')
        with open(path + '.tmp', 'w') as f:
            json.dump(metrics, f, indent=1)
        os.replace(path + '.tmp', path)
        print(f'wrote {path}')


if __name__ == '__main__':
    try:
        main()
    finally:
        destroy_distributed()
