# DINO 5-scale, 12 epochs on COCO with TransNeXt-Tiny (paper: 55.7 box AP, 48.1M parameters).
# All four stages feed the neck, which adds a 5th level; 8 GPUs x 1 image x 2 accumulation steps.
_base_ = './dino-4scale_transnext_tiny.py'

num_levels = 5
model = dict(num_feature_levels=num_levels,
             backbone=dict(out_indices=(0, 1, 2, 3)),
             neck=dict(in_channels=[72, 144, 288, 576], num_outs=num_levels),
             encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=num_levels))),
             decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=num_levels))))
