"""Per-size geometry of TransNeXt attention: continuous position bias coordinates, local-window
padding mask and sequence-length scale.

Everything here is a pure function of the feature size (and the stage's settings), computed
without gradients, so the backbone can cache it per input size.
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from ...ops.local_attention import local_window_stats
from ...ops.pooled_attention import invert_cols_taps

Size2d = Tuple[int, int]


def relative_position_table(query_size: Size2d,
                            key_size: Size2d,
                            pretrain_size: Size2d,
                            device=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-spaced relative coordinates between a query grid and its pooled key grid, per axis.

    Key positions are the average-pooled query coordinates (the pooled tokens sit at the centre of
    their pooling window). Coordinates are normalised by the pretraining grid, so that a model
    pretrained at 224 px sees the same coordinate range at any resolution.

    The (h, w) offsets of all query-key pairs form the Cartesian product of the per-axis offsets,
    so the unique rows of the official ``torch.unique(pairs, dim=0)`` are the product of the
    per-axis unique values, in the same lexicographic order: found per axis, without sorting
    Nq * Nk rows.

    Args:
        query_size (tuple[int]): (H, W) of the query grid.
        key_size (tuple[int]): (H, W) of the pooled key grid.
        pretrain_size (tuple[int]): (H, W) of this stage's grid at pretraining resolution.
        device (torch.device, optional): where to build the tensors. Defaults to None (CPU).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``inverse_h`` (H_q, H_k) and ``inverse_w`` (W_q, W_k), the
        per-axis offset indices, and ``table`` (U_h * U_w, 2), the unique transformed coordinates
        (row ``inverse_h * U_w + inverse_w`` for a pair), so the bias MLP runs on each offset once.
    """
    if min(pretrain_size) < 2:
        raise ValueError(f'pretrain_size gives a {pretrain_size} grid at this stage; it must be at '
                         'least 2 x 2 (use the resolution the checkpoint was pretrained at, e.g. 224)')
    uniques, inverses = [], []
    for q_len, k_len, p_len in zip(query_size, key_size, pretrain_size):
        q_axis = torch.arange(q_len, dtype=torch.float32, device=device)
        k_axis = F.adaptive_avg_pool1d(q_axis.unsqueeze(0), k_len).squeeze(0)
        relative = (q_axis[:, None] - k_axis[None, :]) / (p_len - 1) * 8  # (q_len, k_len)
        values, inverse = torch.unique(relative, return_inverse=True)
        uniques.append(values)
        inverses.append(inverse)
    table = torch.stack(torch.meshgrid(*uniques, indexing='ij'), dim=-1).reshape(-1, 2)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(
        torch.tensor(8, dtype=torch.float32, device=device))
    return inverses[0], inverses[1], table


def linear_resize_taps(in_len: int, out_len: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights of ``F.interpolate(mode='bilinear')`` along one axis.

    Bilinear resizing is separable: each output position reads at most two inputs of each axis,
    with the same weights as 1-d linear resizing (read off by resizing the identity).

    Returns:
        tuple[Tensor, Tensor]: (out_len, taps) long indices and float weights.
    """
    if in_len == out_len:
        return torch.arange(out_len, device=device)[:, None], torch.ones(out_len, 1, device=device)
    matrix = F.interpolate(torch.eye(in_len, device=device)[None], out_len, mode='linear')[0].T
    weight, index = matrix.topk(min(2, in_len), dim=-1)
    return index, weight


def _axis_bias_taps(inverse: torch.Tensor, out_query: int, out_key: int):
    """Taps of one axis of the resized bias: for output (query y, key k), the unique offsets and
    weights that bilinear resizing of the query and key grids combines.

    Returns:
        tuple[Tensor, Tensor]: (taps, out_query, out_key) indices into the axis' unique offsets and
        float weights; taps that are zero everywhere are dropped (one tap without resizing).
    """
    q_index, q_weight = linear_resize_taps(inverse.shape[0], out_query, inverse.device)
    k_index, k_weight = linear_resize_taps(inverse.shape[1], out_key, inverse.device)
    index = inverse[q_index[:, None, :, None], k_index[None, :, None, :]].flatten(2)
    weight = (q_weight[:, None, :, None] * k_weight[None, :, None, :]).flatten(2)
    used = weight.ne(0).flatten(0, 1).any(0)
    return index[..., used].permute(2, 0, 1), weight[..., used].permute(2, 0, 1)


class BiasTaps(NamedTuple):
    """How the real-size position bias (heads, H * W, ph * pw) is read from the MLP's per-offset
    values (heads, U_h, U_w), one axis at a time.

    H axis (small): ``rows_index`` (taps, H * ph) indices into U_h with ``rows_weight`` (taps,
    H * ph, 1), or None for a single tap of weight 1 (no resizing along H).
    W axis (full size): without resizing, ``cols_index`` (W * ph * pw,) gathers each query row's
    (ph, U_w) plane straight into the (W, ph, pw) layout; with resizing (``cols_grid`` = the
    (query, key) grid sizes along W), ``cols_index`` (grid_q * grid_k,) gathers the bias on that
    grid and one bilinear ``F.interpolate`` resizes it, a single pass at full size.
    For the fused op (``mmtransnext.ops.pooled_attention``), ``cols_taps_index`` / ``cols_taps_weight``
    (taps, W, pw) give the W axis as taps into U_w: one of weight 1 without resizing, up to 4 with it;
    ``cols_inverse`` lists, for each u of U_w, the (x, kx) taps that read it (the Triton backward gathers them).
    """
    table_shape: Size2d
    rows_index: torch.Tensor
    rows_weight: Optional[torch.Tensor]
    cols_index: torch.Tensor
    cols_grid: Optional[Size2d]
    cols_taps_index: torch.Tensor
    cols_taps_weight: torch.Tensor
    cols_inverse: Tuple[torch.Tensor, torch.Tensor]


def bias_taps(inverse_h: torch.Tensor, inverse_w: torch.Tensor, size: Size2d, pool_size: Size2d,
              table_shape: Size2d) -> BiasTaps:
    (H, W), (ph, pw), (_, u_w) = size, pool_size, table_shape
    rows_index, rows_weight = _axis_bias_taps(inverse_h, H, ph)  # (taps, H, ph)
    if rows_weight.shape[0] == 1 and bool(rows_weight.eq(1).all()):
        rows_weight = None
    else:
        rows_weight = rows_weight.flatten(1)[..., None]
    if tuple(inverse_w.shape) == (W, pw):
        ky = torch.arange(ph, device=inverse_w.device)[None, :, None]
        cols_index, cols_grid = (ky * u_w + inverse_w[:, None, :]).reshape(-1), None
    else:
        cols_index, cols_grid = inverse_w.reshape(-1), tuple(inverse_w.shape)
    cols_taps_index, cols_taps_weight = _axis_bias_taps(inverse_w, W, pw)
    cols_taps_index, cols_taps_weight = cols_taps_index.contiguous(), cols_taps_weight.contiguous()
    return BiasTaps(table_shape, rows_index.flatten(1), rows_weight, cols_index, cols_grid, cols_taps_index,
                    cols_taps_weight, invert_cols_taps(cols_taps_index, cols_taps_weight, u_w))


def position_bias_rows(values: torch.Tensor, taps: BiasTaps, size: Size2d, pool_size: Size2d) -> torch.Tensor:
    """The position bias resolved along H only: (heads, H, ph, U_w), from the MLP's values
    (heads, U_h * U_w). Small; the W axis is read through ``taps.cols_*``."""
    heads = values.shape[0]
    values = values.reshape(heads, *taps.table_shape)
    rows = None
    for t, index in enumerate(taps.rows_index):
        term = values.index_select(1, index)
        term = term if taps.rows_weight is None else term * taps.rows_weight[t]
        rows = term if rows is None else rows + term
    return rows.reshape(heads, size[0], pool_size[0], taps.table_shape[1])


def gather_position_bias(values: torch.Tensor, taps: BiasTaps, size: Size2d, pool_size: Size2d) -> torch.Tensor:
    """The position bias (heads, H * W, ph * pw) from the MLP's values (heads, U_h * U_w).

    Equals generating the bias on the ``img_size`` grids and resizing it bilinearly (keys, then
    queries, as the official model does) up to float rounding, without materialising it at the
    ``img_size`` grids: bilinear resizing is separable, so the H axis is resized on the small
    per-offset table and the W axis by one ``F.interpolate`` of (query, key) planes.
    """
    (H, W), (ph, pw) = size, pool_size
    heads = values.shape[0]
    rows = position_bias_rows(values, taps, size, pool_size)
    if taps.cols_grid is None:  # (heads, H, ph * U_w) -> (heads, H, W, ph, pw)
        return rows.reshape(heads, H, -1).index_select(2, taps.cols_index).reshape(heads, H * W, ph * pw)
    planes = rows.reshape(heads, H * ph, -1).index_select(2, taps.cols_index).reshape(heads * H, ph, *taps.cols_grid)
    planes = F.interpolate(planes, (W, pw), mode='bilinear')  # (heads * H, ph, W, pw)
    return planes.reshape(heads, H, ph, W, pw).transpose(2, 3).reshape(heads, H * W, ph * pw)


class StageGeometry(NamedTuple):
    """What one stage's attention needs about the current feature size.

    ``rel_table`` holds the coordinates the bias MLP runs on: offsets on the ``img_size`` grids in
    interpolation mode (the bias is then resized bilinearly to ``size`` / ``pool_size``, through
    ``bias_taps``), on the real grids in extrapolation mode.
    """
    size: Size2d
    pool_size: Size2d
    rel_table: torch.Tensor
    bias_taps: BiasTaps
    seq_length_scale: torch.Tensor
    padding_mask: Optional[torch.Tensor]


def stage_geometry(size: Size2d,
                   sr_ratio: int,
                   window_size: Optional[int],
                   pretrain_grid: Size2d,
                   trained_grid: Optional[Size2d],
                   device=None) -> StageGeometry:
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
    inverse_h, inverse_w, rel_table = relative_position_table(tuple(query_grid), key_grid, tuple(pretrain_grid),
                                                              None if device is None else torch.device(device))
    taps = bias_taps(inverse_h, inverse_w, size, pool_size, (inverse_h.max().item() + 1, inverse_w.max().item() + 1))
    pool_len = pool_size[0] * pool_size[1]
    if window_size is None:
        seq_length_scale = torch.log(torch.as_tensor(float(pool_len), device=device))
        padding_mask = None
    else:
        local_len, padding_mask = local_window_stats(size, window_size, device)
        seq_length_scale = torch.log(local_len + pool_len)
    return StageGeometry(size, pool_size, rel_table, taps, seq_length_scale, padding_mask)


def geometry_in(geometry: StageGeometry, dtype: torch.dtype, device=None) -> StageGeometry:
    """``geometry`` with its floating tensors (bias coordinates, tap weights, length scale) in ``dtype``: the
    parameters' type of a model converted with ``.half()`` / ``.bfloat16()``, where the authors' buffers would
    follow the conversion; and every tensor on ``device`` when given."""

    def cast(t):
        if isinstance(t, tuple) and any(isinstance(u, torch.Tensor) for u in t):  # cols_inverse
            return tuple(cast(u) for u in t)
        if not isinstance(t, torch.Tensor):
            return t  # sizes, None
        return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

    taps = BiasTaps(*(cast(t) for t in geometry.bias_taps))
    return geometry._replace(rel_table=cast(geometry.rel_table),
                             bias_taps=taps,
                             seq_length_scale=cast(geometry.seq_length_scale),
                             padding_mask=cast(geometry.padding_mask))
