/* test_util.c - the string helpers of common/util.c that stand in for
 * snprintf on the message path: util_cat says what snprintf("%s%s...")
 * says and leaves the same bytes, util_i64 writes what "%lld" writes. */
#include "unit.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

TEST(cat_writes_what_snprintf_writes_at_every_size)
{
    const char *a = "imb", *b = ":", *c = "w", *d = ":", *e = "br0-w1.0";
    char want[64], got[64];
    int full = snprintf(want, sizeof(want), "%s%s%s%s%s", a, b, c, d, e);
    for (size_t n = 1; n <= (size_t)full + 2; n++) {
        memset(got, 'X', sizeof(got));
        memset(want, 'X', sizeof(want));
        int len = snprintf(want, n, "%s%s%s%s%s", a, b, c, d, e);
        bool fits = util_cat(got, n, a, b, c, d, e, (char *)NULL);
        CHECK_EQ_INT(fits, len >= 0 && (size_t)len < n);
        CHECK_EQ_STR(got, want);
        /* Nothing written past n. */
        CHECK_EQ_INT(got[n], 'X');
    }
}

TEST(cat_of_nothing_and_of_empty_strings)
{
    char out[4] = "abc";
    CHECK(util_cat(out, sizeof(out), (char *)NULL));
    CHECK_EQ_STR(out, "");
    CHECK(util_cat(out, sizeof(out), "", "", "ab", "", (char *)NULL));
    CHECK_EQ_STR(out, "ab");
    CHECK(!util_cat(out, 1, "a", (char *)NULL));
    CHECK_EQ_STR(out, "");
}

TEST(i64_writes_what_printf_writes)
{
    const int64_t v[] = {0, 1, -1, 9, 10, -10, 99, 100, 123456789, -987654321,
                         1796542769468, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN,
                         INT64_MAX - 1, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char want[32], got[UTIL_I64_MAX + 1];
        memset(got, 'X', sizeof(got));
        int len = snprintf(want, sizeof(want), "%" PRId64, v[i]);
        CHECK_EQ_INT((long long)util_i64(got, v[i]), len);
        CHECK_EQ_STR(got, want);
        CHECK_EQ_INT(got[UTIL_I64_MAX], 'X');
    }
}

int main(void)
{
    RUN(cat_writes_what_snprintf_writes_at_every_size);
    RUN(cat_of_nothing_and_of_empty_strings);
    RUN(i64_writes_what_printf_writes);
    return unit_done();
}
