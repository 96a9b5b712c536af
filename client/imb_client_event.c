/* imb_client_event.c - the libevent + OpenSSL transport of imb_client
 * (imb_client_event.h): owns one bufferevent at a time (TCP or TLS), the
 * timer that drives imb_client_tick, the DNS base and the TLS context. */
#include "imb_client_event.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

struct imb_client_ev {
    struct event_base *base;    /* the app's; not owned */
    struct evdns_base *dns;     /* owned; non-blocking name lookups */
    SSL_CTX *ssl_ctx;           /* owned; NULL until a TLS edge is used */
    char *cafile;               /* owned copy; NULL: system store */
    struct imb_client *c;       /* owned */
    struct bufferevent *bev;    /* the current connection, or NULL */
    struct event *timer;        /* fires at imb_client_next_deadline */
    struct event *opener;       /* opens the connection a CONNECT asked for, outside the event's call */
    const char *open_host, *open_port; /* the CONNECT to act on (strings owned by the client's edges) */
    bool open_tls;
    bool got_bytes;             /* the current connection has received something */
    bool up;                    /* the current connection got connected (TCP, and TLS if asked) */
    bool in_flush;
    void (*app_cb)(void *arg, const struct imb_event *ev);
    void *app_arg;
    char last_error[160];
};

int64_t imb_client_ev_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_bev(struct imb_client_ev *ev)
{
    if (!ev->bev)
        return;
    /* A TLS connection is simply closed: no close_notify wait on a link we
     * are leaving (a dead one would stall it). */
    bufferevent_free(ev->bev);
    ev->bev = NULL;
}

/* Write the client's output and re-arm the timer. */
void imb_client_ev_flush(struct imb_client_ev *ev)
{
    if (ev->in_flush)
        return;
    ev->in_flush = true;
    const uint8_t *p;
    size_t n;
    while (ev->bev && (n = imb_client_output(ev->c, &p)) > 0) {
        if (bufferevent_write(ev->bev, p, n) != 0)
            break;
        imb_client_consumed(ev->c, n);
    }
    int64_t d = imb_client_next_deadline(ev->c);
    if (d == INT64_MAX) {
        evtimer_del(ev->timer);
    } else {
        int64_t wait = d - imb_client_ev_now();
        if (wait < 0)
            wait = 0;
        struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
        evtimer_add(ev->timer, &tv);
    }
    ev->in_flush = false;
}

static void set_error_from_bev(struct imb_client_ev *ev, short what)
{
    unsigned long e = ev->bev ? bufferevent_get_openssl_error(ev->bev) : 0;
    SSL *ssl = ev->bev ? bufferevent_openssl_get_ssl(ev->bev) : NULL;
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (ev->last_error[0]) {
        /* Already said (a TLS reply to a plaintext login). */
    } else if (e && vr != X509_V_OK) {
        /* Say which check failed: the CA, the name, the dates... */
        snprintf(ev->last_error, sizeof ev->last_error, "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               (ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
                ERR_GET_REASON(e) == SSL_R_PACKET_LENGTH_TOO_LONG)) {
        snprintf(ev->last_error, sizeof ev->last_error,
                 "TLS handshake failed: the server does not seem to speak TLS (%s)",
                 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?");
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(ev->last_error, sizeof ev->last_error, "TLS: %s", r);
        else
            ERR_error_string_n(e, ev->last_error, sizeof ev->last_error);
    } else if (ssl && !ev->got_bytes && (what & BEV_EVENT_EOF)) {
        snprintf(ev->last_error, sizeof ev->last_error,
                 "TLS handshake failed: the server closed the connection");
    } else if (!ssl && ev->up && !ev->got_bytes) {
        /* A plaintext edge answers a login; one that speaks TLS takes it for
         * a broken handshake and drops the connection (a reset, or a TLS
         * alert: see read_cb). */
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(ev->last_error, sizeof ev->last_error,
                 "the server closed the connection (%s) without answering the login: it seems to speak TLS",
                 (what & BEV_EVENT_EOF) || !err ? "end of stream" : evutil_socket_error_to_string(err));
    } else if (what & BEV_EVENT_EOF) {
        snprintf(ev->last_error, sizeof ev->last_error, "closed by the server");
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        int dns = ev->bev ? bufferevent_socket_get_dns_error(ev->bev) : 0;
        snprintf(ev->last_error, sizeof ev->last_error, "%s",
                 dns ? evutil_gai_strerror(dns) : evutil_socket_error_to_string(err));
    }
    while (ERR_get_error())
        ; /* the rest of the queue belongs to this failure too */
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct imb_client_ev *ev = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t buf[16384];
    size_t n;
    if (!ev->got_bytes && !ev->open_tls && evbuffer_get_length(in) >= 2) {
        /* A TLS record (alert 0x15 or handshake 0x16, version 3.x) in
         * answer to a plaintext login: the edge speaks TLS. */
        uint8_t h[2];
        evbuffer_copyout(in, h, 2);
        if ((h[0] == 0x15 || h[0] == 0x16) && h[1] == 0x03)
            snprintf(ev->last_error, sizeof ev->last_error,
                     "the server seems to speak TLS (its answer to the plaintext login is a TLS record)");
    }
    if (evbuffer_get_length(in) > 0)
        ev->got_bytes = true;
    while (ev->bev == bev && (n = evbuffer_remove(in, buf, sizeof buf)) > 0 && n != (size_t)-1)
        imb_client_input(ev->c, buf, n, imb_client_ev_now());
    imb_client_ev_flush(ev);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct imb_client_ev *ev = arg;
    if (what & BEV_EVENT_CONNECTED) {
        ev->last_error[0] = 0;
        ev->up = true;
        int one = 1;
        /* Frames are small; a heartbeat stuck behind Nagle eats into the
         * server's idle budget. */
        (void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        imb_client_connected(ev->c, imb_client_ev_now());
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        set_error_from_bev(ev, what);
        if (ev->bev == bev)
            close_bev(ev);
        imb_client_closed(ev->c, imb_client_ev_now());
    }
    imb_client_ev_flush(ev);
}

static SSL *new_ssl(struct imb_client_ev *ev, const char *host)
{
    if (!ev->ssl_ctx) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
            return NULL;
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ev->cafile ? SSL_CTX_load_verify_locations(ctx, ev->cafile, NULL)
                            : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            SSL_CTX_free(ctx);
            return NULL;
        }
        ev->ssl_ctx = ctx;
    }
    SSL *ssl = SSL_new(ev->ssl_ctx);
    if (!ssl)
        return NULL;
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
        /* An address: the certificate must name it (iPAddress SAN). */
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    } else {
        SSL_set_tlsext_host_name(ssl, host);
        if (SSL_set1_host(ssl, host) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    return ssl;
}

static void open_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imb_client_ev *ev = arg;
    close_bev(ev);
    ev->last_error[0] = 0;
    ev->got_bytes = false;
    ev->up = false;
    int port = atoi(ev->open_port);
    struct bufferevent *bev = NULL;
    if (ev->open_tls) {
        SSL *ssl = new_ssl(ev, ev->open_host);
        if (ssl)
            bev = bufferevent_openssl_socket_new(ev->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!bev) {
            if (ssl)
                SSL_free(ssl);
            snprintf(ev->last_error, sizeof ev->last_error, "TLS setup failed (CA file?)");
        }
    } else {
        bev = bufferevent_socket_new(ev->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    if (bev) {
        ev->bev = bev;
        bufferevent_setcb(bev, read_cb, NULL, event_cb, ev);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        if (port <= 0 || port > 65535 ||
            bufferevent_socket_connect_hostname(bev, ev->dns, AF_UNSPEC, ev->open_host, port) != 0) {
            snprintf(ev->last_error, sizeof ev->last_error, "cannot connect to %s:%s", ev->open_host,
                     ev->open_port);
            close_bev(ev);
        }
    }
    if (!ev->bev)
        imb_client_closed(ev->c, imb_client_ev_now());
    imb_client_ev_flush(ev);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imb_client_ev *ev = arg;
    imb_client_tick(ev->c, imb_client_ev_now());
    imb_client_ev_flush(ev);
}

/* The client's events: act on CONNECT/DISCONNECT, then hand each on. */
static void on_event(void *arg, const struct imb_event *e)
{
    struct imb_client_ev *ev = arg;
    if (e->type == IMB_EV_CONNECT) {
        ev->open_host = e->host;
        ev->open_port = e->port;
        ev->open_tls = e->tls;
        event_active(ev->opener, EV_TIMEOUT, 0);
    } else if (e->type == IMB_EV_DISCONNECT) {
        close_bev(ev);
    }
    ev->app_cb(ev->app_arg, e);
}

struct imb_client_ev *imb_client_ev_new(struct event_base *base, const struct imb_client_opts *opts,
                                        const char *cafile, char *err, size_t errlen)
{
    struct imb_client_ev *ev = NULL;
    const char *why = "out of memory";
    if (!base || !opts || !opts->on_event) {
        why = "base and opts->on_event are required";
        goto fail;
    }
    ev = calloc(1, sizeof *ev);
    if (!ev)
        goto fail;
    ev->base = base;
    ev->app_cb = opts->on_event;
    ev->app_arg = opts->arg;
    struct imb_client_opts o = *opts;
    o.on_event = on_event;
    o.arg = ev;
    if (o.seed == 0 && getrandom(&o.seed, sizeof o.seed, GRND_NONBLOCK) != sizeof o.seed)
        o.seed = (uint64_t)imb_client_ev_now() ^ (uint64_t)(uintptr_t)ev;
    ev->c = imb_client_new(&o);
    if (!ev->c) {
        why = "invalid options (jid, pass, edges, dev, id_prefix, epoch)";
        goto fail;
    }
    if (cafile && !(ev->cafile = strdup(cafile)))
        goto fail;
    ev->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    ev->timer = evtimer_new(base, timer_cb, ev);
    ev->opener = event_new(base, -1, 0, open_cb, ev);
    if (!ev->timer || !ev->opener)
        goto fail;
    return ev;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    imb_client_ev_free(ev);
    return NULL;
}

void imb_client_ev_free(struct imb_client_ev *ev)
{
    if (!ev)
        return;
    close_bev(ev);
    if (ev->timer)
        event_free(ev->timer);
    if (ev->opener)
        event_free(ev->opener);
    if (ev->dns)
        evdns_base_free(ev->dns, 0);
    if (ev->ssl_ctx)
        SSL_CTX_free(ev->ssl_ctx);
    free(ev->cafile);
    imb_client_free(ev->c);
    free(ev);
}

struct imb_client *imb_client_ev_client(struct imb_client_ev *ev)
{
    return ev->c;
}

void imb_client_ev_start(struct imb_client_ev *ev)
{
    imb_client_start(ev->c, imb_client_ev_now());
    imb_client_ev_flush(ev);
}

const char *imb_client_ev_last_error(const struct imb_client_ev *ev)
{
    return ev->last_error;
}

size_t imb_client_ev_backlog(const struct imb_client_ev *ev)
{
    return ev->bev ? evbuffer_get_length(bufferevent_get_output(ev->bev)) : 0;
}
