# TransNeXt-Base fine-tuned at 384 px from the 224-px ImageNet weights (paper: 86.2 top-1, 56.3GFLOPs).
# The recipe of transnext_small_in1k-384px.py with drop path 0.8.
_base_ = './transnext_small_in1k-384px.py'

model = dict(
    head=dict(in_channels=768),
    backbone=dict(
        arch='base',
        drop_path_rate=0.8,
        # the released 224-px ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-base-224-1k
        init_cfg=dict(checkpoint='checkpoints/transnext_base_224_1k.pth')))
