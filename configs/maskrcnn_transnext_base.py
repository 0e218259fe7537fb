# Mask R-CNN 1x on COCO with TransNeXt-Base (paper: 51.7 box AP, 45.9 mask AP, 109.2M parameters); 8 GPUs x 2 images.
_base_ = './maskrcnn_transnext_tiny.py'

embed_dims = [96, 192, 384, 768]
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-base-224-1k
        init_cfg=dict(checkpoint='checkpoints/transnext_base_224_1k.pth')),
    neck=dict(in_channels=embed_dims))
