# Mask2Former 160k on ADE20K with TransNeXt-Tiny (paper: 53.4 mIoU, 47.5M parameters).
# Trained on 8 GPUs x 2 images, 512 x 512 crops; mmseg's Mask2Former R50 recipe otherwise
# (AdamW lr 1e-4, weight decay 0.05, eps 1e-8, grad clip 0.01, poly 0.9, best checkpoint by mIoU).
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmtransnext'])

model = dict(
    backbone=dict(
        _delete_=True,
        type='TransNeXt',
        arch='tiny',
        img_size=512,
        pretrain_size=224,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # released ImageNet weights: https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]))

# Backbone lr x0.1 and no weight decay on its norms, biases and position-bias / temperature /
# query-embedding parameters (TransNeXtOptimWrapperConstructor); query and level embeddings of the
# head at full lr without decay.
# the base's custom_keys (backbone lr x 0.1, query_embed / query_feat / level_embed without decay) stay; they match
# substrings, longest first: without this entry the base's 'query_embed' would also take the backbone's attention
# query embeddings to full lr (the authors' config sets 0.1 for them)
optim_wrapper = dict(constructor='TransNeXtOptimWrapperConstructor',
                     paramwise_cfg=dict(custom_keys={'attn.query_embedding': dict(lr_mult=0.1)}))

# checkpoints are written atomically (mmtransnext.engine.AtomicCheckpointHook): an interrupted save loses nothing
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
