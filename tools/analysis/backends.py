"""What attn_impl='auto' decided on this machine, and why.

    python tools/analysis/backends.py            # the decisions cached for this machine's devices
    python tools/analysis/backends.py CONFIG [--device cuda] [--amp bfloat16] [--size H W] [--eval]
                                                 # measure them now for that config's backbone, then print them

With a config it builds the config's backbone (mmdet / mmseg / mmpretrain), forgets what was decided before for this
device and runs one training step (or an inference with ``--eval``) of a synthetic image of the config's size: each
attention op's backends are verified against the reference, timed and their memory taken, as at the first step of a
training run (``mmtransnext.ops.autotune``); the cache (``MMTRANSNEXT_CACHE_DIR``, default ``~/.cache/mmtransnext``) is
rewritten with the new decisions. The table: one row per decision, each candidate's time, memory, error or failure,
and the choice.
"""
import argparse
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmtransnext.ops import autotune, decision_cache  # noqa: E402


def print_table(device: torch.device) -> int:
    decisions = autotune.cached_decisions(device)
    print(f'## {autotune.device_name(device)}: {len(decisions)} decisions ({decision_cache.cache_path()})')
    for key, decision in sorted(decisions.items()):
        print(f'- {key} [probe {decision["probe"]}, {decision["seconds"]:.2f} s]: {autotune.describe(decision)}')
    return len(decisions)


def measure(config: str, device: torch.device, amp, size, training: bool) -> None:
    from mmtransnext.models import TransNeXt
    from script_utils.model_input import read_config, transnext_settings
    backbone_cfg = dict(transnext_settings(read_config(config), config), init_cfg=None, attn_impl='auto')
    backbone = TransNeXt(**backbone_cfg).to(device)
    backbone.train(training)
    height, width = size or (backbone_cfg.get('img_size', 224), ) * 2
    autotune.forget()
    x = torch.randn(1, 3, height, width, device=device)
    began = time.perf_counter()
    context = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp else torch.autocast(device.type,
                                                                                                enabled=False)
    with context, torch.set_grad_enabled(training):
        out = backbone(x)
        if training:
            sum(o.float().sum() for o in out).backward()
    seconds = time.perf_counter() - began
    measured = sum(d['seconds'] for _, d in autotune.measurements)
    print(f'{config}: {"training step" if training else "inference"} at {height} x {width} took {seconds:.2f} s, '
          f'{measured:.2f} s of it measuring {len(autotune.measurements)} decisions')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='measure the decisions of this config now')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', choices=('bfloat16', 'float16'), help='under autocast in this type')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help="default: the backbone's img_size")
    parser.add_argument('--eval', action='store_true', help='inference decisions instead of training ones')
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.config:
        if not osp.isfile(args.config):
            parser.error(f'config {args.config} not found')
        measure(args.config, device, args.amp, args.size, not args.eval)
    print_table(device)


if __name__ == '__main__':
    main()
