/* lynkfs.c — the filesystem daemon: `lynkfs TABLE MOUNTPOINT [-o OPT,...]
 * [-f] [-d]`, also installed as mount.lynkfs for mount(8). Owns option
 * parsing, the checks done before going to the background (configuration,
 * credentials, the table), mounting, the FUSE loop, and the release of every
 * lock at unmount or SIGTERM.
 *
 * Exit status: 0 after a clean unmount, 1 on any failure (one line on
 * stderr naming the cause and the fix; nothing is left mounted). */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/config.h"
#include "ddb/ddb.h"
#include "fs/fs.h"
#include "lock/core.h"
#include "lock/engine.h"
#include "util/clock.h"
#include "util/log.h"

#define LOCK_KEY_ATTR "lockKey"
#define MAX_THREADS 64

typedef struct opts {
    char *table, *mountpoint;
    char *region, *endpoint, *profile, *host;
    char *lease, *heartbeat, *wait, *cache;
    int keep, ro, foreground, debug, help, version;
} opts;

enum { KEY_FG, KEY_DEBUG, KEY_HELP, KEY_VERSION, KEY_RO, KEY_DROP };

#define OPT(t, f) {t, offsetof(opts, f), 1}
static const struct fuse_opt opt_spec[] = {
    OPT("region=%s", region),
    OPT("endpoint=%s", endpoint),
    OPT("profile=%s", profile),
    OPT("host=%s", host),
    OPT("lease=%s", lease),
    OPT("heartbeat=%s", heartbeat),
    OPT("wait=%s", wait),
    OPT("cache=%s", cache),
    OPT("keep", keep),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("-f", KEY_FG),
    FUSE_OPT_KEY("-d", KEY_DEBUG),
    FUSE_OPT_KEY("debug", KEY_DEBUG),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    /* mount(8) flags: fake, sloppy, verbose */
    FUSE_OPT_KEY("-n", KEY_DROP),
    FUSE_OPT_KEY("-s", KEY_DROP),
    FUSE_OPT_KEY("-v", KEY_DROP),
    FUSE_OPT_END
};

/* fstab-only options: accepted and dropped. */
static const char *const fstab_only[] = {
    "_netdev", "auto", "noauto", "user", "users", "nouser", "owner", "group",
    "nofail", "defaults", "rw", "exec", "noexec", "suid", "nosuid", "dev",
    "nodev", "async", "sync", "atime", "noatime", "relatime", "norelatime",
    "strictatime", "diratime", "nodiratime", "loud", "silent", NULL
};

static bool is_fstab_only(const char *arg)
{
    for (int i = 0; fstab_only[i]; i++)
        if (strcmp(arg, fstab_only[i]) == 0)
            return true;
    /* user=NAME (as mount(8) passes it), x-systemd.*, comment=... */
    return strncmp(arg, "user=", 5) == 0 || strncmp(arg, "x-", 2) == 0 ||
           strncmp(arg, "comment=", 8) == 0;
}

static int opt_proc(void *data, const char *arg, int key,
                    struct fuse_args *outargs)
{
    opts *o = data;
    (void)outargs;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (!o->table)
            return (o->table = strdup(arg)) ? 0 : -1;
        if (!o->mountpoint)
            return (o->mountpoint = strdup(arg)) ? 0 : -1;
        fprintf(stderr, "lynkfs: unexpected argument '%s': give TABLE "
                        "MOUNTPOINT only (see lynkfs --help)\n", arg);
        return -1;
    case KEY_FG:
        o->foreground = 1;
        return 0;
    case KEY_DEBUG:
        o->debug = o->foreground = 1;
        return 1; /* libfuse prints its requests too */
    case KEY_HELP:
        o->help = 1;
        return 0;
    case KEY_VERSION:
        o->version = 1;
        return 0;
    case KEY_RO:
        o->ro = 1;
        return 1; /* also a read-only mount for the kernel */
    case KEY_DROP:
        return 0;
    case FUSE_OPT_KEY_OPT:
        return is_fstab_only(arg) ? 0 : 1;
    default:
        return 1;
    }
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: lynkfs TABLE MOUNTPOINT [-o OPT,...] [-f] [-d]\n"
        "Mount the DynamoDB lock table TABLE as a directory of locks.\n\n"
        "  -f                 stay in the foreground, log to stderr\n"
        "  -d                 debug: foreground, log every FUSE request\n"
        "  -o region=R        AWS region (else AWS_REGION, the profile)\n"
        "  -o endpoint=URL    DynamoDB endpoint (else AWS_ENDPOINT_URL...)\n"
        "  -o profile=P       AWS profile (else AWS_PROFILE, default)\n"
        "  -o lease=S         lease written into acquired locks (20)\n"
        "  -o heartbeat=S     refresh period, at most lease/2 (lease/4)\n"
        "  -o host=ID         hostIdentifier written (the host name)\n"
        "  -o wait=S          longest a blocking acquire waits, 0 = no limit (0)\n"
        "  -o cache=S         how stale a listing or a stat may be (1)\n"
        "  -o keep            locks stay held after their holder closes\n"
        "  -o ro              observe only: never acquire\n"
        "  -o allow_other,default_permissions,...  as FUSE\n"
        "fstab-only options (_netdev, auto, noauto, user, nofail, ...) are "
        "ignored.\n");
}

/* A number of seconds (decimals allowed) into milliseconds. */
static bool parse_secs(const char *name, const char *s, bool whole,
                       double min, int64_t *out_ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < min || v > 31536000.0 ||
        (whole && v != (double)(long long)v)) {
        fprintf(stderr, "lynkfs: %s=%s is not valid: give %s seconds%s "
                "(e.g. %s=%s)\n", name, s,
                whole ? "a whole number of" : "a number of",
                min > 0 ? (whole ? " >= 1" : " > 0") : " >= 0", name,
                strcmp(name, "lease") == 0 ? "20" : "5");
        return false;
    }
    if (min > 0 && !whole && v <= 0) {
        fprintf(stderr, "lynkfs: %s=%s must be above 0\n", name, s);
        return false;
    }
    *out_ms = (int64_t)(v * 1000.0 + 0.5);
    return true;
}

typedef struct settings {
    int lease_s;
    int64_t heartbeat_ms, wait_ms, cache_ms;
    char host[256];
} settings;

static bool settings_make(const opts *o, settings *s)
{
    int64_t ms;
    memset(s, 0, sizeof *s);
    s->lease_s = 20;
    if (o->lease) {
        if (!parse_secs("lease", o->lease, true, 1, &ms))
            return false;
        if (ms > 86400000) {
            fprintf(stderr, "lynkfs: lease=%s is too long: use at most 86400 "
                            "seconds\n", o->lease);
            return false;
        }
        s->lease_s = (int)(ms / 1000);
    }
    s->heartbeat_ms = (int64_t)s->lease_s * 250;
    if (o->heartbeat) {
        if (!parse_secs("heartbeat", o->heartbeat, false, 0.001, &ms))
            return false;
        if (ms < 1 || ms > (int64_t)s->lease_s * 500) {
            fprintf(stderr, "lynkfs: heartbeat=%s is above half the lease "
                    "(%d s): use heartbeat=%g or less, or a longer lease=\n",
                    o->heartbeat, s->lease_s, s->lease_s / 2.0);
            return false;
        }
        s->heartbeat_ms = ms;
    }
    if (o->wait && !parse_secs("wait", o->wait, false, 0, &s->wait_ms))
        return false;
    s->cache_ms = 1000;
    if (o->cache && !parse_secs("cache", o->cache, false, 0, &s->cache_ms))
        return false;
    if (o->host) {
        if (!*o->host || strlen(o->host) >= sizeof s->host) {
            fprintf(stderr, "lynkfs: host= must be 1 to %zu characters\n",
                    sizeof s->host - 1);
            return false;
        }
        snprintf(s->host, sizeof s->host, "%s", o->host);
    } else if (gethostname(s->host, sizeof s->host - 1) != 0 || !*s->host) {
        fprintf(stderr, "lynkfs: cannot read the host name: set host=\n");
        return false;
    }
    return true;
}

/* The table must exist, be usable and have lynk's key schema. */
static bool table_check(aws_config *cfg, const char *table)
{
    /* a short budget: mount(8) and boot should not hang on a dead endpoint */
    ddb_client_options co = {.connect_timeout_ms = 3000,
                             .request_timeout_ms = 5000,
                             .default_budget_ms = 8000};
    ddb_client *c = ddb_client_new(cfg, &co);
    ddb_table_info info;
    ddb_error err = {0};
    bool ok = false;

    if (!c) {
        fprintf(stderr, "lynkfs: out of memory\n");
        return false;
    }
    if (ddb_describe_table(c, table, &info, &err) != DDB_OK) {
        if (err.code == DDB_ERR_NOT_FOUND)
            fprintf(stderr, "lynkfs: table %s does not exist at %s (region "
                    "%s): create it with 'lynk create-table %s', or check "
                    "region= and endpoint=\n", table,
                    aws_config_endpoint(cfg), aws_config_region(cfg), table);
        else
            fprintf(stderr, "lynkfs: cannot check table %s: %s\n", table,
                    err.msg);
    } else if (strcmp(info.hash_key, LOCK_KEY_ATTR) != 0 ||
               strcmp(info.hash_type, "S") != 0 || info.has_range_key) {
        fprintf(stderr, "lynkfs: table %s is not a lock table (its key is %s "
                "%s%s; a lock table has only lockKey S): mount a table made "
                "by 'lynk create-table'\n", table, info.hash_key,
                info.hash_type, info.has_range_key ? " with a sort key" : "");
    } else if (strcmp(info.status, "ACTIVE") != 0 &&
               strcmp(info.status, "UPDATING") != 0) {
        fprintf(stderr, "lynkfs: table %s is %s: wait until it is ACTIVE, "
                "then mount again\n", table, info.status);
    } else {
        ok = true;
    }
    ddb_error_clear(&err);
    ddb_client_free(c);
    return ok;
}

static int run(struct fuse_session *se, lk_fs *fs, aws_config *cfg,
               const opts *o, const settings *st)
{
    lk_error err = {0};
    lk_engine_options eo = {
        .table = o->table, .host = st->host, .lease_s = st->lease_s,
        .heartbeat_ms = st->heartbeat_ms,
    };
    lk_engine *e = lk_engine_new(cfg, &eo, &err);
    if (!e) {
        lk_error("cannot start the lock engine: %s", err.msg);
        return 1;
    }
    if (lk_fs_start(fs, e) != 0) {
        lk_error("cannot start: out of memory or threads");
        lk_fs_stop(fs);
        lk_engine_free(e);
        return 1;
    }
    lk_info("mounted table %s (%s, lease %d s, heartbeat %lld ms, host %s)",
            o->table, aws_config_endpoint(cfg), st->lease_s,
            (long long)st->heartbeat_ms, st->host);

    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    int rc = 1;
    if (lc) {
        fuse_loop_cfg_set_max_threads(lc, MAX_THREADS);
        fuse_loop_cfg_set_idle_threads(lc, 4);
        fuse_loop_cfg_set_clone_fd(lc, 0);
        rc = fuse_session_loop_mt(se, lc) == 0 ? 0 : 1;
        fuse_loop_cfg_destroy(lc);
    }
    lk_info("unmounting table %s: releasing every lock held here", o->table);
    lk_fs_stop(fs);
    lk_engine_free(e); /* releases what is still held */
    return rc;
}

/* libfuse reports bad options and mount failures on stderr itself; catch
 * what it says so that the user gets it as our one line. */
typedef struct err_capture {
    int saved, pipe[2];
} err_capture;

static void capture_begin(err_capture *c)
{
    fflush(stderr);
    c->saved = -1;
    if (pipe2(c->pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return;
    c->saved = dup(STDERR_FILENO);
    dup2(c->pipe[1], STDERR_FILENO);
}

/* What was written meanwhile, as one line without libfuse's "fuse: ". */
static void capture_end(err_capture *c, char *out, size_t outlen)
{
    out[0] = '\0';
    if (c->saved < 0)
        return;
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    close(c->pipe[1]);
    ssize_t n = read(c->pipe[0], out, outlen - 1);
    close(c->pipe[0]);
    out[n > 0 ? n : 0] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = (p[1] ? ' ' : '\0');
    if (strncmp(out, "fuse: ", 6) == 0)
        memmove(out, out + 6, strlen(out + 6) + 1);
}

/* Options libfuse does not know are refused before anything else is done:
 * a throwaway session parses them (it opens nothing until mounted). */
static bool fuse_options_check(struct fuse_args *args)
{
    struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);
    err_capture cap;
    char msg[512];
    bool ok = true;

    for (int i = 0; i < args->argc; i++)
        if (fuse_opt_add_arg(&copy, args->argv[i]) != 0) {
            fuse_opt_free_args(&copy);
            return false;
        }
    capture_begin(&cap);
    struct fuse_session *se = fuse_session_new(&copy, &lk_fs_ops, sizeof lk_fs_ops, NULL);
    capture_end(&cap, msg, sizeof msg);
    if (se)
        fuse_session_destroy(se);
    else {
        fprintf(stderr, "lynkfs: %s: see lynkfs --help for the options\n",
                msg[0] ? msg : "the FUSE options were not accepted");
        ok = false;
    }
    fuse_opt_free_args(&copy);
    return ok;
}

static bool mountpoint_check(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "lynkfs: cannot mount on %s: %s: create the directory "
                "first (mkdir -p %s)\n", dir, strerror(errno), dir);
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "lynkfs: cannot mount on %s: not a directory: give a "
                "directory as MOUNTPOINT\n", dir);
        return false;
    }
    return true;
}

static void opts_free(opts *o)
{
    char **s[] = {&o->table, &o->mountpoint, &o->region, &o->endpoint,
                  &o->profile, &o->host, &o->lease, &o->heartbeat, &o->wait,
                  &o->cache};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        free(*s[i]);
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    opts o = {0};
    settings st;
    aws_config *cfg = NULL;
    aws_error aerr = {0};
    lk_error lerr = {0};
    int rc = 1;

    lk_log_init("lynkfs", LK_LOG_INFO, false);
    if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) != 0)
        goto out;
    if (o.help) {
        usage(stdout);
        rc = 0;
        goto out;
    }
    if (o.version) {
        printf("lynkfs %s (libfuse %s)\n", LYNKFS_VERSION, fuse_pkgversion());
        rc = 0;
        goto out;
    }
    if (!o.table || !o.mountpoint) {
        fprintf(stderr, "lynkfs: missing %s: usage: lynkfs TABLE MOUNTPOINT "
                "[-o OPT,...] [-f] [-d] (see lynkfs --help)\n",
                o.table ? "MOUNTPOINT" : "TABLE and MOUNTPOINT");
        goto out;
    }
    if (o.debug)
        lk_log_set_level(LK_LOG_DEBUG);
    if (!settings_make(&o, &st))
        goto out;
    lk_engine_options check = {.table = o.table, .host = st.host,
        .lease_s = st.lease_s, .heartbeat_ms = st.heartbeat_ms};
    if (!lk_core_options_fix(&check, &lerr)) {
        fprintf(stderr, "lynkfs: %s\n", lerr.msg);
        goto out;
    }

    if (!mountpoint_check(o.mountpoint) || !fuse_options_check(&args))
        goto out;

    aws_options ao = {o.region, o.endpoint, o.profile};
    if (aws_config_load(&ao, &cfg, &aerr) != AWS_OK) {
        fprintf(stderr, "lynkfs: %s\n", aerr.msg);
        goto out;
    }
    if (!table_check(cfg, o.table))
        goto out;

    char fsname[512];
    snprintf(fsname, sizeof fsname, "-osubtype=lynkfs,fsname=%s", o.table);
    if (strchr(o.table, ',') || fuse_opt_add_arg(&args, fsname) != 0)
        goto out;

    lk_fs_options fo = {
        .table = o.table, .cache_ms = st.cache_ms, .wait_ms = st.wait_ms,
        .keep = o.keep, .ro = o.ro, .uid = getuid(), .gid = getgid(),
    };
    lk_fs *fs = lk_fs_new(cfg, &fo);
    if (!fs) {
        fprintf(stderr, "lynkfs: out of memory\n");
        goto out;
    }
    struct fuse_session *se = fuse_session_new(&args, &lk_fs_ops,
                                               sizeof lk_fs_ops, fs);
    if (!se) { /* checked above: only out of memory is left */
        fprintf(stderr, "lynkfs: cannot create the FUSE session: out of memory\n");
        lk_fs_free(fs);
        goto out;
    }
    err_capture cap;
    char why[512];
    capture_begin(&cap);
    int mounted = fuse_session_mount(se, o.mountpoint);
    capture_end(&cap, why, sizeof why);
    if (fuse_set_signal_handlers(se) != 0) {
        fprintf(stderr, "lynkfs: cannot install signal handlers\n");
        if (mounted == 0)
            fuse_session_unmount(se);
    } else if (mounted != 0) {
        fprintf(stderr, "lynkfs: cannot mount on %s (%s): check that it is a "
                "directory you may mount on and that /dev/fuse and fusermount3 "
                "work\n", o.mountpoint, why[0] ? why : "libfuse refused");
        fuse_remove_signal_handlers(se);
    } else {
        fuse_daemonize(o.foreground);
        if (!o.foreground)
            lk_log_init("lynkfs", o.debug ? LK_LOG_DEBUG : LK_LOG_INFO, true);
        rc = run(se, fs, cfg, &o, &st);
        fuse_session_unmount(se);
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    lk_fs_free(fs);
out:
    aws_config_free(cfg);
    fuse_opt_free_args(&args);
    opts_free(&o);
    return rc;
}
