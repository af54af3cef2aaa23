/* fs/names.h — file names <-> lock keys (SPEC.md §4): a file name is the
 * lockKey with `%` written `%25` and `/` written `%2F`. Only those two
 * escapes are decoded (`%2f` too); any other `%` is a literal percent sign.
 * Keys and names must be valid UTF-8. */
#ifndef LK_FS_NAMES_H
#define LK_FS_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define LK_FNAME_MAX 255   /* longest file name the kernel passes */
#define LK_FKEY_MAX 1024   /* longest lockKey the engine accepts */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF,
 * no NUL byte inside len. */
bool lk_utf8_valid(const char *s, size_t len);

/* File name -> lockKey into key[keysz]. Returns 0, or a negative errno:
 * -EINVAL (empty, "." or ".."), -EILSEQ (not UTF-8, or decodes to a key
 * that is not), -ENAMETOOLONG (does not fit keysz). */
int lk_fname_decode(const char *name, char *key, size_t keysz);

/* lockKey -> file name into name[namesz] (namesz >= LK_FNAME_MAX + 1 for a
 * name of any legal length). Returns 0, or a negative errno: -EINVAL (empty,
 * or encodes to "." or ".."), -EILSEQ (not UTF-8), -ENAMETOOLONG (over
 * LK_FNAME_MAX bytes or over namesz - 1). */
int lk_fname_encode(const char *key, char *name, size_t namesz);

#endif
