"""Every config says only what its bases do not: no literal value set to what the bases already give."""
import ast
import os
import tempfile
from pathlib import Path

import pytest
from mmengine.config import Config

from .helpers import ROOT

CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)


def _literal_leaves(node, path):
    """(key path, value) of every literal leaf of a dict(...) / {...} expression; a _delete_ dict is skipped (its
    leaves replace the base's wholesale, so restating is needed there)."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict':
        items = [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
    elif isinstance(node, ast.Dict):
        items = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
    else:
        try:
            yield path, ast.literal_eval(node)
        except ValueError:
            pass
        return
    if any(key == '_delete_' for key, _ in items):
        return
    for key, value in items:
        yield from _literal_leaves(value, path + [key])


def restated_values(config: Path):
    """The 'a.b.c = value' settings of ``config`` that equal what its _base_ list alone gives."""
    source = config.read_text()
    tree = ast.parse(source)
    bases = [
        n for n in tree.body if isinstance(n, ast.Assign) and [getattr(t, 'id', None) for t in n.targets] == ['_base_']
    ]
    if not bases:
        return []
    with tempfile.NamedTemporaryFile('w', suffix='.py', dir=config.parent, delete=False) as f:
        f.write(ast.get_source_segment(source, bases[0]) + '\n')  # the bases alone, resolved from the same folder
    try:
        base = Config.fromfile(f.name).to_dict()
    finally:
        os.unlink(f.name)
    # a variable the file itself reads (max_epochs = 8; ... end=max_epochs) is kept for those expressions
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    found = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id not in used):
            for path, value in _literal_leaves(node.value, [node.targets[0].id]):
                current = base
                for key in path:
                    current = current.get(key, KeyError) if isinstance(current, dict) else KeyError
                if path[0] != '_base_' and current is not KeyError and _same(current, value):
                    found.append(f'{".".join(map(str, path))} = {value!r}')
    return found


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b and type(a) is type(b)


def test_the_check_finds_a_restated_value(tmp_path):
    (tmp_path / 'base.py').write_text("model = dict(depth=50, width=dict(a=1, b=(2, 3)))\nlr = 0.1\n")
    (tmp_path / 'child.py').write_text("_base_ = ['./base.py']\nmodel = dict(depth=101, width=dict(b=(2, 3)))\n"
                                       "lr = 0.1\nwd = dict(_delete_=True, x=1)\nsteps = 8\nend = steps\n")
    assert restated_values(tmp_path / 'child.py') == ['model.width.b = (2, 3)', 'lr = 0.1']


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: str(p.relative_to(ROOT / 'configs')))
def test_config_restates_nothing_from_its_bases(config):
    assert restated_values(config) == [], 'remove these lines: the bases already say so'
