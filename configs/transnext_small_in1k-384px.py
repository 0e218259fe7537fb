# TransNeXt-Small fine-tuned at 384 px from the 224-px ImageNet weights (paper: 86.0 top-1, 32.1GFLOPs).
# 5 epochs, lr 1e-5 constant, no CutMix (Mixup 0.8 kept), drop path 0.7; 8 GPUs x 128.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_384.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/transnext_in1k_recipe.py',
]

model = dict(
    backbone=dict(
        arch='small',
        img_size=384,
        drop_path_rate=0.7,
        # the released 224-px ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-small-224-1k
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_small_224_1k.pth')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-5))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=5)]
train_cfg = dict(max_epochs=5)

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
