# TransNeXt-Micro on ImageNet-1k at 224 px (paper: 82.5 top-1, 12.8M parameters, 2.7GFLOPs);
# the recipe of transnext_tiny_in1k.py (8 GPUs x 128).
_base_ = './transnext_tiny_in1k.py'

model = dict(backbone=dict(arch='micro', drop_path_rate=0.15), head=dict(in_channels=384))
