"""The measuring tools README quotes: they run and print what they promise."""
import re

from mmtransnext.ops import ext_available
from .helpers import ROOT, run_tool


def test_benchmark_prints_one_row_per_implementation_with_ratios(tmp_path):
    rows = ['transnext_pytorch'] + (['transnext_ext'] if ext_available('cpu') else [])
    result = run_tool('tools/analysis/benchmark.py',
                      '--sizes',
                      '64x96',
                      '--repeats',
                      '1',
                      '--rows',
                      *rows,
                      '--profile',
                      tmp_path / 'profiles',
                      cwd=tmp_path)
    table = [line for line in result.stdout.splitlines() if line.startswith('| 64 x 96 |')]
    assert [line.split('|')[2].strip() for line in table] == rows
    assert table[0].rstrip().endswith('| 1.00x | 1.00x |')  # the PyTorch path is the baseline without mmdet rows
    assert all(re.search(r'\| \d+\.\d{2}x \| \d+\.\d{2}x \|$', line) for line in table)
    # each row's backends with their reasons, from mmtransnext.ops.backend
    assert '  transnext_pytorch: local_attention pytorch (attn_impl="pytorch");' in result.stdout
    if 'transnext_ext' in rows:
        assert '  transnext_ext: local_attention ext (attn_impl="ext"); pooled_attention ext' in result.stdout
    for row in rows:  # one training step's operators, by self CPU time here
        assert 'Self CPU' in (tmp_path / 'profiles' / f'profile_{row}_64x96_none.txt').read_text()


def test_benchmark_keeps_a_failed_row_in_the_table(tmp_path):
    """A row whose process fails (here Triton on the CPU without its interpreter) is a table row saying so."""
    result = run_tool('tools/analysis/benchmark.py',
                      '--sizes',
                      '64x96',
                      '--rows',
                      'transnext_triton',
                      cwd=tmp_path,
                      env=dict(TRITON_INTERPRET='0', CUDA_VISIBLE_DEVICES=''))
    assert '| 64 x 96 | transnext_triton | failed: exit status 1 |' in result.stdout.splitlines()
    assert 'Triton runs on CPU tensors only through its interpreter' in result.stderr


def test_memory_over_sizes_reports_the_bounded_cache(tmp_path):
    # 6 x 6 input shapes over 4 stages: far more stage geometries than the cache's bound of 32 pass through it
    result = run_tool('tools/analysis/memory_over_sizes.py',
                      '--iters',
                      '20',
                      '--sizes',
                      '6',
                      '--min-side',
                      '64',
                      '--step',
                      '8',
                      cwd=tmp_path)
    iteration, rss, cached = result.stdout.strip().splitlines()[-1].split()
    assert iteration == '20' and float(rss) > 0 and int(cached) == 32


def test_benchmark_flops_count_the_same_arithmetic_for_every_transnext_row(tmp_path):
    rows = ['transnext_pytorch'] + (['transnext_ext'] if ext_available('cpu') else [])
    result = run_tool('tools/analysis/benchmark.py',
                      '--sizes',
                      '64x96',
                      '--repeats',
                      '1',
                      '--rows',
                      *rows,
                      '--flops',
                      cwd=tmp_path)
    table = [line.split('|')[1:-1] for line in result.stdout.splitlines() if line.startswith('| 64 x 96 |')]
    assert len(table) == len(rows)
    for cells in table:
        train_s, gflop, rate = float(cells[3]), float(cells[7]), float(cells[8])
        assert gflop > 0 and abs(rate - 3 * gflop / train_s) <= 0.5 + 0.02 * rate  # both rounded
    assert len({cells[7] for cells in table}) == 1  # the op computes the PyTorch path's arithmetic


def test_geometry_cache_replays_dinos_multiscale_sizes(tmp_path):
    result = run_tool('tools/analysis/geometry_cache.py',
                      ROOT / 'configs/dino-5scale_transnext_tiny.py',
                      '--iters',
                      '40',
                      '--cache-sizes',
                      '8',
                      '1000',
                      cwd=tmp_path)
    head = result.stdout.splitlines()[0]
    distinct = int(re.search(r'(\d+) distinct input sizes', head)[1])
    assert 20 < distinct <= 40  # DINO's random resize and crop: almost every iteration a new size
    shares = dict(re.findall(r'^\| (\d+) \| ([\d.]+)% \|$', result.stdout, re.M))
    # a cache larger than every key rebuilds only where a new input size gives new stage sizes
    assert 50 < float(shares['1000']) <= 100 * distinct / 40
    assert float(shares['8']) >= float(shares['1000'])
    assert 'one rebuild of all stages' in result.stdout
