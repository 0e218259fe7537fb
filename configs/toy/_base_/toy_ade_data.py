# Data settings of the generated toy ADE20K-layout set (tools/data/make_toy_ade.py), for toy configs
# that also inherit a paper config: names are prefixed so that they do not clash with its keys.
# BaseSegDataset with ADE20KDataset's conventions (.jpg / .png, label 0 = other, reduce_zero_label):
# ADE20KDataset itself only accepts subsets of its own 150 classes.
toy_crop_size = (128, 128)
toy_ade_metainfo = dict(classes=('sky', 'ground', 'square', 'circle', 'triangle'),
                        palette=[[70, 130, 180], [140, 110, 60], [220, 20, 60], [0, 160, 255], [255, 200, 0]])
toy_ade_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=toy_crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=toy_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
toy_ade_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=toy_crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
toy_ade_tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
                     [
                         dict(type='RandomFlip', prob=0., direction='horizontal'),
                         dict(type='RandomFlip', prob=1., direction='horizontal')
                     ], [dict(type='LoadAnnotations', reduce_zero_label=True)], [dict(type='PackSegInputs')]])
]
toy_ade_train_dataloader = dict(batch_size=8,
                                num_workers=1,
                                dataset=dict(type='BaseSegDataset',
                                             data_root='data/toy_ade/',
                                             metainfo=toy_ade_metainfo,
                                             img_suffix='.jpg',
                                             seg_map_suffix='.png',
                                             reduce_zero_label=True,
                                             data_prefix=dict(img_path='images/training',
                                                              seg_map_path='annotations/training'),
                                             pipeline=toy_ade_train_pipeline))
toy_ade_val_dataloader = dict(batch_size=4,
                              num_workers=1,
                              dataset=dict(type='BaseSegDataset',
                                           data_root='data/toy_ade/',
                                           metainfo=toy_ade_metainfo,
                                           img_suffix='.jpg',
                                           seg_map_suffix='.png',
                                           reduce_zero_label=True,
                                           data_prefix=dict(img_path='images/validation',
                                                            seg_map_path='annotations/validation'),
                                           pipeline=toy_ade_test_pipeline))
