# DINO 5-scale, 12 epochs on COCO with TransNeXt-Base (paper: 57.1 box AP, 110M parameters); 8 GPUs x 1 x 2.
_base_ = './dino-5scale_transnext_tiny.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-base-224-1k
        init_cfg=dict(checkpoint='checkpoints/transnext_base_224_1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
