/* tests/integration/test_ddb.c — owns the DynamoDB client's integration
 * test against a real DynamoDB-compatible server named by LYNK_TEST_ENDPOINT
 * (dynalite or moto): table lifecycle, every conditional write lynk's
 * protocol uses, reads, Scan pagination and the mapping of errors.
 *
 * Tables are named "itest-<random>" and deleted at the end. Where the two
 * servers differ, the difference is asserted, not hidden:
 *  - dynalite ignores ReturnValuesOnConditionCheckFailure (no Item in the
 *    ConditionalCheckFailedException), moto and DynamoDB honour it;
 *  - moto answers HTTP 500 (a Python traceback) to a malformed
 *    ConditionExpression, so the VALIDATION mapping is checked on a
 *    malformed UpdateExpression on both, and on a malformed condition on
 *    dynalite only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>

#include "aws/config.h"
#include "ddb/ddb.h"
#include "util/clock.h"

typedef enum { SRV_OTHER, SRV_DYNALITE, SRV_MOTO } server_kind;

static char home_dir[64];
static const char *endpoint;
static server_kind kind;
static aws_config *cfg;
static ddb_client *cl;
static char table[64];   /* the shared on-demand table of the item tests */
static char made[16][64]; /* tables created and not yet deleted */

static void made_add(const char *tbl)
{
    for (int i = 0; i < 16; i++)
        if (!made[i][0]) {
            snprintf(made[i], sizeof(made[i]), "%s", tbl);
            return;
        }
}

static void made_del(const char *tbl)
{
    for (int i = 0; i < 16; i++)
        if (strcmp(made[i], tbl) == 0)
            made[i][0] = '\0';
}

/* ---- helpers ---- */

static void table_name(char *out, size_t cap, const char *what)
{
    char u[LK_UUID_LEN + 1];
    if (lk_uuid4(u) != 0)
        strcpy(u, "00000000");
    snprintf(out, cap, "itest-%s-%.8s", what, u);
}

static void expect_ok(ddb_code rc, const ddb_error *err, const char *what)
{
    if (rc != DDB_OK)
        fail_msg("%s: %s (%s, HTTP %ld): %s", what, ddb_code_name(rc),
                 err->type, err->http_status, err->msg);
}

static void expect_code(ddb_code rc, ddb_code want, const ddb_error *err,
                        const char *what)
{
    if (rc != want)
        fail_msg("%s: got %s, want %s (%s, HTTP %ld): %s", what,
                 ddb_code_name(rc), ddb_code_name(want), err->type,
                 err->http_status, err->msg);
    assert_non_null(err->msg);
    assert_true(strlen(err->msg) > 0);
    assert_null(strchr(err->msg, '\n'));
}

/* A condition failure: an answer, never ambiguous, HTTP 400. */
static void expect_condition(ddb_code rc, const ddb_error *err,
                             const char *what)
{
    expect_code(rc, DDB_ERR_CONDITION, err, what);
    assert_string_equal(err->type, "ConditionalCheckFailedException");
    assert_int_equal(err->http_status, 400);
    assert_false(err->ambiguous);
}

static json_t *key_of(const char *k)
{
    return json_pack("{s:o}", "lockKey", ddb_s(k));
}

static json_t *lock_item(const char *k, const char *version, const char *host)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o}",
                     "lockKey", ddb_s(k),
                     "versionNumber", ddb_s(version),
                     "hostIdentifier", ddb_s(host),
                     "leaseDuration", ddb_n(20),
                     "ownerName", ddb_s("itest"));
}

static json_t *get(const char *tbl, const char *k)
{
    ddb_error err = {0};
    json_t *key = key_of(k), *item = NULL;
    ddb_code rc = ddb_get_item(cl, tbl, key, &item, 0, &err);
    expect_ok(rc, &err, "GetItem");
    json_decref(key);
    return item;
}

static void put_plain(const char *k, const char *version, const char *host)
{
    ddb_error err = {0};
    json_t *item = lock_item(k, version, host);
    expect_ok(ddb_put_item(cl, table, item, NULL, 0, &err), &err, "PutItem");
    json_decref(item);
}

/* The versionNumber stored under k, asserted present. */
static void assert_version(const char *k, const char *want)
{
    json_t *item = get(table, k);
    assert_non_null(item);
    const char *v = ddb_item_s(item, "versionNumber");
    assert_non_null(v);
    assert_string_equal(v, want);
    json_decref(item);
}

static void create_and_wait(const char *tbl, long rcu, long wcu,
                            ddb_table_info *info)
{
    ddb_error err = {0};
    expect_ok(ddb_create_table(cl, tbl, "lockKey", rcu, wcu, &err), &err,
              "CreateTable");
    made_add(tbl);
    expect_ok(ddb_wait_table_active(cl, tbl, lk_now_ms() + 60000, info, &err),
              &err, "wait for ACTIVE");
}

static void delete_and_wait(const char *tbl)
{
    ddb_error err = {0};
    expect_ok(ddb_delete_table(cl, tbl, &err), &err, "DeleteTable");
    made_del(tbl);
    expect_ok(ddb_wait_table_gone(cl, tbl, lk_now_ms() + 60000, &err), &err,
              "wait for the table to go");
}

/* DescribeTable's raw "Table" object (owned by the caller). */
static json_t *describe_raw(const char *tbl)
{
    ddb_error err = {0};
    json_t *body = json_pack("{s:s}", "TableName", tbl), *resp = NULL;
    expect_ok(ddb_call(cl, "DescribeTable", body, &resp, 0, &err), &err,
              "DescribeTable (raw)");
    json_decref(body);
    json_t *t = json_incref(json_object_get(resp, "Table"));
    json_decref(resp);
    assert_non_null(t);
    return t;
}

/* ---- which server: their documented differences are asserted ---- */

static size_t sink(char *p, size_t sz, size_t n, void *arg)
{
    size_t len = strlen(arg), take = sz * n;
    if (len + take > 255)
        take = 255 - len;
    memcpy((char *)arg + len, p, take);
    ((char *)arg)[len + take] = '\0';
    return sz * n;
}

static size_t header_sink(char *p, size_t sz, size_t n, void *arg)
{
    if (sz * n > 8 && strncasecmp(p, "Server:", 7) == 0 &&
        memmem(p, sz * n, "Werkzeug", 8))
        *(bool *)arg = true;
    return sz * n;
}

static server_kind detect_server(void)
{
    const char *force = getenv("LYNK_TEST_SERVER");
    char body[256] = "";
    bool werkzeug = false;
    if (force)
        return strcmp(force, "dynalite") == 0 ? SRV_DYNALITE
             : strcmp(force, "moto") == 0 ? SRV_MOTO : SRV_OTHER;
    CURL *e = curl_easy_init();
    if (!e)
        return SRV_OTHER;
    curl_easy_setopt(e, CURLOPT_URL, endpoint);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_sink);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)&werkzeug);
    curl_easy_perform(e);
    curl_easy_cleanup(e);
    if (strncmp(body, "healthy: dynamodb", 17) == 0)
        return SRV_DYNALITE;
    return werkzeug ? SRV_MOTO : SRV_OTHER;
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    static const char *clear[] = {
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB", "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    };
    aws_error aerr = {0};
    ddb_table_info info;
    (void)state;

    endpoint = getenv("LYNK_TEST_ENDPOINT");
    if (!endpoint || !*endpoint) {
        fprintf(stderr, "LYNK_TEST_ENDPOINT is not set: start dynalite or "
                "moto_server and set LYNK_TEST_ENDPOINT=http://127.0.0.1:PORT "
                "(scripts/test does both)\n");
        return -1;
    }
    for (size_t i = 0; i < sizeof(clear) / sizeof(clear[0]); i++)
        unsetenv(clear[i]);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("NO_PROXY", "*", 1);
    strcpy(home_dir, "/tmp/lynk-itest-XXXXXX");
    if (!mkdtemp(home_dir))
        return -1;
    setenv("HOME", home_dir, 1);

    aws_options o = {.endpoint = endpoint};
    if (aws_config_load(&o, &cfg, &aerr) != AWS_OK) {
        fprintf(stderr, "aws_config_load: %s\n", aerr.msg);
        return -1;
    }
    cl = ddb_client_new(cfg, NULL);
    if (!cl)
        return -1;
    kind = detect_server();
    fprintf(stderr, "# server at %s: %s\n", endpoint,
            kind == SRV_DYNALITE ? "dynalite" : kind == SRV_MOTO ? "moto"
                                                                 : "other");
    table_name(table, sizeof(table), "items");
    create_and_wait(table, 0, 0, &info);
    return 0;
}

static int group_teardown(void **state)
{
    ddb_error err = {0};
    (void)state;
    /* The shared table, and any a failed test left behind. */
    for (int i = 0; cl && i < 16; i++)
        if (made[i][0]) {
            if (ddb_delete_table(cl, made[i], &err) != DDB_OK)
                fprintf(stderr, "# could not delete %s: %s\n", made[i],
                        err.msg);
            ddb_error_clear(&err);
        }
    ddb_client_free(cl);
    aws_config_free(cfg);
    if (home_dir[0])
        rmdir(home_dir);
    return 0;
}

/* ---- table lifecycle ---- */

typedef struct seen {
    const char *want;
    int count;
} seen;

static int name_cb(const char *name, void *arg)
{
    seen *s = arg;
    if (strcmp(name, s->want) == 0)
        s->count++;
    return 0;
}

static int tag_cb(const char *key, const char *value, void *arg)
{
    seen *s = arg;
    if (strcmp(key, "lynk") == 0 && strcmp(value, s->want) == 0)
        s->count++;
    return 0;
}

static void test_table_lifecycle(void **state)
{
    char tbl[64];
    ddb_table_info info, d;
    ddb_error err = {0};
    (void)state;
    table_name(tbl, sizeof(tbl), "life");
    memset(&info, 0, sizeof(info));
    create_and_wait(tbl, 0, 0, &info);
    assert_string_equal(info.status, "ACTIVE");
    assert_string_equal(info.hash_key, "lockKey");
    assert_string_equal(info.hash_type, "S");
    assert_false(info.has_range_key);
    assert_non_null(strstr(info.arn, tbl));

    memset(&d, 0, sizeof(d));
    expect_ok(ddb_describe_table(cl, tbl, &d, &err), &err, "DescribeTable");
    assert_string_equal(d.status, "ACTIVE");
    assert_string_equal(d.hash_key, "lockKey");
    assert_string_equal(d.hash_type, "S");
    assert_string_equal(d.arn, info.arn);

    json_t *raw = describe_raw(tbl);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(raw, "BillingModeSummary"), "BillingMode")),
        "PAY_PER_REQUEST");
    json_decref(raw);

    ddb_code rc = ddb_create_table(cl, tbl, "lockKey", 0, 0, &err);
    expect_code(rc, DDB_ERR_IN_USE, &err, "CreateTable of an existing table");
    assert_string_equal(err.type, "ResourceInUseException");
    ddb_error_clear(&err);

    expect_ok(ddb_tag_resource(cl, info.arn, "lynk", "lock-table", &err), &err,
              "TagResource");
    seen tags = {"lock-table", 0};
    expect_ok(ddb_list_tags(cl, info.arn, tag_cb, &tags, &err), &err,
              "ListTagsOfResource");
    assert_int_equal(tags.count, 1);

    seen names = {tbl, 0};
    expect_ok(ddb_list_tables(cl, name_cb, &names, &err), &err, "ListTables");
    assert_int_equal(names.count, 1);

    delete_and_wait(tbl);
    rc = ddb_describe_table(cl, tbl, &d, &err);
    expect_code(rc, DDB_ERR_NOT_FOUND, &err, "DescribeTable of a deleted table");
    assert_string_equal(err.type, "ResourceNotFoundException");
    ddb_error_clear(&err);

    names.count = 0;
    expect_ok(ddb_list_tables(cl, name_cb, &names, &err), &err, "ListTables");
    assert_int_equal(names.count, 0);
}

static void test_table_provisioned(void **state)
{
    char tbl[64];
    ddb_table_info info;
    (void)state;
    table_name(tbl, sizeof(tbl), "prov");
    memset(&info, 0, sizeof(info));
    create_and_wait(tbl, 5, 5, &info);
    assert_string_equal(info.status, "ACTIVE");
    assert_string_equal(info.hash_key, "lockKey");
    json_t *raw = describe_raw(tbl);
    json_t *pt = json_object_get(raw, "ProvisionedThroughput");
    assert_int_equal(json_integer_value(json_object_get(pt, "ReadCapacityUnits")), 5);
    assert_int_equal(json_integer_value(json_object_get(pt, "WriteCapacityUnits")), 5);
    const char *bm = json_string_value(json_object_get(
        json_object_get(raw, "BillingModeSummary"), "BillingMode"));
    if (bm)
        assert_string_equal(bm, "PROVISIONED");
    json_decref(raw);
    delete_and_wait(tbl);
}

/* ---- conditional writes ---- */

static void test_put_if_absent(void **state)
{
    ddb_error err = {0};
    ddb_cond cond = {.expr = "attribute_not_exists(lockKey)"};
    json_t *item = lock_item("absent-put", "v1", "host-a");
    (void)state;
    expect_ok(ddb_put_item(cl, table, item, &cond, 0, &err), &err,
              "PutItem on an absent key");
    assert_version("absent-put", "v1");

    json_t *other = lock_item("absent-put", "v2", "host-b");
    ddb_code rc = ddb_put_item(cl, table, other, &cond, 0, &err);
    expect_condition(rc, &err, "PutItem on a present key");
    assert_null(err.item);
    ddb_error_clear(&err);
    assert_version("absent-put", "v1");
    json_decref(other);
    json_decref(item);
}

/* lynk's take-over: put if absent or still at the version we observed. */
static ddb_code takeover(const char *k, const char *observed, const char *next,
                         bool want_old, ddb_error *err)
{
    json_t *vals = json_pack("{s:o}", ":v", ddb_s(observed));
    ddb_cond cond = {
        .expr = "attribute_not_exists(lockKey) OR versionNumber = :v",
        .values = vals, .return_old_on_fail = want_old};
    json_t *item = lock_item(k, next, "host-taker");
    ddb_code rc = ddb_put_item(cl, table, item, &cond, 0, err);
    json_decref(item);
    json_decref(vals);
    return rc;
}

/* err->item after a failed condition asking for ALL_OLD: the stored item
 * (want_version) on servers that honour it; dynalite ignores the flag. */
static void assert_old_item(const ddb_error *err, const char *want_version)
{
    if (kind == SRV_DYNALITE) {
        assert_null(err->item);
        return;
    }
    if (!err->item)
        fail_msg("no err->item although ReturnValuesOnConditionCheckFailure="
                 "ALL_OLD was asked");
    assert_string_equal(ddb_item_s(err->item, "versionNumber"), want_version);
}

static void test_takeover_put(void **state)
{
    ddb_error err = {0};
    (void)state;
    put_plain("takeover", "t1", "host-a");
    json_t *seen_item = get(table, "takeover");
    assert_non_null(seen_item);
    const char *observed = ddb_item_s(seen_item, "versionNumber");
    assert_string_equal(observed, "t1");

    expect_ok(takeover("takeover", observed, "t2", false, &err), &err,
              "take-over with the observed version");
    assert_version("takeover", "t2");

    ddb_code rc = takeover("takeover", observed, "t3", false, &err);
    expect_condition(rc, &err, "take-over with a stale version");
    assert_null(err.item);
    ddb_error_clear(&err);

    rc = takeover("takeover", observed, "t3", true, &err);
    expect_condition(rc, &err, "take-over with a stale version, ALL_OLD");
    assert_old_item(&err, "t2");
    ddb_error_clear(&err);
    assert_null(err.item);
    assert_version("takeover", "t2");
    json_decref(seen_item);

    /* The other branch of the OR: nothing stored at all. */
    expect_ok(takeover("takeover-absent", "whatever", "t9", true, &err), &err,
              "take-over of an absent key");
    assert_version("takeover-absent", "t9");
}

static ddb_code refresh(const char *k, const char *mine, const char *next,
                        const char *host, bool want_old, ddb_error *err)
{
    json_t *vals = json_pack("{s:o, s:o, s:o}", ":new", ddb_s(next),
                             ":host", ddb_s(host), ":mine", ddb_s(mine));
    json_t *key = key_of(k);
    ddb_cond cond = {.expr = "versionNumber = :mine", .values = vals,
                     .return_old_on_fail = want_old};
    ddb_code rc = ddb_update_item(cl, table, key,
        "SET versionNumber = :new, hostIdentifier = :host", &cond, 0, err);
    json_decref(key);
    json_decref(vals);
    return rc;
}

static void test_update_refresh(void **state)
{
    ddb_error err = {0};
    long long lease = 0;
    (void)state;
    put_plain("refresh", "r1", "host-a");
    expect_ok(refresh("refresh", "r1", "r2", "host-b", false, &err), &err,
              "UpdateItem with our version");
    json_t *item = get(table, "refresh");
    assert_non_null(item);
    assert_string_equal(ddb_item_s(item, "versionNumber"), "r2");
    assert_string_equal(ddb_item_s(item, "hostIdentifier"), "host-b");
    assert_string_equal(ddb_item_s(item, "ownerName"), "itest");
    assert_true(ddb_item_n(item, "leaseDuration", &lease));
    assert_int_equal(lease, 20);
    json_decref(item);

    ddb_code rc = refresh("refresh", "r1", "r3", "host-c", true, &err);
    expect_condition(rc, &err, "UpdateItem with a stale version");
    assert_old_item(&err, "r2");
    ddb_error_clear(&err);
    assert_version("refresh", "r2");

    /* A refresh of a released lock must not bring it back. */
    rc = refresh("refresh-gone", "r1", "r2", "host-a", true, &err);
    expect_condition(rc, &err, "UpdateItem of an absent key");
    assert_null(err.item);
    ddb_error_clear(&err);
    json_t *gone = get(table, "refresh-gone");
    assert_null(gone);
}

static void test_delete_conditional(void **state)
{
    ddb_error err = {0};
    json_t *key = key_of("release");
    (void)state;
    put_plain("release", "d1", "host-a");

    json_t *stale = json_pack("{s:o}", ":v", ddb_s("d0"));
    ddb_cond c1 = {.expr = "versionNumber = :v", .values = stale,
                   .return_old_on_fail = true};
    ddb_code rc = ddb_delete_item(cl, table, key, &c1, 0, &err);
    expect_condition(rc, &err, "DeleteItem with a stale version");
    assert_old_item(&err, "d1");
    ddb_error_clear(&err);
    assert_version("release", "d1");

    json_t *mine = json_pack("{s:o}", ":v", ddb_s("d1"));
    ddb_cond c2 = {.expr = "versionNumber = :v", .values = mine};
    expect_ok(ddb_delete_item(cl, table, key, &c2, 0, &err), &err,
              "DeleteItem with our version");
    json_t *item = get(table, "release");
    assert_null(item);

    /* Releasing again: the item is gone, the condition fails. */
    rc = ddb_delete_item(cl, table, key, &c2, 0, &err);
    expect_condition(rc, &err, "DeleteItem of an absent key");
    ddb_error_clear(&err);
    json_decref(mine);
    json_decref(stale);
    json_decref(key);
}

static void test_get_item(void **state)
{
    ddb_error err = {0};
    const char *k = "get/clé-日本-\xf0\x9f\x94\x92";
    json_t *item = lock_item(k, "g1", "hôte");
    (void)state;
    json_object_set_new(item, "data", ddb_s("payload \"quoted\" \\ back"));
    expect_ok(ddb_put_item(cl, table, item, NULL, 0, &err), &err, "PutItem");
    json_t *got = get(table, k);
    assert_non_null(got);
    if (!json_equal(got, item)) {
        char *a = json_dumps(got, JSON_SORT_KEYS), *b = json_dumps(item, JSON_SORT_KEYS);
        fail_msg("GetItem returned %s, stored %s", a, b);
    }
    json_decref(got);
    json_decref(item);
    assert_null(get(table, "never-written"));
}

/* ---- Scan pagination ---- */

#define SCAN_ITEMS 48
#define PAD_BYTES  (50 * 1024)   /* 48 x 50 KiB = 2.4 MB: at least 2 pages */

typedef struct scan_seen {
    int hits[SCAN_ITEMS];
    int others;
    int calls;
    int stop_after;
} scan_seen;

static int scan_cb(json_t *item, void *arg)
{
    scan_seen *s = arg;
    const char *k = ddb_item_s(item, "lockKey");
    int i;
    s->calls++;
    if (k && sscanf(k, "scan-%d", &i) == 1 && i >= 0 && i < SCAN_ITEMS)
        s->hits[i]++;
    else
        s->others++;
    return s->stop_after && s->calls >= s->stop_after;
}

static void test_scan_pagination(void **state)
{
    char tbl[64], k[32];
    ddb_table_info info;
    ddb_error err = {0};
    char *pad = malloc(PAD_BYTES + 1);
    (void)state;
    assert_non_null(pad);
    memset(pad, 'p', PAD_BYTES);
    pad[PAD_BYTES] = '\0';
    table_name(tbl, sizeof(tbl), "scan");
    create_and_wait(tbl, 0, 0, &info);
    for (int i = 0; i < SCAN_ITEMS; i++) {
        snprintf(k, sizeof(k), "scan-%d", i);
        json_t *item = lock_item(k, "s1", "host-a");
        json_object_set_new(item, "padding", ddb_s(pad));
        expect_ok(ddb_put_item(cl, tbl, item, NULL, 0, &err), &err, "PutItem");
        json_decref(item);
    }
    free(pad);

    /* A page boundary really exists: one raw Scan stops short. */
    json_t *body = json_pack("{s:s}", "TableName", tbl), *resp = NULL;
    expect_ok(ddb_call(cl, "Scan", body, &resp, 0, &err), &err, "Scan (raw)");
    json_t *last = json_object_get(resp, "LastEvaluatedKey");
    assert_true(json_is_object(last) && json_object_size(last) > 0);
    assert_true(json_array_size(json_object_get(resp, "Items")) < SCAN_ITEMS);
    json_decref(resp);
    json_decref(body);

    scan_seen s;
    memset(&s, 0, sizeof(s));
    expect_ok(ddb_scan(cl, tbl, true, scan_cb, &s, &err), &err, "ddb_scan");
    for (int i = 0; i < SCAN_ITEMS; i++)
        if (s.hits[i] != 1)
            fail_msg("scan-%d seen %d times, want exactly once", i, s.hits[i]);
    assert_int_equal(s.others, 0);
    assert_int_equal(s.calls, SCAN_ITEMS);

    /* A callback that says stop ends the scan with DDB_OK. */
    memset(&s, 0, sizeof(s));
    s.stop_after = 3;
    expect_ok(ddb_scan(cl, tbl, false, scan_cb, &s, &err), &err,
              "ddb_scan stopped early");
    assert_int_equal(s.calls, 3);
    delete_and_wait(tbl);
}

/* ---- error mapping ---- */

static void test_error_not_found(void **state)
{
    ddb_error err = {0};
    json_t *key = key_of("x"), *item = NULL;
    char tbl[64];
    (void)state;
    table_name(tbl, sizeof(tbl), "missing");
    ddb_code rc = ddb_get_item(cl, tbl, key, &item, 0, &err);
    expect_code(rc, DDB_ERR_NOT_FOUND, &err, "GetItem on a missing table");
    assert_string_equal(err.type, "ResourceNotFoundException");
    assert_int_equal(err.http_status, 400);
    assert_null(item);
    ddb_error_clear(&err);
    json_decref(key);
}

static void test_error_validation(void **state)
{
    ddb_error err = {0};
    json_t *key = key_of("bad-expr");
    json_t *vals = json_pack("{s:o}", ":v", ddb_s("x"));
    ddb_cond cond = {.values = vals};
    (void)state;
    ddb_code rc = ddb_update_item(cl, table, key, "SET versionNumber = = :v",
                                  &cond, 0, &err);
    expect_code(rc, DDB_ERR_VALIDATION, &err, "a malformed UpdateExpression");
    assert_string_equal(err.type, "ValidationException");
    assert_int_equal(err.http_status, 400);
    assert_false(err.ambiguous);
    ddb_error_clear(&err);

    if (kind == SRV_MOTO) {
        /* moto 5.x answers 500 with a traceback to a malformed condition
         * (see the header comment); only the UpdateExpression is checked. */
        print_message("moto: malformed ConditionExpression not checked "
                      "(moto answers HTTP 500)\n");
    } else {
        json_t *item = lock_item("bad-expr", "b1", "host-a");
        ddb_cond bad = {.expr = "attribute_not_exists(lockKey", .values = NULL};
        rc = ddb_put_item(cl, table, item, &bad, 0, &err);
        expect_code(rc, DDB_ERR_VALIDATION, &err,
                    "a malformed ConditionExpression");
        assert_string_equal(err.type, "ValidationException");
        ddb_error_clear(&err);
        json_decref(item);
    }
    assert_null(get(table, "bad-expr"));
    json_decref(vals);
    json_decref(key);
}

/* A port with nothing listening: bound, then closed. */
static int dead_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_error_network(void **state)
{
    char url[64], port[16];
    aws_error aerr = {0};
    aws_config *dead_cfg = NULL;
    ddb_error err = {0};
    json_t *key = key_of("x"), *item = NULL;
    (void)state;
    int p = dead_port();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", p);
    snprintf(port, sizeof(port), "%d", p);
    aws_options o = {.endpoint = url};
    if (aws_config_load(&o, &dead_cfg, &aerr) != AWS_OK)
        fail_msg("aws_config_load: %s", aerr.msg);
    ddb_client_options co = {.connect_timeout_ms = 1000,
                             .request_timeout_ms = 2000,
                             .default_budget_ms = 2000};
    ddb_client *dead = ddb_client_new(dead_cfg, &co);
    assert_non_null(dead);
    int64_t t0 = lk_now_ms();
    ddb_code rc = ddb_get_item(dead, "itest-nowhere", key, &item, t0 + 1500,
                               &err);
    int64_t took = lk_now_ms() - t0;
    expect_code(rc, DDB_ERR_NETWORK, &err, "GetItem on a refused endpoint");
    assert_int_equal(err.http_status, 0);
    assert_null(item);
    if (!strstr(err.msg, port))
        fail_msg("the message does not name the endpoint %s: %s", url, err.msg);
    print_message("network error: %s\n", err.msg);
    assert_true(took < 5000);   /* the deadline is kept */
    ddb_error_clear(&err);

    /* A write that never connected was not applied: not ambiguous. */
    json_t *it = lock_item("x", "n1", "host-a");
    rc = ddb_put_item(dead, "itest-nowhere", it, NULL, lk_now_ms() + 1000, &err);
    expect_code(rc, DDB_ERR_NETWORK, &err, "PutItem on a refused endpoint");
    assert_false(err.ambiguous);
    ddb_error_clear(&err);
    json_decref(it);
    ddb_client_free(dead);
    aws_config_free(dead_cfg);
    json_decref(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_lifecycle),
        cmocka_unit_test(test_table_provisioned),
        cmocka_unit_test(test_put_if_absent),
        cmocka_unit_test(test_takeover_put),
        cmocka_unit_test(test_update_refresh),
        cmocka_unit_test(test_delete_conditional),
        cmocka_unit_test(test_get_item),
        cmocka_unit_test(test_scan_pagination),
        cmocka_unit_test(test_error_not_found),
        cmocka_unit_test(test_error_validation),
        cmocka_unit_test(test_error_network),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    curl_global_cleanup();
    return rc;
}
