/* weir_testing.c: the native test harness of the C SDK (weir_testing.h).
 * It implements weir.h's host side in memory, so an operator's source
 * compiles unchanged with a plain `cc` and runs under a test's `main`.
 * Linked instead of weir.c; never part of a component. */
#include "weir_testing.h"
#include "weir_core.c"

/* ---- the store: value state, map state and timers, as sorted-free lists ---- */

enum { VALUE, MAP, TIMER };

/* One entry: value state (name, key) -> value; map state (name, key,
 * map key) -> value; a timer (domain in `sub`, key, timestamp). */
typedef struct {
    int kind;
    char *name;
    weir_buf key;
    weir_buf sub; /* the map key */
    int64_t ts;
    int domain;
    int present; /* 0: a staged delete */
    weir_buf value;
} entry;

typedef struct {
    entry *items;
    size_t len, cap;
} entries;

struct weir_out {
    weir_buf frames;
};

struct weir_harness {
    void *self;
    int opened;
    char *error;
    size_t rejected;
    entries committed;
    entries staged; /* the current call's writes, applied when it succeeds */
    int64_t watermark;
    int64_t clock;
    char **inputs; /* the input names */
    uint32_t n_inputs;
    uint32_t input; /* the batch's, during `process`; 0 otherwise, as in the host */
};

/* The host context an operator sees is the harness itself. */
struct weir_ctx {
    weir_harness h;
};

static weir_harness *current;

static int same(weir_bytes a, const weir_buf *b) { return a.len == b->len && (a.len == 0 || memcmp(a.ptr, b->ptr, a.len) == 0); }

static int matches(const entry *e, int kind, const char *name, weir_bytes key, weir_bytes sub, int domain, int64_t ts) {
    if (e->kind != kind || !same(key, &e->key)) return 0;
    if (kind == TIMER) return e->domain == domain && e->ts == ts;
    return strcmp(e->name, name) == 0 && (kind == VALUE || same(sub, &e->sub));
}

static entry *find(entries *es, int kind, const char *name, weir_bytes key, weir_bytes sub, int domain, int64_t ts) {
    for (size_t i = 0; i < es->len; i++)
        if (matches(&es->items[i], kind, name, key, sub, domain, ts)) return &es->items[i];
    return NULL;
}

static void entry_free(entry *e) {
    free(e->name);
    weir_buf_free(&e->key);
    weir_buf_free(&e->sub);
    weir_buf_free(&e->value);
}

static void entries_clear(entries *es) {
    for (size_t i = 0; i < es->len; i++) entry_free(&es->items[i]);
    es->len = 0;
}

/* Sets (or stages) an entry, replacing an equal one. */
static void set(entries *es, int kind, const char *name, weir_bytes key, weir_bytes sub, int domain, int64_t ts, int present, weir_bytes value) {
    entry *e = find(es, kind, name, key, sub, domain, ts);
    if (!e) {
        if (es->len == es->cap) {
            es->cap = es->cap ? es->cap * 2 : 16;
            es->items = (entry *)realloc(es->items, es->cap * sizeof *es->items);
            if (!es->items) weir_oom();
        }
        e = &es->items[es->len++];
        memset(e, 0, sizeof *e);
        e->kind = kind;
        e->name = strdup(name ? name : "");
        weir_buf_bytes(&e->key, key);
        weir_buf_bytes(&e->sub, sub);
        e->domain = domain;
        e->ts = ts;
    }
    e->present = present;
    e->value.len = 0;
    weir_buf_bytes(&e->value, value);
}

static void remove_at(entries *es, size_t i) {
    entry_free(&es->items[i]);
    es->items[i] = es->items[--es->len];
}

/* The staged writes become the committed state. */
static void commit(weir_harness *h) {
    for (size_t i = 0; i < h->staged.len; i++) {
        entry *s = &h->staged.items[i];
        weir_bytes key = {s->key.ptr, s->key.len}, sub = {s->sub.ptr, s->sub.len};
        if (s->kind == MAP && s->present == 2) { /* map clear */
            for (size_t j = h->committed.len; j-- > 0;) {
                entry *c = &h->committed.items[j];
                if (c->kind == MAP && strcmp(c->name, s->name) == 0 && same(key, &c->key)) remove_at(&h->committed, j);
            }
            continue;
        }
        entry *c = find(&h->committed, s->kind, s->name, key, sub, s->domain, s->ts);
        if (s->present) set(&h->committed, s->kind, s->name, key, sub, s->domain, s->ts, 1, (weir_bytes){s->value.ptr, s->value.len});
        else if (c) remove_at(&h->committed, (size_t)(c - h->committed.items));
    }
    entries_clear(&h->staged);
}

/* An entry as the running call sees it: its own staged write first. */
static const entry *lookup(weir_harness *h, int kind, const char *name, weir_bytes key, weir_bytes sub) {
    entry *s = find(&h->staged, kind, name, key, sub, 0, 0);
    if (s) return s->present ? s : NULL;
    if (kind == MAP) /* a staged clear of the whole map hides committed entries */
        for (size_t i = 0; i < h->staged.len; i++) {
            entry *c = &h->staged.items[i];
            if (c->kind == MAP && c->present == 2 && strcmp(c->name, name) == 0 && same(key, &c->key)) return NULL;
        }
    return find(&h->committed, kind, name, key, sub, 0, 0);
}

/* ---- weir.h's host side ---- */

static const weir_bytes none = {NULL, 0};

static int vreject(weir_harness *h, const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    free(h->error);
    h->error = (char *)malloc((size_t)n + 1);
    if (!h->error) weir_oom();
    vsnprintf(h->error, (size_t)n + 1, fmt, ap);
    return -1;
}

int weir_reject(weir_ctx *ctx, const char *fmt, ...) {
    (void)ctx;
    va_list ap;
    va_start(ap, fmt);
    vreject(current, fmt, ap);
    va_end(ap);
    return -1;
}

void weir_log(weir_level level, const char *fmt, ...) {
    static const char *names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s ", names[level <= WEIR_ERROR ? level : WEIR_ERROR]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void weir_emit(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t ts) { weir_write_frame(&out->frames, key, value, ts, none); }

void weir_emit_with_headers(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t ts, weir_bytes headers) {
    weir_write_frame(&out->frames, key, value, ts, headers);
}

void weir_forward(weir_out *out, const weir_record *r) { weir_buf_bytes(&out->frames, r->frame); }

int weir_get(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes *value) {
    (void)ctx;
    const entry *e = lookup(current, VALUE, name, key, none);
    if (!e) return 0;
    value->ptr = e->value.ptr;
    value->len = e->value.len;
    return 1;
}

void weir_put(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes value) {
    (void)ctx;
    set(&current->staged, VALUE, name, key, none, 0, 0, 1, value);
}

void weir_delete(weir_ctx *ctx, const char *name, weir_bytes key) {
    (void)ctx;
    set(&current->staged, VALUE, name, key, none, 0, 0, 0, none);
}

int weir_map_get(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key, weir_buf *value) {
    (void)ctx;
    const entry *e = lookup(current, MAP, name, key, map_key);
    if (!e) return 0;
    value->len = 0;
    weir_buf_bytes(value, (weir_bytes){e->value.ptr, e->value.len});
    return 1;
}

void weir_map_put(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key, weir_bytes value) {
    (void)ctx;
    set(&current->staged, MAP, name, key, map_key, 0, 0, 1, value);
}

void weir_map_remove(weir_ctx *ctx, const char *name, weir_bytes key, weir_bytes map_key) {
    (void)ctx;
    set(&current->staged, MAP, name, key, map_key, 0, 0, 0, none);
}

void weir_map_clear(weir_ctx *ctx, const char *name, weir_bytes key) {
    (void)ctx;
    /* Staged entries of this map are dropped; a marker clears the committed ones. */
    for (size_t i = current->staged.len; i-- > 0;) {
        entry *e = &current->staged.items[i];
        if (e->kind == MAP && strcmp(e->name, name) == 0 && same(key, &e->key)) remove_at(&current->staged, i);
    }
    set(&current->staged, MAP, name, key, weir_str("\xff" "clear"), 0, 0, 2, none);
}

void weir_timer_register(weir_ctx *ctx, weir_time_domain domain, weir_bytes key, int64_t ts) {
    (void)ctx;
    set(&current->staged, TIMER, NULL, key, none, (int)domain, ts, 1, none);
}

void weir_timer_delete(weir_ctx *ctx, weir_time_domain domain, weir_bytes key, int64_t ts) {
    (void)ctx;
    set(&current->staged, TIMER, NULL, key, none, (int)domain, ts, 0, none);
}

int64_t weir_watermark(weir_ctx *ctx) {
    (void)ctx;
    return current->watermark;
}

int64_t weir_processing_time(weir_ctx *ctx) {
    (void)ctx;
    return current->clock;
}

uint32_t weir_input(weir_ctx *ctx) {
    (void)ctx;
    return current->input;
}

uint32_t weir_input_count(weir_ctx *ctx) {
    (void)ctx;
    return current->n_inputs;
}

weir_bytes weir_input_name(weir_ctx *ctx, uint32_t i) {
    (void)ctx;
    return i < current->n_inputs ? weir_str(current->inputs[i]) : none;
}

/* ---- the harness ---- */

static weir_ctx *ctx_of(weir_harness *h) { return (weir_ctx *)(void *)h; }

weir_harness *weir_harness_open_inputs(const char *config_json, uint32_t subtask, uint32_t parallelism, const char *const *inputs) {
    static const char *const one[] = {"input", NULL};
    weir_harness *h = (weir_harness *)calloc(1, sizeof(weir_ctx));
    if (!h) weir_oom();
    h->watermark = INT64_MIN;
    /* The names first: `open` may read them. */
    if (!inputs || !inputs[0]) inputs = one;
    while (inputs[h->n_inputs]) h->n_inputs++;
    h->inputs = (char **)calloc(h->n_inputs, sizeof *h->inputs);
    if (!h->inputs) weir_oom();
    for (uint32_t i = 0; i < h->n_inputs; i++)
        if (!(h->inputs[i] = strdup(inputs[i]))) weir_oom();
    current = h;
    weir_info info = {weir_str("test"), weir_str("operator"), subtask, parallelism};
    if (weir_plugin.open && weir_plugin.open(&info, weir_str(config_json), &h->self) < 0) {
        if (!h->error) h->error = strdup("rejected");
        return h;
    }
    h->opened = 1;
    return h;
}

weir_harness *weir_harness_open_subtask(const char *config_json, uint32_t subtask, uint32_t parallelism) {
    return weir_harness_open_inputs(config_json, subtask, parallelism, NULL);
}

weir_harness *weir_harness_open(const char *config_json) { return weir_harness_open_subtask(config_json, 0, 1); }

const char *weir_harness_error(const weir_harness *h) { return h->error; }

size_t weir_harness_rejected(const weir_harness *h) { return h->rejected; }

/* Ends a call: commits and keeps its outputs when it succeeded, drops both when not. */
static int finish(weir_harness *h, int rc, size_t index, weir_out *o, weir_outputs *out) {
    if (rc < 0) {
        if (!h->error) h->error = strdup("rejected");
        h->rejected = index;
        entries_clear(&h->staged);
        weir_buf_free(&o->frames);
        return -1;
    }
    commit(h);
    /* Append, then re-point every view (the buffer may have moved). */
    weir_buf_put(&out->frames, o->frames.ptr, o->frames.len);
    weir_buf_free(&o->frames);
    size_t n = 0, at = 0;
    weir_record r;
    weir_bytes all = {out->frames.ptr, out->frames.len};
    while (weir_read_frame(all, &at, &r) == 1) n++;
    out->records = (weir_record *)realloc(out->records, (n ? n : 1) * sizeof *out->records);
    if (!out->records) weir_oom();
    at = 0;
    for (size_t i = 0; i < n; i++) weir_read_frame(all, &at, &out->records[i]);
    out->len = n;
    return 0;
}

static int begin(weir_harness *h) {
    current = h;
    if (!h->opened) return -1;
    free(h->error);
    h->error = NULL;
    return 0;
}

int weir_harness_process_input(weir_harness *h, uint32_t input, const weir_record *records, size_t n, weir_outputs *out) {
    if (begin(h) < 0) return -1;
    if (input >= h->n_inputs) {
        char msg[96];
        snprintf(msg, sizeof msg, "input %u is not one of the harness's %u inputs", (unsigned)input, (unsigned)h->n_inputs);
        h->error = strdup(msg);
        h->rejected = 0;
        return -1;
    }
    weir_out o = {{0}};
    int rc = 0;
    size_t i = 0;
    h->input = input;
    for (; i < n && rc == 0; i++) rc = weir_plugin.process(h->self, &records[i], &o, ctx_of(h));
    h->input = 0; /* outside `process` (timers, close) the host says 0 */
    return finish(h, rc, i ? i - 1 : 0, &o, out);
}

int weir_harness_process(weir_harness *h, const weir_record *records, size_t n, weir_outputs *out) {
    return weir_harness_process_input(h, 0, records, n, out);
}

static int cmp_timer(const void *a, const void *b) {
    const entry *x = (const entry *)a, *y = (const entry *)b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n ? memcmp(x->key.ptr, y->key.ptr, n) : 0;
    return c ? c : (x->key.len > y->key.len) - (x->key.len < y->key.len);
}

/* Fires the due timers of `domain`, round after round, in timestamp order. */
static int fire(weir_harness *h, int domain, int64_t now, weir_outputs *out) {
    for (int round = 0; round < 1000; round++) {
        entries due = {0};
        for (size_t i = h->committed.len; i-- > 0;) {
            entry *e = &h->committed.items[i];
            if (e->kind != TIMER || e->domain != domain || e->ts > now) continue;
            weir_bytes key = {e->key.ptr, e->key.len};
            set(&due, TIMER, NULL, key, none, domain, e->ts, 1, none);
            remove_at(&h->committed, i);
        }
        if (!due.len) return 0;
        qsort(due.items, due.len, sizeof *due.items, cmp_timer);
        weir_out o = {{0}};
        int rc = 0;
        size_t i = 0;
        for (; i < due.len && rc == 0; i++) {
            weir_timer t = {(weir_time_domain)domain, {due.items[i].key.ptr, due.items[i].key.len}, due.items[i].ts};
            if (weir_plugin.on_timer) rc = weir_plugin.on_timer(h->self, &t, &o, ctx_of(h));
        }
        entries_clear(&due);
        free(due.items);
        if (finish(h, rc, i ? i - 1 : 0, &o, out) < 0) return -1;
    }
    free(h->error);
    h->error = strdup("timers kept registering due timers for 1000 rounds");
    return -1;
}

int weir_harness_watermark(weir_harness *h, int64_t watermark, weir_outputs *out) {
    if (begin(h) < 0) return -1;
    h->watermark = watermark;
    return fire(h, WEIR_EVENT_TIME, watermark, out);
}

int weir_harness_clock(weir_harness *h, int64_t now, weir_outputs *out) {
    if (begin(h) < 0) return -1;
    h->clock = now;
    return fire(h, WEIR_PROCESSING_TIME, now, out);
}

int weir_harness_close(weir_harness *h, weir_outputs *out) {
    int rc = begin(h);
    if (rc == 0) {
        weir_out o = {{0}};
        rc = finish(h, weir_plugin.close ? weir_plugin.close(h->self, &o, ctx_of(h)) : 0, 0, &o, out);
    }
    entries_clear(&h->committed);
    free(h->committed.items);
    for (uint32_t i = 0; i < h->n_inputs; i++) free(h->inputs[i]);
    free(h->inputs);
    free(h->staged.items);
    free(h->error);
    free(h);
    current = NULL;
    return rc;
}

static int committed(const weir_harness *h, int kind, const char *name, weir_bytes key, weir_bytes sub, weir_bytes *value) {
    entry *e = find((entries *)&h->committed, kind, name, key, sub, 0, 0);
    if (!e) return 0;
    value->ptr = e->value.ptr;
    value->len = e->value.len;
    return 1;
}

int weir_harness_state(const weir_harness *h, const char *name, weir_bytes key, weir_bytes *value) {
    return committed(h, VALUE, name, key, none, value);
}

int weir_harness_map_state(const weir_harness *h, const char *name, weir_bytes key, weir_bytes map_key, weir_bytes *value) {
    return committed(h, MAP, name, key, map_key, value);
}

size_t weir_harness_timers(const weir_harness *h) {
    size_t n = 0;
    for (size_t i = 0; i < h->committed.len; i++) n += h->committed.items[i].kind == TIMER;
    return n;
}

weir_record weir_test_record(const char *key, const char *value, int64_t timestamp) {
    weir_buf *b = (weir_buf *)calloc(1, sizeof *b); /* kept: a test's records live as long as it */
    if (!b) weir_oom();
    weir_bytes k = key ? weir_str(key) : none;
    weir_write_frame(b, key ? &k : NULL, weir_str(value), timestamp, none);
    weir_record r;
    size_t at = 0;
    weir_read_frame((weir_bytes){b->ptr, b->len}, &at, &r);
    return r;
}

int weir_output_is(const weir_record *r, const char *s) { return same(weir_str(s), &(weir_buf){(uint8_t *)r->value.ptr, r->value.len, 0}); }

void weir_outputs_free(weir_outputs *out) {
    weir_buf_free(&out->frames);
    free(out->records);
    memset(out, 0, sizeof *out);
}
