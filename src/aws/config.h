/* aws/config.h — where requests go and who signs them: the AWS configuration
 * chain of SPEC.md §2 (credentials, region, endpoint), resolved like every AWS
 * tool resolves it. Nothing here ever prints a secret. */
#ifndef AWS_CONFIG_H
#define AWS_CONFIG_H

#include <stdint.h>

#define AWS_ERRLEN 512

typedef enum {
    AWS_OK = 0,
    AWS_ERR_NO_CREDENTIALS, /* the whole chain found nothing */
    AWS_ERR_NO_REGION,      /* no region= / AWS_REGION / profile region */
    AWS_ERR_BAD_FILE,       /* a credentials or config file is malformed */
    AWS_ERR_NO_PROFILE,     /* the named profile is in neither file */
    AWS_ERR_PROCESS,        /* credential_process failed or printed bad JSON */
    AWS_ERR_BAD_ENDPOINT,   /* endpoint is not an http(s) URL */
    AWS_ERR_UNSUPPORTED,    /* a source this build cannot use yet */
    AWS_ERR_NOMEM
} aws_code;

/* The one error type of this layer: a code and one line naming the cause
 * and the fix, e.g. "no AWS region: set region= or AWS_REGION". */
typedef struct aws_error {
    aws_code code;
    char msg[AWS_ERRLEN];
} aws_error;

/* Explicit choices (mount options / command-line flags); NULL = use chain. */
typedef struct aws_options {
    const char *region;
    const char *endpoint;
    const char *profile;
} aws_options;

typedef struct aws_credentials {
    char *access_key_id;
    char *secret_access_key;
    char *session_token;  /* NULL when none */
    int64_t expiration;   /* Unix seconds; 0 = never expires */
    const char *source;   /* static text, e.g. "environment" */
} aws_credentials;

typedef struct aws_config aws_config;

/* Resolve region, endpoint and a first set of credentials. On failure *out
 * is NULL and err says why in one line. */
aws_code aws_config_load(const aws_options *opts, aws_config **out,
                         aws_error *err);

const char *aws_config_region(const aws_config *cfg);
/* "scheme://host[:port]" with no trailing slash. */
const char *aws_config_endpoint(const aws_config *cfg);
/* The profile in use ("default" when none was named). */
const char *aws_config_profile(const aws_config *cfg);

/* Thread-safe: a private copy of the current credentials, refreshed first
 * when they expire within five minutes. Free it with aws_credentials_clear. */
aws_code aws_config_credentials(aws_config *cfg, aws_credentials *out,
                                aws_error *err);
void aws_credentials_clear(aws_credentials *creds);

void aws_config_free(aws_config *cfg);

#endif
