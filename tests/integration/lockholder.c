/* tests/integration/lockholder.c — owns the test harness of the lock engine:
 * one process, one engine, one lock name, acquired and released K times, so
 * that tests can make several engines (separate processes, separate host
 * identifiers) contend for one lock and check what each of them saw.
 *
 *   lockholder --table T --name N [--host H] [--lease S] [--heartbeat MS]
 *              [--mode try|wait] [--hold MS[,MS...]] [--gap MS] [--count K]
 *              [--log FILE] [--wait MS] [--poll-min MS] [--poll-max MS]
 *              [--endpoint URL]
 *
 * --hold -1 holds until the lock is lost or the process is killed; a list
 * of holds is used in turn, one per acquisition.
 *
 * Every event is one line on stdout, flushed at once, with the time on the
 * monotonic clock (CLOCK_MONOTONIC, the same for every process of the host):
 *   ready T                      engine started
 *   acquiring T                  lk_acquire_sync called
 *   acquired T VERSION WRITTEN   WRITTEN: send time of the acquiring write
 *   version T VERSION WRITTEN    the held version changed (a refresh)
 *   lost T VERSION WRITTEN       on_lost ran; WRITTEN: last successful write
 *   released T                   lk_lock_release returned LK_OK
 *   busy T | timeout T           a try found it held | a wait timed out
 *   error T CODE MESSAGE         anything else
 * The critical-section log (--log) gets "enter HOST PID SEQ T" after each
 * acquire and "exit HOST PID SEQ T [lost]" before each release, each one
 * write(2) to a descriptor opened with O_APPEND.
 *
 * Exit status: 0 all acquisitions done, 2 busy, 3 lost, 4 timeout, 5 other
 * engine error, 1 bad usage or configuration. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/config.h"
#include "lock/engine.h"
#include "util/clock.h"
#include "util/log.h"

#define MAX_HOLDS 16

typedef struct opts {
    const char *table, *name, *host, *log, *endpoint;
    int lease_s, count;
    int64_t heartbeat_ms, gap_ms, wait_ms, poll_min_ms, poll_max_ms;
    int64_t holds[MAX_HOLDS];
    int nholds;
    lk_acq_mode mode;
} opts;

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool lost_seen;
static int log_fd = -1;

static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void cs_log(const char *what, const opts *o, int seq, const char *tag)
{
    char line[512];
    if (log_fd < 0)
        return;
    int n = snprintf(line, sizeof(line), "%s %s %d %d %lld%s%s\n", what,
                     o->host, (int)getpid(), seq, (long long)lk_now_ms(),
                     tag ? " " : "", tag ? tag : "");
    if (n < 0 || (size_t)n >= sizeof(line) || write(log_fd, line, (size_t)n) != n) {
        fprintf(stderr, "lockholder: cannot write the log: %s\n", strerror(errno));
        exit(5);
    }
}

static void on_lost(lk_lock *l, void *arg)
{
    lk_lock_info info;
    int64_t t = lk_now_ms();
    lk_lock_info_get(l, &info);
    atomic_store(&lost_seen, true);
    event("lost %lld %s %lld\n", (long long)t, info.version,
          (long long)info.written_ms);
}

static void usage(void)
{
    fprintf(stderr, "usage: lockholder --table T --name N [--host H] [--lease S] "
            "[--heartbeat MS] [--mode try|wait] [--hold MS[,MS...]] [--gap MS] "
            "[--count K] [--log FILE] [--wait MS] [--poll-min MS] [--poll-max MS] "
            "[--endpoint URL]\n");
    exit(1);
}

static int64_t num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "lockholder: %s must be an integer, not '%s'\n", what, s);
        exit(1);
    }
    return v;
}

static void parse_holds(opts *o, const char *s)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    o->nholds = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nholds == MAX_HOLDS)
            usage();
        o->holds[o->nholds++] = num(t, "--hold");
    }
    if (o->nholds == 0)
        usage();
}

static void parse(opts *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"table", 1, 0, 't'}, {"name", 1, 0, 'n'}, {"host", 1, 0, 'H'},
        {"lease", 1, 0, 'l'}, {"heartbeat", 1, 0, 'b'}, {"mode", 1, 0, 'm'},
        {"hold", 1, 0, 'h'}, {"gap", 1, 0, 'g'}, {"count", 1, 0, 'c'},
        {"log", 1, 0, 'L'}, {"wait", 1, 0, 'w'}, {"poll-min", 1, 0, 'p'},
        {"poll-max", 1, 0, 'P'}, {"endpoint", 1, 0, 'e'}, {0, 0, 0, 0}};
    static char hostbuf[256];
    int c;
    memset(o, 0, sizeof(*o));
    o->lease_s = 3;
    o->count = 1;
    o->mode = LK_ACQ_WAIT;
    o->nholds = 1;
    o->holds[0] = 100;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't': o->table = optarg; break;
        case 'n': o->name = optarg; break;
        case 'H': o->host = optarg; break;
        case 'l': o->lease_s = (int)num(optarg, "--lease"); break;
        case 'b': o->heartbeat_ms = num(optarg, "--heartbeat"); break;
        case 'm':
            if (strcmp(optarg, "try") == 0)
                o->mode = LK_ACQ_TRY;
            else if (strcmp(optarg, "wait") == 0)
                o->mode = LK_ACQ_WAIT;
            else
                usage();
            break;
        case 'h': parse_holds(o, optarg); break;
        case 'g': o->gap_ms = num(optarg, "--gap"); break;
        case 'c': o->count = (int)num(optarg, "--count"); break;
        case 'L': o->log = optarg; break;
        case 'w': o->wait_ms = num(optarg, "--wait"); break;
        case 'p': o->poll_min_ms = num(optarg, "--poll-min"); break;
        case 'P': o->poll_max_ms = num(optarg, "--poll-max"); break;
        case 'e': o->endpoint = optarg; break;
        default: usage();
        }
    }
    if (!o->table || !o->name || optind != argc)
        usage();
    if (!o->host) {
        if (gethostname(hostbuf, sizeof(hostbuf) - 1) != 0)
            snprintf(hostbuf, sizeof(hostbuf), "lockholder");
        o->host = hostbuf;
    }
}

/* Hold for ms (or until lost when ms < 0), reporting version changes.
 * Returns false when the lock was lost. */
static bool hold(lk_lock *l, int64_t ms, char *version)
{
    int64_t end = ms < 0 ? INT64_MAX : lk_now_ms() + ms;
    lk_lock_info info;
    for (;;) {
        lk_lock_info_get(l, &info);
        if (info.state == LK_STATE_LOST || atomic_load(&lost_seen))
            return false;
        if (strcmp(info.version, version) != 0) {
            snprintf(version, 40, "%s", info.version);
            event("version %lld %s %lld\n", (long long)lk_now_ms(),
                  info.version, (long long)info.written_ms);
        }
        int64_t now = lk_now_ms();
        if (now >= end)
            return true;
        lk_sleep_until_ms(now + 10 < end ? now + 10 : end);
    }
}

static int code_status(lk_code c)
{
    switch (c) {
    case LK_ERR_BUSY: return 2;
    case LK_ERR_LOST: return 3;
    case LK_ERR_TIMEOUT: return 4;
    default: return 5;
    }
}

static int one_round(lk_engine *e, const opts *o, int seq)
{
    lk_acquire_args a = {.name = o->name, .mode = o->mode, .pid = getpid(),
                         .uid = getuid(), .on_lost = on_lost};
    lk_lock *l = NULL;
    lk_error err;
    lk_lock_info info;
    char version[40];

    event("acquiring %lld\n", (long long)lk_now_ms());
    if (o->wait_ms > 0)
        a.deadline_ms = lk_now_ms() + o->wait_ms;
    lk_code rc = lk_acquire_sync(e, &a, &l, &err);
    if (rc != LK_OK) {
        if (rc == LK_ERR_BUSY)
            event("busy %lld\n", (long long)lk_now_ms());
        else if (rc == LK_ERR_TIMEOUT)
            event("timeout %lld\n", (long long)lk_now_ms());
        else
            event("error %lld %d %s\n", (long long)lk_now_ms(), (int)rc, err.msg);
        return code_status(rc);
    }
    int64_t t = lk_now_ms();
    lk_lock_info_get(l, &info);
    snprintf(version, sizeof(version), "%s", info.version);
    cs_log("enter", o, seq, NULL);
    event("acquired %lld %s %lld\n", (long long)t, info.version,
          (long long)info.written_ms);

    bool ok = hold(l, o->holds[seq % o->nholds], version);
    cs_log("exit", o, seq, ok ? NULL : "lost");
    int status = 0;
    if (!ok) {
        status = 3;
    } else if ((rc = lk_lock_release(l, &err)) == LK_OK) {
        event("released %lld\n", (long long)lk_now_ms());
    } else {
        event("error %lld %d %s\n", (long long)lk_now_ms(), (int)rc, err.msg);
        status = code_status(rc);
    }
    lk_lock_unref(l);
    return status;
}

int main(int argc, char **argv)
{
    opts o;
    aws_config *cfg = NULL;
    aws_error aerr;
    lk_error err;

    setvbuf(stdout, NULL, _IOLBF, 0);
    parse(&o, argc, argv);
    lk_log_init("lockholder", LK_LOG_WARN, false);
    if (o.log && (log_fd = open(o.log, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
        fprintf(stderr, "lockholder: cannot open %s: %s\n", o.log, strerror(errno));
        return 1;
    }
    aws_options ao = {.endpoint = o.endpoint};
    if (aws_config_load(&ao, &cfg, &aerr) != AWS_OK) {
        fprintf(stderr, "lockholder: %s\n", aerr.msg);
        return 1;
    }
    lk_engine_options eo = {.table = o.table, .host = o.host,
                            .lease_s = o.lease_s, .heartbeat_ms = o.heartbeat_ms,
                            .poll_min_ms = o.poll_min_ms,
                            .poll_max_ms = o.poll_max_ms};
    lk_engine *e = lk_engine_new(cfg, &eo, &err);
    if (!e) {
        fprintf(stderr, "lockholder: %s\n", err.msg);
        aws_config_free(cfg);
        return 1;
    }
    event("ready %lld\n", (long long)lk_now_ms());

    int status = 0;
    for (int i = 0; i < o.count && status == 0; i++) {
        status = one_round(e, &o, i);
        if (status == 0 && o.gap_ms > 0 && i + 1 < o.count)
            lk_sleep_until_ms(lk_now_ms() + o.gap_ms);
    }
    lk_engine_free(e);
    aws_config_free(cfg);
    if (log_fd >= 0)
        close(log_fd);
    event("done %lld %d\n", (long long)lk_now_ms(), status);
    return status;
}
