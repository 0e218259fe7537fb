from .attention import AggregatedAttention, FullAttention
from .conv_glu import ConvolutionalGLU
from .patch_embed import OverlapPatchEmbed
from .position_bias import (BiasTaps, StageGeometry, bias_taps, gather_position_bias, local_window_stats,
                            relative_position_table, stage_geometry)

__all__ = [
    'AggregatedAttention', 'FullAttention', 'ConvolutionalGLU', 'OverlapPatchEmbed', 'BiasTaps', 'StageGeometry', 'bias_taps',
    'gather_position_bias', 'local_window_stats', 'relative_position_table', 'stage_geometry'
]
