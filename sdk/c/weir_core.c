/* weir_core.c: the parts of the C SDK that do not touch the host: byte
 * buffers, the frame format, JSON helpers. Included by weir.c (and by the
 * native unit test, sdk/c/test.c). */
#include "weir.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void weir_oom(void) {
    /* Like a Rust allocation failure: trap, so the host reports the
     * instance's memory limit. */
    __builtin_trap();
}

void weir_buf_put(weir_buf *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + len) cap *= 2;
        uint8_t *p = (uint8_t *)realloc(b->ptr, cap);
        if (!p) weir_oom();
        b->ptr = p;
        b->cap = cap;
    }
    if (len) memcpy(b->ptr + b->len, data, len);
    b->len += len;
}

void weir_buf_str(weir_buf *b, const char *s) { weir_buf_put(b, s, strlen(s)); }

void weir_buf_bytes(weir_buf *b, weir_bytes v) { weir_buf_put(b, v.ptr, v.len); }

void weir_buf_i64(weir_buf *b, int64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    weir_buf_put(b, tmp, (size_t)n);
}

void weir_buf_json_str(weir_buf *b, weir_bytes s) {
    static const char hex[] = "0123456789abcdef";
    weir_buf_put(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
            }
        }
        if (!esc && c >= 0x20) continue;
        weir_buf_put(b, s.ptr + start, i - start);
        if (esc) weir_buf_str(b, esc);
        else weir_buf_put(b, u, 6);
        start = i + 1;
    }
    weir_buf_put(b, s.ptr + start, s.len - start);
    weir_buf_put(b, "\"", 1);
}

void weir_buf_free(weir_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

weir_bytes weir_str(const char *s) {
    weir_bytes b = {(const uint8_t *)s, strlen(s)};
    return b;
}

/* ---- the frame format: 20-byte header (timestamp i64, key_len u32 with
 * 0xffffffff for none, value_len u32, headers_len u32), then the bytes. */

static uint32_t weir_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static uint64_t weir_u64(const uint8_t *p) { return (uint64_t)weir_u32(p) | (uint64_t)weir_u32(p + 4) << 32; }

static void weir_put_u32(weir_buf *b, uint32_t v) {
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    weir_buf_put(b, p, 4);
}

static void weir_put_u64(weir_buf *b, uint64_t v) {
    weir_put_u32(b, (uint32_t)v);
    weir_put_u32(b, (uint32_t)(v >> 32));
}

/* Reads the record at `*at` of `batch`: 1 and advances, 0 at the end, -1 when malformed. */
static int weir_read_frame(weir_bytes batch, size_t *at, weir_record *r) {
    size_t i = *at;
    if (i == batch.len) return 0;
    if (batch.len - i < 20) return -1;
    const uint8_t *h = batch.ptr + i;
    uint32_t klen = weir_u32(h + 8), vlen = weir_u32(h + 12), hlen = weir_u32(h + 16);
    uint64_t need = 20 + (uint64_t)(klen == 0xffffffffu ? 0 : klen) + vlen + hlen;
    if (need > batch.len - i) return -1;
    r->timestamp = (int64_t)weir_u64(h);
    const uint8_t *p = h + 20;
    r->has_key = klen != 0xffffffffu;
    r->key.ptr = p;
    r->key.len = r->has_key ? klen : 0;
    p += r->key.len;
    r->value.ptr = p;
    r->value.len = vlen;
    p += vlen;
    r->headers.ptr = p;
    r->headers.len = hlen;
    r->frame.ptr = h;
    r->frame.len = (size_t)need;
    *at = i + (size_t)need;
    return 1;
}

static void weir_write_frame(weir_buf *b, const weir_bytes *key, weir_bytes value, int64_t ts, weir_bytes headers) {
    weir_put_u64(b, (uint64_t)ts);
    weir_put_u32(b, key ? (uint32_t)key->len : 0xffffffffu);
    weir_put_u32(b, (uint32_t)value.len);
    weir_put_u32(b, (uint32_t)headers.len);
    if (key) weir_buf_bytes(b, *key);
    weir_buf_bytes(b, value);
    weir_buf_bytes(b, headers);
}

/* A length-prefixed (u32 little-endian) field, as get-many and apply take them. */
static void weir_put_lp(weir_buf *b, weir_bytes v) {
    weir_put_u32(b, (uint32_t)v.len);
    weir_buf_bytes(b, v);
}

/* ---- JSON: top-level fields of an object, without building a document. */

static size_t weir_json_ws(weir_bytes j, size_t i) {
    while (i < j.len && (j.ptr[i] == ' ' || j.ptr[i] == '\t' || j.ptr[i] == '\n' || j.ptr[i] == '\r')) i++;
    return i;
}

/* The end of the string starting at `i` (a quote), or 0 when unterminated. */
static size_t weir_json_skip_string(weir_bytes j, size_t i) {
    for (i++; i < j.len; i++) {
        if (j.ptr[i] == '\\') i++;
        else if (j.ptr[i] == '"') return i + 1;
    }
    return 0;
}

/* The end of the value starting at `i`, or 0 when malformed. */
static size_t weir_json_skip_value(weir_bytes j, size_t i) {
    if (i >= j.len) return 0;
    uint8_t c = j.ptr[i];
    if (c == '"') return weir_json_skip_string(j, i);
    if (c == '{' || c == '[') {
        int depth = 0;
        for (; i < j.len; i++) {
            c = j.ptr[i];
            if (c == '"') {
                size_t e = weir_json_skip_string(j, i);
                if (!e) return 0;
                i = e - 1;
            } else if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
        }
        return 0;
    }
    size_t s = i;
    while (i < j.len && (j.ptr[i] == '-' || j.ptr[i] == '+' || j.ptr[i] == '.' || (j.ptr[i] >= '0' && j.ptr[i] <= '9') || (j.ptr[i] >= 'a' && j.ptr[i] <= 'z') || j.ptr[i] == 'E')) i++;
    return i > s ? i : 0;
}

int weir_json_next(weir_bytes j, size_t *at, weir_bytes *name, weir_bytes *value) {
    size_t i = *at;
    if (i == 0) {
        i = weir_json_ws(j, 0);
        if (i >= j.len || j.ptr[i] != '{') return -1;
        i = weir_json_ws(j, i + 1);
        if (i < j.len && j.ptr[i] == '}') return weir_json_ws(j, i + 1) == j.len ? 0 : -1;
    } else if (i >= j.len) {
        return 0;
    }
    if (i >= j.len || j.ptr[i] != '"') return -1;
    size_t kend = weir_json_skip_string(j, i);
    if (!kend) return -1;
    name->ptr = j.ptr + i + 1;
    name->len = kend - i - 2;
    i = weir_json_ws(j, kend);
    if (i >= j.len || j.ptr[i] != ':') return -1;
    i = weir_json_ws(j, i + 1);
    size_t vend = weir_json_skip_value(j, i);
    if (!vend) return -1;
    value->ptr = j.ptr + i;
    value->len = vend - i;
    i = weir_json_ws(j, vend);
    if (i < j.len && j.ptr[i] == ',') *at = weir_json_ws(j, i + 1);
    else if (i < j.len && j.ptr[i] == '}') {
        if (weir_json_ws(j, i + 1) != j.len) return -1;
        *at = j.len;
    } else return -1;
    return 1;
}

int weir_json_field(weir_bytes j, const char *name, weir_bytes *value) {
    size_t at = 0, nlen = strlen(name);
    weir_bytes k, v;
    int r;
    /* A field name with escapes never matches a plain `name`. */
    while ((r = weir_json_next(j, &at, &k, &v)) == 1) {
        if (k.len == nlen && memcmp(k.ptr, name, nlen) == 0) {
            *value = v;
            return 1;
        }
    }
    return r;
}

int weir_json_i64(weir_bytes raw, int64_t *value) {
    size_t i = 0;
    int neg = 0;
    if (i < raw.len && raw.ptr[i] == '-') neg = 1, i++;
    if (i == raw.len || (raw.ptr[i] == '0' && raw.len - i > 1)) return -1;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < raw.len; i++) {
        uint8_t c = raw.ptr[i];
        if (c < '0' || c > '9') return -1;
        if (v > (limit - (c - '0')) / 10) return -1;
        v = v * 10 + (c - '0');
    }
    *value = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int weir_json_string(weir_bytes raw, weir_buf *out) {
    if (raw.len < 2 || raw.ptr[0] != '"' || raw.ptr[raw.len - 1] != '"') return -1;
    for (size_t i = 1; i + 1 < raw.len; i++) {
        uint8_t c = raw.ptr[i];
        if (c != '\\') {
            weir_buf_put(out, &c, 1);
            continue;
        }
        if (++i + 1 >= raw.len) return -1;
        switch (raw.ptr[i]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'r': c = '\r'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        default: return -1; /* \u escapes: not needed by configs here */
        }
        weir_buf_put(out, &c, 1);
    }
    return 0;
}

#ifndef WEIR_CORE_NO_HOST
/* ---- i64 value state, on weir_get/weir_put (weir.c in a component,
 * weir_testing.c in a native test) ---- */

int weir_get_i64(weir_ctx *ctx, const char *name, weir_bytes key, int64_t *value) {
    weir_bytes v;
    int r = weir_get(ctx, name, key, &v);
    if (r <= 0) return r;
    if (v.len != 8) return weir_reject(ctx, "state \"%s\" holds %zu bytes that do not decode as i64", name, v.len);
    *value = (int64_t)weir_u64(v.ptr);
    return 1;
}

void weir_put_i64(weir_ctx *ctx, const char *name, weir_bytes key, int64_t value) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)value >> (8 * i));
    weir_put(ctx, name, key, (weir_bytes){b, 8});
}
#endif
