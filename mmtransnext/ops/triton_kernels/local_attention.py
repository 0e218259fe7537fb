"""Triton kernels of the local window (``mmtransnext.ops.local_attention``).

Three window operations cover the local similarity, the local aggregation (the learnable tokens' term too: it is an
aggregation with query-dependent weights) and their gradients, each a program per (pixel tile, batch x head) that
gathers the window of every pixel, so that every output element is written by one program (no atomics):

* ``window_dot``: ``out[n, l] = a[n] . b[n + offset_l]`` (+ bias[head, l]; ``fill`` outside the map);
* ``window_sum``: ``out[n] = sum_l c[n, l] * b[n + offset_l]``;
* ``window_sum_transposed``: ``out[m] = sum_l c[m - offset_l, l] * a[m - offset_l]``, the adjoint of
  ``window_sum`` with respect to ``b``.

Neighbours are numbered as ``F.unfold`` numbers them (row-major in the window). Products accumulate in float32.
"""
import triton
import triton.language as tl

from . import interpreting, launch

# pixels per program: a (pixels, window, head size) tile in registers on a GPU; the interpreter prefers fewer,
# larger programs. Tests set it to check ragged tiles either way.
TILES = dict(PIXELS=256 if interpreting() else 16)


@triton.jit
def _window(rm, H, W, N, L, WS: tl.constexpr, BL: tl.constexpr, SIGN: tl.constexpr):
    """Each pixel's neighbours ``pixel + SIGN * offset_l`` (BM, BL) and whether they are in the map."""
    rl = tl.arange(0, BL)
    y = rm // W
    x = rm % W
    ny = y[:, None] + SIGN * (rl[None, :] // WS - WS // 2)
    nx = x[:, None] + SIGN * (rl[None, :] % WS - WS // 2)
    valid = (rm[:, None] < N) & (rl[None, :] < L) & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    return ny * W + nx, valid, rl


@triton.jit
def window_dot_kernel(A, B, BIAS, OUT, heads, H, W, N, D, L, fill, HAS_BIAS: tl.constexpr, WS: tl.constexpr,
                      BM: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
    bh = tl.program_id(1)
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rd = tl.arange(0, BD)
    neighbour, valid, rl = _window(rm, H, W, N, L, WS, BL, 1)
    a = tl.load(A + (bh * N + rm[:, None]) * D + rd[None, :], mask=(rm[:, None] < N) & (rd[None, :] < D), other=0.)
    b = tl.load(B + (bh * N + neighbour[:, :, None]) * D + rd[None, None, :],
                mask=valid[:, :, None] & (rd[None, None, :] < D),
                other=0.)
    out = tl.sum(a.to(tl.float32)[:, None, :] * b.to(tl.float32), 2)
    if HAS_BIAS:
        out += tl.load(BIAS + (bh % heads) * L + rl, mask=rl < L, other=0.).to(tl.float32)[None, :]
    out = tl.where(valid, out, fill)
    tl.store(OUT + (bh * N + rm[:, None]) * L + rl[None, :], out, mask=(rm[:, None] < N) & (rl[None, :] < L))


@triton.jit
def window_sum_kernel(C, B, OUT, H, W, N, D, L, TRANSPOSED: tl.constexpr, WS: tl.constexpr, BM: tl.constexpr,
                      BL: tl.constexpr, BD: tl.constexpr):
    bh = tl.program_id(1)
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rd = tl.arange(0, BD)
    if TRANSPOSED:  # the pixels whose window holds rm, each with its coefficient for rm
        source, valid, rl = _window(rm, H, W, N, L, WS, BL, -1)
        coeff_at = (bh * N + source) * L + rl[None, :]
    else:
        source, valid, rl = _window(rm, H, W, N, L, WS, BL, 1)
        coeff_at = (bh * N + rm[:, None]) * L + rl[None, :]
    coeff = tl.load(C + coeff_at, mask=valid, other=0.).to(tl.float32)
    coeff = tl.where(valid, coeff, 0.)
    b = tl.load(B + (bh * N + source[:, :, None]) * D + rd[None, None, :],
                mask=valid[:, :, None] & (rd[None, None, :] < D),
                other=0.)
    out = tl.sum(coeff[:, :, None] * b.to(tl.float32), 1)
    tl.store(OUT + (bh * N + rm[:, None]) * D + rd[None, :], out, mask=(rm[:, None] < N) & (rd[None, :] < D))


# ----------------------------------------------------------------------------- launchers


def _common(pixels, window_size):
    B, heads, N, D = pixels.shape
    L = window_size**2
    grid = (triton.cdiv(N, TILES['PIXELS']), B * heads)
    blocks = dict(WS=window_size,
                  BM=TILES['PIXELS'],
                  BL=triton.next_power_of_2(L),
                  BD=max(16, triton.next_power_of_2(D)))
    return grid, heads, N, D, L, blocks


def window_dot(a, b, bias, height, width, window_size, fill):
    """(B, heads, N, L) products of each pixel of ``a`` with its window of ``b`` (+ ``bias``, ``fill`` outside)."""
    grid, heads, N, D, L, blocks = _common(a, window_size)
    out = a.new_empty(*a.shape[:3], L)
    launch(window_dot_kernel, grid, a)(a,
                                       b,
                                       b if bias is None else bias,
                                       out,
                                       heads,
                                       height,
                                       width,
                                       N,
                                       D,
                                       L,
                                       fill,
                                       HAS_BIAS=bias is not None,
                                       **blocks)
    return out


def window_sum(coeff, b, height, width, window_size, transposed=False):
    """(B, heads, N, D): each pixel's window of ``b`` weighted by ``coeff`` (or the adjoint, ``transposed``)."""
    grid, _, N, D, L, blocks = _common(b, window_size)
    out = b.new_empty(b.shape)
    launch(window_sum_kernel, grid, b)(coeff, b, out, height, width, N, D, L, TRANSPOSED=transposed, **blocks)
    return out
