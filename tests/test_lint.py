"""The lint / format gate (tools/lint.sh: flake8, isort, yapf, clang-format) passes on the whole tree, and fails
on a file that breaks each rule (a self-test: a gate that passes everything proves nothing)."""
import subprocess

from .helpers import ROOT


def _lint(*paths):
    return subprocess.run(['bash', str(ROOT / 'tools/lint.sh'), *map(str, paths)],
                          capture_output=True,
                          text=True,
                          timeout=600)


def test_the_tree_passes_the_gate():
    result = _lint()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert 'Python and' in result.stdout and 'files clean' in result.stdout


def test_the_gate_fails_on_misformatted_files(tmp_path):
    (tmp_path / 'unused.py').write_text('import os\n')  # flake8: F401
    (tmp_path / 'order.py').write_text('import sys\nimport os\n\nprint(os, sys)\n')  # isort
    (tmp_path / 'layout.py').write_text('x = [1,\n        2]\nprint( x )\n')  # yapf (and flake8 E201 / E202)
    (tmp_path / 'kernel.cpp').write_text('int  f( int x ){return x;}\n')  # clang-format
    result = _lint(tmp_path)
    assert result.returncode != 0
    for tool in ('flake8 found', 'isort would reorder', 'yapf would reformat', 'clang-format would reformat'):
        assert f'lint: {tool}' in result.stderr, (tool, result.stderr[-3000:])
    assert 'unused.py' in result.stdout and 'kernel.cpp' in result.stderr
