/* Native unit tests of the C SDK's encodings and JSON helpers (no Wasm):
 *   cc -o /tmp/weir-c-test sdk/c/test.c && /tmp/weir-c-test */
#define WEIR_CORE_NO_HOST /* the encodings only: no host functions here */
#include "weir_core.c"

#include <assert.h>

#define EQ(buf, lit) (buf.len == sizeof(lit) - 1 && memcmp(buf.ptr, lit, buf.len) == 0)

int main(void) {
    /* Frames: write two, read them back. */
    weir_buf b = {0};
    weir_bytes k = weir_str("user-1"), hdr = weir_str("");
    weir_write_frame(&b, &k, weir_str("{\"a\":1}"), -5, hdr);
    weir_write_frame(&b, NULL, weir_str("x"), 7, hdr);
    assert(b.len == 20 + 6 + 7 + 20 + 1);
    weir_bytes batch = {b.ptr, b.len};
    weir_record r;
    size_t at = 0;
    assert(weir_read_frame(batch, &at, &r) == 1 && r.has_key && r.timestamp == -5 && EQ(r.key, "user-1") && EQ(r.value, "{\"a\":1}"));
    assert(r.frame.len == 33);
    assert(weir_read_frame(batch, &at, &r) == 1 && !r.has_key && r.timestamp == 7 && EQ(r.value, "x"));
    assert(weir_read_frame(batch, &at, &r) == 0);
    batch.len -= 1; /* truncated */
    at = 33;
    assert(weir_read_frame(batch, &at, &r) == -1);

    /* JSON fields, integers, strings. */
    weir_bytes obj = weir_str(" {\"user\" : \"u\\\"1\", \"n\":{\"amount\":9},\"amount\":-42, \"f\":1.5} "), v;
    assert(weir_json_field(obj, "amount", &v) == 1 && EQ(v, "-42"));
    int64_t n;
    assert(weir_json_i64(v, &n) == 0 && n == -42);
    assert(weir_json_field(obj, "f", &v) == 1 && weir_json_i64(v, &n) == -1);
    assert(weir_json_field(obj, "missing", &v) == 0);
    assert(weir_json_field(weir_str("[1]"), "a", &v) == -1);
    assert(weir_json_field(weir_str("{\"a\":1"), "a", &v) == -1); /* unterminated */
    assert(weir_json_i64(weir_str("9223372036854775807"), &n) == 0 && n == INT64_MAX);
    assert(weir_json_i64(weir_str("-9223372036854775808"), &n) == 0 && n == INT64_MIN);
    assert(weir_json_i64(weir_str("9223372036854775808"), &n) == -1);
    assert(weir_json_i64(weir_str("01"), &n) == -1);
    weir_buf s = {0};
    assert(weir_json_field(obj, "user", &v) == 1 && weir_json_string(v, &s) == 0 && EQ(s, "u\"1"));

    /* JSON string escaping, as serde_json writes it. */
    weir_buf e = {0};
    weir_buf_json_str(&e, weir_str("a\"b\\c\nd\x01\xc3\xa9"));
    assert(EQ(e, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\""));
    weir_buf i = {0};
    weir_buf_i64(&i, INT64_MIN);
    assert(EQ(i, "-9223372036854775808"));
    puts("sdk/c: all tests passed");
    return 0;
}
