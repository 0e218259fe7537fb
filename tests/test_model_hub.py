"""mmpretrain's model hub knows TransNeXt's ImageNet models after `import mmtransnext`, and only adds them."""
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmtransnext  # noqa: F401
from .helpers import ROOT


def test_get_model_by_name_equals_building_the_config():
    from mmpretrain import get_model
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = get_model('transnext_tiny_in1k').eval()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        built = MODELS.build(Config.fromfile(ROOT / 'configs/transnext_tiny_in1k.py').model).eval()
    built.load_state_dict(model.state_dict())  # same keys and shapes: the same model
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (1, 1000)
        torch.testing.assert_close(logits, built(x), rtol=0, atol=0)


def test_the_inferencer_takes_the_name_and_mmpretrains_own_models_are_unchanged():
    from mmpretrain import ImageClassificationInferencer, list_models
    from mmpretrain.apis import ModelHub

    # mmpretrain's inferencer builds its transforms in the current default scope, for its own models too; a Runner
    # made earlier in this process (other tests) leaves 'mmengine' there, a fresh process has none
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer('transnext_micro_in1k', pretrained=False)
    result, = inferencer(np.random.default_rng(0).integers(0, 255, (200, 240, 3), dtype=np.uint8))
    assert len(result['pred_scores']) == 1000
    assert sorted(list_models('transnext*')) == sorted(p.stem for p in (ROOT / 'configs').glob('transnext_*_in1k*.py'))
    resnet = ModelHub.get('resnet18_8xb32_in1k')  # mmpretrain's own index, its own config
    assert 'mmpretrain' in resnet.filepath and resnet.config.model.backbone.type == 'ResNet'
