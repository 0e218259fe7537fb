# DINO 5-scale, 12 epochs on COCO with TransNeXt-Small (paper: 56.6 box AP, 69.6M parameters); 8 GPUs x 1 x 2.
_base_ = './dino-5scale_transnext_tiny.py'

model = dict(backbone=dict(
    arch='small',
    drop_path_rate=0.5,
    # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-small-224-1k
    init_cfg=dict(checkpoint='checkpoints/transnext_small_224_1k.pth')))
