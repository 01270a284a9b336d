"""Triton kernels of the ``triton`` deformable-convolution backend (host side: :mod:`._deform_triton`).

Notation (all sizes in elements): rows ``m = (b, l)`` with ``l = ho * W_out + wo``, ``M = B * L``;
tap ``k = (i, j)`` of the ``KH x KW`` kernel; ``G`` offset groups of ``Cg = C / G`` channels;
``groups`` convolution groups of ``cpg = C / groups`` input and ``cog = C_out / groups`` output
channels. Tensors as the kernels read them:

* ``x``: channels-last input ``(B, H, W, C)`` (one bilinear corner of a tile is ``BLOCK_K``
  contiguous channels); ``gx``: its gradient, same layout;
* ``off``: ``(B, G, K, 2, L)`` (torchvision's offset layout, ``(dy, dx)`` in pixels);
  ``msk``: ``(B, G, K, L)``;
* ``w``: ``(groups, K, cpg, cog)``; ``wt``: ``(groups, K, cog, cpg)``; ``gw``: like ``w``;
* ``out`` / ``go``: ``(B, C_out, L)`` (NCHW; a tile's rows are consecutive pixels).

The sampling point of ``(m, k, g)`` is ``y = ho * SH - PH + i * DH + dy``,
``x = wo * SW - PW + j * DW + dx``; its four corners are read where they lie inside the image
and count as 0 outside (torchvision's ``bilinear_interpolate``; the value is 0 for ``y <= -1``
etc.). Derivatives at integer coordinates are right-hand ones (``floor``), as in the other
backends. Every kernel computes a point's corner offsets and bilinear weights once and applies
them to a ``(BLOCK_M, BLOCK_K)`` channel tile: the sampled "column" tile exists only in registers.
"""

import triton
import triton.language as tl


@triton.jit
def _point(off_ptr, msk_ptr, b, l, row_ok, k, g, G, K, L, WO, KW, SH, SW, PH, PW, DH, DW, HAS_MASK: tl.constexpr):
    """Sampling coordinates ``(y, x)`` and modulation of rows ``(b, l)`` for tap ``k``, offset group ``g``."""
    ho = l // WO
    wo = l - ho * WO
    ki = k // KW
    kj = k - ki * KW
    o = off_ptr + ((b * G + g) * K + k) * 2 * L + l
    dy = tl.load(o, mask=row_ok, other=0.0)
    dx = tl.load(o + L, mask=row_ok, other=0.0)
    py = (ho * SH - PH + ki * DH).to(dy.dtype) + dy
    px = (wo * SW - PW + kj * DW).to(dx.dtype) + dx
    if HAS_MASK:
        m = tl.load(msk_ptr + ((b * G + g) * K + k) * L + l, mask=row_ok, other=0.0)
    else:
        m = tl.full(dy.shape, 1.0, dy.dtype)
    return py, px, m


@triton.jit
def _corners(py, px, b, row_ok, H, W, C):
    """Channels-last element offsets of the four corners (00, 01, 10, 11 = (y0, x0), (y0, x1), ...),
    whether each lies in the image, and the fractional parts ``ly, lx``."""
    y0f = tl.floor(py)
    x0f = tl.floor(px)
    ly = py - y0f
    lx = px - x0f
    in_y0 = (y0f >= 0) & (y0f <= H - 1)
    in_y1 = (y0f >= -1) & (y0f <= H - 2)
    in_x0 = (x0f >= 0) & (x0f <= W - 1)
    in_x1 = (x0f >= -1) & (x0f <= W - 2)
    # clamped before the integer cast (far-away or non-finite points); out-of-image corners are masked anyway
    y0 = tl.minimum(tl.maximum(y0f, -1.0), H * 1.0).to(tl.int32)
    x0 = tl.minimum(tl.maximum(x0f, -1.0), W * 1.0).to(tl.int32)
    p00 = ((b * H + y0) * W + x0) * C
    ok00 = row_ok & in_y0 & in_x0
    ok01 = row_ok & in_y0 & in_x1
    ok10 = row_ok & in_y1 & in_x0
    ok11 = row_ok & in_y1 & in_x1
    return p00, ok00, ok01, ok10, ok11, ly, lx


@triton.jit
def _blend_weights(ly, lx, m):
    """The four corners' bilinear weights times the modulation, as ``(BLOCK_M, 1)`` columns."""
    hy = 1.0 - ly
    hx = 1.0 - lx
    return (hy * hx * m)[:, None], (hy * lx * m)[:, None], (ly * hx * m)[:, None], (ly * lx * m)[:, None]


@triton.jit
def _gather_blend(x_ptr, p00, ok00, ok01, ok10, ok11, w00, w01, w10, w11, ch, ch_ok, W, C):
    """``(BLOCK_M, BLOCK_K)``: the four corners' channel slices ``ch`` blended with their weights."""
    src = x_ptr + p00[:, None] + ch[None, :]
    cm = ch_ok[None, :]
    tile = w00 * tl.load(src, mask=ok00[:, None] & cm, other=0.0)
    tile += w01 * tl.load(src + C, mask=ok01[:, None] & cm, other=0.0)
    tile += w10 * tl.load(src + W * C, mask=ok10[:, None] & cm, other=0.0)
    tile += w11 * tl.load(src + (W * C + C), mask=ok11[:, None] & cm, other=0.0)
    return tile


@triton.jit
def _sampled_tile(x_ptr, off_ptr, msk_ptr, b, l, row_ok, k, g, ch, ch_ok, H, W, C, G, K, L, WO, KW,
                  SH, SW, PH, PW, DH, DW, HAS_MASK: tl.constexpr):
    """Modulated bilinear samples ``(BLOCK_M, BLOCK_K)`` of offset group ``g``'s channels among ``ch``."""
    py, px, m = _point(off_ptr, msk_ptr, b, l, row_ok, k, g, G, K, L, WO, KW, SH, SW, PH, PW, DH, DW, HAS_MASK)
    p00, ok00, ok01, ok10, ok11, ly, lx = _corners(py, px, b, row_ok, H, W, C)
    w00, w01, w10, w11 = _blend_weights(ly, lx, m)
    return _gather_blend(x_ptr, p00, ok00, ok01, ok10, ok11, w00, w01, w10, w11, ch, ch_ok, W, C)


@triton.jit
def deform_fwd_kernel(x_ptr, off_ptr, msk_ptr, w_ptr, bias_ptr, out_ptr,
                      M, L, H, W, C, CO, WO, G, K, KW, CG, CPG, COG, SH, SW, PH, PW, DH, DW,
                      HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``out[b, gi * cog + n, l] = sum_{k, c} sample(m, k, c) * w[gi, k, c, n] (+ bias)``.

    Grid ``(cdiv(cog, BLOCK_N), cdiv(M, BLOCK_M), groups)``: the output-channel tiles of a row tile
    run next to each other, so its input gathers hit L2 after the first. The reduction runs over
    taps, the offset groups meeting this convolution group, and ``BLOCK_K`` channel slices of each.
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    gi = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    b = rows // L
    l = rows - b * L
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = ns < COG
    c_lo = gi * CPG
    c_hi = c_lo + CPG
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=out_ptr.dtype.element_ty)
    for k in range(0, K):
        for g in range(c_lo // CG, (c_hi - 1) // CG + 1):
            cs = tl.maximum(c_lo, g * CG)
            ce = tl.minimum(c_hi, g * CG + CG)
            py, px, m = _point(off_ptr, msk_ptr, b, l, row_ok, k, g, G, K, L, WO, KW, SH, SW, PH, PW, DH, DW, HAS_MASK)
            p00, ok00, ok01, ok10, ok11, ly, lx = _corners(py, px, b, row_ok, H, W, C)
            w00, w01, w10, w11 = _blend_weights(ly, lx, m)
            for c0 in range(cs, ce, BLOCK_K):
                ch = c0 + tl.arange(0, BLOCK_K)
                ch_ok = ch < ce
                a = _gather_blend(x_ptr, p00, ok00, ok01, ok10, ok11, w00, w01, w10, w11, ch, ch_ok, W, C)
                wrow = (gi * K + k) * CPG + (ch - c_lo)
                wtile = tl.load(w_ptr + wrow[:, None] * COG + ns[None, :], mask=ch_ok[:, None] & n_ok[None, :], other=0.0)
                acc = tl.dot(a, wtile, acc, input_precision=PRECISION, out_dtype=acc.dtype)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + gi * COG + ns, mask=n_ok, other=0.0)[None, :]
    optr = out_ptr + (b * CO * L + l)[:, None] + ((gi * COG + ns) * L)[None, :]
    tl.store(optr, acc, mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def deform_bwd_data_kernel(x_ptr, off_ptr, msk_ptr, wt_ptr, go_ptr, gx_ptr, goff_ptr, gmsk_ptr,
                           M, L, H, W, C, CO, WO, G, K, KW, CG, CPG, COG, SH, SW, PH, PW, DH, DW,
                           HAS_MASK: tl.constexpr, NEED_INPUT: tl.constexpr, NEED_POINT: tl.constexpr,
                           PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr):
    """Input, offset and mask gradients of rows ``BLOCK_M`` x (tap ``k``, offset group ``g``).

    Grid ``(K * G, cdiv(M, BLOCK_M))``: the programs of one row tile run next to each other and
    share its ``grad_out`` rows in L2. For each channel slice of the offset group the column
    gradient ``gcol = go @ w^T`` (``(BLOCK_M, BLOCK_K)``) is formed in registers; the input
    gradient scatters ``gcol`` times each corner's weight with atomic adds; the offset and mask
    gradients need the per-corner sums ``s = sum_c gcol * x[corner]`` over the whole offset
    group, which this program owns, so they are stored without atomics.
    """
    pid_kg = tl.program_id(0)
    pid_m = tl.program_id(1)
    k = pid_kg // G
    g = pid_kg - k * G
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    b = rows // L
    l = rows - b * L
    py, px, m = _point(off_ptr, msk_ptr, b, l, row_ok, k, g, G, K, L, WO, KW, SH, SW, PH, PW, DH, DW, HAS_MASK)
    p00, ok00, ok01, ok10, ok11, ly, lx = _corners(py, px, b, row_ok, H, W, C)
    w00, w01, w10, w11 = _blend_weights(ly, lx, m)
    s00 = tl.zeros((BLOCK_M,), dtype=py.dtype)
    s01 = tl.zeros((BLOCK_M,), dtype=py.dtype)
    s10 = tl.zeros((BLOCK_M,), dtype=py.dtype)
    s11 = tl.zeros((BLOCK_M,), dtype=py.dtype)
    go_rows = b * CO * L + l
    g_lo = g * CG
    g_hi = g_lo + CG
    for gi in range(g_lo // CPG, (g_hi - 1) // CPG + 1):
        cs = tl.maximum(g_lo, gi * CPG)
        ce = tl.minimum(g_hi, gi * CPG + CPG)
        for c0 in range(cs, ce, BLOCK_K):
            ch = c0 + tl.arange(0, BLOCK_K)
            ch_ok = ch < ce
            wcol = (gi * K + k) * COG * CPG + (ch - gi * CPG)
            gcol = tl.zeros((BLOCK_M, BLOCK_K), dtype=py.dtype)
            for n0 in range(0, COG, BLOCK_N):
                ns = n0 + tl.arange(0, BLOCK_N)
                n_ok = ns < COG
                go = tl.load(go_ptr + go_rows[:, None] + ((gi * COG + ns) * L)[None, :],
                             mask=row_ok[:, None] & n_ok[None, :], other=0.0)
                wtile = tl.load(wt_ptr + wcol[None, :] + (ns * CPG)[:, None], mask=n_ok[:, None] & ch_ok[None, :], other=0.0)
                gcol = tl.dot(go, wtile, gcol, input_precision=PRECISION, out_dtype=gcol.dtype)
            if NEED_INPUT:
                cm = ch_ok[None, :]
                dst = gx_ptr + p00[:, None] + ch[None, :]
                tl.atomic_add(dst, gcol * w00, mask=ok00[:, None] & cm, sem="relaxed")
                tl.atomic_add(dst + C, gcol * w01, mask=ok01[:, None] & cm, sem="relaxed")
                tl.atomic_add(dst + W * C, gcol * w10, mask=ok10[:, None] & cm, sem="relaxed")
                tl.atomic_add(dst + (W * C + C), gcol * w11, mask=ok11[:, None] & cm, sem="relaxed")
            if NEED_POINT:
                src = x_ptr + p00[:, None] + ch[None, :]
                cm = ch_ok[None, :]
                s00 += tl.sum(gcol * tl.load(src, mask=ok00[:, None] & cm, other=0.0), axis=1)
                s01 += tl.sum(gcol * tl.load(src + C, mask=ok01[:, None] & cm, other=0.0), axis=1)
                s10 += tl.sum(gcol * tl.load(src + W * C, mask=ok10[:, None] & cm, other=0.0), axis=1)
                s11 += tl.sum(gcol * tl.load(src + (W * C + C), mask=ok11[:, None] & cm, other=0.0), axis=1)
    if NEED_POINT:
        hy = 1.0 - ly
        hx = 1.0 - lx
        o = goff_ptr + ((b * G + g) * K + k) * 2 * L + l
        tl.store(o, m * (hx * (s10 - s00) + lx * (s11 - s01)), mask=row_ok)
        tl.store(o + L, m * (hy * (s01 - s00) + ly * (s11 - s10)), mask=row_ok)
        if HAS_MASK:
            gm = hy * hx * s00 + hy * lx * s01 + ly * hx * s10 + ly * lx * s11
            tl.store(gmsk_ptr + ((b * G + g) * K + k) * L + l, gm, mask=row_ok)


@triton.jit
def deform_bwd_weight_kernel(x_ptr, off_ptr, msk_ptr, go_ptr, gw_ptr,
                             M, L, H, W, C, CO, WO, G, K, KW, CG, CPG, COG, SH, SW, PH, PW, DH, DW, ROWS_PER_SPLIT,
                             HAS_MASK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``gw[gi, k, c, n] += sum_m sample(m, k, c) * go[m, gi * cog + n]`` over one split of the rows.

    Grid ``(K * cdiv(cpg, BLOCK_K), cdiv(cog, BLOCK_N), groups * splits)``: the rows are split so
    that small weights still fill the GPU; splits meet in ``gw`` by atomic adds.
    """
    n_cb = tl.cdiv(CPG, BLOCK_K)
    pid0 = tl.program_id(0)
    k = pid0 // n_cb
    cb = pid0 - k * n_cb
    pid_n = tl.program_id(1)
    n_split = tl.cdiv(M, ROWS_PER_SPLIT)
    gi = tl.program_id(2) // n_split
    split = tl.program_id(2) - gi * n_split
    cl = cb * BLOCK_K + tl.arange(0, BLOCK_K)
    ch_ok = cl < CPG
    ch = gi * CPG + cl
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = ns < COG
    c_first = gi * CPG + cb * BLOCK_K
    c_last = tl.minimum(c_first + BLOCK_K, gi * CPG + CPG) - 1
    m_start = split * ROWS_PER_SPLIT
    m_end = tl.minimum(m_start + ROWS_PER_SPLIT, M)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=gw_ptr.dtype.element_ty)
    for m0 in range(m_start, m_end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < m_end
        b = rows // L
        l = rows - b * L
        a = tl.zeros((BLOCK_M, BLOCK_K), dtype=gw_ptr.dtype.element_ty)
        for g in range(c_first // CG, c_last // CG + 1):
            a += _sampled_tile(x_ptr, off_ptr, msk_ptr, b, l, row_ok, k, g, ch, ch_ok & (ch // CG == g), H, W, C, G, K, L,
                               WO, KW, SH, SW, PH, PW, DH, DW, HAS_MASK)
        go = tl.load(go_ptr + (b * CO * L + l)[:, None] + ((gi * COG + ns) * L)[None, :],
                     mask=row_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(tl.trans(a), go, acc, input_precision=PRECISION, out_dtype=acc.dtype)
    dst = gw_ptr + ((gi * K + k) * CPG + cl)[:, None] * COG + ns[None, :]
    tl.atomic_add(dst, acc, mask=ch_ok[:, None] & n_ok[None, :], sem="relaxed")
