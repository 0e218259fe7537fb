import os

# ----------------------------------------------------------------------------- OpenMP, before torch loads it
# Under pytest-xdist two workers share the cores, and the op tests take every core (all_cores below) while the other
# worker keeps one busy: an OpenMP thread that reaches a barrier first spins on a core the other worker needs, and the
# thread it waits for gets none. Waiting threads sleep instead (libgomp reads OMP_WAIT_POLICY once, when torch loads
# it). Measured with pytest -n 2 on 2 cores, the op, exactness, memory-lean and CUDA-emulation tests: 113 s -> 40 s.
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) > 1:
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# isort: split
import json
import logging
import tempfile
from pathlib import Path

import pytest
import torch

from mmtransnext.ops import ext_available

# ----------------------------------------------------------------------------- torch's structured trace
# pytest attaches its log-capturing handlers to every logger that does not propagate, torch's structured-trace logger
# too, and torch renders every graph and guard for that logger whenever it has a handler (TORCH_TRACE's cue): 10% of
# a dynamic-size compile's py-spy samples; two of test_pytorch2.py's compile tests took 121 s with it, 113 s without.
# A propagating logger gets no handler of pytest's, so torch skips the rendering.
logging.getLogger('torch.__trace').propagate = True

# ----------------------------------------------------------------------------- cores
# Under pytest-xdist (tools/run_tests.sh), each worker takes its share of the cores for torch, in this process
# and in the tools it starts as subprocesses (they inherit OMP_NUM_THREADS), so that two workers' torch jobs never
# compete for one core.
CORES = os.cpu_count() or 1
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
WORKER_CORES = max(1, CORES // WORKERS)
if WORKERS > 1:
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(WORKER_CORES)
    os.environ['MAX_JOBS'] = str(WORKER_CORES)  # compiles in tests
    torch.set_num_threads(WORKER_CORES)


@pytest.fixture
def all_cores():
    """Every core for torch during the test: the op's CPU kernels split their work over threads (at::parallel_for),
    and that split is part of what their tests check, whatever the worker's share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(CORES)
    yield
    torch.set_num_threads(threads)


SHARED = Path(os.environ.get('MMTRANSNEXT_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
FIXTURES = SHARED / 'fixtures' / 'transnext_official'
# the part of the reference set that ships in the repo (tools/data/make_compact_fixtures.py derives it)
COMPACT = Path(__file__).resolve().parent / 'data' / 'golden_compact.pt'


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get('MMTRANSNEXT_REQUIRE_FIXTURES') == '1':
            raise FileNotFoundError(f'{path} is missing (CI needs ../shared beside the repo)')
        pytest.skip(f'reference fixtures not found at {path} (set MMTRANSNEXT_SHARED)')
    return path


@pytest.fixture(scope='session')
def golden():
    """The authors' reference outputs: the full set from ../shared, else the compact copy in the repo."""
    full = FIXTURES / 'golden_mini.pt'
    if full.exists() or os.environ.get('MMTRANSNEXT_REQUIRE_FIXTURES') == '1':
        return torch.load(_require(full), weights_only=True)
    return torch.load(COMPACT, weights_only=True)


def golden_case(golden, name):
    """The reference case ``name``; a skip that says why where only the compact copy has been found."""
    for case in golden['cases']:
        if case['name'] == name:
            return case
    pytest.skip(f'reference case {name!r} is only in the full set ({FIXTURES}); the repo ships {COMPACT.name}')


def golden_part(golden, key):
    """A part of the reference set beyond the backbone's cases (the classifier)."""
    if key not in golden:
        pytest.skip(f'reference {key!r} is only in the full set ({FIXTURES}); the repo ships {COMPACT.name}')
    return golden[key]


@pytest.fixture(scope='session')
def official_keys():
    full = FIXTURES / 'keys.json'
    if not full.exists() and os.environ.get('MMTRANSNEXT_REQUIRE_FIXTURES') != '1':
        full = COMPACT.parent / 'keys.json'
    with open(_require(full)) as f:
        return json.load(f)


def golden_arch(golden):
    """The fixture's architecture as a TransNeXt arch dict."""
    a = golden['arch']
    return dict(embed_dims=a['embed_dims'],
                depths=a['depths'],
                num_heads=a['num_heads'],
                mlp_ratios=a['mlp_ratios'],
                sr_ratios=a['sr_ratios'],
                window_size=a['window_size'])


# ----------------------------------------------------------------------------- skip policy
# Every skip states its reason (setup.cfg: -ra prints them). MMTRANSNEXT_ALLOWED_SKIPS (CI: "needs a GPU") lists
# the reasons a skip may start with, separated by '|'; a skip for any other reason fails the run: a test that
# should have run here did not.
_ALLOWED = [p for p in os.environ.get('MMTRANSNEXT_ALLOWED_SKIPS', '').split('|') if p]
_UNEXPECTED_SKIPS = []

# the op's kernels (their reason strings are part of CI's skip policy: "needs a GPU" is allowed there)
needs_ext = pytest.mark.skipif(not ext_available('cpu'), reason='mmtransnext._ext is not built')
needs_cuda_ext = pytest.mark.skipif(not (torch.cuda.is_available() and ext_available('cuda')),
                                    reason='needs a GPU and the op built with CUDA')

# Triton's kernels: compiled on a GPU; without one, run on CPU tensors by Triton's interpreter, which reads
# TRITON_INTERPRET when a kernel is defined (mmtransnext defines its kernels on first use, after this line)
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# attn_impl='auto' measures each op once per run and keeps it in one cache for the whole run (every xdist worker and
# the tools the tests start), not in the user's ~/.cache; tests of the measuring itself use their own directories
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID') or str(os.getpid())
os.environ.setdefault('MMTRANSNEXT_CACHE_DIR', os.path.join(tempfile.gettempdir(), f'mmtransnext-tests-{_RUN}'))
TRITON_DEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def _triton_reason():
    from mmtransnext.ops.backend import triton_status
    ok, why = triton_status(TRITON_DEVICE.type)
    return None if ok else why


needs_triton = pytest.mark.skipif(_triton_reason() is not None, reason=f'needs Triton: {_triton_reason()}')

# the torch.library.custom_op registration (torch >= 2.4); older torch runs the autograd.Function fallback
needs_custom_op = pytest.mark.skipif(not hasattr(torch.library, 'custom_op'),
                                     reason=f'needs torch >= 2.4 (torch.library.custom_op): torch {torch.__version__} '
                                     'runs the ops through their autograd.Function fallback')


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple) and not hasattr(report, 'wasxfail'):
        reason = report.longrepr[2].removeprefix('Skipped: ')
        if not any(reason.startswith(prefix) for prefix in _ALLOWED):
            _UNEXPECTED_SKIPS.append(f'{report.nodeid}: {reason}')


def pytest_sessionfinish(session, exitstatus):
    if _ALLOWED and _UNEXPECTED_SKIPS and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _ALLOWED and _UNEXPECTED_SKIPS:
        terminalreporter.write_line(
            f'skips for other reasons than {" / ".join(map(repr, _ALLOWED))} are not '
            'allowed here (MMTRANSNEXT_ALLOWED_SKIPS):',
            red=True)
        for line in _UNEXPECTED_SKIPS:
            terminalreporter.write_line(f'  {line}', red=True)
