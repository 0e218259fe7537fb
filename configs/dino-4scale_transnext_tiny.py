# DINO 4-scale, 12 epochs on COCO with TransNeXt-Tiny (paper: 55.1 box AP, 47.8M parameters).
# Trained on 8 GPUs x 1 image with gradient accumulation 2 (effective batch 16); DINO's standard
# multi-scale augmentation (480-800, max 1333) and 900 queries, from mmdet's R50 base.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TransNeXt',
        arch='tiny',
        img_size=800,
        pretrain_size=224,
        drop_path_rate=0.3,
        out_indices=(1, 2, 3),  # stages 2-4; the neck adds the 4th level
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    neck=dict(in_channels=[144, 288, 576]))

# AdamW, weight decay 0.05, grad clip 0.1, backbone lr x0.1; no weight decay on biases, norms and
# TransNeXt's position-bias / temperature / query-embedding parameters (TransNeXtOptimWrapperConstructor
# exempts the backbone's on top of the custom key, which alone would override the exemption).
optim_wrapper = dict(
    constructor='TransNeXtOptimWrapperConstructor',
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),  # lr 1e-4, clip 0.1, backbone lr x 0.1: mmdet's base
    accumulative_counts=2,
    paramwise_cfg=dict(bias_decay_mult=0., norm_decay_mult=0.))
train_dataloader = dict(batch_size=1)  # per GPU; 8 GPUs x 1 x 2 accumulation steps = 16
auto_scale_lr = dict(enable=False)  # (its base_batch_size 16 is the base's): lets --auto-scale-lr switch it on

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
