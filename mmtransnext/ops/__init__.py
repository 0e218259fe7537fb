from .backend import ATTN_IMPLS, Choice, backend_table, check_attn_impl, choose_backend, resolve_attn_impl
from .ext_loader import ext_available
from .gelu_gate import gelu_gate, gelu_gate_backward, gelu_gate_reference
from .local_attention import (local_aggregation, local_aggregation_reference, local_similarity,
                              local_similarity_reference)
from .pooled_attention import (expand_position_bias, invert_cols_taps, pooled_attention, pooled_attention_backend,
                               pooled_attention_reference)
from .position_bias_mlp import position_bias_mlp, position_bias_mlp_reference

__all__ = [
    'ATTN_IMPLS', 'Choice', 'backend_table', 'check_attn_impl', 'choose_backend', 'expand_position_bias',
    'ext_available', 'gelu_gate', 'gelu_gate_backward', 'gelu_gate_reference', 'invert_cols_taps', 'local_aggregation',
    'local_aggregation_reference', 'local_similarity', 'local_similarity_reference', 'pooled_attention',
    'pooled_attention_backend', 'pooled_attention_reference', 'position_bias_mlp', 'position_bias_mlp_reference',
    'resolve_attn_impl'
]
