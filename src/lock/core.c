/* lock/core.c — lynk's lock protocol as a sans-IO state machine: acquires
 * (one poller per contended name, waiters in arrival order), take-over after
 * a full unchanged lease, refreshes before each lock's safety deadline,
 * notes, releases, and the read-backs that resolve ambiguous writes. It owns
 * the timer heap and every lock's, waiter's and poller's state; requests go
 * out through the configured transport (see core.h). */
#include "lock/core.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

#define TK_LOCK 1
#define TK_CONT 2
#define TK_WAITER 3
#define NO_IDX UINT32_MAX
#define NEVER INT64_MAX

#define OWN_NONE 0
#define OWN_LOCK 1
#define OWN_CONT 2

/* What a lock is writing (lk_lock.act). */
#define ACT_NONE 0
#define ACT_REFRESH 1
#define ACT_NOTE 2
#define ACT_DELETE 3

#define CMD_RELEASE 1
#define CMD_NOTE 2
#define CMD_TOUCH 3

/* What a poller does when its timer fires (lk_cont.next). */
#define NX_GET 0
#define NX_PUT_NEW 1
#define NX_PUT_TAKEOVER 2

#define container_of(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

typedef struct lk_cand {
    struct lk_cand *next;
    int64_t sent_ms;
    char version[LK_UUID_LEN + 1];
} lk_cand;

typedef struct lk_cmd {
    struct lk_cmd *next;
    int kind;
    lk_core_done_cb cb;
    void *arg;
    char *note;
} lk_cmd;

/* The poller of one contended name and its FIFO of waiters. */
typedef struct lk_cont {
    struct lk_cont *hnext;
    uint64_t hash;
    lk_timer t;
    lk_waiter *head, *tail;
    size_t nwait_hard;         /* WAIT-mode waiters queued */
    lk_op *inflight;
    int next;                  /* NX_* */
    int attempt;
    bool have_obs;
    bool woken;                /* a local release of this name happened */
    int64_t obs_lease_ms;
    int64_t first_seen_ms;
    int64_t interval_ms;
    lk_cand *cands;
    char *last_err;
    char *obs_host;
    char obs[LK_UUID_LEN + 1];
    char name[];
} lk_cont;

struct lk_core {
    lk_core_config cfg;
    lk_engine_options o;       /* with defaults; strings point to copies */
    char *table, *host;
    lk_timer **heap;
    size_t hn, hcap;
    lk_cont **buckets;
    size_t nbuckets, ncont;
    size_t inflight;
    size_t nheld, nwaiting, ncmds;
    uint64_t refreshes, refresh_late, lost;
    int64_t worst_slack;
    bool shutting;
};

/* ---- small helpers ----------------------------------------------------- */

const char *lk_state_name(lk_state s)
{
    switch (s) {
    case LK_STATE_ACQUIRING: return "acquiring";
    case LK_STATE_HELD: return "held";
    case LK_STATE_EXPIRING: return "expiring";
    case LK_STATE_LOST: return "lost";
    case LK_STATE_RELEASED: return "released";
    }
    return "unknown";
}

const char *lk_op_kind_name(lk_op_kind k)
{
    static const char *const n[] = {"get", "put-new", "put-takeover",
                                    "refresh", "note", "delete"};
    return (unsigned)k < 6 ? n[k] : "?";
}

static int64_t now(lk_core *c)
{
    return c->cfg.now_ms(c->cfg.ctx);
}

static void set_err(lk_error *e, lk_code code, ddb_code dc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(lk_error *e, lk_code code, ddb_code dc, const char *fmt, ...)
{
    va_list ap;

    e->code = code;
    e->ddb = dc;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

bool lk_name_valid(const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n > 1024)
        return false;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

static void new_version(char out[LK_UUID_LEN + 1])
{
    if (lk_uuid4(out) == 0)
        return;
    /* The system random source failed: still unique enough per writer. */
    uint64_t a = lk_random_below(UINT64_MAX), b = lk_random_below(UINT64_MAX);
    snprintf(out, LK_UUID_LEN + 1, "%08x-%04x-4%03x-a%03x-%012llx",
             (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
             (unsigned)a & 0xfff, (unsigned)(b >> 48) & 0xfff,
             (unsigned long long)(b & 0xffffffffffffULL));
}

static bool is_ambiguous(const ddb_error *err)
{
    return err && (err->ambiguous || err->code == DDB_ERR_NETWORK ||
                   err->code == DDB_ERR_TIMEOUT || err->code == DDB_ERR_SERVER);
}

static bool retryable(const ddb_error *err)
{
    return err && (ddb_retryable(err) || err->code == DDB_ERR_TIMEOUT);
}

/* ---- options ----------------------------------------------------------- */

bool lk_core_options_fix(lk_engine_options *o, lk_error *err)
{
    if (!o->table || !*o->table) {
        set_err(err, LK_ERR_INVALID, DDB_OK, "no lock table given");
        return false;
    }
    if (!o->host || !*o->host) {
        set_err(err, LK_ERR_INVALID, DDB_OK, "no host identifier: set host=");
        return false;
    }
    if (o->lease_s == 0)
        o->lease_s = 20;
    if (o->lease_s < 1 || o->lease_s > 86400) {
        set_err(err, LK_ERR_INVALID, DDB_OK, "lease=%d is out of range: use 1 "
                "to 86400 seconds", o->lease_s);
        return false;
    }
    int64_t lease_ms = (int64_t)o->lease_s * 1000;
    if (o->heartbeat_ms == 0)
        o->heartbeat_ms = lease_ms / 4;
    if (o->heartbeat_ms < 1 || o->heartbeat_ms > lease_ms / 2) {
        set_err(err, LK_ERR_INVALID, DDB_OK, "heartbeat of %lld ms is out of "
                "range: use at most half the lease (%lld ms)",
                (long long)o->heartbeat_ms, (long long)(lease_ms / 2));
        return false;
    }
    if (o->margin_ms == 0)
        o->margin_ms = lease_ms / 10 > 500 ? lease_ms / 10 : 500;
    if (o->margin_ms >= lease_ms - o->heartbeat_ms)
        o->margin_ms = (lease_ms - o->heartbeat_ms) / 2;
    if (o->poll_min_ms <= 0)
        o->poll_min_ms = 10;
    if (o->poll_max_ms <= 0)
        o->poll_max_ms = 40;
    if (o->poll_max_ms < o->poll_min_ms)
        o->poll_max_ms = o->poll_min_ms;
    if (o->max_inflight <= 0)
        o->max_inflight = 256;
    return true;
}

/* ---- timer heap ---------------------------------------------------------- */

static void heap_place(lk_core *c, size_t i, lk_timer *t)
{
    c->heap[i] = t;
    t->idx = (uint32_t)i;
}

static void heap_up(lk_core *c, size_t i)
{
    lk_timer *t = c->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p]->at <= t->at)
            break;
        heap_place(c, i, c->heap[p]);
        i = p;
    }
    heap_place(c, i, t);
}

static void heap_down(lk_core *c, size_t i)
{
    lk_timer *t = c->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = t->at;
        if (l < c->hn && c->heap[l]->at < best)
            m = l, best = c->heap[l]->at;
        if (l + 1 < c->hn && c->heap[l + 1]->at < best)
            m = l + 1;
        if (m == i)
            break;
        heap_place(c, i, c->heap[m]);
        i = m;
    }
    heap_place(c, i, t);
}

static void timer_stop(lk_core *c, lk_timer *t)
{
    if (t->idx == NO_IDX)
        return;
    size_t i = t->idx;
    t->idx = NO_IDX;
    c->hn--;
    if (i == c->hn)
        return;
    lk_timer *m = c->heap[c->hn];
    heap_place(c, i, m);
    if (i > 0 && c->heap[(i - 1) / 2]->at > m->at)
        heap_up(c, i);
    else
        heap_down(c, i);
}

/* Arm (or move) t to at; at == NEVER stops it. False when out of memory. */
static bool timer_set(lk_core *c, lk_timer *t, int64_t at)
{
    if (at == NEVER) {
        timer_stop(c, t);
        return true;
    }
    if (t->idx != NO_IDX) {
        int64_t old = t->at;
        t->at = at;
        if (at < old)
            heap_up(c, t->idx);
        else
            heap_down(c, t->idx);
        return true;
    }
    if (c->hn == c->hcap) {
        size_t cap = c->hcap ? c->hcap * 2 : 64;
        lk_timer **h = realloc(c->heap, cap * sizeof(*h));
        if (!h)
            return false;
        c->heap = h;
        c->hcap = cap;
    }
    t->at = at;
    c->heap[c->hn] = t;
    t->idx = (uint32_t)c->hn++;
    heap_up(c, t->idx);
    return true;
}

int64_t lk_core_next_deadline(const lk_core *c)
{
    return c->hn ? c->heap[0]->at : NEVER;
}

/* ---- the name table of pollers ----------------------------------------- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static lk_cont *cont_find(lk_core *c, const char *name)
{
    if (!c->nbuckets)
        return NULL;
    uint64_t h = name_hash(name);
    for (lk_cont *k = c->buckets[h % c->nbuckets]; k; k = k->hnext)
        if (k->hash == h && strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static bool cont_table_grow(lk_core *c)
{
    size_t n = c->nbuckets ? c->nbuckets * 2 : 64;
    lk_cont **b = calloc(n, sizeof(*b));
    if (!b)
        return false;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (lk_cont *k = c->buckets[i], *nx; k; k = nx) {
            nx = k->hnext;
            k->hnext = b[k->hash % n];
            b[k->hash % n] = k;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
    return true;
}

static lk_cont *cont_new(lk_core *c, const char *name)
{
    if (c->ncont >= c->nbuckets && !cont_table_grow(c))
        return NULL;
    size_t n = strlen(name);
    lk_cont *k = calloc(1, sizeof(*k) + n + 1);
    if (!k)
        return NULL;
    memcpy(k->name, name, n + 1);
    k->hash = name_hash(name);
    k->t.idx = NO_IDX;
    k->t.kind = TK_CONT;
    k->interval_ms = c->o.poll_min_ms;
    size_t b = k->hash % c->nbuckets;
    k->hnext = c->buckets[b];
    c->buckets[b] = k;
    c->ncont++;
    return k;
}

static void cands_free(lk_cand **list)
{
    for (lk_cand *x = *list, *nx; x; x = nx) {
        nx = x->next;
        free(x);
    }
    *list = NULL;
}

static lk_cand *cand_find(lk_cand *list, const char *version)
{
    for (; version && list; list = list->next)
        if (strcmp(list->version, version) == 0)
            return list;
    return NULL;
}

static bool cand_add(lk_cand **list, const char *version, int64_t sent)
{
    lk_cand *x = malloc(sizeof(*x));
    if (!x)
        return false;
    memcpy(x->version, version, LK_UUID_LEN + 1);
    x->sent_ms = sent;
    x->next = *list;
    *list = x;
    return true;
}

static void cont_free(lk_core *c, lk_cont *k)
{
    lk_cont **pp = &c->buckets[k->hash % c->nbuckets];
    while (*pp && *pp != k)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = k->hnext;
    c->ncont--;
    timer_stop(c, &k->t);
    cands_free(&k->cands);
    free(k->last_err);
    free(k->obs_host);
    free(k);
}

/* ---- ops ----------------------------------------------------------------- */

static json_t *key_of(const char *name)
{
    return json_pack("{s:o}", "lockKey", ddb_s(name));
}

static lk_op *op_new(lk_core *c, lk_op_kind kind, const char *ddb_op,
                     const char *name)
{
    lk_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->kind = kind;
    op->ddb_op = ddb_op;
    op->name = name;
    (void)c;
    return op;
}

static void op_send(lk_core *c, lk_op *op)
{
    op->sent_ms = now(c);
    c->inflight++;
    c->cfg.send(c->cfg.ctx, op);
}

static void op_free(lk_core *c, lk_op *op)
{
    c->inflight--;
    json_decref(op->body);
    if (op->owner_kind == OWN_LOCK)
        lk_lock_drop(op->owner);
    free(op);
}

static json_t *body_get(lk_core *c, const char *name)
{
    json_t *key = key_of(name);
    json_t *b = key ? ddb_body_get_item(c->table, key, true) : NULL;
    json_decref(key);
    return b;
}

/* PutItem of the whole item; observed == NULL: acquire a free lock. */
static json_t *body_put(lk_core *c, const char *name, const char *version,
                        const char *observed)
{
    json_t *item = json_pack("{s:o, s:o, s:o, s:o}", "lockKey", ddb_s(name),
                             "leaseDuration", ddb_n(c->o.lease_s),
                             "versionNumber", ddb_s(version),
                             "hostIdentifier", ddb_s(c->host));
    json_t *vals = observed ? json_pack("{s:o}", ":observed", ddb_s(observed))
                            : NULL;
    ddb_cond cond = {
        .expr = observed ? "attribute_not_exists(lockKey) OR "
                           "versionNumber = :observed"
                         : "attribute_not_exists(lockKey)",
        .values = vals, .return_old_on_fail = true};
    json_t *b = item && (vals || !observed)
                    ? ddb_body_put_item(c->table, item, &cond) : NULL;
    json_decref(item);
    json_decref(vals);
    return b;
}

static json_t *body_update(lk_core *c, const lk_lock *l, const char *version,
                           bool with_note, const char *note)
{
    json_t *key = key_of(l->name);
    json_t *vals = json_pack("{s:o, s:o, s:o}", ":new", ddb_s(version),
                             ":host", ddb_s(c->host), ":mine", ddb_s(l->version));
    const char *expr = "SET versionNumber = :new, hostIdentifier = :host";
    if (with_note && note && *note) {
        expr = "SET versionNumber = :new, hostIdentifier = :host, note = :note";
        if (vals)
            json_object_set_new(vals, ":note", ddb_s(note));
    } else if (with_note) {
        expr = "SET versionNumber = :new, hostIdentifier = :host REMOVE note";
    }
    ddb_cond cond = {.expr = "versionNumber = :mine", .values = vals,
                     .return_old_on_fail = true};
    json_t *b = key && vals ? ddb_body_update_item(c->table, key, expr, &cond)
                            : NULL;
    json_decref(key);
    json_decref(vals);
    return b;
}

static json_t *body_delete(lk_core *c, const lk_lock *l)
{
    json_t *key = key_of(l->name);
    json_t *vals = json_pack("{s:o}", ":mine", ddb_s(l->version));
    ddb_cond cond = {.expr = "versionNumber = :mine", .values = vals,
                     .return_old_on_fail = true};
    json_t *b = key && vals ? ddb_body_delete_item(c->table, key, &cond) : NULL;
    json_decref(key);
    json_decref(vals);
    return b;
}

/* ---- core lifetime ------------------------------------------------------- */

lk_core *lk_core_new(const lk_core_config *cfg, lk_error *err)
{
    lk_core *c = calloc(1, sizeof(*c));
    if (!c) {
        set_err(err, LK_ERR_NOMEM, DDB_OK, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->o = cfg->opts;
    if (!lk_core_options_fix(&c->o, err)) {
        free(c);
        return NULL;
    }
    c->table = strdup(c->o.table);
    c->host = strdup(c->o.host);
    if (!c->table || !c->host || !cont_table_grow(c)) {
        set_err(err, LK_ERR_NOMEM, DDB_OK, "out of memory");
        lk_core_free(c);
        return NULL;
    }
    c->o.table = c->table;
    c->o.host = c->host;
    if (c->cfg.jitter_max_ms < 0)
        c->cfg.jitter_max_ms = c->o.heartbeat_ms / 5;
    if (c->cfg.try_budget_ms <= 0)
        c->cfg.try_budget_ms = 10000;
    c->worst_slack = NEVER;
    return c;
}

const lk_engine_options *lk_core_options(const lk_core *c)
{
    return &c->o;
}

size_t lk_core_inflight(const lk_core *c)
{
    return c->inflight;
}

/* ---- locks: references and state ----------------------------------------- */

lk_lock *lk_lock_hold(lk_lock *l)
{
    if (l)
        atomic_fetch_add(&l->refs, 1);
    return l;
}

void lk_lock_drop(lk_lock *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    cands_free(&l->cands);
    for (lk_cmd *x = l->cmds, *nx; x; x = nx) {
        nx = x->next;
        free(x->note);
        free(x);
    }
    free(l->note);
    free(l->last_err);
    free(l);
}

static void set_state(lk_core *c, lk_lock *l, lk_state s)
{
    if (l->state == LK_STATE_HELD && s != LK_STATE_HELD)
        c->nheld--;
    if (l->state != LK_STATE_HELD && s == LK_STATE_HELD)
        c->nheld++;
    l->state = s;
}

static int64_t lease_ms(const lk_lock *l)
{
    return (int64_t)l->lease_s * 1000;
}

static int64_t safety_deadline(lk_core *c, const lk_lock *l)
{
    return l->write_ms + lease_ms(l) - c->o.margin_ms;
}

/* The next moment the lock's timer must fire. */
static void lock_arm(lk_core *c, lk_lock *l)
{
    int64_t at = NEVER;
    if (!l->tracked) {
        timer_stop(c, &l->t);
        return;
    }
    if (l->state == LK_STATE_HELD)
        at = safety_deadline(c, l);
    else if (l->state == LK_STATE_EXPIRING && !l->lenient)
        at = l->write_ms + lease_ms(l);
    if (!l->inflight) {
        int64_t act = NEVER;
        if (l->retry_at_ms)
            act = l->retry_at_ms;
        else if (l->state == LK_STATE_HELD && l->act == ACT_NONE)
            act = l->next_refresh_ms;
        if (act < at)
            at = act;
    }
    timer_set(c, &l->t, at);
}

static void untrack(lk_core *c, lk_lock *l)
{
    if (!l->tracked)
        return;
    l->tracked = false;
    timer_stop(c, &l->t);
    lk_lock_drop(l);
}

static void cmd_finish(lk_core *c, lk_lock *l, lk_code code, ddb_code dc,
                       const char *msg)
{
    lk_cmd *x = l->cmds;
    if (!x)
        return;
    l->cmds = x->next;
    c->ncmds--;
    lk_error e = {.code = code, .ddb = dc};
    if (msg)
        snprintf(e.msg, sizeof(e.msg), "%s", msg);
    if (x->cb)
        x->cb(l, &e, x->arg);
    free(x->note);
    free(x);
}

static void cmds_fail_all(lk_core *c, lk_lock *l, lk_code code, const char *msg)
{
    while (l->cmds)
        cmd_finish(c, l, code, DDB_OK, msg);
}

static void lock_lost(lk_core *c, lk_lock *l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void lock_lost(lk_core *c, lk_lock *l, const char *fmt, ...)
{
    char why[400], msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof(msg), "lock '%.*s' lost: %s", 80, l->name, why);
    lk_error("%s", msg);
    set_state(c, l, LK_STATE_LOST);
    c->lost++;
    l->inflight = NULL;
    l->act = ACT_NONE;
    l->readback = false;
    l->retry_at_ms = 0;
    cands_free(&l->cands);
    lk_lock_hold(l);
    cmds_fail_all(c, l, LK_ERR_LOST, msg);
    untrack(c, l);
    if (!l->lost_notified) {
        l->lost_notified = true;
        if (c->cfg.lost)
            c->cfg.lost(c->cfg.ctx, l);
        else if (l->on_lost)
            l->on_lost(l, l->lost_arg);
    }
    lk_lock_drop(l);
}

static void cont_local_release(lk_core *c, const char *name);
static void lock_next(lk_core *c, lk_lock *l);

static void lock_released(lk_core *c, lk_lock *l)
{
    lk_lock_hold(l);
    set_state(c, l, LK_STATE_RELEASED);
    l->inflight = NULL;
    l->act = ACT_NONE;
    l->readback = false;
    l->retry_at_ms = 0;
    l->del_amb = false;
    cands_free(&l->cands);
    untrack(c, l);
    if (l->cmd_running)
        cmd_finish(c, l, LK_OK, DDB_OK, NULL);
    l->cmd_running = false;
    cmds_fail_all(c, l, LK_ERR_RELEASED, "the lock was released");
    cont_local_release(c, l->name);
    lk_lock_drop(l);
}

/* ---- locks: requests ----------------------------------------------------- */

static void lock_send_op(lk_core *c, lk_lock *l, lk_op_kind kind,
                         const char *ddb_op, json_t *body, const char *version)
{
    lk_op *op = body ? op_new(c, kind, ddb_op, l->name) : NULL;
    if (!op) {
        json_decref(body);
        l->retry_at_ms = now(c) + 100; /* out of memory: try again soon */
        lock_arm(c, l);
        return;
    }
    op->body = body;
    op->owner_kind = OWN_LOCK;
    op->owner = lk_lock_hold(l);
    if (version)
        memcpy(op->version, version, LK_UUID_LEN + 1);
    l->inflight = op;
    l->retry_at_ms = 0;
    op_send(c, op);
    if (version && !cand_add(&l->cands, version, op->sent_ms))
        lk_warn("lock '%.*s': out of memory recording a write", 80, l->name);
    lock_arm(c, l);
}

static void lock_send(lk_core *c, lk_lock *l)
{
    char v[LK_UUID_LEN + 1];

    if (l->readback) {
        lock_send_op(c, l, LK_OP_GET, "GetItem", body_get(c, l->name), NULL);
        return;
    }
    switch (l->act) {
    case ACT_REFRESH:
        new_version(v);
        lock_send_op(c, l, LK_OP_REFRESH, "UpdateItem",
                     body_update(c, l, v, false, NULL), v);
        break;
    case ACT_NOTE:
        new_version(v);
        lock_send_op(c, l, LK_OP_NOTE, "UpdateItem",
                     body_update(c, l, v, true, l->cmds ? l->cmds->note : NULL), v);
        break;
    case ACT_DELETE:
        lock_send_op(c, l, LK_OP_DELETE, "DeleteItem", body_delete(c, l), NULL);
        break;
    default:
        break;
    }
}

static void lock_start(lk_core *c, lk_lock *l, int act, bool cmd)
{
    l->act = (uint8_t)act;
    l->cmd_running = cmd;
    l->attempt = 0;
    l->readback = false;
    l->act_since_ms = now(c);
    lock_send(c, l);
}

/* Pick up the next queued command, or go back to refreshing. */
static void lock_next(lk_core *c, lk_lock *l)
{
    l->act = ACT_NONE;
    l->cmd_running = false;
    l->readback = false;
    l->retry_at_ms = 0;
    l->inflight = NULL;
    while (l->cmds) {
        lk_cmd *x = l->cmds;
        if (l->lenient && x->kind != CMD_RELEASE) {
            cmd_finish(c, l, LK_ERR_LOST, DDB_OK, "the lock's lease ran out");
            continue;
        }
        if (x->kind == CMD_TOUCH && l->state != LK_STATE_HELD) {
            cmd_finish(c, l, LK_ERR_LOST, DDB_OK, "the lock is no longer "
                       "refreshed (its holder closed it)");
            continue;
        }
        lock_start(c, l, x->kind == CMD_RELEASE ? ACT_DELETE
                         : x->kind == CMD_NOTE ? ACT_NOTE : ACT_REFRESH, true);
        return;
    }
    lock_arm(c, l);
}

/* A write of ours succeeded (version written at sent). */
static void lock_wrote(lk_core *c, lk_lock *l, const char *version, int64_t sent,
                       bool is_refresh)
{
    int64_t t = now(c);
    if (l->state == LK_STATE_HELD) {
        int64_t slack = safety_deadline(c, l) - t;
        if (slack < c->worst_slack)
            c->worst_slack = slack;
        if (is_refresh) {
            c->refreshes++;
            if (t - l->write_ms > c->o.heartbeat_ms * 3 / 2)
                c->refresh_late++;
        }
    }
    if (version != l->version)
        memmove(l->version, version, LK_UUID_LEN + 1);
    l->write_ms = sent;
    l->written_wall_s = (int64_t)time(NULL) - (t - sent) / 1000;
    l->next_refresh_ms = l->write_ms + c->o.heartbeat_ms;
    cands_free(&l->cands);
    free(l->last_err);
    l->last_err = NULL;
}

static void lock_write_done(lk_core *c, lk_lock *l, const char *version,
                            int64_t sent)
{
    int act = l->act;
    lk_cmd *x = l->cmd_running ? l->cmds : NULL;
    lock_wrote(c, l, version, sent, act == ACT_REFRESH);
    if (act == ACT_NOTE && x) {
        free(l->note);
        l->note = x->note && *x->note ? x->note : NULL;
        if (l->note)
            x->note = NULL;
    }
    if (x)
        cmd_finish(c, l, LK_OK, DDB_OK, NULL);
    lock_next(c, l);
}

static void lock_retry_later(lk_core *c, lk_lock *l, const ddb_error *err)
{
    if (err && err->msg[0])
        replace_str(&l->last_err, err->msg);
    l->retry_at_ms = now(c) + ddb_backoff_ms(l->attempt);
    if (l->attempt < 30)
        l->attempt++;
    lock_arm(c, l);
}

/* What the table holds after one of our writes failed or was ambiguous. */
static void lock_resolve(lk_core *c, lk_lock *l, const json_t *item)
{
    const char *v = item ? ddb_item_s(item, "versionNumber") : NULL;
    lk_cand *cand = cand_find(l->cands, v);

    l->readback = false;
    if (l->act == ACT_DELETE) {
        if (!item || l->lenient || l->del_amb)
            lock_released(c, l);
        else if (v && strcmp(v, l->version) == 0)
            lock_retry_later(c, l, NULL);
        else
            lock_lost(c, l, "release found version %s written by %s in the "
                      "table", v ? v : "(none)",
                      ddb_item_s(item, "hostIdentifier") ?
                      ddb_item_s(item, "hostIdentifier") : "(unknown)");
        return;
    }
    if (cand) {
        lock_write_done(c, l, cand->version, cand->sent_ms);
    } else if (!item) {
        lock_lost(c, l, "its item is gone from the table (broken by someone "
                  "else?)");
    } else if (v && strcmp(v, l->version) == 0) {
        lock_retry_later(c, l, NULL); /* our write did not happen: again */
    } else {
        const char *h = ddb_item_s(item, "hostIdentifier");
        lock_lost(c, l, "the table holds version %s written by %s",
                  v ? v : "(none)", h ? h : "(unknown host)");
    }
}

static void lock_complete(lk_core *c, lk_lock *l, lk_op *op, ddb_code code,
                          json_t *resp, const ddb_error *err)
{
    l->inflight = NULL;
    if (op->kind == LK_OP_GET) {
        if (code == DDB_OK) {
            lock_resolve(c, l, json_object_get(resp, "Item"));
        } else {
            lock_retry_later(c, l, err);
        }
        return;
    }
    if (code == DDB_OK) {
        if (op->kind == LK_OP_DELETE)
            lock_released(c, l);
        else
            lock_write_done(c, l, op->version, op->sent_ms);
        return;
    }
    if (code == DDB_ERR_CONDITION) {
        if (err && err->item) {
            lock_resolve(c, l, err->item);
        } else {
            l->readback = true;
            lock_send(c, l);
        }
        return;
    }
    if (op->kind == LK_OP_DELETE && is_ambiguous(err))
        l->del_amb = true;
    if (l->lenient) {
        lock_released(c, l); /* expired anyway: nothing more to do */
        return;
    }
    if (is_ambiguous(err)) {
        if (err->msg[0])
            replace_str(&l->last_err, err->msg);
        l->readback = true;
        lock_send(c, l);
        return;
    }
    if (retryable(err) || (l->act == ACT_REFRESH && !l->cmd_running)) {
        /* timer-driven refreshes keep trying until the safety deadline */
        lock_retry_later(c, l, err);
        return;
    }
    /* a command failed for good: report it, keep the lock as it is */
    char msg[512];
    snprintf(msg, sizeof(msg), "lock '%.*s': %.400s", 80, l->name,
             err ? err->msg : "request failed");
    cmd_finish(c, l, LK_ERR_DDB, err ? err->code : DDB_OK, msg);
    lock_next(c, l);
}

static void lock_timer(lk_core *c, lk_lock *l)
{
    int64_t t = now(c);

    if (l->state == LK_STATE_HELD && t >= safety_deadline(c, l)) {
        lock_lost(c, l, "no successful refresh for %lld s (%s)",
                  (long long)((t - l->write_ms) / 1000),
                  l->last_err ? l->last_err : "no answer from DynamoDB");
        return;
    }
    if (l->state == LK_STATE_EXPIRING && !l->lenient &&
        t >= l->write_ms + lease_ms(l)) {
        if (l->act == ACT_DELETE) {
            lock_released(c, l); /* gone either way */
            return;
        }
        /* its lease ran out: forget it (a later release still tries) */
        l->stopping_expired = true;
        l->inflight = NULL;
        l->act = ACT_NONE;
        l->retry_at_ms = 0;
        lk_lock_hold(l);
        cmds_fail_all(c, l, LK_ERR_LOST, "the lock's lease ran out");
        untrack(c, l);
        lk_lock_drop(l);
        return;
    }
    if (l->inflight) {
        lock_arm(c, l);
        return;
    }
    if (l->retry_at_ms && t >= l->retry_at_ms) {
        l->retry_at_ms = 0;
        lock_send(c, l);
        return;
    }
    if (l->state == LK_STATE_HELD && l->act == ACT_NONE &&
        t >= l->next_refresh_ms) {
        lock_start(c, l, ACT_REFRESH, false);
        return;
    }
    lock_arm(c, l);
}

/* ---- commands on locks --------------------------------------------------- */

static void cmd_reject(lk_lock *l, lk_code code, const char *why,
                       lk_core_done_cb cb, void *arg)
{
    lk_error e;
    set_err(&e, code, DDB_OK, "lock '%.*s': %s", 80, l->name, why);
    if (cb)
        cb(l, &e, arg);
}

static bool cmd_check(lk_core *c, lk_lock *l, int kind, lk_core_done_cb cb,
                      void *arg)
{
    if (l->state == LK_STATE_LOST) {
        cmd_reject(l, LK_ERR_LOST, "the lock was lost", cb, arg);
        return false;
    }
    if (l->state == LK_STATE_RELEASED) {
        cmd_reject(l, LK_ERR_RELEASED, "the lock was released", cb, arg);
        return false;
    }
    if (kind == CMD_TOUCH && l->state != LK_STATE_HELD) {
        cmd_reject(l, LK_ERR_LOST, "the lock is no longer refreshed (its "
                   "holder closed it)", cb, arg);
        return false;
    }
    if (!l->tracked && kind != CMD_RELEASE) {
        cmd_reject(l, LK_ERR_LOST, "the lock's lease ran out", cb, arg);
        return false;
    }
    (void)c;
    return true;
}

static void cmd_enqueue(lk_core *c, lk_lock *l, int kind, const char *note,
                        lk_core_done_cb cb, void *arg)
{
    lk_cmd *x = calloc(1, sizeof(*x));
    if (!x || (note && *note && !(x->note = strdup(note)))) {
        free(x);
        cmd_reject(l, LK_ERR_NOMEM, "out of memory", cb, arg);
        return;
    }
    x->kind = kind;
    x->cb = cb;
    x->arg = arg;
    lk_cmd **pp = &l->cmds;
    while (*pp)
        pp = &(*pp)->next;
    *pp = x;
    c->ncmds++;
    if (l->act == ACT_NONE && !l->inflight)
        lock_next(c, l);
}

void lk_core_release(lk_core *c, lk_lock *l, lk_core_done_cb cb, void *arg)
{
    if (!cmd_check(c, l, CMD_RELEASE, cb, arg))
        return;
    if (!l->tracked) {
        /* an EXPIRING lock whose lease ran out: delete it if still ours,
         * one attempt, any answer counts as released */
        l->lenient = true;
        l->tracked = true;
        lk_lock_hold(l);
    }
    cmd_enqueue(c, l, CMD_RELEASE, NULL, cb, arg);
}

void lk_core_set_note(lk_core *c, lk_lock *l, const char *note,
                      lk_core_done_cb cb, void *arg)
{
    if (note && strlen(note) > LK_NOTE_MAX) {
        cmd_reject(l, LK_ERR_INVALID, "a note is at most 1024 bytes", cb, arg);
        return;
    }
    if (note && *note && !lk_name_valid(note)) {
        cmd_reject(l, LK_ERR_INVALID, "a note must be valid UTF-8 text", cb, arg);
        return;
    }
    if (cmd_check(c, l, CMD_NOTE, cb, arg))
        cmd_enqueue(c, l, CMD_NOTE, note, cb, arg);
}

void lk_core_touch(lk_core *c, lk_lock *l, lk_core_done_cb cb, void *arg)
{
    if (cmd_check(c, l, CMD_TOUCH, cb, arg))
        cmd_enqueue(c, l, CMD_TOUCH, NULL, cb, arg);
}

void lk_core_stop_refresh(lk_core *c, lk_lock *l)
{
    if (l->keep || l->state != LK_STATE_HELD)
        return;
    set_state(c, l, LK_STATE_EXPIRING);
    if (l->act == ACT_REFRESH && !l->cmd_running && !l->inflight &&
        !l->readback) {
        l->act = ACT_NONE;     /* a backed-off refresh: drop it */
        l->retry_at_ms = 0;
    }
    lock_arm(c, l);
}

/* ---- waiters and pollers -------------------------------------------------- */

lk_waiter *lk_waiter_new(const lk_acquire_args *a, lk_core_acq_cb cb, void *arg)
{
    lk_waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->name = strdup(a->name ? a->name : "");
    if (!w->name) {
        free(w);
        return NULL;
    }
    w->t.idx = NO_IDX;
    w->t.kind = TK_WAITER;
    w->mode = a->mode;
    w->deadline_ms = a->deadline_ms;
    w->pid = a->pid;
    w->uid = a->uid;
    w->keep = a->keep;
    w->on_lost = a->on_lost;
    w->lost_arg = a->lost_arg;
    w->cb = cb;
    w->arg = arg;
    return w;
}

static void waiter_finish(lk_core *c, lk_waiter *w, lk_lock *l,
                          const lk_error *e)
{
    timer_stop(c, &w->t);
    if (w->cont) {
        lk_cont *k = w->cont;
        if (w->prev)
            w->prev->next = w->next;
        else
            k->head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        else
            k->tail = w->prev;
        if (w->mode == LK_ACQ_WAIT)
            k->nwait_hard--;
        c->nwaiting--;
    }
    if (w->cb)
        w->cb(l, e, w->arg);
    free(w->name);
    free(w);
}

static void waiter_fail(lk_core *c, lk_waiter *w, lk_code code, ddb_code dc,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void waiter_fail(lk_core *c, lk_waiter *w, lk_code code, ddb_code dc,
                        const char *fmt, ...)
{
    lk_error e = {.code = code, .ddb = dc};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    waiter_finish(c, w, NULL, &e);
}

static void cont_send(lk_core *c, lk_cont *k, int what);
static void cont_step(lk_core *c, lk_cont *k);

static const char *holder_of(lk_cont *k)
{
    return k->obs_host ? k->obs_host : "another host";
}

/* The lock is held by someone: TRY waiters get BUSY. */
static void cont_busy_try(lk_core *c, lk_cont *k)
{
    for (lk_waiter *w = k->head, *nx; w; w = nx) {
        nx = w->next;
        if (w->mode == LK_ACQ_TRY)
            waiter_fail(c, w, LK_ERR_BUSY, DDB_OK, "lock '%.*s' is held by %s",
                        80, k->name, holder_of(k));
    }
}

static void cont_fail_all(lk_core *c, lk_cont *k, lk_code code, ddb_code dc,
                          const char *msg)
{
    while (k->head)
        waiter_fail(c, k->head, code, dc, "lock '%.*s': %s", 80, k->name, msg);
}

static lk_lock *lock_new(lk_core *c, const char *name, const char *version,
                         int64_t sent)
{
    size_t n = strlen(name);
    lk_lock *l = calloc(1, sizeof(*l) + n + 1);
    if (!l)
        return NULL;
    memcpy(l->name, name, n + 1);
    atomic_init(&l->refs, 1); /* the core's */
    l->tracked = true;
    l->core = c;
    l->owner = c->cfg.ctx;
    l->t.idx = NO_IDX;
    l->t.kind = TK_LOCK;
    l->lease_s = c->o.lease_s;
    memcpy(l->version, version, LK_UUID_LEN + 1);
    l->write_ms = sent;
    l->written_wall_s = (int64_t)time(NULL) - (now(c) - sent) / 1000;
    int64_t jitter = c->cfg.jitter_max_ms > 0
        ? (int64_t)lk_random_below((uint64_t)c->cfg.jitter_max_ms + 1) : 0;
    l->next_refresh_ms = sent + c->o.heartbeat_ms - jitter;
    l->state = LK_STATE_ACQUIRING;
    set_state(c, l, LK_STATE_HELD);
    return l;
}

/* Our put (version, sent at sent) is in the table. */
static void cont_won(lk_core *c, lk_cont *k, const char *version, int64_t sent)
{
    lk_lock *l = lock_new(c, k->name, version, sent);
    lk_waiter *w = k->head;
    cands_free(&k->cands);
    k->attempt = 0;
    free(k->last_err);
    k->last_err = NULL;
    if (!l) {
        /* cannot track it: it expires after a lease; waiters keep waiting */
        lk_error("lock '%.*s': out of memory after acquiring it", 80, k->name);
        return;
    }
    lock_arm(c, l);
    if (!w) {
        lk_core_release(c, l, NULL, NULL); /* nobody wants it any more */
        return;
    } else {
        l->pid = w->pid;
        l->uid = w->uid;
        l->keep = w->keep;
        l->on_lost = w->on_lost;
        l->lost_arg = w->lost_arg;
        waiter_finish(c, w, lk_lock_hold(l), NULL);
    }
    /* the rest wait for us (or whoever is next) to let go */
    memcpy(k->obs, l->version, LK_UUID_LEN + 1);
    k->have_obs = true;
    replace_str(&k->obs_host, c->host);
    k->obs_lease_ms = (int64_t)c->o.lease_s * 1000;
    k->first_seen_ms = now(c);
    k->interval_ms = c->o.poll_min_ms;
    cont_busy_try(c, k);
    if (k->head) {
        k->next = NX_GET;
        timer_set(c, &k->t, now(c) + k->interval_ms);
    }
}

static void cont_observe(lk_core *c, lk_cont *k, const json_t *item)
{
    const char *v = item ? ddb_item_s(item, "versionNumber") : NULL;
    lk_cand *cand = cand_find(k->cands, v);
    int64_t t = now(c);

    if (cand) {
        cont_won(c, k, cand->version, cand->sent_ms);
        return;
    }
    if (!k->head) {
        cands_free(&k->cands); /* not ours: nothing to clean up */
        return;
    }
    if (!item) {
        k->have_obs = false;
        cont_send(c, k, NX_PUT_NEW);
        return;
    }
    long long lease = 0;
    if (!ddb_item_n(item, "leaseDuration", &lease) || lease < 0)
        lease = c->o.lease_s;
    if (lease > 7 * 86400LL)
        lease = 7 * 86400LL;
    replace_str(&k->obs_host, ddb_item_s(item, "hostIdentifier"));
    cands_free(&k->cands); /* someone else's version: none of ours stands */
    cont_busy_try(c, k);
    if (!k->head)
        return;
    if (!k->have_obs || !v || strcmp(v, k->obs) != 0) {
        snprintf(k->obs, sizeof(k->obs), "%s", v ? v : "");
        k->have_obs = true;
        k->obs_lease_ms = lease * 1000;
        k->first_seen_ms = t;
        k->interval_ms = c->o.poll_min_ms;
        k->woken = false;
    } else if (t - k->first_seen_ms >= k->obs_lease_ms) {
        cont_send(c, k, NX_PUT_TAKEOVER);
        return;
    } else if (k->woken) {
        k->woken = false;
        cont_send(c, k, NX_PUT_NEW);
        return;
    } else {
        k->interval_ms = k->interval_ms * 3 / 2;
        if (k->interval_ms > c->o.poll_max_ms)
            k->interval_ms = c->o.poll_max_ms;
    }
    int64_t at = t + k->interval_ms;
    if (k->first_seen_ms + k->obs_lease_ms < at)
        at = k->first_seen_ms + k->obs_lease_ms;
    k->next = NX_GET;
    timer_set(c, &k->t, at);
}

static void cont_send(lk_core *c, lk_cont *k, int what)
{
    char v[LK_UUID_LEN + 1];
    lk_op *op = NULL;

    timer_stop(c, &k->t);
    k->next = what;
    if (what == NX_GET) {
        op = op_new(c, LK_OP_GET, "GetItem", k->name);
        if (op)
            op->body = body_get(c, k->name);
    } else {
        new_version(v);
        op = op_new(c, what == NX_PUT_NEW ? LK_OP_PUT_NEW : LK_OP_PUT_TAKEOVER,
                    "PutItem", k->name);
        if (op) {
            op->body = body_put(c, k->name, v,
                                what == NX_PUT_NEW ? NULL : k->obs);
            memcpy(op->version, v, sizeof(v));
        }
    }
    if (!op || !op->body) {
        free(op);
        timer_set(c, &k->t, now(c) + 100);
        return;
    }
    op->owner_kind = OWN_CONT;
    op->owner = k;
    k->inflight = op;
    op_send(c, op);
    if (what != NX_GET && !cand_add(&k->cands, v, op->sent_ms))
        lk_warn("lock '%.*s': out of memory recording a write", 80, k->name);
}

static void cont_note_err(lk_cont *k, const ddb_error *err)
{
    if (err && err->msg[0])
        replace_str(&k->last_err, err->msg);
}

/* After an event: end the poller when nobody needs it any more. */
static void cont_step(lk_core *c, lk_cont *k)
{
    if (k->inflight || k->head)
        return;
    if (k->cands) {
        cont_send(c, k, NX_GET); /* was one of our puts applied? */
        return;
    }
    cont_free(c, k);
}

static void cont_complete(lk_core *c, lk_cont *k, lk_op *op, ddb_code code,
                          json_t *resp, const ddb_error *err)
{
    k->inflight = NULL;
    if (code == DDB_OK) {
        k->attempt = 0;
        if (op->kind == LK_OP_GET)
            cont_observe(c, k, json_object_get(resp, "Item"));
        else
            cont_won(c, k, op->version, op->sent_ms);
    } else if (code == DDB_ERR_CONDITION && op->kind != LK_OP_GET) {
        k->attempt = 0;
        if (err && err->item)
            cont_observe(c, k, err->item);
        else
            cont_send(c, k, NX_GET);
    } else if (op->kind != LK_OP_GET && is_ambiguous(err)) {
        cont_note_err(k, err);
        cont_send(c, k, NX_GET); /* find out whether it happened */
    } else if (retryable(err) && (k->head || k->cands)) {
        cont_note_err(k, err);
        k->next = op->kind == LK_OP_GET ? NX_GET
                  : op->kind == LK_OP_PUT_NEW ? NX_PUT_NEW : NX_PUT_TAKEOVER;
        timer_set(c, &k->t, now(c) + ddb_backoff_ms(k->attempt));
        if (k->attempt < 30)
            k->attempt++;
    } else {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", err && err->msg[0] ? err->msg
                 : "DynamoDB request failed");
        cont_fail_all(c, k, LK_ERR_DDB, err ? err->code : DDB_OK, msg);
        if (op->kind == LK_OP_GET)
            cands_free(&k->cands); /* cannot tell: it expires after a lease */
    }
    cont_step(c, k);
}

static void cont_timer(lk_core *c, lk_cont *k)
{
    if (k->inflight)
        return;
    if (!k->head && !k->cands) {
        cont_step(c, k);
        return;
    }
    cont_send(c, k, k->head ? k->next : NX_GET);
}

/* A lock of this name was released through us: its waiters try at once. */
static void cont_local_release(lk_core *c, const char *name)
{
    lk_cont *k = cont_find(c, name);
    if (!k || !k->head)
        return;
    if (k->inflight) {
        k->woken = true;
        return;
    }
    if (k->next == NX_GET)
        cont_send(c, k, NX_PUT_NEW);
}

static void waiter_timer(lk_core *c, lk_waiter *w)
{
    lk_cont *k = w->cont;
    if (w->mode == LK_ACQ_TRY && k && k->last_err)
        waiter_fail(c, w, LK_ERR_DDB, DDB_OK, "lock '%.*s': gave up: %s", 80,
                    w->name, k->last_err);
    else if (k && k->have_obs)
        waiter_fail(c, w, LK_ERR_TIMEOUT, DDB_OK, "lock '%.*s': still held by "
                    "%s when the wait ran out", 80, w->name, holder_of(k));
    else
        waiter_fail(c, w, LK_ERR_TIMEOUT, DDB_OK, "lock '%.*s': not acquired "
                    "before the wait ran out%s%s", 80, w->name,
                    k && k->last_err ? ": " : "",
                    k && k->last_err ? k->last_err : "");
    if (k)
        cont_step(c, k);
}

void lk_core_acquire(lk_core *c, lk_waiter *w)
{
    lk_error e;

    if (c->shutting) {
        set_err(&e, LK_ERR_SHUTDOWN, DDB_OK, "the lock engine is stopping");
        waiter_finish(c, w, NULL, &e);
        return;
    }
    if (!lk_name_valid(w->name)) {
        set_err(&e, LK_ERR_INVALID, DDB_OK, "invalid lock name: a name is 1 "
                "to 1024 bytes of valid UTF-8");
        waiter_finish(c, w, NULL, &e);
        return;
    }
    lk_cont *k = cont_find(c, w->name);
    if (k && w->mode == LK_ACQ_TRY && k->nwait_hard) {
        set_err(&e, LK_ERR_BUSY, DDB_OK, "lock '%.*s' is held by %s", 80,
                w->name, holder_of(k));
        waiter_finish(c, w, NULL, &e);
        return;
    }
    bool fresh = !k;
    if (!k && !(k = cont_new(c, w->name))) {
        set_err(&e, LK_ERR_NOMEM, DDB_OK, "out of memory");
        waiter_finish(c, w, NULL, &e);
        return;
    }
    w->cont = k;
    w->prev = k->tail;
    w->next = NULL;
    if (k->tail)
        k->tail->next = w;
    else
        k->head = w;
    k->tail = w;
    if (w->mode == LK_ACQ_WAIT)
        k->nwait_hard++;
    c->nwaiting++;
    int64_t dl = w->deadline_ms;
    if (w->mode == LK_ACQ_TRY && dl <= 0)
        dl = now(c) + c->cfg.try_budget_ms;
    if (dl > 0)
        timer_set(c, &w->t, dl);
    if (fresh || (!k->inflight && k->t.idx == NO_IDX))
        cont_send(c, k, NX_PUT_NEW);
}

void lk_core_cancel(lk_core *c, lk_waiter *w)
{
    lk_cont *k = w->cont;
    waiter_fail(c, w, LK_ERR_CANCELLED, DDB_OK, "lock '%.*s': acquire "
                "cancelled", 80, w->name);
    if (k)
        cont_step(c, k);
}

/* ---- dispatch ------------------------------------------------------------- */

void lk_core_complete(lk_core *c, lk_op *op, ddb_code code, json_t *resp,
                      const ddb_error *err)
{
    ddb_error none = {.code = code};
    if (code != DDB_OK && !err)
        err = &none;
    if (op->owner_kind == OWN_LOCK) {
        lk_lock *l = op->owner;
        if (l->inflight == op)
            lock_complete(c, l, op, code, resp, err);
    } else if (op->owner_kind == OWN_CONT) {
        cont_complete(c, op->owner, op, code, resp, err);
    }
    op_free(c, op);
}

void lk_core_discard(lk_core *c, lk_op *op)
{
    if (op->owner_kind == OWN_LOCK) {
        lk_lock *l = op->owner;
        if (l->inflight == op)
            l->inflight = NULL;
    } else if (op->owner_kind == OWN_CONT) {
        lk_cont *k = op->owner;
        if (k->inflight == op)
            k->inflight = NULL;
    }
    op_free(c, op);
}

void lk_core_run_due(lk_core *c)
{
    int64_t t = now(c);
    while (c->hn && c->heap[0]->at <= t) {
        lk_timer *x = c->heap[0];
        timer_stop(c, x);
        switch (x->kind) {
        case TK_LOCK:
            lock_timer(c, container_of(x, lk_lock, t));
            break;
        case TK_CONT:
            cont_timer(c, container_of(x, lk_cont, t));
            break;
        case TK_WAITER:
            waiter_timer(c, container_of(x, lk_waiter, t));
            break;
        }
    }
}

/* ---- shutdown and statistics ---------------------------------------------- */

static size_t tracked_locks(lk_core *c, lk_lock ***out)
{
    size_t n = 0;
    lk_lock **v = malloc((c->hn + 1) * sizeof(*v));
    if (!v) {
        *out = NULL;
        return 0;
    }
    for (size_t i = 0; i < c->hn; i++)
        if (c->heap[i]->kind == TK_LOCK)
            v[n++] = lk_lock_hold(container_of(c->heap[i], lk_lock, t));
    *out = v;
    return n;
}

static void all_conts(lk_core *c, void (*fn)(lk_core *, lk_cont *))
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (lk_cont *k = c->buckets[i], *nx; k; k = nx) {
            nx = k->hnext;
            fn(c, k);
        }
    }
}

static void cont_shutdown(lk_core *c, lk_cont *k)
{
    cont_fail_all(c, k, LK_ERR_SHUTDOWN, DDB_OK, "the lock engine is stopping");
    cont_step(c, k);
}

void lk_core_shutdown(lk_core *c)
{
    lk_lock **v;
    c->shutting = true;
    all_conts(c, cont_shutdown);
    size_t n = tracked_locks(c, &v);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->tracked && (v[i]->state == LK_STATE_HELD ||
                              v[i]->state == LK_STATE_EXPIRING))
            lk_core_release(c, v[i], NULL, NULL);
        lk_lock_drop(v[i]);
    }
    free(v);
}

bool lk_core_idle(const lk_core *c)
{
    return c->inflight == 0 && c->ncont == 0 && c->ncmds == 0;
}

static void cont_drop(lk_core *c, lk_cont *k)
{
    cont_fail_all(c, k, LK_ERR_SHUTDOWN, DDB_OK, "the lock engine is stopping");
    k->inflight = NULL;
    cont_free(c, k);
}

void lk_core_free(lk_core *c)
{
    if (!c)
        return;
    lk_lock **v;
    all_conts(c, cont_drop);
    size_t n = tracked_locks(c, &v);
    for (size_t i = 0; i < n; i++) {
        v[i]->inflight = NULL;
        cmds_fail_all(c, v[i], LK_ERR_SHUTDOWN, "the lock engine stopped");
        untrack(c, v[i]);
        lk_lock_drop(v[i]);
    }
    free(v);
    free(c->heap);
    free(c->buckets);
    free(c->table);
    free(c->host);
    free(c);
}

void lk_core_stats(const lk_core *c, lk_stats *out)
{
    out->held = c->nheld;
    out->waiting = c->nwaiting;
    out->refreshes = c->refreshes;
    out->refresh_late = c->refresh_late;
    out->lost = c->lost;
    out->worst_slack_ms = c->worst_slack == NEVER ? 0 : c->worst_slack;
}
