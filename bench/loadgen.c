/* bench/loadgen.c - plays many phones against imb-edge (phone protocol v1),
 * or many plain TCP clients against any server, on one libevent loop.
 *
 * Modes (--mode):
 *   idle   open --conns sockets (spread over source addresses 127.0.0.S..)
 *          and, unless --raw, log each in as --user-fmt; then print
 *          {"event":"ready",...} on stdout and hold them until stdin reaches
 *          EOF or --hold seconds pass; heartbeats are sent as the edge asks.
 *   chat   --conns phones log in as --user-fmt and each keeps --inflight
 *          messages in flight to --peer-fmt (an echo peer: the desktop side),
 *          measuring round trips (send -> echoed msg frame back). An echo
 *          of a message sent before this process started (an earlier run's,
 *          stored while no phone was there and replayed at login) is
 *          counted in "stale_echoes" and neither timed nor answered.
 *   pairs  like chat, but the echo peers are phones too, logged in as
 *          --peer-fmt on --port2 (another edge): phone -> edge A -> ... ->
 *          edge B -> phone -> ... -> edge A -> phone.
 *   wire   one phone, against an echo peer: bytes on the phone link for a
 *          login, a heartbeat, an outgoing msg + its ack, an incoming msg +
 *          its ack (measured by counting what the socket read and wrote).
 *
 *   --reconnect (idle): a logged-in phone whose socket closes (its edge
 *          stopped or died) connects again after a random 0..1 s, doubling
 *          up to 8 s while connects fail, and logs in with the epoch and seq
 *          it last saw (a resume). Once every phone lost is back it prints
 *          {"event":"resumed","phones":N,"ms":T} (T from the first loss).
 *
 * The protocol (framing, login, resume, heartbeats, acks, the reconnect
 * backoff) is the client library's (client/imb_client.h): one imb_client
 * per phone, loadgen being its transport. Compared with the hand-written
 * frame scanning it replaced, it costs about 1.5-2x the loadgen CPU per
 * message (every frame parsed with jansson, every msg built as JSON).
 *
 * Results: one JSON object on stdout at the end (and the ready event in idle
 * mode). Progress: stderr. Every wait is bounded by --timeout.
 * Only 127.0.0.x addresses are used.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "imb_client.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum role { R_IDLE, R_PINGER, R_ECHOER, R_WIRE };
enum pstate { P_CONNECTING, P_CONNECTED, P_LOGGING_IN, P_READY, P_DEAD };

struct phone {
    struct bufferevent *bev;
    enum role role;
    enum pstate state;
    int idx;             /* index within its role */
    int port;
    char jid[96];
    char peer[96];
    uint64_t sent_msgs;
    uint64_t bytes_in, bytes_out;
    int src;             /* source address index */
    struct imb_client *cl; /* the protocol (NULL with --raw); owns epoch/seq, acks, heartbeats */
    struct event *timer; /* fires at the library's next deadline */
    int64_t timer_at;    /* the deadline the timer is armed for; 0: not armed */
    bool stopped;        /* the library is not driven any more (a phone lost for good) */
    bool lost;           /* --reconnect: closed once ready, not back yet */
};

static struct {
    const char *mode;
    const char *host;
    int port, port2;
    int conns;
    int src_base, src_count;
    bool raw;
    const char *user_fmt, *peer_fmt, *pass;
    int user_start;
    int peers;
    int inflight;
    double warmup, duration, hold, timeout;
    int body_size;
    int concurrency;
    int hb; /* seconds between heartbeats (from welcome) */
    bool reconnect;
} opt = {
    .mode = "idle", .host = "127.0.0.1", .port = 7222, .conns = 1,
    .src_base = 2, .src_count = 0, .user_fmt = "u%d@localhost",
    .peer_fmt = "echo%d@localhost", .pass = "secret", .peers = 1,
    .inflight = 1, .warmup = 1, .duration = 5, .hold = 600, .timeout = 120,
    .body_size = 32, .concurrency = 256, .hb = 30,
};

static struct event_base *base;
static struct phone *phones;   /* pingers/idle first, then echoers */
static int nphones;
static int next_to_start;       /* index of the next phone to connect */
static int pending;             /* connects/logins in progress */
static int n_connected, n_ready, n_failed, n_closed;
static int n_target_ready;      /* phones that must reach READY (or connected, raw) */
static int64_t t_start_ms, t_ready_ms, t_measure_ms, t_end_ms;
static int64_t t_start_us; /* this process's start: older echoes are stale */
static bool measuring, finished;
static double *samples;         /* RTTs in microseconds */
static size_t nsamples, capsamples;
static uint64_t rtt_total, msgs_in_total, errors_total, acks_total, unexpected_close,
    stale_echoes;
static uint64_t warm_rtts;
/* msg frames received when the timed window opened and closed: messages
 * delivered to phones in the window (both directions in pairs mode). */
static uint64_t msgs_in_at_measure, msgs_in_at_end;
static struct event *tick_ev, *stdin_ev;
/* --reconnect: phones lost and not back, the first loss, the last return. */
static int n_lost, n_lost_total;
static int64_t t_first_loss_ms;
static char *body_pad;

/* wire mode */
static int wire_step;
static char wire_json[2048];
static size_t wire_len;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* ---- the client library: one imb_client per phone -----------------------
 * The library (client/imb_client.h) does the protocol: framing, login (with
 * epoch/seq on a resume), heartbeats, acks, the reconnect backoff. loadgen
 * is its transport: it opens the sockets (from its source addresses), feeds
 * bytes in, writes what the library has to send, and runs one timer per
 * phone at the library's next deadline (armed lazily: only when the
 * deadline moves earlier; a timer that fires early just re-arms). */

static void drive(struct phone *p);

/* Write what the library has to send; returns the bytes. */
static size_t flush_out(struct phone *p)
{
    const uint8_t *b;
    size_t n, total = 0;
    while (p->bev && (n = imb_client_output(p->cl, &b)) > 0) {
        evbuffer_add(bufferevent_get_output(p->bev), b, n);
        imb_client_consumed(p->cl, n);
        total += n;
    }
    p->bytes_out += total;
    return total;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct phone *p = arg;
    p->timer_at = 0;
    if (finished || p->stopped)
        return;
    imb_client_tick(p->cl, now_ms());
    drive(p);
}

static void rearm(struct phone *p)
{
    int64_t d = imb_client_next_deadline(p->cl);
    if (d == INT64_MAX || (p->timer_at && p->timer_at <= d))
        return;
    int64_t wait = d - now_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(p->timer, &tv);
    p->timer_at = d;
}

static void send_ping_msg(struct phone *p)
{
    /* body: "<send time us>:<pad>" */
    char id[48], body[4200];
    p->sent_msgs++;
    snprintf(id, sizeof(id), "m%d-%" PRIu64, p->idx, p->sent_msgs);
    snprintf(body, sizeof(body), "%" PRId64 ":%s", now_us(), body_pad);
    char err[80];
    if (imb_client_send_msg(p->cl, p->peer, body, false, id, NULL, err, sizeof(err)) != 0)
        note("phone %s: not sent: %s", p->jid, err);
}

/* ---- phone lifecycle ----------------------------------------------------- */

static void start_more(void);
static void check_done(void);
static void phone_connect(struct phone *p);

static void phone_dead(struct phone *p, const char *why)
{
    if (p->state == P_DEAD)
        return;
    bool was_pending = p->state == P_CONNECTING || p->state == P_LOGGING_IN ||
                       (p->state == P_CONNECTED && !opt.raw);
    bool was_ready = p->state == P_READY;
    if (p->state == P_READY || (opt.raw && p->state == P_CONNECTED)) {
        n_closed++;
        if (!finished)
            unexpected_close++;
    } else if (!p->lost) {
        n_failed++;
    }
    if (n_failed + (int)unexpected_close <= 5 && !finished && !opt.reconnect)
        note("phone %s (%d) lost: %s", p->jid[0] ? p->jid : "-", p->idx, why);
    p->state = P_DEAD;
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    if (was_pending) {
        pending--;
        start_more();
    }
    if (opt.reconnect && !finished && t_ready_ms && (p->lost || was_ready)) {
        /* The library connects again after its backoff (random, up to
         * 1 s doubling to 8 s) and resumes with epoch/seq. */
        if (!p->lost) {
            p->lost = true;
            n_lost++;
            n_lost_total++;
            if (!t_first_loss_ms)
                t_first_loss_ms = now_ms();
        }
        return;
    }
    check_done();
}

static void record_rtt(int64_t us)
{
    if (measuring) {
        rtt_total++;
        if (nsamples == capsamples) {
            capsamples = capsamples ? capsamples * 2 : 65536;
            if (capsamples > 20000000)
                capsamples = 20000000;
            samples = realloc(samples, capsamples * sizeof(*samples));
            if (!samples)
                die("out of memory");
        }
        if (nsamples < capsamples)
            samples[nsamples++] = (double)us;
    } else {
        warm_rtts++;
    }
}

static void became_ready(struct phone *p)
{
    p->state = P_READY;
    pending--;
    if (p->lost) {
        p->lost = false;
        if (--n_lost == 0) {
            printf("{\"event\":\"resumed\",\"phones\":%d,\"ms\":%" PRId64 "}\n", n_lost_total,
                   now_ms() - t_first_loss_ms);
            fflush(stdout);
            note("%d phones back in %.2f s", n_lost_total,
                 (double)(now_ms() - t_first_loss_ms) / 1000.0);
            n_lost_total = 0;
            t_first_loss_ms = 0;
        }
        start_more();
        return;
    }
    n_ready++;
    start_more();
    check_done();
}

/* wire mode: the size on the wire (4-byte header included) of the first
 * frame of each kind, in each direction. */
static void wire_note(const char *name, size_t n)
{
    size_t room = sizeof(wire_json) - wire_len;
    int k = snprintf(wire_json + wire_len, room, "%s\"%s\":%zu", wire_len ? "," : "", name, n);
    if (k > 0 && (size_t)k < room)
        wire_len += (size_t)k;
}

static bool wire_got_ack, wire_got_msg;

/* 0: login sent, wait for sync; 1: hb sent, wait for hb; 2: msg sent, wait
 * for its ack and the echoed msg; then ack the msg's seq and stop. Incoming
 * sizes: the frame as the edge wrote it (compact JSON, in order), re-encoded. */
static void wire_on_event(struct phone *p, const struct imb_event *ev)
{
    if (!ev->frame || !ev->t)
        return;
    char name[40];
    snprintf(name, sizeof(name), "in_%s", ev->t);
    if (!strstr(wire_json, name)) {
        char *s = json_dumps(ev->frame, JSON_COMPACT);
        wire_note(name, (s ? strlen(s) : 0) + 4);
        free(s);
    }
    if (wire_step == 0 && ev->type == IMB_EV_SYNC) {
        wire_step = 1;
        flush_out(p);
        json_t *hb = json_pack("{ss}", "t", "hb");
        imb_client_send(p->cl, hb, NULL, 0);
        json_decref(hb);
        wire_note("out_hb", flush_out(p));
        return;
    }
    if (wire_step == 1 && strcmp(ev->t, "hb") == 0) {
        wire_step = 2;
        p->sent_msgs++;
        /* A fresh id per run: a reused one is (rightly) acked by the
         * bridge's duplicate filter without being sent again. */
        char id[48];
        snprintf(id, sizeof(id), "c%" PRIu64 "%04x", p->sent_msgs, (unsigned)(getpid() & 0xffff));
        flush_out(p);
        imb_client_send_msg(p->cl, p->peer, body_pad, false, id, NULL, NULL, 0);
        wire_note("out_msg", flush_out(p));
        return;
    }
    if (wire_step == 2) {
        if (ev->type == IMB_EV_ACK)
            wire_got_ack = true;
        if (ev->type == IMB_EV_MSG) {
            wire_got_msg = true;
            /* Taken: the library's cumulative ack goes out now. */
            wire_note("out_ack", flush_out(p));
        }
        if (wire_got_ack && wire_got_msg) {
            wire_step = 4;
            finished = true;
            event_base_loopbreak(base);
        }
    }
}

static void on_client_event(struct phone *p, const struct imb_event *ev)
{
    if (p->role == R_WIRE && ev->type != IMB_EV_CONNECT && ev->type != IMB_EV_DISCONNECT) {
        if (ev->type == IMB_EV_SYNC && p->state == P_LOGGING_IN)
            became_ready(p);
        wire_on_event(p, ev);
        return;
    }
    switch (ev->type) {
    case IMB_EV_CONNECT:
        phone_connect(p);
        break;
    case IMB_EV_DISCONNECT:
        if (p->state != P_DEAD)
            phone_dead(p, ev->reason ? ev->reason : "closed");
        if (!p->lost || ev->final) {
            /* Lost for good (no --reconnect, or before the phones were all
             * up): the library's own retry is not wanted. */
            evtimer_del(p->timer);
            p->timer_at = 0;
            p->stopped = true;
        }
        break;
    case IMB_EV_SYNC:
        if (p->state == P_LOGGING_IN)
            became_ready(p);
        break;
    case IMB_EV_MSG:
        msgs_in_total++;
        if (p->role == R_PINGER) {
            int64_t t0 = strtoll(ev->body, NULL, 10);
            /* An echo of a message an earlier run sent (stored while no
             * phone was there, replayed at this login) is not one of ours:
             * answering it would add to the messages in flight, run after
             * run, and its round trip is not this run's. */
            if (t0 < t_start_us) {
                stale_echoes++;
                break;
            }
            record_rtt(now_us() - t0);
            if (!finished)
                send_ping_msg(p);
        } else if (p->role == R_ECHOER) {
            char to[128], id[48];
            snprintf(to, sizeof(to), "%.*s", (int)strcspn(ev->from, "/"), ev->from);
            p->sent_msgs++;
            snprintf(id, sizeof(id), "e%d-%" PRIu64, p->idx, p->sent_msgs);
            imb_client_send_msg(p->cl, to, ev->body, false, id, NULL, NULL, 0);
        }
        break;
    case IMB_EV_ACK:
        acks_total++;
        break;
    case IMB_EV_ERROR:
        errors_total++;
        if (errors_total <= 5) {
            char *s = json_dumps(ev->frame, JSON_COMPACT);
            note("error frame for %s: %s", p->jid, s ? s : "?");
            free(s);
        }
        if (p->state == P_LOGGING_IN)
            phone_dead(p, "login refused");
        break;
    case IMB_EV_BYE:
        note("bye for %s: %s", p->jid, ev->reason);
        break;
    case IMB_EV_PROTOCOL:
        note("protocol error for %s: %s", p->jid, ev->msg);
        break;
    default:
        break;
    }
}

/* After every call into the library: its events, its output, its timer. */
static void drive(struct phone *p)
{
    const struct imb_event *ev;
    while (imb_client_next_event(p->cl, &ev))
        on_client_event(p, ev);
    flush_out(p);
    if (!p->stopped)
        rearm(p);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct phone *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    p->bytes_in += len;
    if (opt.raw) {
        evbuffer_drain(in, len);
        return;
    }
    /* The library copies what it needs: hand it the buffer's chunks. */
    int64_t now = now_ms();
    while (p->bev == bev && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        imb_client_input(p->cl, v.iov_base, v.iov_len, now);
        if (p->bev != bev)
            break; /* closed meanwhile (a DISCONNECT freed it) */
        evbuffer_drain(in, v.iov_len);
    }
    drive(p);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct phone *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        p->state = P_CONNECTED;
        n_connected++;
        if (opt.raw) {
            pending--;
            start_more();
            check_done();
            return;
        }
        p->state = P_LOGGING_IN;
        imb_client_connected(p->cl, now_ms()); /* writes the login */
        if (p->role == R_WIRE)
            wire_note("out_login", flush_out(p));
        drive(p);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        char why[128];
        snprintf(why, sizeof(why), "%s%s", (what & BEV_EVENT_EOF) ? "eof" : "error ",
                 (what & BEV_EVENT_ERROR) ? strerror(EVUTIL_SOCKET_ERROR()) : "");
        phone_dead(p, why);
        if (!opt.raw) {
            imb_client_closed(p->cl, now_ms());
            drive(p);
        }
    }
}

/* Open the connection (raw mode, or the library's IMB_EV_CONNECT). */
static void phone_connect(struct phone *p)
{
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    struct sockaddr_in src = {0}, dst = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(opt.src_base + p->src));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
        die("bind 127.0.0.%d: %s", opt.src_base + p->src, strerror(errno));
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)p->port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1)
        die("bad host %s", opt.host);
    p->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    p->state = P_CONNECTING;
    pending++;
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        phone_dead(p, "connect failed");
        if (!opt.raw)
            imb_client_closed(p->cl, now_ms()); /* drive() runs after the event loop */
    }
}

/* Start a phone: raw, a socket; else its client, which asks for one. */
static void phone_start(struct phone *p)
{
    if (opt.raw) {
        phone_connect(p);
        return;
    }
    imb_client_start(p->cl, now_ms());
    drive(p);
}
static void start_more(void)
{
    while (pending < opt.concurrency && next_to_start < nphones)
        phone_start(&phones[next_to_start++]);
}

static void print_results(void);

static void begin_traffic(void)
{
    for (int i = 0; i < nphones; i++) {
        struct phone *p = &phones[i];
        if (p->role == R_PINGER && p->state == P_READY) {
            for (int k = 0; k < opt.inflight; k++)
                send_ping_msg(p);
            flush_out(p); /* another phone's drive() may have called us */
            rearm(p);
        }
    }
    t_measure_ms = now_ms() + (int64_t)(opt.warmup * 1000);
    t_end_ms = t_measure_ms + (int64_t)(opt.duration * 1000);
}

static void check_done(void)
{
    if (t_ready_ms)
        return;
    int settled = n_ready + n_failed + (opt.raw ? n_connected : 0);
    if (next_to_start < nphones || settled < nphones)
        return;
    t_ready_ms = now_ms();
    int ok = opt.raw ? n_connected : n_ready;
    note("%d of %d %s in %.2f s (%d failed)", ok, nphones, opt.raw ? "connected" : "logged in",
         (double)(t_ready_ms - t_start_ms) / 1000.0, n_failed);
    if (strcmp(opt.mode, "idle") == 0) {
        printf("{\"event\":\"ready\",\"ok\":%d,\"failed\":%d,\"elapsed_ms\":%" PRId64 "}\n", ok,
               n_failed, t_ready_ms - t_start_ms);
        fflush(stdout);
    } else if (strcmp(opt.mode, "wire") == 0) {
        /* the wire steps run from on_frame */
    } else {
        if (ok < n_target_ready) {
            note("not every phone logged in: giving up");
            finished = true;
            event_base_loopbreak(base);
            return;
        }
        begin_traffic();
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = now_ms();
    if (now - t_start_ms > (int64_t)(opt.timeout * 1000)) {
        note("timeout after %.0f s", opt.timeout);
        finished = true;
        event_base_loopbreak(base);
        return;
    }
    if (t_ready_ms && strcmp(opt.mode, "idle") == 0 &&
        now - t_ready_ms > (int64_t)(opt.hold * 1000)) {
        finished = true;
        event_base_loopbreak(base);
        return;
    }
    if (t_ready_ms && t_end_ms) {
        if (!measuring && now >= t_measure_ms && now < t_end_ms) {
            measuring = true;
            t_measure_ms = now;
            msgs_in_at_measure = msgs_in_total;
            printf("{\"event\":\"measure\"}\n");
            fflush(stdout);
        }
        if (now >= t_end_ms) {
            measuring = false;
            t_end_ms = now;
            msgs_in_at_end = msgs_in_total;
            printf("{\"event\":\"end\"}\n");
            fflush(stdout);
            finished = true;
            event_base_loopbreak(base);
            return;
        }
    }
    /* Heartbeats: the library's, from each phone's timer. */
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        finished = true;
        event_base_loopbreak(base);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double q)
{
    if (!nsamples)
        return 0;
    size_t i = (size_t)(q * (double)(nsamples - 1) + 0.5);
    return samples[i];
}

static void print_results(void)
{
    if (strcmp(opt.mode, "wire") == 0) {
        printf("{\"mode\":\"wire\",\"ok\":%s,\"steps\":{%s}}\n", wire_step == 4 ? "true" : "false",
               wire_json);
        return;
    }
    if (strcmp(opt.mode, "idle") == 0) {
        uint64_t bin = 0, bout = 0;
        for (int i = 0; i < nphones; i++) {
            bin += phones[i].bytes_in;
            bout += phones[i].bytes_out;
        }
        printf("{\"mode\":\"idle\",\"conns\":%d,\"ok\":%d,\"failed\":%d,\"closed_early\":%" PRIu64
               ",\"ready_ms\":%" PRId64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 "}\n",
               nphones, opt.raw ? n_connected : n_ready, n_failed, unexpected_close,
               t_ready_ms ? t_ready_ms - t_start_ms : -1, bin, bout);
        return;
    }
    qsort(samples, nsamples, sizeof(*samples), cmp_double);
    double secs = t_end_ms > t_measure_ms ? (double)(t_end_ms - t_measure_ms) / 1000.0 : 0;
    double sum = 0;
    for (size_t i = 0; i < nsamples; i++)
        sum += samples[i];
    int pingers = 0;
    for (int i = 0; i < nphones; i++)
        pingers += phones[i].role == R_PINGER;
    printf("{\"mode\":\"%s\",\"pingers\":%d,\"inflight\":%d,\"ok\":%s,\"logged_in\":%d,\"failed\":%d,"
           "\"seconds\":%.3f,\"round_trips\":%" PRIu64 ",\"rt_per_s\":%.1f,\"msgs_per_s\":%.1f,"
           "\"rtt_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f,\"mean\":%.1f},"
           "\"errors\":%" PRIu64 ",\"acks\":%" PRIu64 ",\"closed_early\":%" PRIu64
           ",\"delivered\":%" PRIu64 ",\"stale_echoes\":%" PRIu64 "}\n",
           opt.mode, pingers, opt.inflight, (secs > 0 && nsamples > 0) ? "true" : "false", n_ready,
           n_failed, secs, rtt_total, secs > 0 ? (double)rtt_total / secs : 0,
           secs > 0 ? 2.0 * (double)rtt_total / secs : 0, pct(0.5), pct(0.9), pct(0.99),
           nsamples ? samples[nsamples - 1] : 0, nsamples ? sum / (double)nsamples : 0,
           errors_total, acks_total, unexpected_close, msgs_in_at_end - msgs_in_at_measure,
           stale_echoes);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mode idle|chat|pairs|wire [--host 127.0.0.1] --port P [--port2 P2]\n"
            "  [--conns N] [--raw] [--src-base 2] [--src-count K] [--concurrency 256]\n"
            "  [--user-fmt u%%d@localhost] [--user-start 0] [--pass secret]\n"
            "  [--peer-fmt echo%%d@localhost] [--peers 1] [--inflight 1] [--body-size 32]\n"
            "  [--warmup S] [--duration S] [--hold S] [--timeout S] [--reconnect]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"mode", 1, 0, 'm'},      {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},
        {"port2", 1, 0, 'P'},     {"conns", 1, 0, 'n'},      {"raw", 0, 0, 'r'},
        {"src-base", 1, 0, 'b'},  {"src-count", 1, 0, 'k'},  {"user-fmt", 1, 0, 'u'},
        {"user-start", 1, 0, 'U'}, {"pass", 1, 0, 'w'},      {"peer-fmt", 1, 0, 'e'},
        {"peers", 1, 0, 'E'},     {"inflight", 1, 0, 'i'},   {"warmup", 1, 0, 'W'},
        {"duration", 1, 0, 'd'},  {"hold", 1, 0, 'H'},       {"timeout", 1, 0, 't'},
        {"body-size", 1, 0, 's'}, {"concurrency", 1, 0, 'c'}, {"reconnect", 0, 0, 'R'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'm': opt.mode = optarg; break;
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'P': opt.port2 = atoi(optarg); break;
        case 'n': opt.conns = atoi(optarg); break;
        case 'r': opt.raw = true; break;
        case 'b': opt.src_base = atoi(optarg); break;
        case 'k': opt.src_count = atoi(optarg); break;
        case 'u': opt.user_fmt = optarg; break;
        case 'U': opt.user_start = atoi(optarg); break;
        case 'w': opt.pass = optarg; break;
        case 'e': opt.peer_fmt = optarg; break;
        case 'E': opt.peers = atoi(optarg); break;
        case 'i': opt.inflight = atoi(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'H': opt.hold = atof(optarg); break;
        case 't': opt.timeout = atof(optarg); break;
        case 's': opt.body_size = atoi(optarg); break;
        case 'c': opt.concurrency = atoi(optarg); break;
        case 'R': opt.reconnect = true; break;
        default: usage();
        }
    }
    bool idle = !strcmp(opt.mode, "idle"), chat = !strcmp(opt.mode, "chat"),
         pairs = !strcmp(opt.mode, "pairs"), wire = !strcmp(opt.mode, "wire");
    if (!idle && !chat && !pairs && !wire)
        usage();
    if (strncmp(opt.host, "127.", 4) != 0)
        die("only loopback (127.x) targets are allowed");
    if (opt.conns < 1 || opt.conns > 2000000 || opt.inflight < 1 || opt.body_size < 1 ||
        opt.body_size > 4000 || opt.concurrency < 1 || opt.peers < 1)
        die("bad numbers");
    if (pairs && !opt.port2)
        die("--mode pairs needs --port2");
    if (wire)
        opt.conns = 1;
    if (opt.raw && !idle)
        die("--raw only with --mode idle");

    /* Enough descriptors: we run as root in the bench, so raise the hard limit too. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt.conns * (pairs ? 2 : 1) + 1024;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
            rl.rlim_max = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            note("setrlimit(%llu): %s", (unsigned long long)want, strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);

    body_pad = malloc((size_t)opt.body_size + 1);
    if (!body_pad)
        die("oom");
    for (int i = 0; i < opt.body_size; i++)
        body_pad[i] = (char)('a' + i % 26);
    body_pad[opt.body_size] = '\0';
    if (wire)
        memcpy(body_pad, "hello", opt.body_size >= 5 ? 5 : (size_t)opt.body_size);

    nphones = opt.conns * (pairs ? 2 : 1);
    int per_src = 20000; /* ports per source address, well under the 28k range */
    if (opt.src_count <= 0)
        opt.src_count = (nphones + per_src - 1) / per_src;
    if (opt.src_base < 1 || opt.src_base + opt.src_count > 254)
        die("source addresses 127.0.0.%d.. do not fit", opt.src_base);
    phones = calloc((size_t)nphones, sizeof(*phones));
    if (!phones)
        die("oom");
    for (int i = 0; i < nphones; i++) {
        struct phone *p = &phones[i];
        bool echo = pairs && i >= opt.conns;
        p->idx = echo ? i - opt.conns : i;
        p->role = wire ? R_WIRE : idle ? R_IDLE : echo ? R_ECHOER : R_PINGER;
        p->port = echo ? opt.port2 : opt.port;
        p->src = i % opt.src_count;
        snprintf(p->jid, sizeof(p->jid), echo ? opt.peer_fmt : opt.user_fmt,
                 opt.user_start + p->idx);
        if (p->role == R_PINGER || p->role == R_WIRE)
            snprintf(p->peer, sizeof(p->peer), opt.peer_fmt,
                     pairs ? opt.user_start + p->idx : p->idx % opt.peers);
    }
    n_target_ready = nphones;
    /* Echoers first, so they are online before pingers talk. */
    if (pairs) {
        struct phone *tmp = malloc((size_t)nphones * sizeof(*tmp));
        if (!tmp)
            die("oom");
        memcpy(tmp, phones + opt.conns, (size_t)opt.conns * sizeof(*tmp));
        memcpy(tmp + opt.conns, phones, (size_t)opt.conns * sizeof(*tmp));
        free(phones);
        phones = tmp;
    }

    base = event_base_new();
    if (!base)
        die("event_base_new");
    if (!opt.raw) {
        char port1[8], port2[8], dev[24];
        snprintf(port1, sizeof(port1), "%d", opt.port);
        snprintf(port2, sizeof(port2), "%d", opt.port2);
        struct imb_edge e1 = {.host = opt.host, .port = port1}, e2 = {.host = opt.host, .port = port2};
        srandom((unsigned)getpid() ^ (unsigned)now_us());
        for (int i = 0; i < nphones; i++) {
            struct phone *p = &phones[i];
            snprintf(dev, sizeof(dev), "lg%d", p->idx);
            struct imb_client_opts o = {
                .jid = p->jid, .pass = opt.pass, .dev = dev,
                .edges = p->port == opt.port2 && opt.port2 ? &e2 : &e1, .n_edges = 1,
                /* --reconnect: a random 0..1 s, doubling up to 8 s. */
                .backoff_base_ms = 1000, .backoff_cap_ms = 8000,
                /* Only --timeout bounds a connect or a login, as before. */
                .connect_timeout_ms = (uint32_t)(opt.timeout * 1000),
                .login_timeout_ms = (uint32_t)(opt.timeout * 1000),
                .hb_events = p->role == R_WIRE,
                .seed = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)i,
            };
            p->cl = imb_client_new(&o);
            p->timer = evtimer_new(base, on_timer, p);
            if (!p->cl || !p->timer)
                die("cannot create the client of %s", p->jid);
        }
    }
    tick_ev = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 100000};
    event_add(tick_ev, &tv);
    if (idle) {
        stdin_ev = event_new(base, 0, EV_READ | EV_PERSIST, on_stdin, NULL);
        event_add(stdin_ev, NULL);
    }
    t_start_ms = now_ms();
    t_start_us = now_us();
    start_more();
    event_base_dispatch(base);
    finished = true;
    print_results();
    fflush(stdout);
    for (int i = 0; i < nphones; i++) {
        if (phones[i].bev)
            bufferevent_free(phones[i].bev);
        if (phones[i].timer)
            event_free(phones[i].timer);
        imb_client_free(phones[i].cl);
    }
    event_free(tick_ev);
    if (stdin_ev)
        event_free(stdin_ev);
    event_base_free(base);
    free(phones);
    free(samples);
    free(body_pad);
    return 0;
}
