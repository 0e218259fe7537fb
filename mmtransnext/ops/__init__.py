from .local_attention import (ATTN_IMPLS, ext_available, local_aggregation, local_aggregation_reference,
                              local_similarity, local_similarity_reference, resolve_attn_impl)

__all__ = [
    'ATTN_IMPLS', 'ext_available', 'local_aggregation', 'local_aggregation_reference', 'local_similarity',
    'local_similarity_reference', 'resolve_attn_impl'
]
