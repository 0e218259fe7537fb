# TransNeXt-Small on ImageNet-1k at 224 px (paper: 84.7 top-1, 49.7M parameters, 10.3GFLOPs);
# the recipe of transnext_tiny_in1k.py (8 GPUs x 128).
_base_ = './transnext_tiny_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.45))  # stage widths as tiny's: the head is unchanged
