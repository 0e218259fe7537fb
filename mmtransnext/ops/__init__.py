from .position_bias_mlp import position_bias_mlp, position_bias_mlp_reference
from .gelu_gate import gelu_gate, gelu_gate_backward, gelu_gate_reference
from .pooled_attention import expand_position_bias, pooled_attention, pooled_attention_reference
from .ext_loader import ATTN_IMPLS, ext_available, resolve_attn_impl
from .local_attention import (local_aggregation, local_aggregation_reference, local_similarity,
                              local_similarity_reference)

__all__ = [
    'ATTN_IMPLS', 'ext_available', 'gelu_gate', 'gelu_gate_backward', 'gelu_gate_reference', 'local_aggregation',
    'local_aggregation_reference', 'local_similarity', 'local_similarity_reference', 'expand_position_bias',
    'pooled_attention', 'pooled_attention_reference', 'position_bias_mlp', 'position_bias_mlp_reference',
    'resolve_attn_impl'
]
