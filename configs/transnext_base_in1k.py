# TransNeXt-Base on ImageNet-1k at 224 px (paper: 84.8 top-1, 89.7M parameters, 18.4GFLOPs);
# the recipe of transnext_tiny_in1k.py (8 GPUs x 128).
_base_ = './transnext_tiny_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.6), head=dict(in_channels=768))
