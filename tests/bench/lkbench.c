/* tests/bench/lkbench.c — owns the measuring programs of scripts/bench: each
 * subcommand times one thing against the endpoint of the AWS configuration
 * chain (AWS_ENDPOINT_URL...) and prints its results as `RES KEY VALUE`
 * lines on stdout, which scripts/bench turns into the table of SPEC.md §6.
 * The reference ("raw") figures use the same ddb_client (same connection
 * reuse, same signing) doing the same requests as the lock protocol.
 *
 *   lkbench cycle    --table T --n N [--mount DIR]   engine or mount vs raw
 *   lkbench handoff  --table T --n N                 engine waiter latency
 *   lkbench lynkwait --table T --n N --lease S       lynk's waiter latency
 *   lkbench rawput   --table T --n N [--threads K] [--prefix P]
 *   lkbench capacity --table T --n N --lease S --heartbeat-ms H
 *   lkbench par      --procs P --secs S (--mount DIR | --table T)
 *   lkbench ls       --mount DIR --table T --runs R   readdir vs Scan
 *
 * Exit status: 0 measured, 1 bad usage or a failure (one line on stderr). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aws/config.h"
#include "ddb/ddb.h"
#include "lock/engine.h"
#include "util/clock.h"
#include "util/log.h"

typedef struct opts {
    const char *cmd, *table, *mount, *prefix;
    long n, runs, threads, procs;
    int lease_s;
    int64_t heartbeat_ms;
    double secs;
} opts;

static opts O = {.n = 100, .runs = 3, .threads = 16, .procs = 64,
                 .lease_s = 20, .secs = 5, .prefix = "raw"};
static aws_config *CFG;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lkbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_ms_f(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void res(const char *key, double v)
{
    printf("RES %s %.4f\n", key, v);
    fflush(stdout);
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Print KEY.med and KEY.p90 of v[0..n). */
static void res_dist(const char *key, double *v, size_t n)
{
    char k[128];
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, dcmp);
    snprintf(k, sizeof k, "%s.med", key);
    res(k, v[n / 2]);
    snprintf(k, sizeof k, "%s.p90", key);
    res(k, v[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1]);
    snprintf(k, sizeof k, "%s.n", key);
    res(k, (double)n);
}

static void load_config(void)
{
    aws_error aerr = {0};
    if (aws_config_load(NULL, &CFG, &aerr) != AWS_OK)
        die("%s", aerr.msg);
}

static ddb_client *client_new(void)
{
    ddb_client *c = ddb_client_new(CFG, NULL);
    if (!c)
        die("out of memory");
    return c;
}

/* ---- the raw protocol: the two requests of an uncontended cycle ---- */

static json_t *lock_item(const char *name, const char *ver, int lease)
{
    json_t *it = json_object();
    json_object_set_new(it, "lockKey", ddb_s(name));
    json_object_set_new(it, "leaseDuration", ddb_n(lease));
    json_object_set_new(it, "versionNumber", ddb_s(ver));
    json_object_set_new(it, "hostIdentifier", ddb_s("lkbench-raw"));
    return it;
}

static ddb_code raw_put(ddb_client *c, const char *name, char ver[LK_UUID_LEN + 1],
                        int lease, ddb_error *err)
{
    if (lk_uuid4(ver) != 0)
        die("no random source");
    json_t *it = lock_item(name, ver, lease);
    ddb_cond cond = {.expr = "attribute_not_exists(lockKey)"};
    ddb_code rc = ddb_put_item(c, O.table, it, &cond, 0, err);
    json_decref(it);
    return rc;
}

static ddb_code raw_del(ddb_client *c, const char *name, const char *ver,
                        ddb_error *err)
{
    json_t *key = json_object(), *vals = json_object();
    json_object_set_new(key, "lockKey", ddb_s(name));
    json_object_set_new(vals, ":v", ddb_s(ver));
    ddb_cond cond = {.expr = "versionNumber = :v", .values = vals};
    ddb_code rc = ddb_delete_item(c, O.table, key, &cond, 0, err);
    json_decref(key);
    json_decref(vals);
    return rc;
}

static void raw_cycle(ddb_client *c, const char *name)
{
    char ver[LK_UUID_LEN + 1];
    ddb_error err = {0};
    if (raw_put(c, name, ver, 20, &err) != DDB_OK ||
        raw_del(c, name, ver, &err) != DDB_OK)
        die("raw cycle on %s: %s", name, err.msg);
    ddb_error_clear(&err);
}

/* ---- engine helpers ---- */

static lk_engine *engine_new(const char *host, int lease_s, int64_t hb_ms)
{
    lk_error err = {0};
    lk_engine_options eo = {.table = O.table, .host = host, .lease_s = lease_s,
                            .heartbeat_ms = hb_ms};
    lk_engine *e = lk_engine_new(CFG, &eo, &err);
    if (!e)
        die("cannot start the lock engine: %s", err.msg);
    return e;
}

static void engine_cycle(lk_engine *e, const char *name)
{
    lk_acquire_args a = {.name = name, .mode = LK_ACQ_TRY};
    lk_lock *l = NULL;
    lk_error err = {0};
    if (lk_acquire_sync(e, &a, &l, &err) != LK_OK)
        die("engine acquire of %s: %s", name, err.msg);
    if (lk_lock_release(l, &err) != LK_OK)
        die("engine release of %s: %s", name, err.msg);
    lk_lock_unref(l);
}

/* open(O_CREAT|O_WRONLY|O_NONBLOCK) + close + unlink: what touch and rm do
 * to the lock (touch's futimens is left out: see scripts/bench). */
static int mount_cycle(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_NONBLOCK | O_NOCTTY, 0666);
    if (fd < 0)
        return -1;
    close(fd);
    return unlink(path);
}

/* ---- cycle: uncontended acquire+release, target and raw interleaved ---- */

static void cmd_cycle(void)
{
    ddb_client *c = client_new();
    lk_engine *e = O.mount ? NULL : engine_new("lkbench-engine", 20, 0);
    char path[4096];
    const long block = 25;
    double *t = calloc((size_t)O.n, sizeof *t), *r = calloc((size_t)O.n, sizeof *r);
    long nt = 0, nr = 0;
    if (!t || !r)
        die("out of memory");
    if (O.mount)
        snprintf(path, sizeof path, "%s/cycle-fs", O.mount);
    for (int i = 0; i < 10; i++) { /* warm up connections and caches */
        raw_cycle(c, "cycle-raw");
        if (e)
            engine_cycle(e, "cycle-engine");
        else if (mount_cycle(path) != 0)
            die("%s: %s", path, strerror(errno));
    }
    while (nt < O.n || nr < O.n) {
        for (long i = 0; i < block && nt < O.n; i++) {
            double t0 = now_ms_f();
            if (e)
                engine_cycle(e, "cycle-engine");
            else if (mount_cycle(path) != 0)
                die("%s: %s", path, strerror(errno));
            t[nt++] = now_ms_f() - t0;
        }
        for (long i = 0; i < block && nr < O.n; i++) {
            double t0 = now_ms_f();
            raw_cycle(c, "cycle-raw");
            r[nr++] = now_ms_f() - t0;
        }
    }
    res_dist("target", t, (size_t)nt);
    res_dist("raw", r, (size_t)nr);
    free(t);
    free(r);
    lk_engine_free(e);
    ddb_client_free(c);
}

/* ---- handoff: holder engine releases, waiter engine (polling) takes ---- */

typedef struct waitctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    double at;
    lk_lock *lock;
    lk_error err;
} waitctx;

static void on_acquired(lk_lock *l, const lk_error *err, void *arg)
{
    waitctx *w = arg;
    double at = now_ms_f();
    pthread_mutex_lock(&w->mu);
    w->at = at;
    w->lock = l;
    if (err)
        w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void cmd_handoff(void)
{
    lk_engine *a = engine_new("lkbench-holder", 20, 0);
    lk_engine *b = engine_new("lkbench-waiter", 20, 0);
    double *lat = calloc((size_t)O.n, sizeof *lat);
    if (!lat)
        die("out of memory");
    for (long i = 0; i < O.n; i++) {
        lk_acquire_args aa = {.name = "handoff", .mode = LK_ACQ_TRY};
        lk_lock *held = NULL;
        lk_error err = {0};
        if (lk_acquire_sync(a, &aa, &held, &err) != LK_OK)
            die("holder acquire: %s", err.msg);
        waitctx w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                     .cv = PTHREAD_COND_INITIALIZER};
        lk_acquire_args wa = {.name = "handoff", .mode = LK_ACQ_WAIT,
                              .deadline_ms = lk_now_ms() + 60000};
        lk_acquire(b, &wa, on_acquired, &w);
        /* let the waiter reach its backed-off poll interval, at a random phase */
        usleep((useconds_t)(100000 + lk_random_below(150000)));
        if (lk_lock_release(held, &err) != LK_OK)
            die("holder release: %s", err.msg);
        double rel = now_ms_f();
        lk_lock_unref(held);
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (!w.lock)
            die("waiter: %s", w.err.msg);
        lat[i] = w.at - rel;
        if (lk_lock_release(w.lock, &err) != LK_OK)
            die("waiter release: %s", err.msg);
        lk_lock_unref(w.lock);
    }
    res_dist("handoff", lat, (size_t)O.n);
    free(lat);
    lk_engine_free(a);
    lk_engine_free(b);
}

/* ---- lynkwait: lynk's waiter (sleep the observed lease, then take over) ---- */

typedef struct lynkctx {
    const char *name;
    double acquired_at;
    char ver[LK_UUID_LEN + 1];
    atomic_int observed;  /* the waiter saw the holder's item */
} lynkctx;

static void *lynk_waiter(void *arg)
{
    lynkctx *x = arg;
    ddb_client *c = client_new();
    ddb_error err = {0};
    for (;;) {
        if (raw_put(c, x->name, x->ver, O.lease_s, &err) == DDB_OK)
            break;
        if (err.code != DDB_ERR_CONDITION)
            die("lynk waiter put: %s", err.msg);
        ddb_error_clear(&err);
        json_t *key = json_object(), *item = NULL;
        json_object_set_new(key, "lockKey", ddb_s(x->name));
        if (ddb_get_item(c, O.table, key, &item, 0, &err) != DDB_OK)
            die("lynk waiter get: %s", err.msg);
        json_decref(key);
        if (!item)
            continue; /* released between the put and the get: try again */
        long long lease = 20;
        ddb_item_n(item, "leaseDuration", &lease);
        char seen[64];
        snprintf(seen, sizeof seen, "%s", ddb_item_s(item, "versionNumber") ?
                 ddb_item_s(item, "versionNumber") : "");
        json_decref(item);
        atomic_store(&x->observed, 1);
        usleep((useconds_t)(lease * 1000000)); /* lynk: sleep a whole lease */
        /* the take-over put */
        if (lk_uuid4(x->ver) != 0)
            die("no random source");
        json_t *it = lock_item(x->name, x->ver, O.lease_s), *vals = json_object();
        json_object_set_new(vals, ":old", ddb_s(seen));
        ddb_cond cond = {.expr = "attribute_not_exists(lockKey) OR "
                                 "versionNumber = :old", .values = vals};
        ddb_code rc = ddb_put_item(c, O.table, it, &cond, 0, &err);
        json_decref(it);
        json_decref(vals);
        if (rc == DDB_OK)
            break;
        if (rc != DDB_ERR_CONDITION)
            die("lynk waiter take-over: %s", err.msg);
        ddb_error_clear(&err);
    }
    x->acquired_at = now_ms_f();
    ddb_client_free(c);
    return NULL;
}

static void cmd_lynkwait(void)
{
    ddb_client *c = client_new();
    double *lat = calloc((size_t)O.n, sizeof *lat);
    if (!lat)
        die("out of memory");
    for (long i = 0; i < O.n; i++) {
        char ver[LK_UUID_LEN + 1];
        ddb_error err = {0};
        lynkctx x = {.name = "lynk-handoff"};
        pthread_t th;
        if (raw_put(c, x.name, ver, O.lease_s, &err) != DDB_OK)
            die("holder put: %s", err.msg);
        if (pthread_create(&th, NULL, lynk_waiter, &x) != 0)
            die("cannot start a thread");
        while (!atomic_load(&x.observed))
            usleep(1000);
        usleep((useconds_t)(100000 + lk_random_below(150000)));
        if (raw_del(c, x.name, ver, &err) != DDB_OK)
            die("holder release: %s", err.msg);
        double rel = now_ms_f();
        pthread_join(th, NULL);
        lat[i] = x.acquired_at - rel;
        if (raw_del(c, x.name, x.ver, &err) != DDB_OK)
            die("waiter release: %s", err.msg);
    }
    res_dist("lynkwait", lat, (size_t)O.n);
    free(lat);
    ddb_client_free(c);
}

/* ---- rawput: N conditional puts over K threads (the server's put rate) ---- */

static atomic_long next_ix;

static void *rawput_thread(void *arg)
{
    ddb_client *c = client_new();
    char name[128], ver[LK_UUID_LEN + 1];
    ddb_error err = {0};
    (void)arg;
    for (;;) {
        long i = atomic_fetch_add(&next_ix, 1);
        if (i >= O.n)
            break;
        snprintf(name, sizeof name, "%s-%06ld", O.prefix, i);
        if (raw_put(c, name, ver, O.lease_s, &err) != DDB_OK)
            die("put %s: %s", name, err.msg);
    }
    ddb_client_free(c);
    return NULL;
}

static void cmd_rawput(void)
{
    pthread_t th[256];
    long k = O.threads < 1 ? 1 : O.threads > 256 ? 256 : O.threads;
    double t0 = now_ms_f();
    for (long i = 0; i < k; i++)
        if (pthread_create(&th[i], NULL, rawput_thread, NULL) != 0)
            die("cannot start a thread");
    for (long i = 0; i < k; i++)
        pthread_join(th[i], NULL);
    double s = (now_ms_f() - t0) / 1e3;
    res("rawput.secs", s);
    res("rawput.rate", (double)O.n / s);
}

/* ---- capacity: N locks held by one engine through a heartbeat ---- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

typedef struct capctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long outstanding, got, failed;
    lk_lock **locks;
    char firsterr[512];
} capctx;

static capctx CAP = {.mu = PTHREAD_MUTEX_INITIALIZER,
                     .cv = PTHREAD_COND_INITIALIZER};

static void cap_acquired(lk_lock *l, const lk_error *err, void *arg)
{
    long i = (long)(intptr_t)arg;
    pthread_mutex_lock(&CAP.mu);
    CAP.outstanding--;
    if (l) {
        CAP.locks[i] = l;
        CAP.got++;
    } else {
        if (!CAP.failed++ && err)
            snprintf(CAP.firsterr, sizeof CAP.firsterr, "%s", err->msg);
    }
    pthread_cond_signal(&CAP.cv);
    pthread_mutex_unlock(&CAP.mu);
}

static atomic_long rel_ix, rel_fail;

static void *cap_release_thread(void *arg)
{
    lk_error err;
    (void)arg;
    for (;;) {
        long i = atomic_fetch_add(&rel_ix, 1);
        if (i >= O.n)
            break;
        if (!CAP.locks[i])
            continue;
        if (lk_lock_release(CAP.locks[i], &err) != LK_OK)
            atomic_fetch_add(&rel_fail, 1);
        lk_lock_unref(CAP.locks[i]);
        CAP.locks[i] = NULL;
    }
    return NULL;
}

static void cmd_capacity(void)
{
    char (*names)[24] = calloc((size_t)O.n, sizeof *names);
    CAP.locks = calloc((size_t)O.n, sizeof *CAP.locks);
    if (!names || !CAP.locks)
        die("out of memory");
    for (long i = 0; i < O.n; i++) /* touch the pages before the baseline */
        snprintf(names[i], sizeof names[i], "cap-%07ld", i);
    memset(CAP.locks, 0, (size_t)O.n * sizeof *CAP.locks);
    lk_engine *e = engine_new("lkbench-capacity", O.lease_s, O.heartbeat_ms);
    usleep(200000);
    long rss0 = rss_kib();
    double t0 = now_ms_f();
    long rss_tenth = -1, got_tenth = 0;
    for (long i = 0; i < O.n; i++) {
        if (i == O.n / 10) { /* the fixed costs (connections...) are paid */
            pthread_mutex_lock(&CAP.mu);
            got_tenth = CAP.got;
            pthread_mutex_unlock(&CAP.mu);
            rss_tenth = rss_kib();
        }
        pthread_mutex_lock(&CAP.mu);
        while (CAP.outstanding >= 512)
            pthread_cond_wait(&CAP.cv, &CAP.mu);
        CAP.outstanding++;
        pthread_mutex_unlock(&CAP.mu);
        lk_acquire_args a = {.name = names[i], .mode = LK_ACQ_TRY};
        lk_acquire(e, &a, cap_acquired, (void *)(intptr_t)i);
    }
    pthread_mutex_lock(&CAP.mu);
    while (CAP.outstanding > 0)
        pthread_cond_wait(&CAP.cv, &CAP.mu);
    pthread_mutex_unlock(&CAP.mu);
    double acq_s = (now_ms_f() - t0) / 1e3;
    long rss1 = rss_kib();
    res("cap.acquired", (double)CAP.got);
    res("cap.acquire_failed", (double)CAP.failed);
    if (CAP.failed)
        fprintf(stderr, "lkbench: %ld acquires failed, first: %s\n", CAP.failed,
                CAP.firsterr);
    res("cap.acquire_secs", acq_s);
    res("cap.acquire_rate", (double)CAP.got / acq_s);
    res("cap.rss_delta_kib", (double)(rss1 - rss0));
    res("cap.bytes_per_lock", CAP.got ? (double)(rss1 - rss0) * 1024.0 / (double)CAP.got : 0);
    if (rss_tenth >= 0 && CAP.got > got_tenth)
        res("cap.marginal_bytes_per_lock", (double)(rss1 - rss_tenth) * 1024.0 /
                                           (double)(CAP.got - got_tenth));

    /* hold one full heartbeat cycle (plus the refresh jitter) after the last
     * acquire, and until there were as many refreshes as locks; give up
     * after two cycles plus the acquire time */
    lk_stats st;
    double hold0 = now_ms_f();
    double min_end = hold0 + 1.3 * (double)O.heartbeat_ms;
    double give_up = hold0 + 2.0 * (double)O.heartbeat_ms + acq_s * 1e3 + 30000;
    for (;;) {
        lk_engine_stats(e, &st);
        if (((long)st.refreshes >= CAP.got && now_ms_f() >= min_end) ||
            now_ms_f() > give_up)
            break;
        fprintf(stderr, "\rlkbench: holding %zu locks, %llu refreshes, %llu late, %llu lost   ",
                st.held, (unsigned long long)st.refreshes,
                (unsigned long long)st.refresh_late, (unsigned long long)st.lost);
        sleep(1);
    }
    fprintf(stderr, "\n");
    long rss2 = rss_kib();
    res("cap.held_secs", (now_ms_f() - hold0) / 1e3);
    res("cap.held", (double)st.held);
    res("cap.refreshes", (double)st.refreshes);
    res("cap.refresh_late", (double)st.refresh_late);
    res("cap.lost", (double)st.lost);
    res("cap.worst_slack_ms", (double)st.worst_slack_ms);
    res("cap.rss_after_hold_kib", (double)(rss2 - rss0));

    pthread_t th[64];
    t0 = now_ms_f();
    for (int i = 0; i < 64; i++)
        if (pthread_create(&th[i], NULL, cap_release_thread, NULL) != 0)
            die("cannot start a thread");
    for (int i = 0; i < 64; i++)
        pthread_join(th[i], NULL);
    double rel_s = (now_ms_f() - t0) / 1e3;
    res("cap.release_rate", (double)CAP.got / rel_s);
    res("cap.release_failed", (double)atomic_load(&rel_fail));
    lk_engine_free(e);
    free(CAP.locks);
    free(names);
}

/* ---- par: P processes, each cycling its own lock, for S seconds ---- */

static long par_child(int idx, double end_ms)
{
    long n = 0;
    char name[64], path[4096];
    snprintf(name, sizeof name, "par-%03d", idx);
    if (O.mount) {
        snprintf(path, sizeof path, "%s/%s", O.mount, name);
        while (now_ms_f() < end_ms) {
            if (mount_cycle(path) != 0) {
                fprintf(stderr, "lkbench: %s: %s\n", path, strerror(errno));
                return -1;
            }
            n++;
        }
        return n;
    }
    load_config();
    ddb_client *c = client_new();
    while (now_ms_f() < end_ms) {
        raw_cycle(c, name);
        n++;
    }
    ddb_client_free(c);
    return n;
}

static void cmd_par(void)
{
    int go[2], out[2];
    long p = O.procs;
    if (pipe(go) != 0 || pipe(out) != 0)
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    for (long i = 0; i < p; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            char b;
            close(go[1]);
            close(out[0]);
            if (read(go[0], &b, 1) < 0) /* EOF: everybody starts together */
                _exit(1);
            double start = now_ms_f();
            long n = par_child((int)i, start + O.secs * 1e3);
            if (write(out[1], &n, sizeof n) != (ssize_t)sizeof n)
                _exit(1);
            _exit(n < 0);
        }
    }
    close(go[0]);
    close(out[1]);
    usleep(300000);
    double t0 = now_ms_f();
    close(go[1]);
    long total = 0, bad = 0, n;
    for (long i = 0; i < p; i++) {
        if (read(out[0], &n, sizeof n) != (ssize_t)sizeof n || n < 0)
            bad++;
        else
            total += n;
    }
    double s = (now_ms_f() - t0) / 1e3;
    while (wait(NULL) > 0)
        ;
    if (bad)
        die("%ld of %ld processes failed", bad, p);
    res("par.cycles", (double)total);
    res("par.rate", (double)total / s);
}

/* ---- ls / scan ---- */

static int count_item(json_t *item, void *arg)
{
    (void)item;
    ++*(long *)arg;
    return 0;
}

static void scan_once(ddb_client *c, long *items)
{
    ddb_error err = {0};
    *items = 0;
    if (ddb_scan(c, O.table, true, count_item, items, &err) != DDB_OK)
        die("scan: %s", err.msg);
}

static double ls_once(long *entries)
{
    double t0 = now_ms_f();
    DIR *d = opendir(O.mount);
    if (!d)
        die("%s: %s", O.mount, strerror(errno));
    struct dirent *de;
    *entries = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            ++*entries;
    closedir(d);
    return now_ms_f() - t0;
}

/* The first listing of a fresh mount (cold), then runs of a raw Scan and a
 * listing, interleaved, each listing past the mount's cache (cache=1). */
static void cmd_ls(void)
{
    ddb_client *c = client_new();
    double *t = calloc((size_t)O.runs, sizeof *t), *r = calloc((size_t)O.runs, sizeof *r);
    long entries = 0, items = 0;
    if (!t || !r)
        die("out of memory");
    res("ls.cold", ls_once(&entries));
    res("ls.cold_entries", (double)entries);
    for (long i = 0; i < O.runs; i++) {
        double t0 = now_ms_f();
        scan_once(c, &items);
        r[i] = now_ms_f() - t0;
        lk_sleep_until_ms(lk_now_ms() + 1200);
        t[i] = ls_once(&entries);
    }
    res("ls.entries", (double)entries);
    res("scan.items", (double)items);
    res_dist("ls", t, (size_t)O.runs);
    res_dist("scan", r, (size_t)O.runs);
    free(t);
    free(r);
    ddb_client_free(c);
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr, "usage: lkbench cycle|handoff|lynkwait|rawput|capacity|par|"
                    "ls [--table T] [--mount DIR] [--n N] [--runs R] "
                    "[--threads K] [--procs P] [--secs S] [--lease S] "
                    "[--heartbeat-ms MS] [--prefix P]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"table", 1, 0, 't'}, {"mount", 1, 0, 'm'}, {"n", 1, 0, 'n'},
        {"runs", 1, 0, 'r'}, {"threads", 1, 0, 'k'}, {"procs", 1, 0, 'p'},
        {"secs", 1, 0, 's'}, {"lease", 1, 0, 'l'}, {"heartbeat-ms", 1, 0, 'h'},
        {"prefix", 1, 0, 'x'}, {0, 0, 0, 0}};
    int ch;
    if (argc < 2)
        usage();
    O.cmd = argv[1];
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 't': O.table = optarg; break;
        case 'm': O.mount = optarg; break;
        case 'n': O.n = atol(optarg); break;
        case 'r': O.runs = atol(optarg); break;
        case 'k': O.threads = atol(optarg); break;
        case 'p': O.procs = atol(optarg); break;
        case 's': O.secs = atof(optarg); break;
        case 'l': O.lease_s = atoi(optarg); break;
        case 'h': O.heartbeat_ms = atoll(optarg); break;
        case 'x': O.prefix = optarg; break;
        default: usage();
        }
    }
    if (O.n < 1 || O.runs < 1 || O.procs < 1 || O.secs <= 0 || O.lease_s < 1)
        die("--n, --runs, --procs, --secs and --lease must be positive");
    signal(SIGPIPE, SIG_IGN);
    lk_log_init("lkbench", LK_LOG_WARN, false);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bool need_table = !(strcmp(O.cmd, "par") == 0 && O.mount);
    if (need_table && !O.table)
        die("%s needs --table", O.cmd);
    if (need_table && strcmp(O.cmd, "par") != 0) /* par: each child its own */
        load_config();
    if (strcmp(O.cmd, "cycle") == 0) cmd_cycle();
    else if (strcmp(O.cmd, "handoff") == 0) cmd_handoff();
    else if (strcmp(O.cmd, "lynkwait") == 0) cmd_lynkwait();
    else if (strcmp(O.cmd, "rawput") == 0) cmd_rawput();
    else if (strcmp(O.cmd, "capacity") == 0) cmd_capacity();
    else if (strcmp(O.cmd, "par") == 0) {
        if (!O.mount && !O.table)
            die("par needs --mount DIR or --table T");
        cmd_par();
    } else if (strcmp(O.cmd, "ls") == 0) {
        if (!O.mount)
            die("ls needs --mount DIR");
        cmd_ls();
    }
    else usage();
    aws_config_free(CFG);
    curl_global_cleanup();
    return 0;
}
