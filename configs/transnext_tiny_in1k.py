# TransNeXt-Tiny on ImageNet-1k at 224 px (paper: 84.0 top-1, 28.2M parameters, 5.7 GFLOPs).
# Recipe in _base_/transnext_in1k_recipe.py; total batch 1024 = 8 GPUs x 128; mmpretrain's Swin
# pipeline: RandAugment m9, random erasing 0.25.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/transnext_in1k_recipe.py',
]

train_dataloader = dict(batch_size=128)  # per GPU; 8 GPUs x 128 = 1024
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
