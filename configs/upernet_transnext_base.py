# UperNet 160k on ADE20K with TransNeXt-Base, single-scale test (paper: 53.0 mIoU, 121M parameters).
_base_ = './upernet_transnext_tiny.py'

embed_dims = [96, 192, 384, 768]
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-base-224-1k
        init_cfg=dict(checkpoint='checkpoints/transnext_base_224_1k.pth')),
    decode_head=dict(in_channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims[2]))
