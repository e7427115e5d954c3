// window-count's logic natively (C++, the C SDK's test harness; no Wasm):
// tests/run builds it with clang++ against sdk/c/weir_testing.c.
#include "weir_testing.h"

#include <cassert>
#include <cstdio>
#include <cstring>

int main() {
    weir_harness *h = weir_harness_open("{\"size-ms\":10}");
    assert(!weir_harness_error(h));
    weir_record in[] = {weir_test_record("a", "{}", 1), weir_test_record("a", "{}", 9), weir_test_record("b", "{}", 12),
                        weir_test_record("a", "{}", -3)};
    weir_outputs out = {};
    assert(weir_harness_process(h, in, 4, &out) == 0 && out.len == 0);
    assert(weir_harness_timers(h) == 3); // windows (0,10] and (-10,0] of a, (10,20] of b

    // The watermark passes a's first window: one output, stamped with its last millisecond.
    assert(weir_harness_watermark(h, 9, &out) == 0 && out.len == 2);
    assert(weir_output_is(&out.records[0], "{\"key\":\"a\",\"window_end\":0,\"count\":1}"));
    assert(weir_output_is(&out.records[1], "{\"key\":\"a\",\"window_end\":10,\"count\":2}") && out.records[1].timestamp == 9);

    // A record for an emitted window is late and ignored.
    weir_record late[] = {weir_test_record("a", "{}", 4)};
    assert(weir_harness_process(h, late, 1, &out) == 0 && weir_harness_timers(h) == 1);
    assert(weir_harness_watermark(h, 100, &out) == 0 && out.len == 3);
    assert(weir_output_is(&out.records[2], "{\"key\":\"b\",\"window_end\":20,\"count\":1}"));

    weir_record unkeyed[] = {weir_test_record(nullptr, "{}", 200)};
    assert(weir_harness_process(h, unkeyed, 1, &out) == -1 && std::strstr(weir_harness_error(h), "keyed records"));
    weir_harness_close(h, &out);
    weir_outputs_free(&out);

    weir_harness *bad = weir_harness_open("{\"size\":10}");
    assert(weir_harness_error(bad) && std::strstr(weir_harness_error(bad), "unknown config key 'size'"));
    weir_harness_close(bad, &out);
    std::puts("plugins/cpp/window-count: tests passed");
    return 0;
}
