"""The model zoo for mim: model-index.yml and the per-family metafiles list every paper config."""
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
