/* weir.c: the glue between the component's exports (the `operator` world's
 * `weir:plugin/handler`, bindings by `wit-bindgen c`) and a weir_operator,
 * with the batch loop, the state batching and the encodings. Compiled into
 * every C operator by build.sh; nothing here is the operator author's. */
#include "operator.h"
#include "weir_core.c"

/* ---- outputs ---- */

struct weir_out {
    weir_buf frames;
};

void weir_emit(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t ts) {
    weir_write_frame(&out->frames, key, value, ts, (weir_bytes){NULL, 0});
}

void weir_emit_with_headers(weir_out *out, const weir_bytes *key, weir_bytes value, int64_t ts, weir_bytes headers) {
    weir_write_frame(&out->frames, key, value, ts, headers);
}

void weir_forward(weir_out *out, const weir_record *r) { weir_buf_bytes(&out->frames, r->frame); }

/* ---- the host through the generated bindings ---- */

static operator_string_t host_str(const char *s) {
    operator_string_t t = {(uint8_t *)s, strlen(s)};
    return t;
}

static operator_list_u8_t host_list(weir_bytes b) {
    operator_list_u8_t l = {(uint8_t *)b.ptr, b.len};
    return l;
}

/* The reason of the current rejection (malloc'ed, NUL-terminated). */
static char *weir_reason;

static void set_reason(char *msg) {
    free(weir_reason);
    weir_reason = msg;
}

static int vreject(const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    char *msg = malloc((size_t)n + 1);
    if (!msg) weir_oom();
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    set_reason(msg);
    return -1;
}

int weir_reject(weir_ctx *ctx, const char *fmt, ...) {
    (void)ctx;
    va_list ap;
    va_start(ap, fmt);
    vreject(fmt, ap);
    va_end(ap);
    return -1;
}

static int state_error(weir_plugin_state_state_error_t *e) {
    switch (e->tag) {
    case WEIR_PLUGIN_STATE_STATE_ERROR_KEY_NOT_OWNED:
        return weir_reject(NULL, "state key is owned by another subtask: partition this operator's input by key (partition = \"hash\")");
    case WEIR_PLUGIN_STATE_STATE_ERROR_TOO_LARGE:
        return weir_reject(NULL, "state key or value larger than the host's limit of %llu bytes", (unsigned long long)e->val.too_large);
    default: {
        int r = weir_reject(NULL, "invalid state request: %.*s", (int)e->val.invalid.len, (const char *)e->val.invalid.ptr);
        operator_string_free(&e->val.invalid);
        return r;
    }
    }
}

void weir_log(weir_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    operator_string_t msg = host_str(line);
    weir_plugin_log_log((weir_plugin_log_level_t)level, &msg);
}

/* ---- state ---- */

/* A value-state entry of this batch: read from the host, or written. */
typedef struct {
    int has;
    weir_buf value;
    int dirty;
} slot;

/* A value state not in `prefetch`, read or written this batch. */
typedef struct {
    char *name;
    weir_buf key;
    slot s;
} pending;

struct weir_ctx {
    size_t n_prefetch;
    /* per prefetched name: one slot per distinct key of the batch */
    slot **slots;
    size_t n_slots;
    /* per record: its key's slot, or SIZE_MAX without a key */
    size_t *slot_of;
    size_t current;
    pending *pend;
    size_t n_pend, cap_pend;
    weir_buf map_ops;
    /* The batch's input (`weir_input`), once asked of the host; cleared
     * with the rest by ctx_reset when the call ends. */
    int has_input;
    uint32_t input;
};

static weir_ctx the_ctx;

static void slot_set(slot *s, int has, weir_bytes v) {
    s->has = has;
    s->value.len = 0;
    if (has) weir_buf_bytes(&s->value, v);
}

static void ctx_reset(weir_ctx *c) {
    for (size_t p = 0; p < c->n_prefetch && c->slots; p++) {
        for (size_t i = 0; c->slots[p] && i < c->n_slots; i++) weir_buf_free(&c->slots[p][i].value);
        free(c->slots[p]);
    }
    free(c->slots);
    free(c->slot_of);
    for (size_t i = 0; i < c->n_pend; i++) {
        free(c->pend[i].name);
        weir_buf_free(&c->pend[i].key);
        weir_buf_free(&c->pend[i].s.value);
    }
    free(c->pend);
    weir_buf_free(&c->map_ops);
    memset(c, 0, sizeof *c);
}

/* The prefetch index of `name` and the current record's slot, when `key` is its key. */
static slot *prefetched(weir_ctx *c, const char *name, weir_bytes key, const weir_record *current) {
    if (!current || !current->has_key || current->key.len != key.len || memcmp(current->key.ptr, key.ptr, key.len) != 0) return NULL;
    size_t s = c->slot_of ? c->slot_of[c->current] : SIZE_MAX;
    if (s == SIZE_MAX) return NULL;
    for (size_t p = 0; p < c->n_prefetch; p++)
        if (strcmp(weir_plugin.prefetch[p], name) == 0) return &c->slots[p][s];
    return NULL;
}

static const weir_record *current_record;

static slot *pending_slot(weir_ctx *c, const char *name, weir_bytes key, int *fresh) {
    for (size_t i = 0; i < c->n_pend; i++)
        if (strcmp(c->pend[i].name, name) == 0 && c->pend[i].key.len == key.len && memcmp(c->pend[i].key.ptr, key.ptr, key.len) == 0) {
            *fresh = 0;
            return &c->pend[i].s;
        }
    if (c->n_pend == c->cap_pend) {
        c->cap_pend = c->cap_pend ? c->cap_pend * 2 : 8;
        c->pend = realloc(c->pend, c->cap_pend * sizeof *c->pend);
        if (!c->pend) weir_oom();
    }
    pending *p = &c->pend[c->n_pend++];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    weir_buf_bytes(&p->key, key);
    *fresh = 1;
    return &p->s;
}

int weir_get(weir_ctx *c, const char *name, weir_bytes key, weir_bytes *value) {
    slot *s = prefetched(c, name, key, current_record);
    if (!s) {
        int fresh;
        s = pending_slot(c, name, key, &fresh);
        if (fresh) {
            operator_string_t n = host_str(name);
            operator_list_u8_t k = host_list(key);
            operator_option_list_u8_t ret;
            weir_plugin_state_state_error_t err;
            if (!weir_plugin_state_get(&n, &k, &ret, &err)) {
                c->n_pend--; /* not cached */
                free(c->pend[c->n_pend].name);
                weir_buf_free(&c->pend[c->n_pend].key);
                return state_error(&err);
            }
            slot_set(s, ret.is_some, ret.is_some ? (weir_bytes){ret.val.ptr, ret.val.len} : (weir_bytes){NULL, 0});
            if (ret.is_some) operator_list_u8_free(&ret.val);
        }
    }
    if (!s->has) return 0;
    value->ptr = s->value.ptr;
    value->len = s->value.len;
    return 1;
}

static void put_slot(weir_ctx *c, const char *name, weir_bytes key, int has, weir_bytes value) {
    slot *s = prefetched(c, name, key, current_record);
    if (!s) {
        int fresh;
        s = pending_slot(c, name, key, &fresh);
    }
    slot_set(s, has, value);
    s->dirty = 1;
}

void weir_put(weir_ctx *c, const char *name, weir_bytes key, weir_bytes value) { put_slot(c, name, key, 1, value); }

void weir_delete(weir_ctx *c, const char *name, weir_bytes key) { put_slot(c, name, key, 0, (weir_bytes){NULL, 0}); }

static void map_op(weir_ctx *c, uint8_t op, const char *name, weir_bytes key, const weir_bytes *map_key, const weir_bytes *value) {
    weir_buf_put(&c->map_ops, &op, 1);
    weir_put_lp(&c->map_ops, weir_str(name));
    weir_put_lp(&c->map_ops, key);
    if (map_key) weir_put_lp(&c->map_ops, *map_key);
    if (value) weir_put_lp(&c->map_ops, *value);
}

void weir_map_put(weir_ctx *c, const char *name, weir_bytes key, weir_bytes map_key, weir_bytes value) { map_op(c, 2, name, key, &map_key, &value); }

void weir_map_remove(weir_ctx *c, const char *name, weir_bytes key, weir_bytes map_key) { map_op(c, 3, name, key, &map_key, NULL); }

void weir_map_clear(weir_ctx *c, const char *name, weir_bytes key) { map_op(c, 4, name, key, NULL, NULL); }

static int apply(weir_buf *ops) {
    if (!ops->len) return 0;
    operator_list_u8_t l = host_list((weir_bytes){ops->ptr, ops->len});
    weir_plugin_state_state_error_t err;
    ops->len = 0;
    if (!weir_plugin_state_apply(&l, &err)) return state_error(&err);
    return 0;
}

int weir_map_get(weir_ctx *c, const char *name, weir_bytes key, weir_bytes map_key, weir_buf *value) {
    if (apply(&c->map_ops) < 0) return -1;
    operator_string_t n = host_str(name);
    operator_list_u8_t k = host_list(key), m = host_list(map_key);
    operator_option_list_u8_t ret;
    weir_plugin_state_state_error_t err;
    if (!weir_plugin_state_map_get(&n, &k, &m, &ret, &err)) return state_error(&err);
    if (!ret.is_some) return 0;
    value->len = 0;
    weir_buf_bytes(value, (weir_bytes){ret.val.ptr, ret.val.len});
    operator_list_u8_free(&ret.val);
    return 1;
}

void weir_timer_register(weir_ctx *c, weir_time_domain domain, weir_bytes key, int64_t ts) {
    (void)c;
    operator_list_u8_t k = host_list(key);
    weir_plugin_timers_register((weir_plugin_timers_time_domain_t)domain, &k, ts);
}

void weir_timer_delete(weir_ctx *c, weir_time_domain domain, weir_bytes key, int64_t ts) {
    (void)c;
    operator_list_u8_t k = host_list(key);
    weir_plugin_timers_delete((weir_plugin_timers_time_domain_t)domain, &k, ts);
}

int64_t weir_watermark(weir_ctx *c) {
    (void)c;
    return weir_plugin_timers_current_watermark();
}

int64_t weir_processing_time(weir_ctx *c) {
    (void)c;
    return weir_plugin_timers_current_processing_time();
}

/* ---- inputs ---- */

uint32_t weir_input(weir_ctx *c) {
    if (!c) return weir_plugin_inputs_current(); /* in open: no batch to cache it for */
    if (!c->has_input) {
        c->input = weir_plugin_inputs_current();
        c->has_input = 1;
    }
    return c->input;
}

/* The input names: fixed for the instance's life (the pipeline file's
 * `inputs`), so asked of the host once and kept. */
static operator_list_string_t input_names;
static int have_input_names;

static const operator_list_string_t *inputs(void) {
    if (!have_input_names) {
        weir_plugin_inputs_names(&input_names);
        have_input_names = 1;
    }
    return &input_names;
}

uint32_t weir_input_count(weir_ctx *c) {
    (void)c;
    return (uint32_t)inputs()->len;
}

weir_bytes weir_input_name(weir_ctx *c, uint32_t i) {
    (void)c;
    const operator_list_string_t *names = inputs();
    if (i >= names->len) return (weir_bytes){NULL, 0};
    return (weir_bytes){names->ptr[i].ptr, names->ptr[i].len};
}

/* Fetches every prefetched state for the batch's keys: one get-many per name. */
static int prefetch(weir_ctx *c, const weir_record *records, size_t n) {
    size_t names = 0;
    while (weir_plugin.prefetch && weir_plugin.prefetch[names]) names++;
    if (!names) return 0;
    c->n_prefetch = names;
    c->slot_of = malloc((n ? n : 1) * sizeof *c->slot_of);
    weir_buf keys = {0};
    size_t nkeys = 0;
    size_t *key_of = malloc((n ? n : 1) * sizeof *key_of);
    for (size_t i = 0; i < n; i++) {
        if (!records[i].has_key) {
            key_of[i] = SIZE_MAX;
            continue;
        }
        weir_put_lp(&keys, records[i].key);
        key_of[i] = nkeys++;
    }
    /* The host marks a key equal to an earlier one: give each distinct key one slot. */
    size_t *slot_of_key = malloc((nkeys ? nkeys : 1) * sizeof *slot_of_key);
    c->slots = calloc(names, sizeof *c->slots);
    int rc = 0;
    for (size_t p = 0; p < names && rc == 0; p++) {
        operator_string_t nm = host_str(weir_plugin.prefetch[p]);
        operator_list_u8_t k = host_list((weir_bytes){keys.ptr, keys.len}), ret;
        weir_plugin_state_state_error_t err;
        if (!weir_plugin_state_get_many(&nm, &k, &ret, &err)) {
            rc = state_error(&err);
            break;
        }
        c->slots[p] = calloc(nkeys ? nkeys : 1, sizeof(slot));
        size_t at = 0, distinct = 0;
        for (size_t i = 0; i < nkeys; i++) {
            if (ret.len - at < 4) { rc = weir_reject(NULL, "malformed get-many answer"); break; }
            uint32_t len = weir_u32(ret.ptr + at);
            at += 4;
            if (len == 0xfffffffeu) {
                uint32_t first = weir_u32(ret.ptr + at);
                at += 4;
                slot_of_key[i] = slot_of_key[first];
            } else {
                slot_of_key[i] = distinct;
                if (len != 0xffffffffu) {
                    slot_set(&c->slots[p][distinct], 1, (weir_bytes){ret.ptr + at, len});
                    at += len;
                }
                distinct++;
            }
        }
        c->n_slots = distinct;
        operator_list_u8_free(&ret);
    }
    for (size_t i = 0; i < n; i++) c->slot_of[i] = key_of[i] == SIZE_MAX ? SIZE_MAX : slot_of_key[key_of[i]];
    /* Remember each slot's key for the writes at the end of the batch. */
    free(key_of);
    free(slot_of_key);
    weir_buf_free(&keys);
    return rc;
}

/* Sends the batch's writes in one apply call. */
static int flush(weir_ctx *c, const weir_record *records, size_t n) {
    weir_buf ops = c->map_ops;
    c->map_ops = (weir_buf){0};
    uint8_t *seen = calloc(c->n_slots ? c->n_slots : 1, 1);
    for (size_t p = 0; p < c->n_prefetch; p++) {
        memset(seen, 0, c->n_slots ? c->n_slots : 1);
        for (size_t i = 0; i < n; i++) {
            size_t s = c->slot_of[i];
            if (s == SIZE_MAX || seen[s] || !c->slots[p][s].dirty) continue;
            seen[s] = 1;
            slot *sl = &c->slots[p][s];
            uint8_t op = sl->has ? 0 : 1;
            weir_buf_put(&ops, &op, 1);
            weir_put_lp(&ops, weir_str(weir_plugin.prefetch[p]));
            weir_put_lp(&ops, records[i].key);
            if (sl->has) weir_put_lp(&ops, (weir_bytes){sl->value.ptr, sl->value.len});
        }
    }
    free(seen);
    for (size_t i = 0; i < c->n_pend; i++) {
        pending *pe = &c->pend[i];
        if (!pe->s.dirty) continue;
        uint8_t op = pe->s.has ? 0 : 1;
        weir_buf_put(&ops, &op, 1);
        weir_put_lp(&ops, weir_str(pe->name));
        weir_put_lp(&ops, (weir_bytes){pe->key.ptr, pe->key.len});
        if (pe->s.has) weir_put_lp(&ops, (weir_bytes){pe->s.value.ptr, pe->s.value.len});
    }
    int rc = apply(&ops);
    weir_buf_free(&ops);
    return rc;
}

/* ---- the exports ---- */

static void *self;

static void take_reason(operator_string_t *msg) {
    const char *r = weir_reason ? weir_reason : "rejected";
    size_t len = strlen(r);
    msg->ptr = malloc(len ? len : 1);
    if (!msg->ptr) weir_oom();
    memcpy(msg->ptr, r, len);
    msg->len = len;
    set_reason(NULL);
}

bool exports_weir_plugin_handler_open(exports_weir_plugin_handler_operator_info_t *info, operator_string_t *err) {
    int rc = 0;
    if (weir_plugin.open) {
        weir_info wi = {{info->pipeline.ptr, info->pipeline.len}, {info->operator_.ptr, info->operator_.len}, info->subtask, info->parallelism};
        rc = weir_plugin.open(&wi, (weir_bytes){info->config.ptr, info->config.len}, &self);
    }
    exports_weir_plugin_handler_operator_info_free(info);
    if (rc < 0) {
        take_reason(err);
        return false;
    }
    return true;
}

/* Runs the batch's records, then writes its state; fills `ret`. */
static void finish(weir_ctx *c, weir_out *out, int rc, size_t index, const weir_record *records, size_t n, exports_weir_plugin_handler_batch_output_t *ret) {
    if (rc == 0 && flush(c, records, n) < 0) {
        rc = -1;
        index = n;
    }
    if (rc < 0) {
        weir_buf_free(&out->frames);
        ret->records = (weir_plugin_types_batch_t){NULL, 0};
        ret->error.is_some = true;
        ret->error.val.index = (uint32_t)index;
        take_reason(&ret->error.val.message);
    } else {
        ret->records = (weir_plugin_types_batch_t){out->frames.ptr, out->frames.len};
        ret->error.is_some = false;
    }
    ctx_reset(c);
}

void exports_weir_plugin_handler_process(operator_list_u8_t *input, exports_weir_plugin_handler_batch_output_t *ret) {
    weir_bytes batch = {input->ptr, input->len};
    size_t n = 0, cap = 64, at = 0;
    weir_record *records = malloc(cap * sizeof *records);
    int r;
    while ((r = weir_read_frame(batch, &at, &records[n])) == 1)
        if (++n == cap) {
            records = realloc(records, (cap *= 2) * sizeof *records);
            if (!records) weir_oom();
        }
    weir_ctx *c = &the_ctx;
    weir_out out = {{0}};
    int rc = 0;
    size_t index = 0;
    if (r < 0) rc = weir_reject(NULL, "malformed batch");
    else if (prefetch(c, records, n) < 0) rc = -1, index = n;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        c->current = i;
        current_record = &records[i];
        rc = weir_plugin.process(self, &records[i], &out, c);
        index = i;
    }
    current_record = NULL;
    finish(c, &out, rc, index, records, n, ret);
    free(records);
    operator_list_u8_free(input);
}

void exports_weir_plugin_handler_on_timer(exports_weir_plugin_handler_list_timer_t *fired, exports_weir_plugin_handler_batch_output_t *ret) {
    weir_ctx *c = &the_ctx;
    weir_out out = {{0}};
    int rc = 0;
    size_t index = 0;
    for (size_t i = 0; rc == 0 && i < fired->len && weir_plugin.on_timer; i++) {
        weir_timer t = {(weir_time_domain)fired->ptr[i].domain, {fired->ptr[i].key.ptr, fired->ptr[i].key.len}, fired->ptr[i].timestamp};
        rc = weir_plugin.on_timer(self, &t, &out, c);
        index = i;
    }
    finish(c, &out, rc, index, NULL, 0, ret);
    exports_weir_plugin_handler_list_timer_free(fired);
}

bool exports_weir_plugin_handler_close(exports_weir_plugin_handler_batch_t *ret, operator_string_t *err) {
    weir_ctx *c = &the_ctx;
    weir_out out = {{0}};
    int rc = weir_plugin.close ? weir_plugin.close(self, &out, c) : 0;
    if (rc == 0) rc = flush(c, NULL, 0);
    ctx_reset(c);
    if (rc < 0) {
        weir_buf_free(&out.frames);
        take_reason(err);
        return false;
    }
    *ret = (exports_weir_plugin_handler_batch_t){out.frames.ptr, out.frames.len};
    return true;
}
