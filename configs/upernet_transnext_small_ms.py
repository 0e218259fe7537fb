# UperNet TransNeXt-Small for the multi-scale + flip test (paper: 52.5 mIoU), the same
# weights as upernet_transnext_small.py. Run with --tta (ratios 0.5-1.75 + flip, whole-image inference).
# The average test input is much larger than the 512 training crops, so the position bias is
# generated on an 800-px grid (img_size) and resized from there.
_base_ = './upernet_transnext_small.py'

model = dict(backbone=dict(img_size=800), test_cfg=dict(_delete_=True, mode='whole'))
