# Mask R-CNN 1x on COCO with TransNeXt-Tiny (paper: 49.9 box AP, 44.6 mask AP, 47.9M parameters).
# Trained on 8 GPUs x 2 images (total batch 16); single-scale 1333 x 800, as mmdet's R50 1x.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)

embed_dims = [72, 144, 288, 576]
model = dict(
    backbone=dict(
        _delete_=True,
        type='TransNeXt',
        arch='tiny',
        img_size=800,
        pretrain_size=224,
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3),
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    neck=dict(in_channels=embed_dims))

# AdamW, no weight decay on the backbone's position-bias / temperature / query-embedding parameters and
# norms (TransNeXtOptimWrapperConstructor); its biases keep their decay, as in the authors' recipe.
# Schedule as the R50 base: 12 epochs, steps at 8 and 11, 500-iteration linear warm-up from 0.001.
optim_wrapper = dict(_delete_=True,
                     type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
                     constructor='TransNeXtOptimWrapperConstructor',
                     paramwise_cfg=dict(backbone_bias_decay=True))

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
