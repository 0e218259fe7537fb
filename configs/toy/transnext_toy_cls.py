# A small TransNeXt classifier trained from scratch on the generated toy ImageNet-layout set
# (tools/data/make_toy_imagenet.py: one shape per 64-px image, 3 classes) on a 2-core CPU, evaluated
# with mmpretrain's Accuracy. The paper recipe's model and optimiser rules; no AMP / Mixup / CutMix /
# label smoothing, 64-px images, a lower learning rate for the small batch and a short schedule.
_base_ = '../transnext_micro_in1k.py'

model = dict(backbone=dict(arch=dict(_delete_=True,
                                     embed_dims=[32, 64, 128, 256],
                                     depths=[1, 1, 2, 1],
                                     num_heads=[1, 2, 4, 8]),
                           img_size=64,
                           pretrain_size=64,
                           drop_path_rate=0.),
             head=dict(num_classes=3, in_channels=256, loss=dict(label_smooth_val=0.), topk=(1, )),
             train_cfg=dict(_delete_=True))
data_preprocessor = dict(num_classes=3)

data_root = 'data/toy_imagenet'
classes = ('circle', 'square', 'triangle')  # the folder names, sorted
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.6, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(batch_size=16,
                        num_workers=1,
                        dataset=dict(_delete_=True,
                                     type='CustomDataset',
                                     data_root=data_root,
                                     data_prefix='train',
                                     metainfo=dict(classes=classes),
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=32,
                      num_workers=1,
                      dataset=dict(_delete_=True,
                                   type='CustomDataset',
                                   data_root=data_root,
                                   data_prefix='val',
                                   metainfo=dict(classes=classes),
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 40
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=2, end=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False)
