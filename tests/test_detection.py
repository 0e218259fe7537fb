"""MMDetection: the paper configs, the train / test tools, resume, converted checkpoints."""
import shutil
import sys
import textwrap
from pathlib import Path

import mmdet
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from .helpers import ROOT, logged_losses, make_toy_coco, run_tool, tool_metrics, validated_metrics

PAPER_PARAMS_M = {
    'maskrcnn_transnext_tiny': 47.9,
    'maskrcnn_transnext_small': 69.3,
    'maskrcnn_transnext_base': 109.2,
    'dino-4scale_transnext_tiny': 47.8,
    'dino-5scale_transnext_tiny': 48.1,
    'dino-5scale_transnext_small': 69.6,
    'dino-5scale_transnext_base': 110.0,
}
MASKRCNN_TOY = ROOT / 'configs/toy/maskrcnn_transnext_toy.py'
DINO_TOY = ROOT / 'configs/toy/dino_transnext_toy.py'


def _build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS_M))
def test_paper_config_builds_with_paper_parameter_count(name):
    cfg = Config.fromfile(ROOT / 'configs' / f'{name}.py')
    assert cfg.model.backbone.type == 'TransNeXt' and cfg.model.backbone.img_size == 800
    assert cfg.model.backbone.pretrain_size == 224
    params = sum(p.numel() for p in _build(cfg).parameters()) / 1e6
    assert abs(params - PAPER_PARAMS_M[name]) < 0.1, params


def test_dino_param_groups_follow_the_paper():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(ROOT / 'configs/dino-4scale_transnext_tiny.py')
    model = _build(cfg)
    with DefaultScope.overwrite_default_scope('mmdet'):
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
    for name, param in model.named_parameters():
        group = group_of[id(param)]
        special = any(k in name for k in ('query_embedding', 'relative_pos_bias_local', 'cpb_fc', 'temperature'))
        if name.startswith('backbone.'):
            assert group['lr'] == pytest.approx(1e-5), name
            decays = param.ndim > 1 and not special
            assert group['weight_decay'] == pytest.approx(0.05 if decays else 0.), name
        else:
            assert group['lr'] == pytest.approx(1e-4), name


def test_train_without_coco_or_checkpoint_says_what_to_do(tmp_path):
    result = run_tool('tools/train.py', ROOT / 'configs/maskrcnn_transnext_tiny.py', cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert 'data/coco/annotations/instances_train2017.json' in result.stderr
    assert 'cocodataset.org' in result.stderr
    assert 'checkpoints/transnext_tiny_224_1k.pth not found' in result.stderr
    assert 'model.backbone.init_cfg=None' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.fixture(scope='module')
def toy_coco(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('toy_det')
    make_toy_coco(cwd)
    return cwd


@pytest.fixture(scope='module')
def first_epoch(toy_coco):
    """One epoch of the bundled job's config, as it is, on the small set, in work dir 'wd' (which the resume test
    continues); its weights stay in first_epoch.pth for the test that trains the same epoch again."""
    run_tool('tools/train.py',
             MASKRCNN_TOY,
             '--work-dir',
             'wd',
             '--cfg-options',
             'train_cfg.max_epochs=1',
             cwd=toy_coco)
    shutil.copy(toy_coco / 'wd/epoch_1.pth', toy_coco / 'first_epoch.pth')
    return toy_coco / 'first_epoch.pth'


@pytest.mark.slow
@pytest.mark.xdist_group('toy_coco_first_epoch')
def test_maskrcnn_train_test_resume_and_official_layout(toy_coco, first_epoch):
    cwd = toy_coco
    run_tool('tools/test.py', MASKRCNN_TOY, first_epoch, '--work-dir', 'wd', cwd=cwd)
    metrics = tool_metrics(cwd / 'wd')
    assert {'coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'} <= set(metrics)
    state = torch.load(first_epoch, weights_only=False)['state_dict']
    run_tool('tools/demo/image_demo.py',
             'data/toy_coco/val/00000.png',
             MASKRCNN_TOY,
             first_epoch,
             '--out',
             'demo/det.png',
             cwd=cwd)
    assert (cwd / 'demo/det.png').stat().st_size > 0

    # --resume continues from epoch 1 (iteration 2) with its optimizer state
    result = run_tool('tools/train.py',
                      MASKRCNN_TOY,
                      '--work-dir',
                      'wd',
                      '--resume',
                      '--cfg-options',
                      'train_cfg.max_epochs=2',
                      cwd=cwd)
    assert 'resumed epoch: 1, iter: 2' in result.stdout + result.stderr
    final = torch.load(cwd / 'wd/epoch_2.pth', weights_only=False)
    assert (final['meta']['epoch'], final['meta']['iter']) == (2, 4)
    adam_steps = {float(s['step']) for s in final['optimizer']['state'].values()}
    assert adam_steps == {4.0}, 'optimizer state was not restored on resume'

    # a checkpoint in the authors' layout (mmdet 2.x Mask R-CNN: meta + state_dict, backbone.* keys)
    torch.save(
        {
            'meta': {
                'mmdet_version': '2.28.2',
                'CLASSES': ('square', 'circle', 'triangle')
            },
            'state_dict': state,
            'optimizer': {
                'state': {},
                'param_groups': []
            }
        }, cwd / 'official.pth')
    result = run_tool('tools/model_converters/convert_official.py',
                      'official.pth',
                      'converted.pth',
                      '--config',
                      MASKRCNN_TOY,
                      cwd=cwd)
    assert 'keys fit' in result.stdout
    run_tool('tools/test.py', MASKRCNN_TOY, 'converted.pth', '--work-dir', 'wd2', cwd=cwd)
    converted = tool_metrics(cwd / 'wd2')
    assert converted == metrics, 'the converted checkpoint must evaluate exactly as the original'

    # a checkpoint that does not fit is refused with the keys named
    del state['backbone.norm4.weight']
    torch.save({'state_dict': state}, cwd / 'partial.pth')
    result = run_tool('tools/test.py', MASKRCNN_TOY, 'partial.pth', '--work-dir', 'wd3', cwd=cwd, check=False)
    assert result.returncode == 1 and 'backbone.norm4.weight' in result.stderr
    assert 'convert_official.py' in result.stderr


@pytest.mark.slow
def test_maskrcnn_learns_the_toy_shapes(tmp_path):
    """Two epochs of the bundled job's schedule on its full generated set: the loss falls and the run's own validation
    after the last epoch finds boxes and masks well above chance (measured: loss 4.11 -> 1.88, box AP50 0.146, mask
    AP50 0.146; chance is 0). tools/test.py evaluates checkpoints in the test of train / test / resume above."""
    make_toy_coco(tmp_path, num_train=320, num_val=64)
    run_tool('tools/train.py',
             MASKRCNN_TOY,
             '--work-dir',
             'wd',
             '--cfg-options',
             'train_cfg.max_epochs=2',
             cwd=tmp_path)
    losses = logged_losses(tmp_path / 'wd')
    assert len(losses) >= 6 and losses[-1] < 0.6 * losses[0], losses
    metrics = validated_metrics(tmp_path / 'wd')
    assert metrics['coco/bbox_mAP_50'] >= 0.04 and metrics['coco/segm_mAP_50'] >= 0.04, metrics


@pytest.mark.slow
def test_dino_trains_and_reports_ap(toy_coco):
    run_tool('tools/train.py', DINO_TOY, '--work-dir', 'dino', '--cfg-options', 'train_cfg.max_epochs=1', cwd=toy_coco)
    run_tool('tools/test.py', DINO_TOY, 'dino/epoch_1.pth', '--work-dir', 'dino', cwd=toy_coco)
    metrics = tool_metrics(toy_coco / 'dino')
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_50'} <= set(metrics)


@pytest.mark.slow
def test_plain_mmdet_project_trains_with_mmdets_own_tool(toy_coco):
    """An existing project's config: mmdet's base + custom_imports + a TransNeXt backbone, and the project's own
    pipeline (the toy images at their 128 px: the base's 1333 x 800 quadrupled this test's time)."""
    config = toy_coco / 'my_project_maskrcnn.py'
    config.write_text(
        textwrap.dedent("""
        _base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)
        model = dict(
            backbone=dict(_delete_=True, type='TransNeXt', img_size=128, pretrain_size=128,
                          arch=dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])),
            neck=dict(in_channels=[32, 64, 128, 256]),
            roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)))
        metainfo = dict(classes=('square', 'circle', 'triangle'))
        train_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='Resize', scale=(128, 128), keep_ratio=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackDetInputs'),
        ]
        train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(
            data_root='data/toy_coco/', metainfo=metainfo, ann_file='annotations/train.json',
            data_prefix=dict(img='train/'), pipeline=train_pipeline))
        train_cfg = dict(max_epochs=1, val_interval=5)
        val_dataloader = val_cfg = val_evaluator = None  # no COCO val set here
    """))
    mmdet_train = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    assert mmdet_train.is_file()
    import subprocess
    result = subprocess.run(
        [sys.executable, str(mmdet_train), str(config), '--work-dir', 'plain'],
        cwd=toy_coco,
        capture_output=True,
        text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (toy_coco / 'plain' / 'epoch_1.pth').is_file()


@pytest.mark.slow
@pytest.mark.xdist_group('toy_coco_first_epoch')
def test_two_runs_on_one_machine_end_with_identical_weights(toy_coco, first_epoch):
    """The bundled job's config, augmentation and seed as they are: bit-identical weights after an epoch, so that
    README's spread over seeds is the only spread on one machine (CPUs with other vector units round differently)."""
    cwd = toy_coco
    run_tool('tools/train.py', MASKRCNN_TOY, '--work-dir', 'second', '--cfg-options', 'train_cfg.max_epochs=1', cwd=cwd)
    first = torch.load(first_epoch, weights_only=False)['state_dict']
    second = torch.load(cwd / 'second/epoch_1.pth', weights_only=False)['state_dict']
    assert first.keys() == second.keys()
    changed = [key for key in first if not torch.equal(first[key], second[key])]
    assert not changed, f'{len(changed)} tensors differ, e.g. {changed[:3]}'
