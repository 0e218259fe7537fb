"""The ops in ONNX, for ``torch.onnx.export(..., custom_translation_table=...)`` on a model built with
``attn_impl='ext'``.

The attention ops become nodes of the custom domain ``mmtransnext`` (version 1), for runtimes that
implement the fused op; their schemas below are the contract (inputs, outputs and attributes as the
PyTorch ops take them, see ``pooled_attention`` and ``local_similarity`` / ``local_aggregation``).
The two ops that are not attention (the position-bias MLP, ConvGLU's GELU gate) become standard ONNX
operators. Without this table, export a model built with ``attn_impl='pytorch'``: every op is then
standard ONNX (tools/deployment/export_onnx.py does both).
"""
from typing import Callable, Dict

import torch

DOMAIN = 'mmtransnext'
VERSION = 1

# name: (inputs, outputs, integer attributes); 'cols_index' is int64, every other tensor float
_SCHEMAS = {
    'LocalSimilarity': (('query', 'key', 'bias'), ('logits', ), ('height', 'width', 'window_size')),
    'LocalAggregation': (('weights', 'value'), ('out', ), ('height', 'width', 'window_size')),
    'PooledAttention': (('query', 'key', 'value', 'bias_rows', 'cols_index', 'cols_weight', 'local_logits'),
                        ('out', 'local_weights', 'lse'), ('height', 'width')),
}


def register_schemas():
    """Make the custom nodes known to onnx (the exporter builds nodes from their schemas); idempotent."""
    from onnx import defs
    P = defs.OpSchema.FormalParameter
    floats = ['tensor(float)', 'tensor(double)', 'tensor(float16)', 'tensor(bfloat16)']
    for name, (inputs, outputs, attributes) in _SCHEMAS.items():
        if defs.has(name, VERSION, DOMAIN):
            continue
        defs.register_schema(
            defs.OpSchema(name,
                          DOMAIN,
                          VERSION,
                          inputs=[P(i, 'I' if i == 'cols_index' else 'T') for i in inputs],
                          outputs=[P(o, 'T') for o in outputs],
                          type_constraints=[('T', floats, 'floating tensors'), ('I', ['tensor(int64)'], 'indices')],
                          attributes=[defs.OpSchema.Attribute(a, defs.OpSchema.AttrType.INT, a) for a in attributes]))


def custom_translation_table() -> Dict[Callable, Callable]:
    """{torch op: its ONNX translation} for every op of ``mmtransnext._ext`` that a forward calls."""
    import onnxscript
    from onnxscript import opset18 as op
    register_schemas()
    mmtn = onnxscript.values.Opset(DOMAIN, VERSION)

    def local_similarity(query, key, bias, height: int, width: int, window_size: int):
        return mmtn.LocalSimilarity(query, key, bias, height=height, width=width, window_size=window_size)

    def local_aggregation(weights, value, height: int, width: int, window_size: int):
        return mmtn.LocalAggregation(weights, value, height=height, width=width, window_size=window_size)

    def pooled_attention(query, key, value, bias_rows, cols_index, cols_weight, local_logits, height: int, width: int):
        inputs = (query, key, value, bias_rows, cols_index, cols_weight, local_logits)  # the op's, in its order
        return mmtn.PooledAttention(*inputs, height=height, width=width)

    def position_bias_mlp(coords, w1, b1, w2, b2):  # relu(coords w1^T + b1) w2^T + b2, as (heads, offsets)
        hidden = op.Relu(op.Add(op.MatMul(coords, op.Transpose(w1, perm=[1, 0])), b1))
        return op.Transpose(op.Add(op.MatMul(hidden, op.Transpose(w2, perm=[1, 0])), b2), perm=[1, 0])

    def gelu_gate(gate, value):  # exact GELU (opset 18 has no Gelu): gate / 2 * (1 + erf(gate / sqrt 2))
        one, half = op.CastLike(1.0, gate), op.CastLike(0.5, gate)
        erf = op.Erf(op.Mul(gate, op.CastLike(0.7071067811865476, gate)))
        return op.Mul(op.Mul(op.Mul(gate, half), op.Add(erf, one)), value)

    ops = torch.ops.mmtransnext
    return {
        ops.local_similarity.default: local_similarity,
        ops.local_aggregation.default: local_aggregation,
        ops.pooled_attention.default: pooled_attention,
        ops.position_bias_mlp.default: position_bias_mlp,
        ops.gelu_gate.default: gelu_gate
    }
