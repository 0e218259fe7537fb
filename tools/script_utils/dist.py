"""Several processes on machines without GPUs (torchrun + gloo).

mmengine 0.10's launcher calls ``torch.cuda.set_device`` and wraps the model in DDP with
``device_ids=[local_rank]``; both fail without a GPU. On such a machine we open the gloo process
group ourselves (mmengine then skips its own set-up) and let DDP keep the model on the CPU.
"""
import time

import torch
import torch.distributed as torch_dist


def prepare_cpu_distributed(cfg):
    """Adapt ``cfg`` (launched by torchrun on a machine without CUDA) to run with gloo on the CPU."""
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(f'without GPUs only --launcher pytorch (torchrun) is supported, got {cfg.launcher}')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.update(device_ids=None,
                   broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def destroy_distributed():
    """Close the process group, if one is open, and let its worker threads finish before the interpreter exits.

    A gloo worker thread frees the tensors of the last collective (the validation metrics' broadcast)
    after the caller has moved on, and it needs the GIL for that. When the main thread reaches interpreter
    finalisation first, the worker cannot take the GIL and the process aborts ("terminate called without
    an active exception", SIGABRT) after its work is done: 1 run in 4 of tools/dist_train.sh here.
    Sleeping releases the GIL to it; destroying the group alone does not wait for the threads.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        time.sleep(0.1)
