/* main.c - imb-xmppd: options, then a supervisor that forks the worker
 * processes, restarts any that die, and forwards TERM/INT/HUP to them. */
#include "jpool.h"
#include "log.h"
#include "schema.h"
#include "util.h"
#include "xmppd.h"
#include "httpd.h"

#include <event2/event.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


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
    {"xmpp_csi", OPT_STR, offsetof(T, xmpp_csi), "on", 0, 0, 0,
     "on: tell the XMPP server when no phone is in the foreground (XEP-0352); "
     "off for a server without it"},
    {"push_preview", OPT_STR, offsetof(T, push_preview), "sender", 0, 0, OPT_RELOAD,
     "what push envelopes tell: none | sender | full (sender and text)"},
    {"filter_rules", OPT_STR, offsetof(T, filter_rules), "", 0, 0, OPT_RELOAD,
     "message filter rules file (empty: no filter); re-read on SIGHUP"},
    {"push_jid", OPT_STR, offsetof(T, push_jid), "", 0, 0, 0,
     "component JID the XMPP server notifies of messages stored offline "
     "(XEP-0357 push after the resume window); empty: off"},
    {"push_secret", OPT_STR, offsetof(T, push_secret), "", 0, 0, OPT_SECRET,
     "that component's secret (XEP-0114)"},
    {"push_port", OPT_INT, offsetof(T, push_port), "5347", 1, 65535, 0,
     "the XMPP server's component port"},
    {"muc_join_timeout", OPT_INT, offsetof(T, muc_join_timeout), "20", 1, 300, 0,
     "seconds a room has to answer a join or a subject change before the phone "
     "is told it failed"},
    {"bridge_id", OPT_STR, offsetof(T, bridge_id), "", 0, 0, 0,
     "this bridge's id on the bus (empty: random)"},
    {"ping_delay_ms", OPT_INT, offsetof(T, ping_delay_ms), "20", 0, 1000, 0,
     "milliseconds between a worker's rounds of pings proving phones' messages "
     "reached the XMPP server (one ping per session covers all it sent since; "
     "0: every loop turn)"},
};
#undef T

static pid_t spawn(struct supervisor *sv, int index)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Worker: the supervisor's signal handlers (libevent's, writing to the
     * supervisor's loop) must not stay in force here, or a signal before the
     * worker's own loop is up would be lost: until then the defaults apply,
     * so a supervisor that dies now takes this worker with it. Deleting the
     * supervisor's signal events (in this process only: signals touch no
     * shared epoll state) also lets the worker's base own signals without
     * libevent's warning about two bases. The base itself is not freed
     * here: that would unregister the supervisor's descriptors from the
     * epoll instance both processes share. */
    for (int i = 0; i < 4; i++)
        event_del(sv->sigs[i]);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(0);
    int rc = worker_main(sv->cfg, sv->bridge_id, index, sv->kids[index].generation,
                         &sv->reports[index]);
    /* exit, not _exit: LeakSanitizer checks the worker at exit. The parent
     * wrote nothing to stdio buffers that could be flushed twice. */
    exit(rc);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    struct supervisor *sv = arg;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < sv->n; i++) {
            struct child *k = &sv->kids[i];
            if (k->pid != pid)
                continue;
            k->pid = 0;
            if (sv->stopping) {
                sv->alive--;
                break;
            }
            LOG(WARN, "worker_exited", "worker=%s-w%d.%d status=%d signal=%d",
                sv->bridge_id, i, k->generation,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            /* Don't spin on a worker that dies at start. */
            if (util_mono_ms() - k->started_ms < 1000)
                sleep(1);
            /* A new id: edges see the old one vanish and move its users;
             * logins for the old one find its channel empty. */
            k->generation++;
            memset(&sv->reports[i], 0, sizeof(sv->reports[i]));
            k->pid = spawn(sv, i);
            k->started_ms = util_mono_ms();
            break;
        }
    }
    if (sv->stopping && sv->alive == 0)
        event_base_loopexit(sv->base, NULL);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct supervisor *sv = arg;
    for (int i = 0; i < sv->n; i++)
        if (sv->kids[i].pid > 0) {
            LOG(WARN, "worker_killed", "worker=%d reason=\"no exit 10 s after SIGTERM\"", i);
            kill(sv->kids[i].pid, SIGKILL);
        }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct supervisor *sv = arg;
    if (sig == SIGHUP) {
        for (int i = 0; i < sv->n; i++)
            if (sv->kids[i].pid > 0)
                kill(sv->kids[i].pid, SIGHUP);
        return;
    }
    if (sv->stopping)
        return;
    sv->stopping = true;
    LOG(INFO, "bridge_stopping", "bridge=%s", sv->bridge_id);
    for (int i = 0; i < sv->n; i++)
        if (sv->kids[i].pid > 0)
            kill(sv->kids[i].pid, SIGTERM);
    struct timeval tv = {10, 0};
    evtimer_add(sv->deadline, &tv);
}

static bool check_cfg(const void *c, char *err, size_t n)
{
    const struct xmppd_cfg *cfg = c;
    if (strcmp(cfg->xmpp_tls, "required") && strcmp(cfg->xmpp_tls, "trust") &&
        strcmp(cfg->xmpp_tls, "disabled")) {
        snprintf(err, n, "xmpp_tls must be required, trust or disabled");
        return false;
    }
    if (strcmp(cfg->xmpp_csi, "on") && strcmp(cfg->xmpp_csi, "off")) {
        snprintf(err, n, "xmpp_csi must be on or off");
        return false;
    }
    if (strcmp(cfg->push_preview, "none") && strcmp(cfg->push_preview, "sender") &&
        strcmp(cfg->push_preview, "full")) {
        snprintf(err, n, "push_preview must be none, sender or full");
        return false;
    }
    if (!*cfg->xmpp_host) {
        snprintf(err, n, "xmpp_host must not be empty");
        return false;
    }
    /* Checked whatever xmpp_tls says: a file named and unreadable is a
     * mistake, and with required every login would fail as a bad password. */
    if (*cfg->xmpp_cafile && !config_tls_cafile_ok("xmpp_cafile", cfg->xmpp_cafile, err, n))
        return false;
    if (*cfg->filter_rules) {
        struct filter *f = filter_load(cfg->filter_rules, err, n);
        if (!f)
            return false;
        filter_free(f);
    }
    if (*cfg->push_jid && (!schema_jid_ok(cfg->push_jid, 1023) ||
                           strchr(cfg->push_jid, '@') || strchr(cfg->push_jid, '/') ||
                           !*cfg->push_secret)) {
        snprintf(err, n, "push_jid must be a domain (a component) and push_secret set");
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

static struct xmppd_cfg cfg;
static int g_argc;
static char **g_argv;

static void reload(void)
{
    config_reload(options, ARRAY_LEN(options), &cfg, &cfg.common, g_argc, g_argv);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* Envelopes' JSON values from the pool's free lists (libstrophe's
     * stanzas too: worker.c). */
    jpool_install();
    log_set_name("xmppd");
    g_argc = argc;
    g_argv = argv;
    worker_reload_hook = reload;
    int rc = config_main(options, ARRAY_LEN(options), &cfg, &cfg.common, argc,
                         argv, "imb-xmppd", check_cfg);
    if (rc >= 0)
        return rc;
    char err[512];

    char bridge_id[48];
    if (*cfg.bridge_id)
        snprintf(bridge_id, sizeof(bridge_id), "%s", cfg.bridge_id);
    else {
        bridge_id[0] = 'b';
        util_random_hex(bridge_id + 1, 6);
    }

    struct supervisor sv;
    memset(&sv, 0, sizeof(sv));
    sv.cfg = &cfg;
    snprintf(sv.bridge_id, sizeof(sv.bridge_id), "%s", bridge_id);
    sv.n = (int)cfg.workers;
    /* Workers report their counters here; the supervisor serves them. */
    sv.reports = mmap(NULL, sizeof(*sv.reports) * (size_t)sv.n,
                      PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sv.reports == MAP_FAILED) {
        perror("mmap");
        config_free(options, ARRAY_LEN(options), &cfg);
        return 1;
    }
    sv.base = util_event_base();
    int signums[4] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 4; i++) {
        sv.sigs[i] = evsignal_new(sv.base, signums[i], i == 0 ? on_sigchld : on_signal, &sv);
        event_add(sv.sigs[i], NULL);
    }
    sv.deadline = evtimer_new(sv.base, on_deadline, &sv);
    if (!bridge_metrics_start(&sv, err, sizeof(err))) {
        LOG(ERROR, "startup_failed", "err=\"%s\"", err);
        return 1;
    }
    for (int i = 0; i < sv.n; i++) {
        sv.kids[i].pid = spawn(&sv, i);
        sv.kids[i].started_ms = util_mono_ms();
    }
    sv.alive = sv.n;
    LOG(INFO, "bridge_started", "bridge=%s workers=%d xmpp=%s:%ld tls=%s",
        bridge_id, sv.n, cfg.xmpp_host, cfg.xmpp_port, cfg.xmpp_tls);

    event_base_dispatch(sv.base);

    httpd_free(sv.httpd);
    for (int i = 0; i < 4; i++)
        event_free(sv.sigs[i]);
    event_free(sv.deadline);
    event_base_free(sv.base);
    munmap(sv.reports, sizeof(*sv.reports) * (size_t)sv.n);
    LOG(INFO, "bridge_stopped", "bridge=%s", bridge_id);
    config_free(options, ARRAY_LEN(options), &cfg);
    return 0;
}
