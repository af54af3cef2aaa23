/* test_text.c — the lock file text (SPEC §5): its lines, its quoting, and
 * that /bin/sh sourcing it gets the exact values back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/text.h"

static void self_text_has_every_field(void **state)
{
    lk_text_fields f = {.name = "deploy", .host = "web-1",
        .version = "dabbbfde-93cb-47f8-a249-fbae84c4a5e3", .lease_s = 20,
        .self = true, .state = "held", .pid = 4242,
        .note = "deploying 1.4.2"};
    size_t len = 0;
    (void)state;
    char *t = lk_text_format(&f, &len);
    assert_non_null(t);
    assert_string_equal(t,
        "name=deploy\n"
        "host=web-1\n"
        "version=dabbbfde-93cb-47f8-a249-fbae84c4a5e3\n"
        "lease=20\n"
        "owner=self\n"
        "state=held\n"
        "pid=4242\n"
        "note=\"deploying 1.4.2\"\n");
    assert_int_equal(len, strlen(t));
    free(t);
}

static void other_text_has_no_pid(void **state)
{
    lk_text_fields f = {.name = "a/b", .host = "db 2", .version = "v",
        .lease_s = 30, .self = false, .state = "held", .pid = 77};
    (void)state;
    char *t = lk_text_format(&f, NULL);
    assert_non_null(t);
    assert_string_equal(t, "name=a/b\nhost=\"db 2\"\nversion=v\nlease=30\n"
                           "owner=other\nstate=held\nnote=\n");
    free(t);
}

static void quoting_escapes_shell_specials(void **state)
{
    (void)state;
    char *q = lk_text_quote("a\"b\\c$d`e");
    assert_string_equal(q, "\"a\\\"b\\\\c\\$d\\`e\"");
    free(q);
    q = lk_text_quote("two\nlines\r\x01");
    assert_string_equal(q, "\"two\\nlines\\r\\x01\"");
    free(q);
    q = lk_text_quote("~root");
    assert_string_equal(q, "\"~root\"");
    free(q);
    q = lk_text_quote("");
    assert_string_equal(q, "\"\"");
    free(q);
}

/* Source the text with /bin/sh and print one variable. */
static char *sh_source(const char *text, const char *var)
{
    char path[] = "/tmp/lynk-text-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sh -c '. %s && printf %%s \"$%s\"'", path, var);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[4096];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    unlink(path);
    return out;
}

static void shell_sources_exact_values(void **state)
{
    const char *note = "it's \"$HOME\" `id` \\ ; rm -rf / # $(x) & | < > * ?";
    lk_text_fields f = {.name = "job;x", .host = "h $USER", .version = "v1",
        .lease_s = 20, .self = true, .state = "expiring", .pid = 1,
        .note = note};
    (void)state;
    char *t = lk_text_format(&f, NULL);
    assert_non_null(t);
    assert_string_equal(sh_source(t, "note"), note);
    assert_string_equal(sh_source(t, "name"), "job;x");
    assert_string_equal(sh_source(t, "host"), "h $USER");
    assert_string_equal(sh_source(t, "state"), "expiring");
    assert_string_equal(sh_source(t, "lease"), "20");
    free(t);
}

static void newline_in_note_keeps_one_line_per_key(void **state)
{
    lk_text_fields f = {.name = "n", .host = "h", .version = "v",
        .lease_s = 20, .self = false, .note = "line1\nhost=evil"};
    (void)state;
    char *t = lk_text_format(&f, NULL);
    assert_non_null(t);
    int lines = 0;
    for (char *p = t; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 7);
    assert_string_equal(sh_source(t, "host"), "h");
    assert_string_equal(sh_source(t, "note"), "line1\\nhost=evil");
    free(t);
}

static void note_from_write(void **state)
{
    char *n = NULL;
    (void)state;
    assert_int_equal(lk_text_note_from_write("deploying 1.4.2\n", 16, 1024, &n), 0);
    assert_string_equal(n, "deploying 1.4.2");
    free(n);
    assert_int_equal(lk_text_note_from_write("x\r\n\n", 4, 1024, &n), 0);
    assert_string_equal(n, "x");
    free(n);
    assert_int_equal(lk_text_note_from_write("\n", 1, 1024, &n), 0);
    assert_string_equal(n, "");
    free(n);
    char big[1100];
    memset(big, 'a', sizeof big);
    assert_int_equal(lk_text_note_from_write(big, 1025, 1024, &n), -EFBIG);
    assert_null(n);
    assert_int_equal(lk_text_note_from_write(big, 1024, 1024, &n), 0);
    assert_int_equal(strlen(n), 1024);
    free(n);
    assert_int_equal(lk_text_note_from_write("a\xff", 2, 1024, &n), -EILSEQ);
    assert_int_equal(lk_text_note_from_write("a\0b", 3, 1024, &n), -EILSEQ);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(self_text_has_every_field),
        cmocka_unit_test(other_text_has_no_pid),
        cmocka_unit_test(quoting_escapes_shell_specials),
        cmocka_unit_test(shell_sources_exact_values),
        cmocka_unit_test(newline_in_note_keeps_one_line_per_key),
        cmocka_unit_test(note_from_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
