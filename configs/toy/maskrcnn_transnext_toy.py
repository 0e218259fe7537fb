# The bundled default job: a small TransNeXt Mask R-CNN trained from scratch on the generated
# toy-shapes set (tools/data/make_toy_coco.py) on a 2-core CPU, then evaluated with COCO AP.
# Same model family and optimiser rules as the paper config; smaller widths, images and schedule.
_base_ = '../maskrcnn_transnext_tiny.py'

embed_dims = [32, 64, 128, 256]
fpn_channels = 64
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=embed_dims, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
                  img_size=128,
                  pretrain_size=128,
                  drop_path_rate=0.,
                  init_cfg=None),
    neck=dict(in_channels=embed_dims, out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        # a fixed 2x2 sampling grid: mmcv's CPU RoIAlign backward is slow with adaptive sampling
        bbox_roi_extractor=dict(out_channels=fpn_channels, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=fpn_channels, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels, num_classes=3)),
    # fewer proposals and sampled RoIs than COCO needs: at most 4 objects per image
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

data_root = 'data/toy_coco/'
metainfo = dict(classes=('square', 'circle', 'triangle'), palette=[(220, 20, 60), (0, 160, 255), (255, 200, 0)])
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(batch_size=4,
                        num_workers=1,
                        dataset=dict(data_root=data_root,
                                     metainfo=metainfo,
                                     ann_file='annotations/train.json',
                                     data_prefix=dict(img='train/'),
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=4,
                      num_workers=1,
                      dataset=dict(data_root=data_root,
                                   metainfo=metainfo,
                                   ann_file='annotations/val.json',
                                   data_prefix=dict(img='val/'),
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
