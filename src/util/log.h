/* log.h — leveled logging, to stderr in the foreground or syslog once
 * daemonized. Every message of lynkfs goes through here; callers never pass
 * a secret (keys, tokens, signatures) to it. */
#ifndef LK_LOG_H
#define LK_LOG_H

#include <stdbool.h>

typedef enum {
    LK_LOG_ERROR = 0,
    LK_LOG_WARN,
    LK_LOG_INFO,
    LK_LOG_DEBUG
} lk_log_level;

/* ident: program name shown before each line; max: most verbose level kept. */
void lk_log_init(const char *ident, lk_log_level max, bool use_syslog);
void lk_log_set_level(lk_log_level max);
bool lk_log_enabled(lk_log_level lvl);
void lk_log(lk_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define lk_error(...) lk_log(LK_LOG_ERROR, __VA_ARGS__)
#define lk_warn(...)  lk_log(LK_LOG_WARN, __VA_ARGS__)
#define lk_info(...)  lk_log(LK_LOG_INFO, __VA_ARGS__)
#define lk_debug(...) lk_log(LK_LOG_DEBUG, __VA_ARGS__)

#endif
