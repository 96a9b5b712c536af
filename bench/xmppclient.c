/* bench/xmppclient.c - a plain libstrophe XMPP client for the benches: the
 * "desktop" side of bridged runs and both ends of the direct-XMPP baseline.
 *
 *   xmppclient --mode echo --jid bob@localhost/desktop --pass P --port C2S
 *       answers every <message/> with a body by sending the same body back
 *       to its sender; runs until stdin reaches EOF or --timeout.
 *   xmppclient --mode ping --jid alice@localhost/desktop --pass P --port C2S
 *       --peer bob@localhost [--inflight K] [--warmup S] [--duration S]
 *       keeps K messages in flight to the peer, timing each round trip
 *       (send -> the peer's echo back); {"event":"measure"} and
 *       {"event":"end"} when the timed window opens and closes, then one
 *       JSON result line on stdout.
 *   xmppclient --mode wire ... --peer bob@localhost
 *       bytes on the c2s link (what libstrophe wrote and read, TLS off):
 *       login, one outgoing <message/>, the echoed one coming in (all
 *       that was read meanwhile, and the <message/> alone), an
 *       XEP-0199 ping to the server and its answer, a XEP-0184 receipt,
 *       a whitespace keepalive; one JSON line on stdout.
 * Every mode prints "online" on stderr once logged in and presence is sent.
 * Plaintext only (XMPP_CONN_FLAG_DISABLE_TLS), no stream management (as
 * imb-xmppd), TCP_NODELAY on, 127.0.0.x only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <strophe.h>

static struct {
    const char *mode, *jid, *pass, *host, *peer;
    int port, inflight, body_size;
    double warmup, duration, timeout;
} opt = {.mode = "echo", .host = "127.0.0.1", .port = 5222, .inflight = 1,
         .body_size = 32, .warmup = 1, .duration = 5, .timeout = 120};

static xmpp_ctx_t *ctx;
static xmpp_conn_t *conn;
static bool online, done, failed;
static char *pad;
static uint64_t sent, echoed, rtts, warm;
static double *samples;
static size_t ns, cap;
static int64_t t_measure, t_end;
static bool measuring;

/* wire accounting */
static bool counting;
static uint64_t wire_sent, wire_recv;
/* The incoming <message/> alone (raw bytes, "<message" to "</message>"),
 * without what else arrived around it (a presence): 0 until seen. */
static size_t wire_msg_in;
static char wire_json[2048];
static size_t wire_len;
static int wire_step;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t t_start_us; /* this process's start: older echoes are stale */

static void die(const char *m)
{
    fprintf(stderr, "xmppclient: %s\n", m);
    exit(2);
}

/* libstrophe logs every raw read as "RECV: ..." and every write as
 * "SENT: ..." at debug level: the wire mode sums their lengths. */
static void wire_log(void *userdata, xmpp_log_level_t level, const char *area, const char *msg)
{
    if (!counting)
        return;
    if (strncmp(msg, "SENT: ", 6) == 0) {
        wire_sent += strlen(msg) - 6;
    } else if (strncmp(msg, "RECV: ", 6) == 0) {
        wire_recv += strlen(msg) - 6;
        const char *a = strstr(msg, "<message"), *z = a ? strstr(a, "</message>") : NULL;
        if (wire_step == 1 && !wire_msg_in && z)
            wire_msg_in = (size_t)(z + strlen("</message>") - a);
    }
    if (getenv("XMPPCLIENT_TRACE"))
        fprintf(stderr, "[%s] %s\n", area, msg);
}

static void wire_mark(const char *name)
{
    size_t room = sizeof(wire_json) - wire_len;
    int k = snprintf(wire_json + wire_len, room, "%s\"%s\":{\"out\":%" PRIu64 ",\"in\":%" PRIu64 "}",
                     wire_len ? "," : "", name, wire_sent, wire_recv);
    if (k > 0 && (size_t)k < room)
        wire_len += (size_t)k;
    wire_sent = wire_recv = 0;
}

/* Bytes xmpp_send() writes for a stanza: its serialization. */
static size_t last_sent_len;

static void send_stanza(xmpp_stanza_t *st)
{
    char *buf = NULL;
    size_t len = 0;
    if (xmpp_stanza_to_text(st, &buf, &len) == 0) {
        last_sent_len = len;
        xmpp_free(ctx, buf);
    }
    xmpp_send(conn, st);
}

static void send_body(const char *to, const char *body)
{
    char id[32];
    snprintf(id, sizeof(id), "b%" PRIu64, ++sent);
    xmpp_stanza_t *m = xmpp_message_new(ctx, "chat", to, id);
    xmpp_message_set_body(m, body);
    send_stanza(m);
    xmpp_stanza_release(m);
}

static void wire_note(const char *name, size_t n)
{
    size_t room = sizeof(wire_json) - wire_len;
    int k = snprintf(wire_json + wire_len, room, "%s\"%s\":{\"out\":%zu}", wire_len ? "," : "", name, n);
    if (k > 0 && (size_t)k < room)
        wire_len += (size_t)k;
}

static void send_ping(void)
{
    char body[4200];
    snprintf(body, sizeof(body), "%" PRId64 ":%s", now_us(), pad);
    send_body(opt.peer, body);
}

static void record(int64_t us)
{
    if (!measuring) {
        warm++;
        return;
    }
    rtts++;
    if (ns == cap) {
        cap = cap ? cap * 2 : 65536;
        samples = realloc(samples, cap * sizeof(*samples));
        if (!samples)
            die("oom");
    }
    samples[ns++] = (double)us;
}

static void wire_next(void);

static int on_message(xmpp_conn_t *c, xmpp_stanza_t *st, void *ud)
{
    xmpp_stanza_t *b = xmpp_stanza_get_child_by_name(st, "body");
    if (!b)
        return 1;
    char *text = xmpp_stanza_get_text(b);
    if (!text)
        return 1;
    const char *from = xmpp_stanza_get_from(st);
    if (!strcmp(opt.mode, "echo")) {
        if (from)
            send_body(from, text);
    } else if (!strcmp(opt.mode, "ping")) {
        /* As loadgen: an echo of an earlier run's message (offline storage
         * may hand one over) is neither a round trip of this run nor a
         * reason to send another. */
        int64_t t0 = strtoll(text, NULL, 10);
        if (t0 >= t_start_us) {
            record(now_us() - t0);
            echoed++;
            if (!done)
                send_ping();
        }
    } else if (!strcmp(opt.mode, "wire") && wire_step == 1) {
        wire_mark("msg_in");
        wire_note("msg_in_stanza", wire_msg_in);
        wire_step = 2;
        wire_next();
    }
    xmpp_free(ctx, text);
    return 1;
}

static int on_iq_result(xmpp_conn_t *c, xmpp_stanza_t *st, void *ud)
{
    if (wire_step == 2) {
        wire_mark("ping_iq_roundtrip");
        wire_step = 3;
        wire_next();
    }
    return 0;
}

/* wire steps: 0 -> send msg (mark msg_out); 1 wait echo; 2 ping iq; 3 receipt
 * and whitespace; done */
static void wire_next(void)
{
    if (wire_step == 0) {
        send_body(opt.peer, "hello");
        wire_note("msg_out", last_sent_len);
        wire_step = 1;
    } else if (wire_step == 2) {
        xmpp_stanza_t *iq = xmpp_iq_new(ctx, "get", "p1");
        const char *jid = xmpp_conn_get_bound_jid(conn);
        const char *at = strchr(jid, '@');
        char domain[256];
        snprintf(domain, sizeof(domain), "%s", at ? at + 1 : "localhost");
        char *slash = strchr(domain, '/');
        if (slash)
            *slash = '\0';
        xmpp_stanza_set_to(iq, domain);
        xmpp_stanza_t *ping = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(ping, "ping");
        xmpp_stanza_set_ns(ping, "urn:xmpp:ping");
        xmpp_stanza_add_child(iq, ping);
        xmpp_stanza_release(ping);
        xmpp_id_handler_add(conn, on_iq_result, "p1", NULL);
        xmpp_send(conn, iq);
        xmpp_stanza_release(iq);
    } else if (wire_step == 3) {
        /* XEP-0184 delivery receipt for the message we got. */
        xmpp_stanza_t *m = xmpp_message_new(ctx, NULL, opt.peer, "r1");
        xmpp_stanza_t *r = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(r, "received");
        xmpp_stanza_set_ns(r, "urn:xmpp:receipts");
        xmpp_stanza_set_attribute(r, "id", "b1");
        xmpp_stanza_add_child(m, r);
        xmpp_stanza_release(r);
        send_stanza(m);
        xmpp_stanza_release(m);
        wire_note("receipt_out", last_sent_len);
        xmpp_send_raw(conn, " ", 1);
        wire_note("whitespace_keepalive", 1);
        wire_step = 4;
        done = true;
    }
}

static void conn_handler(xmpp_conn_t *c, xmpp_conn_event_t ev, int err, xmpp_stream_error_t *se,
                         void *ud)
{
    if (ev == XMPP_CONN_CONNECT) {
        xmpp_handler_add(c, on_message, NULL, "message", NULL, NULL);
        xmpp_stanza_t *pres = xmpp_presence_new(ctx);
        xmpp_send(c, pres);
        xmpp_stanza_release(pres);
        online = true;
        fprintf(stderr, "online\n");
        if (!strcmp(opt.mode, "wire")) {
            wire_mark("login");
            wire_next();
        }
    } else {
        if (!done)
            failed = true;
        done = true;
    }
}

static int sockopt_cb(xmpp_conn_t *c, void *sock)
{
    int one = 1;
    setsockopt(*(int *)sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return xmpp_sockopt_cb_keepalive(c, sock);
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double q)
{
    return ns ? samples[(size_t)(q * (double)(ns - 1) + 0.5)] : 0;
}

int main(int argc, char **argv)
{
    t_start_us = now_us();
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--mode")) opt.mode = v;
        else if (!strcmp(k, "--jid")) opt.jid = v;
        else if (!strcmp(k, "--pass")) opt.pass = v;
        else if (!strcmp(k, "--host")) opt.host = v;
        else if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--peer")) opt.peer = v;
        else if (!strcmp(k, "--inflight")) opt.inflight = atoi(v);
        else if (!strcmp(k, "--body-size")) opt.body_size = atoi(v);
        else if (!strcmp(k, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(k, "--duration")) opt.duration = atof(v);
        else if (!strcmp(k, "--timeout")) opt.timeout = atof(v);
        else die("unknown option");
    }
    if (!opt.jid || !opt.pass)
        die("--jid and --pass are required");
    if (strncmp(opt.host, "127.", 4) != 0)
        die("loopback only");
    if (strcmp(opt.mode, "echo") && !opt.peer)
        die("--peer is required");
    if (opt.body_size < 1 || opt.body_size > 4000 || opt.inflight < 1)
        die("bad numbers");
    pad = malloc((size_t)opt.body_size + 1);
    for (int i = 0; i < opt.body_size; i++)
        pad[i] = (char)('a' + i % 26);
    pad[opt.body_size] = '\0';

    xmpp_initialize();
    xmpp_log_t wlog = {wire_log, NULL};
    ctx = xmpp_ctx_new(NULL, !strcmp(opt.mode, "wire") ? &wlog : NULL);
    conn = xmpp_conn_new(ctx);
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_DISABLE_TLS | XMPP_CONN_FLAG_DISABLE_SM);
    xmpp_conn_set_jid(conn, opt.jid);
    xmpp_conn_set_pass(conn, opt.pass);
    xmpp_conn_set_sockopt_callback(conn, sockopt_cb);
    counting = true;
    if (xmpp_connect_client(conn, opt.host, (unsigned short)opt.port, conn_handler, NULL) != 0)
        die("connect failed");

    int64_t t0 = now_us();
    bool started = false;
    struct pollfd in = {.fd = 0, .events = POLLIN};
    while (!done) {
        xmpp_run_once(ctx, 1);
        int64_t now = now_us();
        if (now - t0 > (int64_t)(opt.timeout * 1e6)) {
            fprintf(stderr, "xmppclient: timeout\n");
            failed = true;
            break;
        }
        if (!strcmp(opt.mode, "echo")) {
            if (poll(&in, 1, 0) > 0) {
                char b[64];
                if (read(0, b, sizeof(b)) <= 0)
                    break;
            }
            continue;
        }
        if (!strcmp(opt.mode, "ping") && online) {
            if (!started) {
                started = true;
                t_measure = now + (int64_t)(opt.warmup * 1e6);
                t_end = t_measure + (int64_t)(opt.duration * 1e6);
                for (int k = 0; k < opt.inflight; k++)
                    send_ping();
            }
            if (!measuring && now >= t_measure && now < t_end) {
                measuring = true;
                t_measure = now;
                printf("{\"event\":\"measure\"}\n"); /* the bench reads CPU now */
                fflush(stdout);
            }
            if (now >= t_end) {
                measuring = false;
                t_end = now;
                done = true;
                printf("{\"event\":\"end\"}\n");
                fflush(stdout);
            }
        }
    }
    if (!strcmp(opt.mode, "ping")) {
        qsort(samples, ns, sizeof(*samples), cmpd);
        double secs = (double)(t_end - t_measure) / 1e6, sum = 0;
        for (size_t i = 0; i < ns; i++)
            sum += samples[i];
        printf("{\"mode\":\"xmpp_ping\",\"inflight\":%d,\"ok\":%s,\"seconds\":%.3f,\"round_trips\":%" PRIu64
               ",\"rt_per_s\":%.1f,\"msgs_per_s\":%.1f,\"rtt_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,"
               "\"max\":%.0f,\"mean\":%.1f}}\n",
               opt.inflight, (!failed && ns) ? "true" : "false", secs, rtts,
               secs > 0 ? (double)rtts / secs : 0, secs > 0 ? 2.0 * (double)rtts / secs : 0,
               pct(0.5), pct(0.9), pct(0.99), ns ? samples[ns - 1] : 0, ns ? sum / (double)ns : 0);
    } else if (!strcmp(opt.mode, "wire")) {
        printf("{\"mode\":\"xmpp_wire\",\"ok\":%s,\"steps\":{%s}}\n",
               (wire_step == 4 && !failed) ? "true" : "false", wire_json);
    }
    fflush(stdout);
    if (xmpp_conn_is_connected(conn)) {
        xmpp_disconnect(conn);
        for (int i = 0; i < 200 && xmpp_conn_is_connected(conn); i++)
            xmpp_run_once(ctx, 5);
    }
    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    free(samples);
    free(pad);
    return failed ? 1 : 0;
}
