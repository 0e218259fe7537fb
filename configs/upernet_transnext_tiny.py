# UperNet 160k on ADE20K with TransNeXt-Tiny, single-scale test (paper: 51.1 mIoU, 59M parameters).
# Trained on 8 GPUs x 2 images, 512 x 512 crops; tested in slide mode (crop 512, stride 341).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)

embed_dims = [72, 144, 288, 576]
model = dict(
    backbone=dict(
        _delete_=True,
        type='TransNeXt',
        arch='tiny',
        img_size=512,
        pretrain_size=224,
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3),
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    decode_head=dict(in_channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims[2]),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# AdamW lr 6e-5, weight decay 0.05, none on the backbone's position-bias / temperature / query-embedding
# parameters and norms (TransNeXtOptimWrapperConstructor; its biases keep their decay, as the authors').
# Schedule as the base: 1500-iteration linear warm-up from 1e-6, then poly (power 1) to 0 at 160k iterations;
# 8 GPUs x 2 images.
optim_wrapper = dict(_delete_=True,
                     type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
                     constructor='TransNeXtOptimWrapperConstructor',
                     paramwise_cfg=dict(backbone_bias_decay=True))

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
