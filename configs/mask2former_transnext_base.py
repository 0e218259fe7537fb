# Mask2Former 160k on ADE20K with TransNeXt-Base (paper: 54.7 mIoU, 109M parameters).
_base_ = './mask2former_transnext_tiny.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-base-224-1k
        init_cfg=dict(checkpoint='checkpoints/transnext_base_224_1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
