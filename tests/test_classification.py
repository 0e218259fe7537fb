"""MMPretrain: ImageNet configs, the converter on released-format classifiers, the FLOPs tool."""

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from mmtransnext.utils import convert_official_checkpoint
from .conftest import golden_arch, golden_part
from .helpers import ROOT, logged_losses, make_toy_imagenet, run_tool, tool_metrics

PAPER = {  # config: (params M, GFLOPs)
    'transnext_micro_in1k': (12.8, 2.7), 'transnext_tiny_in1k': (28.2, 5.7), 'transnext_small_in1k': (49.7, 10.3),
    'transnext_base_in1k': (89.7, 18.4), 'transnext_small_in1k-384px': (49.7, 32.1),
    'transnext_base_in1k-384px': (89.7, 56.3), 'transnext_micro-aaaa_in1k-256px': (13.1, 3.3),
}


def _build(cfg):
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('name', sorted(PAPER))
def test_imagenet_config_builds_with_paper_parameter_count(name):
    cfg = Config.fromfile(ROOT / 'configs' / f'{name}.py')
    params = sum(p.numel() for p in _build(cfg).parameters()) / 1e6
    assert abs(params - PAPER[name][0]) < 0.1, params
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0 and cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.train_dataloader.batch_size * 8 == 1024


def test_converted_classifier_gives_official_logits(golden, tmp_path):
    ref = golden_part(golden, 'classifier')
    path = tmp_path / 'released.pth'
    torch.save({'model': ref['state_dict']}, path)  # the authors' classification checkpoints wrap in 'model'
    run_tool('tools/model_converters/convert_official.py', path, tmp_path / 'converted.pth', cwd=tmp_path)
    cfg = Config(
        dict(model=dict(
            type='ImageClassifier',
            backbone=dict(type='TransNeXt', arch=golden_arch(golden), img_size=64, pretrain_size=64, out_indices=(3, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=192))))
    model = _build(cfg).eval()
    model.load_state_dict(torch.load(tmp_path / 'converted.pth', weights_only=True)['state_dict'], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(ref['input'], mode='tensor'), ref['logits'], atol=1e-4, rtol=0)


def test_converter_refuses_other_models(tmp_path):
    with pytest.raises(ValueError, match='not a TransNeXt checkpoint'):
        convert_official_checkpoint({'state_dict': {'conv1.weight': torch.zeros(1)}})
    torch.save({'fc.weight': torch.zeros(1)}, tmp_path / 'resnet.pth')
    result = run_tool('tools/model_converters/convert_official.py', 'resnet.pth', 'out.pth', cwd=tmp_path, check=False)
    assert result.returncode == 1 and 'not a TransNeXt checkpoint' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_get_flops_micro_classifier_matches_paper(tmp_path):
    result = run_tool('tools/analysis/get_flops.py', ROOT / 'configs/transnext_micro_in1k.py', cwd=tmp_path)
    gflops = float(result.stdout.split(' GFLOPs')[0].rsplit(', ', 1)[1])
    assert abs(gflops - 2.7) / 2.7 < 0.05, result.stdout


@pytest.mark.slow
def test_toy_classifier_learns_and_the_tools_run_on_its_weights(tmp_path):
    """60 iterations on 96 toy images: the loss falls and the training images are classified well above chance
    (measured: loss 1.37 -> 0.85, top-1 64.6% on the training images; chance is 33.3%)."""
    make_toy_imagenet(tmp_path, 32, 16)
    config = tmp_path / 'learn.py'
    config.write_text(f"_base_ = {str(ROOT / 'configs/toy/transnext_toy_cls.py')!r}\n"
                      "train_dataloader = dict(num_workers=0, persistent_workers=False)\n"
                      "val_dataloader = dict(num_workers=0, persistent_workers=False)\n"
                      "test_dataloader = val_dataloader\n"
                      "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=60, val_interval=1000)\n"
                      "param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=60)]\n"
                      "optim_wrapper = dict(optimizer=dict(lr=1e-3))\n"
                      "default_hooks = dict(checkpoint=dict(by_epoch=False, interval=60), logger=dict(interval=10))\n")
    run_tool('tools/train.py', config, '--work-dir', 'cls', cwd=tmp_path)
    losses = logged_losses(tmp_path / 'cls')
    assert len(losses) >= 5 and losses[-1] < 0.8 * losses[0], losses
    checkpoint = (tmp_path / 'cls' / 'last_checkpoint').read_text().strip()
    run_tool('tools/test.py',
             config,
             checkpoint,
             '--work-dir',
             'cls',
             '--cfg-options',
             'test_dataloader.dataset.data_prefix=train',
             cwd=tmp_path)
    assert tool_metrics(tmp_path / 'cls')['accuracy/top1'] >= 50
    image = next((tmp_path / 'data/toy_imagenet/val/circle').iterdir())
    run_tool('tools/demo/image_demo.py', image, config, checkpoint, '--out', 'demo.png', cwd=tmp_path)
    assert (tmp_path / 'demo.png').stat().st_size > 0
    # the picture tools on the toy set with the toy job's weights: no untrained-model warning
    drawn = run_tool('tools/analysis/visualize_attention.py',
                     image,
                     config,
                     checkpoint,
                     '--points',
                     '30,30',
                     '--out-dir',
                     'attention',
                     cwd=tmp_path)
    erf = run_tool('tools/analysis/visualize_erf.py',
                   config,
                   checkpoint,
                   '--images',
                   image,
                   '--size',
                   '64',
                   '64',
                   '--out',
                   'erf.png',
                   cwd=tmp_path)
    assert 'untrained' not in drawn.stderr + erf.stderr
    assert (tmp_path / 'attention/attention_30_30.png').stat().st_size > 0 and (tmp_path / 'erf.png').exists()


def test_converted_random_micro_classifier_matches_official_definition(tmp_path):
    """Released-format micro classifier with random weights: the official model's logits are the head
    applied to the token mean of the stage-4 output (after norm4)."""
    from mmtransnext.models import TransNeXt
    torch.manual_seed(0)
    backbone = TransNeXt(arch='micro', img_size=64, pretrain_size=224, out_indices=(3, )).eval()
    backbone.init_weights()
    head = torch.nn.Linear(384, 1000)
    released = dict(backbone.state_dict(), **{'head.weight': head.weight.detach(), 'head.bias': head.bias.detach()})
    converted = convert_official_checkpoint({'model': released})['state_dict']
    cfg = Config(
        dict(
            model=dict(type='ImageClassifier',
                       backbone=dict(type='TransNeXt', arch='micro', img_size=64, pretrain_size=224, out_indices=(3, )),
                       neck=dict(type='GlobalAveragePooling'),
                       head=dict(type='LinearClsHead', num_classes=1000, in_channels=384))))
    model = _build(cfg).eval()
    model.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = head(backbone(x)[0].flatten(2).mean(-1))
        torch.testing.assert_close(model(x, mode='tensor'), expected, atol=1e-5, rtol=0)
