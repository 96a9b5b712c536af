/* conn.c - one phone socket: framing, the connection state machine,
 * timeouts, output limits and deferred close. What a frame means is
 * edge.c's business; this file only checks that it is well-formed and
 * allowed in the current state.
 *
 * Plaintext sockets are read and written here, with no bufferevent: a read
 * goes into one buffer shared by the edge (a socket keeps only the start of
 * a frame not yet whole), frames sent during a loop turn gather in one
 * arena and each socket gets one writev at the end of the turn; EV_WRITE is
 * added only while the kernel refuses bytes. TLS sockets keep an openssl
 * bufferevent. */
#include "edge.h"
#include "frame.h"
#include "jpool.h"
#include "log.h"
#include "phone.h"
#include "seal.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#define MAX_AUTH_FAILURES 3
/* The answer to a heartbeat, written once here rather than built and
 * serialised for every beat of every phone. */
#define HB_FRAME "{\"t\":\"hb\"}"
/* Seconds a closing connection may take to flush its last frames. */
#define CLOSE_FLUSH_TIMEOUT 2
/* Deadlines handled per run of the sweep: other sockets wait for no more
 * than this many closes. */
#define SWEEP_BATCH 256

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

/* ---- deadlines outside READY: one timer per edge --------------------------
 * A socket in NEW must log in within login_timeout of its accept (or of its
 * last failed login); one in LOGGING_IN gets the bridge's answer within
 * bridge_timeout; one in CLOSING is freed CLOSE_FLUSH_TIMEOUT after its
 * close, flushed or not. Each timeout is the same for every socket of an
 * edge, so each state's sockets queue in deadline order and one timer, armed
 * for the earliest head, serves them all: an idle socket owns no event of
 * its own, and no bufferevent timeout is needed (an openssl bufferevent
 * stuck in its handshake never fires one). */
struct dl_queue {
    struct conn *head, *tail;
};

#define DL_QUEUES 3

struct conn_deadlines {
    struct event *ev;
    struct dl_queue q[DL_QUEUES]; /* [0] NEW, [1] LOGGING_IN, [2] CLOSING */
};

/* The queue of c's state (NEW, LOGGING_IN or CLOSING). */
static struct dl_queue *dl_queue_of(struct conn_deadlines *dl, const struct conn *c)
{
    return &dl->q[c->state == CONN_LOGGING_IN ? 1 : c->state == CONN_CLOSING ? 2 : 0];
}

static bool queued_state(const struct conn *c)
{
    return c->state != CONN_READY;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg);

static struct conn_deadlines *deadlines(struct edge *edge)
{
    if (!edge->deadlines) {
        edge->deadlines = xcalloc(1, sizeof(*edge->deadlines));
        edge->deadlines->ev = evtimer_new(edge->base, sweep_cb, edge);
    }
    return edge->deadlines;
}

static void conn_io_free(struct edge *edge);

void conn_deadlines_free(struct edge *edge)
{
    conn_io_free(edge);
    if (!edge->deadlines)
        return;
    event_free(edge->deadlines->ev);
    free(edge->deadlines);
    edge->deadlines = NULL;
}

/* Arm the timer for the earliest deadline of all queues. */
static void sweep_arm(struct conn_deadlines *dl)
{
    int64_t first = INT64_MAX;
    for (int i = 0; i < DL_QUEUES; i++)
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

/* Queue c (not READY: its state picks the queue) for a deadline timeout_s
 * from now. */
static void dl_add(struct conn *c, long timeout_s)
{
    struct conn_deadlines *dl = deadlines(c->edge);
    struct dl_queue *q = dl_queue_of(dl, c);
    c->deadline_ms = util_mono_ms() + (int64_t)timeout_s * 1000;
    c->dl_next = NULL;
    c->dl_prev = q->tail;
    if (q->tail)
        q->tail->dl_next = c;
    else
        q->head = c;
    q->tail = c;
    if (q->head == c)
        sweep_arm(dl); /* a new head may come before the other queues' */
}

/* Take c (not READY) off its queue, if it is on it. A removed head may
 * leave the timer armed early: sweep_cb re-arms. */
static void dl_remove(struct conn *c)
{
    struct conn_deadlines *dl = c->edge->deadlines;
    if (!dl)
        return;
    struct dl_queue *q = dl_queue_of(dl, c);
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
    int n = 0;
    for (int i = 0; i < DL_QUEUES; i++) {
        struct conn *c;
        while ((c = dl->q[i].head) && c->deadline_ms <= now) {
            if (n++ == SWEEP_BATCH) {
                /* A storm's worth of deadlines: the rest after whatever
                 * else is ready (the timer fires again at once). */
                struct timeval zero = {0, 0};
                evtimer_add(dl->ev, &zero);
                return;
            }
            dl_remove(c);
            conn_deadline(c); /* may queue it again, close or free it */
        }
    }
    sweep_arm(dl);
}

/* ---- plaintext I/O: one read buffer, one output arena per edge ----------- */
struct conn_io {
    char *rbuf;                   /* plaintext reads land here, but for the
                                     rest of a frame a socket keeps */
    size_t rcap;                  /* READ_CHUNK + a header's start */
    struct outq_arena arena;      /* frames of this loop turn */
    struct event *flush_ev;       /* made active when flush_head gets one */
    struct conn *flush_head;      /* sockets to flush or free this turn */
    const struct timeval *idle_tv; /* READY's read timeout, as a libevent
                                      common timeout (O(1) to reset) */
};

/* Bytes read at once past the frame in progress. */
#define READ_CHUNK 65536

static void flush_cb(evutil_socket_t fd, short what, void *arg);

static struct conn_io *conn_io(struct edge *edge)
{
    if (!edge->io) {
        struct conn_io *io = xcalloc(1, sizeof(*io));
        io->rcap = FRAME_HEADER + READ_CHUNK;
        io->rbuf = xmalloc(io->rcap);
        io->flush_ev = event_new(edge->base, -1, 0, flush_cb, edge);
        struct timeval tv = {(time_t)(2 * edge->cfg->heartbeat), 0};
        io->idle_tv = event_base_init_common_timeout(edge->base, &tv);
        edge->io = io;
    }
    return edge->io;
}

static void conn_io_free(struct edge *edge)
{
    struct conn_io *io = edge->io;
    if (!io)
        return;
    event_free(io->flush_ev);
    outq_arena_free(&io->arena);
    free(io->rbuf);
    free(io);
    edge->io = NULL;
}

/* Flush c's output (or free it, if it is closing and flushed) at the end
 * of this loop turn. */
static void flush_schedule(struct conn *c)
{
    if (c->fl_queued)
        return;
    struct conn_io *io = c->edge->io;
    c->fl_prev = NULL;
    c->fl_next = io->flush_head;
    if (io->flush_head)
        io->flush_head->fl_prev = c;
    else
        event_active(io->flush_ev, EV_WRITE, 0);
    io->flush_head = c;
    c->fl_queued = true;
}

static void flush_unlink(struct conn *c)
{
    if (!c->fl_queued)
        return;
    if (c->fl_prev)
        c->fl_prev->fl_next = c->fl_next;
    else
        c->edge->io->flush_head = c->fl_next;
    if (c->fl_next)
        c->fl_next->fl_prev = c->fl_prev;
    c->fl_prev = c->fl_next = NULL;
    c->fl_queued = false;
}

static void conn_free(struct conn *c);
static void write_ready_cb(evutil_socket_t fd, short what, void *arg);

/* The peer is gone (EOF or a socket error): nothing more is written; the
 * flush at the end of the turn frees it. */
static void plain_gone(struct conn *c, bool eof)
{
    LOG(DEBUG, "conn_closed", "dev=%s eof=%d", c->dev, eof);
    outq_drop(&c->out);
    if (c->wev)
        event_del(c->wev);
    conn_set_state(c, CONN_CLOSING);
    flush_schedule(c);
}

/* After a write of c's output: wait for EV_WRITE while the kernel refuses
 * bytes; once all is written, free a closing socket (only where may_free:
 * never from c's own callback) or let a paused replay go on. */
static void after_write(struct conn *c, bool may_free)
{
    if (outq_pending_own(&c->out)) {
        if (!c->wev)
            c->wev = event_new(c->edge->base, c->fd, EV_WRITE | EV_PERSIST,
                               write_ready_cb, c);
        if (!event_pending(c->wev, EV_WRITE, NULL))
            event_add(c->wev, NULL);
        return;
    }
    if (c->wev && event_pending(c->wev, EV_WRITE, NULL))
        event_del(c->wev);
    if (c->state == CONN_CLOSING) {
        if (may_free)
            conn_free(c);
        else
            flush_schedule(c);
    } else if (c->replay_paused) {
        delivery_drained(c);
    }
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct edge *edge = arg;
    struct conn_io *io = edge->io;
    struct conn *c;
    /* Whatever a flush or a free sends to other sockets joins the list and
     * is written in this same run. */
    while ((c = io->flush_head)) {
        flush_unlink(c);
        if (outq_has_records(&c->out) && outq_flush(&io->arena, &c->out, c->fd) < 0) {
            LOG(DEBUG, "conn_closed", "dev=%s write_error=%s", c->dev, strerror(errno));
            outq_drop(&c->out);
            conn_set_state(c, CONN_CLOSING);
        }
        after_write(c, true);
    }
    outq_arena_reset(&io->arena);
}

static void write_ready_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (outq_write_own(&c->out, fd) < 0) {
        plain_gone(c, false);
        return;
    }
    after_write(c, false);
}

size_t conn_output_pending(const struct conn *c)
{
    if (c->bev)
        return evbuffer_get_length(bufferevent_get_output(c->bev));
    return c->out.queued;
}


/* A partial frame kept between reads, freed. Before the login is done it
 * may be part of a login, which carries the password: overwritten first. */
static void drop_part(struct conn *c)
{
    if (c->part && c->state != CONN_READY)
        OPENSSL_cleanse(c->part, c->part_len);
    free(c->part);
    c->part = NULL;
    c->part_len = 0;
}

static void conn_free(struct conn *c)
{
    if (queued_state(c))
        dl_remove(c);
    if (unauthenticated(c))
        unauth_release(c);
    edge_on_conn_gone(c);
    c->edge->freed++;
    strmap_del(&c->edge->conns, c->dev);
    json_decref(c->held);
    json_decref(c->inflight);
    seal_wipe_free(c->pending_pass);
    if (c->bev) {
        bufferevent_free(c->bev);
    } else {
        flush_unlink(c);
        event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        outq_drop(&c->out);
        drop_part(c);
        evutil_closesocket(c->fd);
    }
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
    if (queued_state(c))
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
        if (c->bev) {
            tv.tv_sec = 2 * c->edge->cfg->heartbeat;
            bufferevent_set_timeouts(c->bev, &tv, NULL);
        } else {
            event_add(c->rev, c->edge->io->idle_tv);
        }
        break;
    case CONN_CLOSING:
        /* It stops counting against its address now, not once flushed
         * (at most CLOSE_FLUSH_TIMEOUT later). */
        if (was_unauth)
            unauth_release(c);
        /* Its deadline queue bounds the flush, not a bufferevent timeout;
         * the union's bytes now hold the queue links. */
        if (c->bev) {
            bufferevent_disable(c->bev, EV_READ);
            bufferevent_set_timeouts(c->bev, NULL, NULL);
        } else {
            event_del(c->rev);
        }
        dl_add(c, CLOSE_FLUSH_TIMEOUT);
        break;
    }
}

/* A TLS socket whose handshake has not finished: nothing written to it can
 * ever reach the peer. */
static bool tls_unfinished(const struct conn *c)
{
    SSL *ssl = c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    return ssl && !SSL_is_init_finished(ssl);
}

/* Close once the output is flushed, CLOSE_FLUSH_TIMEOUT at most. Never
 * frees from inside a callback: the write callback (or the deadline sweep)
 * does it later. */
static void conn_close(struct conn *c)
{
    if (c->state != CONN_CLOSING)
        conn_set_state(c, CONN_CLOSING);
    if (!c->bev) {
        flush_schedule(c); /* frees it once its output is written */
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (tls_unfinished(c))
        evbuffer_drain(out, evbuffer_get_length(out));
    if (evbuffer_get_length(out) == 0) {
        /* Nothing to flush: let the write callback run once to free it. */
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS |
                                                  BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void send_frame(struct conn *c, json_t *obj, bool paced);

/* A frame longer than the max this edge announced: send what phone_fit makes
 * of it, or, for a frame it cannot shorten, an error in its place. Never
 * expected for frames other than msg, hist and roster, whose parts the
 * bridge bounds. */
static void send_oversized(struct conn *c, json_t *obj, size_t len, bool paced)
{
    const char *t = json_string_value(json_object_get(obj, "t"));
    json_t *frames = phone_fit(obj, (size_t)c->edge->cfg->max_frame);
    if (frames)
        LOG(INFO, "frame_fitted", "dev=%s t=%s bytes=%zu max=%ld frames=%zu", c->dev,
            t ? t : "-", len, c->edge->cfg->max_frame, json_array_size(frames));
    else
        LOG(ERROR, "frame_dropped", "dev=%s t=%s bytes=%zu max=%ld", c->dev,
            t ? t : "-", len, c->edge->cfg->max_frame);
    c->edge->stats.frames_fitted++;
    if (!frames) {
        const char *id = json_string_value(json_object_get(obj, "id"));
        conn_error(c, PERR_INTERNAL, "the server had a frame too long for this connection", id);
    } else {
        size_t i;
        json_t *f;
        json_array_foreach(frames, i, f)
            send_frame(c, json_incref(f), paced);
        json_decref(frames);
    }
    json_decref(obj);
}

/* Queue the frame (len bytes, header included) just written at p, in the
 * arena's reserved room. */
static void queue_frame(struct conn *c, const char *p, size_t len, bool paced)
{
    struct outq_arena *arena = &c->edge->io->arena;
    size_t queued = conn_output_pending(c);
    if (!paced && queued + len > (size_t)c->edge->cfg->max_output) {
        /* A phone that does not read is cut rather than letting its queue
         * grow without bound. */
        LOG(WARN, "conn_slow_reader", "dev=%s queued=%zu", c->dev, queued);
        c->edge->stats.slow_readers++;
        if (c->bev) {
            struct evbuffer *out = bufferevent_get_output(c->bev);
            evbuffer_drain(out, evbuffer_get_length(out));
        } else {
            outq_drop(&c->out);
        }
        conn_close(c);
        return;
    }
    if (c->bev) {
        evbuffer_add(bufferevent_get_output(c->bev), p, len);
        return;
    }
    outq_commit(arena, &c->out, len);
    if (!outq_pending_own(&c->out))
        flush_schedule(c); /* (else EV_WRITE is armed and writes it) */
}

void conn_send_raw(struct conn *c, const char *body, size_t len)
{
    if (c->state == CONN_CLOSING)
        return;
    if (len > (size_t)c->edge->cfg->max_frame) {
        LOG(ERROR, "frame_dropped", "dev=%s t=raw bytes=%zu max=%ld", c->dev, len,
            c->edge->cfg->max_frame);
        c->edge->stats.frames_fitted++;
        conn_error(c, PERR_INTERNAL, "the server had a frame too long for this connection", NULL);
        return;
    }
    size_t room;
    char *p = outq_reserve(&conn_io(c->edge)->arena, FRAME_HEADER + len, &room);
    frame_header((uint8_t *)p, (uint32_t)len);
    memcpy(p + FRAME_HEADER, body, len);
    queue_frame(c, p, FRAME_HEADER + len, false);
}

/* Queue obj (consumed) as one frame: serialised once, straight into the
 * edge's output arena (TLS: copied from there into the bufferevent). */
static void send_frame(struct conn *c, json_t *obj, bool paced)
{
    if (c->state == CONN_CLOSING) {
        json_decref(obj);
        return;
    }
    struct outq_arena *arena = &conn_io(c->edge)->arena;
    size_t room;
    char *p = outq_reserve(arena, FRAME_HEADER + 256, &room);
    size_t n = phone_encode_to(obj, p, room);
    if (n > (size_t)c->edge->cfg->max_frame) {
        send_oversized(c, obj, n, paced);
        return;
    }
    if (FRAME_HEADER + n > room) {
        /* Longer than the arena's free room: once more, in room enough. */
        p = outq_reserve(arena, FRAME_HEADER + n, &room);
        phone_encode_to(obj, p, room);
    }
    json_decref(obj);
    queue_frame(c, p, FRAME_HEADER + n, paced);
}

void conn_send(struct conn *c, json_t *obj)
{
    send_frame(c, obj, false);
}

/* A frame written straight into the arena by write (phone.h: the body's
 * length, written only when it fits cap). False, with nothing sent, when
 * it is longer than max_frame: the caller sends the frame's object
 * instead, which send_frame fits. */
typedef size_t frame_writer(const void *arg, char *buf, size_t cap);

static bool send_written(struct conn *c, frame_writer *write, const void *arg,
                         bool paced)
{
    struct outq_arena *arena = &conn_io(c->edge)->arena;
    size_t room;
    char *p = outq_reserve(arena, FRAME_HEADER + 256, &room);
    size_t n = write(arg, p, room);
    if (n > (size_t)c->edge->cfg->max_frame)
        return false;
    if (FRAME_HEADER + n > room) {
        p = outq_reserve(arena, FRAME_HEADER + n, &room);
        write(arg, p, room);
    }
    queue_frame(c, p, FRAME_HEADER + n, paced);
    return true;
}

struct msg_arg {
    const struct env *e;
    int64_t now_ms;
};

static size_t write_msg(const void *arg, char *buf, size_t cap)
{
    const struct msg_arg *m = arg;
    return phone_msg_to(m->e, m->now_ms, buf, cap);
}

void conn_send_msg(struct conn *c, const struct env *e, bool paced)
{
    if (c->state == CONN_CLOSING)
        return;
    struct msg_arg m = {e, util_wall_ms()};
    if (!send_written(c, write_msg, &m, paced))
        send_frame(c, phone_msg_frame(e, m.now_ms), paced); /* (cut to fit) */
}

static size_t write_ack(const void *arg, char *buf, size_t cap)
{
    return phone_ack_to(arg, buf, cap);
}

void conn_send_ack(struct conn *c, json_t *id)
{
    if (c->state == CONN_CLOSING)
        return;
    if (!send_written(c, write_ack, id, false))
        send_frame(c, json_pack("{s:s, s:O}", "t", "ack", "id", id), false);
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

static void conn_frame_dispatch(struct conn *c, const char *body, size_t len);

/* One complete frame body: decode, check it is allowed now, dispatch. A
 * frame that may carry a password (any before the login is done, and any
 * later one that says "pass": a login sent again, a room's password) has
 * every copy of its text overwritten once it is handled (the body where it
 * was read, and what jansson freed meanwhile), so the edge's memory keeps
 * no password (the bridge keeps it, sealed: common/resume.h). */
static void conn_frame(struct conn *c, const char *body, size_t len)
{
    bool secret = c->state == CONN_NEW || c->state == CONN_LOGGING_IN ||
                  memmem(body, len, "pass", 4) != NULL;
    if (!secret) {
        conn_frame_dispatch(c, body, len);
        return;
    }
    jpool_secret(true);
    conn_frame_dispatch(c, body, len);
    jpool_secret(false);
    /* (The read buffer is the edge's own: writable, and nothing reads this
     * frame again.) */
    OPENSSL_cleanse((char *)body, len);
}

static void conn_frame_dispatch(struct conn *c, const char *body, size_t len)
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
        conn_send_raw(c, HB_FRAME, sizeof(HB_FRAME) - 1);
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
        if (c->state != CONN_READY) {
            conn_error(c, PERR_NOT_LOGGED_IN, "log in first", NULL);
        } else {
            edge_on_logout(c);
            conn_bye(c, "logout");
        }
        break;
    default:
        c->edge->stats.bad_frames++;
        conn_error(c, PERR_UNKNOWN_TYPE, "unknown frame type", NULL);
        break;
    }
    json_decref(f);
}

/* A header announcing a body outside FRAME_MIN_BODY..max: an error, then
 * bye (the stream cannot be resynchronised). */
static void bad_length(struct conn *c, size_t body_len, size_t max)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "frame length %zu outside %d..%zu", body_len,
             FRAME_MIN_BODY, max);
    c->edge->stats.bad_frames++;
    LOG(INFO, "conn_bad_length", "dev=%s len=%zu", c->dev, body_len);
    conn_error(c, PERR_TOO_BIG, msg, NULL);
    conn_bye(c, "protocol_error");
}

/* Handle the whole frames at the start of buf (len bytes); returns how many
 * bytes they took (all of them once the socket is closing). */
static size_t conn_input(struct conn *c, const char *buf, size_t len)
{
    size_t max = (size_t)c->edge->cfg->max_frame, used = 0;
    while (c->state != CONN_CLOSING) {
        const uint8_t *body;
        size_t body_len = 0;
        enum frame_status st = frame_parse((const uint8_t *)buf + used, len - used,
                                           max, &body, &body_len);
        if (st == FRAME_NEED_MORE)
            return used;
        if (st != FRAME_OK) {
            bad_length(c, body_len, max);
            break;
        }
        conn_frame(c, (const char *)body, body_len);
        used += FRAME_HEADER + body_len;
    }
    return len;
}

/* Keep the start of a frame (rest bytes at p) for the next read: in a
 * buffer of the whole frame's size once its header is in, so the rest is
 * read straight after it, never copied again (a phone trickling a long
 * frame a byte at a time costs no more than one sending it at once). */
static void keep_part(struct conn *c, const char *p, size_t rest)
{
    size_t cap = FRAME_HEADER;
    if (rest >= FRAME_HEADER) {
        const uint8_t *body;
        size_t body_len = 0;
        frame_parse((const uint8_t *)p, rest, SIZE_MAX, &body, &body_len);
        cap += body_len; /* (conn_input checked it against max_frame) */
    }
    c->part = xmalloc(cap);
    memcpy(c->part, p, rest);
    c->part_len = (uint32_t)rest;
}

/* A plaintext socket is readable (or, in READY, silent for two heartbeat
 * intervals). One read per wake-up: into the frame c kept, if its header
 * is in, else into the edge's buffer (after the few header bytes c kept);
 * whole frames are handled from there, the start of the next kept. */
static void plain_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (what & EV_TIMEOUT) {
        LOG(INFO, "conn_timeout", "dev=%s reason=idle_timeout", c->dev);
        conn_bye(c, "idle_timeout");
        return;
    }
    ssize_t n;
    if (c->part_len >= FRAME_HEADER) {
        const uint8_t *body;
        size_t body_len = 0;
        frame_parse((const uint8_t *)c->part, c->part_len, SIZE_MAX, &body, &body_len);
        size_t total = FRAME_HEADER + body_len;
        n = read(fd, c->part + c->part_len, total - c->part_len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            plain_gone(c, n == 0);
            return;
        }
        c->part_len += (uint32_t)n;
        if (c->part_len == total) {
            /* Whole: what came behind it is read at the next wake-up. */
            char *whole = c->part;
            c->part = NULL;
            c->part_len = 0;
            conn_input(c, whole, total);
            free(whole);
        }
        return;
    }
    struct conn_io *io = c->edge->io;
    size_t have = c->part_len;
    if (have)
        memcpy(io->rbuf, c->part, have);
    n = read(fd, io->rbuf + have, io->rcap - have);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        plain_gone(c, n == 0);
        return;
    }
    drop_part(c);
    size_t len = have + (size_t)n;
    size_t used = conn_input(c, io->rbuf, len);
    if (used < len)
        keep_part(c, io->rbuf + used, len - used);
}

/* TLS: the openssl bufferevent has decrypted bytes. */
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
            bad_length(c, body_len, max);
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

/* TLS: the output drained. */
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

/* TLS: timeout, EOF or error. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->state == CONN_CLOSING)
            return; /* (none is set in CLOSING: the sweep frees it) */
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

/* The login deadline (NEW), the bridge's answer (LOGGING_IN) or the flush
 * of a close (CLOSING) passed; c is already off its queue. */
static void conn_deadline(struct conn *c)
{
    if (c->state == CONN_NEW) {
        LOG(INFO, "conn_timeout", "dev=%s reason=login_timeout", c->dev);
        conn_bye(c, "login_timeout");
    } else if (c->state == CONN_LOGGING_IN) {
        edge_on_login_timeout(c);
    } else if (c->state == CONN_CLOSING) {
        /* The peer does not read (or never finished its handshake). */
        LOG(DEBUG, "conn_close_forced", "dev=%s queued=%zu", c->dev,
            conn_output_pending(c));
        c->edge->stats.closes_forced++;
        conn_free(c);
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
        /* A storm is refused at its own pace: one line a second. */
        uint64_t skipped;
        if (log_limit_ok(&edge->reject_log, &skipped))
            LOG(INFO, "conn_rejected", "peer=%s reason=%s suppressed=%llu", ip,
                edge->draining ? "draining"
                : unauth >= (uintptr_t)edge->cfg->max_unauth_per_ip ? "unauth_per_ip"
                                                                    : "max_conns",
                (unsigned long long)skipped);
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
    c->fd = fd;
    conn_io(edge);
    if (edge->ssl_ctx) {
        SSL *ssl = SSL_new(edge->ssl_ctx);
        c->bev = bufferevent_openssl_socket_new(edge->base, fd, ssl,
                                                BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        /* Phones vanish without close_notify all the time. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    } else {
        /* (The listener made the socket non-blocking.) */
        c->rev = event_new(edge->base, fd, EV_READ | EV_PERSIST, plain_read_cb, c);
        event_add(c->rev, NULL);
    }
    dl_add(c, edge->cfg->login_timeout);
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
