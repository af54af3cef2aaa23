/* lock/engine.h — the lock engine: lynk's protocol (SPEC.md §1) for many
 * locks at once, independent of FUSE so that the filesystem and the command
 * line share it.
 *
 * One engine runs one thread that owns every lock's state and drives all
 * requests through a libcurl multi handle: acquires, polls of waiters (one
 * poller per contended name, waiters served in arrival order), refreshes of
 * held locks (each before its safety deadline, spread so they do not burst),
 * note updates and releases. The functions below are thread-safe; the ones
 * without a callback block the caller until the engine answers, callbacks run
 * on the engine thread and must not block.
 *
 * Safety: a held lock counts as held only until (send time of its last
 * successful write) + lease - margin on the monotonic clock. Past that, or
 * when a refresh fails its condition, the lock is LOST: its on_lost callback
 * runs once, and it is never re-acquired silently. Ambiguous writes are
 * resolved by reading the item back before any retry or verdict. */
#ifndef LK_ENGINE_H
#define LK_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aws/config.h"
#include "ddb/ddb.h"

#define LK_NOTE_MAX 1024

/* The one error type of this layer. */
typedef enum {
    LK_OK = 0,
    LK_ERR_BUSY,       /* held by someone else (try-once), or EEXIST case */
    LK_ERR_TIMEOUT,    /* a blocking acquire's deadline passed */
    LK_ERR_CANCELLED,  /* lk_acquire_cancel() won the race */
    LK_ERR_LOST,       /* the lock is lost: we cannot prove we hold it */
    LK_ERR_RELEASED,   /* the lock was already released through us */
    LK_ERR_INVALID,    /* bad name, note too long, ... */
    LK_ERR_DDB,        /* DynamoDB failed past retries: see ddb */
    LK_ERR_SHUTDOWN,   /* the engine is stopping */
    LK_ERR_NOMEM
} lk_code;

typedef struct lk_error {
    lk_code code;
    ddb_code ddb;      /* when code == LK_ERR_DDB */
    char msg[512];     /* one line: cause and fix, names the lock */
} lk_error;

typedef enum {
    LK_STATE_ACQUIRING = 0, /* not ours yet */
    LK_STATE_HELD,          /* ours, refreshed every heartbeat */
    LK_STATE_EXPIRING,      /* ours, no longer refreshed: expires after lease */
    LK_STATE_LOST,          /* could not prove ownership any more */
    LK_STATE_RELEASED       /* deleted by us */
} lk_state;

const char *lk_state_name(lk_state s);  /* "held", "expiring", ... */

typedef struct lk_engine_options {
    const char *table;
    const char *host;          /* hostIdentifier written by this engine */
    int lease_s;               /* leaseDuration written; default 20 */
    int64_t heartbeat_ms;      /* refresh period; default lease/4 */
    int64_t margin_ms;         /* safety margin; default max(lease/10, 500 ms) */
    int64_t poll_min_ms;       /* waiter poll schedule: first interval (10) */
    int64_t poll_max_ms;       /* ... backing off to at most this (40) */
    int max_inflight;          /* concurrent requests (default 256) */
} lk_engine_options;

typedef struct lk_engine lk_engine;
typedef struct lk_lock lk_lock;     /* a lock this engine holds (or held) */
typedef struct lk_waiter lk_waiter; /* a pending acquire */

/* Start the engine thread. cfg is borrowed and must outlive the engine. */
lk_engine *lk_engine_new(aws_config *cfg, const lk_engine_options *opts,
                         lk_error *err);
/* Release every lock still held (within a bounded time), stop the thread,
 * free everything. Locks not yet unref'd become invalid. */
void lk_engine_free(lk_engine *e);

/* ---- acquiring ---- */

typedef enum {
    LK_ACQ_TRY,    /* one attempt: LK_ERR_BUSY if anybody holds it */
    LK_ACQ_WAIT    /* wait until acquired, the deadline, or cancel */
} lk_acq_mode;

/* on_lost runs (on the engine thread) once if a held lock becomes LOST. */
typedef void (*lk_lost_cb)(lk_lock *lock, void *arg);
/* Result of an acquire: lock (a new reference) on LK_OK, else NULL + err. */
typedef void (*lk_acquire_cb)(lk_lock *lock, const lk_error *err, void *arg);

typedef struct lk_acquire_args {
    const char *name;         /* lockKey: valid UTF-8, 1..1024 bytes */
    lk_acq_mode mode;
    int64_t deadline_ms;      /* monotonic; 0 = no limit (LK_ACQ_WAIT) */
    pid_t pid;                /* recorded as the acquirer (0 = none) */
    uid_t uid;
    bool keep;                /* keep refreshing after the last unref */
    lk_lost_cb on_lost;
    void *lost_arg;
} lk_acquire_args;

/* Asynchronous: cb runs exactly once, on the engine thread (possibly before
 * this returns). The returned waiter is valid until cb has run. */
lk_waiter *lk_acquire(lk_engine *e, const lk_acquire_args *a,
                      lk_acquire_cb cb, void *arg);
/* Ask a pending acquire to stop; its cb then runs with LK_ERR_CANCELLED
 * unless the lock was already acquired (then cb gets the lock as usual).
 * Safe to call after cb ran as long as the caller still owns the handle's
 * memory: see lk_waiter_done(). */
void lk_acquire_cancel(lk_engine *e, lk_waiter *w);

/* Blocking form. */
lk_code lk_acquire_sync(lk_engine *e, const lk_acquire_args *a,
                        lk_lock **out, lk_error *err);

/* ---- a held lock ---- */

/* Take / drop a reference to the handle. Dropping one never changes the
 * lock's state: the engine keeps its own reference while the lock may still
 * be in the table (HELD, or EXPIRING until its lease ran out). */
lk_lock *lk_lock_ref(lk_lock *l);
void lk_lock_unref(lk_lock *l);

/* Stop refreshing (holder closed): HELD -> EXPIRING; the item stays until
 * its lease runs out or lk_lock_release. With keep, nothing changes. */
void lk_lock_stop_refresh(lk_lock *l);
/* Refresh now (set-times by the acquirer); EXPIRING -> HELD is not allowed:
 * returns LK_ERR_LOST / LK_ERR_RELEASED if the lock is no longer ours. */
lk_code lk_lock_touch(lk_lock *l, lk_error *err);
/* Store note (NULL or "" removes it) in the item: one conditional write. */
lk_code lk_lock_set_note(lk_lock *l, const char *note, lk_error *err);
/* Release now (conditional DeleteItem). Finding the item gone is success. */
lk_code lk_lock_release(lk_lock *l, lk_error *err);

typedef struct lk_lock_info {
    char name[1025];
    char version[40];
    char host[256];
    char note[LK_NOTE_MAX + 1];
    int lease_s;
    lk_state state;
    pid_t pid;
    uid_t uid;
    int64_t written_ms;       /* monotonic time of the current version's write */
    int64_t written_wall_s;   /* the same on the wall clock (for mtime) */
} lk_lock_info;

void lk_lock_info_get(lk_lock *l, lk_lock_info *out);
lk_state lk_lock_state(lk_lock *l);

/* ---- observing (no lock taken) ---- */

typedef struct lk_item {
    char *name, *version, *host, *note; /* owned; note may be NULL */
    long long lease_s;
} lk_item;
void lk_item_clear(lk_item *it);

/* Consistent read of one lock: LK_OK with *found = true and the item, or
 * *found = false when the lock is free. */
lk_code lk_observe(lk_engine *e, const char *name, lk_item *out, bool *found,
                   lk_error *err);
/* Forcibly delete a lock whoever holds it (lynk break): conditional on the
 * version read just before, so a concurrent re-acquire is not destroyed. */
lk_code lk_break(lk_engine *e, const char *name, lk_error *err);

/* ---- statistics, for logs and the benchmark ---- */
typedef struct lk_stats {
    size_t held;              /* locks HELD now */
    size_t waiting;           /* pending acquires */
    uint64_t refreshes;       /* successful refreshes */
    uint64_t refresh_late;    /* refreshes that succeeded later than 1.5 x heartbeat */
    uint64_t lost;            /* locks lost */
    int64_t worst_slack_ms;   /* smallest (safety deadline - success time) seen */
} lk_stats;
void lk_engine_stats(lk_engine *e, lk_stats *out);

#endif
