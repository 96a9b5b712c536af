/* imb_client.c - the sans-I/O phone protocol client (imb_client.h): owns the
 * connection state machine, the input/output byte buffers, the outbox of
 * unacknowledged messages, the stream position (epoch/seq), heartbeat and
 * dead-link timers, the edge list with backoff, and the event queue. No I/O,
 * no clock, no global state. */
#include "imb_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 4
#define MIN_BODY 2
/* What the spec promises until the welcome announces the real limit. */
#define DEFAULT_MAX 16384
/* No max a welcome announces is believed above this (the server's own ceiling). */
#define MAX_LIMIT (1u << 20)
#define MAX_HB_S 86400
#define EPOCH_MAX 31
#define TOKEN_MAX 256
#define ID_MAX 64
/* After logout, how long to wait for bye before closing anyway. */
#define LOGOUT_WAIT_MS 3000
/* A message the server answered `unavailable`/`rate_limited` is sent again
 * after RETRY_MS..2*RETRY_MS, at most RETRY_TRIES times. */
#define RETRY_MS 1000
#define RETRY_TRIES 5

enum state {
    ST_IDLE,       /* before imb_client_start */
    ST_WAIT,       /* between attempts: CONNECT comes at reconnect_at */
    ST_CONNECTING, /* CONNECT emitted, transport not up yet */
    ST_LOGIN,      /* login written, waiting for welcome */
    ST_READY,      /* logged in */
    ST_LOGOUT,     /* logout written, waiting for bye / close */
    ST_STOPPED,    /* final DISCONNECT emitted; imb_client_start again */
};

struct bytes {
    uint8_t *p;
    size_t head; /* first unconsumed byte */
    size_t len;  /* end of data; head <= len <= cap */
    size_t cap;
};

struct outmsg {
    char id[ID_MAX + 1];
    uint8_t *frame; /* header + JSON, owned */
    size_t len;
    int64_t retry_at; /* 0: not waiting to be resent */
    int tries;        /* `unavailable` answers so far */
};

struct qev {
    struct imb_event ev;
    json_t *hold;   /* owns the strings ev points to (a frame, or a string) */
    uint64_t gen;   /* c->gen when queued: its seq counts only in that numbering */
};

struct imb_client {
    /* configuration (copies) */
    char *jid, *pass, *dev, *id_prefix;
    struct imb_edge *edges; /* n_edges, each host/port owned */
    size_t n_edges;
    uint32_t backoff_base_ms, backoff_cap_ms, connect_timeout_ms, login_timeout_ms;
    bool manual_ack;
    bool hb_events;   /* opts.hb_events: hb frames become IMB_EV_FRAME */
    size_t outbox_max;
    void (*on_event)(void *arg, const struct imb_event *ev);
    void *arg;

    /* connection */
    enum state st;
    size_t edge;          /* index of the current / next edge */
    uint32_t attempt;     /* failed attempts since the last welcome */
    int64_t now;          /* latest now_ms the app gave */
    int64_t reconnect_at; /* ST_WAIT: when CONNECT is due */
    int64_t phase_at;     /* CONNECTING/LOGIN/LOGOUT: when the phase began */
    int64_t last_rx, last_tx; /* ms: last bytes received / frame queued */
    int64_t probe_at;     /* first hb sent since last_rx; 0: none */
    uint32_t hb_ms;       /* from welcome */
    uint32_t max;         /* largest frame body either way, from welcome */
    struct bytes in, out;
    uint64_t conn_rx_max; /* highest seq received on this connection (ack bound) */

    /* position */
    char epoch[EPOCH_MAX + 1];
    uint64_t seq;      /* highest stored (acked by the app): sent at login */
    uint64_t rx_seq;   /* highest delivered to the app: duplicates below drop */
    uint64_t ack_sent; /* highest ack written on this connection */
    uint64_t gen;      /* numbering generation, bumped by a reset */
    char *token;

    /* outbox, oldest first */
    struct outmsg *ob;
    size_t ob_n, ob_cap;
    uint64_t id_counter;
    uint64_t rng;

    /* events */
    struct qev *q;
    size_t q_head, q_len, q_cap;
    struct qev cur;   /* the event last handed out (released on the next take) */
    bool has_cur;
    bool dispatching;
};

/* ---- small helpers ---------------------------------------------------- */

/* strdup is POSIX, not C11: the library builds with a bare C11 compiler. */
static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static char *dup_or_null(const char *s)
{
    return s ? dupstr(s) : NULL;
}

static uint64_t rnd(struct imb_client *c)
{
    /* xorshift64*: jitter and ids only, never secrets */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static bool id_chars(const char *s, size_t maxlen, bool colon)
{
    size_t n = strlen(s);
    if (n < 1 || n > maxlen)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' ||
              (colon && ch == ':')))
            return false;
    }
    return true;
}

static void seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

static int bytes_put(struct bytes *b, const void *p, size_t n)
{
    if (b->head > 0 && b->head == b->len)
        b->head = b->len = 0;
    if (b->cap - b->len < n) {
        if (b->head > 0) {
            memmove(b->p, b->p + b->head, b->len - b->head);
            b->len -= b->head;
            b->head = 0;
        }
        if (b->cap - b->len < n) {
            size_t cap = b->cap ? b->cap : 1024;
            while (cap - b->len < n)
                cap *= 2;
            uint8_t *np = realloc(b->p, cap);
            if (!np)
                return -1;
            b->p = np;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static void bytes_clear(struct bytes *b)
{
    b->head = b->len = 0;
}

/* ---- events ------------------------------------------------------------ */

static struct qev *ev_push(struct imb_client *c, enum imb_event_type type, json_t *hold)
{
    if (c->q_head + c->q_len == c->q_cap) {
        if (c->q_head > 0) {
            memmove(c->q, c->q + c->q_head, c->q_len * sizeof *c->q);
            c->q_head = 0;
        } else {
            size_t cap = c->q_cap ? c->q_cap * 2 : 16;
            struct qev *nq = realloc(c->q, cap * sizeof *nq);
            if (!nq) {
                json_decref(hold);
                return NULL;
            }
            c->q = nq;
            c->q_cap = cap;
        }
    }
    struct qev *e = &c->q[c->q_head + c->q_len++];
    memset(e, 0, sizeof *e);
    e->ev.type = type;
    e->hold = hold;
    e->gen = c->gen;
    return e;
}

static void protocol_event(struct imb_client *c, const char *what)
{
    json_t *s = json_string(what);
    struct qev *e = ev_push(c, IMB_EV_PROTOCOL, s);
    if (e)
        e->ev.msg = json_string_value(s);
}

static void release_cur(struct imb_client *c)
{
    if (!c->has_cur)
        return;
    json_decref(c->cur.hold);
    c->has_cur = false;
}

/* The app has taken event e: a stored one counts as stored (auto ack). */
static void taken(struct imb_client *c, const struct qev *e)
{
    if (!c->manual_ack && e->ev.seq > 0 && e->gen == c->gen &&
        e->ev.type != IMB_EV_SYNC && e->ev.seq > c->seq)
        c->seq = e->ev.seq;
}

bool imb_client_next_event(struct imb_client *c, const struct imb_event **ev)
{
    release_cur(c);
    if (c->q_len == 0)
        return false;
    c->cur = c->q[c->q_head++];
    c->q_len--;
    if (c->q_len == 0)
        c->q_head = 0;
    c->has_cur = true;
    taken(c, &c->cur);
    *ev = &c->cur.ev;
    return true;
}

/* Hand queued events to on_event, unless polling or already inside it. */
static void dispatch(struct imb_client *c)
{
    if (!c->on_event || c->dispatching)
        return;
    c->dispatching = true;
    const struct imb_event *ev;
    while (imb_client_next_event(c, &ev))
        c->on_event(c->arg, ev);
    release_cur(c);
    c->dispatching = false;
}

/* ---- output ------------------------------------------------------------ */

static bool connected_state(const struct imb_client *c)
{
    return c->st == ST_LOGIN || c->st == ST_READY || c->st == ST_LOGOUT;
}

/* Frame a JSON object onto the output. -1 when too big or out of memory. */
static int write_frame(struct imb_client *c, const json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s)
        return -1;
    size_t n = strlen(s);
    int rc = -1;
    if (n >= MIN_BODY && n <= c->max) {
        uint8_t h[HEADER] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        if (bytes_put(&c->out, h, HEADER) == 0 && bytes_put(&c->out, s, n) == 0) {
            rc = 0;
            c->last_tx = c->now;
        }
    }
    free(s);
    return rc;
}

static void write_simple(struct imb_client *c, const char *t)
{
    json_t *o = json_pack("{ss}", "t", t);
    if (o)
        write_frame(c, o);
    json_decref(o);
}

static void flush_ack(struct imb_client *c)
{
    if (c->st != ST_READY)
        return;
    uint64_t s = c->seq < c->conn_rx_max ? c->seq : c->conn_rx_max;
    if (s <= c->ack_sent)
        return;
    json_t *o = json_pack("{sssI}", "t", "ack", "seq", (json_int_t)s);
    if (o && write_frame(c, o) == 0)
        c->ack_sent = s;
    json_decref(o);
}

size_t imb_client_output(struct imb_client *c, const uint8_t **p)
{
    if (!connected_state(c)) {
        *p = NULL;
        return 0;
    }
    flush_ack(c);
    *p = c->out.p + c->out.head;
    return c->out.len - c->out.head;
}

void imb_client_consumed(struct imb_client *c, size_t n)
{
    size_t have = c->out.len - c->out.head;
    c->out.head += n < have ? n : have;
}

/* ---- connection lifecycle ---------------------------------------------- */

uint64_t imb_client_backoff_bound(const struct imb_client *c, uint32_t attempt)
{
    uint64_t b = c->backoff_base_ms;
    for (uint32_t i = 0; i < attempt && b < c->backoff_cap_ms; i++)
        b *= 2;
    return b < c->backoff_cap_ms ? b : c->backoff_cap_ms;
}

static void drop_connection(struct imb_client *c)
{
    bytes_clear(&c->in);
    bytes_clear(&c->out);
    c->probe_at = 0;
    c->conn_rx_max = 0;
    c->ack_sent = 0;
    c->max = DEFAULT_MAX;
}

/* The attempt failed: close, and schedule the next on the next edge after
 * delay_ms (< 0: the backoff). */
static void fail(struct imb_client *c, const char *reason, int64_t delay_ms)
{
    drop_connection(c);
    if (delay_ms < 0) {
        uint64_t bound = imb_client_backoff_bound(c, c->attempt);
        delay_ms = (int64_t)(rnd(c) % (bound + 1));
    }
    if (c->attempt < 64)
        c->attempt++;
    c->edge = (c->edge + 1) % c->n_edges;
    c->st = ST_WAIT;
    c->reconnect_at = c->now + delay_ms;
    json_t *r = json_string(reason);
    struct qev *e = ev_push(c, IMB_EV_DISCONNECT, r);
    if (e) {
        e->ev.reason = r ? json_string_value(r) : "";
        e->ev.retry_ms = (uint64_t)delay_ms;
        e->ev.edge = c->edge;
        e->ev.host = c->edges[c->edge].host;
        e->ev.port = c->edges[c->edge].port;
        e->ev.tls = c->edges[c->edge].tls;
    }
}

static void stop(struct imb_client *c, const char *reason)
{
    drop_connection(c);
    c->st = ST_STOPPED;
    json_t *r = json_string(reason);
    struct qev *e = ev_push(c, IMB_EV_DISCONNECT, r);
    if (e) {
        e->ev.reason = r ? json_string_value(r) : "";
        e->ev.final = true;
        e->ev.edge = c->edge;
    }
}

static void connect_now(struct imb_client *c)
{
    c->st = ST_CONNECTING;
    c->phase_at = c->now;
    struct qev *e = ev_push(c, IMB_EV_CONNECT, NULL);
    if (e) {
        e->ev.edge = c->edge;
        e->ev.host = c->edges[c->edge].host;
        e->ev.port = c->edges[c->edge].port;
        e->ev.tls = c->edges[c->edge].tls;
        e->ev.attempt = c->attempt;
    }
}

void imb_client_start(struct imb_client *c, int64_t now_ms)
{
    c->now = now_ms;
    if (c->st == ST_IDLE || c->st == ST_STOPPED) {
        c->attempt = 0;
        connect_now(c);
    }
    dispatch(c);
}

void imb_client_connected(struct imb_client *c, int64_t now_ms)
{
    c->now = now_ms;
    if (c->st != ST_CONNECTING)
        return;
    drop_connection(c);
    c->st = ST_LOGIN;
    c->phase_at = now_ms;
    c->last_rx = now_ms;
    json_t *o = json_pack("{sssisssIss}", "t", "login", "v", 1, "jid", c->jid, "seq",
                          (json_int_t)c->seq, "pass", c->pass);
    if (o && c->dev)
        json_object_set_new(o, "dev", json_string(c->dev));
    if (o && c->epoch[0])
        json_object_set_new(o, "epoch", json_string(c->epoch));
    if (o && c->token)
        json_object_set_new(o, "token", json_string(c->token));
    if (!o || write_frame(c, o) != 0)
        fail(c, "login_frame", -1);
    json_decref(o);
    dispatch(c);
}

void imb_client_closed(struct imb_client *c, int64_t now_ms)
{
    c->now = now_ms;
    if (c->st == ST_LOGOUT)
        stop(c, "logout");
    else if (c->st == ST_CONNECTING)
        fail(c, "connect_failed", -1);
    else if (c->st == ST_LOGIN || c->st == ST_READY)
        fail(c, "closed", -1);
    dispatch(c);
}

/* ---- incoming frames --------------------------------------------------- */

static const char *sfield(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool bfield(json_t *o, const char *k)
{
    return json_is_true(json_object_get(o, k));
}

/* A non-negative integer field: 1 ok, 0 absent, -1 present but bad. */
static int ufield(json_t *o, const char *k, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static struct qev *frame_event(struct imb_client *c, enum imb_event_type type, json_t *f,
                               const char *t)
{
    struct qev *e = ev_push(c, type, json_incref(f));
    if (!e)
        return NULL;
    e->ev.t = t;
    e->ev.frame = f;
    e->ev.id = sfield(f, "id");
    e->ev.from = sfield(f, "from");
    e->ev.to = sfield(f, "to");
    e->ev.room = sfield(f, "room");
    return e;
}

static void on_welcome(struct imb_client *c, json_t *f)
{
    uint64_t hb = 0, max = 0;
    const char *jid = sfield(f, "jid");
    const char *token = sfield(f, "token");
    if (c->st != ST_LOGIN) {
        protocol_event(c, "welcome while not logging in");
        return;
    }
    if (ufield(f, "hb", &hb) != 1 || hb < 1 || hb > MAX_HB_S || ufield(f, "max", &max) != 1 ||
        max < 64 || max > MAX_LIMIT || !jid) {
        protocol_event(c, "welcome without a valid jid, hb or max");
        fail(c, "protocol_error", -1);
        return;
    }
    c->hb_ms = (uint32_t)hb * 1000;
    c->max = (uint32_t)max;
    if (token && strlen(token) <= TOKEN_MAX) {
        char *t = dupstr(token);
        if (t) {
            free(c->token);
            c->token = t;
        }
    }
    c->st = ST_READY;
    c->attempt = 0;
    c->probe_at = 0;
    struct qev *e = frame_event(c, IMB_EV_LOGGED_IN, f, "welcome");
    if (e) {
        e->ev.jid = jid;
        e->ev.token = token;
        e->ev.hb_s = (uint32_t)hb;
        e->ev.max = (uint32_t)max;
    }
    /* The outbox, oldest first, with the same ids. */
    for (size_t i = 0; i < c->ob_n; i++) {
        struct outmsg *m = &c->ob[i];
        if (m->len - HEADER > c->max)
            continue; /* a smaller max than before; its error comes below */
        if (bytes_put(&c->out, m->frame, m->len) == 0)
            c->last_tx = c->now;
        m->retry_at = 0;
    }
    for (size_t i = 0; i < c->ob_n;) {
        if (c->ob[i].len - HEADER > c->max) {
            json_t *s = json_pack("{ssssssss}", "t", "error", "code", "too_big", "id", c->ob[i].id,
                                  "msg", "the message does not fit the server's max");
            struct qev *x = s ? frame_event(c, IMB_EV_ERROR, s, "error") : NULL;
            if (x) {
                x->ev.code = "too_big";
                x->ev.msg = sfield(s, "msg");
            }
            json_decref(s);
            free(c->ob[i].frame);
            memmove(&c->ob[i], &c->ob[i + 1], (c->ob_n - i - 1) * sizeof *c->ob);
            c->ob_n--;
        } else {
            i++;
        }
    }
}

static long outbox_find(const struct imb_client *c, const char *id)
{
    if (!id)
        return -1;
    for (size_t i = 0; i < c->ob_n; i++)
        if (strcmp(c->ob[i].id, id) == 0)
            return (long)i;
    return -1;
}

static void outbox_remove(struct imb_client *c, size_t i)
{
    free(c->ob[i].frame);
    memmove(&c->ob[i], &c->ob[i + 1], (c->ob_n - i - 1) * sizeof *c->ob);
    c->ob_n--;
}

static void on_error(struct imb_client *c, json_t *f)
{
    const char *code = sfield(f, "code");
    if (!code)
        code = "internal";
    uint64_t retry = 0;
    ufield(f, "retry", &retry);
    if (retry > 86400)
        retry = 86400;
    const char *id = sfield(f, "id");
    long oi = outbox_find(c, id);
    if (oi >= 0 && (strcmp(code, "unavailable") == 0 || strcmp(code, "rate_limited") == 0) &&
        c->ob[oi].tries < RETRY_TRIES) {
        /* Not refused: the bridge could not take it now. Send it again later. */
        c->ob[oi].tries++;
        c->ob[oi].retry_at = c->now + RETRY_MS + (int64_t)(rnd(c) % RETRY_MS);
        return;
    }
    struct qev *e = frame_event(c, IMB_EV_ERROR, f, "error");
    if (e) {
        e->ev.code = code;
        e->ev.msg = sfield(f, "msg");
        e->ev.reason = sfield(f, "reason");
        e->ev.retry_s = (uint32_t)retry;
    }
    if (oi >= 0)
        outbox_remove(c, (size_t)oi);
    if (c->st != ST_LOGIN || id)
        return;
    /* The answer to our login. */
    if (strcmp(code, "auth_failed") == 0 || strcmp(code, "unknown_domain") == 0 ||
        strcmp(code, "bad_version") == 0)
        stop(c, code);
    else if (strcmp(code, "rate_limited") == 0)
        fail(c, code, (int64_t)retry * 1000 + (int64_t)(rnd(c) % (c->backoff_base_ms + 1)));
    else
        fail(c, code, -1);
}

static void on_bye(struct imb_client *c, json_t *f)
{
    const char *reason = sfield(f, "reason");
    if (!reason)
        reason = "shutdown";
    struct qev *e = frame_event(c, IMB_EV_BYE, f, "bye");
    if (e)
        e->ev.reason = reason;
    if (strcmp(reason, "logout") == 0 || strcmp(reason, "too_many_failures") == 0) {
        stop(c, reason);
    } else {
        fail(c, reason, -1);
    }
}

static void on_sync(struct imb_client *c, json_t *f)
{
    const char *epoch = sfield(f, "epoch");
    uint64_t seq = 0, missed = 0;
    if (!epoch || strlen(epoch) > EPOCH_MAX || ufield(f, "seq", &seq) != 1 ||
        ufield(f, "missed", &missed) < 0) {
        protocol_event(c, "sync without a valid epoch or seq");
        return;
    }
    bool reset = bfield(f, "reset");
    if (!reset && c->epoch[0] && strcmp(c->epoch, epoch) != 0)
        reset = true; /* another numbering: what we knew is void */
    if (reset) {
        c->gen++;
        c->seq = c->rx_seq = 0;
        c->ack_sent = 0;
        c->conn_rx_max = 0;
    }
    snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    struct qev *e = frame_event(c, IMB_EV_SYNC, f, "sync");
    if (e) {
        e->ev.epoch = epoch;
        e->ev.seq = seq;
        e->ev.missed = missed;
        e->ev.reset = reset;
    }
}

/* A stored frame (msg, receipt, sub, invite... with seq): false when it is a
 * duplicate to drop. */
static bool stored_new(struct imb_client *c, uint64_t seq)
{
    if (seq > c->conn_rx_max)
        c->conn_rx_max = seq;
    if (seq <= c->rx_seq || seq <= c->seq)
        return false;
    c->rx_seq = seq;
    return true;
}

static void on_msg(struct imb_client *c, json_t *f)
{
    uint64_t seq = 0;
    const char *from = sfield(f, "from"), *body = sfield(f, "body");
    if (ufield(f, "seq", &seq) != 1 || seq == 0 || !from || !body) {
        protocol_event(c, "msg without a valid seq, from or body");
        return;
    }
    if (!stored_new(c, seq))
        return;
    struct qev *e = frame_event(c, IMB_EV_MSG, f, "msg");
    if (!e)
        return;
    e->ev.seq = seq;
    e->ev.body = body;
    json_t *ts = json_object_get(f, "ts");
    e->ev.ts = json_is_integer(ts) ? (int64_t)json_integer_value(ts) : 0;
    e->ev.sent = bfield(f, "sent");
    e->ev.truncated = bfield(f, "truncated");
    e->ev.filtered = sfield(f, "filtered");
}

static void on_frame(struct imb_client *c, json_t *f)
{
    const char *t = sfield(f, "t");
    if (!t) {
        protocol_event(c, "frame without a string \"t\"");
        return;
    }
    if (strcmp(t, "hb") == 0) {
        if (c->hb_events)
            frame_event(c, IMB_EV_FRAME, f, t);
        return;
    }
    if (strcmp(t, "welcome") == 0) {
        on_welcome(c, f);
        return;
    }
    if (strcmp(t, "error") == 0) {
        on_error(c, f);
        return;
    }
    if (strcmp(t, "bye") == 0) {
        on_bye(c, f);
        return;
    }
    if (c->st != ST_READY && c->st != ST_LOGOUT) {
        protocol_event(c, "frame before welcome");
        return;
    }
    if (strcmp(t, "sync") == 0) {
        on_sync(c, f);
        return;
    }
    if (strcmp(t, "msg") == 0) {
        on_msg(c, f);
        return;
    }
    if (strcmp(t, "ack") == 0) {
        long i = outbox_find(c, sfield(f, "id"));
        if (i < 0)
            return; /* a second ack of a resent id, or not ours: nothing to do */
        outbox_remove(c, (size_t)i);
        frame_event(c, IMB_EV_ACK, f, t);
        return;
    }
    /* Everything else: live events, or stored ones with a seq. */
    uint64_t seq = 0;
    int has = ufield(f, "seq", &seq);
    if (has < 0 || (has == 1 && seq == 0)) {
        protocol_event(c, "event with a bad seq");
        return;
    }
    if (has == 1 && !stored_new(c, seq))
        return;
    enum imb_event_type type = IMB_EV_FRAME;
    if (strcmp(t, "receipt") == 0)
        type = IMB_EV_RECEIPT;
    else if (strcmp(t, "presence") == 0)
        type = IMB_EV_PRESENCE;
    else if (strcmp(t, "typing") == 0)
        type = IMB_EV_TYPING;
    else if (strcmp(t, "ok") == 0)
        type = IMB_EV_OK;
    struct qev *e = frame_event(c, type, f, t);
    if (!e)
        return;
    e->ev.seq = seq;
    e->ev.state = sfield(f, "state");
    e->ev.show = sfield(f, "show");
    e->ev.status = sfield(f, "status");
}

/* Take whole frames off the input. */
static void parse_input(struct imb_client *c)
{
    while (connected_state(c)) {
        size_t have = c->in.len - c->in.head;
        if (have < HEADER)
            break;
        const uint8_t *p = c->in.p + c->in.head;
        uint32_t n = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        if (n > c->max || n < MIN_BODY) {
            char what[96];
            snprintf(what, sizeof what, "frame length %u outside %u..%u", n, MIN_BODY, c->max);
            protocol_event(c, what);
            fail(c, "protocol_error", -1);
            return;
        }
        if (have - HEADER < n)
            break;
        json_error_t jerr;
        json_t *f = json_loadb((const char *)p + HEADER, n, JSON_REJECT_DUPLICATES, &jerr);
        c->in.head += HEADER + n;
        if (!json_is_object(f))
            protocol_event(c, f ? "frame is not a JSON object" : "frame is not JSON");
        else
            on_frame(c, f);
        json_decref(f);
    }
    if (c->in.head == c->in.len)
        bytes_clear(&c->in);
}

void imb_client_input(struct imb_client *c, const void *buf, size_t n, int64_t now_ms)
{
    c->now = now_ms;
    if (!connected_state(c) || n == 0) {
        dispatch(c);
        return;
    }
    c->last_rx = now_ms;
    c->probe_at = 0;
    const uint8_t *p = buf;
    /* Never hold more than one frame's worth: take frames as chunks arrive. */
    while (n > 0 && connected_state(c)) {
        size_t room = (size_t)c->max + HEADER;
        size_t have = c->in.len - c->in.head;
        size_t take = have < room ? room - have : 1;
        if (take > n)
            take = n;
        if (bytes_put(&c->in, p, take) != 0) {
            fail(c, "out_of_memory", -1);
            break;
        }
        p += take;
        n -= take;
        parse_input(c);
    }
    dispatch(c);
}

/* ---- timers ------------------------------------------------------------ */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int64_t imb_client_next_deadline(const struct imb_client *c)
{
    int64_t d = INT64_MAX;
    switch (c->st) {
    case ST_WAIT:
        return c->reconnect_at;
    case ST_CONNECTING:
        return c->phase_at + c->connect_timeout_ms;
    case ST_LOGIN:
        return c->phase_at + c->login_timeout_ms;
    case ST_LOGOUT:
        return c->phase_at + LOGOUT_WAIT_MS;
    case ST_READY:
        d = c->last_tx + c->hb_ms;
        if (!c->probe_at)
            d = min64(d, c->last_rx + c->hb_ms);
        else
            d = min64(d, c->probe_at + c->hb_ms);
        d = min64(d, c->last_rx + 2 * (int64_t)c->hb_ms);
        for (size_t i = 0; i < c->ob_n; i++)
            if (c->ob[i].retry_at)
                d = min64(d, c->ob[i].retry_at);
        return d;
    default:
        return INT64_MAX;
    }
}

void imb_client_tick(struct imb_client *c, int64_t now_ms)
{
    c->now = now_ms;
    switch (c->st) {
    case ST_WAIT:
        if (now_ms >= c->reconnect_at)
            connect_now(c);
        break;
    case ST_CONNECTING:
        if (now_ms >= c->phase_at + c->connect_timeout_ms)
            fail(c, "connect_timeout", -1);
        break;
    case ST_LOGIN:
        if (now_ms >= c->phase_at + c->login_timeout_ms)
            fail(c, "login_timeout", -1);
        break;
    case ST_LOGOUT:
        if (now_ms >= c->phase_at + LOGOUT_WAIT_MS)
            stop(c, "logout");
        break;
    case ST_READY:
        /* Dead: nothing for 2 intervals, or an hb unanswered for one. */
        if (now_ms >= c->last_rx + 2 * (int64_t)c->hb_ms ||
            (c->probe_at && now_ms >= c->probe_at + c->hb_ms)) {
            fail(c, "dead_link", 0);
            break;
        }
        if (now_ms >= c->last_tx + c->hb_ms || (!c->probe_at && now_ms >= c->last_rx + c->hb_ms)) {
            write_simple(c, "hb");
            if (!c->probe_at)
                c->probe_at = now_ms;
        }
        for (size_t i = 0; i < c->ob_n; i++) {
            struct outmsg *m = &c->ob[i];
            if (m->retry_at && now_ms >= m->retry_at) {
                m->retry_at = 0;
                if (bytes_put(&c->out, m->frame, m->len) == 0)
                    c->last_tx = now_ms;
            }
        }
        break;
    default:
        break;
    }
    dispatch(c);
}

/* ---- sending ----------------------------------------------------------- */

int imb_client_send_msg(struct imb_client *c, const char *to, const char *body, bool group,
                        const char *id, char id_out[65], char *err, size_t errlen)
{
    char idbuf[ID_MAX + 1];
    json_t *o = NULL;
    uint8_t *fr = NULL;
    char *s = NULL;
    if (!to || !*to || !body) {
        seterr(err, errlen, "to and body are required");
        goto fail;
    }
    if (c->ob_n >= c->outbox_max) {
        seterr(err, errlen, "outbox full");
        goto fail;
    }
    if (id) {
        if (!id_chars(id, ID_MAX, true)) {
            seterr(err, errlen, "id must be 1..64 of [A-Za-z0-9._:-]");
            goto fail;
        }
        if (outbox_find(c, id) >= 0) {
            seterr(err, errlen, "id already waiting for its ack");
            goto fail;
        }
        snprintf(idbuf, sizeof idbuf, "%s", id);
    } else {
        snprintf(idbuf, sizeof idbuf, "%s-%08x-%llu", c->id_prefix, (unsigned)(rnd(c) >> 32),
                 (unsigned long long)++c->id_counter);
    }
    o = json_pack("{ssssss}", "t", "msg", "id", idbuf, "to", to);
    json_t *b = json_string(body);
    if (!o || !b) {
        json_decref(b);
        seterr(err, errlen, "body or to is not valid UTF-8");
        goto fail;
    }
    json_object_set_new(o, "body", b);
    if (group)
        json_object_set_new(o, "group", json_true());
    s = json_dumps(o, JSON_COMPACT);
    if (!s)
        goto fail;
    size_t n = strlen(s);
    if (n > c->max) {
        seterr(err, errlen, "message too big for the server's max");
        goto fail;
    }
    if (c->ob_n == c->ob_cap) {
        size_t cap = c->ob_cap ? c->ob_cap * 2 : 16;
        struct outmsg *nob = realloc(c->ob, cap * sizeof *nob);
        if (!nob)
            goto fail;
        c->ob = nob;
        c->ob_cap = cap;
    }
    fr = malloc(HEADER + n);
    if (!fr)
        goto fail;
    fr[0] = (uint8_t)(n >> 24);
    fr[1] = (uint8_t)(n >> 16);
    fr[2] = (uint8_t)(n >> 8);
    fr[3] = (uint8_t)n;
    memcpy(fr + HEADER, s, n);
    struct outmsg *m = &c->ob[c->ob_n++];
    memset(m, 0, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", idbuf);
    m->frame = fr;
    m->len = HEADER + n;
    if (c->st == ST_READY && bytes_put(&c->out, fr, m->len) == 0)
        c->last_tx = c->now;
    if (id_out)
        snprintf(id_out, ID_MAX + 1, "%s", idbuf);
    free(s);
    json_decref(o);
    return 0;
fail:
    if (err && errlen && !*err)
        seterr(err, errlen, "out of memory");
    free(s);
    json_decref(o);
    return -1;
}

int imb_client_send(struct imb_client *c, json_t *frame, char *err, size_t errlen)
{
    if (err && errlen)
        *err = 0;
    const char *t = json_is_object(frame) ? sfield(frame, "t") : NULL;
    if (!t) {
        seterr(err, errlen, "a JSON object with a string \"t\" is required");
        return -1;
    }
    if (!strcmp(t, "login") || !strcmp(t, "msg") || !strcmp(t, "ack") || !strcmp(t, "logout")) {
        seterr(err, errlen, "login, msg, ack and logout have their own functions");
        return -1;
    }
    if (c->st != ST_READY) {
        seterr(err, errlen, "not logged in");
        return -1;
    }
    if (write_frame(c, frame) != 0) {
        seterr(err, errlen, "frame too big for the server's max");
        return -1;
    }
    return 0;
}

static int send_pack(struct imb_client *c, json_t *o)
{
    int rc = o ? imb_client_send(c, o, NULL, 0) : -1;
    json_decref(o);
    return rc;
}

int imb_client_presence(struct imb_client *c, const char *show, const char *status)
{
    json_t *o = json_pack("{ssss}", "t", "presence", "show", show ? show : "online");
    if (o && status)
        json_object_set_new(o, "status", json_string(status));
    return send_pack(c, o);
}

int imb_client_typing(struct imb_client *c, const char *to, const char *state)
{
    return send_pack(c, json_pack("{ssssss}", "t", "typing", "to", to, "state", state));
}

int imb_client_read(struct imb_client *c, const char *to, const char *id)
{
    return send_pack(c, json_pack("{ssssss}", "t", "read", "to", to, "id", id));
}

int imb_client_set_active(struct imb_client *c, bool active)
{
    return send_pack(c, json_pack("{sssb}", "t", "state", "active", active));
}

void imb_client_ack(struct imb_client *c, uint64_t seq)
{
    if (seq > c->rx_seq)
        seq = c->rx_seq; /* never above what was received */
    if (seq > c->seq)
        c->seq = seq;
}

void imb_client_logout(struct imb_client *c, int64_t now_ms)
{
    c->now = now_ms;
    if (c->st == ST_READY) {
        flush_ack(c);
        write_simple(c, "logout");
        c->st = ST_LOGOUT;
        c->phase_at = now_ms;
    } else if (c->st != ST_STOPPED && c->st != ST_IDLE && c->st != ST_LOGOUT) {
        stop(c, "logout");
    }
    dispatch(c);
}

/* ---- state ------------------------------------------------------------- */

const char *imb_client_epoch(const struct imb_client *c)
{
    return c->epoch;
}

uint64_t imb_client_seq(const struct imb_client *c)
{
    return c->seq;
}

size_t imb_client_outbox_len(const struct imb_client *c)
{
    return c->ob_n;
}

int imb_client_set_password(struct imb_client *c, const char *pass)
{
    char *p = pass ? dupstr(pass) : NULL;
    if (!p)
        return -1;
    volatile char *w = c->pass;
    while (*w)
        *w++ = 0;
    free(c->pass);
    c->pass = p;
    return 0;
}

bool imb_client_logged_in(const struct imb_client *c)
{
    return c->st == ST_READY;
}

/* ---- life -------------------------------------------------------------- */

struct imb_client *imb_client_new(const struct imb_client_opts *o)
{
    if (!o || !o->jid || !*o->jid || !o->pass || !o->edges || o->n_edges == 0)
        return NULL;
    if (o->dev && !id_chars(o->dev, 64, false))
        return NULL;
    if (o->id_prefix && !id_chars(o->id_prefix, 16, true))
        return NULL;
    if (o->epoch && strlen(o->epoch) > EPOCH_MAX)
        return NULL;
    for (size_t i = 0; i < o->n_edges; i++)
        if (!o->edges[i].host || !o->edges[i].port)
            return NULL;
    struct imb_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->jid = dupstr(o->jid);
    c->pass = dupstr(o->pass);
    c->dev = dup_or_null(o->dev);
    c->id_prefix = dupstr(o->id_prefix ? o->id_prefix : "m");
    c->token = o->token && strlen(o->token) <= TOKEN_MAX ? dupstr(o->token) : NULL;
    c->edges = calloc(o->n_edges, sizeof *c->edges);
    if (!c->jid || !c->pass || (o->dev && !c->dev) || !c->id_prefix || !c->edges)
        goto fail;
    c->n_edges = o->n_edges;
    for (size_t i = 0; i < o->n_edges; i++) {
        c->edges[i].host = dupstr(o->edges[i].host);
        c->edges[i].port = dupstr(o->edges[i].port);
        c->edges[i].tls = o->edges[i].tls;
        if (!c->edges[i].host || !c->edges[i].port)
            goto fail;
    }
    c->backoff_base_ms = o->backoff_base_ms ? o->backoff_base_ms : 1000;
    c->backoff_cap_ms = o->backoff_cap_ms ? o->backoff_cap_ms : 60000;
    if (c->backoff_cap_ms < c->backoff_base_ms)
        c->backoff_cap_ms = c->backoff_base_ms;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 10000;
    c->login_timeout_ms = o->login_timeout_ms ? o->login_timeout_ms : 15000;
    c->manual_ack = o->manual_ack;
    c->hb_events = o->hb_events;
    c->outbox_max = o->outbox_max ? o->outbox_max : 1000;
    c->on_event = o->on_event;
    c->arg = o->arg;
    c->max = DEFAULT_MAX;
    c->hb_ms = 30000;
    if (o->epoch)
        snprintf(c->epoch, sizeof c->epoch, "%s", o->epoch);
    c->seq = c->rx_seq = o->seq;
    c->rng = (o->seed ^ (uint64_t)(uintptr_t)c ^ 0x9E3779B97F4A7C15ULL) | 1;
    c->st = ST_IDLE;
    return c;
fail:
    imb_client_free(c);
    return NULL;
}

void imb_client_free(struct imb_client *c)
{
    if (!c)
        return;
    release_cur(c);
    for (size_t i = 0; i < c->q_len; i++)
        json_decref(c->q[c->q_head + i].hold);
    free(c->q);
    for (size_t i = 0; i < c->ob_n; i++)
        free(c->ob[i].frame);
    free(c->ob);
    if (c->pass) {
        volatile char *p = c->pass;
        while (*p)
            *p++ = 0;
    }
    free(c->pass);
    free(c->jid);
    free(c->dev);
    free(c->id_prefix);
    free(c->token);
    if (c->edges)
        for (size_t i = 0; i < c->n_edges; i++) {
            free((char *)c->edges[i].host);
            free((char *)c->edges[i].port);
        }
    free(c->edges);
    free(c->in.p);
    free(c->out.p);
    free(c);
}
