/* Direct 2-D convolutions for XLA:CPU, called through the XLA FFI (C API).
 *
 * Layouts: input x [N, H, W, C], kernel w [KH, KW, C, O], output y [N, OH, OW, O]; stride 1, no
 * dilation. The input is zero-padded *implicitly* by `pad_top` rows and `pad_left` columns (the
 * padding at the bottom and right follows from the output's size), so no padded copy is made:
 *
 *   fjl_conv2d_fwd(x, w) -> y      y[n,i,j,o]  = sum_{a,b,c} xp[n,i+a,j+b,c] w[a,b,c,o]
 *   fjl_conv2d_dw(x, dy) -> dw     dw[a,b,c,o] = sum_{n,i,j} xp[n,i+a,j+b,c] dy[n,i,j,o]
 *
 * where xp is x padded. The input gradient is fjl_conv2d_fwd of dy with the flipped, transposed
 * kernel and padding (KH-1-pad_top, KW-1-pad_left). Both are register-tiled outer products: a tile
 * keeps up to ACC accumulator vectors of 16 floats, loads a row of kernel (or dy) vectors once per
 * input channel and broadcasts one input value per pixel (or channel) of the tile, so every load
 * feeds several fused multiply-adds and no im2col matrix is ever written. Taps that fall on the
 * padding are skipped, not multiplied by zero. Work is split over output rows (fwd) or over blocks
 * of output pixels (dw: a fixed share per task, each with its own partial sum, so the result does
 * not depend on thread timing) on XLA's intra-op thread pool.
 *
 * Written in C with GCC vector extensions and compiled on first use with -march=native (see
 * fedjax_like/core/engine/native.py), so the same source becomes AVX-512, AVX2 or NEON code on the
 * machine that runs it. */
#include "_native.h"

#if defined(__AVX512F__)
#define ACC 24 /* accumulator vectors a tile keeps in registers (32 zmm) */
#else
#define ACC 6  /* a 64-byte vector is two registers on AVX2 / four on NEON */
#endif
#define MAXNV 4 /* output-channel vectors per tile (64 channels) */
#define MAXP 24

/* ------------------------------------------------------------------------------------------ */
/* Tiles                                                                                      */

/* y[p, o0:o0+16NV] for P consecutive output pixels, over the taps a in [a0, a1), b in [b0, b1)
 * (those inside the input for every pixel of the tile). `x` points at the input element of tap
 * (a0, b0) for the first pixel. */
static inline __attribute__((always_inline)) void fwd_tile(
    const float *x, const float *w, float *y, int64_t C, int64_t O, int64_t KW, int64_t row,
    int64_t a0, int64_t a1, int64_t b0, int64_t b1, const int NV, const int P) {
  vec acc[MAXP][MAXNV];
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = (vec){0};
  for (int64_t a = a0; a < a1; ++a) {
    for (int64_t b = b0; b < b1; ++b) {
      const float *xp = x + (a - a0) * row + (b - b0) * C;
      const float *wp = w + (a * KW + b) * C * O;
      for (int64_t c = 0; c < C; ++c) {
        vec wv[MAXNV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = vload(wp + c * O + v * L);
#pragma GCC unroll 24
        for (int p = 0; p < P; ++p) {
          const float s = xp[p * C + c];
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] += s * wv[v];
        }
      }
    }
  }
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(y + p * O + v * L, acc[p][v]);
}

/* dw[c0:c0+CB, o0:o0+16NV] (one tap) += sum over `rows` rows of `cols` pixels of x * dy; `x` and
 * `dy` point at the first pixel's elements. */
static inline __attribute__((always_inline)) void dw_tile(
    const float *x, const float *dy, float *dw, int64_t C, int64_t O, int64_t cols, int64_t rows,
    int64_t xrow, int64_t dyrow, const int NV, const int CB) {
  vec acc[MAXP][MAXNV];
#pragma GCC unroll 24
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[c][v] = vload(dw + c * O + v * L);
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * xrow;
    const float *dr = dy + r * dyrow;
    for (int64_t j = 0; j < cols; ++j) {
      vec dv[MAXNV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) dv[v] = vload(dr + j * O + v * L);
#pragma GCC unroll 24
      for (int c = 0; c < CB; ++c) {
        const float s = xr[j * C + c];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[c][v] += s * dv[v];
      }
    }
  }
#pragma GCC unroll 24
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(dw + c * O + v * L, acc[c][v]);
}

typedef void (*fwd_fn)(const float *, const float *, float *, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t);
typedef void (*dw_fn)(const float *, const float *, float *, int64_t, int64_t, int64_t, int64_t,
                      int64_t, int64_t);

#define DEF(NV, P)                                                                              \
  static void fwd_##NV##_##P(const float *x, const float *w, float *y, int64_t C, int64_t O,   \
                             int64_t KW, int64_t row, int64_t a0, int64_t a1, int64_t b0,       \
                             int64_t b1) {                                                      \
    fwd_tile(x, w, y, C, O, KW, row, a0, a1, b0, b1, NV, P);                                    \
  }                                                                                             \
  static void dw_##NV##_##P(const float *x, const float *dy, float *dw, int64_t C, int64_t O,  \
                            int64_t cols, int64_t rows, int64_t xrow, int64_t dyrow) {         \
    dw_tile(x, dy, dw, C, O, cols, rows, xrow, dyrow, NV, P);                                   \
  }
#define DEF24(NV)                                                                               \
  DEF(NV, 1) DEF(NV, 2) DEF(NV, 3) DEF(NV, 4) DEF(NV, 5) DEF(NV, 6) DEF(NV, 7) DEF(NV, 8)       \
  DEF(NV, 9) DEF(NV, 10) DEF(NV, 11) DEF(NV, 12) DEF(NV, 13) DEF(NV, 14) DEF(NV, 15)            \
  DEF(NV, 16) DEF(NV, 17) DEF(NV, 18) DEF(NV, 19) DEF(NV, 20) DEF(NV, 21) DEF(NV, 22)           \
  DEF(NV, 23) DEF(NV, 24)
DEF24(1) DEF24(2) DEF24(3) DEF24(4)
#define ROW(K, NV)                                                                              \
  { K##_##NV##_1, K##_##NV##_2, K##_##NV##_3, K##_##NV##_4, K##_##NV##_5, K##_##NV##_6,          \
    K##_##NV##_7, K##_##NV##_8, K##_##NV##_9, K##_##NV##_10, K##_##NV##_11, K##_##NV##_12,       \
    K##_##NV##_13, K##_##NV##_14, K##_##NV##_15, K##_##NV##_16, K##_##NV##_17, K##_##NV##_18,    \
    K##_##NV##_19, K##_##NV##_20, K##_##NV##_21, K##_##NV##_22, K##_##NV##_23, K##_##NV##_24 }
static const fwd_fn FWD[MAXNV][MAXP] = {ROW(fwd, 1), ROW(fwd, 2), ROW(fwd, 3), ROW(fwd, 4)};
static const dw_fn DW[MAXNV][MAXP] = {ROW(dw, 1), ROW(dw, 2), ROW(dw, 3), ROW(dw, 4)};

static inline int tile_len(int nv) { return (int)max64(1, min64(MAXP, ACC / nv)); }

/* ------------------------------------------------------------------------------------------ */
/* Kernels                                                                                     */

typedef struct {
  const float *x, *w;
  float *y;
  int64_t H, W, C, KH, KW, O, OH, OW, pt, pl;
} fwd_ctx;

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return min64(max64(v, lo), hi); }

/* One output row: pixels whose taps all lie inside the input run in tiles; the few at the left
 * and right edges (where the padding is) run one at a time over their valid taps. */
static void fwd_row(void *p, int64_t r) {
  const fwd_ctx *k = p;
  const int64_t n = r / k->OH, i = r % k->OH;
  const int64_t a0 = clamp64(k->pt - i, 0, k->KH), a1 = clamp64(k->H + k->pt - i, a0, k->KH);
  const int64_t row = k->W * k->C;
  const float *xr = k->x + (n * k->H + (i + a0 - k->pt)) * row;
  float *yr = k->y + (n * k->OH + i) * k->OW * k->O;
  /* Interior pixels j: j - pl >= 0 and j - pl + KW - 1 <= W - 1. */
  const int64_t j0 = clamp64(k->pl, 0, k->OW), j1 = clamp64(k->W - k->KW + 1 + k->pl, j0, k->OW);
  for (int64_t o0 = 0; o0 < k->O; o0 += MAXNV * L) {
    const int nv = (int)min64(MAXNV, (k->O - o0) / L);
    const int pj = tile_len(nv);
    const float *w = k->w + o0;
    for (int64_t j = 0; j < k->OW;) {
      if (j >= j0 && j < j1) { /* a tile of interior pixels */
        const int np = (int)min64(pj, j1 - j);
        FWD[nv - 1][np - 1](xr + (j - k->pl) * k->C, w, yr + j * k->O + o0, k->C, k->O, k->KW,
                            row, a0, a1, 0, k->KW);
        j += np;
      } else { /* an edge pixel: only the taps inside the input */
        const int64_t b0 = clamp64(k->pl - j, 0, k->KW);
        const int64_t b1 = clamp64(k->W + k->pl - j, b0, k->KW);
        FWD[nv - 1][0](xr + (j + b0 - k->pl) * k->C, w, yr + j * k->O + o0, k->C, k->O, k->KW,
                       row, a0, a1, b0, b1);
        j += 1;
      }
    }
  }
}

typedef struct {
  const float *x, *dy;
  float *part;
  int64_t H, W, C, KH, KW, O, OH, OW, pt, pl, band, bands, cols, colblocks, size, N, slots;
} dw_ctx;

/* Adds one item, (image, band of output rows, block of output columns), to a partial sum: per
 * tap, the item's output pixels whose input pixel lies inside the image form one rectangle. */
static void dw_range(const dw_ctx *k, float *acc, int64_t item) {
  const int64_t n = item / (k->bands * k->colblocks), rest = item % (k->bands * k->colblocks);
  const int64_t i0 = (rest / k->colblocks) * k->band, j0 = (rest % k->colblocks) * k->cols;
  const int64_t i1 = min64(i0 + k->band, k->OH), j1 = min64(j0 + k->cols, k->OW);
  for (int64_t a = 0; a < k->KH; ++a) {
    /* rows i with 0 <= i + a - pt < H */
    const int64_t r0 = clamp64(k->pt - a, i0, i1), r1 = clamp64(k->H + k->pt - a, r0, i1);
    if (r0 >= r1) continue;
    for (int64_t b = 0; b < k->KW; ++b) {
      const int64_t c0j = clamp64(k->pl - b, j0, j1), c1j = clamp64(k->W + k->pl - b, c0j, j1);
      if (c0j >= c1j) continue;
      const float *xs = k->x + ((n * k->H + r0 + a - k->pt) * k->W + (c0j + b - k->pl)) * k->C;
      const float *ds = k->dy + ((n * k->OH + r0) * k->OW + c0j) * k->O;
      for (int64_t o0 = 0; o0 < k->O; o0 += MAXNV * L) {
        const int nv = (int)min64(MAXNV, (k->O - o0) / L);
        const int cb = tile_len(nv);
        for (int64_t c0 = 0; c0 < k->C; c0 += cb) {
          const int nc = (int)min64(cb, k->C - c0);
          DW[nv - 1][nc - 1](xs + c0, ds + o0, acc + ((a * k->KW + b) * k->C + c0) * k->O + o0,
                             k->C, k->O, c1j - c0j, r1 - r0, k->W * k->C, k->OW * k->O);
        }
      }
    }
  }
}

/* Slot s sums a fixed, contiguous share of the items into its own partial sum,
 * whichever thread runs it, so the result does not depend on scheduling (deterministic). Items are
 * summed from zero in a scratch buffer, a few thousand output pixels at a time, and then added:
 * no float32 running sum spans more than that, so the error stays near a blocked matrix
 * product's however large the batch (a single running sum over 170k pixels erred 20x more). */
static void dw_slot(void *p, int64_t slot) {
  const dw_ctx *k = p;
  const int64_t items = k->N * k->bands * k->colblocks;
  const int64_t lo = items * slot / k->slots, hi = items * (slot + 1) / k->slots;
  const int64_t per_flush = max64(1, 4096 / max64(1, k->band * k->cols));
  float *sum = k->part + slot * k->size;
  float *scratch = k->part + (k->slots + slot) * k->size;
  for (int64_t first = lo; first < hi; first += per_flush) {
    for (int64_t e = 0; e < k->size; ++e) scratch[e] = 0.f;
    for (int64_t item = first; item < min64(first + per_flush, hi); ++item)
      dw_range(k, scratch, item);
    for (int64_t e = 0; e < k->size; ++e) sum[e] += scratch[e];
  }
}

/* ------------------------------------------------------------------------------------------ */
/* FFI calls                                                                                   */

/* The last four dimensions of a buffer (leading ones are a batch: vmapped clients). */
static const int64_t *dims4(const XLA_FFI_Buffer *b) { return b->dims + (b->rank - 4); }

/* Checks the call: two float32 arguments and one float32 result of one rank >= 4, with the same
 * leading (batch) dimensions; returns an error message or 0, and the batch size in `batch`. */
static const char *check_frame(XLA_FFI_CallFrame *frame, int64_t *batch) {
  if (frame->args.size != 2 || frame->rets.size != 1)
    return "fjl_conv2d: expected 2 arguments and 1 result";
  const XLA_FFI_Buffer *bufs[3] = {frame->args.args[0], frame->args.args[1],
                                   frame->rets.rets[0]};
  if (frame->args.types[0] != XLA_FFI_ArgType_BUFFER ||
      frame->args.types[1] != XLA_FFI_ArgType_BUFFER ||
      frame->rets.types[0] != XLA_FFI_RetType_BUFFER)
    return "fjl_conv2d: arguments and result must be arrays";
  *batch = 1;
  for (int i = 0; i < 3; ++i) {
    if (bufs[i]->dtype != XLA_FFI_DataType_F32 || bufs[i]->rank < 4 ||
        bufs[i]->rank != bufs[0]->rank)
      return "fjl_conv2d: arguments and result must be float32 arrays of one rank >= 4";
    for (int64_t d = 0; d < bufs[i]->rank - 4; ++d) {
      if (bufs[i]->dims[d] != bufs[0]->dims[d])
        return "fjl_conv2d: arguments and result must share their leading (batch) dimensions";
      if (i == 0) *batch *= bufs[i]->dims[d];
    }
  }
  return 0;
}

XLA_FFI_Error *FjlConv2dFwd(XLA_FFI_CallFrame *frame) {
  if (metadata(frame)) return 0;
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return 0;
  int64_t batch;
  const char *bad = check_frame(frame, &batch);
  if (bad) return error(frame->api, bad);
  const XLA_FFI_Buffer *x = frame->args.args[0], *w = frame->args.args[1];
  const XLA_FFI_Buffer *y = frame->rets.rets[0];
  const int64_t *xd = dims4(x), *wd = dims4(w), *yd = dims4(y);
  fwd_ctx k = {x->data, w->data, y->data, xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], yd[1], yd[2],
               attr_i64(frame, "pad_top", 0), attr_i64(frame, "pad_left", 0)};
  /* Paddings are >= 0 on every side (bottom and right: from the output's size). */
  if (wd[2] != k.C || k.O % L != 0 || yd[0] != xd[0] || yd[3] != k.O || k.pt < 0 || k.pl < 0 ||
      k.OH + k.KH - 1 < k.H + k.pt || k.OW + k.KW - 1 < k.W + k.pl)
    return error(frame->api, "fjl_conv2d_fwd: shapes do not match (output channels must be a "
                             "multiple of 16)");
  const int64_t x_size = xd[0] * k.H * k.W * k.C, w_size = k.KH * k.KW * k.C * k.O;
  const int64_t y_size = yd[0] * k.OH * k.OW * k.O;
  const float *x0 = k.x, *w0 = k.w;
  float *y0 = k.y;
  for (int64_t b = 0; b < batch; ++b) { /* one client (of a vmapped cohort) at a time */
    k.x = x0 + b * x_size;
    k.w = w0 + b * w_size;
    k.y = y0 + b * y_size;
    parallel_for(frame->api, frame->ctx, xd[0] * k.OH, pool_threads(frame->api, frame->ctx),
                 fwd_row, &k);
  }
  return 0;
}

XLA_FFI_Error *FjlConv2dDw(XLA_FFI_CallFrame *frame) {
  if (metadata(frame)) return 0;
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return 0;
  int64_t batch;
  const char *bad = check_frame(frame, &batch);
  if (bad) return error(frame->api, bad);
  const XLA_FFI_Buffer *x = frame->args.args[0], *dy = frame->args.args[1];
  const XLA_FFI_Buffer *dw = frame->rets.rets[0];
  const int64_t *xd = dims4(x), *yd = dims4(dy), *wd = dims4(dw);
  dw_ctx k = {x->data, dy->data, 0, xd[1], xd[2], xd[3], wd[0], wd[1], yd[3], yd[1], yd[2],
              attr_i64(frame, "pad_top", 0), attr_i64(frame, "pad_left", 0)};
  if (wd[2] != k.C || wd[3] != k.O || k.O % L != 0 || yd[0] != xd[0] || k.pt < 0 || k.pl < 0 ||
      k.OH + k.KH - 1 < k.H + k.pt || k.OW + k.KW - 1 < k.W + k.pl)
    return error(frame->api, "fjl_conv2d_dw: shapes do not match (output channels must be a "
                             "multiple of 16)");
  k.N = xd[0];
  k.size = k.KH * k.KW * k.C * k.O;
  /* Items of at most ~2048 output pixels: whole rows where they fit, else blocks of a row. */
  k.cols = max64(1, min64(k.OW, 2048));
  k.colblocks = (k.OW + k.cols - 1) / k.cols;
  k.band = max64(1, min64(k.OH, 2048 / k.cols));
  k.bands = (k.OH + k.band - 1) / k.band;
  k.slots = max64(1, min64(pool_threads(frame->api, frame->ctx), k.N * k.bands * k.colblocks));
  float *part = calloc((size_t)(2 * k.slots * k.size), sizeof(float)); /* sums, then scratch */
  if (!part) return error(frame->api, "fjl_conv2d_dw: out of memory");
  const int64_t x_size = k.N * k.H * k.W * k.C, dy_size = k.N * k.OH * k.OW * k.O;
  const float *x0 = k.x, *dy0 = k.dy;
  for (int64_t b = 0; b < batch; ++b) { /* one client (of a vmapped cohort) at a time */
    for (int64_t e = 0; e < k.slots * k.size; ++e) part[e] = 0.f;
    k.x = x0 + b * x_size;
    k.dy = dy0 + b * dy_size;
    k.part = part;
    parallel_for(frame->api, frame->ctx, k.slots, k.slots, dw_slot, &k);
    float *out = (float *)dw->data + b * k.size;
    memcpy(out, part, (size_t)k.size * sizeof(float));
    for (int64_t t = 1; t < k.slots; ++t) {
      const float *p = part + t * k.size;
      for (int64_t e = 0; e < k.size; ++e) out[e] += p[e];
    }
  }
  free(part);
  return 0;
}
