"""Check a config's inputs before a run starts, so that a missing dataset or checkpoint ends
with one message saying what to fetch and where to put it, instead of a traceback mid-run."""
import os.path as osp
from typing import List

# Where each benchmark's data comes from, by dataset type.
_DATASET_HINTS = {
    'CocoDataset':
    'download COCO 2017 from https://cocodataset.org/#download and unpack it so that '
    '{root}annotations/, {root}train2017/ and {root}val2017/ exist',
    'ADE20KDataset':
    'download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/ and unpack it '
    'under {root_parent} so that {root}images/ and {root}annotations/ exist',
    'ImageNet':
    'download ImageNet-1k from https://image-net.org/ and lay it out as {root}train/, {root}val/ '
    '(and meta/ files, see mmpretrain\'s ImageNet docs)',
}


def _dataset_cfgs(dataset):
    """The leaf dataset configs under dataset wrappers (RepeatDataset, ConcatDataset, ...)."""
    if dataset is None:
        return []
    if 'datasets' in dataset:
        return [leaf for d in dataset['datasets'] for leaf in _dataset_cfgs(d)]
    if 'dataset' in dataset:
        return _dataset_cfgs(dataset['dataset'])
    return [dataset]


def _dataset_problems(dataset) -> List[str]:
    root = dataset.get('data_root') or ''
    paths = []
    if dataset.get('ann_file'):
        paths.append(osp.join(root, dataset['ann_file']))
    prefix = dataset.get('data_prefix') or {}
    paths += [osp.join(root, p) for p in (prefix.values() if isinstance(prefix, dict) else [prefix]) if p]
    if root and not paths:
        paths.append(root)
    missing = [p for p in dict.fromkeys(paths) if not osp.exists(p)]
    if not missing:
        return []
    kind = dataset.get('type', 'dataset')
    hint = _DATASET_HINTS.get(kind, 'create it, or point data_root at your copy').format(
        root=osp.join(root, '') if root else '', root_parent=osp.dirname(osp.normpath(root)) or '.')
    return [
        f'{kind}: {", ".join(missing)} not found. To fix: {hint}; or set another location with '
        f'--cfg-options (e.g. train_dataloader.dataset.data_root=...).'
    ]


def _backbone_cfg(model):
    while model is not None and 'backbone' not in model and 'module' in model:
        model = model['module']  # test-time-augmentation wrappers
    return (model or {}).get('backbone')


def missing_inputs(cfg, splits=('train', 'val', 'test'), check_pretrained=True) -> List[str]:
    """Problems with the data and pretrained weights ``cfg`` needs; empty when all is there."""
    problems = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader:
            for dataset in _dataset_cfgs(loader.get('dataset')):
                problems += [p for p in _dataset_problems(dataset) if p not in problems]
    backbone = _backbone_cfg(cfg.get('model'))
    init_cfg = (backbone or {}).get('init_cfg') or {}
    checkpoint = init_cfg.get('checkpoint') if init_cfg.get('type') == 'Pretrained' else None
    if check_pretrained and checkpoint and '://' not in checkpoint and not osp.isfile(checkpoint):
        problems.append(f'pretrained backbone weights {checkpoint} not found. To fix: download the released TransNeXt '
                        'ImageNet checkpoint named in the config (https://github.com/DaiShiResearch/TransNeXt) to that '
                        'path, or train from scratch with --cfg-options model.backbone.init_cfg=None.')
    return problems


def format_problems(config_path: str, problems: List[str]) -> str:
    lines = [f'Cannot run {config_path}:'] + [f'  - {p}' for p in problems]
    return '\n'.join(lines)
