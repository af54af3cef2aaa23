/* clock.c — owns the monotonic clock and the random source. */
#include "clock.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <time.h>

int64_t lk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lk_sleep_until_ms(int64_t deadline_ms)
{
    struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};
    while (deadline_ms > lk_now_ms() &&
           clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

int lk_uuid4(char out[LK_UUID_LEN + 1])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, LK_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

uint64_t lk_random_below(uint64_t bound)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
        v = (uint64_t)lk_now_ms() * 6364136223846793005ULL;
    return v % bound;
}
