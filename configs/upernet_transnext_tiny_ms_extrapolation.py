# As upernet_transnext_tiny_ms.py, with the position bias generated at each input's real feature
# size instead of resized (paper: 51.7 mIoU multi-scale + flip). Run with --tta.
_base_ = './upernet_transnext_tiny_ms.py'

model = dict(backbone=dict(is_extrapolation=True))
