/* lock/engine.c — the runtime of the lock engine (engine.h): one thread that
 * drives the sans-IO protocol core (core.c) with a libcurl multi handle, a
 * mutex-protected command queue fed by other threads (woken with
 * curl_multi_wakeup), and the synchronous wrappers that wait on a condition
 * variable. Callbacks into users run on the engine thread with no engine
 * lock held. */
#include "lock/engine.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/core.h"
#include "util/clock.h"
#include "util/log.h"

#define SHUTDOWN_MS 5000
#define LIVE_BUCKETS 4096

enum { EC_ACQ = 1, EC_CANCEL, EC_RELEASE, EC_NOTE, EC_TOUCH, EC_STOP };

/* A synchronous caller waiting for its answer. */
typedef struct esync {
    bool done;
    lk_error err;
    lk_lock *lock;
} esync;

typedef struct ecmd {
    struct ecmd *next;
    int kind;
    lk_waiter *w;
    lk_lock *l;       /* a reference */
    char *note;
    esync *sync;
} ecmd;

/* A user callback to run once the engine lock is dropped. */
typedef struct edef {
    struct edef *next;
    lk_acquire_cb acb;
    void *arg;
    lk_lock *lock;    /* a reference for the callback */
    bool lost;        /* run the lock's on_lost instead */
    lk_error err;
    bool has_err;
} edef;

/* The runtime's side of a pending acquire. */
typedef struct eacq {
    lk_engine *e;
    lk_waiter *w;
    lk_acquire_cb cb;
    void *arg;
} eacq;

#define SYNC_POOL_MAX 16

typedef struct erun {
    struct erun *prev, *next;
    ddb_req *req;
    lk_op *op;
} erun;

typedef struct live_node {
    struct live_node *next;
    const void *p;
} live_node;

struct lk_engine {
    aws_config *cfg;
    ddb_client *client;        /* configuration for async requests */
    /* lk_observe / lk_break: a pool of clients (one connection each), so
     * that reads from many FUSE threads do not queue on one connection */
    ddb_client *sync_pool[SYNC_POOL_MAX];
    int sync_free;             /* clients at sync_pool[0 .. sync_free) are idle */
    int sync_made;             /* clients created so far */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    lk_core *core;
    CURLM *multi;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;        /* the core's state */
    pthread_mutex_t qmu;       /* queue, live set, sync answers */
    pthread_cond_t qcv;
    ecmd *qhead, *qtail;
    bool stopping;             /* under qmu: no new commands */
    live_node *live[LIVE_BUCKETS];
    /* engine thread only */
    lk_op *pend_head, *pend_tail;
    erun *running;
    int nrunning;
    edef *dhead, *dtail;
};

/* ---- the live set of pending waiters (under qmu) ------------------------ */

static size_t live_slot(const void *p)
{
    return ((uintptr_t)p >> 4) % LIVE_BUCKETS;
}

static bool live_add(lk_engine *e, const void *p)
{
    live_node *n = malloc(sizeof(*n));
    if (!n)
        return false;
    n->p = p;
    n->next = e->live[live_slot(p)];
    e->live[live_slot(p)] = n;
    return true;
}

static bool live_has(lk_engine *e, const void *p)
{
    for (live_node *n = e->live[live_slot(p)]; n; n = n->next)
        if (n->p == p)
            return true;
    return false;
}

static void live_del(lk_engine *e, const void *p)
{
    for (live_node **pp = &e->live[live_slot(p)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->p == p) {
            live_node *n = *pp;
            *pp = n->next;
            free(n);
            return;
        }
    }
}

/* ---- errors ------------------------------------------------------------- */

static void eset(lk_error *err, lk_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void eset(lk_error *err, lk_code code, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return;
    err->code = code;
    err->ddb = DDB_OK;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

static void ecopy(lk_error *dst, const lk_error *src)
{
    if (!dst)
        return;
    if (src)
        *dst = *src;
    else
        memset(dst, 0, sizeof(*dst));
}

/* ---- deferred callbacks (engine thread) -------------------------------- */

static void defer(lk_engine *e, edef *d)
{
    d->next = NULL;
    if (e->dtail)
        e->dtail->next = d;
    else
        e->dhead = d;
    e->dtail = d;
}

static void run_deferred(lk_engine *e)
{
    while (e->dhead) {
        edef *d = e->dhead;
        e->dhead = d->next;
        if (!e->dhead)
            e->dtail = NULL;
        if (d->lost) {
            if (d->lock->on_lost)
                d->lock->on_lost(d->lock, d->lock->lost_arg);
            lk_lock_drop(d->lock);
        } else if (d->acb) {
            d->acb(d->lock, d->has_err ? &d->err : NULL, d->arg);
        } else {
            lk_lock_drop(d->lock);
        }
        free(d);
    }
}

/* core -> runtime: an acquire finished. */
static void on_acq(lk_lock *lock, const lk_error *err, void *arg)
{
    eacq *a = arg;
    lk_engine *e = a->e;
    edef *d = calloc(1, sizeof(*d));

    pthread_mutex_lock(&e->qmu);
    live_del(e, a->w);
    pthread_mutex_unlock(&e->qmu);
    if (!d) {
        /* cannot defer: run it now rather than lose it */
        if (a->cb)
            a->cb(lock, err, a->arg);
        free(a);
        return;
    }
    d->acb = a->cb;
    d->arg = a->arg;
    d->lock = lock;
    if (err && err->code != LK_OK) {
        d->err = *err;
        d->has_err = true;
    }
    defer(e, d);
    free(a);
}

static void on_lost(void *ctx, lk_lock *l)
{
    lk_engine *e = ctx;
    edef *d = calloc(1, sizeof(*d));
    if (!d || !l->on_lost) {
        free(d);
        return;
    }
    d->lost = true;
    d->lock = lk_lock_hold(l);
    defer(e, d);
}

/* core -> runtime: a command on a lock finished. */
static void on_done(lk_lock *l, const lk_error *err, void *arg)
{
    esync *s = arg;
    lk_engine *e = l->owner;
    pthread_mutex_lock(&e->qmu);
    ecopy(&s->err, err);
    s->done = true;
    pthread_cond_broadcast(&e->qcv);
    pthread_mutex_unlock(&e->qmu);
}

/* ---- transport ---------------------------------------------------------- */

static int64_t clock_now(void *ctx)
{
    (void)ctx;
    return lk_now_ms();
}

static void send_op(void *ctx, lk_op *op)
{
    lk_engine *e = ctx;
    op->rt_next = NULL;
    if (e->pend_tail)
        e->pend_tail->rt_next = op;
    else
        e->pend_head = op;
    e->pend_tail = op;
}

static void start_pending(lk_engine *e)
{
    int max = lk_core_options(e->core)->max_inflight;
    while (e->pend_head && e->nrunning < max) {
        lk_op *op = e->pend_head;
        e->pend_head = op->rt_next;
        if (!e->pend_head)
            e->pend_tail = NULL;
        ddb_error derr = {0};
        erun *r = calloc(1, sizeof(*r));
        ddb_req *req = r ? ddb_req_new(e->client, op->ddb_op, op->body, &derr)
                         : NULL;
        if (!req || curl_multi_add_handle(e->multi, ddb_req_easy(req)) != CURLM_OK) {
            if (req || !r) {
                derr.code = r ? DDB_ERR_NETWORK : DDB_ERR_NOMEM;
                snprintf(derr.msg, sizeof(derr.msg), "%s: could not start the "
                         "request", op->ddb_op);
            }
            derr.ambiguous = false;
            ddb_req_free(req);
            free(r);
            lk_core_complete(e->core, op, derr.code, NULL, &derr);
            ddb_error_clear(&derr);
            continue;
        }
        ddb_req_set_private(req, r);
        r->req = req;
        r->op = op;
        r->next = e->running;
        if (r->next)
            r->next->prev = r;
        e->running = r;
        e->nrunning++;
    }
}

static void run_unlink(lk_engine *e, erun *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        e->running = r->next;
    if (r->next)
        r->next->prev = r->prev;
    e->nrunning--;
}

static void collect_done(lk_engine *e)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        ddb_req *req = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
        curl_multi_remove_handle(e->multi, easy);
        erun *r = ddb_req_private(req);
        if (!r)
            continue;
        json_t *resp = NULL;
        ddb_error derr = {0};
        ddb_code code = ddb_req_result(req, rc, &resp, &derr);
        run_unlink(e, r);
        lk_core_complete(e->core, r->op, code, resp, &derr);
        json_decref(resp);
        ddb_error_clear(&derr);
        ddb_req_free(req);
        free(r);
    }
}

static void discard_all(lk_engine *e)
{
    while (e->running) {
        erun *r = e->running;
        run_unlink(e, r);
        curl_multi_remove_handle(e->multi, ddb_req_easy(r->req));
        ddb_req_free(r->req);
        lk_core_discard(e->core, r->op);
        free(r);
    }
    while (e->pend_head) {
        lk_op *op = e->pend_head;
        e->pend_head = op->rt_next;
        lk_core_discard(e->core, op);
    }
    e->pend_tail = NULL;
}

/* ---- commands ------------------------------------------------------------ */

static void apply(lk_engine *e, ecmd *x)
{
    switch (x->kind) {
    case EC_ACQ:
        lk_core_acquire(e->core, x->w);
        break;
    case EC_CANCEL: {
        pthread_mutex_lock(&e->qmu);
        bool live = live_has(e, x->w);
        pthread_mutex_unlock(&e->qmu);
        if (live)
            lk_core_cancel(e->core, x->w);
        break;
    }
    case EC_RELEASE:
        lk_core_release(e->core, x->l, on_done, x->sync);
        break;
    case EC_NOTE:
        lk_core_set_note(e->core, x->l, x->note, on_done, x->sync);
        break;
    case EC_TOUCH:
        lk_core_touch(e->core, x->l, on_done, x->sync);
        break;
    case EC_STOP:
        lk_core_stop_refresh(e->core, x->l);
        break;
    }
    lk_lock_drop(x->l);
    free(x->note);
    free(x);
}

/* Take every queued command; true when the engine is asked to stop. */
static bool drain(lk_engine *e)
{
    pthread_mutex_lock(&e->qmu);
    ecmd *x = e->qhead;
    bool stop = e->stopping;
    e->qhead = e->qtail = NULL;
    pthread_mutex_unlock(&e->qmu);
    while (x) {
        ecmd *nx = x->next;
        apply(e, x);
        x = nx;
    }
    return stop;
}

static bool post(lk_engine *e, ecmd *x)
{
    pthread_mutex_lock(&e->qmu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->qmu);
        return false;
    }
    if (x->kind == EC_ACQ && !live_add(e, x->w)) {
        pthread_mutex_unlock(&e->qmu);
        return false;
    }
    x->next = NULL;
    if (e->qtail)
        e->qtail->next = x;
    else
        e->qhead = x;
    e->qtail = x;
    pthread_mutex_unlock(&e->qmu);
    curl_multi_wakeup(e->multi);
    return true;
}

/* ---- the engine thread --------------------------------------------------- */

static void *engine_main(void *arg)
{
    lk_engine *e = arg;
    bool shutting = false;
    int64_t give_up = 0;

    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (drain(e) && !shutting) {
            shutting = true;
            give_up = lk_now_ms() + SHUTDOWN_MS;
            lk_core_shutdown(e->core);
        }
        lk_core_run_due(e->core);
        start_pending(e);
        if (shutting && (lk_core_idle(e->core) || lk_now_ms() >= give_up))
            break;
        int64_t dl = lk_core_next_deadline(e->core);
        pthread_mutex_unlock(&e->mu);
        run_deferred(e);
        int64_t wait = dl == INT64_MAX ? 1000 : dl - lk_now_ms();
        if (shutting && give_up - lk_now_ms() < wait)
            wait = give_up - lk_now_ms();
        if (wait > 1000)
            wait = 1000;
        if (wait < 0)
            wait = 0;
        curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
        int running;
        curl_multi_perform(e->multi, &running);
        pthread_mutex_lock(&e->mu);
        collect_done(e);
    }
    if (!lk_core_idle(e->core))
        lk_warn("lock engine: stopped before every lock was released; the "
                "rest expire after their lease");
    discard_all(e);
    lk_core_free(e->core);
    e->core = NULL;
    pthread_mutex_unlock(&e->mu);
    run_deferred(e);
    return NULL;
}

/* ---- life ----------------------------------------------------------------- */

lk_engine *lk_engine_new(aws_config *cfg, const lk_engine_options *opts,
                         lk_error *err)
{
    lk_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        eset(err, LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    e->cfg = cfg;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->qmu, NULL);
    pthread_mutex_init(&e->sync_mu, NULL);
    pthread_cond_init(&e->sync_cv, NULL);
    pthread_cond_init(&e->qcv, NULL);
    lk_core_config cc = {
        .opts = *opts, .now_ms = clock_now, .send = send_op, .ctx = e,
        .lost = on_lost, .jitter_max_ms = -1, .try_budget_ms = 10000};
    lk_error tmp;
    if (!err)
        err = &tmp;
    e->core = lk_core_new(&cc, err);
    if (!e->core)
        goto fail;
    e->client = ddb_client_new(cfg, NULL);
    e->multi = curl_multi_init();
    if (!e->client || !e->multi) {
        eset(err, LK_ERR_NOMEM, "out of memory starting the lock engine");
        goto fail;
    }
    curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)lk_core_options(e->core)->max_inflight);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        eset(err, LK_ERR_NOMEM, "cannot start the lock engine thread: %s",
             strerror(errno));
        goto fail;
    }
    e->started = true;
    return e;
fail:
    lk_engine_free(e);
    return NULL;
}

void lk_engine_free(lk_engine *e)
{
    if (!e)
        return;
    if (e->started) {
        pthread_mutex_lock(&e->qmu);
        e->stopping = true;
        pthread_mutex_unlock(&e->qmu);
        curl_multi_wakeup(e->multi);
        pthread_join(e->thread, NULL);
    } else if (e->core) {
        lk_core_free(e->core);
    }
    for (ecmd *x = e->qhead, *nx; x; x = nx) { /* cannot happen; be safe */
        nx = x->next;
        lk_lock_drop(x->l);
        free(x->note);
        free(x);
    }
    for (size_t i = 0; i < LIVE_BUCKETS; i++) {
        for (live_node *n = e->live[i], *nx; n; n = nx) {
            nx = n->next;
            free(n);
        }
    }
    if (e->multi)
        curl_multi_cleanup(e->multi);
    ddb_client_free(e->client);
    for (int i = 0; i < e->sync_free; i++) /* all idle once callers returned */
        ddb_client_free(e->sync_pool[i]);
    pthread_cond_destroy(&e->sync_cv);
    pthread_cond_destroy(&e->qcv);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->qmu);
    pthread_mutex_destroy(&e->sync_mu);
    free(e);
}

static bool on_engine_thread(lk_engine *e)
{
    return e->started && pthread_equal(pthread_self(), e->thread);
}

/* ---- acquiring ------------------------------------------------------------ */

lk_waiter *lk_acquire(lk_engine *e, const lk_acquire_args *a,
                      lk_acquire_cb cb, void *arg)
{
    lk_error err;
    eacq *x = calloc(1, sizeof(*x));
    ecmd *c = calloc(1, sizeof(*c));
    lk_waiter *w = x && c ? lk_waiter_new(a, on_acq, x) : NULL;

    if (!w) {
        free(x);
        free(c);
        eset(&err, LK_ERR_NOMEM, "out of memory");
        if (cb)
            cb(NULL, &err, arg);
        return NULL;
    }
    x->e = e;
    x->w = w;
    x->cb = cb;
    x->arg = arg;
    c->kind = EC_ACQ;
    c->w = w;
    if (!post(e, c)) {
        free(c);
        free(w->name);
        free(w);
        free(x);
        eset(&err, LK_ERR_SHUTDOWN, "the lock engine is stopping");
        if (cb)
            cb(NULL, &err, arg);
        return NULL;
    }
    return w;
}

void lk_acquire_cancel(lk_engine *e, lk_waiter *w)
{
    ecmd *c;
    if (!e || !w)
        return;
    pthread_mutex_lock(&e->qmu);
    bool live = live_has(e, w);
    pthread_mutex_unlock(&e->qmu);
    if (!live || !(c = calloc(1, sizeof(*c))))
        return;
    c->kind = EC_CANCEL;
    c->w = w;
    if (!post(e, c))
        free(c);
}

typedef struct sync_acq {
    esync s;
    lk_engine *e;
} sync_acq;

static void sync_acq_done(lk_lock *lock, const lk_error *err, void *arg)
{
    sync_acq *sa = arg;
    pthread_mutex_lock(&sa->e->qmu);
    sa->s.lock = lock;
    ecopy(&sa->s.err, err);
    sa->s.done = true;
    pthread_cond_broadcast(&sa->e->qcv);
    pthread_mutex_unlock(&sa->e->qmu);
}

static void sync_wait(lk_engine *e, esync *s)
{
    pthread_mutex_lock(&e->qmu);
    while (!s->done)
        pthread_cond_wait(&e->qcv, &e->qmu);
    pthread_mutex_unlock(&e->qmu);
}

lk_code lk_acquire_sync(lk_engine *e, const lk_acquire_args *a, lk_lock **out,
                        lk_error *err)
{
    sync_acq sa = {.e = e};
    *out = NULL;
    if (on_engine_thread(e)) {
        eset(err, LK_ERR_INVALID, "lk_acquire_sync called from an engine "
             "callback (a bug in the caller)");
        return LK_ERR_INVALID;
    }
    lk_acquire(e, a, sync_acq_done, &sa);
    sync_wait(e, &sa.s);
    *out = sa.s.lock;
    ecopy(err, &sa.s.err);
    return sa.s.lock ? LK_OK : (sa.s.err.code ? sa.s.err.code : LK_ERR_DDB);
}

/* ---- a held lock ------------------------------------------------------------ */

lk_lock *lk_lock_ref(lk_lock *l)
{
    return lk_lock_hold(l);
}

void lk_lock_unref(lk_lock *l)
{
    lk_lock_drop(l);
}

void lk_lock_stop_refresh(lk_lock *l)
{
    ecmd *c;
    if (!l || !(c = calloc(1, sizeof(*c))))
        return;
    c->kind = EC_STOP;
    c->l = lk_lock_hold(l);
    if (!post(l->owner, c)) {
        lk_lock_drop(l);
        free(c);
    }
}

static lk_code lock_sync(lk_lock *l, int kind, const char *note, lk_error *err)
{
    lk_engine *e = l ? l->owner : NULL;
    esync s = {0};
    ecmd *c;

    if (!l) {
        eset(err, LK_ERR_INVALID, "no lock given");
        return LK_ERR_INVALID;
    }
    if (on_engine_thread(e)) {
        eset(err, LK_ERR_INVALID, "lock '%.80s': blocking call from an engine "
             "callback (a bug in the caller)", l->name);
        return LK_ERR_INVALID;
    }
    if (!(c = calloc(1, sizeof(*c))) || (note && !(c->note = strdup(note)))) {
        free(c);
        eset(err, LK_ERR_NOMEM, "out of memory");
        return LK_ERR_NOMEM;
    }
    c->kind = kind;
    c->l = lk_lock_hold(l);
    c->sync = &s;
    if (!post(e, c)) {
        lk_lock_drop(l);
        free(c->note);
        free(c);
        eset(err, LK_ERR_SHUTDOWN, "lock '%.80s': the lock engine is stopping",
             l->name);
        return LK_ERR_SHUTDOWN;
    }
    sync_wait(e, &s);
    ecopy(err, &s.err);
    return s.err.code;
}

lk_code lk_lock_touch(lk_lock *l, lk_error *err)
{
    return lock_sync(l, EC_TOUCH, NULL, err);
}

lk_code lk_lock_set_note(lk_lock *l, const char *note, lk_error *err)
{
    return lock_sync(l, EC_NOTE, note, err);
}

lk_code lk_lock_release(lk_lock *l, lk_error *err)
{
    return lock_sync(l, EC_RELEASE, NULL, err);
}

void lk_lock_info_get(lk_lock *l, lk_lock_info *out)
{
    lk_engine *e = l->owner;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&e->mu);
    snprintf(out->name, sizeof(out->name), "%s", l->name);
    snprintf(out->version, sizeof(out->version), "%s", l->version);
    if (e->core)
        snprintf(out->host, sizeof(out->host), "%s",
                 lk_core_options(e->core)->host);
    if (l->note)
        snprintf(out->note, sizeof(out->note), "%s", l->note);
    out->lease_s = l->lease_s;
    out->state = l->state;
    out->pid = l->pid;
    out->uid = l->uid;
    out->written_ms = l->write_ms;
    out->written_wall_s = l->written_wall_s;
    pthread_mutex_unlock(&e->mu);
}

lk_state lk_lock_state(lk_lock *l)
{
    lk_engine *e = l->owner;
    pthread_mutex_lock(&e->mu);
    lk_state s = l->state;
    pthread_mutex_unlock(&e->mu);
    return s;
}

/* ---- observing -------------------------------------------------------------- */

void lk_item_clear(lk_item *it)
{
    if (!it)
        return;
    free(it->name);
    free(it->version);
    free(it->host);
    free(it->note);
    memset(it, 0, sizeof(*it));
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static lk_code ddb_fail(lk_error *err, const char *name, const ddb_error *d)
{
    if (err) {
        err->code = LK_ERR_DDB;
        err->ddb = d->code;
        snprintf(err->msg, sizeof(err->msg), "lock '%.80s': %.400s", name,
                 d->msg);
    }
    return LK_ERR_DDB;
}

/* An idle client of the pool, made on demand up to SYNC_POOL_MAX; NULL only
 * when out of memory. */
static ddb_client *sync_get(lk_engine *e)
{
    ddb_client *c = NULL;
    pthread_mutex_lock(&e->sync_mu);
    while (e->sync_free == 0 && e->sync_made >= SYNC_POOL_MAX)
        pthread_cond_wait(&e->sync_cv, &e->sync_mu);
    if (e->sync_free > 0) {
        c = e->sync_pool[--e->sync_free];
    } else if ((c = ddb_client_new(e->cfg, NULL)) != NULL) {
        e->sync_made++;
    }
    pthread_mutex_unlock(&e->sync_mu);
    return c;
}

static void sync_put(lk_engine *e, ddb_client *c)
{
    pthread_mutex_lock(&e->sync_mu);
    e->sync_pool[e->sync_free++] = c;
    pthread_cond_signal(&e->sync_cv);
    pthread_mutex_unlock(&e->sync_mu);
}

static lk_code get_item(lk_engine *e, const char *name, json_t **item,
                        lk_error *err)
{
    ddb_error d = {0};
    json_t *key = json_pack("{s:o}", "lockKey", ddb_s(name));
    const char *table = lk_core_options(e->core)->table;
    ddb_client *c = key ? sync_get(e) : NULL;
    ddb_code code = c ? ddb_get_item(c, table, key, item, 0, &d) : DDB_ERR_NOMEM;
    if (c)
        sync_put(e, c);
    json_decref(key);
    lk_code rc = code == DDB_OK ? LK_OK : ddb_fail(err, name, &d);
    ddb_error_clear(&d);
    return rc;
}

lk_code lk_observe(lk_engine *e, const char *name, lk_item *out, bool *found,
                   lk_error *err)
{
    json_t *item = NULL;
    memset(out, 0, sizeof(*out));
    *found = false;
    if (!lk_name_valid(name)) {
        eset(err, LK_ERR_INVALID, "invalid lock name: a name is 1 to 1024 "
             "bytes of valid UTF-8");
        return LK_ERR_INVALID;
    }
    lk_code rc = get_item(e, name, &item, err);
    if (rc != LK_OK || !item)
        return rc;
    out->name = dup_or_null(name);
    out->version = dup_or_null(ddb_item_s(item, "versionNumber"));
    out->host = dup_or_null(ddb_item_s(item, "hostIdentifier"));
    out->note = dup_or_null(ddb_item_s(item, "note"));
    if (!ddb_item_n(item, "leaseDuration", &out->lease_s))
        out->lease_s = 0;
    json_decref(item);
    if (!out->name || !out->version || !out->host) {
        lk_item_clear(out);
        eset(err, LK_ERR_INVALID, "lock '%.80s': the item in the table lacks "
             "versionNumber or hostIdentifier: not a lynk lock", name);
        return LK_ERR_INVALID;
    }
    *found = true;
    return LK_OK;
}

lk_code lk_break(lk_engine *e, const char *name, lk_error *err)
{
    json_t *item = NULL;
    if (!lk_name_valid(name)) {
        eset(err, LK_ERR_INVALID, "invalid lock name: a name is 1 to 1024 "
             "bytes of valid UTF-8");
        return LK_ERR_INVALID;
    }
    lk_code rc = get_item(e, name, &item, err);
    if (rc != LK_OK || !item)
        return rc; /* free already */
    const char *v = ddb_item_s(item, "versionNumber");
    json_t *key = json_pack("{s:o}", "lockKey", ddb_s(name));
    json_t *vals = v ? json_pack("{s:o}", ":v", ddb_s(v)) : NULL;
    ddb_cond cond = {.expr = v ? "versionNumber = :v"
                               : "attribute_not_exists(versionNumber)",
                     .values = vals};
    ddb_error d = {0};
    ddb_client *c = key ? sync_get(e) : NULL;
    ddb_code code = c ? ddb_delete_item(c, lk_core_options(e->core)->table, key,
                                        &cond, 0, &d)
                      : DDB_ERR_NOMEM;
    if (c)
        sync_put(e, c);
    json_decref(key);
    json_decref(vals);
    json_decref(item);
    if (code == DDB_ERR_CONDITION) {
        ddb_error_clear(&d);
        eset(err, LK_ERR_BUSY, "lock '%.80s' changed hands while breaking it; "
             "nothing deleted: look again and retry", name);
        return LK_ERR_BUSY;
    }
    rc = code == DDB_OK ? LK_OK : ddb_fail(err, name, &d);
    ddb_error_clear(&d);
    return rc;
}

void lk_engine_stats(lk_engine *e, lk_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&e->mu);
    if (e->core)
        lk_core_stats(e->core, out);
    pthread_mutex_unlock(&e->mu);
}
