// window-count in C++: records per key in tumbling event-time windows.
//
// The same operator as the Rust plugin plugins/window-count, with the same
// config (`size-ms`), state layout (map state "counts": key -> window end
// as 8 little-endian bytes -> count as 8 little-endian bytes) and output
// bytes: once the watermark passes a window's end, an event-time timer
// emits {"key":"<key>","window_end":<ms>,"count":<n>} stamped with the
// window's last millisecond.
//
// C++ uses the C SDK (weir.h is extern "C") with libc++ for wasm32-wasi
// (Debian's libc++-14-dev-wasm32 and libc++abi-14-dev-wasm32); there are no
// exceptions on wasm32-wasi, so errors are returned, as in C.
//
// Build: sh sdk/c/build.sh plugins/cpp/window-count/window_count.cpp -o window_count.wasm
#include "weir.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace {

constexpr const char *kCounts = "counts";

struct WindowCount {
    int64_t size_ms;
};

std::string_view view(weir_bytes b) { return {reinterpret_cast<const char *>(b.ptr), b.len}; }

// An i64 as 8 little-endian bytes (the state encoding every SDK shares).
struct Le64 {
    uint8_t bytes[8];
    explicit Le64(uint64_t v) {
        for (int i = 0; i < 8; i++) bytes[i] = static_cast<uint8_t>(v >> (8 * i));
    }
    weir_bytes as_bytes() const { return {bytes, sizeof bytes}; }
    static uint64_t read(weir_bytes b) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(b.ptr[i]) << (8 * i);
        return v;
    }
};

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int open_op(const weir_info *, weir_bytes config, void **self) {
    size_t at = 0;
    weir_bytes name, value;
    int64_t size = 0;
    bool seen = false;
    int more;
    while ((more = weir_json_next(config, &at, &name, &value)) == 1) {
        if (view(name) != "size-ms")
            return weir_reject(nullptr, "unknown config key '%.*s': window-count takes `size-ms`", static_cast<int>(name.len), name.ptr);
        if (weir_json_i64(value, &size) < 0 || size <= 0) return weir_reject(nullptr, "`size-ms` must be a positive number of milliseconds");
        seen = true;
    }
    if (more < 0) return weir_reject(nullptr, "the config is not a JSON object");
    if (!seen) return weir_reject(nullptr, "`size-ms` must be a positive number of milliseconds");
    *self = new WindowCount{size};
    return 0;
}

int process(void *self, const weir_record *r, weir_out *, weir_ctx *ctx) {
    auto &op = *static_cast<WindowCount *>(self);
    if (!r->has_key) return weir_reject(ctx, "window-count needs keyed records: set `key` upstream and partition = \"hash\"");
    int64_t end = floor_div(r->timestamp, op.size_ms) * op.size_ms + op.size_ms;
    if (end - 1 <= weir_watermark(ctx)) return 0; // late: its window was already emitted
    Le64 window(static_cast<uint64_t>(end));
    weir_buf stored = {};
    int found = weir_map_get(ctx, kCounts, r->key, window.as_bytes(), &stored);
    if (found < 0) return -1;
    uint64_t count = found == 1 && stored.len == 8 ? Le64::read({stored.ptr, stored.len}) : 0;
    weir_buf_free(&stored);
    weir_map_put(ctx, kCounts, r->key, window.as_bytes(), Le64(count + 1).as_bytes());
    if (count == 0) weir_timer_register(ctx, WEIR_EVENT_TIME, r->key, end - 1);
    return 0;
}

int on_timer(void *, const weir_timer *t, weir_out *out, weir_ctx *ctx) {
    int64_t end = t->timestamp + 1;
    Le64 window(static_cast<uint64_t>(end));
    weir_buf stored = {};
    int found = weir_map_get(ctx, kCounts, t->key, window.as_bytes(), &stored);
    if (found <= 0) return found;
    uint64_t count = Le64::read({stored.ptr, stored.len});
    weir_buf_free(&stored);
    weir_map_remove(ctx, kCounts, t->key, window.as_bytes());
    std::string value = "{\"key\":";
    weir_buf key = {};
    weir_buf_json_str(&key, t->key);
    value.append(reinterpret_cast<const char *>(key.ptr), key.len);
    weir_buf_free(&key);
    value += ",\"window_end\":" + std::to_string(end) + ",\"count\":" + std::to_string(count) + "}";
    weir_emit(out, &t->key, {reinterpret_cast<const uint8_t *>(value.data()), value.size()}, t->timestamp);
    return 0;
}

} // namespace

extern "C" const weir_operator weir_plugin = {open_op, process, on_timer, nullptr, nullptr};
