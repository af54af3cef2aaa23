/* clock.h — monotonic time and fresh random identifiers (UUID v4). The lock
 * protocol never trusts wall clocks: every deadline is on lk_now_ms(). */
#ifndef LK_CLOCK_H
#define LK_CLOCK_H

#include <stdint.h>

#define LK_UUID_LEN 36

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t lk_now_ms(void);

/* Sleep until the monotonic deadline (or not at all if it passed). */
void lk_sleep_until_ms(int64_t deadline_ms);

/* A random RFC 4122 version 4 UUID, lower case, NUL-terminated. Returns 0,
 * or -1 if the system random source failed. */
int lk_uuid4(char out[LK_UUID_LEN + 1]);

/* A uniformly random integer in [0, bound) (bound > 0). */
uint64_t lk_random_below(uint64_t bound);

#endif
