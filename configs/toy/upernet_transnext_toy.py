# A small TransNeXt UperNet trained from scratch on the generated toy ADE20K-layout set
# (tools/data/make_toy_ade.py) on a 2-core CPU and evaluated with mmseg's IoUMetric (mIoU).
# The paper config's structure and optimiser rules; smaller widths, 128-px images, a short schedule.
_base_ = '../upernet_transnext_tiny.py'

crop_size = (128, 128)
embed_dims = [32, 64, 128, 256]
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs several GPU processes
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
        img_size=128,
        pretrain_size=128,
        drop_path_rate=0.,
        init_cfg=None),
    decode_head=dict(in_channels=embed_dims, channels=64, num_classes=5, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dims[2], channels=32, num_classes=5, norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

data_root = 'data/toy_ade/'
metainfo = dict(classes=('sky', 'ground', 'square', 'circle', 'triangle'),
                palette=[[70, 130, 180], [140, 110, 60], [220, 20, 60], [0, 160, 255], [255, 200, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
                     [dict(type='RandomFlip', prob=0., direction='horizontal'),
                      dict(type='RandomFlip', prob=1., direction='horizontal')],
                     [dict(type='LoadAnnotations', reduce_zero_label=True)], [dict(type='PackSegInputs')]])
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=50, end=max_iters, by_epoch=False)
]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
