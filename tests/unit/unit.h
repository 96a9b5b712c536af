/* unit.h - a tiny unit-test framework.
 *
 *   TEST(frame_complete) { CHECK(x == 1); CHECK_EQ_STR(s, "a"); }
 *   int main(void) { RUN(frame_complete); return unit_done(); }
 *
 * A failed check prints file:line and what failed, then the test goes on.
 * Checks are expressions yielding whether they held, so a test can bail out
 * when going on makes no sense:  if (!CHECK(p != NULL)) return;
 * unit_done() prints the last line, "N passed, N failed" (counting tests),
 * and returns the exit status: 0 only when every test passed. */
#ifndef IMB_UNIT_H
#define IMB_UNIT_H

#include <stdbool.h>

#define TEST(name) static void name(void)
#define RUN(name) unit_run(#name, name)

#define CHECK(cond) unit_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ_STR(got, want) \
    unit_check_str((got), (want), __FILE__, __LINE__, #got, #want)
#define CHECK_EQ_INT(got, want) \
    unit_check_int((long long)(got), (long long)(want), __FILE__, __LINE__, \
                   #got, #want)

void unit_run(const char *name, void (*fn)(void));
int unit_done(void);

bool unit_check(bool ok, const char *file, int line, const char *expr);
/* NULL equals only NULL. */
bool unit_check_str(const char *got, const char *want, const char *file,
                    int line, const char *gexpr, const char *wexpr);
bool unit_check_int(long long got, long long want, const char *file, int line,
                    const char *gexpr, const char *wexpr);

/* A redis-server of the test's own (loopback, a free port, no persistence),
 * for tests of modules whose contract is with Redis: started, and a plain
 * client connected to it (NULL if it would not start; *port its port).
 * unit_redis_stop(client) frees the client and stops the server. */
struct redisContext;
struct redisContext *unit_redis_start(int *port);
void unit_redis_stop(struct redisContext *client);

#endif
