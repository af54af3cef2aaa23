/* log.c — owns where log lines go (stderr or syslog) and which are kept. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

static const char *log_ident = "lynkfs";
static lk_log_level log_max = LK_LOG_WARN;
static bool log_syslog;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void lk_log_init(const char *ident, lk_log_level max, bool use_syslog)
{
    log_ident = ident;
    log_max = max;
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(ident, LOG_PID, LOG_DAEMON);
}

void lk_log_set_level(lk_log_level max)
{
    log_max = max;
}

bool lk_log_enabled(lk_log_level lvl)
{
    return lvl <= log_max;
}

void lk_log(lk_log_level lvl, const char *fmt, ...)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    static const char *const tag[] = {"error", "warning", "info", "debug"};
    char line[2048];
    va_list ap;

    if (!lk_log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (log_syslog) {
        syslog(prio[lvl], "%s", line);
        return;
    }
    pthread_mutex_lock(&log_lock);
    if (lvl == LK_LOG_ERROR)
        fprintf(stderr, "%s: %s\n", log_ident, line);
    else
        fprintf(stderr, "%s: %s: %s\n", log_ident, tag[lvl], line);
    pthread_mutex_unlock(&log_lock);
}
