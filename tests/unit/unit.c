/* unit.c - see unit.h. */
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

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

/* ---- a redis-server for the test ---------------------------------------- */

static pid_t redis_pid = -1;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

struct redisContext *unit_redis_start(int *port_out)
{
    int port = free_port();
    char text[16];
    snprintf(text, sizeof(text), "%d", port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", text,
               "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && redis_pid > 0; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        if (c && !c->err) {
            *port_out = port;
            return c;
        }
        redisFree(c);
        usleep(50 * 1000);
    }
    return NULL;
}

void unit_redis_stop(struct redisContext *client)
{
    if (client)
        redisFree(client);
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}
