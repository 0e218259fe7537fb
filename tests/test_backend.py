"""mmtransnext.ops.backend: the one place that chooses each op's backend, and says why."""
import logging

import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.ops import backend_table, choose_backend, ext_available
from mmtransnext.ops.backend import OPS, triton_status
from .conftest import needs_ext


@needs_ext
def test_auto_on_the_cpu_takes_the_op_for_every_op():
    table = backend_table('auto', 'cpu', torch.float32, training=True)
    assert {op: c.backend for op, c in table.items()} == {op: 'ext' for op in OPS}
    assert table['pooled_attention'].reason == 'auto: first choice'


def test_auto_without_the_build_falls_back_and_says_why(monkeypatch):
    from mmtransnext.ops import ext_loader
    monkeypatch.setattr(ext_loader, 'ext', None)
    choice = choose_backend('pooled_attention', 'auto', 'cpu', torch.float32)
    assert choice.backend == 'pytorch' and 'mmtransnext._ext is not built' in choice.reason
    # the memory-lean autograd functions follow the attention: the reference path keeps autograd's own
    assert choose_backend('memory_lean', 'auto', 'cpu').backend == 'pytorch'
    with pytest.raises(RuntimeError, match='attn_impl="ext": the attention op mmtransnext._ext is not built'):
        choose_backend('local_attention', 'ext', 'cpu')


def test_gpu_static_table_takes_the_lean_op():
    """Where nothing is measured (no workload, tracing, MMTRANSNEXT_AUTOTUNE=0), a GPU trains and infers with the
    op where the CUDA kernels are built: its memory is counted at 1.23x Swin-T's against 3.26x (backend.AUTO_ORDER)."""
    for training in (True, False):
        choice = choose_backend('pooled_attention', 'auto', 'cuda', torch.float32, training=training)
        assert choice.backend == ('ext' if ext_available('cuda') else 'pytorch')
        if not ext_available('cuda'):
            assert 'without kernels for cuda' in choice.reason or 'not built' in choice.reason


@pytest.mark.skipif(not triton_status('cuda')[0] and 'not installed' in triton_status('cuda')[1],
                    reason='needs Triton: not installed')
def test_triton_named_runs_every_attention_op_and_leaves_the_cpu_fusions_to_pytorch():
    table = backend_table('triton', 'cuda', torch.bfloat16, training=True)
    assert table['local_attention'].backend == table['pooled_attention'].backend == 'triton'
    assert table['memory_lean'].backend == 'triton'
    assert table['gelu_gate'] == ('pytorch', 'gelu_gate has no triton kernels')
    assert table['position_bias_mlp'].backend == 'pytorch'


def test_each_decision_is_logged_once_with_its_reason(caplog, monkeypatch):
    from mmtransnext.ops import backend
    backend._decide_once.cache_clear()
    with caplog.at_level(logging.DEBUG, logger='mmtransnext.ops.backend'):
        for _ in range(3):
            choose_backend('local_attention', 'pytorch', 'cpu', torch.float32)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ['mmtransnext local_attention on cpu (torch.float32, eval): pytorch (attn_impl="pytorch")']


def test_unknown_names_fail_at_build_time():
    with pytest.raises(ValueError, match="attn_impl must be one of \\('auto', 'ext', 'triton', 'pytorch'\\)"):
        TransNeXt(arch='micro', attn_impl='cuda')
    with pytest.raises(ValueError, match='unknown op'):
        choose_backend('softmax', 'auto', 'cpu')
