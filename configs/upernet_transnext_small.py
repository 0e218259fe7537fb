# UperNet 160k on ADE20K with TransNeXt-Small, single-scale test (paper: 52.2 mIoU, 80M parameters).
_base_ = './upernet_transnext_tiny.py'

model = dict(backbone=dict(
    arch='small',
    drop_path_rate=0.6,
    # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-small-224-1k
    init_cfg=dict(checkpoint='checkpoints/transnext_small_224_1k.pth')))
