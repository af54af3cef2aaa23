/* aws/config.c — owns the AWS configuration chain of SPEC.md §2: the shared
 * files (~/.aws/credentials, ~/.aws/config, parsed like botocore's
 * configparser), the credentials provider chain (environment, shared
 * profile, credential_process) and its refresh, the region and the DynamoDB
 * endpoint. No secret ever reaches an error message or a log line: file
 * errors name the file and line only, process errors never echo its output. */
#include "aws/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"

extern char **environ;

#define REFRESH_WINDOW_S   300          /* refresh when expiring within */
#define REFRESH_RETRY_MS   10000        /* after a failed refresh */
#define PROCESS_TIMEOUT_MS 120000       /* credential_process may take */
#define PROCESS_MAX_OUT    (64 * 1024)  /* bytes of its stdout we accept */
#define FILE_MAX           (4 * 1024 * 1024)

/* ---------------------------------------------------------------- errors */

static aws_code set_err(aws_error *err, aws_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aws_code set_err(aws_error *err, aws_code code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

static aws_code nomem(aws_error *err)
{
    return set_err(err, AWS_ERR_NOMEM, "out of memory");
}

/* A user-supplied, non-secret value made safe to print: printable ASCII
 * only, at most 64 characters. */
typedef struct { char s[72]; } shown_t;

static shown_t shown(const char *v)
{
    shown_t o;
    size_t i = 0;
    for (; v[i] && i < 64; i++)
        o.s[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    if (v[i]) {
        memcpy(o.s + i, "...", 3);
        i += 3;
    }
    o.s[i] = 0;
    return o;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* ------------------------------------------------------------ INI files */

typedef struct ini_kv {
    char *key;      /* lower case */
    char *val;      /* continuation lines appended after '\n' */
} ini_kv;

typedef struct ini_section {
    char *name;     /* trimmed */
    ini_kv *kv;
    size_t nkv;
} ini_section;

typedef struct ini_file {
    char *path;
    bool present;
    ini_section *sec;
    size_t nsec;
} ini_file;

static void ini_free(ini_file *f)
{
    for (size_t i = 0; i < f->nsec; i++) {
        ini_section *s = &f->sec[i];
        for (size_t j = 0; j < s->nkv; j++) {
            free(s->kv[j].key);
            free_secret(s->kv[j].val);
        }
        free(s->kv);
        free(s->name);
    }
    free(f->sec);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r';
}

/* Trim [*b, *e) in place of the pointers. */
static void trim(char **b, char **e)
{
    while (*b < *e && is_blank(**b))
        (*b)++;
    while (*e > *b && is_blank((*e)[-1]))
        (*e)--;
}

static const char *ini_get(const ini_section *s, const char *key)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return s->kv[i].val;
    return NULL;
}

static ini_section *ini_find(const ini_file *f, const char *name)
{
    for (size_t i = 0; i < f->nsec; i++)
        if (strcmp(f->sec[i].name, name) == 0)
            return &f->sec[i];
    return NULL;
}

static aws_code ini_bad(const ini_file *f, int line, const char *why,
                        aws_error *err)
{
    return set_err(err, AWS_ERR_BAD_FILE,
                   "malformed AWS file %s, line %d: %s; fix or remove that "
                   "line", f->path, line, why);
}

static aws_code ini_add_section(ini_file *f, char *b, char *e, int line,
                                aws_error *err)
{
    trim(&b, &e);
    if (b == e)
        return ini_bad(f, line, "empty section name []", err);
    char *name = strndup(b, (size_t)(e - b));
    if (!name)
        return nomem(err);
    if (ini_find(f, name)) {
        free(name);
        return ini_bad(f, line, "the same [section] appears twice", err);
    }
    ini_section *ns = realloc(f->sec, (f->nsec + 1) * sizeof *ns);
    if (!ns) {
        free(name);
        return nomem(err);
    }
    f->sec = ns;
    f->sec[f->nsec++] = (ini_section){.name = name};
    return AWS_OK;
}

static aws_code ini_add_kv(ini_file *f, char *b, char *e, int line,
                           aws_error *err)
{
    char *d = b;
    while (d < e && *d != '=' && *d != ':')
        d++;
    if (d == e)
        return ini_bad(f, line, "expected [section], key = value or a "
                       "# comment", err);
    if (f->nsec == 0)
        return ini_bad(f, line, "a key before any [section] header", err);
    char *kb = b, *ke = d, *vb = d + 1, *ve = e;
    trim(&kb, &ke);
    trim(&vb, &ve);
    if (kb == ke)
        return ini_bad(f, line, "a value with no key before '='", err);
    ini_section *s = &f->sec[f->nsec - 1];
    char *key = strndup(kb, (size_t)(ke - kb));
    char *val = strndup(vb, (size_t)(ve - vb));
    ini_kv *nk = (key && val) ? realloc(s->kv, (s->nkv + 1) * sizeof *nk)
                              : NULL;
    if (!nk) {
        free(key);
        free_secret(val);
        return nomem(err);
    }
    s->kv = nk;
    for (char *p = key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (ini_get(s, key)) {
        free(key);
        free_secret(val);
        return ini_bad(f, line, "the same key appears twice in its section",
                       err);
    }
    s->kv[s->nkv++] = (ini_kv){.key = key, .val = val};
    return AWS_OK;
}

static aws_code ini_continue(ini_file *f, char *b, char *e, aws_error *err)
{
    ini_section *s = &f->sec[f->nsec - 1];
    ini_kv *kv = &s->kv[s->nkv - 1];
    trim(&b, &e);
    size_t old = strlen(kv->val), add = (size_t)(e - b);
    char *nv = malloc(old + add + 2);
    if (!nv)
        return nomem(err);
    memcpy(nv, kv->val, old);
    nv[old] = '\n';
    memcpy(nv + old + 1, b, add);
    nv[old + 1 + add] = 0;
    free_secret(kv->val);
    kv->val = nv;
    return AWS_OK;
}

/* Parse buf (NUL-terminated at len) the way Python's RawConfigParser does:
 * full-line comments (# ;), [section] headers, key = value or key: value,
 * indented continuation lines. Never quotes a line in an error. */
static aws_code ini_parse(ini_file *f, char *buf, size_t len, aws_error *err)
{
    char *p = buf, *end = buf + len;
    int line = 0;
    bool have_key = false;
    size_t key_indent = 0;

    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line++;
        if (memchr(p, 0, (size_t)(le - p)))
            return ini_bad(f, line, "contains a NUL byte", err);
        size_t indent = 0;
        while (p + indent < le && is_blank(p[indent]))
            indent++;
        char *b = p + indent, *e = le;
        trim(&b, &e);
        aws_code rc = AWS_OK;
        if (b == e || *b == '#' || *b == ';') {
            /* blank or comment */
        } else if (have_key && indent > key_indent) {
            rc = ini_continue(f, b, e, err);
        } else if (*b == '[') {
            char *close = e;
            while (close > b && close[-1] != ']')
                close--;
            if (close == b || close - 1 == b)
                return ini_bad(f, line, "a '[' with no closing ']'", err);
            rc = ini_add_section(f, b + 1, close - 1, line, err);
            have_key = false;
        } else {
            rc = ini_add_kv(f, b, e, line, err);
            have_key = true;
            key_indent = indent;
        }
        if (rc != AWS_OK)
            return rc;
        p = nl ? nl + 1 : end;
    }
    return AWS_OK;
}

static char *home_dir(void)
{
    const char *h = env("HOME");
    if (h)
        return strdup(h);
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res &&
        res->pw_dir)
        return strdup(res->pw_dir);
    return NULL;
}

/* The file's path: $envvar (with ~ expanded) or ~/.aws/NAME. NULL path (not
 * an error) when there is no home directory to look in. */
static aws_code ini_path(const char *envvar, const char *name, char **out)
{
    const char *v = env(envvar);
    *out = NULL;
    if (v && v[0] != '~')
        return (*out = strdup(v)) ? AWS_OK : AWS_ERR_NOMEM;
    char *home = home_dir();
    if (!home)
        return AWS_OK;
    int n;
    if (v)
        n = asprintf(out, "%s%s", home, v + 1);
    else
        n = asprintf(out, "%s/.aws/%s", home, name);
    free(home);
    if (n < 0) {
        *out = NULL;
        return AWS_ERR_NOMEM;
    }
    return AWS_OK;
}

static aws_code read_whole(ini_file *f, char **buf, size_t *len,
                           aws_error *err)
{
    FILE *fp = fopen(f->path, "re");
    *buf = NULL;
    if (!fp) {
        if (errno == ENOENT || errno == ENOTDIR)
            return AWS_OK;      /* a missing file is no error, as botocore */
        return set_err(err, AWS_ERR_BAD_FILE, "cannot read AWS file %s: %s; "
                       "fix its permissions or point the variable elsewhere",
                       f->path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        return set_err(err, AWS_ERR_BAD_FILE, "AWS file %s is a directory; "
                       "it must be a file", f->path);
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = cap < FILE_MAX ? malloc(cap * 2) : NULL;
            if (nb)
                memcpy(nb, b, n);
            explicit_bzero(b, n);
            free(b);
            b = nb;
            cap *= 2;
            if (!b)
                break;
        }
        size_t r = fread(b + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0)
            break;
    }
    bool ioerr = ferror(fp);
    fclose(fp);
    if (!b)
        return cap > FILE_MAX
            ? set_err(err, AWS_ERR_BAD_FILE, "AWS file %s is larger than "
                      "%d MiB; it is not a credentials file", f->path,
                      FILE_MAX >> 20)
            : nomem(err);
    if (ioerr) {
        explicit_bzero(b, n);
        free(b);
        return set_err(err, AWS_ERR_BAD_FILE, "cannot read AWS file %s: I/O "
                       "error", f->path);
    }
    b[n] = 0;
    f->present = true;
    *buf = b;
    *len = n;
    return AWS_OK;
}

static aws_code ini_load(ini_file *f, const char *envvar, const char *name,
                         aws_error *err)
{
    if (ini_path(envvar, name, &f->path) != AWS_OK)
        return nomem(err);
    if (!f->path)
        return AWS_OK;
    char *buf;
    size_t len;
    aws_code rc = read_whole(f, &buf, &len, err);
    if (rc != AWS_OK || !buf)
        return rc;
    rc = ini_parse(f, buf, len, err);
    explicit_bzero(buf, len);
    free(buf);
    return rc;
}

/* The config file names a profile [default] or [profile NAME]. */
static ini_section *config_profile(const ini_file *f, const char *profile)
{
    for (size_t i = 0; i < f->nsec; i++) {
        const char *n = f->sec[i].name;
        if (strcmp(n, "default") == 0 && strcmp(profile, "default") == 0)
            return &f->sec[i];
        if (strncmp(n, "profile", 7) != 0 || !is_blank(n[7]))
            continue;
        n += 7;
        while (is_blank(*n))
            n++;
        if (strcmp(n, profile) == 0)
            return &f->sec[i];
    }
    return NULL;
}

/* --------------------------------------------------------- chain state */

typedef struct chain {
    const char *profile;
    bool explicit_profile;      /* profile= given: environment skipped */
    bool named_profile;         /* profile= or AWS_PROFILE */
    ini_file cred, conf;
    ini_section *cred_sec;      /* [profile] in the credentials file */
    ini_section *conf_sec;      /* [profile x] / [default] in config */
    /* set by the provider that found credentials which expire */
    aws_code (*refresh)(aws_config *cfg, aws_credentials *out,
                        aws_error *err);
    char *process_cmd;          /* its argument: the command to run again */
} chain;

/* A profile setting: the credentials file wins over the config file, as in
 * botocore's merged profile map. */
static const char *prof_get(const chain *c, const char *key)
{
    const char *v = ini_get(c->cred_sec, key);
    return v ? v : ini_get(c->conf_sec, key);
}

struct aws_config {
    char *region;
    char *endpoint;
    char *profile;
    pthread_mutex_t mu;
    aws_credentials creds;
    /* how to fetch the credentials again; NULL for static ones */
    aws_code (*refresh)(aws_config *cfg, aws_credentials *out,
                        aws_error *err);
    char *process_cmd;
    int64_t refresh_failed_ms;  /* monotonic; 0 = never */
};

/* ---------------------------------------------------------- credentials */

static aws_code creds_set(aws_credentials *o, const char *id, const char *sk,
                          const char *tok, const char *source,
                          aws_error *err)
{
    memset(o, 0, sizeof *o);
    o->access_key_id = strdup(id);
    o->secret_access_key = strdup(sk);
    o->session_token = tok ? strdup(tok) : NULL;
    o->source = source;
    if (!o->access_key_id || !o->secret_access_key ||
        (tok && !o->session_token)) {
        aws_credentials_clear(o);
        return nomem(err);
    }
    return AWS_OK;
}

void aws_credentials_clear(aws_credentials *c)
{
    if (!c)
        return;
    free(c->access_key_id);
    free_secret(c->secret_access_key);
    free_secret(c->session_token);
    memset(c, 0, sizeof *c);
}

/* A provider fills *out and sets *found, or leaves *found false to let the
 * next one try. An error stops the chain. Later sources (web identity,
 * container, instance metadata) slot into the table in chain_resolve. */
typedef aws_code (*provider_fn)(chain *c, aws_credentials *out, bool *found,
                                aws_error *err);

/* What a provider looked at, for the "nothing found" message; writes
 * nothing when it was skipped. */
typedef void (*describe_fn)(const chain *c, char *buf, size_t cap);

typedef struct provider {
    provider_fn fetch;
    describe_fn tried;
} provider;

static void env_tried(const chain *c, char *buf, size_t cap)
{
    if (!c->explicit_profile)
        snprintf(buf, cap, "environment");
}

static aws_code from_env(chain *c, aws_credentials *out, bool *found,
                         aws_error *err)
{
    const char *id = env("AWS_ACCESS_KEY_ID");
    const char *sk = env("AWS_SECRET_ACCESS_KEY");
    if (c->explicit_profile || (!id && !sk))
        return AWS_OK;
    if (!id || !sk)
        return set_err(err, AWS_ERR_NO_CREDENTIALS, "%s is set but %s is not: "
                       "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                       "or unset both to use a profile",
                       id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                       id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    *found = true;
    return creds_set(out, id, sk, env("AWS_SESSION_TOKEN"), "environment",
                     err);
}

/* Static keys of one section; a half pair is an error naming the file. */
static aws_code keys_from(const chain *c, const ini_section *s,
                          const char *path, const char *source,
                          aws_credentials *out, bool *found, aws_error *err)
{
    const char *id = ini_get(s, "aws_access_key_id");
    const char *sk = ini_get(s, "aws_secret_access_key");
    const char *tok = ini_get(s, "aws_session_token");
    if (!tok)
        tok = ini_get(s, "aws_security_token");
    if (!id && !sk)
        return AWS_OK;
    if (!id || !*id || !sk || !*sk) {
        bool has_id = id && *id;
        return set_err(err, AWS_ERR_BAD_FILE, "profile '%s' in %s has %s but "
                       "no %s: add the missing key", shown(c->profile).s, path,
                       has_id ? "aws_access_key_id" : "aws_secret_access_key",
                       has_id ? "aws_secret_access_key" : "aws_access_key_id");
    }
    *found = true;
    return creds_set(out, id, sk, tok && *tok ? tok : NULL, source, err);
}

/* ISO 8601 / RFC 3339 UTC time to Unix seconds; -1 when malformed. */
static int64_t parse_iso8601(const char *s)
{
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n < 19)
        return -1;
    const char *p = s + n;
    if (*p == '.' || *p == ',') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 &&
            sscanf(p + 1, "%2d%2d%n", &hh, &mm, &k) != 2)
            return -1;
        off = (hh * 60 + mm) * 60 * (*p == '-' ? -1 : 1);
        p += 1 + k;
    }
    if (*p || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t == (time_t)-1 ? -1 : (int64_t)t - off;
}

/* Run cmd with /bin/sh -c and collect its stdout (which holds secrets: it
 * never appears in an error). stderr and stdin are the caller's. */
static aws_code process_run(const char *cmd, const char *profile,
                            char **out, size_t *outlen, aws_error *err)
{
    int fds[2];
    *out = NULL;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return set_err(err, AWS_ERR_PROCESS, "cannot run credential_process "
                       "of profile '%s': pipe: %s", shown(profile).s,
                       strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return set_err(err, AWS_ERR_PROCESS, "cannot run credential_process "
                       "of profile '%s': /bin/sh: %s", shown(profile).s,
                       strerror(rc));
    }
    char *buf = malloc(PROCESS_MAX_OUT + 1);
    size_t n = 0;
    bool timeout = false, toobig = false;
    int64_t deadline = lk_now_ms() + PROCESS_TIMEOUT_MS;
    while (buf) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int64_t left = deadline - lk_now_ms();
        if (left <= 0) {
            timeout = true;
            break;
        }
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            timeout = pr == 0;
            break;
        }
        if (n == PROCESS_MAX_OUT) {
            toobig = true;
            break;
        }
        ssize_t r = read(fds[0], buf + n, PROCESS_MAX_OUT - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fds[0]);
    if (!buf || timeout || toobig)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!buf)
        return nomem(err);
    buf[n] = 0;
    aws_code code = AWS_OK;
    if (timeout)
        code = set_err(err, AWS_ERR_PROCESS, "credential_process of profile "
                       "'%s' did not finish within %d s: run it by hand to "
                       "see why it hangs", shown(profile).s,
                       PROCESS_TIMEOUT_MS / 1000);
    else if (toobig)
        code = set_err(err, AWS_ERR_PROCESS, "credential_process of profile "
                       "'%s' printed more than %d KiB: it must print one JSON "
                       "object", shown(profile).s, PROCESS_MAX_OUT / 1024);
    else if (WIFSIGNALED(st))
        code = set_err(err, AWS_ERR_PROCESS, "credential_process of profile "
                       "'%s' was killed by signal %d: run it by hand to see "
                       "why", shown(profile).s, WTERMSIG(st));
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        code = set_err(err, AWS_ERR_PROCESS, "credential_process of profile "
                       "'%s' failed with exit status %d: run it by hand to "
                       "see why", shown(profile).s, WEXITSTATUS(st));
    if (code != AWS_OK) {
        explicit_bzero(buf, n);
        free(buf);
        return code;
    }
    *out = buf;
    *outlen = n;
    return AWS_OK;
}

static aws_code process_bad(const char *profile, const char *what,
                            aws_error *err)
{
    return set_err(err, AWS_ERR_PROCESS, "credential_process of profile '%s' "
                   "%s; it must print {\"Version\": 1, \"AccessKeyId\": ..., "
                   "\"SecretAccessKey\": ..., \"SessionToken\": ..., "
                   "\"Expiration\": ISO8601}", shown(profile).s, what);
}

static aws_code process_parse(const char *buf, size_t len, const char *profile,
                              aws_credentials *out, aws_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(buf, len, 0, &je);
    if (!j) {
        /* je.text may quote the output: only its position is safe */
        char what[96];
        snprintf(what, sizeof what, "printed invalid JSON (line %d, column "
                 "%d)", je.line, je.column);
        return process_bad(profile, what, err);
    }
    aws_code rc = AWS_OK;
    json_t *ver = json_object_get(j, "Version");
    const char *id = json_string_value(json_object_get(j, "AccessKeyId"));
    const char *sk = json_string_value(json_object_get(j, "SecretAccessKey"));
    json_t *tokj = json_object_get(j, "SessionToken");
    json_t *expj = json_object_get(j, "Expiration");
    const char *tok = json_string_value(tokj);
    int64_t exp = 0;
    if (!json_is_object(j))
        rc = process_bad(profile, "printed JSON that is not an object", err);
    else if (!json_is_integer(ver) || json_integer_value(ver) != 1)
        rc = process_bad(profile, "printed no \"Version\": 1", err);
    else if (!id || !*id)
        rc = process_bad(profile, "printed no AccessKeyId", err);
    else if (!sk || !*sk)
        rc = process_bad(profile, "printed no SecretAccessKey", err);
    else if (tokj && !json_is_null(tokj) && !tok)
        rc = process_bad(profile, "printed a SessionToken that is not a "
                         "string", err);
    else if (expj && !json_is_null(expj) &&
             (!json_is_string(expj) ||
              (exp = parse_iso8601(json_string_value(expj))) < 0))
        rc = process_bad(profile, "printed an Expiration that is not an ISO "
                         "8601 time", err);
    else if (exp && exp <= (int64_t)time(NULL))
        rc = set_err(err, AWS_ERR_PROCESS, "credential_process of profile "
                     "'%s' printed credentials that have already expired: "
                     "check the tool it runs (and this host's clock)",
                     shown(profile).s);
    else if ((rc = creds_set(out, id, sk, tok && *tok ? tok : NULL,
                             "credential_process", err)) == AWS_OK)
        out->expiration = exp;
    json_decref(j);
    return rc;
}

static aws_code process_fetch(const char *cmd, const char *profile,
                              aws_credentials *out, aws_error *err)
{
    char *buf;
    size_t len;
    aws_code rc = process_run(cmd, profile, &buf, &len, err);
    if (rc != AWS_OK)
        return rc;
    rc = process_parse(buf, len, profile, out, err);
    explicit_bzero(buf, len);
    free(buf);
    return rc;
}

static aws_code process_refresh(aws_config *cfg, aws_credentials *out,
                                aws_error *err)
{
    return process_fetch(cfg->process_cmd, cfg->profile, out, err);
}

static aws_code unsupported(const chain *c, const char *what, aws_error *err)
{
    shown_t p = shown(c->profile);
    return set_err(err, AWS_ERR_UNSUPPORTED, "profile '%s' uses %s, which "
                   "lynkfs cannot use yet: use a profile that has "
                   "credential_process = aws configure export-credentials "
                   "--profile %s --format process, or access keys",
                   p.s, what, p.s);
}

static void profile_tried(const chain *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "profile '%s' in %s and %s", shown(c->profile).s,
             c->cred.path ? c->cred.path : "~/.aws/credentials",
             c->conf.path ? c->conf.path : "~/.aws/config");
}

/* The shared files, in botocore's order: assume-role and SSO profiles
 * (refused for now), keys in the credentials file, credential_process,
 * keys in the config file. */
static aws_code from_profile(chain *c, aws_credentials *out, bool *found,
                             aws_error *err)
{
    if (!c->cred_sec && !c->conf_sec)
        return AWS_OK;
    if (prof_get(c, "role_arn"))
        return unsupported(c, "role_arn (assume role)", err);
    if (prof_get(c, "sso_start_url") || prof_get(c, "sso_session") ||
        prof_get(c, "sso_account_id"))
        return unsupported(c, "IAM Identity Center (sso_*)", err);
    aws_code rc = keys_from(c, c->cred_sec, c->cred.path,
                            "shared credentials file", out, found, err);
    if (rc != AWS_OK || *found)
        return rc;
    const char *cmd = prof_get(c, "credential_process");
    if (cmd && *cmd) {
        if (!(c->process_cmd = strdup(cmd)))
            return nomem(err);
        rc = process_fetch(cmd, c->profile, out, err);
        *found = rc == AWS_OK;
        if (rc == AWS_OK && out->expiration)
            c->refresh = process_refresh;
        return rc;
    }
    return keys_from(c, c->conf_sec, c->conf.path, "shared config file", out,
                     found, err);
}

/* The credentials chain: the first provider that finds credentials wins.
 * Web identity goes after the environment; container and instance
 * metadata after the profile. */
static aws_code chain_resolve(chain *c, aws_credentials *out, aws_error *err)
{
    static const provider providers[] = {
        {from_env, env_tried},
        {from_profile, profile_tried},
    };
    enum { N = sizeof providers / sizeof *providers };
    char tried[AWS_ERRLEN] = "";
    size_t len = 0;
    for (size_t i = 0; i < N; i++) {
        bool found = false;
        aws_code rc = providers[i].fetch(c, out, &found, err);
        if (rc != AWS_OK || found)
            return rc;
        char one[AWS_ERRLEN] = "";
        providers[i].tried(c, one, sizeof one);
        if (*one && len < sizeof tried)
            len += (size_t)snprintf(tried + len, sizeof tried - len, "%s%s",
                                    len ? ", " : "", one);
    }
    return set_err(err, AWS_ERR_NO_CREDENTIALS, "no AWS credentials (tried "
                   "%s): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                   "configure a profile in ~/.aws/credentials", tried);
}

/* --------------------------------------------------------------- region */

static bool region_ok(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)r[i]) && !isdigit((unsigned char)r[i]) &&
            r[i] != '-')
            return false;
    return true;
}

static aws_code resolve_region(const aws_options *o, const chain *c,
                               char **out, aws_error *err)
{
    const char *v, *from;
    if ((v = o->region) && *v)
        from = "region=";
    else if ((v = env("AWS_REGION")))
        from = "AWS_REGION";
    else if ((v = env("AWS_DEFAULT_REGION")))
        from = "AWS_DEFAULT_REGION";
    else if ((v = prof_get(c, "region")) && *v)
        from = "the profile's region";
    else
        return set_err(err, AWS_ERR_NO_REGION, "no AWS region: use "
                       "region=REGION (or --region), or set AWS_REGION");
    if (!region_ok(v))
        return set_err(err, AWS_ERR_NO_REGION, "invalid AWS region '%s' (from "
                       "%s): use a region name such as us-east-1",
                       shown(v).s, from);
    return (*out = strdup(v)) ? AWS_OK : nomem(err);
}

/* ------------------------------------------------------------- endpoint */

static bool host_ok(const char *h, size_t n)
{
    size_t port_at = n;
    if (n && h[0] == '[') {                     /* [IPv6]:port */
        const char *rb = memchr(h, ']', n);
        if (!rb || rb == h + 1)
            return false;
        for (const char *p = h + 1; p < rb; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        port_at = (size_t)(rb - h) + 1;
        if (port_at < n && h[port_at] != ':')
            return false;
    } else {
        const char *colon = memchr(h, ':', n);
        if (colon)
            port_at = (size_t)(colon - h);
        if (port_at == 0)
            return false;
        for (size_t i = 0; i < port_at; i++)
            if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' &&
                h[i] != '_')
                return false;
    }
    if (port_at == n)
        return true;
    size_t digits = n - port_at - 1;
    if (digits == 0 || digits > 5)
        return false;
    long port = 0;
    for (size_t i = port_at + 1; i < n; i++) {
        if (!isdigit((unsigned char)h[i]))
            return false;
        port = port * 10 + (h[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

/* "scheme://host[:port]" with one trailing slash dropped, or an error. */
static aws_code endpoint_norm(const char *v, const char *from, char **out,
                              aws_error *err)
{
    size_t skip = 0;
    if (strncasecmp(v, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        skip = 8;
    if (strchr(v, '@'))      /* may hold a password: never print it */
        return set_err(err, AWS_ERR_BAD_ENDPOINT, "invalid endpoint (from "
                       "%s): it must not contain user:password@; use "
                       "endpoint=http(s)://HOST[:PORT]", from);
    size_t n = strlen(v);
    if (skip && n > skip && v[n - 1] == '/')
        n--;
    if (!skip || !host_ok(v + skip, n - skip))
        return set_err(err, AWS_ERR_BAD_ENDPOINT, "invalid endpoint '%s' "
                       "(from %s): use http://HOST[:PORT] or https://HOST"
                       "[:PORT], e.g. http://localhost:8000", shown(v).s,
                       from);
    char *e = strndup(v, n);
    if (!e)
        return nomem(err);
    for (size_t i = 0; i < skip; i++)
        e[i] = (char)tolower((unsigned char)e[i]);
    *out = e;
    return AWS_OK;
}

static bool truthy(const char *v)
{
    return v && strcasecmp(v, "true") == 0;
}

/* endpoint_url of "dynamodb =" in the [services NAME] section the profile
 * names with services = NAME (botocore's nested form). NULL when none;
 * written into buf. */
static const char *services_endpoint(const chain *c, char *buf, size_t cap)
{
    const char *name = prof_get(c, "services");
    char secname[256];
    if (!name || !*name ||
        snprintf(secname, sizeof secname, "services %s", name) >=
            (int)sizeof secname)
        return NULL;
    const ini_section *s = NULL;
    for (size_t i = 0; i < c->conf.nsec && !s; i++) {
        const char *n = c->conf.sec[i].name;
        if (strncmp(n, "services", 8) == 0 && is_blank(n[8])) {
            n += 8;
            while (is_blank(*n))
                n++;
            if (strcmp(n, name) == 0)
                s = &c->conf.sec[i];
        }
    }
    const char *nested = ini_get(s, "dynamodb");
    for (const char *p = nested; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char *kb = (char *)p, *ke = (char *)eq;
            char *vb = (char *)eq + 1, *ve = (char *)p + len;
            trim(&kb, &ke);
            trim(&vb, &ve);
            if (ke - kb == 12 && strncasecmp(kb, "endpoint_url", 12) == 0 &&
                (size_t)(ve - vb) < cap) {
                memcpy(buf, vb, (size_t)(ve - vb));
                buf[ve - vb] = 0;
                return buf;
            }
        }
        p = nl ? nl + 1 : p + len;
    }
    return NULL;
}

static aws_code resolve_endpoint(const aws_options *o, const chain *c,
                                 const char *region, char **out,
                                 aws_error *err)
{
    char nested[1024];
    const char *v = NULL, *from = NULL;
    bool ignore = truthy(env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) ||
                  truthy(prof_get(c, "ignore_configured_endpoint_urls"));
    if (o->endpoint && *o->endpoint)
        v = o->endpoint, from = "endpoint=";
    else if (ignore)
        v = NULL;
    else if ((v = env("AWS_ENDPOINT_URL_DYNAMODB")))
        from = "AWS_ENDPOINT_URL_DYNAMODB";
    else if ((v = services_endpoint(c, nested, sizeof nested)))
        from = "the profile's services section";
    else if ((v = env("AWS_ENDPOINT_URL")))
        from = "AWS_ENDPOINT_URL";
    else if ((v = prof_get(c, "endpoint_url")) && *v)
        from = "the profile's endpoint_url";
    else
        v = NULL;
    if (v)
        return endpoint_norm(v, from, out, err);
    if (asprintf(out, "https://dynamodb.%s.amazonaws.com%s", region,
                 strncmp(region, "cn-", 3) == 0 ? ".cn" : "") < 0) {
        *out = NULL;
        return nomem(err);
    }
    return AWS_OK;
}

/* ----------------------------------------------------------------- load */

static aws_code chain_open(const aws_options *o, chain *c, aws_error *err)
{
    const char *p = o->profile && *o->profile ? o->profile : NULL;
    c->explicit_profile = p != NULL;
    if (!p)
        p = env("AWS_PROFILE");
    if (!p)
        p = env("AWS_DEFAULT_PROFILE");
    c->named_profile = p != NULL;
    c->profile = p ? p : "default";
    aws_code rc = ini_load(&c->cred, "AWS_SHARED_CREDENTIALS_FILE",
                           "credentials", err);
    if (rc == AWS_OK)
        rc = ini_load(&c->conf, "AWS_CONFIG_FILE", "config", err);
    if (rc != AWS_OK)
        return rc;
    c->cred_sec = ini_find(&c->cred, c->profile);
    c->conf_sec = config_profile(&c->conf, c->profile);
    if (c->named_profile && !c->cred_sec && !c->conf_sec &&
        strcmp(c->profile, "default") != 0)
        return set_err(err, AWS_ERR_NO_PROFILE, "profile '%s' not found in %s "
                       "or %s: add [%s] to the credentials file or [profile "
                       "%s] to the config file, or name another profile",
                       shown(c->profile).s,
                       c->cred.path ? c->cred.path : "~/.aws/credentials",
                       c->conf.path ? c->conf.path : "~/.aws/config",
                       shown(c->profile).s, shown(c->profile).s);
    return AWS_OK;
}

static void chain_close(chain *c)
{
    ini_free(&c->cred);
    ini_free(&c->conf);
    free(c->process_cmd);
}

aws_code aws_config_load(const aws_options *opts, aws_config **out,
                         aws_error *err)
{
    static const aws_options none;
    chain c = {0};
    if (!opts)
        opts = &none;
    *out = NULL;
    aws_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return nomem(err);
    pthread_mutex_init(&cfg->mu, NULL);
    aws_code rc = chain_open(opts, &c, err);
    if (rc == AWS_OK)
        rc = resolve_region(opts, &c, &cfg->region, err);
    if (rc == AWS_OK)
        rc = resolve_endpoint(opts, &c, cfg->region, &cfg->endpoint, err);
    if (rc == AWS_OK && !(cfg->profile = strdup(c.profile)))
        rc = nomem(err);
    if (rc == AWS_OK)
        rc = chain_resolve(&c, &cfg->creds, err);
    if (rc == AWS_OK && c.refresh) {
        cfg->refresh = c.refresh;
        cfg->process_cmd = c.process_cmd;
        c.process_cmd = NULL;
    }
    chain_close(&c);
    if (rc != AWS_OK) {
        aws_config_free(cfg);
        return rc;
    }
    *out = cfg;
    if (err)
        err->code = AWS_OK, err->msg[0] = 0;
    return AWS_OK;
}

const char *aws_config_region(const aws_config *cfg)
{
    return cfg->region;
}

const char *aws_config_endpoint(const aws_config *cfg)
{
    return cfg->endpoint;
}

const char *aws_config_profile(const aws_config *cfg)
{
    return cfg->profile;
}

/* Called with cfg->mu held: fetch anew if the credentials expire within the
 * window. A failed refresh keeps still-valid credentials (and is retried
 * after REFRESH_RETRY_MS); with expired ones it is the caller's error. */
static aws_code maybe_refresh(aws_config *cfg, aws_error *err)
{
    int64_t now = (int64_t)time(NULL), exp = cfg->creds.expiration;
    if (!cfg->refresh || exp == 0 || exp - now > REFRESH_WINDOW_S)
        return AWS_OK;
    bool valid = exp > now;
    if (valid && cfg->refresh_failed_ms &&
        lk_now_ms() - cfg->refresh_failed_ms < REFRESH_RETRY_MS)
        return AWS_OK;
    aws_credentials fresh;
    aws_error e;
    aws_code rc = cfg->refresh(cfg, &fresh, &e);
    if (rc == AWS_OK) {
        aws_credentials_clear(&cfg->creds);
        cfg->creds = fresh;
        cfg->refresh_failed_ms = 0;
        return AWS_OK;
    }
    cfg->refresh_failed_ms = lk_now_ms();
    if (valid) {
        lk_warn("refreshing AWS credentials failed (%s); keeping the current "
                "ones, which expire in %lld s", e.msg,
                (long long)(exp - now));
        return AWS_OK;
    }
    if (err)
        *err = e;
    return rc;
}

aws_code aws_config_credentials(aws_config *cfg, aws_credentials *out,
                                aws_error *err)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&cfg->mu);
    aws_code rc = maybe_refresh(cfg, err);
    if (rc == AWS_OK)
        rc = creds_set(out, cfg->creds.access_key_id,
                       cfg->creds.secret_access_key, cfg->creds.session_token,
                       cfg->creds.source, err);
    if (rc == AWS_OK)
        out->expiration = cfg->creds.expiration;
    pthread_mutex_unlock(&cfg->mu);
    return rc;
}

void aws_config_free(aws_config *cfg)
{
    if (!cfg)
        return;
    aws_credentials_clear(&cfg->creds);
    pthread_mutex_destroy(&cfg->mu);
    free(cfg->region);
    free(cfg->endpoint);
    free(cfg->profile);
    free(cfg->process_cmd);
    free(cfg);
}
