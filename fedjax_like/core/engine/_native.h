/* Shared plumbing of the native CPU kernels (_conv2d.c, _dense.c), compiled into one library
 * with them (see fedjax_like/core/engine/native.py): vectors, work sharing on XLA's intra-op
 * thread pool, and the FFI call frame. */
#ifndef FJL_NATIVE_H
#define FJL_NATIVE_H

/* Built freestanding (-ffreestanding -nostdlib): only the compiler's own headers, so a compiler
 * without the C library's development files works too. The few C library functions used are
 * declared here and bound when Python loads the library (the process already has the C library). */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void free(void *ptr);
void *memcpy(void *dst, const void *src, size_t n);
int sched_yield(void);

#define L 16 /* floats per vector */
typedef float vec __attribute__((vector_size(64), aligned(4)));

static inline vec vload(const float *p) { return *(const vec *)p; }
static inline void vstore(float *p, vec v) { *(vec *)p = v; }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ------------------------------------------------------------------------------------------ */
/* Work sharing on XLA's intra-op pool                                                         */

typedef void (*body_fn)(void *ctx, int64_t item);

typedef struct {
  atomic_long next, active, refs;
  int64_t n;
  body_fn body;
  void *ctx;
} shared_t;

static void release(shared_t *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1) free(s);
}

/* Takes items until none are left. `ctx` is read only while items remain, and the caller does
 * not return before every worker that took an item has finished, so a task that the pool runs
 * late finds the counter exhausted and touches nothing but `s`. */
static void work(shared_t *s) {
  atomic_fetch_add(&s->active, 1);
  for (int64_t i; (i = atomic_fetch_add(&s->next, 1)) < s->n;) s->body(s->ctx, i);
  atomic_fetch_sub(&s->active, 1);
}

static void task(void *data) {
  shared_t *s = data;
  work(s);
  release(s);
}

static int64_t pool_threads(const XLA_FFI_Api *api, XLA_FFI_ExecutionContext *ctx) {
  int64_t n = 0;
  XLA_FFI_ThreadPool_NumThreads_Args args = {XLA_FFI_ThreadPool_NumThreads_Args_STRUCT_SIZE, 0,
                                             ctx, &n};
  XLA_FFI_Error *err = api->XLA_FFI_ThreadPool_NumThreads(&args);
  if (err) {
    XLA_FFI_Error_Destroy_Args d = {XLA_FFI_Error_Destroy_Args_STRUCT_SIZE, 0, err};
    api->XLA_FFI_Error_Destroy(&d);
    return 1;
  }
  return max64(1, n);
}

/* Runs body(ctx, i) for i in [0, n) on the caller and up to `workers - 1` pool tasks. */
static void parallel_for(const XLA_FFI_Api *api, XLA_FFI_ExecutionContext *ctx, int64_t n,
                         int64_t workers, body_fn body, void *bctx) {
  if (workers <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(bctx, i);
    return;
  }
  shared_t *s = malloc(sizeof *s);
  if (!s) {
    for (int64_t i = 0; i < n; ++i) body(bctx, i);
    return;
  }
  atomic_init(&s->next, 0);
  atomic_init(&s->active, 0);
  atomic_init(&s->refs, 1);
  s->n = n;
  s->body = body;
  s->ctx = bctx;
  for (int64_t t = 1; t < workers; ++t) {
    atomic_fetch_add(&s->refs, 1);
    XLA_FFI_ThreadPool_Schedule_Args args = {XLA_FFI_ThreadPool_Schedule_Args_STRUCT_SIZE, 0,
                                             ctx, task, s};
    XLA_FFI_Error *err = api->XLA_FFI_ThreadPool_Schedule(&args);
    if (err) { /* no pool: the caller does the work */
      XLA_FFI_Error_Destroy_Args d = {XLA_FFI_Error_Destroy_Args_STRUCT_SIZE, 0, err};
      api->XLA_FFI_Error_Destroy(&d);
      release(s);
      break;
    }
  }
  work(s);
  while (atomic_load(&s->active) != 0) sched_yield();
  release(s);
}


/* ------------------------------------------------------------------------------------------ */
/* FFI plumbing                                                                                */

static XLA_FFI_Error *error(const XLA_FFI_Api *api, const char *msg) {
  XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, 0, msg,
                                    XLA_FFI_Error_Code_INVALID_ARGUMENT};
  return api->XLA_FFI_Error_Create(&args);
}

/* Answers XLA's metadata query; returns 1 when the call was one. */
static int metadata(XLA_FFI_CallFrame *frame) {
  /* The extension's type is XLA_FFI_Extension_Base up to jaxlib 0.10, XLA_FFI_InternalExtension
     after (same layout): name it through the field. */
  __typeof__(frame->extension_start) ext = frame->extension_start;
  if (!ext || ext->type != XLA_FFI_Extension_Metadata) return 0;
  XLA_FFI_Metadata *m = ((XLA_FFI_Metadata_Extension *)ext)->metadata;
  m->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
  m->api_version.extension_start = 0;
  m->api_version.major_version = XLA_FFI_API_MAJOR;
  m->api_version.minor_version = XLA_FFI_API_MINOR;
  /* traits = 0, and every later field zeroed without naming it: newer headers add
     state_type_id (unknown), older ones (jaxlib 0.6, FFI API 0.1) end at traits. */
  char *rest = (char *)&m->traits;
  for (size_t i = 0; i < sizeof(*m) - offsetof(XLA_FFI_Metadata, traits); i++) rest[i] = 0;
  return 1;
}


/* The int64 scalar attribute `name`, or `fallback` when absent. */
static __attribute__((unused)) int64_t attr_i64(XLA_FFI_CallFrame *frame, const char *name,
                                                int64_t fallback) {
  size_t len = 0;
  while (name[len]) ++len;
  for (int64_t i = 0; i < frame->attrs.size; ++i) {
    const XLA_FFI_ByteSpan *key = frame->attrs.names[i];
    if (key->len != len || frame->attrs.types[i] != XLA_FFI_AttrType_SCALAR) continue;
    int same = 1;
    for (size_t c = 0; c < len && same; ++c) same = key->ptr[c] == name[c];
    if (!same) continue;
    const XLA_FFI_Scalar *v = frame->attrs.attrs[i];
    if (v->dtype == XLA_FFI_DataType_S64) return *(const int64_t *)v->value;
    if (v->dtype == XLA_FFI_DataType_S32) return *(const int32_t *)v->value;
  }
  return fallback;
}

#endif /* FJL_NATIVE_H */
