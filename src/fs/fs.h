/* fs/fs.h — the lock directory on libfuse's low-level API (SPEC.md §4, §5).
 * Opens that must wait are answered later, from the lock engine's acquire
 * callback, so waiting opens hold no FUSE thread. */
#ifndef LK_FS_FS_H
#define LK_FS_FS_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "aws/config.h"
#include "lock/engine.h"

typedef struct lk_fs_options {
    const char *table;
    int64_t cache_ms;     /* how stale a listing or a stat may be */
    int64_t wait_ms;      /* longest blocking acquire; 0 = no limit */
    bool keep;            /* locks stay held after their holder closes */
    bool ro;              /* observe only */
    uid_t uid;            /* the mounting user: owner of others' locks */
    gid_t gid;
} lk_fs_options;

typedef struct lk_fs lk_fs;

/* The operations table, with lk_fs * as the session's userdata. */
extern const struct fuse_lowlevel_ops lk_fs_ops;

/* Create the filesystem state (no thread yet): safe before fork. */
lk_fs *lk_fs_new(aws_config *cfg, const lk_fs_options *o);
/* After fuse_daemonize: attach the engine and start the completion thread.
 * Returns 0 or -errno. */
int lk_fs_start(lk_fs *fs, lk_engine *e);
/* Before lk_engine_free: from now on completions only fail their request. */
void lk_fs_stop(lk_fs *fs);
/* After lk_engine_free: join the thread and free everything (lock handles
 * are not touched: the engine is gone). */
void lk_fs_free(lk_fs *fs);

#endif
