/* main.c - imb-xmppd: options, then a supervisor that forks the worker
 * processes, restarts any that die, and forwards TERM/INT/HUP to them. */
#include "log.h"
#include "schema.h"
#include "util.h"
#include "xmppd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256

#define T struct xmppd_cfg
static const struct opt options[] = {
    COMMON_OPTS(T, common),
    {"xmpp_host", OPT_STR, offsetof(T, xmpp_host), "127.0.0.1", 0, 0, 0,
     "XMPP server address (an IP avoids blocking DNS lookups)"},
    {"xmpp_port", OPT_INT, offsetof(T, xmpp_port), "5222", 1, 65535, 0,
     "XMPP server client port"},
    {"xmpp_tls", OPT_STR, offsetof(T, xmpp_tls), "required", 0, 0, 0,
     "required (verified) | trust (unverified, tests only) | disabled"},
    {"xmpp_cafile", OPT_STR, offsetof(T, xmpp_cafile), "", 0, 0, 0,
     "CA file to verify the XMPP server (empty: system store)"},
    {"xmpp_resource", OPT_STR, offsetof(T, xmpp_resource), "phone", 0, 0, 0,
     "XMPP resource of every session"},
    {"workers", OPT_INT, offsetof(T, workers), "2", 1, MAX_WORKERS, 0,
     "worker processes"},
    {"max_sessions", OPT_INT, offsetof(T, max_sessions), "800", 1, 900, 0,
     "XMPP sessions per worker (select() caps a process near 900)"},
    {"connect_timeout", OPT_INT, offsetof(T, connect_timeout), "15", 1, 300, 0,
     "seconds for an XMPP login to complete"},
    {"resume_window", OPT_INT, offsetof(T, resume_window), "120", 0, 86400, 0,
     "seconds a session outlives its last phone socket (0: close at once)"},
    {"lease_ms", OPT_INT, offsetof(T, lease_ms), "10000", 1000, 600000, 0,
     "session lease time in ms, renewed every third of it"},
    {"inbox_ttl", OPT_INT, offsetof(T, inbox_ttl), "86400", 10, 31536000, 0,
     "seconds a message waits in Redis for a phone to ack it"},
    {"inbox_max", OPT_INT, offsetof(T, inbox_max), "1000", 1, 1000000, 0,
     "messages kept per user for phones that are away"},
    {"bridge_id", OPT_STR, offsetof(T, bridge_id), "", 0, 0, 0,
     "this bridge's id on the bus (empty: random)"},
};
#undef T

static volatile sig_atomic_t got_term, got_hup, got_chld;

static void on_signal(int sig)
{
    if (sig == SIGCHLD)
        got_chld = 1;
    else if (sig == SIGHUP)
        got_hup = 1;
    else
        got_term = 1;
}

struct child {
    pid_t pid;
    int generation;     /* bumped at each restart: a new worker id */
    int64_t started_ms;
};

static pid_t spawn(const struct xmppd_cfg *cfg, const char *bridge_id, int index,
                   int generation, const sigset_t *orig)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Worker: die with the supervisor, take signals through libevent. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigprocmask(SIG_SETMASK, orig, NULL);
    int rc = worker_main(cfg, bridge_id, index, generation);
    /* exit, not _exit: LeakSanitizer checks the worker at exit. The parent
     * wrote nothing to stdio buffers that could be flushed twice. */
    exit(rc);
}

static bool check_cfg(const struct xmppd_cfg *cfg, char *err, size_t n)
{
    if (strcmp(cfg->xmpp_tls, "required") && strcmp(cfg->xmpp_tls, "trust") &&
        strcmp(cfg->xmpp_tls, "disabled")) {
        snprintf(err, n, "xmpp_tls must be required, trust or disabled");
        return false;
    }
    if (*cfg->bridge_id && !schema_id_ok(cfg->bridge_id, 40)) {
        snprintf(err, n, "bridge_id must be 1..40 chars of [A-Za-z0-9._:-]");
        return false;
    }
    if (!*cfg->xmpp_resource || strchr(cfg->xmpp_resource, '/')) {
        snprintf(err, n, "xmpp_resource must be non-empty, without '/'");
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_name("xmppd");
    struct xmppd_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    char err[512];
    enum config_status st = config_load(options, ARRAY_LEN(options), &cfg, argc,
                                        argv, false, err, sizeof(err));
    if (st == CONFIG_OK && (!config_check_common(&cfg.common, err, sizeof(err)) ||
                            !check_cfg(&cfg, err, sizeof(err))))
        st = CONFIG_ERROR;
    if (st != CONFIG_OK || config_is_check(argc, argv)) {
        if (st == CONFIG_ERROR)
            fprintf(stderr, "imb-xmppd: %s\n", err);
        else if (st == CONFIG_OK)
            printf("imb-xmppd: configuration ok\n");
        config_free(options, ARRAY_LEN(options), &cfg);
        return st == CONFIG_ERROR ? 2 : 0;
    }

    char bridge_id[48];
    if (*cfg.bridge_id)
        snprintf(bridge_id, sizeof(bridge_id), "%s", cfg.bridge_id);
    else {
        bridge_id[0] = 'b';
        util_random_hex(bridge_id + 1, 6);
    }

    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &orig);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    int n = (int)cfg.workers;
    struct child kids[MAX_WORKERS];
    for (int i = 0; i < n; i++) {
        kids[i].generation = 0;
        kids[i].pid = spawn(&cfg, bridge_id, i, 0, &orig);
        kids[i].started_ms = util_mono_ms();
    }
    LOG(INFO, "bridge_started", "bridge=%s workers=%d xmpp=%s:%ld tls=%s",
        bridge_id, n, cfg.xmpp_host, cfg.xmpp_port, cfg.xmpp_tls);

    bool stopping = false;
    int64_t stop_deadline = 0;
    int alive = n;
    while (alive > 0) {
        if (stopping) {
            /* Wait with a deadline; then kill what is left. */
            struct timespec ts = {0, 100 * 1000 * 1000};
            sigprocmask(SIG_SETMASK, &orig, NULL);
            nanosleep(&ts, NULL);
            sigprocmask(SIG_BLOCK, &block, NULL);
            if (util_mono_ms() > stop_deadline)
                for (int i = 0; i < n; i++)
                    if (kids[i].pid > 0)
                        kill(kids[i].pid, SIGKILL);
        } else {
            sigsuspend(&orig);
        }
        if (got_hup) {
            got_hup = 0;
            for (int i = 0; i < n; i++)
                if (kids[i].pid > 0)
                    kill(kids[i].pid, SIGHUP);
        }
        if (got_term && !stopping) {
            stopping = true;
            stop_deadline = util_mono_ms() + 10000;
            LOG(INFO, "bridge_stopping", "bridge=%s", bridge_id);
            for (int i = 0; i < n; i++)
                if (kids[i].pid > 0)
                    kill(kids[i].pid, SIGTERM);
        }
        got_chld = 0;
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (kids[i].pid != pid)
                    continue;
                kids[i].pid = 0;
                if (stopping) {
                    alive--;
                    break;
                }
                LOG(WARN, "worker_exited", "worker=%s-w%d.%d status=%d signal=%d",
                    bridge_id, i, kids[i].generation,
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                /* Don't spin on a worker that dies at start. */
                if (util_mono_ms() - kids[i].started_ms < 1000)
                    sleep(1);
                /* A new id: edges see the old one vanish and move its
                 * users; logins for the old one find its channel empty. */
                kids[i].pid = spawn(&cfg, bridge_id, i, ++kids[i].generation, &orig);
                kids[i].started_ms = util_mono_ms();
                break;
            }
        }
    }
    LOG(INFO, "bridge_stopped", "bridge=%s", bridge_id);
    config_free(options, ARRAY_LEN(options), &cfg);
    return 0;
}
