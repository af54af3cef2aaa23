/* test_aws_config.c — the AWS configuration chain (aws/config.c):
 * credentials from the environment, the shared files and credential_process
 * (with refresh), region and endpoint resolution, file errors, and that no
 * secret ever reaches an error message. Every test runs with all AWS_* variables
 * cleared and HOME pointing at a fresh temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aws/config.h"

extern char **environ;

static char home[256];

/* Every secret any test writes anywhere; none may appear in err.msg. */
static const char *const secrets[] = {
    "envsecretXYZ", "envtokenXYZ", "credsecret1", "credtoken1",
    "confsecret1", "procsecret", "proctoken", "badjsonsecret", "filesecret",
    "endpointpass",
};

static void assert_no_secret(const char *msg)
{
    for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++)
        if (strstr(msg, secrets[i])) {
            print_error("secret '%s' leaked into: %s\n", secrets[i], msg);
            fail();
        }
}

static void clear_aws_env(void)
{
    char *names[256];
    size_t n = 0;
    for (char **e = environ; *e && n < 256; e++)
        if (strncmp(*e, "AWS_", 4) == 0) {
            const char *eq = strchr(*e, '=');
            names[n++] = strndup(*e, eq ? (size_t)(eq - *e) : strlen(*e));
        }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_aws_env();
    strcpy(home, "/tmp/test_aws_config-XXXXXX");
    if (!mkdtemp(home))
        return -1;
    setenv("HOME", home, 1);
    char aws[300];
    snprintf(aws, sizeof aws, "%s/.aws", home);
    return mkdir(aws, 0700);
}

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int teardown(void **state)
{
    (void)state;
    clear_aws_env();
    return nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write text to HOME-relative path (e.g. ".aws/config"); returns the full
 * path in a static buffer. */
static const char *put(const char *rel, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", home, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void env_keys(void)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecretXYZ", 1);
    setenv("AWS_REGION", "us-east-1", 1);
}

/* Load and expect failure with code; returns the message for more checks. */
static const char *load_fails(const aws_options *o, aws_code code)
{
    static aws_error err;
    aws_config *cfg = (aws_config *)1;
    memset(&err, 0, sizeof err);
    aws_code rc = aws_config_load(o, &cfg, &err);
    if (rc != code)
        print_error("expected code %d, got %d: %s\n", code, rc, err.msg);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_null(cfg);
    assert_true(strlen(err.msg) > 10);
    assert_null(strchr(err.msg, '\n'));
    assert_no_secret(err.msg);
    return err.msg;
}

static aws_config *load_ok(const aws_options *o)
{
    aws_config *cfg = NULL;
    aws_error err = {0};
    aws_code rc = aws_config_load(o, &cfg, &err);
    if (rc != AWS_OK)
        print_error("load failed: %s\n", err.msg);
    assert_int_equal(rc, AWS_OK);
    assert_non_null(cfg);
    return cfg;
}

/* The credentials cfg hands out now, checked against the expected values. */
static void expect_creds(aws_config *cfg, const char *id, const char *sk,
                         const char *tok, const char *source)
{
    aws_credentials c;
    aws_error err = {0};
    assert_int_equal(aws_config_credentials(cfg, &c, &err), AWS_OK);
    assert_string_equal(c.access_key_id, id);
    assert_string_equal(c.secret_access_key, sk);
    if (tok)
        assert_string_equal(c.session_token, tok);
    else
        assert_null(c.session_token);
    if (source)
        assert_string_equal(c.source, source);
    aws_credentials_clear(&c);
    assert_null(c.access_key_id);
    assert_null(c.secret_access_key);
}

/* ------------------------------------------------------------ environment */

static void env_credentials(void **state)
{
    (void)state;
    env_keys();
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDENV", "envsecretXYZ", NULL, "environment");
    assert_string_equal(aws_config_profile(cfg), "default");
    aws_config_free(cfg);
}

static void env_credentials_with_token(void **state)
{
    (void)state;
    env_keys();
    setenv("AWS_SESSION_TOKEN", "envtokenXYZ", 1);
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDENV", "envsecretXYZ", "envtokenXYZ", "environment");
    aws_config_free(cfg);
}

static void env_one_key_only_is_an_error(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    /* even a usable profile does not hide the half-set environment */
    put(".aws/credentials", "[default]\naws_access_key_id = AKIDCRED\n"
        "aws_secret_access_key = credsecret1\n");
    const char *m = load_fails(NULL, AWS_ERR_NO_CREDENTIALS);
    assert_non_null(strstr(m, "AWS_ACCESS_KEY_ID"));
    assert_non_null(strstr(m, "AWS_SECRET_ACCESS_KEY"));

    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_SECRET_ACCESS_KEY", "envsecretXYZ", 1);
    m = load_fails(NULL, AWS_ERR_NO_CREDENTIALS);
    assert_non_null(strstr(m, "AWS_ACCESS_KEY_ID"));
    assert_non_null(strstr(m, "AWS_SECRET_ACCESS_KEY"));
}

static void nothing_found_says_what_was_tried(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/config", "[default]\nregion = eu-west-1\n");
    const char *m = load_fails(NULL, AWS_ERR_NO_CREDENTIALS);
    assert_non_null(strstr(m, "environment"));
    assert_non_null(strstr(m, "'default'"));
    assert_non_null(strstr(m, ".aws/credentials"));
    assert_non_null(strstr(m, "AWS_ACCESS_KEY_ID"));
}

/* ---------------------------------------------------------- shared files */

static void profile_from_credentials_file(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/credentials",
        "# my keys\n"
        "; another comment\n"
        "\n"
        "[ default ]\n"
        "  AWS_Access_Key_Id=AKIDCRED   \n"
        "aws_secret_access_key :  credsecret1\n"
        "aws_session_token = credtoken1\n");
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDCRED", "credsecret1", "credtoken1",
                 "shared credentials file");
    aws_config_free(cfg);
}

static void profile_section_in_config_file(void **state)
{
    (void)state;
    setenv("AWS_PROFILE", "work", 1);
    put(".aws/config",
        "[default]\nregion = us-east-1\n"
        "[profile   work ]\n"
        "region = eu-central-1\n"
        "aws_access_key_id = AKIDCONF\n"
        "aws_secret_access_key = confsecret1\n"
        "s3 =\n"
        "    max_concurrent_requests = 10\n");
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDCONF", "confsecret1", NULL, "shared config file");
    assert_string_equal(aws_config_profile(cfg), "work");
    assert_string_equal(aws_config_region(cfg), "eu-central-1");
    aws_config_free(cfg);
}

static void credentials_file_beats_config_file(void **state)
{
    (void)state;
    put(".aws/credentials", "[default]\naws_access_key_id = AKIDCRED\n"
        "aws_secret_access_key = credsecret1\n");
    put(".aws/config", "[default]\nregion = ap-south-1\n"
        "aws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret1\n");
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDCRED", "credsecret1", NULL, NULL);
    assert_string_equal(aws_config_region(cfg), "ap-south-1");
    aws_config_free(cfg);

    /* other settings merge, the credentials file winning (as botocore) */
    put(".aws/credentials", "[default]\naws_access_key_id = AKIDCRED\n"
        "aws_secret_access_key = credsecret1\nregion = me-south-1\n");
    cfg = load_ok(NULL);
    assert_string_equal(aws_config_region(cfg), "me-south-1");
    aws_config_free(cfg);
}

static void aws_profile_selects_profile(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/credentials",
        "[default]\naws_access_key_id = AKIDDEF\n"
        "aws_secret_access_key = credsecret1\n"
        "[other]\naws_access_key_id = AKIDOTHER\n"
        "aws_secret_access_key = filesecret\n");
    setenv("AWS_PROFILE", "other", 1);
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDOTHER", "filesecret", NULL, NULL);
    assert_string_equal(aws_config_profile(cfg), "other");
    aws_config_free(cfg);

    /* profile= wins over AWS_PROFILE */
    aws_options o = {.profile = "default"};
    cfg = load_ok(&o);
    expect_creds(cfg, "AKIDDEF", "credsecret1", NULL, NULL);
    aws_config_free(cfg);
}

static void env_beats_profile_unless_explicit(void **state)
{
    (void)state;
    env_keys();
    put(".aws/credentials",
        "[p1]\naws_access_key_id = AKIDP1\n"
        "aws_secret_access_key = filesecret\n");
    setenv("AWS_PROFILE", "p1", 1);
    aws_config *cfg = load_ok(NULL);          /* AWS_PROFILE: env still wins */
    expect_creds(cfg, "AKIDENV", "envsecretXYZ", NULL, "environment");
    aws_config_free(cfg);

    unsetenv("AWS_PROFILE");
    aws_options o = {.profile = "p1"};
    cfg = load_ok(&o);                        /* profile=: env is skipped */
    expect_creds(cfg, "AKIDP1", "filesecret", NULL, NULL);
    assert_string_equal(aws_config_profile(cfg), "p1");
    aws_config_free(cfg);

    /* an explicit profile without keys does not fall back to the env */
    put(".aws/config", "[profile bare]\nregion = us-west-2\n");
    o.profile = "bare";
    const char *m = load_fails(&o, AWS_ERR_NO_CREDENTIALS);
    assert_non_null(strstr(m, "'bare'"));
}

static void unknown_profile(void **state)
{
    (void)state;
    env_keys();
    put(".aws/credentials", "[default]\naws_access_key_id = A\n"
        "aws_secret_access_key = credsecret1\n");
    setenv("AWS_PROFILE", "nosuch", 1);
    const char *m = load_fails(NULL, AWS_ERR_NO_PROFILE);
    assert_non_null(strstr(m, "'nosuch'"));
    assert_non_null(strstr(m, ".aws/credentials"));
    assert_non_null(strstr(m, ".aws/config"));

    unsetenv("AWS_PROFILE");
    aws_options o = {.profile = "ghost"};
    m = load_fails(&o, AWS_ERR_NO_PROFILE);
    assert_non_null(strstr(m, "'ghost'"));

    /* [profile x] in the credentials file is not profile x (as botocore) */
    put(".aws/credentials", "[profile x]\naws_access_key_id = A\n"
        "aws_secret_access_key = credsecret1\n");
    o.profile = "x";
    load_fails(&o, AWS_ERR_NO_PROFILE);
    /* and in the config file a bare [x] is not profile x either */
    put(".aws/credentials", "");
    put(".aws/config", "[x]\naws_access_key_id = A\n"
        "aws_secret_access_key = confsecret1\n");
    load_fails(&o, AWS_ERR_NO_PROFILE);
}

static void custom_file_locations(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put("creds", "[default]\naws_access_key_id = AKIDCUSTOM\n"
        "aws_secret_access_key = filesecret\n");
    put("conf", "[default]\nregion = sa-east-1\n");
    put(".aws/credentials", "[default]\naws_access_key_id = AKIDWRONG\n"
        "aws_secret_access_key = credsecret1\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "~/creds", 1);  /* ~ expanded */
    char conf[400];
    snprintf(conf, sizeof conf, "%s/conf", home);
    setenv("AWS_CONFIG_FILE", conf, 1);
    unsetenv("AWS_REGION");
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDCUSTOM", "filesecret", NULL, NULL);
    assert_string_equal(aws_config_region(cfg), "sa-east-1");
    aws_config_free(cfg);

    /* a missing named file is ignored, as botocore does */
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds", 1);
    env_keys();
    cfg = load_ok(NULL);
    aws_config_free(cfg);
}

static void malformed_file(void **state)
{
    (void)state;
    env_keys();
    const char *path = put(".aws/credentials",
        "[default]\n"
        "aws_access_key_id = AKIDCRED\n"
        "filesecret-with-no-equals-sign\n"
        "aws_secret_access_key = credsecret1\n");
    char p[512];
    snprintf(p, sizeof p, "%s", path);
    const char *m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, p));
    assert_non_null(strstr(m, "line 3"));
    assert_null(strstr(m, "AKIDCRED"));

    /* a key before any section */
    path = put(".aws/config", "filesecret = 1\n[default]\n");
    snprintf(p, sizeof p, "%s", path);
    put(".aws/credentials", "");
    m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, p));
    assert_non_null(strstr(m, "line 1"));

    /* unterminated section header, empty key, duplicate key */
    put(".aws/config",
        "[default]\nregion = us-east-1\n\n[profile filesecret\n");
    m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, "line 4"));
    put(".aws/config", "[default]\n = filesecret\n");
    m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, "line 2"));
    put(".aws/config", "[default]\nregion = a\nRegion = filesecret\n");
    m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, "line 3"));

    /* half a key pair in a file names the missing key */
    put(".aws/config", "");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    put(".aws/credentials", "[default]\naws_secret_access_key = filesecret\n");
    m = load_fails(NULL, AWS_ERR_BAD_FILE);
    assert_non_null(strstr(m, "aws_access_key_id"));
}

static void unsupported_profiles(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/config",
        "[profile role]\nrole_arn = arn:aws:iam::1:role/x\n"
        "source_profile = default\n"
        "[profile sso]\nsso_session = corp\nsso_account_id = 1\n");
    aws_options o = {.profile = "role"};
    const char *m = load_fails(&o, AWS_ERR_UNSUPPORTED);
    assert_non_null(strstr(m, "role_arn"));
    o.profile = "sso";
    m = load_fails(&o, AWS_ERR_UNSUPPORTED);
    assert_non_null(strstr(m, "sso"));
}

/* ----------------------------------------------------- credential_process */

/* A script printing credentials numbered by a counter file, expiring
 * exp_spec from now (a date(1) -d argument); from run fail_from on it
 * exits 3 (0 = never fails). */
static void write_process(const char *exp_spec, int fail_from)
{
    char script[2048], path[400];
    snprintf(script, sizeof script,
             "#!/bin/sh\n"
             "n=$(cat '%s/count' 2>/dev/null || echo 0)\n"
             "n=$((n + 1))\n"
             "echo $n > '%s/count'\n"
             "if [ %d -ne 0 ] && [ $n -ge %d ]; then echo 'broken' >&2; "
             "exit 3; fi\n"
             "exp=$(date -u -d '%s' +%%Y-%%m-%%dT%%H:%%M:%%SZ)\n"
             "printf '{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC%%s\", "
             "\"SecretAccessKey\": \"procsecret%%s\", \"SessionToken\": "
             "\"proctoken%%s\", \"Expiration\": \"%%s\"}\\n' $n $n $n $exp\n",
             home, home, fail_from, fail_from, exp_spec);
    put("proc.sh", script);
    snprintf(path, sizeof path, "%s/proc.sh", home);
    assert_int_equal(chmod(path, 0755), 0);
    char conf[600];
    snprintf(conf, sizeof conf, "[default]\nregion = us-east-1\n"
             "credential_process = %s --some-flag\n", path);
    put(".aws/config", conf);
}

static void process_success(void **state)
{
    (void)state;
    write_process("+2 hours", 0);
    aws_config *cfg = load_ok(NULL);
    aws_credentials c;
    aws_error err;
    assert_int_equal(aws_config_credentials(cfg, &c, &err), AWS_OK);
    assert_string_equal(c.access_key_id, "AKIDPROC1");
    assert_string_equal(c.secret_access_key, "procsecret1");
    assert_string_equal(c.session_token, "proctoken1");
    assert_string_equal(c.source, "credential_process");
    int64_t now = time(NULL);
    assert_true(c.expiration > now + 7100 && c.expiration <= now + 7200);
    aws_credentials_clear(&c);
    /* far from expiry: not run again */
    expect_creds(cfg, "AKIDPROC1", "procsecret1", "proctoken1", NULL);
    aws_config_free(cfg);
}

static void process_plain_json(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/credentials", "[default]\ncredential_process = printf "
        "'{\"Version\":1,\"AccessKeyId\":\"AKIDP\",\"SecretAccessKey\":"
        "\"procsecret\"}'\n");
    aws_config *cfg = load_ok(NULL);
    aws_credentials c;
    assert_int_equal(aws_config_credentials(cfg, &c, NULL), AWS_OK);
    assert_string_equal(c.access_key_id, "AKIDP");
    assert_null(c.session_token);
    assert_int_equal(c.expiration, 0);
    aws_credentials_clear(&c);
    aws_config_free(cfg);
}

static void process_failure(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/config", "[default]\ncredential_process = echo procsecret; "
        "exit 7\n");
    const char *m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "7"));
    assert_non_null(strstr(m, "'default'"));

    put(".aws/config", "[default]\ncredential_process = "
        "/nonexistent/tool\n");
    load_fails(NULL, AWS_ERR_PROCESS);
}

static void process_bad_json(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 1, \"AccessKeyId\": \"AKIDX\", \"SecretAccessKey\": "
        "badjsonsecret}'\n");
    const char *m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "JSON"));

    put(".aws/config", "[default]\ncredential_process = echo badjsonsecret\n");
    load_fails(NULL, AWS_ERR_PROCESS);

    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": "
        "\"badjsonsecret\"}'\n");
    m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "Version"));

    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 1, \"AccessKeyId\": \"A\"}'\n");
    m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "SecretAccessKey"));

    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": "
        "\"badjsonsecret\", \"Expiration\": \"tomorrow\"}'\n");
    m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "Expiration"));

    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": "
        "\"badjsonsecret\", \"Expiration\": \"2001-01-01T00:00:00Z\"}'\n");
    m = load_fails(NULL, AWS_ERR_PROCESS);
    assert_non_null(strstr(m, "expired"));
}

static void process_expiration_formats(void **state)
{
    (void)state;
    setenv("AWS_REGION", "us-east-1", 1);
    put(".aws/config", "[default]\ncredential_process = echo "
        "'{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": "
        "\"procsecret\", \"Expiration\": "
        "\"2099-01-02T03:04:05.123+01:00\"}'\n");
    aws_config *cfg = load_ok(NULL);
    aws_credentials c;
    assert_int_equal(aws_config_credentials(cfg, &c, NULL), AWS_OK);
    assert_int_equal(c.expiration, 4071006245LL - 3600);
    aws_credentials_clear(&c);
    aws_config_free(cfg);
}

static void expiring_process_credentials_refresh(void **state)
{
    (void)state;
    write_process("+1 minute", 0);
    aws_config *cfg = load_ok(NULL);          /* run 1 */
    expect_creds(cfg, "AKIDPROC2", "procsecret2", "proctoken2", NULL);
    expect_creds(cfg, "AKIDPROC3", "procsecret3", "proctoken3", NULL);
    aws_config_free(cfg);
}

static void failed_refresh_keeps_valid_credentials(void **state)
{
    (void)state;
    write_process("+1 minute", 2);            /* run 2 on fails */
    aws_config *cfg = load_ok(NULL);
    expect_creds(cfg, "AKIDPROC1", "procsecret1", "proctoken1", NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/count", home);
    FILE *f = fopen(path, "r");
    int runs = 0;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &runs), 1);
    fclose(f);
    assert_int_equal(runs, 2);                /* it did try */
    aws_config_free(cfg);
}

typedef struct {
    aws_config *cfg;
    int ok;
} thread_arg;

static void *hammer(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < 5; i++) {
        aws_credentials c;
        if (aws_config_credentials(a->cfg, &c, NULL) == AWS_OK &&
            strncmp(c.access_key_id, "AKIDPROC", 8) == 0 &&
            strncmp(c.secret_access_key, "procsecret", 10) == 0 &&
            strcmp(c.access_key_id + 8, c.secret_access_key + 10) == 0)
            a->ok++;
        aws_credentials_clear(&c);
    }
    return NULL;
}

static void concurrent_refresh_is_consistent(void **state)
{
    (void)state;
    write_process("+1 minute", 0);
    aws_config *cfg = load_ok(NULL);
    pthread_t t[4];
    thread_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thread_arg){cfg, 0};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].ok, 5);
    }
    /* 1 load + 20 refreshes, each a fresh numbered set */
    expect_creds(cfg, "AKIDPROC22", "procsecret22", "proctoken22", NULL);
    aws_config_free(cfg);
}

static void credentials_clear_zeroes(void **state)
{
    (void)state;
    aws_credentials c = {
        .access_key_id = strdup("A"), .secret_access_key = strdup("S"),
        .session_token = strdup("T"), .expiration = 5, .source = "x"};
    aws_credentials_clear(&c);
    assert_null(c.access_key_id);
    assert_null(c.secret_access_key);
    assert_null(c.session_token);
    assert_int_equal(c.expiration, 0);
    assert_null(c.source);
    aws_credentials_clear(&c);               /* twice is harmless */
    aws_credentials_clear(NULL);
}

/* ----------------------------------------------------------------- region */

static const char *region_with(const aws_options *o)
{
    static char r[64];
    aws_config *cfg = load_ok(o);
    snprintf(r, sizeof r, "%s", aws_config_region(cfg));
    aws_config_free(cfg);
    return r;
}

static void region_chain_order(void **state)
{
    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecretXYZ", 1);
    put(".aws/config", "[default]\nregion = eu-north-1\n");
    assert_string_equal(region_with(NULL), "eu-north-1");
    setenv("AWS_DEFAULT_REGION", "us-west-1", 1);
    assert_string_equal(region_with(NULL), "us-west-1");
    setenv("AWS_REGION", "us-west-2", 1);
    assert_string_equal(region_with(NULL), "us-west-2");
    aws_options o = {.region = "ca-central-1"};
    assert_string_equal(region_with(&o), "ca-central-1");
}

static void no_region(void **state)
{
    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecretXYZ", 1);
    const char *m = load_fails(NULL, AWS_ERR_NO_REGION);
    assert_non_null(strstr(m, "region="));
    assert_non_null(strstr(m, "AWS_REGION"));

    setenv("AWS_REGION", "US East 1", 1);
    m = load_fails(NULL, AWS_ERR_NO_REGION);
    assert_non_null(strstr(m, "AWS_REGION"));
    aws_options o = {.region = "us-east-1;rm"};
    load_fails(&o, AWS_ERR_NO_REGION);
}

/* --------------------------------------------------------------- endpoint */

static const char *endpoint_with(const aws_options *o)
{
    static char e[256];
    aws_config *cfg = load_ok(o);
    snprintf(e, sizeof e, "%s", aws_config_endpoint(cfg));
    aws_config_free(cfg);
    return e;
}

static void endpoint_chain_order(void **state)
{
    (void)state;
    env_keys();
    assert_string_equal(endpoint_with(NULL),
                        "https://dynamodb.us-east-1.amazonaws.com");
    aws_options cn = {.region = "cn-north-1"};
    assert_string_equal(endpoint_with(&cn),
                        "https://dynamodb.cn-north-1.amazonaws.com.cn");

    put(".aws/config", "[default]\nendpoint_url = http://profile:1/\n");
    assert_string_equal(endpoint_with(NULL), "http://profile:1");
    setenv("AWS_ENDPOINT_URL", "http://global:2", 1);
    assert_string_equal(endpoint_with(NULL), "http://global:2");
    put(".aws/config", "[default]\nendpoint_url = http://profile:1/\n"
        "services = local\n"
        "[services local]\n"
        "dynamodb =\n"
        "  endpoint_url = http://nested:5\n");
    assert_string_equal(endpoint_with(NULL), "http://nested:5");
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://ddb.example:3/", 1);
    assert_string_equal(endpoint_with(NULL), "https://ddb.example:3");
    aws_options o = {.endpoint = "HTTP://[::1]:8000"};
    assert_string_equal(endpoint_with(&o), "http://[::1]:8000");

    /* AWS_IGNORE_CONFIGURED_ENDPOINT_URLS drops all but endpoint= */
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    assert_string_equal(endpoint_with(NULL),
                        "https://dynamodb.us-east-1.amazonaws.com");
    assert_string_equal(endpoint_with(&o), "http://[::1]:8000");
}

static void bad_endpoint(void **state)
{
    (void)state;
    env_keys();
    static const char *const bad[] = {
        "localhost:8000", "ftp://host", "http://", "http:///", "http://h//",
        "http://h:0", "http://h:99999", "http://h:80x", "http://h/path",
        "http://h?x=1", "http://ho st", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        aws_options o = {.endpoint = bad[i]};
        if (!*bad[i]) {
            setenv("AWS_ENDPOINT_URL", "not a url", 1);
            o.endpoint = NULL;
        }
        const char *m = load_fails(&o, AWS_ERR_BAD_ENDPOINT);
        assert_non_null(strstr(m, "http"));
        if (*bad[i])
            assert_non_null(strstr(m, bad[i]));
        else
            assert_non_null(strstr(m, "AWS_ENDPOINT_URL"));
    }
    aws_options o = {.endpoint = "https://user:endpointpass@host"};
    load_fails(&o, AWS_ERR_BAD_ENDPOINT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(env_credentials),
        T(env_credentials_with_token),
        T(env_one_key_only_is_an_error),
        T(nothing_found_says_what_was_tried),
        T(profile_from_credentials_file),
        T(profile_section_in_config_file),
        T(credentials_file_beats_config_file),
        T(aws_profile_selects_profile),
        T(env_beats_profile_unless_explicit),
        T(unknown_profile),
        T(custom_file_locations),
        T(malformed_file),
        T(unsupported_profiles),
        T(process_success),
        T(process_plain_json),
        T(process_failure),
        T(process_bad_json),
        T(process_expiration_formats),
        T(expiring_process_credentials_refresh),
        T(failed_refresh_keeps_valid_credentials),
        T(concurrent_refresh_is_consistent),
        T(credentials_clear_zeroes),
        T(region_chain_order),
        T(no_region),
        T(endpoint_chain_order),
        T(bad_endpoint),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
