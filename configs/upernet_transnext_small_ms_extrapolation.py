# As upernet_transnext_small_ms.py, with the position bias generated at each input's real feature
# size instead of resized (paper: 52.8 mIoU multi-scale + flip). Run with --tta.
_base_ = './upernet_transnext_small_ms.py'

model = dict(backbone=dict(is_extrapolation=True))
