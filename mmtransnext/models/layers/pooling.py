"""Adaptive average pooling written as two products with averaging matrices: the same sums as
``F.adaptive_avg_pool2d`` (up to float rounding) for any input size, symbolic ones included.

Inductor's pooling lowering fixes its windows from the sizes it was traced with: under ``torch.compile`` with dynamic
sizes that is a recompilation per size (torch 2.14, CPU) or a lowering error (torch 2.11, CUDA: "cannot determine
truth value of Relational"), and an AOTInductor package for a range of sizes computed the windows of the export
size at every size (0.28 relative error at 104 px for a 64 px export). The products have no such windows.
"""
import contextlib

import torch

_as_products = False  # set by pooling_as_products(); a plain global, which dynamo (strict torch.export) reads too


@contextlib.contextmanager
def pooling_as_products():
    """TransNeXt's attention pools with the averaging matrices (``pool_tokens``) while this is active, also where
    torch.compile is not tracing it: ``tools/deployment/export_aoti.py`` exports under it, so the program AOTInductor
    compiles for a range of sizes has no pooling to decompose (one trace of the backbone fewer)."""
    global _as_products
    previous, _as_products = _as_products, True
    try:
        yield
    finally:
        _as_products = previous


def pools_as_products() -> bool:
    """Whether ``pooling_as_products()`` is active."""
    return _as_products


def averaging_matrix(size_in, size_out, device, dtype) -> torch.Tensor:
    """(size_out, size_in): row i averages the inputs adaptive average pooling reads for output i, positions
    ``floor(i * size_in / size_out)`` to ``ceil((i + 1) * size_in / size_out)`` (exclusive)."""
    i = torch.arange(size_out, device=device)[:, None]
    start, end = (i * size_in) // size_out, ((i + 1) * size_in + size_out - 1) // size_out
    j = torch.arange(size_in, device=device)
    return ((j >= start) & (j < end)).to(dtype) / (end - start).to(dtype)


def pool_tokens(tokens: torch.Tensor, size, pool_size) -> torch.Tensor:
    """(B, H * W, C) tokens (an NHWC map) pooled to (B, ph * pw, C). No channels_last view is made (inductor's
    dynamic-size training graphs cannot keep one: conv_glu.py)."""
    B, N, C = tokens.shape
    (H, W), (ph, pw) = size, pool_size
    rows = averaging_matrix(H, ph, tokens.device, tokens.dtype) @ tokens.reshape(B, H, W * C)  # (B, ph, W * C)
    pooled = averaging_matrix(W, pw, tokens.device, tokens.dtype) @ rows.reshape(B * ph, W, C)  # (B * ph, pw, C)
    return pooled.reshape(B, ph * pw, C)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` of an (..., H, W) map: the decomposition a program exported for a range of sizes gets
    before AOTInductor compiles it, where a backbone other than TransNeXt pools
    (``utils.export.range_decompositions``)."""
    (H, W), (ph, pw) = x.shape[-2:], output_size
    return averaging_matrix(H, ph, x.device, x.dtype) @ x @ averaging_matrix(W, pw, x.device, x.dtype).t()
