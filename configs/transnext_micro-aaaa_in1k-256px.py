# TransNeXt-Micro A-A-A-A on ImageNet-1k at 256 px: aggregated attention in all four stages
# (sr_ratios 16/8/4/2; paper: 82.6 top-1, 13.1M parameters, 3.3 GFLOPs); recipe of transnext_tiny_in1k.py.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_256.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/transnext_in1k_recipe.py',
]

model = dict(backbone=dict(arch='micro_aaaa', img_size=256, pretrain_size=256, drop_path_rate=0.15),
             head=dict(in_channels=384))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
