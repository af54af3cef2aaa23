/* tests/unit/test_lock_core.c — the lock protocol core (src/lock/core.c)
 * driven directly with a fake clock and a fake transport: the exact
 * DynamoDB requests (SPEC.md §1), the waiters' poll schedule and take-over
 * rule, FIFO hand-over, refreshes and the holder's safety deadline,
 * ambiguous writes, releases, expiring locks, and 100,000 held locks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/core.h"
#include "util/log.h"

#define LEASE_MS 20000
#define HB_MS 5000
#define MARGIN_MS 2000

typedef struct result {
    int called;
    int seq;
    lk_lock *lock;
    lk_waiter *w;
    lk_error err;
} result;

typedef struct fx {
    int64_t now;
    lk_op **q;
    size_t qn, qcap;
    lk_core *c;
    int seq;
    int lost;
    lk_lock *lost_lock;
    bool tearing;
} fx;

static fx F;

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return F.now;
}

static void fake_send(void *ctx, lk_op *op)
{
    (void)ctx;
    if (F.qn == F.qcap) {
        F.qcap = F.qcap ? F.qcap * 2 : 64;
        F.q = realloc(F.q, F.qcap * sizeof(*F.q));
        assert_non_null(F.q);
    }
    F.q[F.qn++] = op;
}

static void on_lost(lk_lock *l, void *arg)
{
    (void)arg;
    F.lost++;
    F.lost_lock = l;
}

static void acq_cb(lk_lock *lock, const lk_error *err, void *arg)
{
    result *r = arg;
    if (F.tearing) {
        lk_lock_drop(lock); /* the test's results are gone: only clean up */
        return;
    }
    r->called++;
    r->seq = ++F.seq;
    r->lock = lock;
    if (err)
        r->err = *err;
    else
        memset(&r->err, 0, sizeof(r->err));
}

static void done_cb(lk_lock *l, const lk_error *err, void *arg)
{
    result *r = arg;
    (void)l;
    if (F.tearing)
        return;
    r->called++;
    r->seq = ++F.seq;
    r->err = *err;
}

static lk_core *core_with(int64_t jitter)
{
    lk_core_config cfg = {
        .opts = {.table = "locks", .host = "host-a", .lease_s = 20},
        .now_ms = fake_now, .send = fake_send, .jitter_max_ms = jitter};
    lk_error err;
    lk_core *c = lk_core_new(&cfg, &err);
    assert_non_null(c);
    return c;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.now = 1000000;
    F.c = core_with(0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    F.tearing = true;
    for (size_t i = 0; i < F.qn; i++)
        lk_core_discard(F.c, F.q[i]);
    lk_core_free(F.c);
    free(F.q);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static lk_op *take(lk_op_kind kind)
{
    assert_true(F.qn > 0);
    lk_op *op = F.q[0];
    memmove(F.q, F.q + 1, (F.qn - 1) * sizeof(*F.q));
    F.qn--;
    if (op->kind != kind)
        fail_msg("expected a %s op, got %s", lk_op_kind_name(kind),
                 lk_op_kind_name(op->kind));
    return op;
}

static json_t *item(const char *name, const char *version, int lease,
                    const char *host)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "lockKey", ddb_s(name),
                     "leaseDuration", ddb_n(lease), "versionNumber",
                     ddb_s(version), "hostIdentifier", ddb_s(host));
}

static void answer_ok(lk_op *op, json_t *resp)
{
    lk_core_complete(F.c, op, DDB_OK, resp, NULL);
    json_decref(resp);
}

static void answer_get(lk_op *op, json_t *it)
{
    json_t *resp = it ? json_pack("{s:o}", "Item", it) : json_object();
    answer_ok(op, resp);
}

static void answer_err(lk_op *op, ddb_code code, bool ambiguous, json_t *old)
{
    ddb_error e = {.code = code, .ambiguous = ambiguous, .item = old};
    snprintf(e.msg, sizeof(e.msg), "PutItem: %s (test)", ddb_code_name(code));
    lk_core_complete(F.c, op, code, NULL, &e);
    ddb_error_clear(&e);
}

/* Move the fake clock to t, firing every timer due on the way. */
static void run_until(int64_t t)
{
    for (;;) {
        int64_t d = lk_core_next_deadline(F.c);
        if (d > t)
            break;
        if (d > F.now)
            F.now = d;
        lk_core_run_due(F.c);
    }
    F.now = t;
    lk_core_run_due(F.c);
}

/* Advance to the next timer and fire it. */
static void step(void)
{
    int64_t d = lk_core_next_deadline(F.c);
    assert_true(d != INT64_MAX);
    if (d > F.now)
        F.now = d;
    lk_core_run_due(F.c);
}

static const char *S(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(json_object_get(o, k), "S"));
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static lk_waiter *start(const char *name, lk_acq_mode mode, int64_t deadline,
                        result *r)
{
    lk_acquire_args a = {.name = name, .mode = mode, .deadline_ms = deadline,
                         .pid = 42, .on_lost = on_lost};
    lk_waiter *w = lk_waiter_new(&a, acq_cb, r);
    assert_non_null(w);
    lk_core_acquire(F.c, w);
    return w;
}

/* Acquire a free lock: returns it (a user reference). */
static lk_lock *acquire_free(const char *name)
{
    result r = {0};
    start(name, LK_ACQ_TRY, 0, &r);
    answer_ok(take(LK_OP_PUT_NEW), NULL);
    assert_int_equal(r.called, 1);
    assert_non_null(r.lock);
    return r.lock;
}

/* ---- acquiring ------------------------------------------------------------ */

static void free_lock_acquired_with_exact_put(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_TRY, 0, &r);
    assert_int_equal(r.called, 0);
    assert_int_equal(F.qn, 1);
    lk_op *op = F.q[0];
    assert_int_equal(op->kind, LK_OP_PUT_NEW);
    assert_string_equal(op->ddb_op, "PutItem");
    json_t *b = op->body, *it = json_object_get(b, "Item");
    assert_string_equal(str(b, "TableName"), "locks");
    assert_string_equal(str(b, "ConditionExpression"),
                        "attribute_not_exists(lockKey)");
    assert_string_equal(str(b, "ReturnValuesOnConditionCheckFailure"), "ALL_OLD");
    assert_null(json_object_get(b, "ExpressionAttributeValues"));
    assert_int_equal(json_object_size(it), 4);
    assert_string_equal(S(it, "lockKey"), "deploy");
    assert_string_equal(str(json_object_get(it, "leaseDuration"), "N"), "20");
    assert_string_equal(S(it, "hostIdentifier"), "host-a");
    const char *v = S(it, "versionNumber");
    assert_non_null(v);
    assert_int_equal(strlen(v), 36);
    assert_int_equal(v[14], '4');
    char version[40];
    snprintf(version, sizeof(version), "%s", v);

    answer_ok(take(LK_OP_PUT_NEW), NULL);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_OK);
    assert_non_null(r.lock);
    assert_int_equal(r.lock->state, LK_STATE_HELD);
    assert_string_equal(r.lock->version, version);
    assert_int_equal(r.lock->pid, 42);
    assert_int_equal(r.lock->write_ms, F.now);
    lk_stats st;
    lk_core_stats(F.c, &st);
    assert_int_equal(st.held, 1);
    assert_int_equal(st.waiting, 0);
    lk_lock_drop(r.lock);
}

static void invalid_name_refused(void **state)
{
    (void)state;
    result r = {0};
    start("", LK_ACQ_TRY, 0, &r);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_ERR_INVALID);
    start("bad\xff", LK_ACQ_WAIT, 0, &r);
    assert_int_equal(r.called, 2);
    assert_int_equal(r.err.code, LK_ERR_INVALID);
    assert_int_equal(F.qn, 0);
}

static void held_lock_is_busy_for_try(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_TRY, 0, &r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false,
               item("deploy", "other-v1", 20, "web-9"));
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_ERR_BUSY);
    assert_null(r.lock);
    assert_non_null(strstr(r.err.msg, "web-9"));
    assert_int_equal(F.qn, 0);
    assert_true(lk_core_idle(F.c));
    assert_int_equal(lk_core_next_deadline(F.c), INT64_MAX);
}

static void try_without_item_reads_back(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_TRY, 0, &r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false, NULL);
    lk_op *g = take(LK_OP_GET);
    assert_true(json_is_true(json_object_get(g->body, "ConsistentRead")));
    assert_string_equal(S(json_object_get(g->body, "Key"), "lockKey"), "deploy");
    answer_get(g, item("deploy", "other-v1", 20, "web-9"));
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_ERR_BUSY);
}

/* A WAIT acquire that found the lock held by "other-v1"; returns when the
 * poller's first timer is armed. */
static void wait_on_held(result *r, const char *version)
{
    r->w = start("deploy", LK_ACQ_WAIT, 0, r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false,
               item("deploy", version, 20, "web-9"));
    assert_int_equal(r->called, 0);
}

static void poll_schedule_grows_and_caps(void **state)
{
    (void)state;
    result r = {0};
    wait_on_held(&r, "v1");
    int64_t t0 = F.now;
    static const int64_t gaps[] = {10, 15, 22, 33, 40, 40, 40};
    int64_t t = t0;
    for (size_t i = 0; i < sizeof(gaps) / sizeof(gaps[0]); i++) {
        t += gaps[i];
        assert_int_equal(lk_core_next_deadline(F.c), t);
        step();
        lk_op *g = take(LK_OP_GET);
        assert_int_equal(g->sent_ms, t);
        answer_get(g, item("deploy", "v1", 20, "web-9"));
    }
    /* a changed version resets the interval to the minimum */
    t += 40;
    step();
    answer_get(take(LK_OP_GET), item("deploy", "v2", 20, "web-9"));
    assert_int_equal(lk_core_next_deadline(F.c), t + 10);
    assert_int_equal(r.called, 0);
    lk_stats st;
    lk_core_stats(F.c, &st);
    assert_int_equal(st.waiting, 1);
    lk_core_cancel(F.c, r.w);
    assert_int_equal(r.err.code, LK_ERR_CANCELLED);
}

/* Poll, answering "held by version", until an op other than GET appears. */
static lk_op *poll_until_put(const char *version, int64_t *last_get_sent)
{
    for (int i = 0; i < 100000; i++) {
        if (F.qn && F.q[0]->kind != LK_OP_GET)
            return take(F.q[0]->kind);
        step();
        if (F.q[0]->kind != LK_OP_GET)
            continue;
        lk_op *op = take(LK_OP_GET);
        *last_get_sent = op->sent_ms;
        answer_get(op, item("deploy", version, 20, "web-9"));
    }
    fail_msg("no put after 100000 polls");
    return NULL;
}

static void takeover_after_full_unchanged_lease(void **state)
{
    (void)state;
    result r = {0};
    wait_on_held(&r, "v1");
    /* v1 for 7 s, then v2: the count restarts at v2's first sighting */
    int64_t last = 0;
    while (F.now < 1000000 + 7000) {
        step();
        lk_op *g = take(LK_OP_GET);
        answer_get(g, item("deploy", "v1", 20, "web-9"));
    }
    step();
    answer_get(take(LK_OP_GET), item("deploy", "v2", 20, "web-9"));
    int64_t seen_v2 = F.now;
    lk_op *put = poll_until_put("v2", &last);
    assert_int_equal(put->kind, LK_OP_PUT_TAKEOVER);
    /* not one ms early: the poll that led to it went out at the full lease */
    assert_int_equal(last, seen_v2 + LEASE_MS);
    assert_true(put->sent_ms >= seen_v2 + LEASE_MS);
    json_t *b = put->body;
    assert_string_equal(str(b, "ConditionExpression"),
                        "attribute_not_exists(lockKey) OR versionNumber = :observed");
    assert_string_equal(S(json_object_get(b, "ExpressionAttributeValues"),
                          ":observed"), "v2");
    assert_string_equal(S(json_object_get(b, "Item"), "hostIdentifier"), "host-a");
    char v[40];
    snprintf(v, sizeof(v), "%s", put->version);
    answer_ok(put, NULL);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_OK);
    assert_string_equal(r.lock->version, v);
    lk_lock_drop(r.lock);
}

static void item_lease_decides_takeover(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_WAIT, 0, &r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false,
               item("deploy", "v1", 3, "web-9"));
    int64_t seen = F.now, last = 0;
    lk_op *put = poll_until_put("v1", &last);
    assert_int_equal(put->kind, LK_OP_PUT_TAKEOVER);
    assert_int_equal(last, seen + 3000);
    answer_ok(put, NULL);
    assert_int_equal(r.err.code, LK_OK);
    lk_lock_drop(r.lock);
}

static void vanished_item_means_put_new_at_once(void **state)
{
    (void)state;
    result r = {0};
    wait_on_held(&r, "v1");
    step();
    int64_t t = F.now;
    answer_get(take(LK_OP_GET), NULL);
    lk_op *put = take(LK_OP_PUT_NEW);
    assert_int_equal(put->sent_ms, t);
    answer_ok(put, NULL);
    assert_int_equal(r.err.code, LK_OK);
    lk_lock_drop(r.lock);
}

static void waiters_served_in_arrival_order(void **state)
{
    (void)state;
    result r1 = {0}, r2 = {0}, rel = {0};
    start("deploy", LK_ACQ_WAIT, 0, &r1);
    start("deploy", LK_ACQ_WAIT, 0, &r2);
    assert_int_equal(F.qn, 1); /* one poller for the name */
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false,
               item("deploy", "v1", 20, "web-9"));
    step();
    answer_get(take(LK_OP_GET), NULL);
    answer_ok(take(LK_OP_PUT_NEW), NULL);
    assert_int_equal(r1.called, 1);
    assert_int_equal(r1.err.code, LK_OK);
    assert_int_equal(r2.called, 0);
    /* a TRY now meets the queue: busy at once */
    result rt = {0};
    start("deploy", LK_ACQ_TRY, 0, &rt);
    assert_int_equal(rt.err.code, LK_ERR_BUSY);
    /* the holder releases here: the next waiter puts at once */
    lk_core_release(F.c, r1.lock, done_cb, &rel);
    lk_op *del = take(LK_OP_DELETE);
    int64_t t = F.now;
    answer_ok(del, NULL);
    assert_int_equal(rel.err.code, LK_OK);
    assert_int_equal(r1.lock->state, LK_STATE_RELEASED);
    lk_op *put = take(LK_OP_PUT_NEW);
    assert_int_equal(put->sent_ms, t);
    answer_ok(put, NULL);
    assert_int_equal(r2.called, 1);
    assert_int_equal(r2.err.code, LK_OK);
    assert_true(r2.seq > r1.seq);
    lk_lock_drop(r1.lock);
    lk_lock_drop(r2.lock);
}

static void cancelled_head_hands_over_to_next(void **state)
{
    (void)state;
    result r1 = {0}, r2 = {0};
    lk_waiter *w1 = start("deploy", LK_ACQ_WAIT, 0, &r1);
    start("deploy", LK_ACQ_WAIT, 0, &r2);
    lk_op *put = take(LK_OP_PUT_NEW);
    lk_core_cancel(F.c, w1);
    assert_int_equal(r1.called, 1);
    assert_int_equal(r1.err.code, LK_ERR_CANCELLED);
    answer_ok(put, NULL);
    assert_int_equal(r2.called, 1);
    assert_int_equal(r2.err.code, LK_OK);
    assert_int_equal(r1.called, 1);
    lk_lock_drop(r2.lock);
}

static void won_lock_nobody_wants_is_released(void **state)
{
    (void)state;
    result r = {0};
    lk_waiter *w = start("deploy", LK_ACQ_WAIT, 0, &r);
    lk_op *put = take(LK_OP_PUT_NEW);
    char v[40];
    snprintf(v, sizeof(v), "%s", put->version);
    lk_core_cancel(F.c, w);
    assert_int_equal(r.err.code, LK_ERR_CANCELLED);
    answer_ok(put, NULL);
    lk_op *del = take(LK_OP_DELETE);
    assert_string_equal(S(json_object_get(del->body, "ExpressionAttributeValues"),
                          ":mine"), v);
    answer_ok(del, NULL);
    assert_true(lk_core_idle(F.c));
    assert_int_equal(r.called, 1);
}

static void wait_deadline_times_out(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_WAIT, F.now + 500, &r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_CONDITION, false,
               item("deploy", "v1", 20, "web-9"));
    while (r.called == 0) {
        step();
        if (F.qn)
            answer_get(take(LK_OP_GET), item("deploy", "v1", 20, "web-9"));
    }
    assert_int_equal(r.err.code, LK_ERR_TIMEOUT);
    assert_int_equal(F.now, 1000000 + 500);
    assert_true(lk_core_idle(F.c));
}

/* ---- holding ---------------------------------------------------------------- */

static void refresh_on_schedule_with_exact_update(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    int64_t t0 = F.now;
    char v0[40];
    snprintf(v0, sizeof(v0), "%s", l->version);
    assert_int_equal(lk_core_next_deadline(F.c), t0 + HB_MS);
    run_until(t0 + HB_MS - 1);
    assert_int_equal(F.qn, 0);
    run_until(t0 + HB_MS);
    lk_op *op = take(LK_OP_REFRESH);
    json_t *b = op->body, *vals = json_object_get(b, "ExpressionAttributeValues");
    assert_string_equal(op->ddb_op, "UpdateItem");
    assert_string_equal(S(json_object_get(b, "Key"), "lockKey"), "deploy");
    assert_int_equal(json_object_size(json_object_get(b, "Key")), 1);
    assert_string_equal(str(b, "UpdateExpression"),
                        "SET versionNumber = :new, hostIdentifier = :host");
    assert_string_equal(str(b, "ConditionExpression"), "versionNumber = :mine");
    assert_string_equal(str(b, "ReturnValuesOnConditionCheckFailure"), "ALL_OLD");
    assert_string_equal(S(vals, ":mine"), v0);
    assert_string_equal(S(vals, ":host"), "host-a");
    assert_string_equal(S(vals, ":new"), op->version);
    assert_string_not_equal(op->version, v0);
    char v1[40];
    snprintf(v1, sizeof(v1), "%s", op->version);
    F.now += 30;
    answer_ok(op, NULL);
    assert_string_equal(l->version, v1);
    assert_int_equal(l->write_ms, t0 + HB_MS);
    assert_int_equal(lk_core_next_deadline(F.c), t0 + 2 * HB_MS);
    lk_stats st;
    lk_core_stats(F.c, &st);
    assert_int_equal(st.refreshes, 1);
    assert_int_equal(st.refresh_late, 0);
    lk_lock_drop(l);
}

static void refresh_condition_failure_is_lost(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    answer_err(take(LK_OP_REFRESH), DDB_ERR_CONDITION, false,
               item("deploy", "thief", 20, "web-9"));
    assert_int_equal(l->state, LK_STATE_LOST);
    assert_int_equal(F.lost, 1);
    assert_ptr_equal(F.lost_lock, l);
    lk_stats st;
    lk_core_stats(F.c, &st);
    assert_int_equal(st.lost, 1);
    assert_int_equal(st.held, 0);
    /* never refreshed again, never re-acquired */
    run_until(F.now + 3 * LEASE_MS);
    assert_int_equal(F.qn, 0);
    assert_int_equal(F.lost, 1);
    result r = {0};
    lk_core_touch(F.c, l, done_cb, &r);
    assert_int_equal(r.err.code, LK_ERR_LOST);
    lk_lock_drop(l);
}

static void refresh_failure_without_item_reads_back(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    answer_err(take(LK_OP_REFRESH), DDB_ERR_CONDITION, false, NULL);
    assert_int_equal(l->state, LK_STATE_HELD);
    answer_get(take(LK_OP_GET), item("deploy", "thief", 20, "web-9"));
    assert_int_equal(l->state, LK_STATE_LOST);
    assert_int_equal(F.lost, 1);
    lk_lock_drop(l);
}

static void throttled_refresh_retried_then_succeeds(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    answer_err(take(LK_OP_REFRESH), DDB_ERR_THROTTLED, false, NULL);
    assert_int_equal(F.qn, 0);  /* not at once: backoff */
    step();
    lk_op *op = take(LK_OP_REFRESH);
    char v[40];
    snprintf(v, sizeof(v), "%s", op->version);
    int64_t sent = op->sent_ms;
    answer_ok(op, NULL);
    assert_int_equal(l->state, LK_STATE_HELD);
    assert_string_equal(l->version, v);
    assert_int_equal(l->write_ms, sent);
    assert_int_equal(F.lost, 0);
    lk_lock_drop(l);
}

static void lost_exactly_at_safety_deadline(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    int64_t t0 = F.now, dl = t0 + LEASE_MS - MARGIN_MS;
    int refreshes = 0;
    while (F.now < dl - 1) {
        int64_t d = lk_core_next_deadline(F.c);
        if (d > dl - 1)
            break;
        step();
        while (F.qn) {
            lk_op *op = F.q[0];
            refreshes += op->kind == LK_OP_REFRESH;
            answer_err(take(op->kind), DDB_ERR_THROTTLED, false, NULL);
        }
    }
    run_until(dl - 1);
    while (F.qn)
        answer_err(take(F.q[0]->kind), DDB_ERR_THROTTLED, false, NULL);
    assert_true(refreshes > 3);
    assert_int_equal(l->state, LK_STATE_HELD);
    assert_int_equal(F.lost, 0);
    run_until(dl);
    assert_int_equal(l->state, LK_STATE_LOST);
    assert_int_equal(F.lost, 1);
    lk_lock_drop(l);
}

static void lost_while_request_hangs(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    int64_t t0 = F.now;
    run_until(t0 + HB_MS);
    lk_op *op = take(LK_OP_REFRESH);   /* never answered in time */
    run_until(t0 + LEASE_MS - MARGIN_MS - 1);
    assert_int_equal(l->state, LK_STATE_HELD);
    run_until(t0 + LEASE_MS - MARGIN_MS);
    assert_int_equal(l->state, LK_STATE_LOST);
    answer_ok(op, NULL);               /* a late success changes nothing */
    assert_int_equal(l->state, LK_STATE_LOST);
    assert_int_equal(F.lost, 1);
    lk_lock_drop(l);
}

/* ---- ambiguous writes ---------------------------------------------------------- */

static void ambiguous_put_that_happened_is_held(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_TRY, 0, &r);
    lk_op *put = take(LK_OP_PUT_NEW);
    char v[40];
    snprintf(v, sizeof(v), "%s", put->version);
    int64_t sent = put->sent_ms;
    F.now += 5000;
    answer_err(put, DDB_ERR_NETWORK, true, NULL);
    assert_int_equal(r.called, 0);
    answer_get(take(LK_OP_GET), item("deploy", v, 20, "host-a"));
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_OK);
    assert_string_equal(r.lock->version, v);
    assert_int_equal(r.lock->write_ms, sent);
    lk_lock_drop(r.lock);
}

static void retry_colliding_with_own_first_put_is_held(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_WAIT, 0, &r);
    lk_op *p1 = take(LK_OP_PUT_NEW);
    char v1[40];
    snprintf(v1, sizeof(v1), "%s", p1->version);
    int64_t sent1 = p1->sent_ms;
    answer_err(p1, DDB_ERR_NETWORK, true, NULL);
    answer_get(take(LK_OP_GET), NULL);          /* not (yet) there */
    lk_op *p2 = take(LK_OP_PUT_NEW);             /* retried */
    assert_string_not_equal(p2->version, v1);
    /* ... and the first attempt landed after all */
    answer_err(p2, DDB_ERR_CONDITION, false, item("deploy", v1, 20, "host-a"));
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_OK);
    assert_string_equal(r.lock->version, v1);
    assert_int_equal(r.lock->write_ms, sent1);
    lk_lock_drop(r.lock);
}

static void ambiguous_try_put_held_by_other_is_busy(void **state)
{
    (void)state;
    result r = {0};
    start("deploy", LK_ACQ_TRY, 0, &r);
    answer_err(take(LK_OP_PUT_NEW), DDB_ERR_SERVER, true, NULL);
    answer_get(take(LK_OP_GET), item("deploy", "other", 20, "web-9"));
    assert_int_equal(r.err.code, LK_ERR_BUSY);
}

static void ambiguous_refresh_that_happened_keeps_lock(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    lk_op *op = take(LK_OP_REFRESH);
    char v[40];
    snprintf(v, sizeof(v), "%s", op->version);
    int64_t sent = op->sent_ms;
    answer_err(op, DDB_ERR_TIMEOUT, true, NULL);
    lk_op *g = take(LK_OP_GET);
    answer_get(g, item("deploy", v, 20, "host-a"));
    assert_int_equal(l->state, LK_STATE_HELD);
    assert_string_equal(l->version, v);
    assert_int_equal(l->write_ms, sent);
    assert_int_equal(F.lost, 0);
    assert_int_equal(lk_core_next_deadline(F.c), sent + HB_MS);
    lk_lock_drop(l);
}

static void ambiguous_refresh_retry_collision_keeps_lock(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    lk_op *op = take(LK_OP_REFRESH);
    char v1[40];
    snprintf(v1, sizeof(v1), "%s", op->version);
    answer_err(op, DDB_ERR_NETWORK, true, NULL);
    answer_get(take(LK_OP_GET), item("deploy", l->version, 20, "host-a"));
    step();                                   /* backoff, then again */
    lk_op *op2 = take(LK_OP_REFRESH);
    /* the first refresh landed late: the retry's condition fails on it */
    answer_err(op2, DDB_ERR_CONDITION, false, item("deploy", v1, 20, "host-a"));
    assert_int_equal(l->state, LK_STATE_HELD);
    assert_string_equal(l->version, v1);
    assert_int_equal(F.lost, 0);
    lk_lock_drop(l);
}

/* ---- release, notes, expiry ------------------------------------------------------ */

static void release_is_conditional_delete(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    result r = {0};
    lk_core_release(F.c, l, done_cb, &r);
    lk_op *del = take(LK_OP_DELETE);
    json_t *b = del->body;
    assert_string_equal(del->ddb_op, "DeleteItem");
    assert_string_equal(S(json_object_get(b, "Key"), "lockKey"), "deploy");
    assert_string_equal(str(b, "ConditionExpression"), "versionNumber = :mine");
    assert_string_equal(S(json_object_get(b, "ExpressionAttributeValues"), ":mine"),
                        l->version);
    assert_int_equal(r.called, 0);
    answer_ok(del, NULL);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.err.code, LK_OK);
    assert_int_equal(l->state, LK_STATE_RELEASED);
    assert_int_equal(lk_core_next_deadline(F.c), INT64_MAX);
    result r2 = {0};
    lk_core_release(F.c, l, done_cb, &r2);
    assert_int_equal(r2.err.code, LK_ERR_RELEASED);
    assert_true(lk_core_idle(F.c));
    lk_lock_drop(l);
}

static void release_finding_item_gone_is_ok(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    result r = {0};
    lk_core_release(F.c, l, done_cb, &r);
    answer_err(take(LK_OP_DELETE), DDB_ERR_CONDITION, false, NULL);
    answer_get(take(LK_OP_GET), NULL);
    assert_int_equal(r.err.code, LK_OK);
    assert_int_equal(l->state, LK_STATE_RELEASED);
    lk_lock_drop(l);

    l = acquire_free("job");
    memset(&r, 0, sizeof(r));
    lk_core_release(F.c, l, done_cb, &r);
    answer_err(take(LK_OP_DELETE), DDB_ERR_NETWORK, true, NULL);
    answer_get(take(LK_OP_GET), NULL);       /* the delete happened */
    assert_int_equal(r.err.code, LK_OK);
    assert_int_equal(l->state, LK_STATE_RELEASED);
    assert_int_equal(F.lost, 0);
    lk_lock_drop(l);
}

static void release_during_refresh_waits_for_it(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    run_until(F.now + HB_MS);
    lk_op *op = take(LK_OP_REFRESH);
    result r = {0};
    lk_core_release(F.c, l, done_cb, &r);
    assert_int_equal(F.qn, 0);               /* one write at a time */
    char v[40];
    snprintf(v, sizeof(v), "%s", op->version);
    answer_ok(op, NULL);
    lk_op *del = take(LK_OP_DELETE);
    assert_string_equal(S(json_object_get(del->body, "ExpressionAttributeValues"),
                          ":mine"), v);
    answer_ok(del, NULL);
    assert_int_equal(r.err.code, LK_OK);
    lk_lock_drop(l);
}

static void note_is_written_and_removed(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    result r = {0};
    lk_core_set_note(F.c, l, "deploying 1.4.2", done_cb, &r);
    lk_op *op = take(LK_OP_NOTE);
    json_t *b = op->body, *vals = json_object_get(b, "ExpressionAttributeValues");
    assert_string_equal(str(b, "UpdateExpression"),
                        "SET versionNumber = :new, hostIdentifier = :host, note = :note");
    assert_string_equal(str(b, "ConditionExpression"), "versionNumber = :mine");
    assert_string_equal(S(vals, ":note"), "deploying 1.4.2");
    answer_ok(op, NULL);
    assert_int_equal(r.err.code, LK_OK);
    assert_string_equal(l->note, "deploying 1.4.2");
    lk_core_set_note(F.c, l, "", done_cb, &r);
    op = take(LK_OP_NOTE);
    assert_string_equal(str(op->body, "UpdateExpression"),
                        "SET versionNumber = :new, hostIdentifier = :host REMOVE note");
    assert_null(json_object_get(json_object_get(op->body,
                                "ExpressionAttributeValues"), ":note"));
    answer_ok(op, NULL);
    assert_null(l->note);
    char big[LK_NOTE_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    lk_core_set_note(F.c, l, big, done_cb, &r);
    assert_int_equal(r.err.code, LK_ERR_INVALID);
    assert_int_equal(F.qn, 0);
    lk_lock_drop(l);
}

static void touch_refreshes_now(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    F.now += 1000;
    result r = {0};
    lk_core_touch(F.c, l, done_cb, &r);
    lk_op *op = take(LK_OP_REFRESH);
    assert_int_equal(op->sent_ms, F.now);
    answer_ok(op, NULL);
    assert_int_equal(r.err.code, LK_OK);
    assert_int_equal(l->write_ms, F.now);
    assert_int_equal(lk_core_next_deadline(F.c), F.now + HB_MS);
    lk_lock_drop(l);
}

static void expiring_lock_is_not_refreshed(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    int64_t t0 = F.now;
    lk_core_stop_refresh(F.c, l);
    assert_int_equal(l->state, LK_STATE_EXPIRING);
    run_until(t0 + LEASE_MS - 1);
    assert_int_equal(F.qn, 0);
    assert_int_equal(l->state, LK_STATE_EXPIRING);
    assert_true(l->tracked);
    run_until(t0 + LEASE_MS);
    assert_false(l->tracked);                  /* forgotten */
    assert_int_equal(lk_core_next_deadline(F.c), INT64_MAX);
    assert_int_equal(F.lost, 0);
    result r = {0};
    lk_core_touch(F.c, l, done_cb, &r);
    assert_int_equal(r.err.code, LK_ERR_LOST);
    /* a release still removes the item if it is ours; any answer is fine */
    lk_core_release(F.c, l, done_cb, &r);
    answer_err(take(LK_OP_DELETE), DDB_ERR_CONDITION, false,
               item("deploy", "other", 20, "web-9"));
    assert_int_equal(r.err.code, LK_OK);
    assert_int_equal(l->state, LK_STATE_RELEASED);
    lk_lock_drop(l);
}

static void keep_ignores_stop_refresh(void **state)
{
    (void)state;
    result r = {0};
    lk_acquire_args a = {.name = "k", .mode = LK_ACQ_TRY, .keep = true};
    lk_core_acquire(F.c, lk_waiter_new(&a, acq_cb, &r));
    answer_ok(take(LK_OP_PUT_NEW), NULL);
    lk_core_stop_refresh(F.c, r.lock);
    assert_int_equal(r.lock->state, LK_STATE_HELD);
    run_until(F.now + HB_MS);
    answer_ok(take(LK_OP_REFRESH), NULL);
    lk_lock_drop(r.lock);
}

static void shutdown_releases_and_fails_waiters(void **state)
{
    (void)state;
    lk_lock *l = acquire_free("deploy");
    result w = {0};
    start("other", LK_ACQ_WAIT, 0, &w);
    lk_op *put = take(LK_OP_PUT_NEW);
    lk_core_shutdown(F.c);
    assert_int_equal(w.err.code, LK_ERR_SHUTDOWN);
    answer_err(put, DDB_ERR_CONDITION, false, item("other", "x", 20, "web-9"));
    answer_ok(take(LK_OP_DELETE), NULL);
    assert_int_equal(l->state, LK_STATE_RELEASED);
    assert_true(lk_core_idle(F.c));
    lk_lock_drop(l);
}

/* ---- scale ------------------------------------------------------------------------ */

#define MANY 100000

static void many_locks_small_and_on_time(void **state)
{
    (void)state;
    lk_core_free(F.c);
    F.c = core_with(-1);                       /* default jitter */
    lk_lock **locks = calloc(MANY, sizeof(*locks));
    result *rs = calloc(MANY, sizeof(*rs));
    char name[32];
    assert_non_null(locks);
    assert_non_null(rs);
    F.q = realloc(F.q, (MANY + 16) * sizeof(*F.q));
    F.qcap = MANY + 16;
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "lock-%06d", i);
        start(name, LK_ACQ_TRY, 0, &rs[i]);
    }
    assert_int_equal(F.qn, MANY);
    for (size_t i = 0; i < F.qn; i++)
        lk_core_complete(F.c, F.q[i], DDB_OK, NULL, NULL);
    F.qn = 0;
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(rs[i].err.code, LK_OK);
        locks[i] = rs[i].lock;
    }
    struct mallinfo2 m1 = mallinfo2();
    size_t per = (m1.uordblks - m0.uordblks) / MANY;
    print_message("memory per held lock: %zu bytes (struct %zu)\n", per,
                  sizeof(lk_lock));
#if defined(__SANITIZE_ADDRESS__)
    print_message("(AddressSanitizer: malloc statistics not comparable; "
                  "memory bound checked in the plain build)\n");
#else
    assert_true(m1.uordblks > m0.uordblks);
    assert_true(per < 1024);
#endif
    /* run two and a half heartbeats answering every request at once */
    int64_t t0 = F.now, end = t0 + 2 * HB_MS + HB_MS / 2;
    size_t distinct = 0;
    int64_t last_sent = -1;
    while (lk_core_next_deadline(F.c) <= end) {
        step();
        for (size_t i = 0; i < F.qn; i++) {
            lk_op *op = F.q[i];
            assert_int_equal(op->kind, LK_OP_REFRESH);
            if (op->sent_ms != last_sent)
                distinct++, last_sent = op->sent_ms;
            lk_core_complete(F.c, op, DDB_OK, NULL, NULL);
        }
        F.qn = 0;
    }
    lk_stats st;
    lk_core_stats(F.c, &st);
    assert_int_equal(st.held, MANY);
    assert_int_equal(st.lost, 0);
    assert_int_equal(st.refreshes, 2 * MANY);
    assert_int_equal(st.refresh_late, 0);
    assert_true(st.worst_slack_ms >= LEASE_MS - MARGIN_MS - HB_MS);
    /* the first refreshes are spread, not one burst */
    assert_true(distinct > 500);
    for (int i = 0; i < MANY; i++)
        lk_lock_drop(locks[i]);
    free(locks);
    free(rs);
}

int main(void)
{
    lk_log_init("test_lock_core", LK_LOG_ERROR, false);
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(free_lock_acquired_with_exact_put),
        T(invalid_name_refused),
        T(held_lock_is_busy_for_try),
        T(try_without_item_reads_back),
        T(poll_schedule_grows_and_caps),
        T(takeover_after_full_unchanged_lease),
        T(item_lease_decides_takeover),
        T(vanished_item_means_put_new_at_once),
        T(waiters_served_in_arrival_order),
        T(cancelled_head_hands_over_to_next),
        T(won_lock_nobody_wants_is_released),
        T(wait_deadline_times_out),
        T(refresh_on_schedule_with_exact_update),
        T(refresh_condition_failure_is_lost),
        T(refresh_failure_without_item_reads_back),
        T(throttled_refresh_retried_then_succeeds),
        T(lost_exactly_at_safety_deadline),
        T(lost_while_request_hangs),
        T(ambiguous_put_that_happened_is_held),
        T(retry_colliding_with_own_first_put_is_held),
        T(ambiguous_try_put_held_by_other_is_busy),
        T(ambiguous_refresh_that_happened_keeps_lock),
        T(ambiguous_refresh_retry_collision_keeps_lock),
        T(release_is_conditional_delete),
        T(release_finding_item_gone_is_ok),
        T(release_during_refresh_waits_for_it),
        T(note_is_written_and_removed),
        T(touch_refreshes_now),
        T(expiring_lock_is_not_refreshed),
        T(keep_ignores_stop_refresh),
        T(shutdown_releases_and_fails_waiters),
        T(many_locks_small_and_on_time),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
