from .attention import AggregatedAttention, FullAttention
from .conv_glu import ConvolutionalGLU
from .patch_embed import OverlapPatchEmbed
from .position_bias import (StageGeometry, local_window_stats, relative_position_table, resize_pool_bias,
                            stage_geometry)

__all__ = [
    'AggregatedAttention', 'FullAttention', 'ConvolutionalGLU', 'OverlapPatchEmbed', 'StageGeometry',
    'local_window_stats', 'relative_position_table', 'resize_pool_bias', 'stage_geometry'
]
