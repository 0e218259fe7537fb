"""TransNeXt's ImageNet models in mmpretrain's model hub: ``mmpretrain.get_model('transnext_tiny_in1k')`` and the
inferencers by name, after ``import mmtransnext``.

Only our classification metafile is added, through mmpretrain's public ``ModelHub.register_model_index``; the
names are new (``transnext_*``), so mmpretrain's own models resolve as before.
"""
import os.path as osp

# the package's mim folder: configs/ and the metafiles (links into the repository in a source checkout)
MIM_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')
METAFILE = osp.join(MIM_DIR, 'configs', 'metafiles', 'classification.yml')


def register_in_mmpretrain_hub() -> bool:
    """Add the ImageNet configs to mmpretrain's ModelHub once; False where mmpretrain or the metafile is absent."""
    try:
        from mmpretrain.apis import ModelHub
    except ImportError:
        return False
    if not osp.isfile(METAFILE):
        return False
    if not ModelHub.has('transnext_tiny_in1k'):  # importing twice (a reload) registers once
        ModelHub.register_model_index(METAFILE, config_prefix=MIM_DIR)
    return True
