"""Run by tests/test_autotune.py under torchrun (two gloo processes on the CPU): each rank trains a step of a small
TransNeXt with attn_impl='auto' and reports what it chose and how much it measured; rank 1 has its own empty cache
directory, so only an agreement with rank 0 can give it a decision without measuring."""
import json
import os
import sys

import torch
import torch.distributed as dist

dist.init_process_group('gloo')
rank = dist.get_rank()
os.environ['MMTRANSNEXT_CACHE_DIR'] = os.path.join(sys.argv[1], f'rank{rank}')

from mmtransnext.models import TransNeXt  # noqa: E402
from mmtransnext.ops import autotune  # noqa: E402

torch.manual_seed(0)
model = TransNeXt(arch='micro', img_size=64)
sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
report = {
    'rank': rank,
    'measured': len(autotune.measurements),
    'decisions': {
        key[0] + ' ' + key[4]: decision['backend']
        for key, decision in autotune._settled.items()
    }
}
reports = [None, None]
dist.all_gather_object(reports, report)
if rank == 0:
    with open(os.path.join(sys.argv[1], 'reports.json'), 'w') as f:
        json.dump(reports, f)
dist.barrier()  # both ranks past every collective before either tears its group down
dist.destroy_process_group()
# A rank of this script aborted at exit, after the reports were written, in 3 of 75 runs on 2 cores (torch
# 2.14, gloo: "terminate called without an active exception", the message of a thread unwound by pthread_exit, as
# a thread that asks for the GIL while the interpreter finalises is). The ranks have reported: they leave without
# finalising the interpreter.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
