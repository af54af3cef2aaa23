/* test_clock.c — the monotonic clock and UUID v4 generator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util/clock.h"

static void uuid_has_v4_shape(void **state)
{
    char a[LK_UUID_LEN + 1], b[LK_UUID_LEN + 1];
    (void)state;
    assert_int_equal(lk_uuid4(a), 0);
    assert_int_equal(lk_uuid4(b), 0);
    assert_int_equal(strlen(a), LK_UUID_LEN);
    assert_string_not_equal(a, b);
    for (int i = 0; i < LK_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
}

static void monotonic_sleep_reaches_deadline(void **state)
{
    (void)state;
    int64_t t0 = lk_now_ms();
    lk_sleep_until_ms(t0 + 30);
    int64_t t1 = lk_now_ms();
    assert_true(t1 - t0 >= 30);
    lk_sleep_until_ms(t0); /* a past deadline returns at once */
    assert_true(lk_now_ms() - t1 < 20);
}

static void random_below_stays_in_range(void **state)
{
    (void)state;
    int seen[4] = {0};
    for (int i = 0; i < 400; i++) {
        uint64_t v = lk_random_below(4);
        assert_true(v < 4);
        seen[v]++;
    }
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uuid_has_v4_shape),
        cmocka_unit_test(monotonic_sleep_reaches_deadline),
        cmocka_unit_test(random_below_stays_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
