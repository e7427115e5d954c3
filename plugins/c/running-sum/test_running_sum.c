/* running-sum's logic natively, with the C SDK's test harness (no Wasm):
 *   cc -I sdk/c -o /tmp/t plugins/c/running-sum/test_running_sum.c \
 *      plugins/c/running-sum/running_sum.c sdk/c/weir_testing.c && /tmp/t
 * (tests/run runs it; the pipeline test in tests/tests/languages.rs checks
 * its component against the Rust plugin byte for byte.) */
#include "weir_testing.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    weir_harness *h = weir_harness_open("{\"field\":\"amount\",\"tag\":\"c\"}");
    assert(!weir_harness_error(h));
    weir_outputs out = {0};
    weir_record in[] = {
        weir_test_record("u1", "{\"amount\":5}", 1),
        weir_test_record("u2", "{\"amount\":-2}", 2),
        weir_test_record("u1", "{\"amount\":7,\"other\":\"x\"}", 3),
    };
    assert(weir_harness_process(h, in, 3, &out) == 0 && out.len == 3);
    assert(weir_output_is(&out.records[0], "{\"key\":\"u1\",\"sum\":5,\"version\":\"c\"}"));
    assert(weir_output_is(&out.records[2], "{\"key\":\"u1\",\"sum\":12,\"version\":\"c\"}"));
    assert(out.records[2].timestamp == 3 && out.records[2].has_key);

    /* A record without the field is rejected and its batch leaves no trace. */
    weir_record bad[] = {weir_test_record("u1", "{\"amount\":1}", 4), weir_test_record("u1", "{\"n\":1}", 5)};
    assert(weir_harness_process(h, bad, 2, &out) == -1 && weir_harness_rejected(h) == 1);
    assert(strstr(weir_harness_error(h), "has no field \"amount\""));
    weir_bytes sum;
    assert(weir_harness_state(h, "sum", weir_str("u1"), &sum) == 1 && sum.len == 8 && sum.ptr[0] == 12);
    weir_record unkeyed[] = {weir_test_record(NULL, "{\"amount\":1}", 6)};
    assert(weir_harness_process(h, unkeyed, 1, &out) == -1 && strstr(weir_harness_error(h), "has no key"));
    assert(weir_harness_close(h, &out) == 0 && out.len == 3);
    weir_outputs_free(&out);

    /* A misspelt config key is refused when the operator opens. */
    weir_harness *typo = weir_harness_open("{\"feild\":\"amount\"}");
    assert(weir_harness_error(typo) && strstr(weir_harness_error(typo), "unknown field `feild`"));
    weir_harness_close(typo, &out);
    puts("plugins/c/running-sum: tests passed");
    return 0;
}
