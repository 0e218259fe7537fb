# A small TransNeXt Mask2Former on the generated toy ADE20K-layout set: the paper config with a small
# backbone, fewer queries / layers / sampled points, 128-px images (tests train it a few iterations).
_base_ = ['../mask2former_transnext_tiny.py', './_base_/toy_ade_data.py']

embed_dims = [32, 64, 128, 256]
num_classes = 5
model = dict(data_preprocessor=dict(size=(128, 128)),
             backbone=dict(arch=dict(_delete_=True, embed_dims=embed_dims, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
                           img_size=128,
                           pretrain_size=128,
                           drop_path_rate=0.,
                           init_cfg=None),
             decode_head=dict(in_channels=embed_dims,
                              num_classes=num_classes,
                              num_queries=20,
                              pixel_decoder=dict(encoder=dict(num_layers=1)),
                              transformer_decoder=dict(num_layers=3),
                              loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
                              train_cfg=dict(num_points=1024)))

train_dataloader = {{_base_.toy_ade_train_dataloader}}
val_dataloader = {{_base_.toy_ade_val_dataloader}}
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
