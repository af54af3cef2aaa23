/* tests/unit/test_ddb_errors.c — the DynamoDB client (src/ddb/ddb.c) against
 * a tiny canned HTTP server run in a thread of this test on 127.0.0.1: the
 * mapping of answers and transport failures to ddb_error, retries and their
 * deadline, ambiguity of lost writes, the 16 MiB cap, what goes on the wire
 * (target, content type, signature, token) and Scan pagination. No DynamoDB
 * server is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ddb/ddb.h"
#include "util/clock.h"

#define SECRET  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz"
#define TOKEN   "FQoGZXIvYXdzEXAMPLEsessionTOKENzz"
#define KEYID   "AKIDEXAMPLE"

/* ---- the canned server ------------------------------------------------- */

typedef enum {
    ANS_NORMAL,     /* status + body, keep-alive */
    ANS_CLOSE_MID,  /* half the headers, then a close (FIN) */
    ANS_RESET_MID,  /* half the headers, then a reset (RST) */
    ANS_TRUNCATED,  /* Content-Length larger than the body sent, then close */
    ANS_HUGE,       /* 17 MiB body */
    ANS_SLOW        /* wait 2 s, then answer normally */
} ans_mode;

typedef struct canned {
    int status;
    const char *body;
    ans_mode mode;
} canned;

#define MAX_SCRIPT 16
#define MAX_REQS   16
#define MAX_CONNS  64
#define REQ_CAP    (4 << 20)

typedef struct srv {
    int lfd;
    int port;
    pthread_t th;
    pthread_mutex_t mu;
    canned script[MAX_SCRIPT];
    int nscript;
    int nreq;
    char *reqs[MAX_REQS];      /* the first requests received, raw */
    int conns[MAX_CONNS];
    pthread_t conn_th[MAX_CONNS];
    int nconns;
    volatile int stop;
} srv;

static srv S;

static void srv_script(int n, const canned *c)
{
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < n && i < MAX_SCRIPT; i++)
        S.script[i] = c[i];
    S.nscript = n;
    pthread_mutex_unlock(&S.mu);
}

static void srv_answer(int status, const char *body)
{
    canned c = { status, body, ANS_NORMAL };
    srv_script(1, &c);
}

static int srv_nreq(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.nreq;
    pthread_mutex_unlock(&S.mu);
    return n;
}

/* Forget the requests seen: the script starts over. */
static void srv_reset(void)
{
    pthread_mutex_lock(&S.mu);
    S.nreq = 0;
    for (int i = 0; i < MAX_REQS; i++) {
        free(S.reqs[i]);
        S.reqs[i] = NULL;
    }
    pthread_mutex_unlock(&S.mu);
}

static const char *srv_req(int i)
{
    return i < MAX_REQS ? S.reqs[i] : NULL;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* The value of Content-Length in the header block [buf, end). */
static size_t content_length(const char *buf, const char *end)
{
    for (const char *h = buf; h && h < end; h = strstr(h, "\r\n")) {
        h += (h == buf) ? 0 : 2;
        if (strncasecmp(h, "Content-Length:", 15) == 0)
            return strtoul(h + 15, NULL, 10);
        if (h == buf)
            h = strstr(h, "\r\n");
    }
    return 0;
}

/* Read one request into buf; its length, or -1 at EOF or error. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0, need = 0;
    char *end = NULL;

    for (;;) {
        if (end && len >= need)
            return (ssize_t)need;
        if (len + 1 >= cap)
            return -1;
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        if (!end && (end = strstr(buf, "\r\n\r\n"))) {
            need = (size_t)(end + 4 - buf) + content_length(buf, end);
            if (need >= cap)
                return -1;
        }
    }
}

static void reset_close(int fd)
{
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* Answer one request; false when the connection must end. */
static bool answer(int fd, const canned *c)
{
    char head[512];
    const char *body = c->body ? c->body : "";
    size_t blen = strlen(body);

    switch (c->mode) {
    case ANS_CLOSE_MID:
    case ANS_RESET_MID:
        send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/x-am", 47);
        usleep(20000);
        if (c->mode == ANS_RESET_MID)
            reset_close(fd);
        return false;
    case ANS_TRUNCATED:
        snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Type: "
                 "application/x-amz-json-1.0\r\nContent-Length: %zu\r\n\r\n",
                 c->status, blen + 100);
        send_all(fd, head, strlen(head));
        send_all(fd, body, blen);
        return false;
    case ANS_HUGE: {
        size_t total = (size_t)17 << 20, chunk = 65536;
        char *blk = malloc(chunk);
        memset(blk, 'x', chunk);
        memcpy(blk, "{\"a\":\"", 6);
        snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: "
                 "application/x-amz-json-1.0\r\nContent-Length: %zu\r\n\r\n", total);
        bool ok = send_all(fd, head, strlen(head));
        for (size_t sent = 0; ok && sent < total; sent += chunk) {
            ok = send_all(fd, blk, chunk);
            memset(blk, 'x', 6);
        }
        free(blk);
        return false;
    }
    case ANS_SLOW:
        usleep(2000 * 1000);
        /* fall through */
    case ANS_NORMAL:
        break;
    }
    snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Type: "
             "application/x-amz-json-1.0\r\nContent-Length: %zu\r\n\r\n",
             c->status, blen);
    return send_all(fd, head, strlen(head)) && send_all(fd, body, blen);
}

static void *conn_main(void *arg)
{
    int slot = (int)(intptr_t)arg;
    pthread_mutex_lock(&S.mu);
    int fd = S.conns[slot];
    pthread_mutex_unlock(&S.mu);
    char *buf = malloc(REQ_CAP);

    for (;;) {
        ssize_t n = read_request(fd, buf, REQ_CAP);
        if (n < 0)
            break;
        canned c;
        pthread_mutex_lock(&S.mu);
        int idx = S.nreq++;
        if (idx < MAX_REQS) {
            S.reqs[idx] = malloc((size_t)n + 1);
            memcpy(S.reqs[idx], buf, (size_t)n);
            S.reqs[idx][n] = '\0';
        }
        c = S.script[idx < S.nscript ? idx : S.nscript - 1];
        pthread_mutex_unlock(&S.mu);
        if (!answer(fd, &c))
            break;
    }
    free(buf);
    pthread_mutex_lock(&S.mu);
    close(fd);      /* a reset when SO_LINGER was set to 0 */
    S.conns[slot] = -1;
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

static void *srv_main(void *arg)
{
    (void)arg;
    while (!S.stop) {
        struct pollfd p = { S.lfd, POLLIN, 0 };
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(S.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&S.mu);
        if (S.nconns >= MAX_CONNS) {
            pthread_mutex_unlock(&S.mu);
            close(fd);
            continue;
        }
        int i = S.nconns++;
        S.conns[i] = fd;
        pthread_create(&S.conn_th[i], NULL, conn_main, (void *)(intptr_t)i);
        pthread_mutex_unlock(&S.mu);
    }
    return NULL;
}

/* A port on 127.0.0.1 bound with nothing listening (so: refused). */
static int listen_socket(int *port, bool do_listen)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    if (do_listen)
        assert_int_equal(listen(fd, 64), 0);
    return fd;
}

static void srv_start(void)
{
    memset(&S, 0, sizeof(S));
    pthread_mutex_init(&S.mu, NULL);
    S.lfd = listen_socket(&S.port, true);
    srv_answer(200, "{}");
    assert_int_equal(pthread_create(&S.th, NULL, srv_main, NULL), 0);
}

static void srv_stop(void)
{
    S.stop = 1;
    pthread_join(S.th, NULL);
    close(S.lfd);
    for (int i = 0; i < S.nconns; i++) {
        pthread_mutex_lock(&S.mu);
        if (S.conns[i] >= 0)
            shutdown(S.conns[i], SHUT_RDWR);
        pthread_mutex_unlock(&S.mu);
        pthread_join(S.conn_th[i], NULL);
    }
    for (int i = 0; i < MAX_REQS; i++)
        free(S.reqs[i]);
    pthread_mutex_destroy(&S.mu);
}

/* ---- fixtures ---------------------------------------------------------- */

typedef struct fx {
    aws_config *cfg;
    ddb_client *c;
    char endpoint[64];
} fx;

static char tmp_home[64];

static void env_setup(bool with_token)
{
    static const char *const unset[] = {
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_DEFAULT_REGION", NULL
    };
    char path[128];

    for (int i = 0; unset[i]; i++)
        unsetenv(unset[i]);
    setenv("HOME", tmp_home, 1);
    snprintf(path, sizeof(path), "%s/no-credentials", tmp_home);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    snprintf(path, sizeof(path), "%s/no-config", tmp_home);
    setenv("AWS_CONFIG_FILE", path, 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_ACCESS_KEY_ID", KEYID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
    setenv("AWS_REGION", "us-east-1", 1);
    if (with_token)
        setenv("AWS_SESSION_TOKEN", TOKEN, 1);
    else
        unsetenv("AWS_SESSION_TOKEN");
}

static fx *fx_new_at(int port, bool with_token, long request_timeout_ms)
{
    fx *f = calloc(1, sizeof(*f));
    aws_error aerr;
    memset(&aerr, 0, sizeof(aerr));

    env_setup(with_token);
    snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%d", port);
    aws_options o = { .region = NULL, .endpoint = f->endpoint, .profile = NULL };
    if (aws_config_load(&o, &f->cfg, &aerr) != AWS_OK)
        fail_msg("aws_config_load: %s", aerr.msg);
    ddb_client_options co = { 1000, request_timeout_ms, 5000 };
    f->c = ddb_client_new(f->cfg, &co);
    assert_non_null(f->c);
    return f;
}

static int setup(void **state)
{
    srv_start();
    *state = fx_new_at(S.port, false, 3000);
    return 0;
}

static int setup_token(void **state)
{
    srv_start();
    *state = fx_new_at(S.port, true, 3000);
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    ddb_client_free(f->c);
    aws_config_free(f->cfg);
    free(f);
    srv_stop();
    return 0;
}

/* A message a user may see: one line, names the op, no secret. */
static void assert_clean_msg(const ddb_error *err, const char *op)
{
    assert_true(err->msg[0] != '\0');
    assert_null(strchr(err->msg, '\n'));
    assert_null(strstr(err->msg, SECRET));
    assert_null(strstr(err->msg, TOKEN));
    assert_null(strstr(err->msg, "Signature="));
    assert_null(strstr(err->msg, "Authorization"));
    if (op && !strstr(err->msg, op))
        fail_msg("message does not name %s: %s", op, err->msg);
}

static json_t *key_of(const char *name)
{
    return json_pack("{s:o}", "lockKey", ddb_s(name));
}

/* One request through the asynchronous building blocks. */
static ddb_code one_req(fx *f, const char *op, json_t **resp, ddb_error *err)
{
    json_t *key = key_of("a");
    json_t *body = ddb_body_get_item("locks", key, true);
    json_decref(key);
    ddb_req *r = ddb_req_new(f->c, op, body, err);
    json_decref(body);
    assert_non_null(r);
    CURLcode rc = curl_easy_perform(ddb_req_easy(r));
    ddb_code code = ddb_req_result(r, rc, resp, err);
    ddb_req_free(r);
    return code;
}

/* ---- tests ------------------------------------------------------------- */

typedef struct map_case {
    int status;
    const char *type;      /* __type short name, or NULL for a raw body */
    const char *raw;
    ddb_code code;
    bool ambiguous;
} map_case;

static void test_error_mapping(void **state)
{
    fx *f = *state;
    static const map_case cases[] = {
        { 400, "ConditionalCheckFailedException", NULL, DDB_ERR_CONDITION, false },
        { 400, "ProvisionedThroughputExceededException", NULL, DDB_ERR_THROTTLED, false },
        { 400, "ThrottlingException", NULL, DDB_ERR_THROTTLED, false },
        { 400, "RequestLimitExceeded", NULL, DDB_ERR_THROTTLED, false },
        { 400, "LimitExceededException", NULL, DDB_ERR_VALIDATION, false },
        { 400, "ResourceNotFoundException", NULL, DDB_ERR_NOT_FOUND, false },
        { 400, "ResourceInUseException", NULL, DDB_ERR_IN_USE, false },
        { 400, "ValidationException", NULL, DDB_ERR_VALIDATION, false },
        { 400, "SerializationException", NULL, DDB_ERR_VALIDATION, false },
        { 400, "TransactionConflictException", NULL, DDB_ERR_VALIDATION, false },
        { 400, "UnrecognizedClientException", NULL, DDB_ERR_AUTH, false },
        { 403, "InvalidSignatureException", NULL, DDB_ERR_AUTH, false },
        { 403, "MissingAuthenticationToken", NULL, DDB_ERR_AUTH, false },
        { 400, "AccessDeniedException", NULL, DDB_ERR_AUTH, false },
        { 400, "ExpiredTokenException", NULL, DDB_ERR_AUTH, false },
        { 403, "IncompleteSignature", NULL, DDB_ERR_AUTH, false },
        { 500, "InternalServerError", NULL, DDB_ERR_SERVER, true },
        { 503, "ServiceUnavailable", NULL, DDB_ERR_SERVER, true },
        { 500, "SomethingNew", NULL, DDB_ERR_SERVER, true },
        { 502, NULL, "<html>bad gateway</html>", DDB_ERR_SERVER, true },
        { 200, NULL, "<html>hello</html>", DDB_ERR_PROTOCOL, true },
        { 400, NULL, "not json at all", DDB_ERR_PROTOCOL, false },
        { 200, NULL, "[1,2,3]", DDB_ERR_PROTOCOL, true },
        { 200, NULL, "\"text\"", DDB_ERR_PROTOCOL, true },
        { 200, NULL, "{\"Item\":", DDB_ERR_PROTOCOL, true },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const map_case *mc = &cases[i];
        char body[512];
        ddb_error err;
        json_t *resp = NULL;

        if (mc->type)
            snprintf(body, sizeof(body), "{\"__type\":\"com.amazonaws.dynamodb."
                     "v20120810#%s\",\"message\":\"canned %s\"}", mc->type, mc->type);
        else
            snprintf(body, sizeof(body), "%s", mc->raw);
        srv_answer(mc->status, body);
        ddb_code code = one_req(f, "PutItem", &resp, &err);
        if (code != mc->code || err.ambiguous != mc->ambiguous)
            fail_msg("case %zu (%d %s): got %s ambiguous=%d (%s)", i, mc->status,
                     mc->type ? mc->type : mc->raw, ddb_code_name(code),
                     err.ambiguous, err.msg);
        assert_int_equal(err.code, code);
        assert_null(resp);
        assert_int_equal(err.http_status, mc->status);
        assert_clean_msg(&err, "PutItem");
        if (mc->type) {
            assert_string_equal(err.type, mc->type);
            assert_non_null(strstr(err.msg, mc->type));
        }
        if (code == DDB_ERR_PROTOCOL)
            assert_non_null(strstr(err.msg, "is not DynamoDB JSON"));
        ddb_error_clear(&err);
    }
    assert_int_equal(srv_nreq(), (int)(sizeof(cases) / sizeof(cases[0])));
}

static void test_message_capital_and_ok(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *resp = NULL;

    srv_answer(400, "{\"__type\":\"ValidationException\","
               "\"Message\":\"One or more parameter values were invalid\"}");
    assert_int_equal(one_req(f, "GetItem", &resp, &err), DDB_ERR_VALIDATION);
    assert_non_null(strstr(err.msg, "One or more parameter values were invalid"));
    assert_string_equal(err.type, "ValidationException");
    ddb_error_clear(&err);

    srv_answer(200, "{\"Item\":{\"lockKey\":{\"S\":\"a\"}}}");
    assert_int_equal(one_req(f, "GetItem", &resp, &err), DDB_OK);
    assert_non_null(resp);
    assert_string_equal(ddb_item_s(json_object_get(resp, "Item"), "lockKey"), "a");
    json_decref(resp);
}

static void test_condition_item(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *item = json_pack("{s:o,s:o}", "lockKey", ddb_s("a"),
                             "versionNumber", ddb_s("v1"));
    json_t *vals = json_pack("{s:o}", ":v", ddb_s("v0"));
    ddb_cond cond = { "versionNumber = :v", NULL, vals, true };

    srv_answer(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
               "ConditionalCheckFailedException\",\"message\":\"The conditional "
               "request failed\",\"Item\":{\"lockKey\":{\"S\":\"a\"},"
               "\"versionNumber\":{\"S\":\"theirs\"},\"leaseDuration\":{\"N\":\"20\"}}}");
    int64_t t0 = lk_now_ms();
    assert_int_equal(ddb_put_item(f->c, "locks", item, &cond, 0, &err),
                     DDB_ERR_CONDITION);
    assert_true(lk_now_ms() - t0 < 1000);
    assert_false(err.ambiguous);
    assert_non_null(err.item);
    assert_string_equal(ddb_item_s(err.item, "versionNumber"), "theirs");
    long long lease = 0;
    assert_true(ddb_item_n(err.item, "leaseDuration", &lease));
    assert_int_equal(lease, 20);
    assert_clean_msg(&err, "PutItem");
    ddb_error_clear(&err);
    assert_null(err.item);
    /* never retried: an answer */
    assert_int_equal(srv_nreq(), 1);
    /* the request asked for the old item and carried the condition */
    const char *req = srv_req(0);
    assert_non_null(strstr(req, "\"ReturnValuesOnConditionCheckFailure\":\"ALL_OLD\""));
    assert_non_null(strstr(req, "\"ConditionExpression\":\"versionNumber = :v\""));
    assert_non_null(strstr(req, "\"ExpressionAttributeValues\":{\":v\":{\"S\":\"v0\"}}"));

    /* a read is not retried on a condition failure either, nor a delete */
    json_t *key = key_of("a");
    assert_int_equal(ddb_delete_item(f->c, "locks", key, &cond, 0, &err),
                     DDB_ERR_CONDITION);
    ddb_error_clear(&err);
    assert_int_equal(srv_nreq(), 2);
    json_decref(key);
    json_decref(item);
    json_decref(vals);
}

static void test_throttle_then_success(void **state)
{
    fx *f = *state;
    ddb_error err;
    canned script[] = {
        { 400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
          "ProvisionedThroughputExceededException\",\"message\":\"slow down\"}", ANS_NORMAL },
        { 400, "{\"__type\":\"com.amazon.coral.availability#ThrottlingException\"}", ANS_NORMAL },
        { 200, "{}", ANS_NORMAL },
    };
    srv_script(3, script);
    json_t *item = json_pack("{s:o}", "lockKey", ddb_s("a"));
    assert_int_equal(ddb_put_item(f->c, "locks", item, NULL, 0, &err), DDB_OK);
    assert_int_equal(err.code, DDB_OK);
    assert_int_equal(srv_nreq(), 3);
    json_decref(item);
}

static void test_write_reset_is_ambiguous(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *item = json_pack("{s:o}", "lockKey", ddb_s("a"));
    for (int m = 0; m < 2; m++) {
        canned script[] = { { 200, "{}", m ? ANS_RESET_MID : ANS_CLOSE_MID },
                            { 200, "{}", ANS_NORMAL } };
        srv_reset();
        srv_script(2, script);
        ddb_code code = ddb_put_item(f->c, "locks", item, NULL, 0, &err);
        if (code != DDB_ERR_NETWORK)
            fail_msg("got %s: %s", ddb_code_name(code), err.msg);
        assert_true(err.ambiguous);
        assert_clean_msg(&err, "PutItem");
        assert_int_equal(srv_nreq(), 1);
        ddb_error_clear(&err);
    }

    /* 5xx on a write: ambiguous, not retried */
    srv_answer(500, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\"}");
    json_t *key = key_of("a");
    assert_int_equal(ddb_update_item(f->c, "locks", key, "SET x = :x", NULL, 0, &err),
                     DDB_ERR_SERVER);
    assert_true(err.ambiguous);
    assert_int_equal(srv_nreq(), 2);
    json_decref(key);
    json_decref(item);
}

static void test_read_reset_is_retried(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *got = NULL;
    canned script[] = {
        { 200, "{}", ANS_RESET_MID },
        { 500, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\"}", ANS_NORMAL },
        { 200, "{\"Item\":{\"lockKey\":{\"S\":\"a\"},\"leaseDuration\":{\"N\":\"7\"}}}", ANS_NORMAL },
    };
    srv_script(3, script);
    json_t *key = key_of("a");
    assert_int_equal(ddb_get_item(f->c, "locks", key, &got, 0, &err), DDB_OK);
    assert_int_equal(srv_nreq(), 3);
    assert_non_null(got);
    long long lease = 0;
    assert_true(ddb_item_n(got, "leaseDuration", &lease));
    assert_int_equal(lease, 7);
    /* GetItem is always consistent */
    assert_non_null(strstr(srv_req(2), "\"ConsistentRead\":true"));
    json_decref(got);

    /* an absent item is no error */
    srv_answer(200, "{}");
    assert_int_equal(ddb_get_item(f->c, "locks", key, &got, 0, &err), DDB_OK);
    assert_null(got);
    json_decref(key);
}

static void test_bad_op_name(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *body = json_object();

    assert_int_equal(ddb_call(f->c, "GetItem\r\nX-Evil: 1", body, NULL, 0, &err),
                     DDB_ERR_VALIDATION);
    assert_null(ddb_req_new(f->c, "", body, &err));
    assert_int_equal(err.code, DDB_ERR_VALIDATION);
    assert_int_equal(srv_nreq(), 0);
    json_decref(body);
}

static void test_connection_refused(void **state)
{
    (void)state;
    int port;
    int fd = listen_socket(&port, false);   /* bound, not listening */
    fx *g = fx_new_at(port, false, 3000);
    ddb_error err;
    char want[160];
    json_t *resp = NULL;

    assert_int_equal(one_req(g, "PutItem", &resp, &err), DDB_ERR_NETWORK);
    assert_false(err.ambiguous);
    assert_int_equal(err.http_status, 0);
    snprintf(want, sizeof(want), "cannot connect to DynamoDB at "
             "http://127.0.0.1:%d: Connection refused; check endpoint=", port);
    if (!strstr(err.msg, want))
        fail_msg("unexpected message: %s", err.msg);
    assert_clean_msg(&err, "PutItem");
    ddb_error_clear(&err);

    /* a write that never reached the server is retried until the deadline */
    json_t *item = json_pack("{s:o}", "lockKey", ddb_s("a"));
    int64_t t0 = lk_now_ms();
    assert_int_equal(ddb_put_item(g->c, "locks", item, NULL, t0 + 300, &err),
                     DDB_ERR_NETWORK);
    int64_t took = lk_now_ms() - t0;
    assert_true(took <= 450);
    assert_false(err.ambiguous);
    assert_non_null(strstr(err.msg, "gave up after"));
    assert_clean_msg(&err, "PutItem");
    json_decref(item);
    close(fd);
    ddb_client_free(g->c);
    aws_config_free(g->cfg);
    free(g);
}

static void test_not_json(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *got = NULL;

    srv_answer(200, "<html><body>It works!</body></html>");
    json_t *key = key_of("a");
    assert_int_equal(ddb_get_item(f->c, "locks", key, &got, 0, &err),
                     DDB_ERR_PROTOCOL);
    assert_null(got);
    char want[128];
    snprintf(want, sizeof(want), "answer from %s is not DynamoDB JSON (HTTP 200)",
             f->endpoint);
    assert_non_null(strstr(err.msg, want));
    assert_clean_msg(&err, "GetItem");
    /* not retried: another try would get the same */
    assert_int_equal(srv_nreq(), 1);
    json_decref(key);
}

static void test_truncated(void **state)
{
    fx *f = *state;
    ddb_error err;
    canned c = { 200, "{\"Attributes\":{}}", ANS_TRUNCATED };

    srv_script(1, &c);
    json_t *key = key_of("a");
    ddb_code code = ddb_delete_item(f->c, "locks", key, NULL, 0, &err);
    assert_true(code == DDB_ERR_PROTOCOL || code == DDB_ERR_NETWORK);
    assert_true(err.ambiguous);
    assert_clean_msg(&err, "DeleteItem");
    assert_int_equal(srv_nreq(), 1);
    json_decref(key);
}

static void test_huge(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *resp = NULL;
    canned c = { 200, NULL, ANS_HUGE };

    srv_script(1, &c);
    assert_int_equal(one_req(f, "Scan", &resp, &err), DDB_ERR_PROTOCOL);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "larger than 16 MiB"));
    assert_non_null(strstr(err.msg, f->endpoint));
    assert_clean_msg(&err, "Scan");
    /* the client still works afterwards */
    srv_answer(200, "{\"TableNames\":[]}");
    json_t *empty = json_object();
    assert_int_equal(ddb_call(f->c, "ListTables", empty, &resp, 0, &err), DDB_OK);
    json_decref(resp);
    json_decref(empty);
}

static void test_deadline_throttled(void **state)
{
    fx *f = *state;
    ddb_error err;

    srv_answer(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
               "ProvisionedThroughputExceededException\"}");
    json_t *item = json_pack("{s:o}", "lockKey", ddb_s("a"));
    json_t *key = key_of("a"), *got = NULL;

    /* a read: the last real error, and when retries ran out */
    int64_t t0 = lk_now_ms();
    assert_int_equal(ddb_get_item(f->c, "locks", key, &got, t0 + 300, &err),
                     DDB_ERR_THROTTLED);
    int64_t took = lk_now_ms() - t0;
    if (took > 400)
        fail_msg("took %lld ms for a 300 ms deadline", (long long)took);
    assert_true(srv_nreq() >= 2);
    assert_non_null(strstr(err.msg, "gave up after"));
    assert_clean_msg(&err, "GetItem");
    ddb_error_clear(&err);

    /* a write: throttled, or (if a last attempt was cut short by the
     * deadline while sent) a lost answer marked ambiguous */
    int before = srv_nreq();
    t0 = lk_now_ms();
    ddb_code code = ddb_put_item(f->c, "locks", item, NULL, t0 + 300, &err);
    took = lk_now_ms() - t0;
    if (took > 400)
        fail_msg("took %lld ms for a 300 ms deadline", (long long)took);
    assert_true(code == DDB_ERR_THROTTLED ||
                (code == DDB_ERR_NETWORK && err.ambiguous));
    assert_true(srv_nreq() - before >= 2);
    assert_clean_msg(&err, "PutItem");
    ddb_error_clear(&err);

    /* a deadline already past: nothing is sent */
    before = srv_nreq();
    assert_int_equal(ddb_put_item(f->c, "locks", item, NULL, lk_now_ms() - 1, &err),
                     DDB_ERR_TIMEOUT);
    assert_int_equal(srv_nreq(), before);
    assert_clean_msg(&err, "PutItem");
    json_decref(item);
    json_decref(key);
}

static void test_deadline_clips_request(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *got = NULL;
    canned c = { 200, "{}", ANS_SLOW };

    srv_script(1, &c);
    json_t *key = key_of("a");
    int64_t t0 = lk_now_ms();
    ddb_code code = ddb_get_item(f->c, "locks", key, &got, t0 + 300, &err);
    int64_t took = lk_now_ms() - t0;
    assert_int_equal(code, DDB_ERR_NETWORK);
    if (took > 450)
        fail_msg("took %lld ms for a 300 ms deadline", (long long)took);
    assert_true(err.ambiguous);      /* sent, no answer */
    assert_clean_msg(&err, "GetItem");
    json_decref(key);
}

static const char *header_value(const char *req, const char *name, char *out,
                                size_t cap)
{
    const char *end = strstr(req, "\r\n\r\n");
    size_t nl = strlen(name);

    for (const char *h = strstr(req, "\r\n"); h && h < end; h = strstr(h, "\r\n")) {
        h += 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t n = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

static void check_common_headers(const char *req, const char *op,
                                 bool expect_ok, bool token)
{
    char v[1024], want[128];

    assert_non_null(req);
    assert_true(strncmp(req, "POST / HTTP/1.1\r\n", 17) == 0);
    snprintf(want, sizeof(want), "DynamoDB_20120810.%s", op);
    assert_non_null(header_value(req, "X-Amz-Target", v, sizeof(v)));
    assert_string_equal(v, want);
    assert_non_null(header_value(req, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/x-amz-json-1.0");
    assert_non_null(header_value(req, "Authorization", v, sizeof(v)));
    assert_true(strncmp(v, "AWS4-HMAC-SHA256 Credential=" KEYID "/", 29) == 0);
    assert_non_null(strstr(v, "/us-east-1/dynamodb/aws4_request"));
    assert_non_null(strstr(v, "x-amz-target"));
    assert_null(strstr(v, SECRET));
    assert_non_null(header_value(req, "X-Amz-Date", v, sizeof(v)));
    header_value(req, "Authorization", v, sizeof(v));
    assert_null(strstr(v, "expect"));
    if (!expect_ok)
        assert_null(header_value(req, "Expect", v, sizeof(v)));
    if (token) {
        assert_non_null(header_value(req, "X-Amz-Security-Token", v, sizeof(v)));
        assert_string_equal(v, TOKEN);
        header_value(req, "Authorization", v, sizeof(v));
        assert_non_null(strstr(v, "x-amz-security-token"));
    } else {
        assert_null(header_value(req, "X-Amz-Security-Token", v, sizeof(v)));
    }
    /* no header with an empty value */
    const char *end = strstr(req, "\r\n\r\n");
    for (const char *h = strstr(req, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
        const char *colon = strchr(h + 2, ':');
        if (colon && colon < end) {
            const char *p = colon + 1;
            while (*p == ' ')
                p++;
            assert_false(p[0] == '\r' && p[1] == '\n');
        }
    }
}

static void test_wire_headers(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *resp = NULL;

    json_t *body = json_pack("{s:s}", "TableName", "locks");
    assert_int_equal(ddb_call(f->c, "DescribeTable", body, &resp, 0, &err), DDB_OK);
    json_decref(resp);
    check_common_headers(srv_req(0), "DescribeTable", false, false);
    assert_non_null(strstr(srv_req(0), "\r\n\r\n{\"TableName\":\"locks\"}"));

    /* a second call reuses the connection and carries its own target */
    srv_answer(200, "{\"TableNames\":[]}");
    json_t *empty = json_object();
    assert_int_equal(ddb_call(f->c, "ListTables", empty, &resp, 0, &err), DDB_OK);
    json_decref(resp);
    check_common_headers(srv_req(1), "ListTables", false, false);
    pthread_mutex_lock(&S.mu);
    int nconns = S.nconns;
    pthread_mutex_unlock(&S.mu);
    assert_int_equal(nconns, 1);

    /* a large body (over curl's 1 MiB Expect threshold) goes straight out */
    char *big = malloc(1500000);
    memset(big, 'v', 1499999);
    big[1499999] = '\0';
    json_t *bb = json_pack("{s:s,s:{s:{s:s}}}", "TableName", "locks", "Item",
                           "big", "S", big);
    int64_t t0 = lk_now_ms();
    assert_int_equal(ddb_call(f->c, "PutItem", bb, &resp, 0, &err), DDB_OK);
    assert_true(lk_now_ms() - t0 < 900);
    json_decref(resp);
    check_common_headers(srv_req(2), "PutItem", true /* Expect allowed */, false);
    free(big);
    json_decref(bb);
    json_decref(empty);
    json_decref(body);
}

static void test_wire_token(void **state)
{
    fx *f = *state;
    ddb_error err;
    json_t *resp = NULL;

    srv_answer(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
               "UnrecognizedClientException\",\"message\":\"The security token "
               "included in the request is invalid.\"}");
    json_t *body = json_pack("{s:s}", "TableName", "locks");
    assert_int_equal(ddb_call(f->c, "DescribeTable", body, &resp, 0, &err), DDB_ERR_AUTH);
    assert_clean_msg(&err, "DescribeTable");
    assert_int_equal(srv_nreq(), 1);
    check_common_headers(srv_req(0), "DescribeTable", false, true);

    /* the asynchronous path sends the same */
    srv_answer(200, "{}");
    assert_int_equal(one_req(f, "GetItem", &resp, &err), DDB_OK);
    json_decref(resp);
    check_common_headers(srv_req(1), "GetItem", false, true);
    json_decref(body);
}

typedef struct seen {
    int n;
    char names[8][16];
} seen;

static int on_item(json_t *item, void *arg)
{
    seen *s = arg;
    const char *k = ddb_item_s(item, "lockKey");
    assert_non_null(k);
    if (s->n < 8)
        snprintf(s->names[s->n], sizeof(s->names[0]), "%s", k);
    s->n++;
    return 0;
}

static void test_scan_pages(void **state)
{
    fx *f = *state;
    ddb_error err;
    seen s;
    canned script[] = {
        { 200, "{\"Items\":[{\"lockKey\":{\"S\":\"a\"}},{\"lockKey\":{\"S\":\"b\"}}],"
          "\"Count\":2,\"LastEvaluatedKey\":{\"lockKey\":{\"S\":\"b\"}}}", ANS_NORMAL },
        { 400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
          "ProvisionedThroughputExceededException\"}", ANS_NORMAL },
        { 200, "{\"Items\":[{\"lockKey\":{\"S\":\"c\"}}],"
          "\"LastEvaluatedKey\":{\"lockKey\":{\"S\":\"c\"}}}", ANS_NORMAL },
        { 200, "{\"Items\":[{\"lockKey\":{\"S\":\"d\"}}],\"Count\":1}", ANS_NORMAL },
    };
    memset(&s, 0, sizeof(s));
    srv_script(4, script);
    assert_int_equal(ddb_scan(f->c, "locks", true, on_item, &s, &err), DDB_OK);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.names[0], "a");
    assert_string_equal(s.names[1], "b");
    assert_string_equal(s.names[2], "c");
    assert_string_equal(s.names[3], "d");
    assert_int_equal(srv_nreq(), 4);
    assert_null(strstr(srv_req(0), "ExclusiveStartKey"));
    assert_non_null(strstr(srv_req(0), "\"ConsistentRead\":true"));
    assert_non_null(strstr(srv_req(1), "\"ExclusiveStartKey\":{\"lockKey\":{\"S\":\"b\"}}"));
    assert_non_null(strstr(srv_req(2), "\"ExclusiveStartKey\":{\"lockKey\":{\"S\":\"b\"}}"));
    assert_non_null(strstr(srv_req(3), "\"ExclusiveStartKey\":{\"lockKey\":{\"S\":\"c\"}}"));
}

static int stop_at_two(const char *name, void *arg)
{
    int *n = arg;
    return ++*n >= 2;
}

static void test_list_tables_pages(void **state)
{
    fx *f = *state;
    ddb_error err;
    int n = 0;
    canned script[] = {
        { 200, "{\"TableNames\":[\"t1\"],\"LastEvaluatedTableName\":\"t1\"}", ANS_NORMAL },
        { 200, "{\"TableNames\":[\"t2\",\"t3\"],\"LastEvaluatedTableName\":\"t3\"}", ANS_NORMAL },
        { 200, "{\"TableNames\":[\"t4\"]}", ANS_NORMAL },
    };
    srv_script(3, script);
    /* stopping early stops paging */
    assert_int_equal(ddb_list_tables(f->c, stop_at_two, &n, &err), DDB_OK);
    assert_int_equal(n, 2);
    assert_int_equal(srv_nreq(), 2);
    assert_non_null(strstr(srv_req(1), "\"ExclusiveStartTableName\":\"t1\""));

    /* a server repeating its page token is an error, not an endless loop */
    srv_answer(200, "{\"TableNames\":[\"t1\"],\"LastEvaluatedTableName\":\"t1\"}");
    n = -1000;
    assert_int_equal(ddb_list_tables(f->c, stop_at_two, &n, &err), DDB_ERR_PROTOCOL);
    assert_clean_msg(&err, "ListTables");
    srv_answer(200, "{\"Items\":[],\"LastEvaluatedKey\":{\"lockKey\":{\"S\":\"b\"}}}");
    assert_int_equal(ddb_scan(f->c, "locks", false, NULL, NULL, &err), DDB_ERR_PROTOCOL);
    assert_clean_msg(&err, "Scan");
}

static void test_describe_and_wait(void **state)
{
    fx *f = *state;
    ddb_error err;
    ddb_table_info info;
    canned script[] = {
        { 200, "{\"Table\":{\"TableName\":\"locks\",\"TableStatus\":\"CREATING\"}}", ANS_NORMAL },
        { 200, "{\"Table\":{\"TableName\":\"locks\",\"TableStatus\":\"ACTIVE\","
          "\"TableArn\":\"arn:aws:dynamodb:us-east-1:1:table/locks\","
          "\"KeySchema\":[{\"AttributeName\":\"lockKey\",\"KeyType\":\"HASH\"}],"
          "\"AttributeDefinitions\":[{\"AttributeName\":\"lockKey\",\"AttributeType\":\"S\"}]}}",
          ANS_NORMAL },
    };
    srv_script(2, script);
    assert_int_equal(ddb_wait_table_active(f->c, "locks", 0, &info, &err), DDB_OK);
    assert_string_equal(info.status, "ACTIVE");
    assert_string_equal(info.arn, "arn:aws:dynamodb:us-east-1:1:table/locks");
    assert_string_equal(info.hash_key, "lockKey");
    assert_string_equal(info.hash_type, "S");
    assert_false(info.has_range_key);
    assert_int_equal(srv_nreq(), 2);

    /* stuck CREATING: a timeout with a clear line */
    srv_answer(200, "{\"Table\":{\"TableStatus\":\"CREATING\"}}");
    int64_t t0 = lk_now_ms();
    assert_int_equal(ddb_wait_table_active(f->c, "locks", t0 + 400, &info, &err),
                     DDB_ERR_TIMEOUT);
    assert_true(lk_now_ms() - t0 < 700);
    assert_non_null(strstr(err.msg, "still CREATING"));

    /* gone: ResourceNotFound ends the wait */
    canned gone[] = {
        { 200, "{\"Table\":{\"TableStatus\":\"DELETING\"}}", ANS_NORMAL },
        { 400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
          "ResourceNotFoundException\",\"message\":\"Requested resource not found\"}",
          ANS_NORMAL },
    };
    srv_reset();
    srv_script(2, gone);
    assert_int_equal(ddb_wait_table_gone(f->c, "locks", 0, &err), DDB_OK);
    assert_int_equal(err.code, DDB_OK);

    /* a describe of a missing table says so */
    assert_int_equal(ddb_describe_table(f->c, "locks", &info, &err), DDB_ERR_NOT_FOUND);
    assert_clean_msg(&err, "DescribeTable");
}

static int count_tag(const char *k, const char *v, void *arg)
{
    assert_true(strcmp(k, "lynk") == 0 ? strcmp(v, "lock-table") == 0
                                       : strcmp(v, "y") == 0);
    ++*(int *)arg;
    return 0;
}

static void test_create_table_bodies(void **state)
{
    fx *f = *state;
    ddb_error err;

    assert_int_equal(ddb_create_table(f->c, "locks", "lockKey", 0, 0, &err), DDB_OK);
    assert_int_equal(ddb_create_table(f->c, "locks", "lockKey", 5, 5, &err), DDB_OK);
    json_t *a = json_loads(strstr(srv_req(0), "\r\n\r\n") + 4, 0, NULL);
    json_t *b = json_loads(strstr(srv_req(1), "\r\n\r\n") + 4, 0, NULL);
    json_t *want_a = json_pack("{s:s,s:[{s:s,s:s}],s:[{s:s,s:s}],s:s}",
        "TableName", "locks",
        "AttributeDefinitions", "AttributeName", "lockKey", "AttributeType", "S",
        "KeySchema", "AttributeName", "lockKey", "KeyType", "HASH",
        "BillingMode", "PAY_PER_REQUEST");
    assert_true(json_equal(a, want_a));
    json_t *pt = json_object_get(b, "ProvisionedThroughput");
    assert_int_equal(json_integer_value(json_object_get(pt, "ReadCapacityUnits")), 5);
    assert_int_equal(json_integer_value(json_object_get(pt, "WriteCapacityUnits")), 5);
    assert_string_equal(json_string_value(json_object_get(b, "BillingMode")), "PROVISIONED");
    check_common_headers(srv_req(0), "CreateTable", false, false);

    /* tagging and tag listing with NextToken */
    canned tags[] = {
        { 200, "", ANS_NORMAL },    /* DynamoDB answers TagResource with nothing */
        { 200, "\"\"", ANS_NORMAL },  /* dynalite answers "" */
        { 200, "{\"Tags\":[{\"Key\":\"lynk\",\"Value\":\"lock-table\"}],\"NextToken\":\"n1\"}", ANS_NORMAL },
        { 200, "{\"Tags\":[{\"Key\":\"x\",\"Value\":\"y\"}]}", ANS_NORMAL },
    };
    srv_reset();
    srv_script(4, tags);
    const char *arn = "arn:aws:dynamodb:us-east-1:1:table/locks";
    assert_int_equal(ddb_tag_resource(f->c, arn, "lynk", "lock-table", &err), DDB_OK);
    assert_non_null(strstr(srv_req(0), "\"Tags\":[{\"Key\":\"lynk\",\"Value\":\"lock-table\"}]"));
    assert_int_equal(ddb_tag_resource(f->c, arn, "lynk", "lock-table", &err), DDB_OK);
    int n = 0;
    assert_int_equal(ddb_list_tags(f->c, arn, count_tag, &n, &err), DDB_OK);
    assert_int_equal(n, 2);
    assert_non_null(strstr(srv_req(3), "\"NextToken\":\"n1\""));
    json_decref(a);
    json_decref(b);
    json_decref(want_a);
}

static void test_helpers(void **state)
{
    (void)state;
    json_t *item = json_pack("{s:o,s:o,s:{s:s},s:{s:s},s:{s:s}}",
                             "s", ddb_s("hello"), "n", ddb_n(-42),
                             "f", "N", "1.5", "e", "N", "", "big", "N",
                             "99999999999999999999");
    long long v = 0;
    assert_string_equal(ddb_item_s(item, "s"), "hello");
    assert_null(ddb_item_s(item, "n"));
    assert_null(ddb_item_s(item, "missing"));
    assert_null(ddb_item_s(NULL, "s"));
    assert_true(ddb_item_n(item, "n", &v));
    assert_int_equal(v, -42);
    assert_false(ddb_item_n(item, "s", &v));
    assert_false(ddb_item_n(item, "f", &v));
    assert_false(ddb_item_n(item, "e", &v));
    assert_false(ddb_item_n(item, "big", &v));
    assert_false(ddb_item_n(item, "missing", &v));
    json_decref(item);

    for (int a = 0; a < 12; a++) {
        int64_t lim = 20LL << a;
        if (lim > 1000)
            lim = 1000;
        for (int i = 0; i < 200; i++) {
            int64_t b = ddb_backoff_ms(a);
            assert_true(b >= 0 && b <= lim);
        }
    }
    assert_true(ddb_backoff_ms(1000) <= 1000);

    const char *names[DDB_ERR_NOMEM + 1];
    for (int c = 0; c <= DDB_ERR_NOMEM; c++) {
        names[c] = ddb_code_name((ddb_code)c);
        assert_string_not_equal(names[c], "unknown");
        for (int d = 0; d < c; d++)
            assert_string_not_equal(names[c], names[d]);
    }
    assert_string_equal(ddb_code_name(DDB_ERR_CONDITION), "condition-failed");
    assert_string_equal(ddb_code_name(DDB_ERR_THROTTLED), "throttled");

    ddb_error e;
    memset(&e, 0, sizeof(e));
    e.code = DDB_ERR_THROTTLED;
    assert_true(ddb_retryable(&e));
    e.code = DDB_ERR_NETWORK;
    assert_true(ddb_retryable(&e));
    e.code = DDB_ERR_SERVER;
    assert_true(ddb_retryable(&e));
    e.code = DDB_ERR_CONDITION;
    assert_false(ddb_retryable(&e));
    e.code = DDB_ERR_VALIDATION;
    assert_false(ddb_retryable(&e));

    /* builders */
    json_t *key = json_pack("{s:o}", "lockKey", ddb_s("k"));
    json_t *vals = json_pack("{s:o}", ":new", ddb_s("v2"));
    ddb_cond c = { "versionNumber = :mine", NULL, vals, false };
    json_t *u = ddb_body_update_item("locks", key, "SET versionNumber = :new", &c);
    assert_string_equal(json_string_value(json_object_get(u, "UpdateExpression")),
                        "SET versionNumber = :new");
    assert_null(json_object_get(u, "ReturnValuesOnConditionCheckFailure"));
    assert_true(json_equal(json_object_get(u, "Key"), key));
    json_t *g = ddb_body_get_item("locks", key, true);
    assert_true(json_is_true(json_object_get(g, "ConsistentRead")));
    assert_null(ddb_body_get_item("locks", NULL, true));
    json_decref(u);
    json_decref(g);
    json_decref(key);
    json_decref(vals);
}

int main(void)
{
    snprintf(tmp_home, sizeof(tmp_home), "/tmp/test_ddb_errors.XXXXXX");
    if (!mkdtemp(tmp_home)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helpers),
        cmocka_unit_test_setup_teardown(test_error_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_capital_and_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_condition_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_reset_is_ambiguous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_reset_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_op_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_throttled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_clips_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_token, setup_token, teardown),
        cmocka_unit_test_setup_teardown(test_scan_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_tables_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_describe_and_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_table_bodies, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(tmp_home);
    return rc;
}
