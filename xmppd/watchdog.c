/* watchdog.c - see watchdog.h. */
#include "watchdog.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

/* select() limits a worker to fds below 1024 anyway. */
#define MAX_FD 1024

static atomic_bool tracked[MAX_FD];
static _Atomic int64_t pass_started_ms; /* 0: not inside a pass */
static atomic_bool running;
static int64_t limit_ms;
static pthread_t thread;

static void *watch(void *arg)
{
    (void)arg;
    while (atomic_load(&running)) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t started = atomic_load(&pass_started_ms);
        if (!started || util_mono_ms() - started < limit_ms)
            continue;
        int cut = 0;
        for (int fd = 0; fd < MAX_FD; fd++)
            if (atomic_exchange(&tracked[fd], false)) {
                shutdown(fd, SHUT_RDWR);
                cut++;
            }
        /* One write(2): no lock needed against the main thread's lines. */
        char line[160];
        int n = snprintf(line, sizeof(line),
                         "WARN watchdog libstrophe_stalled ms=%lld sockets_cut=%d\n",
                         (long long)(util_mono_ms() - started), cut);
        if (n > 0)
            fwrite(line, 1, (size_t)n, stderr);
        atomic_store(&pass_started_ms, util_mono_ms()); /* don't repeat at once */
    }
    return NULL;
}

bool watchdog_start(int64_t stall_ms)
{
    limit_ms = stall_ms;
    atomic_store(&running, true);
    if (pthread_create(&thread, NULL, watch, NULL) != 0) {
        atomic_store(&running, false);
        return false;
    }
    return true;
}

void watchdog_stop(void)
{
    if (!atomic_exchange(&running, false))
        return;
    pthread_join(thread, NULL);
}

void watchdog_enter(void)
{
    atomic_store(&pass_started_ms, util_mono_ms());
}

void watchdog_leave(void)
{
    atomic_store(&pass_started_ms, 0);
}

void watchdog_track(int fd)
{
    if (fd >= 0 && fd < MAX_FD)
        atomic_store(&tracked[fd], true);
}

void watchdog_untrack(int fd)
{
    if (fd >= 0 && fd < MAX_FD)
        atomic_store(&tracked[fd], false);
}
