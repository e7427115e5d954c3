/* running-sum in C: a keyed running sum of an integer field, in host state.
 *
 * The same operator as the Rust plugin plugins/running-sum, with the same
 * config and output bytes: for each keyed JSON record it adds the integer
 * field `field` (default "amount") to the key's total (value state "sum",
 * an i64, so the state reads the same from every language) and emits
 * {"key":<key>,"sum":<total>} (with ,"version":<tag> when `tag` is set).
 *
 *   [[operators]]
 *   name = "sum"
 *   plugin = "running-sum"
 *   partition = "hash"
 *   config = { field = "amount", tag = "c" }
 *
 * Build: sh sdk/c/build.sh plugins/c/running-sum/running_sum.c -o running_sum.wasm */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    weir_buf field;  /* NUL-terminated */
    weir_buf suffix; /* what follows the sum: `}` or `,"version":"<tag>"}` */
} running_sum;

static int open_sum(const weir_info *info, weir_bytes config, void **self) {
    (void)info;
    running_sum *s = calloc(1, sizeof *s);
    weir_bytes v;
    int found = weir_json_field(config, "field", &v);
    if (found < 0) return weir_reject(NULL, "invalid config for running-sum: not a JSON object");
    if (found == 0) weir_buf_str(&s->field, "amount");
    else if (weir_json_string(v, &s->field) < 0) return weir_reject(NULL, "invalid config for running-sum: `field` must be a string");
    weir_buf_put(&s->field, "", 1);
    found = weir_json_field(config, "tag", &v);
    if (found == 1 && strncmp((const char *)v.ptr, "null", v.len) != 0) {
        weir_buf tag = {0};
        if (weir_json_string(v, &tag) < 0) return weir_reject(NULL, "invalid config for running-sum: `tag` must be a string");
        weir_buf_str(&s->suffix, ",\"version\":");
        weir_buf_json_str(&s->suffix, (weir_bytes){tag.ptr, tag.len});
        weir_buf_free(&tag);
    }
    weir_buf_str(&s->suffix, "}");
    /* Like serde's deny_unknown_fields: a misspelt key is an error. */
    size_t at = 0;
    weir_bytes k;
    while (weir_json_next(config, &at, &k, &v) == 1) {
        if (!(k.len == 5 && memcmp(k.ptr, "field", 5) == 0) && !(k.len == 3 && memcmp(k.ptr, "tag", 3) == 0))
            return weir_reject(NULL, "invalid config for running-sum: unknown field `%.*s`, expected `field` or `tag`", (int)k.len, k.ptr);
    }
    *self = s;
    return 0;
}

static int process_sum(void *self, const weir_record *r, weir_out *out, weir_ctx *ctx) {
    running_sum *s = self;
    const char *field = (const char *)s->field.ptr;
    if (!r->has_key)
        return weir_reject(ctx, "the record has no key, and running-sum keeps one total per key: set `key` on the upstream operator "
                                "(for example json-filter's key = \"user\") and partition = \"hash\" on this one");
    weir_bytes raw;
    int found = weir_json_field(r->value, field, &raw);
    if (found < 0) return weir_reject(ctx, "value is not a well-formed JSON object");
    if (found == 0) return weir_reject(ctx, "the value has no field \"%s\" to add up; set `field` to the name of its numeric field", field);
    int64_t amount, sum = 0;
    if (weir_json_i64(raw, &amount) < 0) return weir_reject(ctx, "field \"%s\" is not a 64-bit integer: %.*s; running-sum adds up 64-bit integers", field, (int)(raw.len > 40 ? 40 : raw.len), raw.ptr);
    if (weir_get_i64(ctx, "sum", r->key, &sum) < 0) return -1;
    if (__builtin_add_overflow(sum, amount, &sum)) return weir_reject(ctx, "the sum for key %.*s overflows a 64-bit integer", (int)r->key.len, r->key.ptr);
    weir_put_i64(ctx, "sum", r->key, sum);
    weir_buf v = {0};
    weir_buf_str(&v, "{\"key\":");
    weir_buf_json_str(&v, r->key);
    weir_buf_str(&v, ",\"sum\":");
    weir_buf_i64(&v, sum);
    weir_buf_put(&v, s->suffix.ptr, s->suffix.len);
    weir_emit_with_headers(out, &r->key, (weir_bytes){v.ptr, v.len}, r->timestamp, r->headers);
    weir_buf_free(&v);
    return 0;
}

static const char *const prefetch[] = {"sum", NULL};

const weir_operator weir_plugin = {.open = open_sum, .process = process_sum, .prefetch = prefetch};
