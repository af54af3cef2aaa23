/* ddb/ddb.h — the DynamoDB client: the JSON 1.0 protocol
 * (X-Amz-Target: DynamoDB_20120810.<Op>) over libcurl, signed with SigV4 by
 * libcurl itself, with errors mapped to one error type and retries with
 * jittered exponential backoff inside a caller's deadline.
 *
 * Items and keys are jansson objects in DynamoDB's attribute-value form:
 *   {"lockKey": {"S": "deploy"}, "leaseDuration": {"N": "20"}}
 *
 * Two ways to call:
 *  - synchronous: a ddb_client (one per thread) and the ddb_* operations;
 *  - asynchronous: ddb_req_new() gives a signed CURL easy handle to add to
 *    the caller's multi handle; ddb_req_result() parses the answer. The body
 *    builders (ddb_body_*) are shared by both.
 */
#ifndef DDB_DDB_H
#define DDB_DDB_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "aws/config.h"

typedef enum {
    DDB_OK = 0,
    DDB_ERR_CONDITION,  /* ConditionalCheckFailedException: an answer, never retried */
    DDB_ERR_THROTTLED,  /* ProvisionedThroughputExceeded, Throttling, RequestLimitExceeded */
    DDB_ERR_NOT_FOUND,  /* ResourceNotFoundException */
    DDB_ERR_IN_USE,     /* ResourceInUseException (e.g. the table exists) */
    DDB_ERR_VALIDATION, /* ValidationException, SerializationException, ... */
    DDB_ERR_AUTH,       /* bad or expired credentials, access denied */
    DDB_ERR_NETWORK,    /* no answer: refused, reset, timed out, TLS */
    DDB_ERR_SERVER,     /* HTTP 5xx, InternalServerError, ServiceUnavailable */
    DDB_ERR_PROTOCOL,   /* an answer that is not DynamoDB JSON, or too large */
    DDB_ERR_TIMEOUT,    /* the caller's deadline passed before an answer */
    DDB_ERR_CONFIG,     /* credentials could not be had (see aws_error) */
    DDB_ERR_NOMEM
} ddb_code;

/* The one error type of this layer. */
typedef struct ddb_error {
    ddb_code code;
    long http_status;   /* 0 when no answer arrived */
    char type[96];      /* short __type, e.g. "ConditionalCheckFailedException" */
    char msg[512];      /* one line: the cause and the fix; never a secret */
    bool ambiguous;     /* a write may have been applied though no answer came */
    json_t *item;       /* on DDB_ERR_CONDITION with return_old_on_fail: the
                         * stored item, or NULL if none; owned, freed by
                         * ddb_error_clear */
} ddb_error;

void ddb_error_clear(ddb_error *err);
const char *ddb_code_name(ddb_code code);

/* Retry policy shared by the synchronous calls and the lock engine. */
bool ddb_retryable(const ddb_error *err);        /* throttled, 5xx, network */
int64_t ddb_backoff_ms(int attempt);             /* full jitter, attempt >= 0 */

/* ---- client (synchronous, one per thread; reuses its connection) ---- */

typedef struct ddb_client ddb_client;

typedef struct ddb_client_options {
    long connect_timeout_ms;    /* default 3000 */
    long request_timeout_ms;    /* one HTTP exchange; default 5000 */
    int64_t default_budget_ms;  /* a call's deadline when none given; default 15000 */
} ddb_client_options;

/* cfg is borrowed and must outlive the client; opts may be NULL. */
ddb_client *ddb_client_new(aws_config *cfg, const ddb_client_options *opts);
void ddb_client_free(ddb_client *c);
aws_config *ddb_client_config(ddb_client *c);

/* One operation with retries until deadline_ms (monotonic, lk_now_ms();
 * 0 = the client's default budget). Reads are retried on every retryable
 * error; a write is retried on throttling and on errors that prove it was
 * not applied, and otherwise returns with err->ambiguous set. On DDB_OK
 * *resp (if resp) is the parsed answer, owned by the caller. */
ddb_code ddb_call(ddb_client *c, const char *op, json_t *body, json_t **resp,
                  int64_t deadline_ms, ddb_error *err);

/* ---- asynchronous building blocks ---- */

typedef struct ddb_req ddb_req;

/* A signed request for op with body (borrowed; serialized now). Uses the
 * client's configuration and current credentials, not its connection. */
ddb_req *ddb_req_new(ddb_client *c, const char *op, json_t *body,
                     ddb_error *err);
CURL *ddb_req_easy(ddb_req *r);
void ddb_req_set_private(ddb_req *r, void *p);
void *ddb_req_private(ddb_req *r);
/* After the multi handle finished the easy handle with rc: the parsed
 * answer (*resp owned by caller) or the mapped error. */
ddb_code ddb_req_result(ddb_req *r, CURLcode rc, json_t **resp,
                        ddb_error *err);
void ddb_req_free(ddb_req *r);

/* ---- attribute values ---- */

json_t *ddb_s(const char *s);                 /* {"S": s} */
json_t *ddb_n(long long n);                   /* {"N": "n"} */
/* The string of attribute attr of item, or NULL if absent or not S. */
const char *ddb_item_s(const json_t *item, const char *attr);
/* The integer of attribute attr (type N); false if absent or not integral. */
bool ddb_item_n(const json_t *item, const char *attr, long long *out);

/* ---- request bodies (new references) ---- */

typedef struct ddb_cond {
    const char *expr;       /* ConditionExpression, or NULL for none */
    json_t *names;          /* ExpressionAttributeNames or NULL (borrowed) */
    json_t *values;         /* ExpressionAttributeValues or NULL (borrowed) */
    bool return_old_on_fail;/* ReturnValuesOnConditionCheckFailure=ALL_OLD */
} ddb_cond;

json_t *ddb_body_get_item(const char *table, json_t *key, bool consistent);
json_t *ddb_body_put_item(const char *table, json_t *item, const ddb_cond *cond);
/* update_expr and cond share cond->values (ExpressionAttributeValues). */
json_t *ddb_body_update_item(const char *table, json_t *key,
                             const char *update_expr, const ddb_cond *cond);
json_t *ddb_body_delete_item(const char *table, json_t *key, const ddb_cond *cond);

/* ---- operations ---- */

typedef struct ddb_table_info {
    char status[24];         /* CREATING, ACTIVE, DELETING, UPDATING, ... */
    char arn[512];
    char hash_key[256];      /* name of the HASH key attribute */
    char hash_type[4];       /* "S", "N" or "B" */
    bool has_range_key;
} ddb_table_info;

/* CreateTable with a single HASH key of type S. rcu = wcu = 0: on-demand
 * (PAY_PER_REQUEST); otherwise provisioned with those units. */
ddb_code ddb_create_table(ddb_client *c, const char *table, const char *hash_key,
                          long rcu, long wcu, ddb_error *err);
ddb_code ddb_describe_table(ddb_client *c, const char *table,
                            ddb_table_info *out, ddb_error *err);
/* Poll DescribeTable until ACTIVE (deadline_ms monotonic; 0 = 60 s). */
ddb_code ddb_wait_table_active(ddb_client *c, const char *table,
                               int64_t deadline_ms, ddb_table_info *out,
                               ddb_error *err);
ddb_code ddb_delete_table(ddb_client *c, const char *table, ddb_error *err);
/* Poll until DescribeTable says ResourceNotFound (0 = 60 s). */
ddb_code ddb_wait_table_gone(ddb_client *c, const char *table,
                             int64_t deadline_ms, ddb_error *err);

/* Callbacks return 0 to go on, non-zero to stop early (the call then
 * returns DDB_OK). */
typedef int (*ddb_name_cb)(const char *name, void *arg);
typedef int (*ddb_tag_cb)(const char *key, const char *value, void *arg);
typedef int (*ddb_item_cb)(json_t *item, void *arg);

ddb_code ddb_list_tables(ddb_client *c, ddb_name_cb cb, void *arg,
                         ddb_error *err);                        /* all pages */
ddb_code ddb_tag_resource(ddb_client *c, const char *arn, const char *key,
                          const char *value, ddb_error *err);
ddb_code ddb_list_tags(ddb_client *c, const char *arn, ddb_tag_cb cb,
                       void *arg, ddb_error *err);               /* all pages */
ddb_code ddb_scan(ddb_client *c, const char *table, bool consistent,
                  ddb_item_cb cb, void *arg, ddb_error *err);    /* all pages */

/* *item: the stored item (owned by caller) or NULL when absent. */
ddb_code ddb_get_item(ddb_client *c, const char *table, json_t *key,
                      json_t **item, int64_t deadline_ms, ddb_error *err);
ddb_code ddb_put_item(ddb_client *c, const char *table, json_t *item,
                      const ddb_cond *cond, int64_t deadline_ms, ddb_error *err);
ddb_code ddb_update_item(ddb_client *c, const char *table, json_t *key,
                         const char *update_expr, const ddb_cond *cond,
                         int64_t deadline_ms, ddb_error *err);
ddb_code ddb_delete_item(ddb_client *c, const char *table, json_t *key,
                         const ddb_cond *cond, int64_t deadline_ms,
                         ddb_error *err);

#endif
