/* unit.c - see unit.h. */
#include "unit.h"

#include <stdio.h>
#include <string.h>

static const char *current = "(no test)";
static int checks_failed_in_test;
static int tests_passed, tests_failed;

void unit_run(const char *name, void (*fn)(void))
{
    current = name;
    checks_failed_in_test = 0;
    fn();
    fflush(stderr);
    if (checks_failed_in_test) {
        tests_failed++;
        printf("FAIL %s (%d failed check%s)\n", name, checks_failed_in_test,
               checks_failed_in_test == 1 ? "" : "s");
    } else {
        tests_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

int unit_done(void)
{
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    fflush(stdout);
    return tests_failed ? 1 : 0;
}

static void fail_head(const char *file, int line)
{
    checks_failed_in_test++;
    printf("%s:%d: in %s: ", file, line, current);
}

bool unit_check(bool ok, const char *file, int line, const char *expr)
{
    if (!ok) {
        fail_head(file, line);
        printf("CHECK(%s) failed\n", expr);
    }
    return ok;
}

bool unit_check_str(const char *got, const char *want, const char *file,
                    int line, const char *gexpr, const char *wexpr)
{
    bool ok = (got && want) ? strcmp(got, want) == 0 : got == want;
    if (!ok) {
        fail_head(file, line);
        printf("%s == %s failed\n    got:  %s%s%s\n    want: %s%s%s\n", gexpr,
               wexpr, got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
               want ? "\"" : "", want ? want : "NULL", want ? "\"" : "");
    }
    return ok;
}

bool unit_check_int(long long got, long long want, const char *file, int line,
                    const char *gexpr, const char *wexpr)
{
    if (got != want) {
        fail_head(file, line);
        printf("%s == %s failed\n    got:  %lld\n    want: %lld\n", gexpr,
               wexpr, got, want);
    }
    return got == want;
}
