# Mask2Former 160k on ADE20K with TransNeXt-Small (paper: 54.1 mIoU, 69.0M parameters).
_base_ = './mask2former_transnext_tiny.py'

model = dict(backbone=dict(
    arch='small',
    drop_path_rate=0.5,
    # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-small-224-1k
    init_cfg=dict(checkpoint='checkpoints/transnext_small_224_1k.pth')))
