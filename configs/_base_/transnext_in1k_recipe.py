# The paper's ImageNet-1k recipe for TransNeXt classifiers, without the data pipeline (which the
# configs take from mmpretrain's Swin datasets at their resolution): ImageClassifier = TransNeXt
# (last stage) + GlobalAveragePooling + LinearClsHead; 300 epochs, AdamW lr 1e-3 at total batch
# 1024, weight decay 0.05, cosine to 1e-5 after 5 warm-up epochs, grad clip 1.0, AMP; Mixup 0.8,
# CutMix 1.0, label smoothing 0.1.
custom_imports = dict(imports=['mmtransnext'], allow_failed_imports=False)

model = dict(type='ImageClassifier',
             backbone=dict(type='TransNeXt',
                           arch='tiny',
                           img_size=224,
                           pretrain_size=224,
                           drop_path_rate=0.25,
                           out_indices=(3, )),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead',
                       num_classes=1000,
                       in_channels=576,
                       init_cfg=None,
                       loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
                       cal_acc=False),
             init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)],
             train_cfg=dict(
                 augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# No weight decay on norms, biases and TransNeXt's query_embedding, relative_pos_bias_local, cpb and
# temperature parameters (TransNeXtOptimWrapperConstructor).
optim_wrapper = dict(type='AmpOptimWrapper',
                     constructor='TransNeXtOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
                     clip_grad=dict(max_norm=1.0),
                     paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
