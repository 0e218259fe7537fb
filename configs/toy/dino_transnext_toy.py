# A small TransNeXt DINO on the generated toy-shapes set: the paper's DINO config with a small
# backbone, 128-px images, fewer queries and layers, so that it trains on a CPU (tests use it).
_base_ = '../dino-4scale_transnext_tiny.py'

embed_dims = [32, 64, 128, 256]
model = dict(num_queries=50,
             backbone=dict(arch=dict(_delete_=True, embed_dims=embed_dims, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
                           img_size=128,
                           pretrain_size=128,
                           drop_path_rate=0.,
                           init_cfg=None),
             neck=dict(in_channels=embed_dims[1:]),
             encoder=dict(num_layers=2),
             decoder=dict(num_layers=2),
             bbox_head=dict(num_classes=3),
             dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
             test_cfg=dict(max_per_img=20))

data_root = 'data/toy_coco/'
metainfo = dict(classes=('square', 'circle', 'triangle'), palette=[(220, 20, 60), (0, 160, 255), (255, 200, 0)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
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

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2e-4), accumulative_counts=1)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
