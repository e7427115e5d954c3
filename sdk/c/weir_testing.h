/* weir_testing.h: run a C operator's logic natively, without Wasm, the way
 * `weir_sdk::testing::Harness` does for Rust. The harness plays the host:
 * in-memory value and map state, timers, the watermark and the clock. A
 * test compiles the operator with sdk/c/weir_testing.c (instead of weir.c):
 *
 *   cc -I sdk/c -o test_op test_op.c my_op.c sdk/c/weir_testing.c && ./test_op
 *
 *   weir_harness *h = weir_harness_open("{\"needle\":\"error\"}");
 *   assert(!weir_harness_error(h));
 *   weir_record in[] = {weir_test_record(NULL, "disk error", 1)};
 *   weir_outputs out = {0};
 *   assert(weir_harness_process(h, in, 1, &out) == 0);
 *   assert(out.len == 1 && weir_output_is(&out.records[0], "ALERT disk error"));
 *
 * Like the host, a batch with a rejected record leaves no output and no
 * state write or timer change: `weir_harness_process` returns -1,
 * `weir_harness_error` says why and `weir_harness_rejected` which record.
 * One harness at a time (an operator is one global `weir_plugin`). */
#ifndef WEIR_TESTING_H
#define WEIR_TESTING_H

#include "weir.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_harness weir_harness;

/* The outputs of a call: `records` are views into `frames` (key, value,
 * timestamp, headers), valid until `weir_outputs_free`. A call appends. */
typedef struct {
    weir_buf frames;
    weir_record *records;
    size_t len;
} weir_outputs;

/* Opens the operator with `config_json` (the operator's config table as
 * JSON), as subtask 0 of 1. Always returns a harness: when `open` rejected
 * the config, `weir_harness_error` says why and every other call fails. */
weir_harness *weir_harness_open(const char *config_json);
/* The same as subtask `subtask` of `parallelism`. */
weir_harness *weir_harness_open_subtask(const char *config_json, uint32_t subtask, uint32_t parallelism);
/* The same for an operator with several inputs: `inputs` is their names,
 * NULL-terminated, as `weir_input_name` gives them. `weir_harness_open`
 * (and NULL or an empty list here) opens with one input, "input":
 *   static const char *const inputs[] = {"orders", "payments", NULL};
 *   weir_harness *h = weir_harness_open_inputs("{}", 0, 1, inputs); */
weir_harness *weir_harness_open_inputs(const char *config_json, uint32_t subtask, uint32_t parallelism, const char *const *inputs);
/* NULL, or why the last call (or `open`) was rejected. */
const char *weir_harness_error(const weir_harness *h);
/* The index of the rejected record of the last failed batch. */
size_t weir_harness_rejected(const weir_harness *h);

/* One batch of records through `process` (the prefetched states read
 * first, writes applied at the end, as the host runs it): 0, or -1. The
 * batch comes from input 0. */
int weir_harness_process(weir_harness *h, const weir_record *records, size_t n, weir_outputs *out);
/* The same for a batch from input `input` (what `weir_input` returns
 * during it); -1 when the harness has no such input. */
int weir_harness_process_input(weir_harness *h, uint32_t input, const weir_record *records, size_t n, weir_outputs *out);
/* Advances the watermark to `watermark` and fires the due event-time
 * timers in timestamp order (timers a timer registers that are due fire
 * too): 0, or -1. */
int weir_harness_watermark(weir_harness *h, int64_t watermark, weir_outputs *out);
/* Sets the processing-time clock and fires the due processing-time timers. */
int weir_harness_clock(weir_harness *h, int64_t now, weir_outputs *out);
/* Calls `close`, then frees the harness. */
int weir_harness_close(weir_harness *h, weir_outputs *out);

/* Value state `name` of `key` as committed: 1 and `*value` (valid until
 * the next call), or 0. */
int weir_harness_state(const weir_harness *h, const char *name, weir_bytes key, weir_bytes *value);
/* Map state `name` of `key` at `map_key` as committed: the same. */
int weir_harness_map_state(const weir_harness *h, const char *name, weir_bytes key, weir_bytes map_key, weir_bytes *value);
/* The number of timers registered (both domains). */
size_t weir_harness_timers(const weir_harness *h);

/* A record for a test: `key` NULL for none; `value` is copied into a
 * buffer kept until the process ends (it is a test). */
weir_record weir_test_record(const char *key, const char *value, int64_t timestamp);
/* Whether an output's value is the text `s`. */
int weir_output_is(const weir_record *r, const char *s);
void weir_outputs_free(weir_outputs *out);

#ifdef __cplusplus
}
#endif
#endif
