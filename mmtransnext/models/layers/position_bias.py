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

# Where the forward is traced, the feature sizes may be symbolic (dynamic shapes), and dynamo does not say whether
# they are: code here never branches on them then (a branch adds a guard that pins the size). ``sizes_known=False``
# says so; the code it selects computes the same values.


def _pool_window_centres(q_len, k_len, sizes_known: bool = True, device=None) -> Tuple[torch.Tensor, int]:
    """Twice the centres of adaptive average pooling's ``k_len`` windows over ``0 .. q_len - 1``: window k spans
    ``[floor(k q / K), ceil((k + 1) q / K))``, so its centre is (start + end - 1) / 2, a half-integer. Returns
    the (k_len,) integer tensor, and the step between the distinct offsets ``2 q - 2 centre``: 2 when every centre
    has the same parity (found for known sizes), else 1 (also where the sizes are not known)."""
    k = torch.arange(k_len, device=device)
    twice = (k * q_len).div(k_len, rounding_mode='floor') + (
        (k + 1) * q_len + k_len - 1).div(k_len, rounding_mode='floor') - 1
    step = 1
    if sizes_known:
        parities = {(i * q_len // k_len + ((i + 1) * q_len + k_len - 1) // k_len - 1) % 2 for i in range(k_len)}
        step = 2 if len(parities) == 1 else 1
    return twice, step


class PositionTable(NamedTuple):
    """Per-axis offset indices of every (query, key) pair and the coordinates of the offsets."""
    inverse_h: torch.Tensor  # (H_q, H_k) long: each pair's offset along H, an index into U_h
    inverse_w: torch.Tensor  # (W_q, W_k) long, into U_w
    table: torch.Tensor  # (U_h * U_w, 2) transformed coordinates; row inverse_h * U_w + inverse_w for a pair
    shape: Size2d  # (U_h, U_w)


def relative_position_table(query_size: Size2d,
                            key_size: Size2d,
                            pretrain_size: Size2d,
                            device=None,
                            sizes_known: bool = True) -> PositionTable:
    """Log-spaced relative coordinates between a query grid and its pooled key grid, per axis.

    Key positions are the average-pooled query coordinates (the pooled tokens sit at the centre of
    their pooling window). Coordinates are normalised by the pretraining grid, so that a model
    pretrained at 224 px sees the same coordinate range at any resolution.

    The official model runs the bias MLP on ``torch.unique`` of all query-key offsets. Here the offsets come from
    the sizes alone, with no data-dependent step (``torch.compile`` and ``torch.export`` trace it for symbolic
    sizes): along an axis, twice an offset is the integer ``2 q - (start + end - 1)`` of a pooling window, so the
    table holds every such integer between the extremes, in ascending order. Its values are exactly the
    official ones (``(2 q - c) * 0.5`` is the exact offset, divided and scaled as the official code does); where
    all window centres share a parity (every integer size checked) the table is exactly ``torch.unique``'s,
    otherwise it has a few entries no pair reads, whose bias is computed and never used. The (h, w) offsets of
    all pairs are the Cartesian product of the per-axis offsets, so the table is the product of the axes' tables.

    Args:
        query_size (tuple[int]): (H, W) of the query grid.
        key_size (tuple[int]): (H, W) of the pooled key grid.
        pretrain_size (tuple[int]): (H, W) of this stage's grid at pretraining resolution.
        device (torch.device, optional): where to build the tensors. Defaults to None (CPU).
        sizes_known (bool): the grids' sizes are known values, not symbolic (see above). Defaults to True.

    Returns:
        PositionTable: the per-axis offset indices of the pairs and the coordinates of the offsets, so that the
        bias MLP runs on each offset once.
    """
    if min(pretrain_size) < 2:
        raise ValueError(f'pretrain_size gives a {pretrain_size} grid at this stage; it must be at '
                         'least 2 x 2 (use the resolution the checkpoint was pretrained at, e.g. 224)')
    axes, inverses, lengths = [], [], []
    for q_len, k_len, p_len in zip(query_size, key_size, pretrain_size):
        twice_centre, step = _pool_window_centres(q_len, k_len, sizes_known, device)
        if sizes_known:
            lowest = -((k_len - 1) * q_len // k_len + q_len - 1)  # 2 * 0 - the last window's twice-centre
            highest = 2 * (q_len - 1) - ((q_len + k_len - 1) // k_len - 1)  # 2 (q_len - 1) - the first one's
        else:  # bounds without nested floor divisions, which torch.export cannot bound over a range of sizes
            lowest, highest = -2 * (q_len - 1), 2 * (q_len - 1)  # twice-centres lie in [0, 2 (q_len - 1)]
        twice_offset = torch.arange(lowest, highest + 1, step, device=device)
        q_axis = torch.arange(q_len, device=device)
        inverse = (2 * q_axis[:, None] - twice_centre[None, :] - lowest).div(step, rounding_mode='floor')
        axes.append(twice_offset.to(torch.float32) * 0.5 / (p_len - 1) * 8)
        inverses.append(inverse)
        lengths.append((highest - lowest) // step + 1)
    table = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(-1, 2)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(
        torch.tensor(8, dtype=torch.float32, device=device))
    return PositionTable(inverses[0], inverses[1], table, tuple(lengths))


def linear_resize_taps(in_len: int,
                       out_len: int,
                       resize: bool = True,
                       device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights of ``F.interpolate(mode='bilinear')`` along one axis.

    Bilinear resizing is separable: each output position reads at most two inputs of each axis,
    with the same weights as 1-d linear resizing (read off by resizing the identity). Without
    ``resize`` (the sizes are equal), one tap of weight 1; resizing between equal sizes gives the
    same values with a second tap of weight 0.

    Returns:
        tuple[Tensor, Tensor]: (out_len, taps) long indices and float weights.
    """
    if not resize:
        return torch.arange(out_len, device=device)[:, None], torch.ones(out_len, 1, device=device)
    matrix = F.interpolate(torch.eye(in_len, device=device)[None], out_len, mode='linear')[0].T
    weight, index = matrix.topk(min(2, in_len), dim=-1)
    return index, weight


def _axis_bias_taps(inverse: torch.Tensor, out_query: int, out_key: int, resize_query: bool, resize_key: bool):
    """Taps of one axis of the resized bias: for output (query y, key k), the offsets and weights that
    bilinear resizing of the query and key grids combines.

    Returns:
        tuple[Tensor, Tensor]: (taps, out_query, out_key) indices into the axis' offsets and float weights;
        one tap without resizing, up to 2 per resized grid (some may be 0 everywhere: they add exact zeros).
    """
    q_index, q_weight = linear_resize_taps(inverse.shape[0], out_query, resize_query, inverse.device)
    k_index, k_weight = linear_resize_taps(inverse.shape[1], out_key, resize_key, inverse.device)
    index = inverse[q_index[:, None, :, None], k_index[None, :, None, :]].flatten(2)
    weight = (q_weight[:, None, :, None] * k_weight[None, :, None, :]).flatten(2)
    return index.permute(2, 0, 1), weight.permute(2, 0, 1)


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
    ``cols_inverse`` lists, for each u of U_w, the (x, kx) taps that read it (the Triton backward gathers them),
    or None where the geometry is traced (the Triton op then finds them itself: a data-dependent step).
    """
    table_shape: Size2d
    rows_index: torch.Tensor
    rows_weight: Optional[torch.Tensor]
    cols_index: torch.Tensor
    cols_grid: Optional[Size2d]
    cols_taps_index: torch.Tensor
    cols_taps_weight: torch.Tensor
    cols_inverse: Optional[Tuple[torch.Tensor, torch.Tensor]]


def bias_taps(inverse_h: torch.Tensor,
              inverse_w: torch.Tensor,
              size: Size2d,
              pool_size: Size2d,
              table_shape: Size2d,
              resize: bool = True,
              invert: bool = True,
              sizes_known: bool = True) -> BiasTaps:
    """The :class:`BiasTaps` of the offsets ``inverse_h`` / ``inverse_w`` (on the grids the bias is generated on)
    for a ``size`` query grid and ``pool_size`` key grid; ``resize``: the bias is generated on other grids
    (interpolation mode) and resized bilinearly wherever their sizes are not known to be equal.
    ``invert``: also build ``cols_inverse`` (not where traced). ``sizes_known``: ``size`` is a known value, not
    symbolic (see above); else it is resized from any other grid, which gives the same values where they are equal."""
    (H, W), (ph, pw), (_, u_w) = size, pool_size, table_shape

    def resizes(grid, real):
        return resize and not (sizes_known and grid == real)

    resize_h = [resizes(a, b) for a, b in zip(inverse_h.shape, (H, ph))]
    resize_w = [resizes(a, b) for a, b in zip(inverse_w.shape, (W, pw))]
    rows_index, rows_weight = _axis_bias_taps(inverse_h, H, ph, *resize_h)  # (taps, H, ph)
    rows_weight = rows_weight.flatten(1)[..., None] if any(resize_h) else None
    if not any(resize_w):
        ky = torch.arange(ph, device=inverse_w.device)[None, :, None]
        cols_index, cols_grid = (ky * u_w + inverse_w[:, None, :]).reshape(-1), None
    else:
        cols_index, cols_grid = inverse_w.reshape(-1), tuple(inverse_w.shape)
    cols_taps_index, cols_taps_weight = _axis_bias_taps(inverse_w, W, pw, *resize_w)
    cols_taps_index, cols_taps_weight = cols_taps_index.contiguous(), cols_taps_weight.contiguous()
    cols_inverse = invert_cols_taps(cols_taps_index, cols_taps_weight, u_w) if invert else None
    return BiasTaps(table_shape, rows_index.flatten(1), rows_weight, cols_index, cols_grid, cols_taps_index,
                    cols_taps_weight, cols_inverse)


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
                   device=None,
                   traced: bool = False) -> StageGeometry:
    """Build the :class:`StageGeometry` of one stage for a feature map of ``size``.

    Args:
        size (tuple[int]): real (H, W) of the stage's feature map.
        sr_ratio (int): pooling ratio of the stage (1: full attention).
        window_size (int | None): local window of aggregated attention; None for full attention.
        pretrain_grid (tuple[int]): the stage's grid at pretraining resolution.
        trained_grid (tuple[int] | None): the stage's grid at ``img_size`` (interpolation mode),
            or None (extrapolation mode: the bias is generated at the real size).
        device (torch.device, optional): where to build it. Defaults to None (CPU).
        traced (bool): the geometry is built inside a traced forward (``torch.compile`` / ``torch.export``),
            where ``size`` may be symbolic: nothing branches on it, and the Triton backward's ``cols_inverse`` (a
            data-dependent step) is left to the op. Defaults to False.

    Nothing here depends on a tensor's values, so the whole function traces into the graph.
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
    # the grids the bias is generated on: img_size's (config values) or, extrapolating, the real ones
    positions = relative_position_table(query_grid,
                                        key_grid,
                                        pretrain_grid,
                                        device,
                                        sizes_known=not traced or trained_grid is not None)
    taps = bias_taps(positions.inverse_h,
                     positions.inverse_w,
                     size,
                     pool_size,
                     positions.shape,
                     resize=trained_grid is not None,
                     invert=not traced,
                     sizes_known=not traced)
    pool_len = pool_size[0] * pool_size[1]
    if window_size is None:
        seq_length_scale = torch.log(torch.full((), pool_len, dtype=torch.float32, device=device))
        padding_mask = None
    else:
        local_len, padding_mask = local_window_stats(size, window_size, device)
        seq_length_scale = torch.log(local_len + pool_len)
    return StageGeometry(size, pool_size, positions.table, taps, seq_length_scale, padding_mask)


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
