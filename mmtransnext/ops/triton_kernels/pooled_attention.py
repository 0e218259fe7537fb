"""Triton kernels of the split-softmax pooled attention (``mmtransnext.ops.pooled_attention``).

Forward, flash-style: a program per (query tile, batch x head) runs over pooled-key tiles through ``tl.dot``, builds
each tile's position bias from the per-row table and the column taps (never a (heads, N, P) tensor), merges the
tile's logits into a running log-sum-exp that starts from the query's local logits, and saves the log-sum-exp.

Backward, FlashAttention-2 style: probabilities recomputed from the saved log-sum-exp.

* query gradient: a program per (query tile, head) over the images of the batch and the key tiles; it also writes
  the position-bias gradient of its tile, summed over the batch (a (heads, N, P) float32 buffer of the backward);
* key / value gradients: a program per (key tile, query split); the splits' partial sums are added by torch in a
  fixed order;
* bias-table gradient: a program per (head, query row y, tile of pooled rows ky) gathers, for each table column u,
  the (x, kx, tap) entries that read it (``cols_inverse``) from that buffer.

No float atomics anywhere: two runs give the same bits.

Float32 products run in IEEE float32 unless torch's matmuls may use TF32; half / bfloat16 inputs are multiplied in
their type and accumulated in float32. The head size is padded to a power of two >= 16 with masked loads.
"""
import triton
import triton.language as tl

from . import interpreting, launch

NEG_INF = tl.constexpr(float('-inf'))  # a global a kernel reads must be a constexpr


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """``tl.dot`` accumulating in float32. 'upcast': bfloat16 tiles multiplied as float32 (the same products, exact
    in float32; Triton's interpreter multiplies bfloat16 tiles wrongly, measured with Triton 3.8)."""
    if PRECISION == 'upcast':
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision='ieee')
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _position_bias(ROWS, CIDX, CW, h, y, x, rn, mask, H, W, ph, pw, U, TAPS: tl.constexpr):
    """bias[(y, x), (ky, kx)] = sum_t CW[t, x, kx] * ROWS[h, y, ky, CIDX[t, x, kx]] on a tile (any 2-d shape of
    query positions y / x against pooled keys rn)."""
    ky = rn // pw
    kx = rn % pw
    base = ((h * H + y) * ph + ky) * U
    bias = tl.zeros(mask.shape, tl.float32)
    for t in tl.static_range(TAPS):
        tap = (t * W + x) * pw + kx
        index = tl.load(CIDX + tap, mask=mask, other=0)
        weight = tl.load(CW + tap, mask=mask, other=0.)
        bias += weight * tl.load(ROWS + base + index, mask=mask, other=0.)
    return bias


@triton.jit
def _query_rows(start, N, W, BM: tl.constexpr):
    """A tile of BM queries from ``start``: their indices rm, which of them are queries (rm < N), their (y, x)."""
    rm = start + tl.arange(0, BM)
    return rm, rm < N, rm // W, rm % W


@triton.jit
def _key_tile(q, K, V, bh, rn, rd, rdv, ROWS, CIDX, CW, h, y, x, row_ok, P, D, DV, H, W, ph, pw, U, TAPS: tl.constexpr,
              PRECISION: tl.constexpr):
    """What the forward and the query gradient read of a tile of pooled keys rn against their query tile: the
    (queries, keys) logits q . key + bias, -inf past the last key; the keys; their values."""
    col_ok = rn < P
    k = tl.load(K + (bh * P + rn[:, None]) * D + rd[None, :], mask=col_ok[:, None] & (rd[None, :] < D), other=0.)
    s = _dot(q, tl.trans(k), PRECISION)
    s += _position_bias(ROWS, CIDX, CW, h, y[:, None], x[:, None], rn[None, :], row_ok[:, None] & col_ok[None, :], H, W,
                        ph, pw, U, TAPS)
    v = tl.load(V + (bh * P + rn[:, None]) * DV + rdv[None, :], mask=col_ok[:, None] & (rdv[None, :] < DV), other=0.)
    return tl.where(col_ok[None, :], s, NEG_INF), k, v


@triton.jit
def pooled_forward_kernel(Q, K, V, ROWS, CIDX, CW, LOCAL, OUT, LOCAL_W, LSE, heads, N, P, D, DV, L, H, W, ph, pw, U,
                          TAPS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
                          BL: tl.constexpr, HAS_LOCAL: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(1)
    h = bh % heads
    rm, row_ok, y, x = _query_rows(tl.program_id(0) * BM, N, W, BM)
    rd = tl.arange(0, BD)
    rdv = tl.arange(0, BDV)
    q = tl.load(Q + (bh * N + rm[:, None]) * D + rd[None, :], mask=row_ok[:, None] & (rd[None, :] < D), other=0.)

    # the running max / sum start from the local logits (-inf where a neighbour is outside the map)
    if HAS_LOCAL:
        rl = tl.arange(0, BL)
        local_mask = row_ok[:, None] & (rl[None, :] < L)
        local = tl.load(LOCAL + (bh * N + rm[:, None]) * L + rl[None, :], mask=local_mask, other=NEG_INF)
        m = tl.max(local, 1)
        l_sum = tl.sum(tl.exp(local - tl.where(m == NEG_INF, 0., m)[:, None]), 1)
    else:
        m = tl.full([BM], NEG_INF, tl.float32)
        l_sum = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BDV], tl.float32)
    for start in range(0, P, BN):
        rn = start + tl.arange(0, BN)
        s, _, v = _key_tile(q, K, V, bh, rn, rd, rdv, ROWS, CIDX, CW, h, y, x, row_ok, P, D, DV, H, W, ph, pw, U, TAPS,
                            PRECISION)
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l_sum = l_sum * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION)
        m = m_new
    lse = m + tl.log(l_sum)
    tl.store(OUT + (bh * N + rm[:, None]) * DV + rdv[None, :],
             acc / l_sum[:, None],
             mask=row_ok[:, None] & (rdv[None, :] < DV))
    tl.store(LSE + bh * N + rm, lse, mask=row_ok)
    if HAS_LOCAL:
        tl.store(LOCAL_W + (bh * N + rm[:, None]) * L + rl[None, :], tl.exp(local - lse[:, None]), mask=local_mask)


@triton.jit
def _query_side(Q, GRAD_OUT, LSE, DELTA, bh, rm, rd, rdv, row_ok, N, D, DV):
    """What both gradient kernels read of a query tile: queries, output gradients, log-sum-exps and deltas."""
    q = tl.load(Q + (bh * N + rm[:, None]) * D + rd[None, :], mask=row_ok[:, None] & (rd[None, :] < D), other=0.)
    grad_out = tl.load(GRAD_OUT + (bh * N + rm[:, None]) * DV + rdv[None, :],
                       mask=row_ok[:, None] & (rdv[None, :] < DV),
                       other=0.)
    lse = tl.load(LSE + bh * N + rm, mask=row_ok, other=0.)
    delta = tl.load(DELTA + bh * N + rm, mask=row_ok, other=0.)
    return q, grad_out, lse, delta


@triton.jit
def pooled_query_grad_kernel(Q, K, V, ROWS, CIDX, CW, GRAD_OUT, LSE, DELTA, GRAD_Q, GRAD_BIAS, batch, heads, N, P, D,
                             DV, H, W, ph, pw, U, TAPS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                             BD: tl.constexpr, BDV: tl.constexpr, PRECISION: tl.constexpr):
    """d query, and d bias (heads, N, P) summed over the batch: this program owns its tile of GRAD_BIAS and adds
    the images into it one after another (a fixed order, no atomics)."""
    h = tl.program_id(1)
    rm, row_ok, y, x = _query_rows(tl.program_id(0) * BM, N, W, BM)
    rd = tl.arange(0, BD)
    rdv = tl.arange(0, BDV)
    for b in range(batch):
        bh = b * heads + h
        q, grad_out, lse, delta = _query_side(Q, GRAD_OUT, LSE, DELTA, bh, rm, rd, rdv, row_ok, N, D, DV)
        grad_q = tl.zeros([BM, BD], tl.float32)
        for start in range(0, P, BN):
            rn = start + tl.arange(0, BN)
            s, k, v = _key_tile(q, K, V, bh, rn, rd, rdv, ROWS, CIDX, CW, h, y, x, row_ok, P, D, DV, H, W, ph, pw, U,
                                TAPS, PRECISION)
            p = tl.exp(s - lse[:, None])
            dp = _dot(grad_out, tl.trans(v), PRECISION)
            ds = tl.where(row_ok[:, None], p * (dp - delta[:, None]), 0.)
            grad_q += _dot(ds.to(k.dtype), k, PRECISION)
            bias_at = GRAD_BIAS + (h * N + rm[:, None]) * P + rn[None, :]
            bias_mask = row_ok[:, None] & (rn[None, :] < P)
            if b > 0:
                ds += tl.load(bias_at, mask=bias_mask, other=0.)
            tl.store(bias_at, ds, mask=bias_mask)
        # the next image's load of a tile element may come from another thread than this store: a block-wide
        # barrier makes this image's stores visible first (loads and stores need not share a layout)
        tl.debug_barrier()
        tl.store(GRAD_Q + (bh * N + rm[:, None]) * D + rd[None, :], grad_q, mask=row_ok[:, None] & (rd[None, :] < D))


@triton.jit
def pooled_key_grad_kernel(Q, K, V, ROWS, CIDX, CW, GRAD_OUT, LSE, DELTA, GRAD_K_PART, GRAD_V_PART, BH, heads, N, P, D,
                           DV, H, W, ph, pw, U, queries_per_split, TAPS: tl.constexpr, BM: tl.constexpr,
                           BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(1)
    split = tl.program_id(2)
    h = bh % heads
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    col_ok = rn < P
    rd = tl.arange(0, BD)
    rdv = tl.arange(0, BDV)
    k = tl.load(K + (bh * P + rn[:, None]) * D + rd[None, :], mask=col_ok[:, None] & (rd[None, :] < D), other=0.)
    v = tl.load(V + (bh * P + rn[:, None]) * DV + rdv[None, :], mask=col_ok[:, None] & (rdv[None, :] < DV), other=0.)
    grad_k = tl.zeros([BN, BD], tl.float32)
    grad_v = tl.zeros([BN, BDV], tl.float32)
    first = split * queries_per_split
    for start in range(first, tl.minimum(first + queries_per_split, N), BM):
        rm, row_ok, y, x = _query_rows(start, N, W, BM)
        q, grad_out, lse, delta = _query_side(Q, GRAD_OUT, LSE, DELTA, bh, rm, rd, rdv, row_ok, N, D, DV)
        s = _dot(q, tl.trans(k), PRECISION)
        s += _position_bias(ROWS, CIDX, CW, h, y[:, None], x[:, None], rn[None, :], row_ok[:, None] & col_ok[None, :],
                            H, W, ph, pw, U, TAPS)
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.exp(s - lse[:, None]), 0.)
        grad_v += _dot(tl.trans(p).to(grad_out.dtype), grad_out, PRECISION)
        dp = _dot(grad_out, tl.trans(v), PRECISION)
        ds = p * (dp - delta[:, None])
        grad_k += _dot(tl.trans(ds).to(q.dtype), q, PRECISION)
    part = split * BH + bh
    tl.store(GRAD_K_PART + (part * P + rn[:, None]) * D + rd[None, :], grad_k, mask=col_ok[:, None] & (rd[None, :] < D))
    tl.store(GRAD_V_PART + (part * P + rn[:, None]) * DV + rdv[None, :],
             grad_v,
             mask=col_ok[:, None] & (rdv[None, :] < DV))


@triton.jit
def bias_rows_grad_kernel(GRAD_BIAS, INV_INDEX, INV_WEIGHT, GRAD_ROWS, H, N, P, W, ph, pw, U, E, BK: tl.constexpr,
                          BU: tl.constexpr, BE: tl.constexpr):
    """GRAD_ROWS[h, y, ky, u] = sum of weight * GRAD_BIAS[h, (y, x), (ky, kx)] over the entries (x, kx) that read
    u: gathered per u in a fixed order, where a scatter into u would need atomics. A program per (head, query row
    y, tile of pooled rows ky)."""
    hy = tl.program_id(0)  # h * H + y
    h = hy // H
    y = hy % H
    rk = tl.program_id(1) * BK + tl.arange(0, BK)
    k_ok = rk < ph
    base = GRAD_BIAS + (h * N + y * W) * P
    for u_start in range(0, U, BU):
        ru = u_start + tl.arange(0, BU)
        acc = tl.zeros([BK, BU], tl.float32)
        for start in range(0, E, BE):
            at = ru[:, None] * E + start + tl.arange(0, BE)[None, :]
            mask = (ru < U)[:, None] & (start + tl.arange(0, BE) < E)[None, :]
            entry = tl.load(INV_INDEX + at, mask=mask, other=0)  # x * pw + kx
            weight = tl.load(INV_WEIGHT + at, mask=mask, other=0.)
            column = (entry // pw) * P + entry % pw
            grad = tl.load(base + (rk * pw)[:, None, None] + column[None, :, :],
                           mask=k_ok[:, None, None] & mask[None, :, :],
                           other=0.)
            acc += tl.sum(weight[None, :, :] * grad, 2)
        tl.store(GRAD_ROWS + (hy * ph + rk[:, None]) * U + ru[None, :], acc, mask=k_ok[:, None] & (ru < U)[None, :])


# ----------------------------------------------------------------------------- launchers

# Tile sizes and warps: for a GPU; the interpreter runs one program after another, so larger tiles (fewer programs)
# are faster there. Tests set them to check ragged tiles either way.
# M / N: queries / pooled keys per tile of the forward and the query gradient; KEY_M: queries per step of the key
# gradient. On a GPU, chosen so that no kernel spills registers on sm_80 / sm_90 in float32 or bfloat16, per
# tools/analysis/triton_compile_check.py (64 x 64 tiles spill kilobytes per thread in float32). The same tiles fit the
# shared memory a block may have on every GPU that tool checks (sm_75 to sm_120: at most 116 of sm_100's 227 KB, 36
# of sm_75's 64 KB), so none is chosen per GPU.
# KEY_PROGRAMS: key-gradient programs to aim for (query splits), a few per SM of a large GPU.
# BIAS_ROWS: pooled rows ky of the bias-table gradient per program, ENTRIES the elements of its tiles.
TILES = dict(M=128, N=64, KEY_M=128, WARPS=4, ENTRIES=16384, KEY_PROGRAMS=8, BIAS_ROWS=32) if interpreting() else \
    dict(M=64, N=32, KEY_M=16, WARPS=8, ENTRIES=2048, KEY_PROGRAMS=1024, BIAS_ROWS=4)


def dot_precision(dtype, device) -> str:
    """How ``tl.dot`` multiplies tiles of ``dtype``: float32 in IEEE float32 unless the user lets torch's own
    matmuls use TF32; half types in their type ('tf32' is Triton's default, ignored for them), bfloat16 as float32
    in the interpreter (see ``_dot``)."""
    import torch
    if dtype == torch.float32:
        return 'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'
    return 'upcast' if dtype == torch.bfloat16 and device.type == 'cpu' else 'tf32'


def _head_block(size: int) -> int:
    return max(16, triton.next_power_of_2(size))


def _sizes(query, key, value, bias_rows, cols_index):
    B, heads, N, D = query.shape
    _, H, ph, U = bias_rows.shape
    taps, W, pw = cols_index.shape
    return dict(B=B, heads=heads, N=N, P=key.shape[2], D=D, DV=value.shape[-1], H=H, W=W, ph=ph, pw=pw, U=U, taps=taps)


def pooled_forward(query, key, value, bias_rows, cols_index, cols_weight, local_logits, precision):
    """(out, local_weights, lse) of the split softmax; query / key / value share a dtype, the rest is float32."""
    import torch
    s = _sizes(query, key, value, bias_rows, cols_index)
    L = local_logits.shape[-1]
    out = query.new_empty(*query.shape[:3], s['DV'])
    local_weights = torch.empty_like(local_logits)
    lse = query.new_empty(query.shape[:3], dtype=torch.float32)
    grid = (triton.cdiv(s['N'], TILES['M']), s['B'] * s['heads'])
    inputs = (query, key, value, bias_rows, cols_index, cols_weight, local_logits)  # the op's, in its order
    launch(pooled_forward_kernel, grid, query)(*inputs,
                                               out,
                                               local_weights,
                                               lse,
                                               s['heads'],
                                               s['N'],
                                               s['P'],
                                               s['D'],
                                               s['DV'],
                                               L,
                                               s['H'],
                                               s['W'],
                                               s['ph'],
                                               s['pw'],
                                               s['U'],
                                               TAPS=s['taps'],
                                               BM=TILES['M'],
                                               BN=TILES['N'],
                                               BD=_head_block(s['D']),
                                               BDV=_head_block(s['DV']),
                                               BL=max(1, triton.next_power_of_2(L)),
                                               HAS_LOCAL=L > 0,
                                               PRECISION=precision,
                                               num_warps=TILES['WARPS'])
    return out, local_weights, lse


def pooled_backward(grad_out, delta, query, key, value, bias_rows, cols_index, cols_weight, inverse_index,
                    inverse_weight, lse, precision):
    """Gradients of query, key, value and bias_rows, given ``delta`` = rowsum(grad_out * out) + rowsum(grad of the
    local weights * local weights) - grad of lse (B, heads, N), float32."""
    import torch
    s = _sizes(query, key, value, bias_rows, cols_index)
    BH = s['B'] * s['heads']
    BD, BDV = _head_block(s['D']), _head_block(s['DV'])
    common = dict(TAPS=s['taps'], BD=BD, BDV=BDV)
    sizes = (s['N'], s['P'], s['D'], s['DV'], s['H'], s['W'], s['ph'], s['pw'], s['U'])

    # what both gradient kernels read
    tiles_in = (query, key, value, bias_rows, cols_index, cols_weight, grad_out, lse, delta)
    grad_query = torch.empty_like(query)
    # the position-bias gradient summed over the batch: (heads, N, P) float32, read once by the table's reduction
    grad_bias = query.new_empty(s['heads'], s['N'], s['P'], dtype=torch.float32)
    launch(pooled_query_grad_kernel, (triton.cdiv(s['N'], TILES['M']), s['heads']), query)(*tiles_in,
                                                                                           grad_query,
                                                                                           grad_bias,
                                                                                           s['B'],
                                                                                           s['heads'],
                                                                                           *sizes,
                                                                                           BM=TILES['M'],
                                                                                           BN=TILES['N'],
                                                                                           PRECISION=precision,
                                                                                           num_warps=TILES['WARPS'],
                                                                                           **common)

    # the queries are split between programs in whole steps of KEY_M
    key_tiles, query_steps = triton.cdiv(s['P'], TILES['N']), triton.cdiv(s['N'], TILES['KEY_M'])
    splits = min(query_steps, max(1, TILES['KEY_PROGRAMS'] // (key_tiles * BH)))
    queries_per_split = triton.cdiv(query_steps, splits) * TILES['KEY_M']
    splits = triton.cdiv(s['N'], queries_per_split)
    grad_key_part = query.new_empty(splits, *key.shape, dtype=torch.float32)
    grad_value_part = query.new_empty(splits, *value.shape, dtype=torch.float32)
    launch(pooled_key_grad_kernel, (key_tiles, BH, splits), query)(*tiles_in,
                                                                   grad_key_part,
                                                                   grad_value_part,
                                                                   BH,
                                                                   s['heads'],
                                                                   *sizes,
                                                                   queries_per_split,
                                                                   BM=TILES['KEY_M'],
                                                                   BN=TILES['N'],
                                                                   PRECISION=precision,
                                                                   num_warps=TILES['WARPS'],
                                                                   **common)

    grad_rows = torch.empty_like(bias_rows)
    E = inverse_index.shape[1]
    # a tile of (pooled rows ky, table columns u, their entries), ENTRIES elements in all
    block_k = min(triton.next_power_of_2(s['ph']), TILES['BIAS_ROWS'])
    block_e = min(triton.next_power_of_2(E), 32)
    block_u = max(1, min(triton.next_power_of_2(s['U']), TILES['ENTRIES'] // (block_k * block_e)))
    launch(bias_rows_grad_kernel, (s['heads'] * s['H'], triton.cdiv(s['ph'], block_k)), query)(grad_bias,
                                                                                               inverse_index,
                                                                                               inverse_weight,
                                                                                               grad_rows,
                                                                                               s['H'],
                                                                                               s['N'],
                                                                                               s['P'],
                                                                                               s['W'],
                                                                                               s['ph'],
                                                                                               s['pw'],
                                                                                               s['U'],
                                                                                               E,
                                                                                               BK=block_k,
                                                                                               BU=block_u,
                                                                                               BE=block_e)
    # the splits' partial sums, added in a fixed order
    return (grad_query, grad_key_part.sum(0).to(key.dtype), grad_value_part.sum(0).to(value.dtype), grad_rows)
