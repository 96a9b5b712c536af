/* main.c - imb-edge: options, signals, the event loop. */
#include "edge.h"
#include "jpool.h"
#include "log.h"
#include "schema.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#define T struct edge_cfg
static const struct opt options[] = {
    COMMON_OPTS(T, common),
    {"listen", OPT_STR, offsetof(T, listen), "127.0.0.1:7222", 0, 0, 0,
     "address:port for phone sockets (port 0: any free port)"},
    {"heartbeat", OPT_INT, offsetof(T, heartbeat), "30", 1, 3600, 0,
     "seconds between phone heartbeats; 2x silence closes the socket"},
    {"login_timeout", OPT_INT, offsetof(T, login_timeout), "10", 1, 600, 0,
     "seconds a socket may stay without logging in"},
    {"max_frame", OPT_INT, offsetof(T, max_frame), "16384", 64, 1048576, 0,
     "largest frame body a phone may send, bytes"},
    {"max_output", OPT_INT, offsetof(T, max_output), "1048576", 4096,
     268435456, 0, "bytes queued to a phone before it is cut as a slow reader"},
    {"max_conns", OPT_INT, offsetof(T, max_conns), "1000000", 1, 100000000, 0,
     "phone sockets this edge accepts (at most the descriptor limit minus 64)"},
    {"bridge_timeout", OPT_INT, offsetof(T, bridge_timeout), "20", 1, 600, 0,
     "seconds to wait for a bridge to answer a login"},
    {"edge_id", OPT_STR, offsetof(T, edge_id), "", 0, 0, 0,
     "this edge's id on the bus (empty: random)"},
    {"tls", OPT_STR, offsetof(T, tls), "on", 0, 0, 0,
     "on: phones connect with TLS (tls_cert, tls_key) | off: plaintext, development only"},
    {"tls_cert", OPT_STR, offsetof(T, tls_cert), "", 0, 0, 0,
     "PEM certificate (chain) presented to phones"},
    {"tls_key", OPT_STR, offsetof(T, tls_key), "", 0, 0, 0,
     "PEM private key of tls_cert"},
    {"max_unauth_per_ip", OPT_INT, offsetof(T, max_unauth_per_ip), "64", 1,
     1000000, 0, "sockets from one address that have not logged in yet"},
    {"max_msg_rate", OPT_INT, offsetof(T, max_msg_rate), "20", 1, 100000, 0,
     "chat frames per second per phone (bursts of twice that)"},
    {"login_fail_window", OPT_INT, offsetof(T, login_fail_window), "300", 1,
     86400, OPT_RELOAD, "seconds a count of failed logins lives, from its first failure"},
    {"login_fail_per_ip", OPT_INT, offsetof(T, login_fail_per_ip), "20", 0,
     1000000, OPT_RELOAD,
     "failed logins from one address (IPv6: one /64) per window before its logins are "
     "refused (rate_limited); 0 = no limit"},
    {"login_fail_per_account", OPT_INT, offsetof(T, login_fail_per_account), "10", 0,
     1000000, OPT_RELOAD,
     "failed logins for one account per window before its logins without a device "
     "token are refused; also the limit per device token; 0 = no limit"},
    {"device_token_days", OPT_INT, offsetof(T, device_token_days), "30", 0, 3650, 0,
     "days a device token (welcome -> login) stays valid; 0 = no tokens"},
};
#undef T

/* edge_id's longest, as struct edge holds it. */
#define EDGE_ID_MAX ((int)sizeof(((struct edge *)0)->id) - 1)

/* What edge_new would refuse, found before anything starts (and by
 * --check-config): the TLS files load, the addresses parse. */
static bool check_cfg(const void *p, char *err, size_t n)
{
    const struct edge_cfg *c = p;
    if (!strcmp(c->tls, "on")) {
        if (!*c->tls_cert || !*c->tls_key) {
            snprintf(err, n, "tls = on needs tls_cert and tls_key "
                     "(or tls = off, for development only)");
            return false;
        }
        if (!config_tls_server_ok(c->tls_cert, c->tls_key, err, n))
            return false;
    } else if (strcmp(c->tls, "off")) {
        snprintf(err, n, "tls must be on or off, not '%s'", c->tls);
        return false;
    }
    if (*c->edge_id && !schema_id_ok(c->edge_id, EDGE_ID_MAX)) {
        snprintf(err, n, "edge_id must be 1..%d chars of [A-Za-z0-9._:-]", EDGE_ID_MAX);
        return false;
    }
    return config_addr_ok("listen", c->listen, err, n);
}

/* Descriptors kept beyond max_conns: Redis links, HTTP clients, the
 * listeners, log and reserve descriptors. */
#define FD_HEADROOM 64

static struct edge *the_edge;
static struct edge_cfg cfg;
static int g_argc;
static char **g_argv;

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    config_reload(options, ARRAY_LEN(options), &cfg, &cfg.common, g_argc, g_argv);
}
static struct event *drain_timer;

static void on_drained(evutil_socket_t fd, short what, void *arg)
{
    struct event_base *base = arg;
    if (the_edge->conns.count == 0 || what == EV_TIMEOUT)
        event_base_loopexit(base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    if (the_edge->draining) {
        event_base_loopexit(base, NULL);
        return;
    }
    LOG(INFO, "shutdown", "signal=%d conns=%zu", (int)sig, the_edge->conns.count);
    the_edge->draining = true;
    conn_close_all(the_edge, "shutdown");
    /* Give the bye frames a moment to flush, then stop. */
    drain_timer = evtimer_new(base, on_drained, base);
    struct timeval tv = {1, 0};
    evtimer_add(drain_timer, &tv);
}

/* Phones must never take the descriptors Redis and HTTP need: raise the
 * soft descriptor limit to the hard one, and keep max_conns FD_HEADROOM
 * under it. */
static void fd_headroom(struct edge_cfg *c)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            LOG(INFO, "nofile_raised", "from=%llu to=%llu", (unsigned long long)was,
                (unsigned long long)rl.rlim_cur);
        else
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY ||
        (unsigned long long)c->max_conns + FD_HEADROOM <= (unsigned long long)rl.rlim_cur)
        return;
    long was = c->max_conns;
    c->max_conns = rl.rlim_cur > FD_HEADROOM ? (long)rl.rlim_cur - FD_HEADROOM : 1;
    /* Only the default (a million) is expected to be clamped. */
    if (was == 1000000)
        LOG(INFO, "max_conns_clamped", "max_conns=%ld configured=%ld nofile=%llu headroom=%d",
            c->max_conns, was, (unsigned long long)rl.rlim_cur, FD_HEADROOM);
    else
        LOG(WARN, "max_conns_clamped", "max_conns=%ld configured=%ld nofile=%llu headroom=%d",
            c->max_conns, was, (unsigned long long)rl.rlim_cur, FD_HEADROOM);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* Before any JSON value exists: every frame's values come from it. */
    jpool_install();
    log_set_name("edge");
    g_argc = argc;
    g_argv = argv;
    int rc = config_main(options, ARRAY_LEN(options), &cfg, &cfg.common, argc,
                         argv, "imb-edge", check_cfg);
    if (rc >= 0)
        return rc;
    char err[512];
    fd_headroom(&cfg);

    struct event_base *base = util_event_base();
    the_edge = edge_new(base, &cfg, err, sizeof(err));
    if (!the_edge) {
        LOG(ERROR, "startup_failed", "err=\"%s\"", err);
        event_base_free(base);
        config_free(options, ARRAY_LEN(options), &cfg);
        return 1;
    }
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sighup = evsignal_new(base, SIGHUP, on_hup, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_add(sighup, NULL);

    char addr[80];
    edge_listen_addr(the_edge, addr, sizeof(addr));
    LOG(INFO, "listening", "addr=%s edge=%s heartbeat=%ld max_frame=%ld", addr,
        the_edge->id, cfg.heartbeat, cfg.max_frame);

    event_base_dispatch(base);

    LOG(INFO, "stopped", "edge=%s", the_edge->id);
    edge_free(the_edge);
    if (drain_timer)
        event_free(drain_timer);
    event_free(sigterm);
    event_free(sigint);
    event_free(sighup);
    event_base_free(base);
    config_free(options, ARRAY_LEN(options), &cfg);
    jpool_trim();
    return 0;
}
