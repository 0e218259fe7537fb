from .position_bias_mlp import position_bias_mlp, position_bias_mlp_reference
from .local_attention import (ATTN_IMPLS, ext_available, local_aggregation, local_aggregation_reference,
                              local_similarity, local_similarity_reference, resolve_attn_impl)

__all__ = [
    'ATTN_IMPLS', 'ext_available', 'local_aggregation', 'local_aggregation_reference', 'local_similarity',
    'local_similarity_reference', 'position_bias_mlp', 'position_bias_mlp_reference', 'resolve_attn_impl'
]
