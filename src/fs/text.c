/* fs/text.c — owns the lock file text: formatting and quoting of fields,
 * and turning what a holder wrote into a note. */
#include "fs/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/names.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static bool bare_ok(const char *v)
{
    if (!*v)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("_.,:/+@%-", *p))
            continue;
        return false;
    }
    return true;
}

static void sb_quoted(sbuf *b, const char *v)
{
    if (bare_ok(v)) {
        sb_str(b, v);
        return;
    }
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\' || *p == '$' || *p == '`') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_add(b, esc, 2);
        } else if (*p == '\n') {
            sb_add(b, "\\n", 2);
        } else if (*p == '\r') {
            sb_add(b, "\\r", 2);
        } else if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            sb_add(b, esc, 4);
        } else {
            sb_add(b, (const char *)p, 1);
        }
    }
    sb_add(b, "\"", 1);
}

char *lk_text_quote(const char *value)
{
    sbuf b = {0};

    sb_quoted(&b, value ? value : "");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static void sb_field(sbuf *b, const char *key, const char *value)
{
    sb_str(b, key);
    sb_add(b, "=", 1);
    if (value && *value)
        sb_quoted(b, value);
    sb_add(b, "\n", 1);
}

char *lk_text_format(const lk_text_fields *f, size_t *len)
{
    sbuf b = {0};
    char num[32];

    sb_field(&b, "name", f->name);
    sb_field(&b, "host", f->host);
    sb_field(&b, "version", f->version);
    snprintf(num, sizeof num, "%lld", f->lease_s);
    sb_field(&b, "lease", num);
    sb_field(&b, "owner", f->self ? "self" : "other");
    sb_field(&b, "state", f->state ? f->state : "held");
    if (f->self && f->pid > 0) {
        snprintf(num, sizeof num, "%ld", (long)f->pid);
        sb_field(&b, "pid", num);
    }
    sb_field(&b, "note", f->note);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

int lk_text_note_from_write(const char *buf, size_t len, size_t max,
                            char **out)
{
    *out = NULL;
    while (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
    }
    if (len > max)
        return -EFBIG;
    if (!lk_utf8_valid(buf, len))
        return -EILSEQ;
    char *s = malloc(len + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, buf, len);
    s[len] = '\0';
    *out = s;
    return 0;
}
