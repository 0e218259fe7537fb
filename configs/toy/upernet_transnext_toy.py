# A small TransNeXt UperNet trained from scratch on the generated toy ADE20K-layout set
# (tools/data/make_toy_ade.py) on a 2-core CPU and evaluated with mmseg's IoUMetric (mIoU).
# The paper config's structure and optimiser rules; smaller widths, 128-px images, a short schedule.
_base_ = ['../upernet_transnext_tiny.py', './_base_/toy_ade_data.py']

embed_dims = [32, 64, 128, 256]
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs several GPU processes
model = dict(data_preprocessor=dict(size=(128, 128)),
             backbone=dict(arch=dict(_delete_=True, embed_dims=embed_dims, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
                           img_size=128,
                           pretrain_size=128,
                           drop_path_rate=0.,
                           init_cfg=None),
             decode_head=dict(in_channels=embed_dims, channels=64, num_classes=5, norm_cfg=norm_cfg),
             auxiliary_head=dict(in_channels=embed_dims[2], channels=32, num_classes=5, norm_cfg=norm_cfg),
             test_cfg=dict(_delete_=True, mode='whole'))

train_dataloader = {{_base_.toy_ade_train_dataloader}}
val_dataloader = {{_base_.toy_ade_val_dataloader}}
test_dataloader = val_dataloader
tta_pipeline = {{_base_.toy_ade_tta_pipeline}}

max_iters = 640
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=50, end=max_iters, by_epoch=False)
]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
