/* conn.c - one phone socket: framing, the connection state machine,
 * timeouts, output limits and deferred close. What a frame means is
 * edge.c's business; this file only checks that it is well-formed and
 * allowed in the current state. */
#include "edge.h"
#include "frame.h"
#include "log.h"
#include "phone.h"
#include "seal.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#define MAX_AUTH_FAILURES 3
/* Seconds a closing connection may take to flush its last frames. */
#define CLOSE_FLUSH_TIMEOUT 2

static const char *const state_names[] = {"new", "logging_in", "ready",
                                          "closing"};

/* ---- the source address, while not logged in ---------------------------- */

/* The key of an address in edge->unauth: dotted quad for IPv4 (mapped or
 * not), RFC 5952 text for IPv6. */
static void ip_text(const uint8_t ip[16], char *out, size_t n)
{
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)ip))
        inet_ntop(AF_INET, ip + 12, out, (socklen_t)n);
    else
        inet_ntop(AF_INET6, ip, out, (socklen_t)n);
}

static bool unauthenticated(const struct conn *c)
{
    return c->state == CONN_NEW || c->state == CONN_LOGGING_IN;
}

/* The socket no longer counts against its address's unauthenticated limit
 * (once, when it leaves NEW/LOGGING_IN: the address's bytes are reused). */
static void unauth_release(struct conn *c)
{
    char ip[INET6_ADDRSTRLEN];
    ip_text(c->ip, ip, sizeof(ip));
    struct strmap *m = &c->edge->unauth;
    uintptr_t n = (uintptr_t)strmap_get(m, ip);
    if (n <= 1)
        strmap_del(m, ip);
    else
        strmap_put(m, ip, (void *)(n - 1));
}

/* ---- deadlines before READY: one timer per edge ---------------------------
 * A socket in NEW must log in within login_timeout of its accept (or of its
 * last failed login); one in LOGGING_IN gets the bridge's answer within
 * bridge_timeout. Each timeout is the same for every socket of an edge, so
 * each state's sockets queue in deadline order and one timer, armed for the
 * earliest head, serves them all: an idle socket owns no event of its own. */
struct dl_queue {
    struct conn *head, *tail;
};

struct conn_deadlines {
    struct event *ev;
    struct dl_queue q[2]; /* [0] NEW, [1] LOGGING_IN */
};

static void sweep_cb(evutil_socket_t fd, short what, void *arg);

static struct conn_deadlines *deadlines(struct edge *edge)
{
    if (!edge->deadlines) {
        edge->deadlines = xcalloc(1, sizeof(*edge->deadlines));
        edge->deadlines->ev = evtimer_new(edge->base, sweep_cb, edge);
    }
    return edge->deadlines;
}

void conn_deadlines_free(struct edge *edge)
{
    if (!edge->deadlines)
        return;
    event_free(edge->deadlines->ev);
    free(edge->deadlines);
    edge->deadlines = NULL;
}

/* Arm the timer for the earliest deadline of both queues. */
static void sweep_arm(struct conn_deadlines *dl)
{
    int64_t first = INT64_MAX;
    for (int i = 0; i < 2; i++)
        if (dl->q[i].head && dl->q[i].head->deadline_ms < first)
            first = dl->q[i].head->deadline_ms;
    if (first == INT64_MAX)
        return;
    int64_t wait = first - util_mono_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(dl->ev, &tv);
}

/* Queue c (in NEW or LOGGING_IN: its state picks the queue) for a deadline
 * timeout_s from now. */
static void dl_add(struct conn *c, long timeout_s)
{
    struct conn_deadlines *dl = deadlines(c->edge);
    struct dl_queue *q = &dl->q[c->state == CONN_LOGGING_IN];
    c->deadline_ms = util_mono_ms() + (int64_t)timeout_s * 1000;
    c->dl_next = NULL;
    c->dl_prev = q->tail;
    if (q->tail)
        q->tail->dl_next = c;
    else
        q->head = c;
    q->tail = c;
    if (q->head == c)
        sweep_arm(dl); /* a new head may come before the other queue's */
}

/* Take c (in NEW or LOGGING_IN) off its queue, if it is on it. A removed
 * head may leave the timer armed early: sweep_cb re-arms. */
static void dl_remove(struct conn *c)
{
    struct conn_deadlines *dl = c->edge->deadlines;
    if (!dl)
        return;
    struct dl_queue *q = &dl->q[c->state == CONN_LOGGING_IN];
    if (!c->dl_prev && q->head != c)
        return;
    if (c->dl_prev)
        c->dl_prev->dl_next = c->dl_next;
    else
        q->head = c->dl_next;
    if (c->dl_next)
        c->dl_next->dl_prev = c->dl_prev;
    else
        q->tail = c->dl_prev;
    c->dl_prev = c->dl_next = NULL;
}

static void conn_deadline(struct conn *c);

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_deadlines *dl = ((struct edge *)arg)->deadlines;
    int64_t now = util_mono_ms();
    for (int i = 0; i < 2; i++) {
        struct conn *c;
        while ((c = dl->q[i].head) && c->deadline_ms <= now) {
            dl_remove(c);
            conn_deadline(c); /* may queue it again, or close it */
        }
    }
    sweep_arm(dl);
}

static void conn_free(struct conn *c)
{
    if (unauthenticated(c)) {
        dl_remove(c);
        unauth_release(c);
    }
    edge_on_conn_gone(c);
    strmap_del(&c->edge->conns, c->dev);
    json_decref(c->held);
    json_decref(c->inflight);
    seal_wipe_free(c->pending_pass);
    bufferevent_free(c->bev);
    free(c);
}

void conn_set_state(struct conn *c, enum conn_state s)
{
    /* A closing connection never comes back. */
    if (c->state == s || c->state == CONN_CLOSING)
        return;
    LOG(DEBUG, "conn_state", "dev=%s from=%s to=%s", c->dev,
        state_names[c->state], state_names[s]);
    bool was_unauth = unauthenticated(c);
    if (was_unauth)
        dl_remove(c);
    c->state = s;
    struct timeval tv = {0, 0};
    switch (s) {
    case CONN_NEW:
        /* An absolute deadline to log in: sending heartbeats does not
         * extend it. */
        dl_add(c, c->edge->cfg->login_timeout);
        break;
    case CONN_LOGGING_IN:
        dl_add(c, c->edge->cfg->bridge_timeout);
        break;
    case CONN_READY:
        /* The address first: the rate bucket takes its bytes. */
        unauth_release(c);
        c->tokens = 2.0 * (double)c->edge->cfg->max_msg_rate;
        c->tokens_ms = util_mono_ms();
        /* Two heartbeat intervals of silence: the phone is gone. */
        tv.tv_sec = 2 * c->edge->cfg->heartbeat;
        bufferevent_set_timeouts(c->bev, &tv, NULL);
        break;
    case CONN_CLOSING: {
        struct timeval wt = {CLOSE_FLUSH_TIMEOUT, 0};
        /* It stops counting against its address now, not once flushed
         * (at most CLOSE_FLUSH_TIMEOUT later). */
        if (was_unauth)
            unauth_release(c);
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_set_timeouts(c->bev, NULL, &wt);
        break;
    }
    }
}

/* Close once the output is flushed. Never frees from inside a callback:
 * the write callback (or its timeout) does it later. */
static void conn_close(struct conn *c)
{
    if (c->state != CONN_CLOSING)
        conn_set_state(c, CONN_CLOSING);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        /* Nothing to flush: let the write callback run once to free it. */
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS |
                                                  BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void free_cb(const void *data, size_t len, void *arg)
{
    free((void *)data);
}

static void send_frame(struct conn *c, json_t *obj, bool paced)
{
    if (c->state == CONN_CLOSING) {
        json_decref(obj);
        return;
    }
    size_t len;
    char *buf = phone_encode(obj, &len);
    json_decref(obj);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!paced && evbuffer_get_length(out) + len > (size_t)c->edge->cfg->max_output) {
        /* A phone that does not read is cut rather than letting its queue
         * grow without bound. */
        LOG(WARN, "conn_slow_reader", "dev=%s queued=%zu", c->dev,
            evbuffer_get_length(out));
        c->edge->stats.slow_readers++;
        free(buf);
        evbuffer_drain(out, evbuffer_get_length(out));
        conn_close(c);
        return;
    }
    evbuffer_add_reference(out, buf, len, free_cb, NULL);
}

void conn_send(struct conn *c, json_t *obj)
{
    send_frame(c, obj, false);
}

void conn_send_paced(struct conn *c, json_t *obj)
{
    send_frame(c, obj, true);
}

void conn_bye(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSING)
        return;
    conn_send(c, phone_bye(reason));
    conn_close(c);
}

void conn_error(struct conn *c, const char *code, const char *msg,
                const char *id)
{
    /* PROTOCOL.md promises a msg in every error frame. */
    conn_send(c, phone_error(code, msg ? msg : code, id));
}

/* Token bucket: max_msg_rate per second, bursts up to twice that. */
static bool rate_ok(struct conn *c)
{
    double rate = (double)c->edge->cfg->max_msg_rate;
    int64_t now = util_mono_ms();
    c->tokens += (double)(now - c->tokens_ms) * rate / 1000.0;
    if (c->tokens > 2.0 * rate)
        c->tokens = 2.0 * rate;
    c->tokens_ms = now;
    if (c->tokens < 1.0)
        return false;
    c->tokens -= 1.0;
    return true;
}

/* One complete frame body: decode, check it is allowed now, dispatch. */
static void conn_frame(struct conn *c, const char *body, size_t len)
{
    char err[256], bad_id[PHONE_MAX_ID + 1];
    json_t *f;
    int type = phone_decode(body, len, (size_t)c->edge->cfg->max_frame, &f,
                            bad_id, err, sizeof(err));
    if (type < 0) {
        c->edge->stats.bad_frames++;
        conn_error(c, PERR_BAD_FRAME, err, bad_id[0] ? bad_id : NULL);
        return;
    }
    const char *id = json_string_value(json_object_get(f, "id"));
    switch (type) {
    case PHONE_HB:
        conn_send(c, json_pack("{s:s}", "t", "hb"));
        break;
    case PHONE_LOGIN:
        if (c->state != CONN_NEW) {
            conn_error(c, PERR_ALREADY_LOGGED_IN,
                       c->state == CONN_READY ? "already logged in"
                                              : "a login is in progress",
                       NULL);
        } else if (json_integer_value(json_object_get(f, "v")) != PHONE_VERSION) {
            conn_error(c, PERR_BAD_VERSION, "this server speaks protocol v1",
                       NULL);
            conn_bye(c, "bad_version");
        } else {
            edge_on_login(c, f);
        }
        break;
    case PHONE_MSG:
        if (c->state != CONN_READY)
            conn_error(c, PERR_NOT_LOGGED_IN, "log in first", id);
        else if (!rate_ok(c)) {
            c->edge->stats.rate_limited++;
            conn_error(c, PERR_RATE_LIMITED, "too many messages, send it again later", id);
        } else
            edge_on_msg(c, f);
        break;
    case PHONE_REQ:
        if (c->state != CONN_READY)
            conn_error(c, PERR_NOT_LOGGED_IN, "log in first", id);
        else if (!rate_ok(c)) {
            c->edge->stats.rate_limited++;
            conn_error(c, PERR_RATE_LIMITED, "too many requests, send it again later", id);
        } else
            edge_on_req(c, f);
        break;
    case PHONE_ACK:
        if (c->state != CONN_READY)
            conn_error(c, PERR_NOT_LOGGED_IN, "log in first", NULL);
        else
            edge_on_ack(c, f);
        break;
    case PHONE_LOGOUT:
        if (c->state == CONN_READY)
            edge_on_logout(c);
        conn_bye(c, "logout");
        break;
    default:
        c->edge->stats.bad_frames++;
        conn_error(c, PERR_UNKNOWN_TYPE, "unknown frame type", NULL);
        break;
    }
    json_decref(f);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t max = (size_t)c->edge->cfg->max_frame;
    while (c->state != CONN_CLOSING) {
        size_t avail = evbuffer_get_length(in);
        if (avail < FRAME_HEADER)
            break;
        const uint8_t *hdr = evbuffer_pullup(in, FRAME_HEADER);
        const uint8_t *body;
        size_t body_len;
        enum frame_status st = frame_parse(hdr, FRAME_HEADER, max, &body, &body_len);
        if (st == FRAME_TOO_BIG || st == FRAME_TOO_SMALL) {
            char msg[96];
            snprintf(msg, sizeof(msg), "frame length %zu outside %d..%zu",
                     body_len, FRAME_MIN_BODY, max);
            c->edge->stats.bad_frames++;
            LOG(INFO, "conn_bad_length", "dev=%s len=%zu", c->dev, body_len);
            conn_error(c, PERR_TOO_BIG, msg, NULL);
            conn_bye(c, "protocol_error");
            break;
        }
        if (avail < FRAME_HEADER + body_len)
            break; /* the rest has not arrived yet */
        const uint8_t *whole = evbuffer_pullup(in, (ssize_t)(FRAME_HEADER + body_len));
        conn_frame(c, (const char *)whole + FRAME_HEADER, body_len);
        evbuffer_drain(in, FRAME_HEADER + body_len);
    }
    if (c->state == CONN_CLOSING)
        evbuffer_drain(in, evbuffer_get_length(in));
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (c->state == CONN_CLOSING)
        conn_free(c);
    else if (c->replay_paused)
        delivery_drained(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->state == CONN_CLOSING) {
            conn_free(c); /* could not flush in time */
            return;
        }
        LOG(INFO, "conn_timeout", "dev=%s reason=idle_timeout", c->dev);
        /* The read side timed out and libevent disabled it; say bye. */
        conn_bye(c, "idle_timeout");
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        LOG(DEBUG, "conn_closed", "dev=%s eof=%d", c->dev,
            (what & BEV_EVENT_EOF) != 0);
        conn_free(c);
    }
}

/* The login deadline (NEW) or the bridge's answer (LOGGING_IN) passed;
 * c is already off its queue. */
static void conn_deadline(struct conn *c)
{
    if (c->state == CONN_NEW) {
        LOG(INFO, "conn_timeout", "dev=%s reason=login_timeout", c->dev);
        conn_bye(c, "login_timeout");
    } else if (c->state == CONN_LOGGING_IN) {
        edge_on_login_timeout(c);
    }
}

void conn_accept(struct edge *edge, int fd, const struct sockaddr *sa, int salen)
{
    uint8_t addr[16] = {0};
    if (sa->sa_family == AF_INET) {
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
    char ip[INET6_ADDRSTRLEN];
    ip_text(addr, ip, sizeof(ip));
    uintptr_t unauth = (uintptr_t)strmap_get(&edge->unauth, ip);
    if (edge->draining || edge->conns.count >= (size_t)edge->cfg->max_conns ||
        unauth >= (uintptr_t)edge->cfg->max_unauth_per_ip) {
        edge->stats.conns_rejected++;
        LOG(INFO, "conn_rejected", "peer=%s reason=%s", ip,
            edge->draining ? "draining"
            : unauth >= (uintptr_t)edge->cfg->max_unauth_per_ip ? "unauth_per_ip"
                                                                : "max_conns");
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = xcalloc(1, sizeof(*c));
    c->edge = edge;
    c->state = CONN_NEW;
    snprintf(c->dev, sizeof(c->dev), "c%llu",
             (unsigned long long)++edge->next_conn);
    memcpy(c->ip, addr, sizeof(c->ip));
    strmap_put(&edge->unauth, ip, (void *)(unauth + 1));
    if (edge->ssl_ctx) {
        SSL *ssl = SSL_new(edge->ssl_ctx);
        c->bev = bufferevent_openssl_socket_new(edge->base, fd, ssl,
                                                BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        /* Phones vanish without close_notify all the time. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(edge->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    dl_add(c, edge->cfg->login_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    strmap_put(&edge->conns, c->dev, c);
    edge->stats.conns_accepted++;
    LOG(DEBUG, "conn_open", "dev=%s peer=%s tls=%d", c->dev, ip, edge->ssl_ctx != NULL);
    (void)salen;
}

void conn_close_all(struct edge *edge, const char *reason)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&edge->conns, &it); e;
         e = strmap_next(&edge->conns, &it))
        conn_bye(e->value, reason);
}

void conn_destroy(struct conn *c)
{
    conn_free(c);
}
