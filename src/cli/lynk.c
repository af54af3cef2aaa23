/* lynk.c — the `lynk` command line: lynk's table commands (create-table,
 * list-tables, delete-table) with lynk's messages, over the DynamoDB client,
 * and `break`, over the lock engine.
 *
 * Exit status: 0 success, 1 the operation failed, 2 usage error. Every
 * failure prints one line on stderr naming the cause and the fix. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/config.h"
#include "ddb/ddb.h"
#include "lock/engine.h"
#include "util/clock.h"
#include "util/log.h"

#define LYNK_TAG_KEY "lynk"
#define LYNK_TAG_VALUE "lock-table"
#define LOCK_KEY_ATTR "lockKey"
#define TABLE_WAIT_MS 120000

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

typedef struct cli {
    aws_options aws;
    long rcu, wcu;          /* --provisioned R,W; 0,0 = on-demand */
    aws_config *cfg;
    ddb_client *ddb;
} cli;

typedef struct command {
    const char *name;
    int nargs;              /* positional arguments after the name */
    const char *args;       /* shown in usage */
    const char *help;
    int (*run)(cli *c, char **argv);
} command;

static int fail_ddb(const ddb_error *err)
{
    fprintf(stderr, "lynk: %s\n", err->msg);
    return EXIT_FAIL;
}

/* A lock table: a single HASH key named lockKey of type S. */
static int check_lock_schema(const char *table, const ddb_table_info *info)
{
    if (strcmp(info->hash_key, LOCK_KEY_ATTR) == 0 &&
        strcmp(info->hash_type, "S") == 0 && !info->has_range_key)
        return 0;
    fprintf(stderr,
            "lynk: table %s exists but is not a lock table (its key is %s %s%s, "
            "a lock table has only lockKey S): choose another name\n",
            table, info->hash_key, info->hash_type,
            info->has_range_key ? " with a sort key" : "");
    return EXIT_FAIL;
}

static int cmd_create(cli *c, char **argv)
{
    const char *table = argv[0];
    ddb_table_info info;
    ddb_error err = {0};
    int rc = 0;

    if (ddb_describe_table(c->ddb, table, &info, &err) == DDB_OK) {
        if (check_lock_schema(table, &info) != 0)
            return EXIT_FAIL;
        printf("Table %s already exists.\n", table);
        return 0;
    }
    if (err.code != DDB_ERR_NOT_FOUND)
        return fail_ddb(&err);
    ddb_error_clear(&err);

    printf("Creating table %s\n", table);
    fflush(stdout);
    if (ddb_create_table(c->ddb, table, LOCK_KEY_ATTR, c->rcu, c->wcu, &err) != DDB_OK &&
        err.code != DDB_ERR_IN_USE) /* a concurrent create: wait for it too */
        rc = fail_ddb(&err);
    ddb_error_clear(&err);
    if (rc == 0 &&
        ddb_wait_table_active(c->ddb, table, lk_now_ms() + TABLE_WAIT_MS, &info, &err) != DDB_OK)
        rc = fail_ddb(&err);
    if (rc == 0 &&
        ddb_tag_resource(c->ddb, info.arn, LYNK_TAG_KEY, LYNK_TAG_VALUE, &err) != DDB_OK)
        rc = fail_ddb(&err);
    ddb_error_clear(&err);
    if (rc == 0)
        printf("Created\n");
    return rc;
}

static int cmd_delete(cli *c, char **argv)
{
    const char *table = argv[0];
    ddb_table_info info;
    ddb_error err = {0};
    int rc = 0;

    if (ddb_describe_table(c->ddb, table, &info, &err) != DDB_OK) {
        if (err.code != DDB_ERR_NOT_FOUND)
            return fail_ddb(&err);
        printf("Table %s does not exist.\n", table);
        ddb_error_clear(&err);
        return 0;
    }
    printf("Deleting table %s\n", table);
    fflush(stdout);
    if (ddb_delete_table(c->ddb, table, &err) != DDB_OK && err.code != DDB_ERR_NOT_FOUND)
        rc = fail_ddb(&err);
    ddb_error_clear(&err);
    if (rc == 0 &&
        ddb_wait_table_gone(c->ddb, table, lk_now_ms() + TABLE_WAIT_MS, &err) != DDB_OK)
        rc = fail_ddb(&err);
    ddb_error_clear(&err);
    if (rc == 0)
        printf("Deleted\n");
    return rc;
}

static int tag_is_lynk(const char *key, const char *value, void *arg)
{
    if (strcmp(key, LYNK_TAG_KEY) == 0 && strcmp(value, LYNK_TAG_VALUE) == 0) {
        *(int *)arg = 1;
        return 1; /* found: stop paging */
    }
    return 0;
}

typedef struct list_ctx {
    cli *c;
    ddb_error err;
    int failed;
} list_ctx;

static int print_if_lynk(const char *name, void *arg)
{
    list_ctx *l = arg;
    ddb_table_info info;
    int tagged = 0;

    if (ddb_describe_table(l->c->ddb, name, &info, &l->err) != DDB_OK) {
        if (l->err.code == DDB_ERR_NOT_FOUND) { /* deleted meanwhile */
            ddb_error_clear(&l->err);
            return 0;
        }
        l->failed = 1;
        return 1;
    }
    if (ddb_list_tags(l->c->ddb, info.arn, tag_is_lynk, &tagged, &l->err) != DDB_OK) {
        l->failed = 1;
        return 1;
    }
    if (tagged)
        printf("%s\n", name);
    return 0;
}

static int cmd_list(cli *c, char **argv)
{
    list_ctx l = {.c = c};
    ddb_error err = {0};

    (void)argv;
    if (ddb_list_tables(c->ddb, print_if_lynk, &l, &err) != DDB_OK)
        return fail_ddb(&err);
    if (l.failed) {
        int rc = fail_ddb(&l.err);
        ddb_error_clear(&l.err);
        return rc;
    }
    return 0;
}

/* lynk break TABLE NAME: delete a lock whoever holds it (an unlink through a
 * mount refuses that with EBUSY). Conditional on the version just read, so
 * a lock taken again meanwhile is left alone. */
static int cmd_break(cli *c, char **argv)
{
    const char *table = argv[0], *name = argv[1];
    lk_engine_options eo = {.table = table, .host = "lynk-break"};
    lk_error err = {0};
    lk_item it = {0};
    bool found = false;
    int rc = EXIT_FAIL;

    lk_engine *e = lk_engine_new(c->cfg, &eo, &err);
    if (!e) {
        fprintf(stderr, "lynk: %s\n", err.msg);
        return EXIT_FAIL;
    }
    if (lk_observe(e, name, &it, &found, &err) != LK_OK) {
        fprintf(stderr, "lynk: %s\n", err.msg);
    } else if (!found) {
        printf("Lock %s is not held.\n", name);
        rc = 0;
    } else if (lk_break(e, name, &err) != LK_OK) {
        fprintf(stderr, "lynk: %s\n", err.msg);
    } else {
        printf("Broke lock %s (held by %s, version %s)\n", name, it.host, it.version);
        rc = 0;
    }
    lk_item_clear(&it);
    lk_engine_free(e);
    return rc;
}

static const command commands[] = {
    {"create-table", 1, "NAME", "create a lock table (tagged lynk=lock-table) and wait until it is ACTIVE", cmd_create},
    {"list-tables", 0, "", "list the tables tagged lynk=lock-table", cmd_list},
    {"delete-table", 1, "NAME", "delete a table and wait until it is gone", cmd_delete},
    {"break", 2, "TABLE LOCK", "delete a lock whoever holds it (LOCK is its lockKey)", cmd_break},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lynk [OPTIONS] COMMAND [ARGS]\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-13s %-10s %s\n", commands[i].name, commands[i].args,
                commands[i].help);
    fprintf(out,
            "\n"
            "Options (before or after the command):\n"
            "  --region REGION      AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, profile)\n"
            "  --endpoint URL       DynamoDB endpoint (default: AWS_ENDPOINT_URL_DYNAMODB,\n"
            "                       AWS_ENDPOINT_URL, profile endpoint_url, the region's)\n"
            "  --profile NAME       shared-config profile (default: AWS_PROFILE or default)\n"
            "  --provisioned R,W    create-table: provisioned read/write units\n"
            "                       (default: on-demand capacity)\n"
            "  -d, --debug          log each request to stderr (never secrets)\n"
            "  -h, --help           show this help\n"
            "  -V, --version        show the version\n"
            "\n"
            "Exit status: 0 success, 1 the operation failed, 2 usage error.\n");
}

static int parse_units(const char *s, long *r, long *w)
{
    char *end;
    *r = strtol(s, &end, 10);
    if (end == s || *end != ',' || *r <= 0)
        return -1;
    s = end + 1;
    *w = strtol(s, &end, 10);
    return (end == s || *end != '\0' || *w <= 0) ? -1 : 0;
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "lynk: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see lynk --help)\n");
    return EXIT_USAGE;
}

/* Parse options anywhere on the line; leaves positional arguments in argv
 * from optind on. Returns -1 to go on, or an exit status. */
static int parse_options(cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"region", required_argument, NULL, 'r'},
        {"endpoint", required_argument, NULL, 'e'},
        {"profile", required_argument, NULL, 'p'},
        {"provisioned", required_argument, NULL, 'P'},
        {"debug", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":dhV", opts, NULL)) != -1) {
        switch (ch) {
        case 'r': c->aws.region = optarg; break;
        case 'e': c->aws.endpoint = optarg; break;
        case 'p': c->aws.profile = optarg; break;
        case 'P':
            if (parse_units(optarg, &c->rcu, &c->wcu) != 0)
                return usage_error("--provisioned takes READ,WRITE units, two positive integers, not '%s'", optarg);
            break;
        case 'd': lk_log_set_level(LK_LOG_DEBUG); break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("lynk (lynkfs) %s\n", LYNKFS_VERSION); return 0;
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

static int run_command(cli *c, const command *cmd, char **args)
{
    aws_error aerr = {0};

    if (aws_config_load(&c->aws, &c->cfg, &aerr) != AWS_OK) {
        fprintf(stderr, "lynk: %s\n", aerr.msg);
        return EXIT_FAIL;
    }
    c->ddb = ddb_client_new(c->cfg, NULL);
    if (!c->ddb) {
        fprintf(stderr, "lynk: cannot start the DynamoDB client: out of memory\n");
        return EXIT_FAIL;
    }
    return cmd->run(c, args);
}

int main(int argc, char **argv)
{
    cli c = {0};
    const command *cmd;
    int rc;

    lk_log_init("lynk", LK_LOG_WARN, false);
    if ((rc = parse_options(&c, argc, argv)) >= 0)
        return rc;
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = find_command(argv[optind]);
    if (!cmd)
        return usage_error("unknown command '%s'", argv[optind]);
    if (argc - optind - 1 != cmd->nargs) {
        fprintf(stderr, "lynk: usage: lynk %s %s (see lynk --help)\n", cmd->name, cmd->args);
        return EXIT_USAGE;
    }
    if ((c.rcu || c.wcu) && strcmp(cmd->name, "create-table") != 0)
        return usage_error("--provisioned applies to create-table only, not %s", cmd->name);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = run_command(&c, cmd, argv + optind + 1);
    ddb_client_free(c.ddb);
    aws_config_free(c.cfg);
    curl_global_cleanup();
    return rc;
}
