/* test_names.c — file name <-> lockKey mapping and UTF-8 checks (SPEC §4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "fs/names.h"

static void encode_escapes_percent_and_slash(void **state)
{
    char name[LK_FNAME_MAX + 1];
    (void)state;
    assert_int_equal(lk_fname_encode("deploy", name, sizeof name), 0);
    assert_string_equal(name, "deploy");
    assert_int_equal(lk_fname_encode("a/b%c", name, sizeof name), 0);
    assert_string_equal(name, "a%2Fb%25c");
    assert_int_equal(lk_fname_encode("/", name, sizeof name), 0);
    assert_string_equal(name, "%2F");
    assert_int_equal(lk_fname_encode("%2F", name, sizeof name), 0);
    assert_string_equal(name, "%252F");
}

static void decode_reverses_encode(void **state)
{
    const char *keys[] = {"deploy", "a/b%c", "%", "%25", "//x//", "50%",
                          "caf\xc3\xa9/\xe2\x82\xac", "%2F%2f", "..x", "."
                          "a"};
    char name[LK_FNAME_MAX + 1], key[LK_FKEY_MAX + 1];
    (void)state;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        assert_int_equal(lk_fname_encode(keys[i], name, sizeof name), 0);
        assert_int_equal(lk_fname_decode(name, key, sizeof key), 0);
        assert_string_equal(key, keys[i]);
    }
}

static void decode_other_percent_is_literal(void **state)
{
    char key[64];
    (void)state;
    assert_int_equal(lk_fname_decode("50%", key, sizeof key), 0);
    assert_string_equal(key, "50%");
    assert_int_equal(lk_fname_decode("%41%2", key, sizeof key), 0);
    assert_string_equal(key, "%41%2");
    assert_int_equal(lk_fname_decode("a%2fb", key, sizeof key), 0);
    assert_string_equal(key, "a/b");
    assert_int_equal(lk_fname_decode("%%25", key, sizeof key), 0);
    assert_string_equal(key, "%%");
}

static void invalid_utf8_is_eilseq(void **state)
{
    char key[64], name[LK_FNAME_MAX + 1];
    (void)state;
    assert_int_equal(lk_fname_decode("bad\xff", key, sizeof key), -EILSEQ);
    assert_int_equal(lk_fname_decode("\xc0\xaf", key, sizeof key), -EILSEQ); /* overlong / */
    assert_int_equal(lk_fname_decode("\xed\xa0\x80", key, sizeof key), -EILSEQ); /* surrogate */
    assert_int_equal(lk_fname_decode("\xf4\x90\x80\x80", key, sizeof key), -EILSEQ); /* > U+10FFFF */
    assert_int_equal(lk_fname_decode("cut\xe2\x82", key, sizeof key), -EILSEQ);
    assert_int_equal(lk_fname_encode("x\x80", name, sizeof name), -EILSEQ);
    assert_true(lk_utf8_valid("\xf0\x9f\x94\x92 lock", 9));
    assert_false(lk_utf8_valid("a\0b", 3));
}

static void names_that_cannot_be_files(void **state)
{
    char key[LK_FKEY_MAX + 1], name[LK_FNAME_MAX + 1];
    char long_key[300];
    (void)state;
    assert_int_equal(lk_fname_decode("", key, sizeof key), -EINVAL);
    assert_int_equal(lk_fname_decode(".", key, sizeof key), -EINVAL);
    assert_int_equal(lk_fname_decode("..", key, sizeof key), -EINVAL);
    assert_int_equal(lk_fname_encode(".", name, sizeof name), -EINVAL);
    assert_int_equal(lk_fname_encode("", name, sizeof name), -EINVAL);

    memset(long_key, 'k', 255);
    long_key[255] = '\0';
    assert_int_equal(lk_fname_encode(long_key, name, sizeof name), 0);
    assert_int_equal(strlen(name), 255);
    long_key[255] = 'k';
    long_key[256] = '\0';
    assert_int_equal(lk_fname_encode(long_key, name, sizeof name), -ENAMETOOLONG);
    /* 100 slashes: 100 bytes as a key, 300 as a name */
    memset(long_key, '/', 100);
    long_key[100] = '\0';
    assert_int_equal(lk_fname_encode(long_key, name, sizeof name), -ENAMETOOLONG);
    assert_int_equal(lk_fname_decode("abcdef", key, 4), -ENAMETOOLONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_escapes_percent_and_slash),
        cmocka_unit_test(decode_reverses_encode),
        cmocka_unit_test(decode_other_percent_is_literal),
        cmocka_unit_test(invalid_utf8_is_eilseq),
        cmocka_unit_test(names_that_cannot_be_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
