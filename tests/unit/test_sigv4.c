/* tests/unit/test_sigv4.c — owns the byte-for-byte check of the DynamoDB
 * client's SigV4 signatures against botocore (an oracle we did not write).
 *
 * libcurl signs with the current time, so the test runs a tiny HTTP capture
 * server on 127.0.0.1 in a thread, sends real requests through ddb_call and
 * through ddb_req_new + a multi handle, and hands each captured request to
 * tests/unit/sigv4_oracle.py, which re-signs it with botocore at the
 * captured X-Amz-Date. The two Authorization values must be equal.
 * python3 with botocore is required: without it every case FAILS. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>

#include "aws/config.h"
#include "ddb/ddb.h"

#define AK      "AKIDEXAMPLE"
#define SK      "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN   "FQoGZXIvYXdzEXAMPLE//session+token/with=chars"
#define REGION  "eu-west-3"
#define TABLE   "sigv4-test"
#define MAXREQ  32

/* ---- the capture server ---- */

typedef struct cap_server {
    int lfd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    char *reqs[MAXREQ];      /* raw requests, NUL-terminated copies */
    size_t lens[MAXREQ];
    int n;
} cap_server;

static cap_server srv;
static char home_dir[64];
static char url[64];

static const char *find_head_end(const char *buf, size_t len)
{
    return memmem(buf, len, "\r\n\r\n", 4);
}

/* The value of header name in the head [buf, end), or NULL. */
static char *head_value(const char *buf, const char *end, const char *name)
{
    size_t nl = strlen(name);
    const char *p = memchr(buf, '\n', (size_t)(end - buf));
    while (p && p < end) {
        const char *line = p + 1;
        const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' &&
            strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        p = eol + 1;
    }
    return NULL;
}

static void cap_store(const char *buf, size_t len)
{
    pthread_mutex_lock(&srv.mu);
    if (srv.n < MAXREQ) {
        srv.reqs[srv.n] = malloc(len + 1);
        memcpy(srv.reqs[srv.n], buf, len);
        srv.reqs[srv.n][len] = '\0';
        srv.lens[srv.n] = len;
        srv.n++;
    }
    pthread_mutex_unlock(&srv.mu);
}

static void send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        len -= (size_t)w;
    }
}

/* Read more bytes into *buf; 0 on EOF/error/stop. */
static int read_more(int fd, char **buf, size_t *len, size_t *cap)
{
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 100);
        if (r == 0)
            continue;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return 0;
        if (*cap - *len < 4096) {
            *cap = *cap * 2 + 8192;
            *buf = realloc(*buf, *cap);
        }
        ssize_t n = recv(fd, *buf + *len, *cap - *len - 1, 0);
        if (n <= 0)
            return 0;
        *len += (size_t)n;
        return 1;
    }
    return 0;
}

/* Serve requests on one connection until the peer closes it. */
static void cap_serve_conn(int fd)
{
    static const char answer[] =
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/x-amz-json-1.0\r\n"
        "x-amzn-RequestId: CAPTURE\r\n"
        "Content-Length: 2\r\n\r\n{}";
    size_t cap = 0, len = 0;
    char *buf = NULL;
    for (;;) {
        const char *he;
        while (!(he = buf ? find_head_end(buf, len) : NULL))
            if (!read_more(fd, &buf, &len, &cap))
                goto out;
        size_t head = (size_t)(he - buf) + 4;
        char *cl = head_value(buf, he, "Content-Length");
        char *ex = head_value(buf, he, "Expect");
        size_t body = cl ? strtoul(cl, NULL, 10) : 0;
        if (ex && strcasecmp(ex, "100-continue") == 0 && len < head + body)
            send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        free(cl);
        free(ex);
        while (len < head + body)
            if (!read_more(fd, &buf, &len, &cap))
                goto out;
        cap_store(buf, head + body);
        send_all(fd, answer, sizeof(answer) - 1);
        memmove(buf, buf + head + body, len - head - body);
        len -= head + body;
    }
out:
    free(buf);
    close(fd);
}

static void *cap_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = srv.lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int fd = accept(srv.lfd, NULL, NULL);
        if (fd >= 0)
            cap_serve_conn(fd);
    }
    return NULL;
}

static int cap_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(srv.lfd, 8) != 0 ||
        getsockname(srv.lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    srv.port = ntohs(a.sin_port);
    pthread_mutex_init(&srv.mu, NULL);
    atomic_store(&srv.stop, false);
    return pthread_create(&srv.thread, NULL, cap_main, NULL) == 0 ? 0 : -1;
}

static void cap_reset(void)
{
    pthread_mutex_lock(&srv.mu);
    for (int i = 0; i < srv.n; i++)
        free(srv.reqs[i]);
    srv.n = 0;
    pthread_mutex_unlock(&srv.mu);
}

static void cap_stop(void)
{
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    close(srv.lfd);
    cap_reset();
    pthread_mutex_destroy(&srv.mu);
}

/* The only captured request (asserts there was exactly one); owned by srv. */
static const char *cap_one(size_t *len)
{
    pthread_mutex_lock(&srv.mu);
    int n = srv.n;
    const char *r = n > 0 ? srv.reqs[0] : NULL;
    *len = n > 0 ? srv.lens[0] : 0;
    pthread_mutex_unlock(&srv.mu);
    assert_int_equal(n, 1);
    return r;
}

/* ---- environment and configuration ---- */

static void env_creds(const char *token)
{
    setenv("AWS_ACCESS_KEY_ID", AK, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SK, 1);
    if (token)
        setenv("AWS_SESSION_TOKEN", token, 1);
    else
        unsetenv("AWS_SESSION_TOKEN");
}

static int group_setup(void **state)
{
    static const char *clear[] = {
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB", "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_SECURITY_TOKEN",
        "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(clear) / sizeof(clear[0]); i++)
        unsetenv(clear[i]);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("NO_PROXY", "*", 1);
    strcpy(home_dir, "/tmp/lynk-sigv4-XXXXXX");
    if (!mkdtemp(home_dir))
        return -1;
    setenv("HOME", home_dir, 1);
    setenv("AWS_REGION", REGION, 1);
    env_creds(NULL);
    if (cap_start() != 0)
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cap_stop();
    rmdir(home_dir);
    return 0;
}

typedef struct fixture {
    aws_config *cfg;
    ddb_client *c;
} fixture;

static void fixture_open(fixture *f, const char *token)
{
    aws_options o = {.endpoint = url};
    aws_error aerr;
    memset(&aerr, 0, sizeof(aerr));
    env_creds(token);
    aws_code ac = aws_config_load(&o, &f->cfg, &aerr);
    if (ac != AWS_OK)
        fail_msg("aws_config_load: %s", aerr.msg);
    assert_string_equal(aws_config_endpoint(f->cfg), url);
    assert_string_equal(aws_config_region(f->cfg), REGION);
    f->c = ddb_client_new(f->cfg, NULL);
    assert_non_null(f->c);
    cap_reset();
}

static void fixture_close(fixture *f)
{
    ddb_client_free(f->c);
    aws_config_free(f->cfg);
    env_creds(NULL);
    cap_reset();
}

/* ---- the oracle ---- */

static void shell_quote(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    out[o++] = '\'';
    for (; *s && o + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            out[o++] = *s;
        }
    }
    out[o++] = '\'';
    out[o] = '\0';
}

static void require_botocore(void)
{
    static int ok = -1;
    if (ok < 0) {
        int st = system("python3 -c 'import botocore.auth' >/dev/null 2>&1");
        ok = (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (!ok)
        fail_msg("python3 with botocore is required for the SigV4 oracle and "
                 "was not found: install python3 and `pip install botocore`");
}

static void print_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        print_message("  | %s", line);
    fclose(f);
}

/* botocore's Authorization for the raw request (malloc'd), or fails. */
static char *oracle_sign(const char *raw, size_t len, const char *token,
                         char *errfile)
{
    const char *root = getenv("LYNK_SOURCE_ROOT");
    char reqfile[] = "/tmp/lynk-sigv4-req-XXXXXX";
    char script[1024], qscript[1100], qreq[64], qerr[64], cmd[4096];
    int fd;
    FILE *p;

    require_botocore();
    if (!root)
        fail_msg("LYNK_SOURCE_ROOT is not set: run this test through "
                 "`meson test` so it can find tests/unit/sigv4_oracle.py");
    snprintf(script, sizeof(script), "%s/tests/unit/sigv4_oracle.py", root);
    if (access(script, R_OK) != 0)
        fail_msg("cannot read the oracle %s: check LYNK_SOURCE_ROOT", script);
    fd = mkstemp(reqfile);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, raw, len), (ssize_t)len);
    close(fd);
    strcpy(errfile, "/tmp/lynk-sigv4-err-XXXXXX");
    fd = mkstemp(errfile);
    assert_true(fd >= 0);
    close(fd);
    shell_quote(qscript, sizeof(qscript), script);
    shell_quote(qreq, sizeof(qreq), reqfile);
    shell_quote(qerr, sizeof(qerr), errfile);
    snprintf(cmd, sizeof(cmd), "python3 %s %s %s dynamodb %s '%s' %s%s%s 2>%s",
             qscript, qreq, REGION, AK, SK, token ? "'" : "",
             token ? token : "", token ? "'" : "", qerr);
    p = popen(cmd, "r");
    assert_non_null(p);
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    unlink(reqfile);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        print_message("oracle stderr:\n");
        print_file(errfile);
        unlink(errfile);
        fail_msg("the botocore oracle failed (status %d); see its stderr above",
                 st);
    }
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    return strdup(out);
}

/* ---- the checks ---- */

static bool list_has(const char *list, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ';');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == nl && strncmp(p, name, l) == 0)
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* "host;x-amz-date;..." from an Authorization value (malloc'd). */
static char *signed_headers(const char *auth)
{
    const char *s = strstr(auth, "SignedHeaders=");
    assert_non_null(s);
    s += strlen("SignedHeaders=");
    return strndup(s, strcspn(s, ","));
}

/* The captured request must be signed exactly as botocore signs it, with the
 * headers DynamoDB needs in SignedHeaders and the body we meant to send. */
static void check_request(const char *raw, size_t len, const char *op,
                          const json_t *body, const char *token)
{
    const char *he = find_head_end(raw, len);
    assert_non_null(he);
    char *auth = head_value(raw, he, "Authorization");
    char *target = head_value(raw, he, "X-Amz-Target");
    char *ctype = head_value(raw, he, "Content-Type");
    char *tok = head_value(raw, he, "X-Amz-Security-Token");
    char want_target[128], errfile[64];
    assert_non_null(auth);
    assert_non_null(target);
    assert_non_null(ctype);
    char *date = head_value(raw, he, "X-Amz-Date");
    assert_non_null(date);
    assert_int_equal(strlen(date), 16);   /* YYYYMMDDTHHMMSSZ */
    free(date);
    snprintf(want_target, sizeof(want_target), "DynamoDB_20120810.%s", op);
    assert_string_equal(target, want_target);
    assert_string_equal(ctype, "application/x-amz-json-1.0");
    assert_int_equal(strncmp(raw, "POST / HTTP/1.1\r\n", 17), 0);

    json_error_t jerr;
    json_t *sent = json_loadb(he + 4, len - (size_t)(he + 4 - raw), 0, &jerr);
    if (!sent)
        fail_msg("the captured body is not JSON: %s", jerr.text);
    assert_true(json_equal(sent, body));
    json_decref(sent);

    char *sh = signed_headers(auth);
    assert_true(list_has(sh, "host"));
    assert_true(list_has(sh, "x-amz-date"));
    assert_true(list_has(sh, "x-amz-target"));
    assert_true(list_has(sh, "content-type"));
    if (token) {
        assert_non_null(tok);
        assert_string_equal(tok, token);
        assert_true(list_has(sh, "x-amz-security-token"));
    } else {
        assert_null(tok);
        assert_false(list_has(sh, "x-amz-security-token"));
    }

    char *want = oracle_sign(raw, len, token, errfile);
    if (strcmp(want, auth) != 0) {
        print_message("captured request:\n%.*s\n", (int)(he - raw), raw);
        print_message("oracle stderr:\n");
        print_file(errfile);
    }
    unlink(errfile);
    assert_string_equal(auth, want);
    free(want);
    free(sh);
    free(auth);
    free(target);
    free(ctype);
    free(tok);
}

/* One synchronous ddb_call of op with body; checks the captured request. */
static void call_and_check(const char *op, json_t *body, const char *token)
{
    fixture f;
    ddb_error err;
    json_t *resp = NULL;
    size_t len;
    memset(&err, 0, sizeof(err));
    fixture_open(&f, token);
    ddb_code rc = ddb_call(f.c, op, body, &resp, 0, &err);
    if (rc != DDB_OK)
        fail_msg("ddb_call %s: %s: %s", op, ddb_code_name(rc), err.msg);
    assert_non_null(resp);
    assert_true(json_is_object(resp));
    assert_int_equal(json_object_size(resp), 0);
    json_decref(resp);
    const char *raw = cap_one(&len);
    check_request(raw, len, op, body, token);
    ddb_error_clear(&err);
    fixture_close(&f);
}

static json_t *lock_item(const char *key)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o}",
                     "lockKey", ddb_s(key),
                     "versionNumber", ddb_s("0f6c1e9e-3b59-4c8e-9d7e-2d1c7b6a5f40"),
                     "hostIdentifier", ddb_s("host-a"),
                     "leaseDuration", ddb_n(20),
                     "ownerName", ddb_s("alice"));
}

static void test_put_item(void **state)
{
    (void)state;
    json_t *item = lock_item("deploy");
    ddb_cond cond = {.expr = "attribute_not_exists(lockKey)"};
    json_t *body = ddb_body_put_item(TABLE, item, &cond);
    assert_non_null(body);
    call_and_check("PutItem", body, NULL);
    json_decref(body);
    json_decref(item);
}

static void test_get_item(void **state)
{
    (void)state;
    json_t *key = json_pack("{s:o}", "lockKey", ddb_s("deploy"));
    json_t *body = ddb_body_get_item(TABLE, key, true);
    assert_non_null(body);
    call_and_check("GetItem", body, NULL);
    json_decref(body);
    json_decref(key);
}

static void test_update_item_unicode(void **state)
{
    (void)state;
    /* é, 日本, and a 4-byte emoji: the body is UTF-8 on the wire. */
    json_t *key = json_pack("{s:o}", "lockKey",
                            ddb_s("clé/日本/\xf0\x9f\x94\x92 lock"));
    json_t *vals = json_pack("{s:o, s:o, s:o}",
                             ":new", ddb_s("7a1b"), ":host", ddb_s("hôte-b"),
                             ":mine", ddb_s("6c2d"));
    ddb_cond cond = {.expr = "versionNumber = :mine", .values = vals};
    json_t *body = ddb_body_update_item(TABLE, key,
        "SET versionNumber = :new, hostIdentifier = :host", &cond);
    assert_non_null(body);
    call_and_check("UpdateItem", body, NULL);
    json_decref(body);
    json_decref(vals);
    json_decref(key);
}

static void test_create_table(void **state)
{
    (void)state;
    json_t *body = json_pack(
        "{s:s, s:[{s:s, s:s}], s:[{s:s, s:s}], s:{s:i, s:i}, s:[{s:s, s:s}]}",
        "TableName", TABLE,
        "AttributeDefinitions", "AttributeName", "lockKey",
                                "AttributeType", "S",
        "KeySchema", "AttributeName", "lockKey", "KeyType", "HASH",
        "ProvisionedThroughput", "ReadCapacityUnits", 5,
                                 "WriteCapacityUnits", 5,
        "Tags", "Key", "lynk", "Value", "lock-table");
    assert_non_null(body);
    call_and_check("CreateTable", body, NULL);
    json_decref(body);
}

static void test_session_token(void **state)
{
    (void)state;
    json_t *item = lock_item("with-token");
    json_t *vals = json_pack("{s:o}", ":v", ddb_s("0f6c"));
    ddb_cond cond = {
        .expr = "attribute_not_exists(lockKey) OR versionNumber = :v",
        .values = vals, .return_old_on_fail = true};
    json_t *body = ddb_body_put_item(TABLE, item, &cond);
    assert_non_null(body);
    call_and_check("PutItem", body, TOKEN);
    json_decref(body);
    json_decref(vals);
    json_decref(item);
}

/* The asynchronous path: ddb_req_new's easy handle on our own multi. */
static void run_multi(const char *token)
{
    fixture f;
    ddb_error err;
    json_t *resp = NULL;
    size_t len;
    int running = 0, q = 0;
    memset(&err, 0, sizeof(err));
    fixture_open(&f, token);
    json_t *key = json_pack("{s:o}", "lockKey", ddb_s("multi-é"));
    ddb_cond cond = {.expr = "attribute_exists(lockKey)"};
    json_t *body = ddb_body_delete_item(TABLE, key, &cond);
    assert_non_null(body);
    ddb_req *r = ddb_req_new(f.c, "DeleteItem", body, &err);
    if (!r)
        fail_msg("ddb_req_new: %s", err.msg);
    int tag = 42;
    ddb_req_set_private(r, &tag);
    assert_ptr_equal(ddb_req_private(r), &tag);
    CURLM *m = curl_multi_init();
    assert_non_null(m);
    assert_int_equal(curl_multi_add_handle(m, ddb_req_easy(r)), CURLM_OK);
    do {
        assert_int_equal(curl_multi_perform(m, &running), CURLM_OK);
        if (running)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    } while (running);
    CURLMsg *msg = curl_multi_info_read(m, &q);
    assert_non_null(msg);
    assert_int_equal(msg->msg, CURLMSG_DONE);
    assert_ptr_equal(msg->easy_handle, ddb_req_easy(r));
    CURLcode crc = msg->data.result;
    curl_multi_remove_handle(m, ddb_req_easy(r));
    ddb_code rc = ddb_req_result(r, crc, &resp, &err);
    if (rc != DDB_OK)
        fail_msg("ddb_req_result: %s: %s", ddb_code_name(rc), err.msg);
    assert_true(json_is_object(resp));
    json_decref(resp);
    const char *raw = cap_one(&len);
    check_request(raw, len, "DeleteItem", body, token);
    ddb_req_free(r);
    curl_multi_cleanup(m);
    json_decref(body);
    json_decref(key);
    ddb_error_clear(&err);
    fixture_close(&f);
}

static void test_multi(void **state)
{
    (void)state;
    run_multi(NULL);
}

static void test_multi_session_token(void **state)
{
    (void)state;
    run_multi(TOKEN);
}

/* The oracle itself, on a request libcurl signs with no code of ours: it
 * must agree with curl, and must disagree once a signed byte changes (so
 * the other cases can fail). */
static void test_oracle_self_check(void **state)
{
    static const char body[] = "{\"TableName\":\"sigv4-test\"}";
    struct curl_slist *h = NULL;
    char errfile[64];
    size_t len;
    (void)state;
    cap_reset();
    CURL *e = curl_easy_init();
    assert_non_null(e);
    h = curl_slist_append(h, "Content-Type: application/x-amz-json-1.0");
    h = curl_slist_append(h, "X-Amz-Target: DynamoDB_20120810.DescribeTable");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, "aws:amz:" REGION ":dynamodb");
    curl_easy_setopt(e, CURLOPT_USERNAME, AK);
    curl_easy_setopt(e, CURLOPT_PASSWORD, SK);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fwrite);
    FILE *null = fopen("/dev/null", "w");
    curl_easy_setopt(e, CURLOPT_WRITEDATA, null);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    fclose(null);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);

    const char *raw = cap_one(&len);
    const char *he = find_head_end(raw, len);
    char *auth = head_value(raw, he, "Authorization");
    assert_non_null(auth);
    char *want = oracle_sign(raw, len, NULL, errfile);
    unlink(errfile);
    assert_string_equal(auth, want);
    free(want);

    char *tampered = malloc(len + 1);
    memcpy(tampered, raw, len + 1);
    char *p = strstr(tampered, "sigv4-test\"}");
    assert_non_null(p);
    p[0] = 'S';
    want = oracle_sign(tampered, len, NULL, errfile);
    unlink(errfile);
    assert_string_not_equal(auth, want);
    free(want);
    free(tampered);
    free(auth);
    cap_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracle_self_check),
        cmocka_unit_test(test_put_item),
        cmocka_unit_test(test_get_item),
        cmocka_unit_test(test_update_item_unicode),
        cmocka_unit_test(test_create_table),
        cmocka_unit_test(test_session_token),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_multi_session_token),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    curl_global_cleanup();
    return rc;
}
