/* ddb/ddb.c — the DynamoDB client of ddb.h: one HTTP exchange (request
 * building, libcurl SigV4 signing, answer collection), the mapping of every
 * outcome to a ddb_error, the retry loop of ddb_call, the request body
 * builders, the attribute helpers and the table/item operations.
 *
 * The synchronous path and the asynchronous ddb_req share one request
 * structure: req_setup() puts every option on an easy handle (the client's
 * reused one, or the ddb_req's own) and req_outcome() maps what came back. */
#include "ddb/ddb.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

#define DDB_MAX_ANSWER     ((size_t)16 << 20)   /* 16 MiB */
#define DDB_TARGET_PREFIX  "DynamoDB_20120810."
#define DDB_BACKOFF_BASE   20
#define DDB_BACKOFF_CAP    1000
#define DDB_WAIT_DEFAULT   60000
#define DDB_MIN_RETRY_MS   25      /* no retry is sent with less time left */
#define DDB_SERVER_MSG_MAX 200

/* ---- errors ---------------------------------------------------------- */

static void err_reset(ddb_error *err)
{
    memset(err, 0, sizeof(*err));
}

void ddb_error_clear(ddb_error *err)
{
    if (!err)
        return;
    json_decref(err->item);
    err_reset(err);
}

__attribute__((format(printf, 3, 4)))
static ddb_code err_set(ddb_error *err, ddb_code code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

/* Append a suffix to err->msg, cutting the message to make room for it. */
static void err_append(ddb_error *err, const char *suffix)
{
    size_t cap = sizeof(err->msg), slen = strlen(suffix);
    size_t len = strlen(err->msg);

    if (slen >= cap)
        return;
    if (len + slen >= cap)
        len = cap - 1 - slen;
    memcpy(err->msg + len, suffix, slen + 1);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

const char *ddb_code_name(ddb_code code)
{
    switch (code) {
    case DDB_OK:             return "ok";
    case DDB_ERR_CONDITION:  return "condition-failed";
    case DDB_ERR_THROTTLED:  return "throttled";
    case DDB_ERR_NOT_FOUND:  return "not-found";
    case DDB_ERR_IN_USE:     return "in-use";
    case DDB_ERR_VALIDATION: return "validation";
    case DDB_ERR_AUTH:       return "auth";
    case DDB_ERR_NETWORK:    return "network";
    case DDB_ERR_SERVER:     return "server";
    case DDB_ERR_PROTOCOL:   return "protocol";
    case DDB_ERR_TIMEOUT:    return "timeout";
    case DDB_ERR_CONFIG:     return "config";
    case DDB_ERR_NOMEM:      return "nomem";
    }
    return "unknown";
}

/* A certificate that failed verification will fail again: no retry. */
#define DDB_TYPE_TLS_VERIFY "tls-verify"

bool ddb_retryable(const ddb_error *err)
{
    switch (err->code) {
    case DDB_ERR_THROTTLED:
    case DDB_ERR_SERVER:
        return true;
    case DDB_ERR_NETWORK:
        return strcmp(err->type, DDB_TYPE_TLS_VERIFY) != 0;
    default:
        return false;
    }
}

int64_t ddb_backoff_ms(int attempt)
{
    int64_t ceil = DDB_BACKOFF_CAP;

    if (attempt < 0)
        attempt = 0;
    if (attempt < 16) {
        int64_t exp = (int64_t)DDB_BACKOFF_BASE << attempt;
        if (exp < ceil)
            ceil = exp;
    }
    return (int64_t)lk_random_below((uint64_t)ceil + 1);
}

/* Operations that change nothing: retried on every retryable error. */
static bool op_is_read(const char *op)
{
    static const char *const reads[] = {
        "GetItem", "BatchGetItem", "TransactGetItems", "Scan", "Query",
        "DescribeTable", "ListTables", "ListTagsOfResource",
        "DescribeTimeToLive", "DescribeLimits", "DescribeEndpoints",
        "DescribeContinuousBackups", NULL
    };
    for (size_t i = 0; reads[i]; i++)
        if (strcmp(op, reads[i]) == 0)
            return true;
    return false;
}

/* ---- one request ------------------------------------------------------ */

typedef struct ddb_buf {
    char *data;
    size_t len, cap;
    bool too_big;
    bool nomem;
    bool head_done;   /* the blank line ending the last header block came */
} ddb_buf;

struct ddb_client {
    aws_config *cfg;
    CURL *easy;               /* reused across calls: keeps the connection */
    ddb_client_options opts;
};

struct ddb_req {
    CURL *easy;
    bool own_easy;            /* false: the client's handle (sync path) */
    struct curl_slist *headers;
    char *body;               /* serialized request; owned when own_body */
    size_t body_len;
    bool own_body;
    ddb_buf ans;
    char op[64];
    char endpoint[512];
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
    void *priv;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    ddb_buf *b = ud;
    size_t len = size * n;

    if (len > DDB_MAX_ANSWER || b->len + len > DDB_MAX_ANSWER) {
        b->too_big = true;
        return 0;
    }
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->nomem = true;
            return 0;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

/* Tracks whether the answer's header block ended: curl 7.88 reports success
 * for a connection closed in the middle of the headers. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    ddb_buf *b = ud;
    size_t len = size * n;

    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        b->head_done = false;
    else if ((len == 2 && p[0] == '\r' && p[1] == '\n') ||
             (len == 1 && p[0] == '\n'))
        b->head_done = true;
    return len;
}

/* Zero a header list's text before freeing it: it may hold a token. */
static void headers_free(struct curl_slist *h)
{
    for (struct curl_slist *s = h; s; s = s->next)
        if (s->data)
            memset(s->data, 0, strlen(s->data));
    curl_slist_free_all(h);
}

static ddb_code req_headers(ddb_req *r, const aws_credentials *cr,
                            ddb_error *err)
{
    char line[256];
    struct curl_slist *h = NULL, *t;

    snprintf(line, sizeof(line), "X-Amz-Target: " DDB_TARGET_PREFIX "%s", r->op);
    t = curl_slist_append(h, "Content-Type: application/x-amz-json-1.0");
    if (t)
        h = t;
    t = t ? curl_slist_append(h, line) : NULL;
    if (t && cr->session_token && cr->session_token[0]) {
        size_t n = strlen(cr->session_token) + 32;
        char *tok = malloc(n);
        t = NULL;
        if (tok) {
            snprintf(tok, n, "X-Amz-Security-Token: %s", cr->session_token);
            t = curl_slist_append(h, tok);
            memset(tok, 0, n);
            free(tok);
        }
    }
    if (!t) {
        headers_free(h);
        return err_set(err, DDB_ERR_NOMEM, "%s: out of memory building the request",
                       r->op);
    }
    r->headers = h;
    return DDB_OK;
}

/* Put every option of one exchange on r->easy. Everything a request uses is
 * set here each time, so nothing leaks from one request to the next on the
 * client's reused handle. */
static ddb_code req_setup(ddb_req *r, ddb_client *c, long timeout_ms,
                          ddb_error *err)
{
    aws_config *cfg = c->cfg;
    aws_credentials cr;
    aws_error aerr;
    char sigv4[160], url[600];
    long connect_ms = c->opts.connect_timeout_ms;
    CURL *e = r->easy;

    memset(&cr, 0, sizeof(cr));
    memset(&aerr, 0, sizeof(aerr));
    if (aws_config_credentials(cfg, &cr, &aerr) != AWS_OK) {
        aws_credentials_clear(&cr);
        return err_set(err, DDB_ERR_CONFIG, "%s: %s", r->op, aerr.msg);
    }
    if (req_headers(r, &cr, err) != DDB_OK) {
        aws_credentials_clear(&cr);
        return err->code;
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (connect_ms > timeout_ms)
        connect_ms = timeout_ms;
    r->timeout_ms = timeout_ms;
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:dynamodb", aws_config_region(cfg));
    snprintf(url, sizeof(url), "%s/", r->endpoint);
    r->errbuf[0] = '\0';

    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_HTTPHEADER, r->headers);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    SET(CURLOPT_POSTFIELDS, r->body);
    SET(CURLOPT_AWS_SIGV4, sigv4);
    SET(CURLOPT_USERNAME, cr.access_key_id);
    SET(CURLOPT_PASSWORD, cr.secret_access_key);
    SET(CURLOPT_USERAGENT, "lynkfs/" LYNKFS_VERSION);
    SET(CURLOPT_WRITEFUNCTION, on_data);
    SET(CURLOPT_WRITEDATA, &r->ans);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, &r->ans);
    /* Bodies over 1 MiB get "Expect: 100-continue" (unsigned, harmless);
     * send them at once rather than wait a second for "100 Continue". An
     * empty "Expect:" header would break curl 7.88's signature. */
    SET(CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SET(CURLOPT_TIMEOUT_MS, timeout_ms);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
#undef SET
    aws_credentials_clear(&cr);
    if (rc != CURLE_OK)
        return err_set(err, rc == CURLE_OUT_OF_MEMORY ? DDB_ERR_NOMEM : DDB_ERR_CONFIG,
                       "%s: cannot set up the HTTP request to %s (%s)", r->op,
                       r->endpoint, curl_easy_strerror(rc));
    return DDB_OK;
}

static void buf_reset(ddb_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Fill the parts of a request that do not touch curl. */
static ddb_code req_init(ddb_req *r, ddb_client *c, const char *op,
                         ddb_error *err)
{
    size_t n = op ? strlen(op) : 0;

    if (n == 0 || n >= sizeof(r->op) || strspn(op, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "abcdefghijklmnopqrstuvwxyz") != n)
        return err_set(err, DDB_ERR_VALIDATION, "bad DynamoDB operation name "
                       "(a bug in the caller)");
    copy_str(r->op, sizeof(r->op), op);
    copy_str(r->endpoint, sizeof(r->endpoint), aws_config_endpoint(c->cfg));
    return DDB_OK;
}

/* ---- mapping an outcome ----------------------------------------------- */

/* The server's message, made one line and short. */
static void server_msg(const json_t *ans, char *out, size_t cap)
{
    const char *m = NULL;
    json_t *v = json_object_get(ans, "message");

    if (!json_is_string(v))
        v = json_object_get(ans, "Message");
    if (json_is_string(v))
        m = json_string_value(v);
    out[0] = '\0';
    if (!m)
        return;
    size_t n = 0;
    for (; m[n] && n + 1 < cap && n < DDB_SERVER_MSG_MAX; n++) {
        unsigned char ch = (unsigned char)m[n];
        out[n] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    out[n] = '\0';
}

typedef struct type_map {
    const char *type;
    ddb_code code;
} type_map;

static const type_map TYPES[] = {
    { "ConditionalCheckFailedException", DDB_ERR_CONDITION },
    { "ProvisionedThroughputExceededException", DDB_ERR_THROTTLED },
    { "ThrottlingException", DDB_ERR_THROTTLED },
    { "Throttling", DDB_ERR_THROTTLED },
    { "RequestLimitExceeded", DDB_ERR_THROTTLED },
    { "ResourceNotFoundException", DDB_ERR_NOT_FOUND },
    { "ResourceInUseException", DDB_ERR_IN_USE },
    { "ValidationException", DDB_ERR_VALIDATION },
    { "SerializationException", DDB_ERR_VALIDATION },
    { "LimitExceededException", DDB_ERR_VALIDATION },
    { "TransactionConflictException", DDB_ERR_VALIDATION },
    { "TransactionCanceledException", DDB_ERR_VALIDATION },
    { "ItemCollectionSizeLimitExceededException", DDB_ERR_VALIDATION },
    { "UnrecognizedClientException", DDB_ERR_AUTH },
    { "InvalidSignatureException", DDB_ERR_AUTH },
    { "MissingAuthenticationToken", DDB_ERR_AUTH },
    { "MissingAuthenticationTokenException", DDB_ERR_AUTH },
    { "AccessDeniedException", DDB_ERR_AUTH },
    { "ExpiredTokenException", DDB_ERR_AUTH },
    { "IncompleteSignature", DDB_ERR_AUTH },
    { "IncompleteSignatureException", DDB_ERR_AUTH },
    { "InvalidClientTokenId", DDB_ERR_AUTH },
    { "InternalServerError", DDB_ERR_SERVER },
    { "InternalFailure", DDB_ERR_SERVER },
    { "ServiceUnavailable", DDB_ERR_SERVER },
    { "ServiceUnavailableException", DDB_ERR_SERVER },
    { NULL, DDB_OK }
};

static ddb_code type_code(const char *type, long status)
{
    for (size_t i = 0; TYPES[i].type; i++)
        if (strcmp(type, TYPES[i].type) == 0)
            return TYPES[i].code;
    return status >= 500 ? DDB_ERR_SERVER : DDB_ERR_VALIDATION;
}

static ddb_code map_typed(ddb_req *r, json_t *ans, const char *type,
                          long status, ddb_error *err)
{
    char sm[DDB_SERVER_MSG_MAX + 1], detail[DDB_SERVER_MSG_MAX + 128];
    const char *op = r->op, *ep = r->endpoint;
    ddb_code code = type_code(type, status);

    copy_str(err->type, sizeof(err->type), type);
    server_msg(ans, sm, sizeof(sm));
    snprintf(detail, sizeof(detail), "%s%s%s", type, sm[0] ? ": " : "", sm);
    switch (code) {
    case DDB_ERR_CONDITION: {
        json_t *item = json_object_get(ans, "Item");
        if (json_is_object(item))
            err->item = json_incref(item);
        return err_set(err, code, "%s: the condition was not met (%s)", op, detail);
    }
    case DDB_ERR_THROTTLED:
        return err_set(err, code, "%s: throttled by DynamoDB at %s (%s); "
                       "retry later or raise the table's capacity", op, ep, detail);
    case DDB_ERR_NOT_FOUND:
        return err_set(err, code, "%s: not found (%s); check the table name "
                       "and the region", op, detail);
    case DDB_ERR_IN_USE:
        return err_set(err, code, "%s: resource in use (%s); the table exists "
                       "already or is being created or deleted", op, detail);
    case DDB_ERR_AUTH:
        return err_set(err, code, "%s: DynamoDB at %s refused the credentials "
                       "(%s); check the access key, secret key, session token, "
                       "region and the IAM policy", op, ep, detail);
    case DDB_ERR_SERVER:
        err->ambiguous = true;
        return err_set(err, code, "%s: server error from DynamoDB at %s "
                       "(HTTP %ld, %s); retry later", op, ep, status, detail);
    default:
        return err_set(err, DDB_ERR_VALIDATION, "%s: request rejected by "
                       "DynamoDB (%s); check the table name, its key schema "
                       "and the request", op, detail);
    }
}

static ddb_code map_answer(ddb_req *r, long status, json_t **resp,
                           ddb_error *err)
{
    json_t *ans = NULL;

    err->http_status = status;
    if (r->ans.len > 0)
        ans = json_loadb(r->ans.data, r->ans.len,
                         JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    /* Operations without output (TagResource): DynamoDB answers nothing,
     * dynalite answers "". Both mean success. */
    if (status == 200 && (r->ans.len == 0 || json_is_null(ans) ||
                          (json_is_string(ans) && json_string_length(ans) == 0))) {
        json_decref(ans);
        ans = json_object();
    }
    if (status == 200 && json_is_object(ans)) {
        if (resp)
            *resp = ans;
        else
            json_decref(ans);
        return DDB_OK;
    }
    json_t *t = json_object_get(ans, "__type");
    if (json_is_object(ans) && json_is_string(t) && status != 200) {
        const char *type = json_string_value(t), *hash = strrchr(type, '#');
        ddb_code code = map_typed(r, ans, hash ? hash + 1 : type, status, err);
        json_decref(ans);
        return code;
    }
    json_decref(ans);
    if (status >= 500) {
        err->ambiguous = true;
        return err_set(err, DDB_ERR_SERVER, "%s: server error from DynamoDB at "
                       "%s (HTTP %ld with no DynamoDB error in the answer); "
                       "retry later", r->op, r->endpoint, status);
    }
    /* An answer that may have followed an applied write yet says nothing. */
    err->ambiguous = status >= 200 && status < 300;
    return err_set(err, DDB_ERR_PROTOCOL, "%s: answer from %s is not DynamoDB "
                   "JSON (HTTP %ld): check endpoint= (or AWS_ENDPOINT_URL) "
                   "names a DynamoDB service", r->op, r->endpoint, status);
}

static const char *curl_detail(ddb_req *r, CURLcode rc)
{
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
}

static ddb_code map_curl(ddb_req *r, CURLcode rc, ddb_error *err)
{
    const char *op = r->op, *ep = r->endpoint;
    long sent = 0, oserr = 0;

    curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent);
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        copy_str(err->type, sizeof(err->type), "connect");
        return err_set(err, DDB_ERR_NETWORK, "%s: cannot connect to DynamoDB "
                       "at %s: %s; check endpoint= (or AWS_ENDPOINT_URL) and "
                       "that the server is running", op, ep,
                       oserr ? strerror((int)oserr) : curl_detail(r, rc));
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        copy_str(err->type, sizeof(err->type), "resolve");
        return err_set(err, DDB_ERR_NETWORK, "%s: cannot resolve the host of "
                       "%s (%s); check endpoint= and region= and the DNS "
                       "setup", op, ep, curl_detail(r, rc));
    case CURLE_OPERATION_TIMEDOUT:
        copy_str(err->type, sizeof(err->type), "timeout");
        if (sent <= 0)
            return err_set(err, DDB_ERR_NETWORK, "%s: timed out connecting to "
                           "DynamoDB at %s (%ld ms); check endpoint= and the "
                           "network", op, ep, r->timeout_ms);
        err->ambiguous = true;
        return err_set(err, DDB_ERR_NETWORK, "%s: no complete answer from "
                       "DynamoDB at %s within %ld ms (the request may have "
                       "been applied); check the network and the server's "
                       "health", op, ep, r->timeout_ms);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
        copy_str(err->type, sizeof(err->type), DDB_TYPE_TLS_VERIFY);
        return err_set(err, DDB_ERR_NETWORK, "%s: the TLS certificate of %s "
                       "is not trusted (%s); check endpoint= and the system's "
                       "CA certificates", op, ep, curl_detail(r, rc));
    case CURLE_SSL_CONNECT_ERROR:
        copy_str(err->type, sizeof(err->type), "tls");
        return err_set(err, DDB_ERR_NETWORK, "%s: TLS handshake with %s "
                       "failed (%s); check endpoint= (http:// or https://) "
                       "and the network", op, ep, curl_detail(r, rc));
    default:
        copy_str(err->type, sizeof(err->type), "connection");
        err->ambiguous = sent > 0;
        return err_set(err, DDB_ERR_NETWORK, "%s: connection to DynamoDB at "
                       "%s lost before a complete answer (%s)%s; check the "
                       "network and endpoint=", op, ep, curl_detail(r, rc),
                       sent > 0 ? ", the request may have been applied" : "");
    }
}

/* What an exchange that ended with rc means. */
static ddb_code req_outcome(ddb_req *r, CURLcode rc, json_t **resp,
                            ddb_error *err)
{
    long status = 0;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    err->http_status = status;
    if (rc == CURLE_WRITE_ERROR && r->ans.too_big) {
        err->ambiguous = true;
        return err_set(err, DDB_ERR_PROTOCOL, "%s: answer from %s larger than "
                       "16 MiB; check endpoint= names a DynamoDB service",
                       r->op, r->endpoint);
    }
    if (r->ans.nomem || rc == CURLE_OUT_OF_MEMORY) {
        err->ambiguous = true;
        return err_set(err, DDB_ERR_NOMEM, "%s: out of memory reading the "
                       "answer", r->op);
    }
    if (rc == CURLE_OK && !r->ans.head_done)
        rc = CURLE_PARTIAL_FILE;
    if (rc != CURLE_OK)
        return map_curl(r, rc, err);
    return map_answer(r, status, resp, err);
}

/* ---- client ------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

ddb_client *ddb_client_new(aws_config *cfg, const ddb_client_options *opts)
{
    if (!cfg)
        return NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return NULL;
    ddb_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cfg = cfg;
    c->opts.connect_timeout_ms = 3000;
    c->opts.request_timeout_ms = 5000;
    c->opts.default_budget_ms = 15000;
    if (opts) {
        if (opts->connect_timeout_ms > 0)
            c->opts.connect_timeout_ms = opts->connect_timeout_ms;
        if (opts->request_timeout_ms > 0)
            c->opts.request_timeout_ms = opts->request_timeout_ms;
        if (opts->default_budget_ms > 0)
            c->opts.default_budget_ms = opts->default_budget_ms;
    }
    c->easy = curl_easy_init();
    if (!c->easy) {
        free(c);
        return NULL;
    }
    return c;
}

void ddb_client_free(ddb_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->easy);
    free(c);
}

aws_config *ddb_client_config(ddb_client *c)
{
    return c ? c->cfg : NULL;
}

/* Drop what the reused handle points to and the secret copy it holds. */
static void client_detach(ddb_client *c)
{
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(c->easy, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(c->easy, CURLOPT_PASSWORD, NULL);
}

/* One exchange on the client's handle. body is borrowed. */
static ddb_code client_attempt(ddb_client *c, const char *op, char *body,
                               size_t body_len, long timeout_ms,
                               json_t **resp, ddb_error *err)
{
    ddb_req r;
    ddb_code code;

    memset(&r, 0, sizeof(r));
    r.easy = c->easy;
    r.body = body;
    r.body_len = body_len;
    if (req_init(&r, c, op, err) != DDB_OK)
        return err->code;
    code = req_setup(&r, c, timeout_ms, err);
    if (code == DDB_OK) {
        CURLcode rc = curl_easy_perform(c->easy);
        code = req_outcome(&r, rc, resp, err);
    }
    client_detach(c);
    headers_free(r.headers);
    buf_reset(&r.ans);
    return code;
}

static void err_gave_up(ddb_error *err, int attempts)
{
    char suffix[96];

    snprintf(suffix, sizeof(suffix), " (gave up after %d attempt%s: the "
             "deadline passed)", attempts, attempts == 1 ? "" : "s");
    err_append(err, suffix);
}

/* Whether a failed attempt may be sent again. */
static bool may_retry(const char *op, const ddb_error *err)
{
    if (!ddb_retryable(err))
        return false;
    if (op_is_read(op))
        return true;
    if (err->code == DDB_ERR_THROTTLED)
        return true;
    return err->code == DDB_ERR_NETWORK && !err->ambiguous;
}

/* A timeout of an attempt we cut short to fit the deadline: for a read it
 * says less than the error before it. */
static bool clipped_timeout(const ddb_error *err, long timeout, long full)
{
    return timeout < full && err->code == DDB_ERR_NETWORK &&
           strcmp(err->type, "timeout") == 0;
}

ddb_code ddb_call(ddb_client *c, const char *op, json_t *body, json_t **resp,
                  int64_t deadline_ms, ddb_error *err)
{
    ddb_error prev;
    int attempt = 0;

    err_reset(err);
    err_reset(&prev);
    if (resp)
        *resp = NULL;
    if (!c || !op || !body)
        return err_set(err, DDB_ERR_VALIDATION, "%s: no client or no request "
                       "body (a bug in the caller)", op ? op : "DynamoDB call");
    if (deadline_ms == 0)
        deadline_ms = lk_now_ms() + c->opts.default_budget_ms;
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return err_set(err, DDB_ERR_NOMEM, "%s: out of memory serializing the "
                       "request", op);
    size_t len = strlen(text);
    for (;;) {
        int64_t left = deadline_ms - lk_now_ms();
        if (left <= 0 || (attempt > 0 && left < DDB_MIN_RETRY_MS)) {
            if (attempt == 0)
                err_set(err, DDB_ERR_TIMEOUT, "%s: the deadline passed before "
                        "the request could be sent; allow more time", op);
            else
                err_gave_up(err, attempt);
            break;
        }
        long timeout = c->opts.request_timeout_ms;
        if (left < timeout)
            timeout = (long)left;
        if (attempt > 0)
            prev = *err;    /* a retryable error: never holds an item */
        err_reset(err);
        client_attempt(c, op, text, len, timeout, resp, err);
        attempt++;
        if (err->code == DDB_OK || !may_retry(op, err))
            break;
        if (attempt > 1 && op_is_read(op) && deadline_ms - lk_now_ms() <= 0 &&
            clipped_timeout(err, timeout, c->opts.request_timeout_ms))
            *err = prev;
        int64_t wait = ddb_backoff_ms(attempt - 1);
        if (deadline_ms - (lk_now_ms() + wait) < DDB_MIN_RETRY_MS) {
            err_gave_up(err, attempt);
            break;
        }
        lk_sleep_until_ms(lk_now_ms() + wait);
    }
    free(text);
    return err->code;
}

/* ---- asynchronous requests --------------------------------------------
 * A ddb_req owns its easy handle, header list, body and answer buffer; its
 * CURLOPT_PRIVATE is the ddb_req itself (the caller's pointer is kept apart
 * with ddb_req_set_private). Its timeout is the client's request timeout;
 * a caller may lower CURLOPT_TIMEOUT_MS on ddb_req_easy() before adding it. */

ddb_req *ddb_req_new(ddb_client *c, const char *op, json_t *body,
                     ddb_error *err)
{
    err_reset(err);
    if (!c || !body) {
        err_set(err, DDB_ERR_VALIDATION, "%s: no client or no request body "
                "(a bug in the caller)", op ? op : "DynamoDB request");
        return NULL;
    }
    ddb_req *r = calloc(1, sizeof(*r));
    if (!r) {
        err_set(err, DDB_ERR_NOMEM, "%s: out of memory", op ? op : "request");
        return NULL;
    }
    r->own_easy = true;
    r->own_body = true;
    if (req_init(r, c, op, err) != DDB_OK)
        goto fail;
    r->body = json_dumps(body, JSON_COMPACT);
    r->easy = curl_easy_init();
    if (!r->body || !r->easy) {
        err_set(err, DDB_ERR_NOMEM, "%s: out of memory building the request", op);
        goto fail;
    }
    r->body_len = strlen(r->body);
    if (req_setup(r, c, c->opts.request_timeout_ms, err) != DDB_OK)
        goto fail;
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    return r;
fail:
    ddb_req_free(r);
    return NULL;
}

CURL *ddb_req_easy(ddb_req *r)
{
    return r ? r->easy : NULL;
}

void ddb_req_set_private(ddb_req *r, void *p)
{
    if (r)
        r->priv = p;
}

void *ddb_req_private(ddb_req *r)
{
    return r ? r->priv : NULL;
}

ddb_code ddb_req_result(ddb_req *r, CURLcode rc, json_t **resp,
                        ddb_error *err)
{
    err_reset(err);
    if (resp)
        *resp = NULL;
    if (!r)
        return err_set(err, DDB_ERR_VALIDATION, "no request (a bug in the caller)");
    return req_outcome(r, rc, resp, err);
}

void ddb_req_free(ddb_req *r)
{
    if (!r)
        return;
    if (r->own_easy && r->easy)
        curl_easy_cleanup(r->easy);
    headers_free(r->headers);
    if (r->own_body)
        free(r->body);
    buf_reset(&r->ans);
    free(r);
}

/* ---- attribute values -------------------------------------------------- */

json_t *ddb_s(const char *s)
{
    return s ? json_pack("{s:s}", "S", s) : NULL;
}

json_t *ddb_n(long long n)
{
    char num[32];

    snprintf(num, sizeof(num), "%lld", n);
    return json_pack("{s:s}", "N", num);
}

const char *ddb_item_s(const json_t *item, const char *attr)
{
    json_t *v = json_object_get(json_object_get(item, attr), "S");

    return json_is_string(v) ? json_string_value(v) : NULL;
}

bool ddb_item_n(const json_t *item, const char *attr, long long *out)
{
    json_t *v = json_object_get(json_object_get(item, attr), "N");
    const char *s;
    char *end;
    long long n;

    if (!json_is_string(v))
        return false;
    s = json_string_value(v);
    if (!*s || !(*s == '-' || (*s >= '0' && *s <= '9')))
        return false;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || (*s == '-' && end == s + 1))
        return false;
    if (out)
        *out = n;
    return true;
}

/* ---- request bodies ---------------------------------------------------- */

/* Add a borrowed value under key (new reference taken); false on failure. */
static bool put_ref(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set(obj, key, v) == 0;
}

static bool put_new(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0;
}

static json_t *body_table(const char *table)
{
    return table ? json_pack("{s:s}", "TableName", table) : NULL;
}

static bool body_cond(json_t *b, const ddb_cond *cond)
{
    if (!cond)
        return true;
    if (cond->expr && !put_new(b, "ConditionExpression", json_string(cond->expr)))
        return false;
    if (cond->names && !put_ref(b, "ExpressionAttributeNames", cond->names))
        return false;
    if (cond->values && !put_ref(b, "ExpressionAttributeValues", cond->values))
        return false;
    if (cond->expr && cond->return_old_on_fail &&
        !put_new(b, "ReturnValuesOnConditionCheckFailure", json_string("ALL_OLD")))
        return false;
    return true;
}

json_t *ddb_body_get_item(const char *table, json_t *key, bool consistent)
{
    json_t *b = body_table(table);

    if (b && put_ref(b, "Key", key) &&
        put_new(b, "ConsistentRead", json_boolean(consistent)))
        return b;
    json_decref(b);
    return NULL;
}

json_t *ddb_body_put_item(const char *table, json_t *item, const ddb_cond *cond)
{
    json_t *b = body_table(table);

    if (b && put_ref(b, "Item", item) && body_cond(b, cond))
        return b;
    json_decref(b);
    return NULL;
}

json_t *ddb_body_update_item(const char *table, json_t *key,
                             const char *update_expr, const ddb_cond *cond)
{
    json_t *b = body_table(table);

    if (b && update_expr && put_ref(b, "Key", key) &&
        put_new(b, "UpdateExpression", json_string(update_expr)) &&
        body_cond(b, cond))
        return b;
    json_decref(b);
    return NULL;
}

json_t *ddb_body_delete_item(const char *table, json_t *key, const ddb_cond *cond)
{
    json_t *b = body_table(table);

    if (b && put_ref(b, "Key", key) && body_cond(b, cond))
        return b;
    json_decref(b);
    return NULL;
}

/* ---- operations -------------------------------------------------------- */

static ddb_code nomem(ddb_error *err, const char *op)
{
    err_reset(err);
    return err_set(err, DDB_ERR_NOMEM, "%s: out of memory building the "
                   "request (or a missing argument)", op);
}

/* Call op with a new-reference body (consumed). */
static ddb_code call_new(ddb_client *c, const char *op, json_t *body,
                         json_t **resp, int64_t deadline_ms, ddb_error *err)
{
    if (!body)
        return nomem(err, op);
    ddb_code code = ddb_call(c, op, body, resp, deadline_ms, err);
    json_decref(body);
    return code;
}

static ddb_code bad_answer(ddb_error *err, const char *op, const char *what)
{
    err_reset(err);
    err->http_status = 200;
    return err_set(err, DDB_ERR_PROTOCOL, "%s: the answer lacks %s; check "
                   "endpoint= names a DynamoDB service", op, what);
}

ddb_code ddb_create_table(ddb_client *c, const char *table, const char *hash_key,
                          long rcu, long wcu, ddb_error *err)
{
    json_t *b = NULL;

    if (table && hash_key)
        b = json_pack("{s:s, s:[{s:s, s:s}], s:[{s:s, s:s}]}",
                      "TableName", table,
                      "AttributeDefinitions", "AttributeName", hash_key,
                      "AttributeType", "S",
                      "KeySchema", "AttributeName", hash_key, "KeyType", "HASH");
    if (b && rcu == 0 && wcu == 0) {
        if (!put_new(b, "BillingMode", json_string("PAY_PER_REQUEST")))
            goto fail;
    } else if (b) {
        if (!put_new(b, "BillingMode", json_string("PROVISIONED")) ||
            !put_new(b, "ProvisionedThroughput",
                     json_pack("{s:I, s:I}", "ReadCapacityUnits", (json_int_t)rcu,
                               "WriteCapacityUnits", (json_int_t)wcu)))
            goto fail;
    }
    return call_new(c, "CreateTable", b, NULL, 0, err);
fail:
    json_decref(b);
    return nomem(err, "CreateTable");
}

static void table_info(const json_t *t, ddb_table_info *out)
{
    json_t *ks = json_object_get(t, "KeySchema"), *v;
    size_t i;
    const char *s;

    memset(out, 0, sizeof(*out));
    if ((s = json_string_value(json_object_get(t, "TableStatus"))))
        copy_str(out->status, sizeof(out->status), s);
    if ((s = json_string_value(json_object_get(t, "TableArn"))))
        copy_str(out->arn, sizeof(out->arn), s);
    json_array_foreach(ks, i, v) {
        const char *name = json_string_value(json_object_get(v, "AttributeName"));
        const char *kt = json_string_value(json_object_get(v, "KeyType"));
        if (!name || !kt)
            continue;
        if (strcmp(kt, "HASH") == 0)
            copy_str(out->hash_key, sizeof(out->hash_key), name);
        else if (strcmp(kt, "RANGE") == 0)
            out->has_range_key = true;
    }
    json_array_foreach(json_object_get(t, "AttributeDefinitions"), i, v) {
        const char *name = json_string_value(json_object_get(v, "AttributeName"));
        const char *at = json_string_value(json_object_get(v, "AttributeType"));
        if (name && at && strcmp(name, out->hash_key) == 0)
            copy_str(out->hash_type, sizeof(out->hash_type), at);
    }
}

static ddb_code describe(ddb_client *c, const char *table, int64_t deadline_ms,
                         ddb_table_info *out, ddb_error *err)
{
    json_t *resp = NULL;
    ddb_code code = call_new(c, "DescribeTable", body_table(table), &resp,
                             deadline_ms, err);

    if (code != DDB_OK)
        return code;
    json_t *t = json_object_get(resp, "Table");
    if (!json_is_object(t)) {
        json_decref(resp);
        return bad_answer(err, "DescribeTable", "Table");
    }
    ddb_table_info info;
    table_info(t, &info);
    json_decref(resp);
    if (!info.status[0])
        return bad_answer(err, "DescribeTable", "Table.TableStatus");
    if (out)
        *out = info;
    return DDB_OK;
}

ddb_code ddb_describe_table(ddb_client *c, const char *table,
                            ddb_table_info *out, ddb_error *err)
{
    return describe(c, table, 0, out, err);
}

static int64_t wait_deadline(int64_t deadline_ms)
{
    return deadline_ms ? deadline_ms : lk_now_ms() + DDB_WAIT_DEFAULT;
}

/* Sleep the next poll interval (100 ms growing to 500 ms); false when the
 * deadline leaves no time for another poll. */
static bool poll_pause(int *interval, int64_t deadline)
{
    int64_t now = lk_now_ms();

    if (now + *interval >= deadline)
        return false;
    lk_sleep_until_ms(now + *interval);
    *interval = *interval * 2 > 500 ? 500 : *interval * 2;
    return true;
}

ddb_code ddb_wait_table_active(ddb_client *c, const char *table,
                               int64_t deadline_ms, ddb_table_info *out,
                               ddb_error *err)
{
    int64_t deadline = wait_deadline(deadline_ms), start = lk_now_ms();
    int interval = 100;
    ddb_table_info info;

    for (;;) {
        ddb_code code = describe(c, table, deadline, &info, err);
        if (code != DDB_OK)
            return code;
        if (strcmp(info.status, "ACTIVE") == 0) {
            if (out)
                *out = info;
            return DDB_OK;
        }
        if (!poll_pause(&interval, deadline))
            break;
    }
    err_reset(err);
    return err_set(err, DDB_ERR_TIMEOUT, "DescribeTable: table %s is still %s "
                   "after %lld ms; wait longer or check the table in the AWS "
                   "console", table, info.status,
                   (long long)(lk_now_ms() - start));
}

ddb_code ddb_delete_table(ddb_client *c, const char *table, ddb_error *err)
{
    return call_new(c, "DeleteTable", body_table(table), NULL, 0, err);
}

ddb_code ddb_wait_table_gone(ddb_client *c, const char *table,
                             int64_t deadline_ms, ddb_error *err)
{
    int64_t deadline = wait_deadline(deadline_ms), start = lk_now_ms();
    int interval = 100;
    ddb_table_info info;

    for (;;) {
        ddb_code code = describe(c, table, deadline, &info, err);
        if (code == DDB_ERR_NOT_FOUND) {
            err_reset(err);
            return DDB_OK;
        }
        if (code != DDB_OK)
            return code;
        if (!poll_pause(&interval, deadline))
            break;
    }
    err_reset(err);
    return err_set(err, DDB_ERR_TIMEOUT, "DescribeTable: table %s is still %s "
                   "after %lld ms; wait longer or check the table in the AWS "
                   "console", table, info.status,
                   (long long)(lk_now_ms() - start));
}

static ddb_code page_loop(ddb_error *err, const char *op)
{
    err_reset(err);
    err->http_status = 200;
    return err_set(err, DDB_ERR_PROTOCOL, "%s: the server returned the same "
                   "page token twice; check endpoint= names a working "
                   "DynamoDB service", op);
}

/* One paginated operation: send base (with the page token under start_field
 * from the second page on), hand each element of the answer's list_field to
 * fn, follow next_field until it is absent. fn returns non-zero to stop. A
 * server that hands out the same token twice would loop forever: refused. */
typedef int (*page_fn)(json_t *element, void *arg);

static ddb_code paginate(ddb_client *c, const char *op, json_t *base,
                         const char *list_field, const char *next_field,
                         const char *start_field, page_fn fn, void *arg,
                         ddb_error *err)
{
    json_t *token = NULL;
    ddb_code code = DDB_OK;

    if (!base)
        return nomem(err, op);
    for (;;) {
        json_t *b = json_deep_copy(base), *resp = NULL, *v;
        size_t i;
        if (b && token && json_object_set(b, start_field, token) != 0) {
            json_decref(b);
            b = NULL;
        }
        code = call_new(c, op, b, &resp, 0, err);
        if (code != DDB_OK)
            break;
        json_array_foreach(json_object_get(resp, list_field), i, v) {
            if (fn(v, arg) != 0) {
                json_decref(resp);
                goto out;
            }
        }
        json_t *next = json_object_get(resp, next_field);
        bool more = json_is_string(next) ||
                    (json_is_object(next) && json_object_size(next) > 0);
        bool same = more && token && json_equal(next, token);
        json_decref(token);
        token = more && !same ? json_incref(next) : NULL;
        json_decref(resp);
        if (same)
            code = page_loop(err, op);
        if (!token)
            break;
    }
out:
    json_decref(token);
    json_decref(base);
    return code;
}

typedef struct page_cb {
    union {
        ddb_name_cb name;
        ddb_tag_cb tag;
        ddb_item_cb item;
    } cb;
    void *arg;
} page_cb;

static int table_name_page(json_t *v, void *arg)
{
    page_cb *p = arg;
    return json_is_string(v) && p->cb.name &&
           p->cb.name(json_string_value(v), p->arg) != 0;
}

ddb_code ddb_list_tables(ddb_client *c, ddb_name_cb cb, void *arg,
                         ddb_error *err)
{
    page_cb p = {.cb.name = cb, .arg = arg};
    return paginate(c, "ListTables", json_object(), "TableNames",
                    "LastEvaluatedTableName", "ExclusiveStartTableName",
                    table_name_page, &p, err);
}

ddb_code ddb_tag_resource(ddb_client *c, const char *arn, const char *key,
                          const char *value, ddb_error *err)
{
    json_t *b = NULL;

    if (arn && key && value)
        b = json_pack("{s:s, s:[{s:s, s:s}]}", "ResourceArn", arn,
                      "Tags", "Key", key, "Value", value);
    return call_new(c, "TagResource", b, NULL, 0, err);
}

static int tag_page(json_t *v, void *arg)
{
    page_cb *p = arg;
    const char *k = json_string_value(json_object_get(v, "Key"));
    const char *val = json_string_value(json_object_get(v, "Value"));
    return k && val && p->cb.tag && p->cb.tag(k, val, p->arg) != 0;
}

ddb_code ddb_list_tags(ddb_client *c, const char *arn, ddb_tag_cb cb,
                       void *arg, ddb_error *err)
{
    page_cb p = {.cb.tag = cb, .arg = arg};
    return paginate(c, "ListTagsOfResource",
                    arn ? json_pack("{s:s}", "ResourceArn", arn) : NULL,
                    "Tags", "NextToken", "NextToken", tag_page, &p, err);
}

static int item_page(json_t *v, void *arg)
{
    page_cb *p = arg;
    return json_is_object(v) && p->cb.item && p->cb.item(v, p->arg) != 0;
}

ddb_code ddb_scan(ddb_client *c, const char *table, bool consistent,
                  ddb_item_cb cb, void *arg, ddb_error *err)
{
    page_cb p = {.cb.item = cb, .arg = arg};
    json_t *b = body_table(table);
    if (b && consistent && !put_new(b, "ConsistentRead", json_true())) {
        json_decref(b);
        b = NULL;
    }
    return paginate(c, "Scan", b, "Items", "LastEvaluatedKey",
                    "ExclusiveStartKey", item_page, &p, err);
}

ddb_code ddb_get_item(ddb_client *c, const char *table, json_t *key,
                      json_t **item, int64_t deadline_ms, ddb_error *err)
{
    json_t *resp = NULL;
    ddb_code code;

    if (item)
        *item = NULL;
    code = call_new(c, "GetItem", ddb_body_get_item(table, key, true), &resp,
                    deadline_ms, err);
    if (code != DDB_OK)
        return code;
    json_t *it = json_object_get(resp, "Item");
    if (item && json_is_object(it))
        *item = json_incref(it);
    json_decref(resp);
    return DDB_OK;
}

ddb_code ddb_put_item(ddb_client *c, const char *table, json_t *item,
                      const ddb_cond *cond, int64_t deadline_ms, ddb_error *err)
{
    return call_new(c, "PutItem", ddb_body_put_item(table, item, cond), NULL,
                    deadline_ms, err);
}

ddb_code ddb_update_item(ddb_client *c, const char *table, json_t *key,
                         const char *update_expr, const ddb_cond *cond,
                         int64_t deadline_ms, ddb_error *err)
{
    return call_new(c, "UpdateItem",
                    ddb_body_update_item(table, key, update_expr, cond), NULL,
                    deadline_ms, err);
}

ddb_code ddb_delete_item(ddb_client *c, const char *table, json_t *key,
                         const ddb_cond *cond, int64_t deadline_ms,
                         ddb_error *err)
{
    return call_new(c, "DeleteItem", ddb_body_delete_item(table, key, cond),
                    NULL, deadline_ms, err);
}
