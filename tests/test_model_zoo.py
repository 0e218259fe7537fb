"""The model zoo for mim: model-index.yml and the per-family metafiles list every paper config."""
import subprocess
import sys

import pytest
import yaml

from .helpers import ROOT

PAPER_CONFIGS = sorted(p.stem for p in (ROOT / 'configs').glob('*.py'))


def metafile_models():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    return [model for path in index['Import'] for model in yaml.safe_load((ROOT / path).read_text())['Models']]


def test_every_paper_config_is_listed_once_with_task_metric_and_size():
    models = metafile_models()
    assert sorted(m['Name'] for m in models) == PAPER_CONFIGS
    for model in models:
        assert (ROOT / model['Config']).is_file() and model['Config'] == f'configs/{model["Name"]}.py'
        assert model['Metadata']['Parameters'] > 1e6 and model['Metadata']['FLOPs'] > 1e9, model['Name']
        for result in model['Results']:
            assert result['Task'] and result['Dataset'] and all(v > 0 for v in result['Metrics'].values())
        assert model['Converted From']['License'] == 'Apache-2.0'
        assert model['Weights'].startswith('https://huggingface.co/DaiShiResearch/')


def test_the_package_ships_the_index_where_mim_reads_it():
    mim_dir = ROOT / 'mmtransnext/.mim'
    assert (mim_dir / 'model-index.yml').resolve() == (ROOT / 'model-index.yml').resolve()
    assert (mim_dir / 'configs/metafiles/maskrcnn.yml').is_file()


@pytest.mark.slow
def test_mim_search_lists_the_configs_of_an_installed_package(tmp_path):
    """An installed (non-editable) copy: mim finds packages by their distribution's location, which for a
    PEP 660 editable install is site-packages (see README)."""
    pytest.importorskip('mim')
    install = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                              '--target', str(tmp_path / 'site'), str(ROOT)], capture_output=True, text=True,
                             env={'MMTRANSNEXT_WITH_OPS': '0', 'PATH': '/usr/bin:/bin'}, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    result = subprocess.run([sys.executable, '-m', 'mim', 'search', 'mmtransnext'], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300,
                            env={'PYTHONPATH': str(tmp_path / 'site'), 'PATH': '/usr/bin:/bin', 'COLUMNS': '250'})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    listed = {}
    for block in result.stdout.split('config id: ')[1:]:
        name, *lines = block.splitlines()
        listed[name.strip()] = dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith('-'))
    assert sorted(listed) == PAPER_CONFIGS
    for name, fields in listed.items():  # dataset / metric (e.g. coco/box_ap), parameters, FLOPs
        assert float(fields['parameters']) > 1e6 and float(fields['flops']) > 1e9, name
        assert any('/' in key and float(value) > 0 for key, value in fields.items() if key != 'config'), name
