"""attn_impl='auto' measured and verified on the device in use (mmtransnext.ops.autotune)."""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.ops import autotune, decision_cache, ext_loader
from .conftest import needs_ext
from .helpers import ROOT

pytestmark = needs_ext
SIZE = 64


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache directory and nothing decided in this process."""
    monkeypatch.setenv('MMTRANSNEXT_CACHE_DIR', str(tmp_path))
    monkeypatch.setenv('MMTRANSNEXT_AUTOTUNE', '1')
    monkeypatch.delenv('MMTRANSNEXT_AUTOTUNE_INTERPRETED', raising=False)
    autotune.forget()
    yield tmp_path
    autotune.forget()


@pytest.fixture
def logged():
    """The lines autotune logs (through mmengine's current logger, as a training run shows them)."""
    from mmengine.logging import MMLogger
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(f'{record.levelname} {record.getMessage()}')
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _losses(attn_impl, steps=2):
    torch.manual_seed(0)
    model = TransNeXt(arch='micro', img_size=SIZE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    for module in model.modules():
        if hasattr(module, 'attn_impl'):
            module.attn_impl = attn_impl
    losses = []
    for _ in range(steps):
        loss = sum(o.square().mean() for o in model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _decided():
    return {key[0]: d for key, d in autotune._settled.items()}


def test_auto_measures_and_verifies_ext_against_pytorch(fresh):
    _losses('auto', steps=1)
    decisions = _decided()
    assert set(decisions) == {'local_attention', 'pooled_attention'}
    for decision in decisions.values():
        assert decision['candidates'] == ['ext', 'pytorch']
        ext = decision['results']['ext']
        assert ext['status'] == 'verified' and ext['error'] <= ext['bound'] < 1e-5
        assert ext['ms'] > 0 and ext['peak_mib'] > 0 and decision['results']['pytorch']['ms'] > 0
    written = json.loads((fresh / 'backends.json').read_text())
    (section, ) = written['devices'].values()
    assert section['software'] == decision_cache.software_versions() and len(section['decisions']) == 3


class _Planted:
    """The real extension with one planted fault in the pooled op; counts the calls of the faulty kernel."""

    def __init__(self, real, fault):
        self.real, self.fault, self.calls = real, fault, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def pooled_attention_forward(self, *args):
        self.calls += self.fault != 'gradient'
        if self.fault == 'raises':
            raise RuntimeError('CUDA error: too many resources requested for launch')
        out, local_weights, lse = self.real.pooled_attention_forward(*args)
        return (out + 1e-3 if self.fault == 'output' else out), local_weights, lse

    def pooled_attention_backward(self, *args):
        self.calls += self.fault == 'gradient'
        grads = list(self.real.pooled_attention_backward(*args))
        if self.fault == 'gradient':
            grads[1] = torch.zeros_like(grads[1])  # the keys' gradient dropped
        return tuple(grads)


@pytest.mark.parametrize('fault, status, message', [('output', 'wrong', 'wrong by'), ('gradient', 'wrong', 'grad key'),
                                                    ('raises', 'raised', 'too many resources')])
def test_a_faulty_backend_is_rejected_and_never_runs_again(fresh, logged, fault, status, message):
    reference = _losses('pytorch')
    planted = _Planted(ext_loader.ext, fault)
    with ext_loader.replaced(planted):
        losses = _losses('auto', steps=1)
        calls = planted.calls
        losses += _losses('auto')[1:]  # a second model, and inference: nothing runs the faulty kernel again
        with torch.no_grad():
            TransNeXt(arch='micro', img_size=SIZE)(torch.randn(1, 3, SIZE, SIZE))
    assert planted.calls == calls
    pooled = [d for key, d in autotune._settled.items() if key[0] == 'pooled_attention']
    assert pooled and all(d['backend'] == 'pytorch' for d in pooled)
    first = pooled[0]['results']['ext']
    assert first['status'] == status and message in first['reason']
    assert any(d['results']['ext']['status'] == 'rejected before' for d in pooled[1:])
    warnings = [line for line in logged if line.startswith('WARNING')]
    assert any('ext backend of pooled_attention' in w and message in w and 'tools/gpu_check.sh' in w for w in warnings)
    # the local ops keep the (sound) extension; the model trains with the reference's numbers
    assert all(d['backend'] == 'ext' for key, d in autotune._settled.items() if key[0] == 'local_attention')
    torch.testing.assert_close(losses, reference, rtol=2e-5, atol=0)


def test_a_second_process_reads_the_cache_and_measures_nothing(fresh):
    _losses('auto', steps=1)
    first = {key[0] + key[4]: d['backend'] for key, d in autotune._settled.items()}
    code = ('import torch; from mmtransnext.models import TransNeXt; from mmtransnext.ops import autotune; '
            f'm = TransNeXt(arch="micro", img_size={SIZE}); '
            f'sum(o.sum() for o in m(torch.randn(2, 3, {SIZE}, {SIZE}))).backward(); '
            'print("MEASURED", len(autotune.measurements)); '
            'print("CHOSEN", sorted((k[0] + k[4], d["backend"]) for k, d in autotune._settled.items()))')
    run = subprocess.run([sys.executable, '-c', code],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=300,
                         env={
                             **os.environ, 'MMTRANSNEXT_CACHE_DIR': str(fresh)
                         })
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'MEASURED 0' in run.stdout and 'from the cache' in run.stdout + run.stderr
    assert f'CHOSEN {sorted(first.items())}' in run.stdout


@pytest.mark.parametrize('content, warning', [('{"devices": ', 'does not parse'),
                                              ('{"format": "something else", "devices": {}}', 'not an mmtransnext')])
def test_a_corrupt_or_foreign_cache_is_survived(fresh, logged, content, warning):
    (fresh / 'backends.json').write_text(content)
    _losses('auto', steps=1)
    assert any(warning in line for line in logged)
    assert len(autotune.measurements) == 3
    assert json.loads((fresh / 'backends.json').read_text())['format'] == decision_cache.FORMAT


def test_other_versions_or_a_backend_this_build_lacks_measure_again(fresh, monkeypatch):
    _losses('auto', steps=1)
    autotune.forget()
    versions = dict(decision_cache.software_versions(), torch='0.0.1')
    monkeypatch.setattr(decision_cache, 'software_versions', lambda: versions)
    _losses('auto', steps=1)
    assert len(autotune.measurements) == 3  # a new torch: everything again
    # an entry chosen among backends this build does not have (triton measured elsewhere)
    data = json.loads((fresh / 'backends.json').read_text())
    for section in data['devices'].values():
        for decision in section['decisions'].values():
            decision.update(backend='triton', candidates=['ext', 'pytorch', 'triton'])
    (fresh / 'backends.json').write_text(json.dumps(data))
    autotune.forget()
    _losses('auto', steps=1)
    assert len(autotune.measurements) == 3 and all(d['backend'] != 'triton' for d in _decided().values())


def test_autotune_off_reproduces_the_static_table(fresh, monkeypatch):
    monkeypatch.setenv('MMTRANSNEXT_AUTOTUNE', '0')
    assert _losses('auto', steps=1) == _losses('ext', steps=1)
    assert autotune.measurements == [] and not (fresh / 'backends.json').exists()
    from mmtransnext.ops import pooled_attention_backend
    q = torch.randn(1, 2, 16, 8)
    choice = pooled_attention_backend(q, q, 9, (2, 2), (4, 4), 1, 'auto')
    assert choice.backend == 'ext' and 'static table: MMTRANSNEXT_AUTOTUNE=0' in choice.reason
    monkeypatch.setenv('MMTRANSNEXT_AUTOTUNE', 'yes')
    with pytest.raises(ValueError, match="MMTRANSNEXT_AUTOTUNE='yes': it must be 1 .* or 0"):
        TransNeXt(arch='micro')


def test_explicit_backends_and_meta_tensors_measure_nothing(fresh):
    _losses('ext', steps=1)
    _losses('pytorch', steps=1)
    from mmtransnext.ops import backend, pooled_attention_backend
    q = torch.empty(1, 2, 16, 8, device='meta')
    with backend.planning_for('cuda'):
        choice = pooled_attention_backend(q, q, 9, (2, 2), (4, 4), 1, 'auto')
    assert 'static table: nothing measured for cuda' in choice.reason
    assert autotune.measurements == []


def test_an_unwritable_cache_keeps_the_decisions_in_memory(fresh, monkeypatch, logged):
    blocker = fresh / 'a-file'
    blocker.write_text('')
    monkeypatch.setenv('MMTRANSNEXT_CACHE_DIR', str(blocker / 'cache'))
    _losses('auto')
    assert sum('cannot write the backend cache' in line for line in logged) == 1 and len(autotune.measurements) == 3


def test_a_wrong_bound_is_what_the_dtype_allows():
    assert autotune.tolerance('float32') == pytest.approx(64 * 2**-23)
    assert autotune.tolerance('autocast-bfloat16') == pytest.approx(8 * 2**-7)
    # a sum longer than the calibrated one rounds more: the bound grows with the square root of its length
    assert autotune.tolerance('float32', 1000) == autotune.tolerance('float32')
    assert autotune.tolerance('float32', 4 * 1024) == pytest.approx(2 * 64 * 2**-23)
    assert autotune.tolerance('autocast-bfloat16', 4 * 1024) == autotune.tolerance('autocast-bfloat16')
    got = {'out': torch.tensor([[1.0, 2.0], [float('-inf'), 4.0]])}
    want = {'out': torch.tensor([[1.0, 2.0], [float('-inf'), 4.004]]), 'grad key': torch.ones(2)}
    error, where = autotune.largest_error(dict(got, **{'grad key': torch.ones(2)}), want)
    assert error == pytest.approx(0.001, rel=1e-3) and where.startswith('out[1, 1]')
    assert autotune.largest_error(got, want)[1] == 'grad key: missing (the backend returned no gradient)'
    assert autotune.select({'a': {'ms': 1.0, 'peak_mib': 30.}, 'b': {'ms': 1.05, 'peak_mib': 10.}})[0] == 'b'
    assert autotune.select({'a': {'ms': 0.5, 'peak_mib': 30.}, 'b': {'ms': 1.0, 'peak_mib': 10.}})[0] == 'a'


def test_two_gloo_ranks_agree(tmp_path):
    env = {**os.environ, 'MMTRANSNEXT_AUTOTUNE': '1', 'OMP_NUM_THREADS': '1'}
    run = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29617',
        str(ROOT / 'tests' / 'autotune_ranks.py'),
        str(tmp_path)
    ],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=600,
                         env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rank0, rank1 = json.loads((tmp_path / 'reports.json').read_text())
    assert rank0['measured'] == 3 and rank1['measured'] == 0
    assert rank0['decisions'] == rank1['decisions'] and len(rank0['decisions']) == 3
