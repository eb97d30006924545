/* Dense matrix products for XLA:CPU, called through the XLA FFI (C API).
 *
 *   fjl_dense_nn(a [.., M, K], b [.., K, N]) -> c [.., M, N]     c = a @ b
 *   fjl_dense_tn(a [.., M, K], b [.., M, N]) -> c [.., K, N]     c = a^T @ b
 *
 * float32, row-major, N >= 16. Leading dimensions are a batch (vmapped clients): each operand has
 * the result's leading dimensions, or 1 in any of them (broadcast: a matrix shared along it).
 *
 * Both are register-tiled outer products over vectors of 16 output columns: a tile keeps up to
 * 6 x 4 accumulator vectors (AVX-512; 3 x 1 elsewhere), loads a row of 4 `b` vectors once per
 * term of the contraction and broadcasts one `a` value per row of the tile into them. A row of N
 * columns is covered by ceil(N / 16) vectors; the last one starts at N - 16 and overlaps the one
 * before it, so no column needs a masked or scalar tail: an overlapped column is computed twice by
 * the same sequence of fused multiply-adds and stored twice with the same value. Each output
 * element is summed by one thread in a fixed order, so the result does not depend on thread
 * timing. Products large enough to pay for it are split over tiles on XLA's intra-op thread
 * pool. */
#include "_native.h"

#define MR 6  /* the most rows of a tile */
#define NVB 4 /* the most column vectors of a tile */
#if defined(__AVX512F__)
#define TILE_R 6 /* the tile the work is split into: 24 accumulators (of 32 zmm registers) */
#define TILE_V 4
#else
#define TILE_R 3 /* a 64-byte vector is two registers on AVX2, four on NEON */
#define TILE_V 1
#endif

/* c[r, col[v]:+16] = sum_t a[r * a_row + t * a_term] b[t, col[v]:+16] for r < R, v < NV, over
 * `terms` terms: nn reads a's rows (a_row = K, a_term = 1), tn its columns (a_row = 1,
 * a_term = K). */
static inline __attribute__((always_inline)) void tile(
    const float *a, int64_t a_row, int64_t a_term, const float *b, float *c, int64_t terms,
    int64_t N, const int64_t *col, const int NV, const int R) {
  vec acc[MR][NVB];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = (vec){0};
  for (int64_t t = 0; t < terms; ++t) {
    vec bv[NVB];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + t * N + col[v]);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const float s = a[r * a_row + t * a_term];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += s * bv[v];
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(c + r * N + col[v], acc[r][v]);
}

typedef void (*tile_fn)(const float *, int64_t, int64_t, const float *, float *, int64_t, int64_t,
                        const int64_t *);

/* One function per tile shape (NV, R), so the tile loops are unrolled with constant bounds. */
#define TILE_FN(NV, R)                                                                          \
  static void tile_##NV##_##R(const float *a, int64_t a_row, int64_t a_term, const float *b,   \
                              float *c, int64_t terms, int64_t N, const int64_t *col) {        \
    tile(a, a_row, a_term, b, c, terms, N, col, NV, R);                                        \
  }
#define FOR_R(NV) TILE_FN(NV, 1) TILE_FN(NV, 2) TILE_FN(NV, 3) TILE_FN(NV, 4) TILE_FN(NV, 5) \
  TILE_FN(NV, 6)
#define ROW(NV) {tile_##NV##_1, tile_##NV##_2, tile_##NV##_3, tile_##NV##_4, tile_##NV##_5, \
                 tile_##NV##_6}
FOR_R(1) FOR_R(2) FOR_R(3) FOR_R(4)
static const tile_fn TILES[NVB][MR] = {ROW(1), ROW(2), ROW(3), ROW(4)};

/* ------------------------------------------------------------------------------------------ */
/* Work items: (batch element, block of TILE_V column vectors, tile of TILE_R output rows)  */

#define MAXBATCH 8 /* leading (batch) dimensions a call may have */

typedef struct {
  const float *a, *b;
  float *c;
  int64_t M, K, N;           /* the product's sizes (tn: c is [K, N], contracted over M) */
  int64_t rows;              /* output rows: M (nn) or K (tn) */
  int64_t blocks, tiles;     /* column blocks and row tiles per batch element */
  int64_t nbatch;            /* leading dimensions */
  int64_t dims[MAXBATCH];    /* the result's leading dimensions */
  int64_t a_str[MAXBATCH], b_str[MAXBATCH]; /* strides per leading dimension (0: broadcast) */
  int tn;
} dense_ctx;

static void dense_item(void *p, int64_t item) {
  const dense_ctx *k = p;
  const int64_t tile = item % k->tiles, block = (item / k->tiles) % k->blocks;
  const int64_t batch = item / (k->tiles * k->blocks);
  const int64_t vectors = (k->N + L - 1) / L;
  int64_t col[NVB];
  const int nv = (int)min64(TILE_V, vectors - block * TILE_V);
  for (int v = 0; v < nv; ++v) col[v] = min64((block * TILE_V + v) * L, k->N - L);
  const int64_t r0 = tile * TILE_R;
  const int rows = (int)min64(TILE_R, k->rows - r0);
  const float *a = k->a, *b = k->b;
  for (int64_t d = k->nbatch - 1, rest = batch; d >= 0; --d) { /* the operands' batch elements */
    const int64_t i = rest % k->dims[d];
    rest /= k->dims[d];
    a += i * k->a_str[d];
    b += i * k->b_str[d];
  }
  float *c = k->c + batch * k->rows * k->N + r0 * k->N;
  if (k->tn) /* c[r, :] = sum_m a[m, r0 + r] b[m, :] */
    TILES[nv - 1][rows - 1](a + r0, 1, k->K, b, c, k->M, k->N, col);
  else /* c[r, :] = sum_k a[r0 + r, k] b[k, :] */
    TILES[nv - 1][rows - 1](a + r0 * k->K, k->K, 1, b, c, k->K, k->N, col);
}

/* Multiply-adds per worker below which splitting costs more than it saves. */
#define FMAS_PER_WORKER (1 << 21)

/* Checks the call and fills the sizes and batch strides; returns an error message or 0. */
static const char *dense_frame(XLA_FFI_CallFrame *frame, int tn, dense_ctx *k, int64_t *batch) {
  if (frame->args.size != 2 || frame->rets.size != 1 ||
      frame->args.types[0] != XLA_FFI_ArgType_BUFFER ||
      frame->args.types[1] != XLA_FFI_ArgType_BUFFER ||
      frame->rets.types[0] != XLA_FFI_RetType_BUFFER)
    return "fjl_dense: expected 2 array arguments and 1 array result";
  const XLA_FFI_Buffer *a = frame->args.args[0], *b = frame->args.args[1];
  const XLA_FFI_Buffer *c = frame->rets.rets[0];
  const int64_t rank = c->rank;
  if (a->dtype != XLA_FFI_DataType_F32 || b->dtype != XLA_FFI_DataType_F32 ||
      c->dtype != XLA_FFI_DataType_F32 || rank < 2 || a->rank != rank || b->rank != rank)
    return "fjl_dense: arguments and result must be float32 arrays of one rank >= 2";
  const int64_t *ad = a->dims + rank - 2, *bd = b->dims + rank - 2, *cd = c->dims + rank - 2;
  k->M = ad[0];
  k->K = ad[1];
  k->N = bd[1];
  k->rows = tn ? k->K : k->M;
  if (bd[0] != (tn ? k->M : k->K) || cd[0] != k->rows || cd[1] != k->N || k->N < L)
    return "fjl_dense: shapes do not match (and the result needs at least 16 columns)";
  if (rank - 2 > MAXBATCH) return "fjl_dense: too many leading (batch) dimensions";
  /* Leading dimensions broadcast: an operand's is the result's, or 1 (one matrix for all). */
  k->nbatch = rank - 2;
  int64_t a_str = ad[0] * ad[1], b_str = bd[0] * bd[1];
  *batch = 1;
  for (int64_t d = rank - 3; d >= 0; --d) {
    const int64_t n = c->dims[d];
    if ((a->dims[d] != n && a->dims[d] != 1) || (b->dims[d] != n && b->dims[d] != 1))
      return "fjl_dense: an argument's leading dimensions must be the result's, or 1";
    k->dims[d] = n;
    k->a_str[d] = a->dims[d] == n && n > 1 ? a_str : 0;
    k->b_str[d] = b->dims[d] == n && n > 1 ? b_str : 0;
    a_str *= a->dims[d];
    b_str *= b->dims[d];
    *batch *= n;
  }
  k->a = a->data;
  k->b = b->data;
  k->c = c->data;
  k->tn = tn;
  k->blocks = ((k->N + L - 1) / L + TILE_V - 1) / TILE_V;
  k->tiles = (k->rows + TILE_R - 1) / TILE_R;
  return 0;
}

static XLA_FFI_Error *dense_call(XLA_FFI_CallFrame *frame, int tn) {
  if (metadata(frame)) return 0;
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return 0;
  dense_ctx k;
  int64_t batch;
  const char *bad = dense_frame(frame, tn, &k, &batch);
  if (bad) return error(frame->api, bad);
  const int64_t items = batch * k.blocks * k.tiles;
  if (items == 0 || (tn ? k.M : k.K) == 0) { /* an empty contraction: zeros */
    for (int64_t e = 0; e < batch * k.rows * k.N; ++e) k.c[e] = 0.f;
    return 0;
  }
  const int64_t fmas = batch * k.M * k.K * k.N;
  int64_t workers = 1;
  if (fmas >= 2 * FMAS_PER_WORKER)
    workers = min64(pool_threads(frame->api, frame->ctx), fmas / FMAS_PER_WORKER);
  parallel_for(frame->api, frame->ctx, items, workers, dense_item, &k);
  return 0;
}

XLA_FFI_Error *FjlDenseNN(XLA_FFI_CallFrame *frame) { return dense_call(frame, 0); }
XLA_FFI_Error *FjlDenseTN(XLA_FFI_CallFrame *frame) { return dense_call(frame, 1); }
