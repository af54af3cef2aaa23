/* fs/fs.c — owns the lock directory: inodes of lock names, open file
 * descriptions (holders and readers), the listing cache, and the mapping of
 * every FUSE low-level operation onto the lock engine (SPEC.md §4, §5).
 *
 * Threads: FUSE worker threads run the operations; the engine thread runs
 * acquire callbacks, which only queue a completion; one completion thread of
 * ours answers those requests (fuse_reply_*), since answering may need a
 * blocking engine call (releasing a lock nobody received). fs->mu guards
 * nodes and descriptions; it is never held across a blocking engine call. */
#include "fs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ddb/ddb.h"
#include "fs/names.h"
#include "fs/text.h"
#include "util/clock.h"
#include "util/log.h"

#define ROOT_INO FUSE_ROOT_ID
#define XATTR_PREFIX "user.lynk."

typedef struct lk_fh lk_fh;

/* One lock name the kernel may know. Stays while looked up, open, held
 * here, or its observation is fresh; its inode number never changes while
 * it stays. */
typedef struct lk_node {
    struct lk_node *next_key, *next_ino;
    uint64_t ino;
    uint64_t nlookup;
    unsigned nopen;        /* descriptions and in-flight users pinning it */
    lk_lock *lock;         /* held through this mount (our reference) */
    lk_fh *holder;         /* the open description holding it */
    gid_t gid;             /* the acquirer's group */
    /* the table as last seen */
    bool obs_valid, obs_found;
    bool obs_own;          /* absent because we released it ourselves */
    uint64_t scan_gen;
    int64_t obs_ms;
    int64_t seen_wall;     /* when this version was first seen */
    long long lease_s;
    char *version, *host, *note;
    char key[];
} lk_node;

struct lk_fh {
    lk_fh *prev, *next;
    lk_node *node;
    lk_lock *lock;         /* our reference once this description acquired */
    bool flocked;          /* took flock(LOCK_EX): close releases */
    bool busy;             /* an acquire is pending for it */
    int flags;
    pid_t pid;             /* thread group of the opener / acquirer */
    pthread_mutex_t wmu;   /* serialises writes */
    char *wbuf;            /* what the holder wrote (the note) */
    size_t wlen;
    char *text;            /* read snapshot */
    size_t text_len;
};

typedef enum { P_CREATE, P_OPEN, P_FLOCK } pend_kind;

/* A request waiting for the engine's acquire callback. */
typedef struct lk_pending {
    struct lk_pending *next;
    lk_fs *fs;
    fuse_req_t req;
    pend_kind kind;
    lk_fh *fh;
    struct fuse_file_info fi;
    bool excl;             /* O_EXCL: busy means EEXIST */
    bool rdonly;           /* create O_RDONLY: busy means open as a reader */
    int tries;             /* rdonly: attempts that found the lock busy */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool submitted, done;
    lk_waiter *w;
    lk_lock *lock;
    lk_error err;
} lk_pending;

typedef struct lk_dir {
    size_t n;
    struct { uint64_t ino; char *name; } *e;
} lk_dir;

struct lk_fs {
    lk_fs_options o;
    char *table;
    aws_config *cfg;
    lk_engine *eng;
    time_t mount_time;

    pthread_mutex_t mu;
    lk_node **by_key, **by_ino;
    size_t cap, nnodes, sweep_at;
    lk_fh *fhs;
    int64_t listed_ms;      /* start of the last complete scan (0: none) */
    uint64_t scan_gen;
    unsigned long skipped_warned;

    pthread_mutex_t scan_mu;
    ddb_client *scan;

    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    lk_pending *qhead, *qtail;
    bool qstop, stopping, worker_on;
    pthread_t worker;
};

/* ------------------------------------------------------------------ */
/* small helpers */

static lk_fs *req_fs(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The thread group of a thread id (the kernel passes the caller's tid). */
static pid_t tgid_of(pid_t tid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tid;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return tid;
    buf[n] = '\0';
    char *p = strstr(buf, "\nTgid:");
    if (!p)
        return tid;
    long v = strtol(p + 6, NULL, 10);
    return v > 0 ? (pid_t)v : tid;
}

static int errno_of(const lk_error *err, bool excl)
{
    switch (err->code) {
    case LK_OK: return 0;
    case LK_ERR_BUSY: return excl ? EEXIST : EWOULDBLOCK;
    case LK_ERR_TIMEOUT: return EWOULDBLOCK;
    case LK_ERR_CANCELLED: return EINTR;
    case LK_ERR_INVALID: return EINVAL;
    case LK_ERR_NOMEM: return ENOMEM;
    case LK_ERR_DDB:
        return err->ddb == DDB_ERR_AUTH ? EACCES : EIO;
    case LK_ERR_LOST:
    case LK_ERR_RELEASED:
    case LK_ERR_SHUTDOWN:
    default: return EIO;
    }
}

/* Log a failure the user will only see as an errno. */
static void log_fail(const char *what, const char *key, const lk_error *err)
{
    if (err->code == LK_ERR_DDB || err->code == LK_ERR_LOST ||
        err->code == LK_ERR_SHUTDOWN || err->code == LK_ERR_NOMEM)
        lk_warn("%s %s: %s", what, key, err->msg[0] ? err->msg : "failed");
}

/* ------------------------------------------------------------------ */
/* node maps */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t hash_ino(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static lk_node *node_by_key(lk_fs *fs, const char *key)
{
    lk_node *n = fs->by_key[hash_str(key) & (fs->cap - 1)];
    while (n && strcmp(n->key, key) != 0)
        n = n->next_key;
    return n;
}

static lk_node *node_by_ino(lk_fs *fs, uint64_t ino)
{
    lk_node *n = fs->by_ino[hash_ino(ino) & (fs->cap - 1)];
    while (n && n->ino != ino)
        n = n->next_ino;
    return n;
}

static void node_link(lk_fs *fs, lk_node *n)
{
    size_t k = hash_str(n->key) & (fs->cap - 1);
    size_t i = hash_ino(n->ino) & (fs->cap - 1);
    n->next_key = fs->by_key[k];
    fs->by_key[k] = n;
    n->next_ino = fs->by_ino[i];
    fs->by_ino[i] = n;
}

static int maps_grow(lk_fs *fs)
{
    size_t cap = fs->cap * 2;
    lk_node **bk = calloc(cap, sizeof *bk), **bi = calloc(cap, sizeof *bi);
    if (!bk || !bi) {
        free(bk);
        free(bi);
        return -1;
    }
    lk_node **ok = fs->by_key;
    size_t ocap = fs->cap;
    free(fs->by_ino);
    fs->by_key = bk;
    fs->by_ino = bi;
    fs->cap = cap;
    for (size_t b = 0; b < ocap; b++) {
        for (lk_node *n = ok[b], *next; n; n = next) {
            next = n->next_key;
            node_link(fs, n);
        }
    }
    free(ok);
    return 0;
}

static void obs_clear(lk_node *n)
{
    free(n->version);
    free(n->host);
    free(n->note);
    n->version = n->host = n->note = NULL;
}

static void node_free(lk_node *n)
{
    obs_clear(n);
    free(n);
}

static bool node_idle(lk_fs *fs, lk_node *n, int64_t now)
{
    return n->nlookup == 0 && n->nopen == 0 && !n->lock && !n->holder &&
           (!n->obs_valid || now - n->obs_ms > fs->o.cache_ms);
}

/* Drop nodes nobody needs (fs->mu held). */
static void nodes_sweep(lk_fs *fs)
{
    int64_t now = lk_now_ms();
    for (size_t b = 0; b < fs->cap; b++) {
        for (lk_node **pp = &fs->by_key[b]; *pp;) {
            lk_node *n = *pp;
            if (!node_idle(fs, n, now)) {
                pp = &n->next_key;
                continue;
            }
            *pp = n->next_key;
            lk_node **ip = &fs->by_ino[hash_ino(n->ino) & (fs->cap - 1)];
            while (*ip != n)
                ip = &(*ip)->next_ino;
            *ip = n->next_ino;
            fs->nnodes--;
            node_free(n);
        }
    }
    fs->sweep_at = fs->nnodes * 2 + 1024;
}

/* The node of key, created if need be (fs->mu held). */
static lk_node *node_get(lk_fs *fs, const char *key)
{
    lk_node *n = node_by_key(fs, key);
    if (n)
        return n;
    if (fs->nnodes >= fs->sweep_at)
        nodes_sweep(fs);
    if (fs->nnodes >= fs->cap && maps_grow(fs) != 0)
        return NULL;
    size_t len = strlen(key);
    n = calloc(1, sizeof *n + len + 1);
    if (!n)
        return NULL;
    memcpy(n->key, key, len + 1);
    /* a stable number from the name; probe past collisions */
    uint64_t ino = hash_str(key);
    for (;; ino++) {
        if (ino <= ROOT_INO)
            continue;
        if (!node_by_ino(fs, ino))
            break;
    }
    n->ino = ino;
    node_link(fs, n);
    fs->nnodes++;
    return n;
}

/* ------------------------------------------------------------------ */
/* what a file shows */

typedef struct view {
    bool exists, self;
    gid_t gid;
    lk_lock_info i;
} view;

static void view_from_lock(lk_fs *fs, lk_lock *l, gid_t gid, view *v)
{
    lk_lock_info_get(l, &v->i);
    v->exists = true;
    v->self = true;
    v->gid = gid;
    (void)fs;
}

static void copy_str(char *dst, size_t sz, const char *s)
{
    snprintf(dst, sz, "%s", s ? s : "");
}

static void view_from_obs(lk_fs *fs, lk_node *n, view *v)
{
    memset(v, 0, sizeof *v);
    v->exists = n->obs_found;
    copy_str(v->i.name, sizeof v->i.name, n->key);
    if (!v->exists)
        return;
    copy_str(v->i.version, sizeof v->i.version, n->version);
    copy_str(v->i.host, sizeof v->i.host, n->host);
    copy_str(v->i.note, sizeof v->i.note, n->note);
    v->i.lease_s = (int)n->lease_s;
    v->i.state = LK_STATE_HELD;
    v->i.uid = fs->o.uid;
    v->gid = fs->o.gid;
    v->i.written_wall_s = n->seen_wall;
}

/* Is n held through this mount right now? Drops a lock that no longer is
 * (fs->mu held). */
static bool node_self(lk_fs *fs, lk_node *n)
{
    if (!n->lock)
        return false;
    lk_state s = lk_lock_state(n->lock);
    if (s == LK_STATE_HELD)
        return true;
    if (s == LK_STATE_EXPIRING) {
        lk_lock_info i;
        lk_lock_info_get(n->lock, &i);
        if (lk_now_ms() < i.written_ms + (int64_t)i.lease_s * 1000)
            return true;
    }
    lk_lock_unref(n->lock);
    n->lock = NULL;
    n->obs_valid = false;
    return false;
}

static void obs_store(lk_node *n, const lk_item *it, bool found, int64_t at)
{
    if (found) {
        if (!n->obs_found || !n->version || strcmp(n->version, it->version))
            n->seen_wall = time(NULL);
        obs_clear(n);
        n->version = xstrdup(it->version);
        n->host = xstrdup(it->host);
        n->note = xstrdup(it->note);
        n->lease_s = it->lease_s;
    } else {
        obs_clear(n);
    }
    n->obs_found = found;
    n->obs_valid = true;
    n->obs_own = false;
    n->obs_ms = at;
}

/* We released it: the table cannot hold it unless someone took it since. */
static void obs_absent(lk_node *n)
{
    obs_store(n, NULL, false, lk_now_ms());
    n->obs_own = true;
}

/* The view of node n; asks the table when nothing fresh is known (always
 * when fresh is set). Called and returns with fs->mu held; n is pinned by
 * the caller. Returns 0, or -EIO when the table could not be read. */
static int node_view(lk_fs *fs, lk_node *n, bool fresh, view *v)
{
    if (node_self(fs, n)) {
        view_from_lock(fs, n->lock, n->gid, v);
        return 0;
    }
    int64_t now = lk_now_ms();
    if (!fresh && n->obs_valid && now - n->obs_ms < fs->o.cache_ms) {
        view_from_obs(fs, n, v);
        return 0;
    }
    lk_item it = {0};
    bool found = false;
    lk_error err = {0};
    pthread_mutex_unlock(&fs->mu);
    lk_code rc = lk_observe(fs->eng, n->key, &it, &found, &err);
    pthread_mutex_lock(&fs->mu);
    if (rc != LK_OK) {
        lk_warn("reading lock %s: %s", n->key, err.msg);
        lk_item_clear(&it);
        return rc == LK_ERR_INVALID ? -EINVAL : -EIO;
    }
    if (node_self(fs, n)) { /* acquired meanwhile */
        lk_item_clear(&it);
        view_from_lock(fs, n->lock, n->gid, v);
        return 0;
    }
    obs_store(n, &it, found, now);
    lk_item_clear(&it);
    view_from_obs(fs, n, v);
    return 0;
}

static char *view_text(const view *v, size_t *len)
{
    if (!v->exists) {
        *len = 0;
        return strdup("");
    }
    lk_text_fields f = {
        .name = v->i.name, .host = v->i.host, .version = v->i.version,
        .lease_s = v->i.lease_s, .self = v->self,
        .state = v->self ? lk_state_name(v->i.state) : "held",
        .pid = v->self ? v->i.pid : 0, .note = v->i.note,
    };
    return lk_text_format(&f, len);
}

static void view_stat(lk_fs *fs, const view *v, uint64_t ino, struct stat *st)
{
    size_t len = 0;
    char *t = view_text(v, &len);
    free(t);
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = S_IFREG | (v->self ? 0644 : 0444);
    st->st_nlink = 1;
    st->st_uid = v->self ? v->i.uid : fs->o.uid;
    st->st_gid = v->self ? v->gid : fs->o.gid;
    st->st_size = (off_t)len;
    st->st_blksize = 4096;
    st->st_atime = st->st_mtime = st->st_ctime = (time_t)v->i.written_wall_s;
}

static void root_stat(lk_fs *fs, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ROOT_INO;
    st->st_mode = S_IFDIR | 01777;
    st->st_nlink = 2;
    st->st_uid = fs->o.uid;
    st->st_gid = fs->o.gid;
    st->st_blksize = 4096;
    st->st_atime = st->st_mtime = st->st_ctime = fs->mount_time;
}

static void fill_entry(uint64_t ino, const struct stat *st,
                       struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = ino;
    e->attr = *st;
    /* our own cache decides staleness: the kernel asks every time */
    e->attr_timeout = 0;
    e->entry_timeout = 0;
}

/* ------------------------------------------------------------------ */
/* open file descriptions */

static lk_fh *fh_new(lk_fs *fs, lk_node *n, int flags, pid_t pid)
{
    lk_fh *fh = calloc(1, sizeof *fh);
    if (!fh)
        return NULL;
    pthread_mutex_init(&fh->wmu, NULL);
    fh->node = n;
    fh->flags = flags;
    fh->pid = pid;
    n->nopen++;
    fh->next = fs->fhs;
    if (fs->fhs)
        fs->fhs->prev = fh;
    fs->fhs = fh;
    return fh;
}

/* Unlink and free (fs->mu held); the lock reference is the caller's. */
static void fh_free(lk_fs *fs, lk_fh *fh)
{
    if (fh->prev)
        fh->prev->next = fh->next;
    else
        fs->fhs = fh->next;
    if (fh->next)
        fh->next->prev = fh->prev;
    if (fh->node->holder == fh)
        fh->node->holder = NULL;
    fh->node->nopen--;
    pthread_mutex_destroy(&fh->wmu);
    free(fh->wbuf);
    free(fh->text);
    free(fh);
}

static lk_fh *fi_fh(const struct fuse_file_info *fi)
{
    return fi ? (lk_fh *)(uintptr_t)fi->fh : NULL;
}

/* Does fh hold a lock that is still ours? (fs->mu held) */
static bool fh_holds(const lk_fh *fh)
{
    if (!fh || !fh->lock)
        return false;
    lk_state s = lk_lock_state(fh->lock);
    return s == LK_STATE_HELD || s == LK_STATE_EXPIRING;
}

/* fh became the holder of lock (fs->mu held; takes the reference). */
static void fh_take(lk_fs *fs, lk_fh *fh, lk_lock *lock, gid_t gid)
{
    lk_node *n = fh->node;
    if (fh->lock)
        lk_lock_unref(fh->lock);
    fh->lock = lock;
    free(fh->wbuf);
    fh->wbuf = NULL;
    fh->wlen = 0;
    if (n->lock)
        lk_lock_unref(n->lock);
    n->lock = lk_lock_ref(lock);
    n->holder = fh;
    n->gid = gid;
    n->obs_valid = false;
    (void)fs;
}

/* After our own release of lock: the name is free as far as we know. */
static void node_released(lk_fs *fs, lk_node *n, lk_lock *lock)
{
    if (n->lock == lock) {
        lk_lock_unref(n->lock);
        n->lock = NULL;
        obs_absent(n);
    }
    (void)fs;
}

/* ------------------------------------------------------------------ */
/* acquiring: requests answered later */

static void queue_push(lk_fs *fs, lk_pending *p)
{
    pthread_mutex_lock(&fs->qmu);
    p->next = NULL;
    if (fs->qtail)
        fs->qtail->next = p;
    else
        fs->qhead = p;
    fs->qtail = p;
    pthread_cond_signal(&fs->qcv);
    pthread_mutex_unlock(&fs->qmu);
}

/* Engine thread: record the outcome and hand it to our thread. */
static void acquire_cb(lk_lock *lock, const lk_error *err, void *arg)
{
    lk_pending *p = arg;
    pthread_mutex_lock(&p->mu);
    p->done = true;
    p->lock = lock;
    if (!lock && err)
        p->err = *err;
    else if (!lock)
        p->err.code = LK_ERR_SHUTDOWN;
    pthread_mutex_unlock(&p->mu);
    queue_push(p->fs, p);
}

/* A FUSE thread: the caller got a signal while waiting. */
static void interrupt_cb(fuse_req_t req, void *arg)
{
    lk_pending *p = arg;
    (void)req;
    pthread_mutex_lock(&p->mu);
    if (!p->done && p->w)
        lk_acquire_cancel(p->fs->eng, p->w);
    pthread_mutex_unlock(&p->mu);
}

static void pending_free(lk_pending *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static lk_pending *pending_new(lk_fs *fs, fuse_req_t req, pend_kind kind,
                               lk_fh *fh, const struct fuse_file_info *fi)
{
    lk_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->fs = fs;
    p->req = req;
    p->kind = kind;
    p->fh = fh;
    if (fi)
        p->fi = *fi;
    return p;
}

static void pending_submit(lk_fs *fs, lk_pending *p, lk_acq_mode mode)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(p->req);
    lk_acquire_args a = {
        .name = p->fh->node->key,
        .mode = mode,
        .deadline_ms = fs->o.wait_ms > 0 ? lk_now_ms() + fs->o.wait_ms : 0,
        .pid = p->fh->pid,
        .uid = ctx->uid,
        .keep = fs->o.keep,
    };
    lk_waiter *w = lk_acquire(fs->eng, &a, acquire_cb, p);
    pthread_mutex_lock(&p->mu);
    if (!p->done)
        p->w = w;
    pthread_mutex_unlock(&p->mu);
    fuse_req_interrupt_func(p->req, interrupt_cb, p);
    pthread_mutex_lock(&p->mu);
    p->submitted = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Our thread: an acquired lock that nobody will receive. */
static void abandon_lock(lk_fs *fs, lk_node *n, lk_lock *lock)
{
    lk_error err = {0};
    if (lk_lock_release(lock, &err) != LK_OK && err.code != LK_ERR_RELEASED)
        log_fail("releasing abandoned lock", n->key, &err);
    pthread_mutex_lock(&fs->mu);
    node_released(fs, n, lock);
    pthread_mutex_unlock(&fs->mu);
}

#define READER_TRIES 5

/* A read-only create whose lock was busy: the name exists, so it opens as a
 * reader (flock(1) then waits in flock(2)). The view is read fresh: a cached
 * "absent" is exactly what made us try to acquire. If the lock was freed
 * meanwhile, try to acquire again. Returns true when p was resubmitted. */
static bool finish_reader(lk_fs *fs, lk_pending *p)
{
    lk_fh *fh = p->fh;
    view v;
    pthread_mutex_lock(&fs->mu);
    int rc = node_view(fs, fh->node, true, &v);
    if (rc == 0 && !v.exists && ++p->tries < READER_TRIES) {
        pthread_mutex_unlock(&fs->mu);
        p->submitted = p->done = false;
        p->w = NULL;
        p->err = (lk_error){0};
        pending_submit(fs, p, LK_ACQ_TRY);
        return true;
    }
    if (rc == 0 && !v.exists)
        rc = -EWOULDBLOCK; /* it keeps changing hands: let the caller retry */
    if (rc != 0) {
        fh_free(fs, fh);
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(p->req, -rc);
        return false;
    }
    struct stat st;
    struct fuse_entry_param e;
    view_stat(fs, &v, fh->node->ino, &st);
    fill_entry(fh->node->ino, &st, &e);
    fh->node->nlookup++;
    pthread_mutex_unlock(&fs->mu);
    if (fuse_reply_create(p->req, &e, &p->fi) != 0) {
        pthread_mutex_lock(&fs->mu);
        fh->node->nlookup--;
        fh_free(fs, fh);
        pthread_mutex_unlock(&fs->mu);
    }
    return false;
}

/* Returns true when p was resubmitted (and must not be freed). */
static bool finish_failed(lk_fs *fs, lk_pending *p)
{
    lk_fh *fh = p->fh;
    if (p->kind == P_CREATE && p->rdonly && p->err.code == LK_ERR_BUSY &&
        !fs->stopping)
        return finish_reader(fs, p);
    log_fail("acquiring lock", fh->node->key, &p->err);
    pthread_mutex_lock(&fs->mu);
    if (p->kind == P_FLOCK)
        fh->busy = false;
    else
        fh_free(fs, fh);
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(p->req, errno_of(&p->err, p->excl));
    return false;
}

static void finish_acquired(lk_fs *fs, lk_pending *p)
{
    lk_fh *fh = p->fh;
    lk_node *n = fh->node;
    const struct fuse_ctx *ctx = fuse_req_ctx(p->req);
    struct fuse_entry_param e;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    fh_take(fs, fh, p->lock, ctx->gid);
    if (p->kind == P_FLOCK) {
        fh->flocked = true;
        fh->busy = false;
        pthread_mutex_unlock(&fs->mu);
        lk_debug("lock %s acquired (flock)", n->key);
        fuse_reply_err(p->req, 0);
        return;
    }
    if (p->kind == P_CREATE) {
        view v;
        struct stat st;
        view_from_lock(fs, p->lock, ctx->gid, &v);
        view_stat(fs, &v, n->ino, &st);
        fill_entry(n->ino, &st, &e);
        n->nlookup++;
    }
    pthread_mutex_unlock(&fs->mu);
    lk_debug("lock %s acquired", n->key);
    if (p->kind == P_CREATE)
        rc = fuse_reply_create(p->req, &e, &p->fi);
    else
        rc = fuse_reply_open(p->req, &p->fi);
    if (rc == 0)
        return;
    /* the opener went away (interrupted): nobody holds this lock */
    lk_lock *lock = lk_lock_ref(p->lock);
    pthread_mutex_lock(&fs->mu);
    if (p->kind == P_CREATE)
        n->nlookup--;
    n->nopen++; /* keep n while releasing */
    lk_lock_unref(fh->lock);
    fh->lock = NULL;
    fh_free(fs, fh);
    pthread_mutex_unlock(&fs->mu);
    abandon_lock(fs, n, lock);
    lk_lock_unref(lock);
    pthread_mutex_lock(&fs->mu);
    n->nopen--;
    pthread_mutex_unlock(&fs->mu);
}

static void finish(lk_fs *fs, lk_pending *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->submitted)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    /* waits for a running interrupt_cb; none runs after this */
    fuse_req_interrupt_func(p->req, NULL, NULL);
    if (p->lock && fs->stopping) {
        /* the engine is going away with the lock: fail the request */
        lk_lock_unref(p->lock);
        p->lock = NULL;
        p->err.code = LK_ERR_SHUTDOWN;
    }
    if (p->lock)
        finish_acquired(fs, p);
    else if (finish_failed(fs, p))
        return; /* tried again: p lives on */
    pending_free(p);
}

static void *worker_main(void *arg)
{
    lk_fs *fs = arg;
    pthread_mutex_lock(&fs->qmu);
    for (;;) {
        while (!fs->qhead && !fs->qstop)
            pthread_cond_wait(&fs->qcv, &fs->qmu);
        lk_pending *p = fs->qhead;
        if (!p)
            break;
        fs->qhead = p->next;
        if (!fs->qhead)
            fs->qtail = NULL;
        pthread_mutex_unlock(&fs->qmu);
        finish(fs, p);
        pthread_mutex_lock(&fs->qmu);
    }
    pthread_mutex_unlock(&fs->qmu);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* operations */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (conn->capable & FUSE_CAP_FLOCK_LOCKS)
        conn->want |= FUSE_CAP_FLOCK_LOCKS;
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

/* Decode a name from the kernel into key; replies the error itself. */
static bool name_to_key(fuse_req_t req, fuse_ino_t parent, const char *name,
                        char *key, size_t keysz)
{
    if (parent != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return false;
    }
    int rc = lk_fname_decode(name, key, keysz);
    if (rc != 0) {
        fuse_reply_err(req, rc == -EINVAL ? ENOENT : -rc);
        return false;
    }
    return true;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    lk_fs *fs = req_fs(req);
    char key[LK_FNAME_MAX + 1];
    view v;
    struct stat st;
    struct fuse_entry_param e;

    if (!name_to_key(req, parent, name, key, sizeof key))
        return;
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_get(fs, key);
    if (!n) {
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* "Absent" sends an open(O_CREAT) to op_create, which the kernel runs
     * holding the directory's lock: if the name was taken meanwhile, a
     * blocking create would wait there and stall every create and unlink of
     * the mount. So an absent answer comes from the table, unless we
     * released the lock ourselves a moment ago; "present" may be cached
     * (the open then waits in op_open, outside the directory's lock). */
    n->nopen++;
    int rc = node_view(fs, n, false, &v);
    if (rc == 0 && !v.exists && !n->obs_own)
        rc = node_view(fs, n, true, &v);
    n->nopen--;
    if (rc == 0 && !v.exists)
        rc = -ENOENT;
    if (rc == 0) {
        view_stat(fs, &v, n->ino, &st);
        fill_entry(n->ino, &st, &e);
        n->nlookup++;
    }
    pthread_mutex_unlock(&fs->mu);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
    } else if (fuse_reply_entry(req, &e) != 0) {
        pthread_mutex_lock(&fs->mu);
        n->nlookup--;
        pthread_mutex_unlock(&fs->mu);
    }
}

static void forget_one(lk_fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
    lk_node *n = node_by_ino(fs, ino);
    if (!n)
        return;
    n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    lk_fs *fs = req_fs(req);
    pthread_mutex_lock(&fs->mu);
    forget_one(fs, ino, nlookup);
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
                            struct fuse_forget_data *forgets)
{
    lk_fs *fs = req_fs(req);
    pthread_mutex_lock(&fs->mu);
    for (size_t i = 0; i < count; i++)
        forget_one(fs, forgets[i].ino, forgets[i].nlookup);
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_none(req);
}

/* The attributes of ino (through fh when given). fs->mu held. */
static int ino_stat(lk_fs *fs, fuse_ino_t ino, lk_fh *fh, struct stat *st)
{
    view v;
    if (ino == ROOT_INO) {
        root_stat(fs, st);
        return 0;
    }
    lk_node *n = fh ? fh->node : node_by_ino(fs, ino);
    if (!n)
        return -ENOENT;
    if (fh && fh->lock) {
        view_from_lock(fs, fh->lock, n->gid, &v);
    } else {
        n->nopen++;
        int rc = node_view(fs, n, false, &v);
        n->nopen--;
        if (rc != 0)
            return rc;
        if (!v.exists && !fh)
            return -ENOENT;
    }
    view_stat(fs, &v, n->ino, st);
    return 0;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    struct stat st;
    pthread_mutex_lock(&fs->mu);
    int rc = ino_stat(fs, ino, fi_fh(fi), &st);
    pthread_mutex_unlock(&fs->mu);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 0);
}

/* The description through which caller may act on n: fh if it holds the
 * lock, else the open holder when the caller's process acquired it. */
static lk_fh *acting_holder(lk_node *n, lk_fh *fh, pid_t caller)
{
    if (fh && fh_holds(fh))
        return fh;
    if (n->holder && n->holder->pid == caller && fh_holds(n->holder))
        return n->holder;
    return NULL;
}

/* Clear the note of h's lock. fs->mu held (dropped meanwhile); h is not
 * touched once the lock is dropped: another thread may close it. */
static int holder_clear_note(lk_fs *fs, lk_node *n, lk_fh *h)
{
    lk_error err = {0};
    lk_lock *l = lk_lock_ref(h->lock);
    free(h->wbuf);
    h->wbuf = NULL;
    h->wlen = 0;
    pthread_mutex_unlock(&fs->mu);
    lk_code rc = lk_lock_set_note(l, NULL, &err);
    lk_lock_unref(l);
    pthread_mutex_lock(&fs->mu);
    if (rc != LK_OK)
        log_fail("clearing the note of", n->key, &err);
    return rc == LK_OK ? 0 : -errno_of(&err, false);
}

/* Refresh h's lock now unless it was written less than a second ago. */
static int holder_touch(lk_fs *fs, lk_node *n, lk_fh *h)
{
    lk_lock_info i;
    lk_error err = {0};
    lk_lock_info_get(h->lock, &i);
    if (lk_now_ms() - i.written_ms < 1000)
        return 0;
    lk_lock *l = lk_lock_ref(h->lock);
    pthread_mutex_unlock(&fs->mu);
    lk_code rc = lk_lock_touch(l, &err);
    lk_lock_unref(l);
    pthread_mutex_lock(&fs->mu);
    if (rc != LK_OK)
        log_fail("refreshing", n->key, &err);
    return rc == LK_OK ? 0 : -errno_of(&err, false);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                       int to_set, struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    struct stat st;
    int rc = 0;
    const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                      FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;

    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (ino != ROOT_INO && fs->o.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    pid_t caller = tgid_of(fuse_req_ctx(req)->pid);
    pthread_mutex_lock(&fs->mu);
    lk_fh *fh = fi_fh(fi);
    lk_node *n = ino == ROOT_INO ? NULL : fh ? fh->node : node_by_ino(fs, ino);
    if (ino != ROOT_INO && !n)
        rc = -ENOENT;
    if (rc == 0 && n && (to_set & (FUSE_SET_ATTR_SIZE | times))) {
        lk_fh *h = acting_holder(n, fh, caller);
        if (!h)
            rc = -EPERM;
        else if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0)
            rc = -EINVAL;
        n->nopen++;
        if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE))
            rc = holder_clear_note(fs, n, h);
        if (rc == 0 && (to_set & times) && (to_set & FUSE_SET_ATTR_SIZE))
            h = acting_holder(n, fh, caller); /* h may be gone meanwhile */
        if (rc == 0 && (to_set & times))
            rc = h ? holder_touch(fs, n, h) : -EPERM;
        n->nopen--;
    }
    if (rc == 0)
        rc = ino_stat(fs, ino, fh, &st);
    pthread_mutex_unlock(&fs->mu);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 0);
}

static lk_acq_mode acq_mode(int flags)
{
    return (flags & (O_NONBLOCK | O_EXCL)) ? LK_ACQ_TRY : LK_ACQ_WAIT;
}

/* The pending acquire of an open or create through the new handle fh (NULL
 * when it could not be made); on failure, replies ENOMEM and frees fh. */
static lk_pending *pending_for(lk_fs *fs, fuse_req_t req, pend_kind kind,
                               lk_fh *fh, const struct fuse_file_info *fi)
{
    lk_pending *p = fh ? pending_new(fs, req, kind, fh, fi) : NULL;
    if (!p) {
        if (fh) {
            pthread_mutex_lock(&fs->mu);
            fh_free(fs, fh);
            pthread_mutex_unlock(&fs->mu);
        }
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    p->fi.fh = (uintptr_t)fh;
    p->fi.direct_io = 1;
    return p;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    char key[LK_FNAME_MAX + 1];
    (void)mode;

    if (!name_to_key(req, parent, name, key, sizeof key))
        return;
    if (fs->o.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    pid_t pid = tgid_of(fuse_req_ctx(req)->pid);
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_get(fs, key);
    lk_fh *fh = n ? fh_new(fs, n, fi->flags, pid) : NULL;
    pthread_mutex_unlock(&fs->mu);
    lk_pending *p = pending_for(fs, req, P_CREATE, fh, fi);
    if (!p)
        return;
    p->excl = (fi->flags & O_EXCL) != 0;
    p->rdonly = (fi->flags & O_ACCMODE) == O_RDONLY && !p->excl;
    pending_submit(fs, p, p->rdonly ? LK_ACQ_TRY : acq_mode(fi->flags));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    bool writing = (fi->flags & O_ACCMODE) != O_RDONLY ||
                   (fi->flags & O_TRUNC);
    view v;

    if (writing && fs->o.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    pid_t pid = tgid_of(fuse_req_ctx(req)->pid);
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_by_ino(fs, ino);
    if (!n) {
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, ino == ROOT_INO ? EISDIR : ENOENT);
        return;
    }
    if (!writing) {
        n->nopen++;
        int rc = node_view(fs, n, false, &v);
        n->nopen--;
        /* Released since the lookup that led here. ESTALE makes the kernel
         * redo the whole open with a fresh lookup: a plain open then gets
         * ENOENT, and an open(O_CREAT) (flock(1)) goes to op_create and
         * acquires, as it would have had the name been absent at first. */
        if (rc == 0 && !v.exists)
            rc = -ESTALE;
        lk_fh *fh = rc == 0 ? fh_new(fs, n, fi->flags, pid) : NULL;
        if (rc == 0 && !fh)
            rc = -ENOMEM;
        pthread_mutex_unlock(&fs->mu);
        if (rc != 0) {
            fuse_reply_err(req, -rc);
            return;
        }
        fi->fh = (uintptr_t)fh;
        fi->direct_io = 1;
        if (fuse_reply_open(req, fi) != 0) {
            pthread_mutex_lock(&fs->mu);
            fh_free(fs, fh);
            pthread_mutex_unlock(&fs->mu);
        }
        return;
    }
    lk_fh *fh = fh_new(fs, n, fi->flags, pid);
    pthread_mutex_unlock(&fs->mu);
    lk_pending *p = pending_for(fs, req, P_OPEN, fh, fi);
    if (p)
        pending_submit(fs, p, acq_mode(fi->flags));
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    lk_fh *fh = fi_fh(fi);
    lk_error err = {0};
    (void)ino;

    pthread_mutex_lock(&fs->mu);
    lk_node *n = fh->node;
    lk_lock *lock = fh->lock;
    bool holds = fh_holds(fh);
    bool flocked = fh->flocked;
    fh->lock = NULL;
    if (n->holder == fh)
        n->holder = NULL;
    n->nopen++; /* keep n past fh */
    fh_free(fs, fh);
    pthread_mutex_unlock(&fs->mu);

    if (lock && holds && flocked) {
        if (lk_lock_release(lock, &err) == LK_OK) {
            lk_debug("lock %s released (flock holder closed)", n->key);
            pthread_mutex_lock(&fs->mu);
            node_released(fs, n, lock);
            pthread_mutex_unlock(&fs->mu);
        } else if (err.code != LK_ERR_RELEASED) {
            log_fail("releasing", n->key, &err);
        }
    } else if (lock && holds) {
        lk_lock_stop_refresh(lock);
    }
    if (lock)
        lk_lock_unref(lock);
    pthread_mutex_lock(&fs->mu);
    n->nopen--;
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    lk_fh *fh = fi_fh(fi);
    view v;
    int rc = 0;
    (void)ino;

    pthread_mutex_lock(&fs->mu);
    if (off == 0 || !fh->text) {
        if (fh->lock) {
            view_from_lock(fs, fh->lock, fh->node->gid, &v);
        } else {
            fh->node->nopen++;
            rc = node_view(fs, fh->node, false, &v);
            fh->node->nopen--;
        }
        if (rc == 0) {
            size_t len = 0;
            char *t = view_text(&v, &len);
            if (!t) {
                rc = -ENOMEM;
            } else {
                free(fh->text);
                fh->text = t;
                fh->text_len = len;
            }
        }
    }
    if (rc != 0) {
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, -rc);
        return;
    }
    size_t n = 0;
    if ((size_t)off < fh->text_len)
        n = fh->text_len - (size_t)off < size ? fh->text_len - (size_t)off : size;
    char *copy = malloc(n + 1);
    if (copy)
        memcpy(copy, fh->text + (n ? off : 0), n);
    pthread_mutex_unlock(&fs->mu);
    if (!copy) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fuse_reply_buf(req, copy, n);
    free(copy);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
                     size_t size, off_t off, struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    lk_fh *fh = fi_fh(fi);
    lk_error err = {0};
    char *note = NULL, *nb = NULL;
    int rc = 0;
    (void)ino;

    pthread_mutex_lock(&fh->wmu); /* one note write at a time */
    pthread_mutex_lock(&fs->mu);
    lk_lock *l = fh->lock ? lk_lock_ref(fh->lock) : NULL;
    if (!l || lk_lock_state(l) != LK_STATE_HELD)
        rc = -EIO; /* lost, released, or never acquired */
    size_t pos = (fi->flags & O_APPEND) || (size_t)off > fh->wlen
                     ? fh->wlen : (size_t)off;
    size_t nlen = pos + size > fh->wlen ? pos + size : fh->wlen;
    if (rc == 0 && nlen > LK_NOTE_MAX + 2)
        rc = -EFBIG;
    if (rc == 0 && !(nb = malloc(nlen + 1)))
        rc = -ENOMEM;
    if (rc == 0) {
        if (fh->wlen)
            memcpy(nb, fh->wbuf, fh->wlen);
        memcpy(nb + pos, buf, size);
    }
    pthread_mutex_unlock(&fs->mu);
    if (rc == 0)
        rc = lk_text_note_from_write(nb, nlen, LK_NOTE_MAX, &note);
    if (rc == 0 && lk_lock_set_note(l, note, &err) != LK_OK) {
        log_fail("writing the note of", fh->node->key, &err);
        rc = -errno_of(&err, false);
    }
    if (rc == 0) {
        pthread_mutex_lock(&fs->mu);
        free(fh->wbuf);
        fh->wbuf = nb;
        fh->wlen = nlen;
        nb = NULL;
        pthread_mutex_unlock(&fs->mu);
    }
    pthread_mutex_unlock(&fh->wmu);
    free(nb);
    free(note);
    if (l)
        lk_lock_unref(l);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    lk_fs *fs = req_fs(req);
    char key[LK_FNAME_MAX + 1];
    lk_error err = {0};
    view v;

    if (!name_to_key(req, parent, name, key, sizeof key))
        return;
    if (fs->o.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    uid_t uid = fuse_req_ctx(req)->uid;
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_get(fs, key);
    if (!n) {
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    n->nopen++;
    int rc = 0;
    if (node_self(fs, n)) {
        lk_lock_info i;
        lk_lock_info_get(n->lock, &i);
        if (uid != 0 && uid != i.uid) {
            rc = -EPERM; /* sticky directory */
        } else {
            lk_lock *l = lk_lock_ref(n->lock);
            pthread_mutex_unlock(&fs->mu);
            lk_code c = lk_lock_release(l, &err);
            pthread_mutex_lock(&fs->mu);
            if (c == LK_OK || c == LK_ERR_RELEASED) {
                lk_debug("lock %s released (unlinked)", key);
                node_released(fs, n, l);
            } else {
                log_fail("releasing", key, &err);
                rc = -errno_of(&err, false);
            }
            lk_lock_unref(l);
        }
    } else {
        rc = node_view(fs, n, true, &v);
        if (rc == 0)
            rc = v.exists ? -EBUSY : -ENOENT;
    }
    n->nopen--;
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, -rc);
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                     int op)
{
    lk_fs *fs = req_fs(req);
    lk_fh *fh = fi_fh(fi);
    lk_error err = {0};
    (void)ino;

    if (op & LOCK_SH) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    pthread_mutex_lock(&fs->mu);
    lk_node *n = fh->node;
    lk_state s = fh->lock ? lk_lock_state(fh->lock) : LK_STATE_RELEASED;
    if (op & LOCK_UN) {
        lk_lock *l = fh->lock && s != LK_STATE_RELEASED ? lk_lock_ref(fh->lock)
                                                         : NULL;
        fh->flocked = false;
        if (n->holder == fh)
            n->holder = NULL;
        n->nopen++;
        pthread_mutex_unlock(&fs->mu);
        int rc = 0;
        if (l && lk_lock_release(l, &err) == LK_OK) {
            lk_debug("lock %s released (flock LOCK_UN)", n->key);
            pthread_mutex_lock(&fs->mu);
            node_released(fs, n, l);
            pthread_mutex_unlock(&fs->mu);
        } else if (l && err.code != LK_ERR_RELEASED) {
            log_fail("releasing", n->key, &err);
            rc = errno_of(&err, false);
        }
        if (l)
            lk_lock_unref(l);
        pthread_mutex_lock(&fs->mu);
        n->nopen--;
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, rc);
        return;
    }
    int rc = 0;
    if (s == LK_STATE_HELD || s == LK_STATE_EXPIRING) {
        fh->flocked = true; /* already the holder */
        rc = 0;
    } else if (s == LK_STATE_LOST) {
        rc = EIO;
    } else if (fs->o.ro) {
        rc = EROFS;
    } else if (fh->busy) {
        rc = EWOULDBLOCK;
    } else {
        rc = -1;
        fh->busy = true;
        fh->pid = tgid_of(fuse_req_ctx(req)->pid);
    }
    pthread_mutex_unlock(&fs->mu);
    if (rc >= 0) {
        fuse_reply_err(req, rc);
        return;
    }
    lk_pending *p = pending_new(fs, req, P_FLOCK, fh, fi);
    if (!p) {
        pthread_mutex_lock(&fs->mu);
        fh->busy = false;
        pthread_mutex_unlock(&fs->mu);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pending_submit(fs, p, (op & LOCK_NB) ? LK_ACQ_TRY : LK_ACQ_WAIT);
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                     struct flock *lock)
{
    (void)ino;
    (void)fi;
    (void)lock;
    fuse_reply_err(req, EOPNOTSUPP);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                     struct flock *lock, int sleep)
{
    (void)ino;
    (void)fi;
    (void)lock;
    (void)sleep;
    fuse_reply_err(req, EOPNOTSUPP);
}

/* ---- directory ---- */

typedef struct scan_ctx {
    lk_fs *fs;
    uint64_t gen;
    int64_t at;
    unsigned long skipped;
} scan_ctx;

static int scan_item(json_t *item, void *arg)
{
    scan_ctx *c = arg;
    lk_fs *fs = c->fs;
    char name[LK_FNAME_MAX + 1];
    const char *key = ddb_item_s(item, "lockKey");
    if (!key || lk_fname_encode(key, name, sizeof name) != 0) {
        c->skipped++;
        return 0;
    }
    lk_item it = {
        .name = (char *)key,
        .version = (char *)ddb_item_s(item, "versionNumber"),
        .host = (char *)ddb_item_s(item, "hostIdentifier"),
        .note = (char *)ddb_item_s(item, "note"),
    };
    ddb_item_n(item, "leaseDuration", &it.lease_s);
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_get(fs, key);
    if (n) {
        if (!n->obs_valid || n->obs_ms <= c->at)
            obs_store(n, &it, true, c->at);
        n->scan_gen = c->gen;
    }
    pthread_mutex_unlock(&fs->mu);
    return 0;
}

/* Scan the table when the listing is older than cache=. */
static int listing_refresh(lk_fs *fs)
{
    ddb_error err = {0};
    pthread_mutex_lock(&fs->scan_mu);
    pthread_mutex_lock(&fs->mu);
    bool fresh = fs->listed_ms && lk_now_ms() - fs->listed_ms < fs->o.cache_ms;
    scan_ctx c = {.fs = fs, .gen = ++fs->scan_gen, .at = lk_now_ms()};
    pthread_mutex_unlock(&fs->mu);
    if (fresh) {
        pthread_mutex_unlock(&fs->scan_mu);
        return 0;
    }
    ddb_code rc = ddb_scan(fs->scan, fs->table, true, scan_item, &c, &err);
    if (rc != DDB_OK) {
        lk_warn("listing table %s: %s", fs->table, err.msg);
        ddb_error_clear(&err);
        pthread_mutex_unlock(&fs->scan_mu);
        return -EIO;
    }
    pthread_mutex_lock(&fs->mu);
    for (size_t b = 0; b < fs->cap; b++) {
        for (lk_node *n = fs->by_key[b]; n; n = n->next_key) {
            if (n->obs_valid && n->obs_found && n->scan_gen != c.gen &&
                n->obs_ms <= c.at)
                obs_store(n, NULL, false, c.at);
        }
    }
    fs->listed_ms = c.at;
    if (c.skipped && c.skipped != fs->skipped_warned)
        lk_warn("%lu locks of table %s are not listed: their names cannot be "
                "file names (over %d bytes once %% and / are escaped)",
                c.skipped, fs->table, LK_FNAME_MAX);
    fs->skipped_warned = c.skipped;
    nodes_sweep(fs);
    pthread_mutex_unlock(&fs->mu);
    pthread_mutex_unlock(&fs->scan_mu);
    return 0;
}

static void dir_free(lk_dir *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->e[i].name);
    free(d->e);
    free(d);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    lk_fs *fs = req_fs(req);
    char name[LK_FNAME_MAX + 1];

    if (ino != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    int rc = listing_refresh(fs);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    lk_dir *d = calloc(1, sizeof *d);
    pthread_mutex_lock(&fs->mu);
    if (d && !(d->e = calloc(fs->nnodes + 1, sizeof *d->e)))
        rc = -ENOMEM;
    for (size_t b = 0; d && rc == 0 && b < fs->cap; b++) {
        for (lk_node *n = fs->by_key[b]; n; n = n->next_key) {
            bool exists = node_self(fs, n) || (n->obs_valid && n->obs_found);
            if (!exists || lk_fname_encode(n->key, name, sizeof name) != 0)
                continue;
            d->e[d->n].ino = n->ino;
            if (!(d->e[d->n].name = strdup(name))) {
                rc = -ENOMEM;
                break;
            }
            d->n++;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    if (!d || rc != 0) {
        dir_free(d);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uintptr_t)d;
    if (fuse_reply_open(req, fi) != 0)
        dir_free(d);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    lk_dir *d = (lk_dir *)(uintptr_t)fi->fh;
    char *buf = malloc(size ? size : 1);
    size_t used = 0;
    struct stat st;
    (void)ino;

    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    for (size_t i = (size_t)off; i < d->n + 2; i++) {
        memset(&st, 0, sizeof st);
        const char *name;
        if (i < 2) {
            name = i == 0 ? "." : "..";
            st.st_ino = ROOT_INO;
            st.st_mode = S_IFDIR;
        } else {
            name = d->e[i - 2].name;
            st.st_ino = d->e[i - 2].ino;
            st.st_mode = S_IFREG;
        }
        size_t need = fuse_add_direntry(req, buf + used, size - used, name,
                                        &st, (off_t)i + 1);
        if (need > size - used)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    (void)ino;
    dir_free((lk_dir *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* ---- extended attributes ---- */

static const char *const xattr_names[] = {"host", "version", "lease", "state",
                                          "owner"};

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        size_t size)
{
    lk_fs *fs = req_fs(req);
    char val[LK_NOTE_MAX + 64];
    view v;

    if (ino == ROOT_INO || strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX))) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    const char *field = name + strlen(XATTR_PREFIX);
    pthread_mutex_lock(&fs->mu);
    lk_node *n = node_by_ino(fs, ino);
    int rc = n ? 0 : -ENOENT;
    if (n) {
        n->nopen++;
        rc = node_view(fs, n, false, &v);
        n->nopen--;
    }
    pthread_mutex_unlock(&fs->mu);
    if (rc == 0 && !v.exists)
        rc = -ENODATA;
    if (rc == 0) {
        if (!strcmp(field, "host"))
            copy_str(val, sizeof val, v.i.host);
        else if (!strcmp(field, "version"))
            copy_str(val, sizeof val, v.i.version);
        else if (!strcmp(field, "lease"))
            snprintf(val, sizeof val, "%d", v.i.lease_s);
        else if (!strcmp(field, "state"))
            copy_str(val, sizeof val,
                     v.self ? lk_state_name(v.i.state) : "held");
        else if (!strcmp(field, "owner"))
            copy_str(val, sizeof val, v.self ? "self" : "other");
        else
            rc = -ENODATA;
    }
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    size_t len = strlen(val);
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, val, len);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    char buf[256];
    size_t len = 0;
    if (ino != ROOT_INO) {
        for (size_t i = 0; i < sizeof xattr_names / sizeof *xattr_names; i++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s",
                                    XATTR_PREFIX, xattr_names[i]) + 1;
    }
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, len);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        const char *value, size_t size, int flags)
{
    (void)ino;
    (void)name;
    (void)value;
    (void)size;
    (void)flags;
    fuse_reply_err(req, ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino;
    (void)name;
    fuse_reply_err(req, ENOTSUP);
}

/* ---- refused ---- */

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode)
{
    (void)parent;
    (void)name;
    (void)mode;
    fuse_reply_err(req, EPERM);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode, dev_t rdev)
{
    (void)parent;
    (void)name;
    (void)mode;
    (void)rdev;
    fuse_reply_err(req, EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
                       const char *name)
{
    (void)link;
    (void)parent;
    (void)name;
    fuse_reply_err(req, EPERM);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                    const char *newname)
{
    (void)ino;
    (void)newparent;
    (void)newname;
    fuse_reply_err(req, EPERM);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname,
                      unsigned int flags)
{
    (void)parent;
    (void)name;
    (void)newparent;
    (void)newname;
    (void)flags;
    fuse_reply_err(req, EPERM);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent;
    (void)name;
    fuse_reply_err(req, ENOTDIR);
}

const struct fuse_lowlevel_ops lk_fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .getlk = op_getlk,
    .setlk = op_setlk,
    .flock = op_flock,
};

/* ------------------------------------------------------------------ */
/* lifetime */

lk_fs *lk_fs_new(aws_config *cfg, const lk_fs_options *o)
{
    lk_fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return NULL;
    fs->o = *o;
    fs->table = strdup(o->table);
    fs->o.table = fs->table;
    fs->cfg = cfg;
    fs->mount_time = time(NULL);
    fs->cap = 1024;
    fs->sweep_at = 4096;
    fs->by_key = calloc(fs->cap, sizeof *fs->by_key);
    fs->by_ino = calloc(fs->cap, sizeof *fs->by_ino);
    if (!fs->table || !fs->by_key || !fs->by_ino) {
        free(fs->table);
        free(fs->by_key);
        free(fs->by_ino);
        free(fs);
        return NULL;
    }
    pthread_mutex_init(&fs->mu, NULL);
    pthread_mutex_init(&fs->scan_mu, NULL);
    pthread_mutex_init(&fs->qmu, NULL);
    pthread_cond_init(&fs->qcv, NULL);
    return fs;
}

int lk_fs_start(lk_fs *fs, lk_engine *e)
{
    fs->eng = e;
    fs->scan = ddb_client_new(fs->cfg, NULL);
    if (!fs->scan)
        return -ENOMEM;
    int rc = pthread_create(&fs->worker, NULL, worker_main, fs);
    if (rc != 0)
        return -rc;
    fs->worker_on = true;
    return 0;
}

void lk_fs_stop(lk_fs *fs)
{
    pthread_mutex_lock(&fs->qmu);
    fs->stopping = true;
    pthread_mutex_unlock(&fs->qmu);
}

void lk_fs_free(lk_fs *fs)
{
    if (!fs)
        return;
    fs->stopping = true;
    if (fs->worker_on) {
        pthread_mutex_lock(&fs->qmu);
        fs->qstop = true;
        pthread_cond_broadcast(&fs->qcv);
        pthread_mutex_unlock(&fs->qmu);
        pthread_join(fs->worker, NULL);
    }
    /* the engine is gone: only drop our references (no engine needed) */
    while (fs->fhs) {
        if (fs->fhs->lock)
            lk_lock_unref(fs->fhs->lock);
        fs->fhs->lock = NULL;
        fh_free(fs, fs->fhs);
    }
    for (size_t b = 0; b < fs->cap; b++) {
        for (lk_node *n = fs->by_key[b], *next; n; n = next) {
            next = n->next_key;
            if (n->lock)
                lk_lock_unref(n->lock);
            node_free(n);
        }
    }
    free(fs->by_key);
    free(fs->by_ino);
    ddb_client_free(fs->scan);
    pthread_mutex_destroy(&fs->mu);
    pthread_mutex_destroy(&fs->scan_mu);
    pthread_mutex_destroy(&fs->qmu);
    pthread_cond_destroy(&fs->qcv);
    free(fs->table);
    free(fs);
}
