from .attention import AggregatedAttention, FullAttention
from .conv_glu import ConvolutionalGLU
from .patch_embed import OverlapPatchEmbed
from .position_bias import StageGeometry

# the layers (and the geometry a layer's forward takes); the position-bias helpers stay in position_bias.py
__all__ = ['AggregatedAttention', 'FullAttention', 'ConvolutionalGLU', 'OverlapPatchEmbed', 'StageGeometry']
