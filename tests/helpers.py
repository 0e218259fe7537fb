"""Running the project's tools as a user does: subprocesses of the venv's Python."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args, cwd, check=True, timeout=600, env=None):
    """Run ``python ROOT/<args[0]> args[1:]`` in ``cwd`` (``env``: variables to set or replace); returns the
    CompletedProcess."""
    cmd = [sys.executable, str(ROOT / args[0]), *map(str, args[1:])]
    result = subprocess.run(cmd,
                            cwd=cwd,
                            capture_output=True,
                            text=True,
                            timeout=timeout,
                            env=None if env is None else {
                                **os.environ,
                                **env
                            })
    if check and result.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-5000:]}')
    return result


def tool_metrics(work_dir):
    """The metrics tools/test.py wrote to ``work_dir``/metrics.json."""
    with open(Path(work_dir) / 'metrics.json') as f:
        return json.load(f)


def logged_scalars(work_dir):
    """What mmengine's logger wrote to ``work_dir``/<run>/vis_data/scalars.json: one dict per line, in order."""
    (scalars, ) = Path(work_dir).glob('*/vis_data/scalars.json')
    return [json.loads(line) for line in scalars.read_text().splitlines()]


def logged_losses(work_dir):
    """The training losses mmengine's logger wrote to ``work_dir``, in order."""
    return [record['loss'] for record in logged_scalars(work_dir) if 'loss' in record]


def validated_metrics(work_dir):
    """The metrics of the last validation a training run in ``work_dir`` logged (the lines without a learning rate):
    what tools/test.py would report for the checkpoint saved with them, without a second process evaluating it."""
    validations = [record for record in logged_scalars(work_dir) if 'lr' not in record]
    assert validations, f'{work_dir}: the training logged no validation (train_cfg.val_interval beyond max_iters?)'
    return validations[-1]


def make_toy_imagenet(cwd, per_class_train, per_class_val):
    """The generated ImageNet-layout toy set (3 classes) under ``cwd``/data/toy_imagenet."""
    run_tool('tools/data/make_toy_imagenet.py',
             '--out',
             'data/toy_imagenet',
             '--per-class-train',
             per_class_train,
             '--per-class-val',
             per_class_val,
             cwd=cwd)


def make_toy_coco(cwd, num_train=8, num_val=4):
    run_tool('tools/data/make_toy_coco.py',
             '--out',
             'data/toy_coco',
             '--num-train',
             num_train,
             '--num-val',
             num_val,
             cwd=cwd)
