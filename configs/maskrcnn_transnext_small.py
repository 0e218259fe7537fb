# Mask R-CNN 1x on COCO with TransNeXt-Small (paper: 51.1 box AP, 45.5 mask AP, 69.3M parameters); 8 GPUs x 2 images.
_base_ = './maskrcnn_transnext_tiny.py'

model = dict(backbone=dict(
    arch='small',
    drop_path_rate=0.6,
    # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-small-224-1k
    init_cfg=dict(checkpoint='checkpoints/transnext_small_224_1k.pth')))
