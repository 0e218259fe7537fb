"""Per-size geometry of TransNeXt attention: continuous position bias coordinates, local-window
padding mask and sequence-length scale.

Everything here is a pure function of the feature size (and the stage's settings), computed
without gradients, so the backbone can cache it per input size.
"""
import functools
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

Size2d = Tuple[int, int]


# Memoised: in interpolation mode every input size of a stage uses the same img_size-grid table,
# whose index alone is Nq * Nk int64 (200 MB for stage 1 at img_size 800); keep one copy, not one per
# cached size. Callers must not modify the returned tensors.
@functools.lru_cache(maxsize=16)
def relative_position_table(query_size: Size2d, key_size: Size2d, pretrain_size: Size2d,
                            device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Log-spaced relative coordinates between a query grid and its pooled key grid.

    Key positions are the average-pooled query coordinates (the pooled tokens sit at the centre of
    their pooling window). Coordinates are normalised by the pretraining grid, so that a model
    pretrained at 224 px sees the same coordinate range at any resolution.

    Args:
        query_size (tuple[int]): (H, W) of the query grid.
        key_size (tuple[int]): (H, W) of the pooled key grid.
        pretrain_size (tuple[int]): (H, W) of this stage's grid at pretraining resolution.
        device (torch.device, optional): where to build the tensors. Defaults to None (CPU).

    Returns:
        tuple[Tensor, Tensor]: ``index`` (Nq * Nk,) into ``table`` (T, 2), the unique transformed
        coordinates, so that the bias MLP runs on each distinct offset once.
    """
    if min(pretrain_size) < 2:
        raise ValueError(f'pretrain_size gives a {pretrain_size} grid at this stage; it must be at '
                         'least 2 x 2 (use the resolution the checkpoint was pretrained at, e.g. 224)')
    # The (h, w) offsets of all query-key pairs form the Cartesian product of the per-axis offsets,
    # so the unique rows of the official `torch.unique(pairs, dim=0)` are the product of the per-axis
    # unique values (in the same lexicographic order): found per axis, without sorting Nq * Nk rows.
    uniques, inverses = [], []
    for q_len, k_len, p_len in zip(query_size, key_size, pretrain_size):
        q_axis = torch.arange(q_len, dtype=torch.float32, device=device)
        k_axis = F.adaptive_avg_pool1d(q_axis.unsqueeze(0), k_len).squeeze(0)
        relative = (q_axis[:, None] - k_axis[None, :]) / (p_len - 1) * 8  # (q_len, k_len)
        values, inverse = torch.unique(relative, return_inverse=True)
        uniques.append(values)
        inverses.append(inverse)
    (values_h, values_w), (inverse_h, inverse_w) = uniques, inverses
    table = torch.stack(torch.meshgrid(values_h, values_w, indexing='ij'), dim=-1).reshape(-1, 2)
    # index of the pair (query (qh, qw), key (kh, kw)), laid out as (qh, qw, kh, kw)
    index = (inverse_h[:, None, :, None] * len(values_w) + inverse_w[None, :, None, :]).reshape(-1)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(
        torch.tensor(8, dtype=torch.float32, device=device))
    return index, table


def local_window_stats(size: Size2d, window_size: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Number of in-image neighbours of each pixel and the mask of out-of-image ones.

    Returns:
        tuple[Tensor, Tensor]: ``local_len`` (N, 1) float and ``padding_mask`` (N, window_size**2)
        bool, True where the neighbour falls outside the feature map.
    """
    H, W = size
    r = window_size // 2
    offsets = torch.arange(-r, r + 1, device=device)
    inside_h = ((torch.arange(H, device=device)[:, None] + offsets) >= 0) & (
        (torch.arange(H, device=device)[:, None] + offsets) < H)  # (H, k)
    inside_w = ((torch.arange(W, device=device)[:, None] + offsets) >= 0) & (
        (torch.arange(W, device=device)[:, None] + offsets) < W)  # (W, k)
    inside = (inside_h[:, None, :, None] & inside_w[None, :, None, :]).reshape(H * W, -1)
    local_len = inside.sum(-1, keepdim=True).to(torch.float32)
    return local_len, ~inside


class StageGeometry(NamedTuple):
    """What one stage's attention needs about the current feature size.

    ``bias_query_grid`` / ``bias_key_grid`` are the grids the position bias is generated on: the
    ``img_size`` grids in interpolation mode (resized bilinearly to ``size`` / ``pool_size``), the
    real grids in extrapolation mode.
    """
    size: Size2d
    pool_size: Size2d
    rel_index: torch.Tensor
    rel_table: torch.Tensor
    bias_query_grid: Size2d
    bias_key_grid: Size2d
    seq_length_scale: torch.Tensor
    padding_mask: Optional[torch.Tensor]


def stage_geometry(size: Size2d, sr_ratio: int, window_size: Optional[int], pretrain_grid: Size2d,
                   trained_grid: Optional[Size2d], device=None) -> StageGeometry:
    """Build the :class:`StageGeometry` of one stage for a feature map of ``size``.

    Args:
        size (tuple[int]): real (H, W) of the stage's feature map.
        sr_ratio (int): pooling ratio of the stage (1: full attention).
        window_size (int | None): local window of aggregated attention; None for full attention.
        pretrain_grid (tuple[int]): the stage's grid at pretraining resolution.
        trained_grid (tuple[int] | None): the stage's grid at ``img_size`` (interpolation mode),
            or None (extrapolation mode: the bias is generated at the real size).
    """
    H, W = size
    pool_size = (H // sr_ratio, W // sr_ratio)
    if min(pool_size) < 1:
        raise ValueError(f'feature map {H}x{W} is smaller than the pooling ratio {sr_ratio} of its '
                         'stage; the input image is too small for this model')
    query_grid = trained_grid or size
    key_grid = (query_grid[0] // sr_ratio, query_grid[1] // sr_ratio)
    if min(key_grid) < 1:
        raise ValueError(f'img_size gives a {query_grid} grid, smaller than the pooling ratio '
                         f'{sr_ratio} of its stage: increase img_size')
    rel_index, rel_table = relative_position_table(tuple(query_grid), key_grid, tuple(pretrain_grid),
                                                   None if device is None else torch.device(device))
    pool_len = pool_size[0] * pool_size[1]
    if window_size is None:
        seq_length_scale = torch.log(torch.as_tensor(float(pool_len), device=device))
        padding_mask = None
    else:
        local_len, padding_mask = local_window_stats(size, window_size, device)
        seq_length_scale = torch.log(local_len + pool_len)
    return StageGeometry(size, pool_size, rel_index, rel_table, query_grid, key_grid,
                         seq_length_scale, padding_mask)


def resize_pool_bias(bias: torch.Tensor, geometry: StageGeometry) -> torch.Tensor:
    """Bilinearly resize a bias generated on the ``img_size`` grids to the real grids.

    Keys first, then queries, as the official implementation does (bilinear resizing is not
    exactly commutative in floating point).

    Args:
        bias (Tensor): (heads, Nq_grid, Nk_grid).

    Returns:
        Tensor: (heads, N, pool_len).
    """
    (qh, qw), (kh, kw) = geometry.bias_query_grid, geometry.bias_key_grid
    (H, W), (ph, pw) = geometry.size, geometry.pool_size
    heads = bias.shape[0]
    if (kh, kw) != (ph, pw):
        bias = F.interpolate(bias.reshape(heads, qh * qw, kh, kw), (ph, pw), mode='bilinear')
    bias = bias.reshape(heads, qh * qw, ph * pw).transpose(1, 2)
    if (qh, qw) != (H, W):
        bias = F.interpolate(bias.reshape(heads, ph * pw, qh, qw), (H, W), mode='bilinear')
    return bias.reshape(heads, ph * pw, H * W).transpose(1, 2)
