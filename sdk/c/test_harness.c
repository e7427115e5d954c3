/* Native tests of the C SDK's test harness (weir_testing.c), with a fixture
 * operator that uses every part of the host: value and map state, event-
 * and processing-time timers, the watermark, rejections, close.
 *   cc -Wall -Wno-unused-function -o /tmp/t sdk/c/test_harness.c sdk/c/weir_testing.c && /tmp/t */
#include "weir_testing.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* Counts records per key (value state "n", shared by all inputs),
 * remembers each value in map state "seen", and 10 ms after a record's
 * timestamp (event time) emits "<key>=<count>"; a value "bad" is rejected
 * after its writes, a value "which" emits "<input> <name> of <inputs>". A
 * processing-time timer emits "tick". `close` emits "closed". `open`
 * refuses a config {"inputs": N} when the operator does not have N inputs. */
static int open_fx(const weir_info *info, weir_bytes config, void **self) {
    (void)info;
    weir_bytes v;
    int64_t want;
    if (weir_json_field(config, "fail", &v) == 1) return weir_reject(NULL, "asked to fail");
    if (weir_json_field(config, "inputs", &v) == 1 && weir_json_i64(v, &want) == 0 && want != weir_input_count(NULL))
        return weir_reject(NULL, "wants %lld inputs, has %u", (long long)want, (unsigned)weir_input_count(NULL));
    *self = NULL;
    return 0;
}

static int process_fx(void *self, const weir_record *r, weir_out *out, weir_ctx *ctx) {
    (void)self;
    int64_t n = 0;
    if (weir_get_i64(ctx, "n", r->key, &n) < 0) return -1;
    weir_put_i64(ctx, "n", r->key, n + 1);
    if (r->value.len == 5 && memcmp(r->value.ptr, "which", 5) == 0) {
        weir_bytes name = weir_input_name(ctx, weir_input(ctx));
        weir_buf v = {0};
        weir_buf_i64(&v, weir_input(ctx));
        weir_buf_str(&v, " ");
        weir_buf_bytes(&v, name);
        weir_buf_str(&v, " of ");
        weir_buf_i64(&v, weir_input_count(ctx));
        weir_emit(out, &r->key, (weir_bytes){v.ptr, v.len}, r->timestamp);
        weir_buf_free(&v);
    }
    weir_map_put(ctx, "seen", r->key, r->value, weir_str("1"));
    if (r->value.len == 3 && memcmp(r->value.ptr, "bad", 3) == 0) return weir_reject(ctx, "bad value at %lld", (long long)r->timestamp);
    if (r->value.len == 5 && memcmp(r->value.ptr, "clear", 5) == 0) weir_map_clear(ctx, "seen", r->key);
    weir_timer_register(ctx, WEIR_EVENT_TIME, r->key, r->timestamp + 10);
    if (r->value.len == 4 && memcmp(r->value.ptr, "tick", 4) == 0) weir_timer_register(ctx, WEIR_PROCESSING_TIME, r->key, 1000);
    return 0;
}

static int timer_fx(void *self, const weir_timer *t, weir_out *out, weir_ctx *ctx) {
    (void)self;
    assert(weir_input(ctx) == 0); /* outside `process` */
    weir_buf v = {0};
    if (t->domain == WEIR_PROCESSING_TIME) {
        weir_buf_str(&v, "tick");
    } else {
        int64_t n = 0;
        if (weir_get_i64(ctx, "n", t->key, &n) < 0) return -1;
        assert(weir_watermark(ctx) >= t->timestamp);
        weir_buf_bytes(&v, t->key);
        weir_buf_str(&v, "=");
        weir_buf_i64(&v, n);
    }
    weir_emit(out, &t->key, (weir_bytes){v.ptr, v.len}, t->timestamp);
    weir_buf_free(&v);
    return 0;
}

static int close_fx(void *self, weir_out *out, weir_ctx *ctx) {
    (void)self;
    (void)ctx;
    weir_emit(out, NULL, weir_str("closed"), 0);
    return 0;
}

const weir_operator weir_plugin = {.open = open_fx, .process = process_fx, .on_timer = timer_fx, .close = close_fx};

static int64_t count(weir_harness *h, const char *key) {
    weir_bytes v;
    if (!weir_harness_state(h, "n", weir_str(key), &v)) return 0;
    assert(v.len == 8);
    int64_t n;
    memcpy(&n, v.ptr, 8);
    return n;
}

int main(void) {
    weir_harness *bad = weir_harness_open("{\"fail\":true}");
    assert(weir_harness_error(bad) && strcmp(weir_harness_error(bad), "asked to fail") == 0);
    weir_outputs none = {0};
    assert(weir_harness_process(bad, NULL, 0, &none) == -1);
    weir_harness_close(bad, &none);

    weir_harness *h = weir_harness_open("{}");
    assert(!weir_harness_error(h));
    weir_outputs out = {0};
    weir_record batch[] = {weir_test_record("a", "x", 100), weir_test_record("b", "y", 105), weir_test_record("a", "z", 101)};
    assert(weir_harness_process(h, batch, 3, &out) == 0 && out.len == 0);
    assert(count(h, "a") == 2 && count(h, "b") == 1 && weir_harness_timers(h) == 3);

    /* A rejected record: nothing of its batch stays, not even the writes before it. */
    weir_record rejected[] = {weir_test_record("a", "w", 102), weir_test_record("a", "bad", 103)};
    assert(weir_harness_process(h, rejected, 2, &out) == -1);
    assert(strcmp(weir_harness_error(h), "bad value at 103") == 0 && weir_harness_rejected(h) == 1);
    assert(count(h, "a") == 2 && weir_harness_timers(h) == 3 && out.len == 0);

    /* The watermark fires due event-time timers in timestamp order, once. */
    assert(weir_harness_watermark(h, 111, &out) == 0);
    assert(out.len == 2 && weir_output_is(&out.records[0], "a=2") && out.records[0].timestamp == 110 && weir_output_is(&out.records[1], "a=2"));
    assert(weir_harness_timers(h) == 1);
    assert(weir_harness_watermark(h, 200, &out) == 0 && out.len == 3 && weir_output_is(&out.records[2], "b=1"));
    assert(weir_harness_watermark(h, 300, &out) == 0 && out.len == 3);

    /* Processing time has its own clock. */
    weir_record tick[] = {weir_test_record("c", "tick", 500)};
    assert(weir_harness_process(h, tick, 1, &out) == 0);
    assert(weir_harness_clock(h, 999, &out) == 0 && out.len == 3);
    assert(weir_harness_clock(h, 1000, &out) == 0 && out.len == 4 && weir_output_is(&out.records[3], "tick"));

    /* Map state: a clear drops the key's entries, committed and staged. */
    weir_bytes seen;
    assert(weir_harness_map_state(h, "seen", weir_str("a"), weir_str("x"), &seen) == 1 && seen.len == 1);
    weir_record clear[] = {weir_test_record("a", "clear", 600)};
    assert(weir_harness_process(h, clear, 1, &out) == 0);
    assert(weir_harness_map_state(h, "seen", weir_str("a"), weir_str("x"), &seen) == 0);
    assert(weir_harness_map_state(h, "seen", weir_str("a"), weir_str("clear"), &seen) == 0);
    assert(weir_harness_map_state(h, "seen", weir_str("b"), weir_str("y"), &seen) == 1);

    assert(weir_harness_close(h, &out) == 0 && out.len == 5 && weir_output_is(&out.records[4], "closed"));
    weir_outputs_free(&out);

    /* Several inputs: each batch says which it came from; keyed state is shared by them. */
    static const char *const sides[] = {"orders", "payments", NULL};
    weir_harness *j = weir_harness_open_inputs("{\"inputs\":2}", 0, 1, sides);
    assert(!weir_harness_error(j));
    weir_record which[] = {weir_test_record("k", "which", 1)};
    assert(weir_harness_process_input(j, 1, which, 1, &out) == 0);
    assert(out.len == 1 && weir_output_is(&out.records[0], "1 payments of 2"));
    assert(weir_harness_process(j, which, 1, &out) == 0 && out.len == 2 && weir_output_is(&out.records[1], "0 orders of 2"));
    assert(count(j, "k") == 2);
    /* Timers fire outside `process`: input 0 (timer_fx asserts it). */
    assert(weir_harness_watermark(j, 100, &out) == 0 && out.len == 3 && weir_output_is(&out.records[2], "k=2"));
    assert(weir_harness_process_input(j, 2, which, 1, &out) == -1);
    assert(strcmp(weir_harness_error(j), "input 2 is not one of the harness's 2 inputs") == 0 && count(j, "k") == 2);
    assert(weir_harness_close(j, &out) == 0);
    weir_outputs_free(&out);

    /* One input, "input", by default; `open` can read the names. */
    weir_harness *one = weir_harness_open("{\"inputs\":2}");
    assert(weir_harness_error(one) && strcmp(weir_harness_error(one), "wants 2 inputs, has 1") == 0);
    weir_harness_close(one, &out);
    one = weir_harness_open("{\"inputs\":1}");
    assert(!weir_harness_error(one));
    assert(weir_harness_process(one, which, 1, &out) == 0 && out.len == 1 && weir_output_is(&out.records[0], "0 input of 1"));
    assert(weir_harness_process_input(one, 1, which, 1, &out) == -1);
    weir_harness_close(one, &out);
    weir_outputs_free(&out);
    puts("sdk/c: harness tests passed");
    return 0;
}
