/* example.c - imb-client-example: a short program on the client library and
 * its libevent adapter. It logs in, sends messages (stdin lines, or --send N
 * numbered ones), prints one line per event, survives edge restarts
 * (reconnecting across the --edge list and resuming), and on --expect exits
 * once it has what it waited for, with counts.
 *
 *   imb-client-example --edge 127.0.0.1:7222 [--edge host:port ...] [--tls]
 *       [--cafile ca.pem] --user alice@example.com [--dev pixel7]
 *       --to bob@example.com [--send N] [--interval MS] [--expect N]
 *       [--backoff MS] [--timeout MS] [--ack-every N]
 *   --ack-every N: the app "stores" incoming messages in batches of N and
 *   acknowledges each batch (manual_ack); by default the library acks each.
 *   The password comes from $IMB_PASSWORD (never from the command line).
 *
 * Output lines (stdout), "key=value" after a word:
 *   connect edge=H:P attempt=N | disconnect reason=R retry_ms=N next=H:P
 *   logged-in jid=J hb=S max=N resend=N | sync epoch=E seq=N missed=N reset=0|1
 *   sent id=I body=B | ack id=I | error code=C id=I msg=M
 *   msg seq=N from=F body=B | event t=T | bye reason=R
 *   done sent=N acked=N received=N duplicates=N connects=N resent=N
 * Exit status: 0 done, 1 login refused or --timeout, 2 usage. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "imb_client_event.h"

#define MAX_EDGES 8
#define MAX_SEEN 100000

struct app {
    struct event_base *base;
    struct imb_client_ev *ev;
    const char *to;
    long send_total;   /* --send: numbered messages to send */
    long sent;         /* messages handed to the library */
    long acked;
    long received;     /* distinct incoming messages */
    long resent;       /* messages the library sent again after a welcome */
    long duplicates;   /* a seq printed before (must stay 0) */
    long expect;       /* --expect: incoming messages to wait for; -1: run until EOF */
    long connects;
    int exit_code;
    bool stdin_eof;
    bool stopping;
    uint64_t max_seq;  /* highest seq printed, for the duplicate count */
    struct event *send_timer;
    long interval_ms;  /* --interval: between numbered messages */
    long ack_every;    /* --ack-every: store (ack) in batches of this many; 0: the library acks each */
    long unacked;      /* received since the last imb_client_ack */
    struct bufferevent *in; /* stdin lines */
};

static void print_field(const char *k, const char *v)
{
    printf(" %s=", k);
    for (const char *p = v ? v : ""; *p; p++)
        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
}

static void maybe_finish(struct app *a)
{
    if (a->stopping || a->expect < 0)
        return;
    bool sent_all = a->sent >= a->send_total && (a->send_total > 0 || a->stdin_eof || !a->in);
    if (sent_all && a->acked >= a->sent && a->received >= a->expect) {
        a->stopping = true;
        if (a->ack_every > 0) /* the rest of the last batch */
            imb_client_ack(imb_client_ev_client(a->ev), a->max_seq);
        imb_client_logout(imb_client_ev_client(a->ev), imb_client_ev_now());
        imb_client_ev_flush(a->ev);
    }
}

static void send_one(struct app *a, const char *body)
{
    char id[65], err[128] = "";
    if (imb_client_send_msg(imb_client_ev_client(a->ev), a->to, body, false, NULL, id, err,
                            sizeof err) != 0) {
        printf("error code=local");
        print_field("msg", err);
        putchar('\n');
    } else {
        a->sent++;
        printf("sent id=%s", id);
        print_field("body", body);
        putchar('\n');
    }
    fflush(stdout);
    imb_client_ev_flush(a->ev);
}

static void on_event(void *arg, const struct imb_event *e)
{
    struct app *a = arg;
    switch (e->type) {
    case IMB_EV_CONNECT:
        a->connects++;
        printf("connect edge=%s:%s%s attempt=%u\n", e->host, e->port, e->tls ? " tls" : "", e->attempt);
        break;
    case IMB_EV_DISCONNECT:
        printf("disconnect reason=%s", e->reason);
        if (*imb_client_ev_last_error(a->ev))
            print_field("detail", imb_client_ev_last_error(a->ev));
        if (e->final)
            printf(" final=1\n");
        else
            printf(" retry_ms=%llu next=%s:%s\n", (unsigned long long)e->retry_ms, e->host, e->port);
        if (e->final) {
            if (!a->stopping)
                a->exit_code = 1;
            event_base_loopexit(a->base, NULL);
        }
        break;
    case IMB_EV_LOGGED_IN:
        /* The outbox goes out again right after this event, same ids. */
        a->resent += (long)imb_client_outbox_len(imb_client_ev_client(a->ev));
        printf("logged-in jid=%s hb=%u max=%u resend=%zu\n", e->jid, e->hb_s, e->max,
               imb_client_outbox_len(imb_client_ev_client(a->ev)));
        break;
    case IMB_EV_SYNC:
        printf("sync epoch=%s seq=%llu missed=%llu reset=%d\n", e->epoch, (unsigned long long)e->seq,
               (unsigned long long)e->missed, e->reset);
        if (e->reset)
            a->max_seq = 0;
        break;
    case IMB_EV_MSG:
        if (e->seq <= a->max_seq)
            a->duplicates++;
        else
            a->max_seq = e->seq;
        a->received++;
        if (a->ack_every > 0 && ++a->unacked >= a->ack_every) {
            imb_client_ack(imb_client_ev_client(a->ev), e->seq);
            a->unacked = 0;
        }
        printf("msg seq=%llu", (unsigned long long)e->seq);
        print_field("from", e->from);
        print_field("body", e->body);
        putchar('\n');
        break;
    case IMB_EV_ACK:
        a->acked++;
        printf("ack id=%s\n", e->id);
        break;
    case IMB_EV_ERROR:
        printf("error code=%s", e->code);
        print_field("id", e->id);
        print_field("msg", e->msg);
        putchar('\n');
        if (e->id)
            a->acked++; /* answered, though not delivered: counted so --expect ends */
        break;
    case IMB_EV_BYE:
        printf("bye reason=%s\n", e->reason);
        break;
    case IMB_EV_PROTOCOL:
        printf("protocol-error");
        print_field("msg", e->msg);
        putchar('\n');
        break;
    default:
        printf("event t=%s\n", e->t ? e->t : "?");
        break;
    }
    fflush(stdout);
    if (e->type == IMB_EV_LOGGED_IN && a->send_total > a->sent && !evtimer_pending(a->send_timer, NULL))
        event_active(a->send_timer, EV_TIMEOUT, 0);
    maybe_finish(a);
}

static void send_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    if (a->sent >= a->send_total)
        return;
    char body[64];
    snprintf(body, sizeof body, "example %ld", a->sent);
    send_one(a, body);
    /* Numbered messages go on at their pace, connected or not: the outbox
     * keeps them across a reconnect. */
    struct timeval tv = {a->interval_ms / 1000, (a->interval_ms % 1000) * 1000};
    evtimer_add(a->send_timer, &tv);
}

static void stdin_read(struct bufferevent *bev, void *arg)
{
    struct app *a = arg;
    char *line;
    size_t n;
    while ((line = evbuffer_readln(bufferevent_get_input(bev), &n, EVBUFFER_EOL_CRLF))) {
        if (n > 0)
            send_one(a, line);
        free(line);
    }
}

static void stdin_event(struct bufferevent *bev, short what, void *arg)
{
    struct app *a = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        a->stdin_eof = true;
        bufferevent_disable(bev, EV_READ);
        if (a->expect < 0) {
            /* Interactive use: end of input logs out. */
            a->expect = 0;
        }
        maybe_finish(a);
    }
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    printf("timeout\n");
    a->exit_code = 1;
    event_base_loopexit(a->base, NULL);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: imb-client-example --edge HOST:PORT [--edge ...] [--tls] [--cafile PEM]\n"
            "       --user JID --to JID [--dev LABEL] [--send N] [--interval MS] [--expect N]\n"
            "       [--backoff MS] [--timeout MS] [--ack-every N]   (password in $IMB_PASSWORD)\n");
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        {"edge", required_argument, 0, 'e'}, {"tls", no_argument, 0, 'T'},
        {"cafile", required_argument, 0, 'C'}, {"user", required_argument, 0, 'u'},
        {"dev", required_argument, 0, 'd'}, {"to", required_argument, 0, 't'},
        {"send", required_argument, 0, 's'}, {"interval", required_argument, 0, 'i'},
        {"expect", required_argument, 0, 'x'}, {"backoff", required_argument, 0, 'b'},
        {"timeout", required_argument, 0, 'o'}, {"ack-every", required_argument, 0, 'a'},
        {0, 0, 0, 0},
    };
    struct imb_edge edges[MAX_EDGES];
    char *edge_copies[MAX_EDGES];
    size_t n_edges = 0;
    bool tls = false;
    const char *cafile = NULL, *user = NULL, *dev = NULL;
    long interval = 200, backoff = 0, timeout = 0;
    struct app a = {.expect = -1};
    int opt;
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case 'e': {
            if (n_edges == MAX_EDGES) {
                usage();
                return 2;
            }
            char *s = strdup(optarg);
            char *colon = s ? strrchr(s, ':') : NULL;
            if (!colon) {
                free(s);
                usage();
                return 2;
            }
            *colon = 0;
            edge_copies[n_edges] = s;
            edges[n_edges++] = (struct imb_edge){s, colon + 1, false};
            break;
        }
        case 'T': tls = true; break;
        case 'C': cafile = optarg; break;
        case 'u': user = optarg; break;
        case 'd': dev = optarg; break;
        case 't': a.to = optarg; break;
        case 's': a.send_total = atol(optarg); break;
        case 'i': interval = atol(optarg); break;
        case 'x': a.expect = atol(optarg); break;
        case 'b': backoff = atol(optarg); break;
        case 'o': timeout = atol(optarg); break;
        case 'a': a.ack_every = atol(optarg); break;
        default: usage(); return 2;
        }
    }
    const char *pass = getenv("IMB_PASSWORD");
    if (!n_edges || !user || !a.to || !pass) {
        usage();
        return 2;
    }
    for (size_t i = 0; i < n_edges; i++)
        edges[i].tls = tls;
    signal(SIGPIPE, SIG_IGN);

    a.base = event_base_new();
    struct imb_client_opts o = {
        .jid = user, .pass = pass, .dev = dev, .edges = edges, .n_edges = n_edges,
        .backoff_base_ms = (uint32_t)backoff, .manual_ack = a.ack_every > 0,
        .on_event = on_event, .arg = &a,
    };
    char err[160];
    a.ev = imb_client_ev_new(a.base, &o, cafile, err, sizeof err);
    if (!a.ev) {
        fprintf(stderr, "imb-client-example: %s\n", err);
        return 2;
    }
    /* Started by the first welcome; re-arms itself every interval. */
    a.send_timer = evtimer_new(a.base, send_timer_cb, &a);
    a.interval_ms = interval;
    struct event *to_ev = NULL;
    if (timeout > 0) {
        to_ev = evtimer_new(a.base, timeout_cb, &a);
        struct timeval tv = {timeout / 1000, (timeout % 1000) * 1000};
        evtimer_add(to_ev, &tv);
    }
    struct stat st;
    bool pollable = fstat(STDIN_FILENO, &st) == 0 &&
                    (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(STDIN_FILENO));
    if (a.send_total == 0 && !pollable) {
        a.stdin_eof = true; /* a file or /dev/null cannot be polled: no input */
        if (a.expect < 0)
            a.expect = 0;   /* as at the end of input: log out once logged in */
    }
    if (a.send_total == 0 && pollable) {
        a.in = bufferevent_socket_new(a.base, STDIN_FILENO, 0);
        bufferevent_setcb(a.in, stdin_read, NULL, stdin_event, &a);
        if (bufferevent_enable(a.in, EV_READ) != 0) {
            bufferevent_free(a.in);
            a.in = NULL;
            a.stdin_eof = true;
        }
    }
    imb_client_ev_start(a.ev);
    event_base_dispatch(a.base);

    printf("done sent=%ld acked=%ld received=%ld duplicates=%ld connects=%ld resent=%ld\n", a.sent,
           a.acked, a.received, a.duplicates, a.connects, a.resent);
    fflush(stdout);
    if (a.in)
        bufferevent_free(a.in);
    event_free(a.send_timer);
    if (to_ev)
        event_free(to_ev);
    imb_client_ev_free(a.ev);
    event_base_free(a.base);
    for (size_t i = 0; i < n_edges; i++)
        free(edge_copies[i]);
    return a.exit_code;
}
