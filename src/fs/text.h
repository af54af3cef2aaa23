/* fs/text.h — the text of a lock file (SPEC.md §5): `key=value` lines a
 * shell can source, values quoted as in os-release when needed. */
#ifndef LK_FS_TEXT_H
#define LK_FS_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct lk_text_fields {
    const char *name;      /* the lockKey */
    const char *host;
    const char *version;
    long long lease_s;
    bool self;             /* held through this mount */
    const char *state;     /* "held", "expiring", "lost", "released" */
    pid_t pid;             /* self only; 0 = not shown */
    const char *note;      /* NULL or "" = empty */
} lk_text_fields;

/* Append value to a malloc'd buffer, quoted for sh when it needs to be:
 * bare if it is made only of [A-Za-z0-9_.,:/+@%-] (and not empty),
 * else in double quotes with `"`, `\`, `$` and backquote escaped by a
 * backslash; a newline becomes `\n`, a carriage return `\r` and other
 * control characters `\xHH`, so every key stays on one line. Returns a new
 * string (caller frees) or NULL on allocation failure. */
char *lk_text_quote(const char *value);

/* The whole text, NUL-terminated, malloc'd (caller frees); *len (if not
 * NULL) gets its length. NULL on allocation failure. */
char *lk_text_format(const lk_text_fields *f, size_t *len);

/* The note a holder wrote: buf[0..len) with trailing newlines (LF or CRLF)
 * removed, into a malloc'd string. Returns 0, -EFBIG (over max bytes after
 * trimming), -EILSEQ (not UTF-8 or contains NUL), -ENOMEM. */
int lk_text_note_from_write(const char *buf, size_t len, size_t max,
                            char **out);

#endif
