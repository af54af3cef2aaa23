/* fs/names.c — owns the mapping between file names and lock keys, and the
 * UTF-8 check every name goes through. */
#include "fs/names.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Length of the UTF-8 sequence at s (at most avail bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;

    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 0x07; min = 0x10000; }
    else
        return 0;
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

bool lk_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

static bool is_dot_name(const char *s)
{
    return strcmp(s, ".") == 0 || strcmp(s, "..") == 0;
}

int lk_fname_decode(const char *name, char *key, size_t keysz)
{
    size_t len = strlen(name), o = 0;

    if (len == 0 || is_dot_name(name))
        return -EINVAL;
    if (!lk_utf8_valid(name, len))
        return -EILSEQ;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '%' && i + 2 < len && name[i + 1] == '2') {
            char h = name[i + 2];
            if (h == '5') { c = '%'; i += 2; }
            else if (h == 'F' || h == 'f') { c = '/'; i += 2; }
        }
        if (o + 1 >= keysz)
            return -ENAMETOOLONG;
        key[o++] = c;
    }
    key[o] = '\0';
    return 0;
}

int lk_fname_encode(const char *key, char *name, size_t namesz)
{
    size_t len = strlen(key), o = 0;

    if (len == 0)
        return -EINVAL;
    if (!lk_utf8_valid(key, len))
        return -EILSEQ;
    for (size_t i = 0; i < len; i++) {
        const char *piece = NULL;
        char one[2] = {key[i], '\0'};
        if (key[i] == '%')
            piece = "%25";
        else if (key[i] == '/')
            piece = "%2F";
        else
            piece = one;
        size_t pl = strlen(piece);
        if (o + pl > LK_FNAME_MAX || o + pl + 1 > namesz)
            return -ENAMETOOLONG;
        memcpy(name + o, piece, pl);
        o += pl;
    }
    name[o] = '\0';
    if (is_dot_name(name))
        return -EINVAL;
    return 0;
}
