"""Bad input to the tools and the backbone gets a clear message naming the problem (README: Tools)."""
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from .helpers import ROOT, make_toy_imagenet, run_tool

TOY_CLS = ROOT / 'configs/toy/transnext_toy_cls.py'


@pytest.fixture(scope='module')
def toy_cls(tmp_path_factory):
    """The toy classification set and an untrained toy classifier's checkpoint."""
    cwd = tmp_path_factory.mktemp('bad_input')
    make_toy_imagenet(cwd, 1, 2)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(TOY_CLS).model)
    torch.save({'state_dict': model.state_dict()}, cwd / 'untrained.pth')
    return cwd


def _write(path, pixels):
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.mark.parametrize('kind', ['gray', 'rgba', '16-bit'])
def test_image_demo_reads_any_common_image(toy_cls, tmp_path, kind):
    rng = np.random.default_rng(0)
    pixels = {
        'gray': rng.integers(0, 256, (64, 64), dtype=np.uint8),
        'rgba': rng.integers(0, 256, (64, 64, 4), dtype=np.uint8),
        '16-bit': rng.integers(0, 65536, (64, 64, 3), dtype=np.uint16)
    }[kind]
    image = _write(tmp_path / 'in.png', pixels)
    run_tool('tools/demo/image_demo.py',
             image,
             TOY_CLS,
             toy_cls / 'untrained.pth',
             '--out',
             tmp_path / 'out.png',
             cwd=toy_cls)
    assert cv2.imread(str(tmp_path / 'out.png')).shape[2] == 3


@pytest.mark.parametrize('problem', ['missing', 'not an image'])
def test_image_demo_names_an_unreadable_image(toy_cls, tmp_path, problem):
    image = tmp_path / 'photo.png'
    if problem == 'not an image':
        image.write_bytes(b'these bytes are no image')
    result = run_tool('tools/demo/image_demo.py', image, TOY_CLS, toy_cls / 'untrained.pth', cwd=toy_cls, check=False)
    assert result.returncode != 0
    assert f'image {image}' in result.stderr and 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_a_corrupt_image_in_a_dataset_is_named(toy_cls, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(toy_cls / 'data', data)
    corrupt = sorted((data / 'toy_imagenet/val/square').iterdir())[0]
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # a truncated download
    result = run_tool('tools/test.py',
                      TOY_CLS,
                      toy_cls / 'untrained.pth',
                      '--work-dir',
                      'wd',
                      '--cfg-options',
                      'test_dataloader.num_workers=0',
                      cwd=tmp_path,
                      check=False)
    assert result.returncode != 0 and corrupt.name in result.stderr, result.stderr[-2000:]


def test_misspelt_backbone_argument_is_named_with_the_valid_ones():
    from mmtransnext.models import TransNeXt
    with pytest.raises(TypeError, match=r"'archh' \(did you mean 'arch'\?\).*arguments are: arch, img_size"):
        TransNeXt(archh='tiny')
    config = Config.fromfile(TOY_CLS)
    config.model.backbone.drop_path = 0.1
    with pytest.raises(TypeError, match=r"'drop_path' \(did you mean 'drop_path_rate'\?\)"):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            MODELS.build(config.model)
