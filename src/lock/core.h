/* lock/core.h — lynk's lock protocol (SPEC.md §1) as a sans-IO state
 * machine: no threads, no curl, no clock of its own. The caller (engine.c, or
 * a test) gives it a clock and a transport; the core hands out lk_op requests
 * through the transport and is told their outcome with lk_core_complete().
 * Timers live in one binary min-heap; the caller sleeps until
 * lk_core_next_deadline() and then calls lk_core_run_due().
 *
 * Everything here runs on one thread. The transport callback must not call
 * back into the core synchronously; it queues the op and completes it later.
 */
#ifndef LK_CORE_H
#define LK_CORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "ddb/ddb.h"
#include "lock/engine.h"
#include "util/clock.h"

typedef struct lk_core lk_core;

typedef enum {
    LK_OP_GET = 0,       /* GetItem, ConsistentRead (poll or read-back) */
    LK_OP_PUT_NEW,       /* PutItem, attribute_not_exists(lockKey) */
    LK_OP_PUT_TAKEOVER,  /* PutItem, ... OR versionNumber = :observed */
    LK_OP_REFRESH,       /* UpdateItem SET versionNumber, hostIdentifier */
    LK_OP_NOTE,          /* UpdateItem that also sets or removes note */
    LK_OP_DELETE         /* DeleteItem, versionNumber = :mine */
} lk_op_kind;

const char *lk_op_kind_name(lk_op_kind k);

/* One request handed to the transport. Valid until lk_core_complete() or
 * lk_core_discard() (which free it). */
typedef struct lk_op {
    lk_op_kind kind;
    const char *ddb_op;    /* "GetItem", "PutItem", "UpdateItem", "DeleteItem" */
    const char *name;      /* the lockKey */
    json_t *body;          /* the request body (owned by the op) */
    int64_t sent_ms;       /* core clock when handed to the transport */
    void *rt;              /* free for the transport */
    struct lk_op *rt_next; /* free for the transport (queues) */
    /* private to the core */
    int owner_kind;
    void *owner;
    char version[LK_UUID_LEN + 1]; /* the version this write stores */
} lk_op;

/* An entry of the timer heap, embedded in its owner. */
typedef struct lk_timer {
    int64_t at;
    uint32_t idx;          /* heap index; UINT32_MAX when not armed */
    uint8_t kind;          /* which owner type embeds it */
} lk_timer;

/* A held (or formerly held) lock. Reference counted: the core keeps one
 * reference while it tracks the lock, each user handle another. Fields are
 * written by the core's thread only. */
struct lk_lock {
    atomic_int refs;
    lk_state state;
    bool keep;
    bool tracked;          /* the core holds its reference */
    bool lost_notified;
    bool stopping_expired; /* EXPIRING and its lease ran out */
    bool readback;         /* the op out (or due) is a read-back */
    bool del_amb;          /* a delete of ours may have happened */
    bool lenient;          /* releasing an expired lock: any answer is OK */
    bool cmd_running;      /* the write in progress is cmds' head */
    uint8_t act;           /* private: the write in progress */
    uint8_t attempt;       /* retry counter of the current operation */
    int lease_s;
    pid_t pid;
    uid_t uid;
    lk_timer t;
    int64_t write_ms;      /* send time of the last successful write */
    int64_t written_wall_s;
    int64_t next_refresh_ms;
    int64_t retry_at_ms;   /* when a backed-off request goes again (0: none) */
    int64_t act_since_ms;  /* when the current command started */
    lk_lost_cb on_lost;
    void *lost_arg;
    lk_core *core;
    void *owner;           /* the core's ctx (the engine) */
    lk_op *inflight;
    struct lk_cand *cands; /* versions we may have written (ambiguity) */
    struct lk_cmd *cmds;   /* commands waiting for the current op */
    char *note;            /* NULL when none */
    char *last_err;        /* while refreshes fail: the last failure */
    char version[LK_UUID_LEN + 1];
    char name[];
};

/* Completion of an acquire: lock is a new reference (on LK_OK). */
typedef void (*lk_core_acq_cb)(lk_lock *lock, const lk_error *err, void *arg);
/* Completion of a command on a held lock. */
typedef void (*lk_core_done_cb)(lk_lock *lock, const lk_error *err, void *arg);

/* A pending acquire: allocated by lk_waiter_new (any thread), owned by the
 * core from lk_core_acquire on, freed by the core right after its callback. */
struct lk_waiter {
    struct lk_waiter *next, *prev;
    struct lk_cont *cont;  /* NULL until queued on a name */
    lk_timer t;            /* the deadline */
    lk_acq_mode mode;
    bool keep;
    int64_t deadline_ms;
    pid_t pid;
    uid_t uid;
    lk_lost_cb on_lost;
    void *lost_arg;
    lk_core_acq_cb cb;
    void *arg;
    void *rt;              /* free for the runtime */
    char *name;
};

typedef struct lk_core_config {
    lk_engine_options opts;      /* defaults filled in by lk_core_new */
    int64_t (*now_ms)(void *ctx);
    void (*send)(void *ctx, lk_op *op);
    void *ctx;
    /* optional: called instead of the lock's on_lost (the runtime defers
     * it); the lock is valid during the call */
    void (*lost)(void *ctx, lk_lock *l);
    int64_t jitter_max_ms;       /* first refresh up to this much early;
                                  * -1: heartbeat/5 */
    int64_t try_budget_ms;       /* retry time of a TRY without deadline (10 s) */
} lk_core_config;

lk_core *lk_core_new(const lk_core_config *cfg, lk_error *err);
/* Free everything. Ops still out are forgotten (the caller must not
 * complete them afterwards); pending acquires get LK_ERR_SHUTDOWN; tracked
 * locks are dropped (state left as is). */
void lk_core_free(lk_core *c);
const lk_engine_options *lk_core_options(const lk_core *c);

/* Fill in defaults and check options; returns false with err set. */
bool lk_core_options_fix(lk_engine_options *o, lk_error *err);

/* The outcome of an op: code DDB_OK with resp (borrowed; may be NULL for a
 * write), or the error (borrowed; err->item is the ALL_OLD item). Frees op. */
void lk_core_complete(lk_core *c, lk_op *op, ddb_code code, json_t *resp,
                      const ddb_error *err);
/* Forget an op that will never complete (shutdown). Frees op. */
void lk_core_discard(lk_core *c, lk_op *op);

/* INT64_MAX when no timer is armed. */
int64_t lk_core_next_deadline(const lk_core *c);
void lk_core_run_due(lk_core *c);

/* ---- commands ---- */

lk_waiter *lk_waiter_new(const lk_acquire_args *a, lk_core_acq_cb cb,
                         void *arg);
/* Start an acquire; cb runs exactly once (maybe before this returns). */
void lk_core_acquire(lk_core *c, lk_waiter *w);
/* w must still be pending (its cb not yet run). */
void lk_core_cancel(lk_core *c, lk_waiter *w);

void lk_core_release(lk_core *c, lk_lock *l, lk_core_done_cb cb, void *arg);
void lk_core_set_note(lk_core *c, lk_lock *l, const char *note,
                      lk_core_done_cb cb, void *arg);
void lk_core_touch(lk_core *c, lk_lock *l, lk_core_done_cb cb, void *arg);
void lk_core_stop_refresh(lk_core *c, lk_lock *l);

/* Shutdown: fail pending acquires (LK_ERR_SHUTDOWN) and release every lock
 * the core tracks. lk_core_idle() tells when nothing is left to do. */
void lk_core_shutdown(lk_core *c);
bool lk_core_idle(const lk_core *c);

void lk_core_stats(const lk_core *c, lk_stats *out);
size_t lk_core_inflight(const lk_core *c);

/* References (atomic; any thread). Freeing needs no core. */
lk_lock *lk_lock_hold(lk_lock *l);
void lk_lock_drop(lk_lock *l);

/* Valid UTF-8, 1..1024 bytes. */
bool lk_name_valid(const char *name);

#endif
