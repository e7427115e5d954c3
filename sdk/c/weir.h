/* weir.h: write weir stream operators in C (or C++), compiled to WebAssembly
 * components with clang's wasm32-wasi target.
 *
 * An operator fills in a `weir_operator` named `weir_plugin`:
 *
 *   #include "weir.h"
 *
 *   static int process(void *self, const weir_record *r, weir_out *out, weir_ctx *ctx) {
 *       int64_t n = 0;
 *       if (weir_get_i64(ctx, "count", r->key, &n) < 0) return -1;
 *       weir_put_i64(ctx, "count", r->key, n + 1);
 *       weir_forward(out, r);
 *       return 0;                      // or: return weir_reject(ctx, "bad input: %s", why);
 *   }
 *   static const char *prefetch[] = {"count", NULL};
 *   const weir_operator weir_plugin = {.process = process, .prefetch = prefetch};
 *
 * and links with weir.c (the glue to the component's exports). A batch of
 * records crosses into the component as one buffer: `process` runs once
 * per record with a view of it (no copy). Value state named in `prefetch`
 * is fetched for every key of a batch in one host call (`get-many`); every
 * state write is buffered and sent in one `apply` call when the batch ends;
 * a rejected record leaves no output and no state write of its batch. The
 * frame, `get-many` and `apply` encodings live in weir.c; an operator never
 * sees them. The guide: docs/plugins/c.md. */
#ifndef WEIR_H
#define WEIR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A byte string: a view (`ptr` may be NULL when `len` is 0). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} weir_bytes;

/* One input record, a view into the batch. `has_key` is 0 for a record
 * without a key. `headers` is the encoded header block (carried on by
 * `weir_emit_with_headers` or `weir_forward`). */
typedef struct {
    int64_t timestamp;
    int has_key;
    weir_bytes key;
    weir_bytes value;
    weir_bytes headers;
    weir_bytes frame; /* the whole record, for weir_forward */
} weir_record;

/* Who an instance is, given to `open`. */
typedef struct {
    weir_bytes pipeline;
    weir_bytes operator_name;
    uint32_t subtask;
    uint32_t parallelism;
} weir_info;

/* A growing byte buffer (for building output values). Zero-initialize it;
 * `weir_buf_free` releases it. */
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} weir_buf;

void weir_buf_put(weir_buf *b, const void *data, size_t len);
void weir_buf_str(weir_buf *b, const char *s);
void weir_buf_bytes(weir_buf *b, weir_bytes v);
void weir_buf_i64(weir_buf *b, int64_t v);
/* `s` as a JSON string, quotes included, escaped like serde_json does. */
void weir_buf_json_str(weir_buf *b, weir_bytes s);
void weir_buf_free(weir_buf *b);

/* The output of one call. */
typedef struct weir_out weir_out;
/* Emits a record; `key` NULL for none. */
void weir_emit(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t timestamp);
/* Emits a record carrying an input record's encoded headers. */
void weir_emit_with_headers(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t timestamp, weir_bytes headers);
/* Emits an input record unchanged. */
void weir_forward(weir_out *out, const weir_record *r);

/* The host: keyed state, timers, the watermark, rejections. */
typedef struct weir_ctx weir_ctx;

/* Value state `name` of `key`: 1 and `*value` set (valid until the batch
 * ends) when present, 0 when absent, -1 when the host refused (the reason
 * is recorded: return -1 from the callback to reject the record with it). */
int weir_get(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes *value);
/* The same for an i64 kept as 8 bytes little-endian (the Rust SDK's `i64`,
 * `codecs.i64` in JavaScript, `weir.I64` in Python). -1 also when the
 * stored value is not 8 bytes. */
int weir_get_i64(weir_ctx *ctx, const char *name, weir_bytes key, int64_t *value);
void weir_put(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes value);
void weir_put_i64(weir_ctx *ctx, const char *name, weir_bytes key, int64_t value);
void weir_delete(weir_ctx *ctx, const char *name, weir_bytes key);

/* Map state: a sorted map of byte strings per (name, key). Writes are
 * buffered with the batch's; a read sees them (it sends them first).
 * `weir_map_get` returns like `weir_get`; the value is a copy to free(). */
int weir_map_get(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key, weir_buf *value);
void weir_map_put(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key, weir_bytes value);
void weir_map_remove(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key);
void weir_map_clear(weir_ctx *ctx, const char *name, weir_bytes key);

typedef enum { WEIR_EVENT_TIME = 0, WEIR_PROCESSING_TIME = 1 } weir_time_domain;
/* Asks for `on_timer` when `domain`'s clock reaches `timestamp` (ms). */
void weir_timer_register(weir_ctx *ctx, weir_time_domain domain, weir_bytes key, int64_t timestamp);
void weir_timer_delete(weir_ctx *ctx, weir_time_domain domain, weir_bytes key, int64_t timestamp);
/* The event-time watermark (INT64_MIN before the first), the host's clock. */
int64_t weir_watermark(weir_ctx *ctx);
int64_t weir_processing_time(weir_ctx *ctx);

/* Several inputs (`inputs = ["orders", "payments"]` in the pipeline file):
 * the index (into the input names) of the input the current batch came
 * from; 0 for an operator with one input, and in `on_timer` and `close`.
 * Asked of the host once per batch, however many records call it. Keyed
 * state and timers are shared by all inputs: a join keeps both sides of a
 * key under that key. */
uint32_t weir_input(weir_ctx *ctx);
/* The number of inputs, and input `i`'s name: the upstream source's or
 * operator's, in the order of the pipeline file's `inputs` (`{NULL, 0}`
 * past the last). Asked of the host once; valid for the instance's life.
 * `ctx` may be NULL in `open`, for these and `weir_input`. */
uint32_t weir_input_count(weir_ctx *ctx);
weir_bytes weir_input_name(weir_ctx *ctx, uint32_t i);

typedef enum { WEIR_TRACE, WEIR_DEBUG, WEIR_INFO, WEIR_WARN, WEIR_ERROR } weir_level;
/* One line in weir's log (printf format). */
void weir_log(weir_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records why the current record (or timer, or open) is rejected and
 * returns -1: `return weir_reject(ctx, "field %s missing", name);`.
 * `ctx` may be NULL in `open`. */
int weir_reject(weir_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A fired timer. */
typedef struct {
    weir_time_domain domain;
    weir_bytes key;
    int64_t timestamp;
} weir_timer;

/* The operator. Every callback but `process` is optional; each returns 0,
 * or -1 after `weir_reject` (or a failed state call) to reject. `open`
 * gets the operator's config table as JSON text and sets `*self` to the
 * instance's data (passed back to every callback). */
typedef struct {
    int (*open)(const weir_info *info, weir_bytes config_json, void **self);
    int (*process)(void *self, const weir_record *r, weir_out *out, weir_ctx *ctx);
    int (*on_timer)(void *self, const weir_timer *t, weir_out *out, weir_ctx *ctx);
    int (*close)(void *self, weir_out *out, weir_ctx *ctx);
    /* NULL-terminated value-state names read for (nearly) every record's
     * key: fetched for a whole batch in one host call per name. */
    const char *const *prefetch;
} weir_operator;

/* Defined by the operator. */
extern const weir_operator weir_plugin;

/* JSON helpers for values and configs (top-level fields of an object; no
 * document is built). `weir_json_field` finds field `name` of the object
 * `json` and sets `*value` to its raw text: 1 found, 0 absent, -1 when
 * `json` is not a well-formed object. */
int weir_json_field(weir_bytes json, const char *name, weir_bytes *value);
/* Walks the fields of the object `json`: start with `*at` = 0; each call
 * returns 1 with the next field's raw name (between its quotes) and raw
 * value, 0 after the last, -1 when `json` is not a well-formed object. */
int weir_json_next(weir_bytes json, size_t *at, weir_bytes *name, weir_bytes *value);
/* A raw JSON integer as an i64: 0, or -1 when it is not one (or too large). */
int weir_json_i64(weir_bytes raw, int64_t *value);
/* A raw JSON string's contents, unescaped, into `out`: 0, or -1. */
int weir_json_string(weir_bytes raw, weir_buf *out);

/* A NUL-terminated C string as weir_bytes. */
weir_bytes weir_str(const char *s);

#ifdef __cplusplus
}
#endif
#endif
