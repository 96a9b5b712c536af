/* test_client.c - client/imb_client: the sans-I/O phone client against
 * scripted byte streams and a fake clock: framing (byte by byte, several
 * frames per read, oversized and malformed frames), login and resume
 * (a drop at every byte of the server's login/resume answer: the outbox is
 * resent with the same ids, the login carries epoch/seq, nothing is
 * delivered twice), reset, heartbeats and dead-link deadlines, backoff
 * bounds, login errors, callbacks. */
#include "imb_client.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---- helpers ----------------------------------------------------------- */

static const struct imb_edge EDGES[2] = {
    {"edge-a.example", "7222", false},
    {"edge-b.example", "7223", true},
};

static struct imb_client_opts base_opts(void)
{
    struct imb_client_opts o = {0};
    o.jid = "alice@localhost";
    o.pass = "secret";
    o.dev = "pixel7";
    o.edges = EDGES;
    o.n_edges = 2;
    o.seed = 42;
    return o;
}

/* Bytes of one frame (header + JSON text) appended to buf. */
struct buf {
    uint8_t p[1 << 16];
    size_t n;
};

static void put(struct buf *b, const char *json)
{
    size_t n = strlen(json);
    b->p[b->n++] = (uint8_t)(n >> 24);
    b->p[b->n++] = (uint8_t)(n >> 16);
    b->p[b->n++] = (uint8_t)(n >> 8);
    b->p[b->n++] = (uint8_t)n;
    memcpy(b->p + b->n, json, n);
    b->n += n;
}

/* A copy of what an event said, for checks after it is gone. */
struct rec {
    enum imb_event_type type;
    char id[80], body[80], reason[40], epoch[40], code[40], t[20];
    uint64_t seq, retry_ms, missed;
    size_t edge;
    bool final, reset;
};

struct recs {
    struct rec r[256];
    size_t n;
};

static void copy(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static void record(struct recs *rs, const struct imb_event *ev)
{
    if (rs->n >= 256)
        return;
    struct rec *r = &rs->r[rs->n++];
    memset(r, 0, sizeof *r);
    r->type = ev->type;
    copy(r->id, sizeof r->id, ev->id);
    copy(r->body, sizeof r->body, ev->type == IMB_EV_PROTOCOL ? ev->msg : ev->body);
    copy(r->reason, sizeof r->reason, ev->reason);
    copy(r->epoch, sizeof r->epoch, ev->epoch);
    copy(r->code, sizeof r->code, ev->code);
    copy(r->t, sizeof r->t, ev->t);
    r->seq = ev->seq;
    r->retry_ms = ev->retry_ms;
    r->missed = ev->missed;
    r->edge = ev->edge;
    r->final = ev->final;
    r->reset = ev->reset;
}

static void drain(struct imb_client *c, struct recs *rs)
{
    const struct imb_event *ev;
    while (imb_client_next_event(c, &ev))
        record(rs, ev);
}

static size_t count(const struct recs *rs, enum imb_event_type t)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++)
        n += rs->r[i].type == t;
    return n;
}

static const struct rec *last(const struct recs *rs, enum imb_event_type t)
{
    for (size_t i = rs->n; i-- > 0;)
        if (rs->r[i].type == t)
            return &rs->r[i];
    return NULL;
}

/* Everything the client wrote, as a JSON array of frames (consumed). */
static json_t *written(struct imb_client *c)
{
    json_t *arr = json_array();
    const uint8_t *p;
    size_t n = imb_client_output(c, &p);
    size_t off = 0;
    while (n - off >= 4) {
        size_t len = ((size_t)p[off] << 24) | ((size_t)p[off + 1] << 16) |
                     ((size_t)p[off + 2] << 8) | p[off + 3];
        if (n - off - 4 < len)
            break;
        json_t *f = json_loadb((const char *)p + off + 4, len, 0, NULL);
        if (f)
            json_array_append_new(arr, f);
        off += 4 + len;
    }
    CHECK_EQ_INT(off, n); /* only whole frames */
    imb_client_consumed(c, n);
    return arr;
}

/* The first written frame of type t, or NULL (borrowed from arr). */
static json_t *find(json_t *arr, const char *t)
{
    size_t i;
    json_t *f;
    json_array_foreach(arr, i, f) if (strcmp(json_string_value(json_object_get(f, "t")), t) == 0) return f;
    return NULL;
}

static size_t count_written(json_t *arr, const char *t)
{
    size_t i, n = 0;
    json_t *f;
    json_array_foreach(arr, i, f) n += strcmp(json_string_value(json_object_get(f, "t")), t) == 0;
    return n;
}

static const char *WELCOME =
    "{\"t\":\"welcome\",\"v\":1,\"jid\":\"alice@localhost\",\"hb\":10,\"max\":16384,\"token\":\"tok1\"}";

/* A client at ST_LOGIN: started, transport up, login written (consumed). */
static struct imb_client *logging_in(struct imb_client_opts *o, struct recs *rs, int64_t now)
{
    struct imb_client *c = imb_client_new(o);
    if (!c)
        return NULL;
    imb_client_start(c, now);
    imb_client_connected(c, now);
    drain(c, rs);
    json_decref(written(c));
    return c;
}

static struct imb_client *logged_in(struct imb_client_opts *o, struct recs *rs, int64_t now)
{
    struct imb_client *c = logging_in(o, rs, now);
    if (!c)
        return NULL;
    struct buf b = {.n = 0};
    put(&b, WELCOME);
    put(&b, "{\"t\":\"sync\",\"epoch\":\"e1\",\"seq\":0}");
    imb_client_input(c, b.p, b.n, now);
    drain(c, rs);
    json_decref(written(c));
    return c;
}

/* ---- tests ------------------------------------------------------------- */

TEST(client_opts_checked)
{
    struct imb_client_opts o = base_opts();
    o.jid = NULL;
    CHECK(imb_client_new(&o) == NULL);
    o = base_opts();
    o.n_edges = 0;
    CHECK(imb_client_new(&o) == NULL);
    o = base_opts();
    o.dev = "bad dev";
    CHECK(imb_client_new(&o) == NULL);
    o = base_opts();
    o.epoch = "0123456789012345678901234567890123";
    CHECK(imb_client_new(&o) == NULL);
    o = base_opts();
    struct imb_client *c = imb_client_new(&o);
    CHECK(c != NULL);
    imb_client_free(c);
}

TEST(client_login_frame_and_welcome)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = imb_client_new(&o);
    if (!CHECK(c))
        return;
    imb_client_start(c, 1000);
    drain(c, &rs);
    if (!CHECK_EQ_INT(rs.n, 1))
        goto out;
    CHECK_EQ_INT(rs.r[0].type, IMB_EV_CONNECT);
    CHECK_EQ_INT(rs.r[0].edge, 0);
    const uint8_t *p;
    CHECK_EQ_INT(imb_client_output(c, &p), 0); /* nothing before the transport is up */
    imb_client_connected(c, 1010);
    json_t *w = written(c);
    json_t *login = find(w, "login");
    CHECK(login != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(login, "v")), 1);
    CHECK_EQ_STR(json_string_value(json_object_get(login, "jid")), "alice@localhost");
    CHECK_EQ_STR(json_string_value(json_object_get(login, "pass")), "secret");
    CHECK_EQ_STR(json_string_value(json_object_get(login, "dev")), "pixel7");
    CHECK_EQ_INT(json_integer_value(json_object_get(login, "seq")), 0);
    CHECK(json_object_get(login, "epoch") == NULL); /* never synced: no epoch */
    CHECK(json_object_get(login, "token") == NULL);
    json_decref(w);

    struct buf b = {.n = 0};
    put(&b, WELCOME);
    put(&b, "{\"t\":\"sync\",\"epoch\":\"e1\",\"seq\":0}");
    imb_client_input(c, b.p, b.n, 1020);
    drain(c, &rs);
    CHECK(imb_client_logged_in(c));
    CHECK_EQ_INT(count(&rs, IMB_EV_LOGGED_IN), 1);
    CHECK_EQ_INT(count(&rs, IMB_EV_SYNC), 1);
    CHECK_EQ_STR(imb_client_epoch(c), "e1");
    /* A message: delivered, then acked (auto ack) in the next output. */
    b.n = 0;
    put(&b, "{\"t\":\"msg\",\"seq\":1,\"from\":\"bob@localhost/desktop\",\"body\":\"hi\",\"id\":\"x1\",\"ts\":5}");
    imb_client_input(c, b.p, b.n, 1030);
    drain(c, &rs);
    const struct rec *m = last(&rs, IMB_EV_MSG);
    CHECK(m && strcmp(m->body, "hi") == 0 && m->seq == 1);
    w = written(c);
    json_t *ack = find(w, "ack");
    CHECK(ack && json_integer_value(json_object_get(ack, "seq")) == 1);
    json_decref(w);
    CHECK_EQ_INT(imb_client_seq(c), 1);
out:
    imb_client_free(c);
}

/* The same server stream fed in one read, byte by byte, and in 7-byte reads
 * gives the same events. */
TEST(client_partial_and_batched_frames)
{
    struct buf b = {.n = 0};
    put(&b, WELCOME);
    put(&b, "{\"t\":\"sync\",\"epoch\":\"e1\",\"seq\":0}");
    for (int i = 1; i <= 5; i++) {
        char f[160];
        snprintf(f, sizeof f,
                 "{\"t\":\"msg\",\"seq\":%d,\"from\":\"bob@localhost/d\",\"body\":\"m%d \\u00e9\",\"ts\":1}", i, i);
        put(&b, f);
    }
    put(&b, "{\"t\":\"presence\",\"from\":\"bob@localhost/d\",\"show\":\"away\"}");
    put(&b, "{\"t\":\"receipt\",\"seq\":6,\"from\":\"bob@localhost/d\",\"id\":\"c1\",\"state\":\"read\"}");
    put(&b, "{\"t\":\"hb\"}");
    size_t steps[] = {0, 1, 7};
    struct recs want = {.n = 0};
    for (size_t s = 0; s < 3; s++) {
        struct imb_client_opts o = base_opts();
        struct recs rs = {.n = 0};
        struct imb_client *c = logging_in(&o, &rs, 0);
        if (!CHECK(c))
            return;
        rs.n = 0;
        if (steps[s] == 0) {
            imb_client_input(c, b.p, b.n, 5);
        } else {
            for (size_t off = 0; off < b.n; off += steps[s]) {
                size_t k = b.n - off < steps[s] ? b.n - off : steps[s];
                imb_client_input(c, b.p + off, k, 5);
                drain(c, &rs); /* interleave taking events with input */
            }
        }
        drain(c, &rs);
        CHECK_EQ_INT(count(&rs, IMB_EV_MSG), 5);
        CHECK_EQ_INT(count(&rs, IMB_EV_PRESENCE), 1);
        CHECK_EQ_INT(count(&rs, IMB_EV_RECEIPT), 1);
        CHECK_EQ_INT(count(&rs, IMB_EV_PROTOCOL), 0);
        if (s == 0) {
            want = rs;
        } else if (CHECK_EQ_INT(rs.n, want.n)) {
            for (size_t i = 0; i < rs.n; i++) {
                CHECK_EQ_INT(rs.r[i].type, want.r[i].type);
                CHECK_EQ_STR(rs.r[i].body, want.r[i].body);
                CHECK_EQ_INT(rs.r[i].seq, want.r[i].seq);
            }
        }
        CHECK_EQ_INT(imb_client_seq(c), 6); /* the receipt is stored too */
        imb_client_free(c);
    }
}

TEST(client_oversized_and_bad_frames)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = logged_in(&o, &rs, 0);
    if (!CHECK(c))
        return;
    rs.n = 0;
    /* Malformed but framed: each an event, the stream goes on. */
    struct buf b = {.n = 0};
    put(&b, "not json");
    put(&b, "[1,2]");
    put(&b, "{\"x\":1}");
    put(&b, "{\"t\":\"msg\",\"from\":\"b@l/d\",\"body\":\"no seq\"}");
    put(&b, "{\"t\":\"msg\",\"seq\":-3,\"from\":\"b@l/d\",\"body\":\"neg\"}");
    put(&b, "{\"t\":\"sync\",\"epoch\":7,\"seq\":1}");
    put(&b, "{\"t\":\"welcome\",\"v\":1,\"jid\":\"x@y\",\"hb\":1,\"max\":100}");
    put(&b, "{\"t\":\"receipt\",\"seq\":\"1\",\"id\":\"c\"}");
    put(&b, "{\"t\":\"error\"}");
    put(&b, "{\"t\":\"some_future_frame\",\"x\":1}");
    put(&b, "{\"t\":\"msg\",\"seq\":1,\"from\":\"b@l/d\",\"body\":\"good\"}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    CHECK_EQ_INT(count(&rs, IMB_EV_PROTOCOL), 8);
    CHECK_EQ_INT(count(&rs, IMB_EV_ERROR), 1);  /* code-less error: treated as internal */
    CHECK_EQ_STR(last(&rs, IMB_EV_ERROR)->code, "internal");
    CHECK_EQ_INT(count(&rs, IMB_EV_FRAME), 1);  /* unknown type: handed on, not an error */
    CHECK_EQ_INT(count(&rs, IMB_EV_MSG), 1);
    CHECK_EQ_INT(count(&rs, IMB_EV_DISCONNECT), 0);
    CHECK(imb_client_logged_in(c));

    /* A header announcing more than max: the stream cannot be trusted. */
    rs.n = 0;
    uint8_t big[4] = {0, 0, 0x40, 0x01}; /* 16385 */
    imb_client_input(c, big, 4, 20);
    drain(c, &rs);
    CHECK_EQ_INT(count(&rs, IMB_EV_PROTOCOL), 1);
    const struct rec *d = last(&rs, IMB_EV_DISCONNECT);
    CHECK(d && !d->final && strcmp(d->reason, "protocol_error") == 0);
    CHECK(!imb_client_logged_in(c));
    /* Input after the disconnect is ignored. */
    imb_client_input(c, b.p, b.n, 21);
    rs.n = 0;
    drain(c, &rs);
    CHECK_EQ_INT(rs.n, 0);
    imb_client_free(c);

    /* Length 0 and 1 are never valid. */
    rs.n = 0;
    c = logged_in(&o, &rs, 0);
    uint8_t tiny[5] = {0, 0, 0, 1, '{'};
    imb_client_input(c, tiny, 5, 1);
    drain(c, &rs);
    CHECK(last(&rs, IMB_EV_DISCONNECT) != NULL);
    imb_client_free(c);
}

/* ---- a fake server for the drop tests ----------------------------------- */

/* The server side of the resume tests: the user's stream holds NIN
 * messages (seq 1..NIN, epoch "ep"); a login gets welcome, then every message
 * after its seq, then sync; every msg the client sends is acked. */
#define NIN 3

static void serve(json_t *from_client, struct buf *to_client)
{
    size_t i;
    json_t *f;
    json_array_foreach(from_client, i, f) {
        const char *t = json_string_value(json_object_get(f, "t"));
        if (strcmp(t, "login") == 0) {
            put(to_client, WELCOME);
            json_int_t after = json_integer_value(json_object_get(f, "seq"));
            /* A connection that does not know the epoch learns it before
             * the first numbered message. */
            if (!json_object_get(f, "epoch") && after < NIN) {
                char sy[80];
                snprintf(sy, sizeof sy, "{\"t\":\"sync\",\"epoch\":\"ep\",\"seq\":%lld}", (long long)after);
                put(to_client, sy);
            }
            for (json_int_t s = after + 1; s <= NIN; s++) {
                char m[160];
                snprintf(m, sizeof m,
                         "{\"t\":\"msg\",\"seq\":%lld,\"from\":\"bob@localhost/d\",\"body\":\"in%lld\",\"ts\":1}",
                         (long long)s, (long long)s);
                put(to_client, m);
            }
            put(to_client, "{\"t\":\"sync\",\"epoch\":\"ep\",\"seq\":3}");
        } else if (strcmp(t, "msg") == 0) {
            char a[120];
            snprintf(a, sizeof a, "{\"t\":\"ack\",\"id\":\"%s\"}",
                     json_string_value(json_object_get(f, "id")));
            put(to_client, a);
        }
    }
}

/* Connection 1 is cut after `cut` bytes of the server's answer (welcome,
 * replay, sync, acks of the two messages the app sent before connecting).
 * Connection 2 runs to the end. Over both, every incoming message is
 * delivered exactly once, both outgoing ones are acked exactly once with
 * their original ids, and connection 2's login resumes from what was stored. */
TEST(client_drop_at_every_point_of_login_and_resume)
{
    /* cut runs until connection 1 gets its whole answer: full is its
     * length, known once the acks of the outbox were made. */
    size_t full = SIZE_MAX;
    int bad = 0;
    for (size_t cut = 0; cut <= full; cut++) {
        struct imb_client_opts o = base_opts();
        struct recs rs = {.n = 0};
        struct imb_client *c = imb_client_new(&o);
        if (!CHECK(c))
            return;
        char id1[65], id2[65];
        CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "out1", false, NULL, id1, NULL, 0), 0);
        CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "out2", false, "fixed-id.2", id2, NULL, 0), 0);
        imb_client_start(c, 0);
        imb_client_connected(c, 1);
        json_t *w = written(c);
        struct buf ans = {.n = 0};
        serve(w, &ans); /* the login alone: the msgs wait for the welcome */
        json_decref(w);
        /* The client sends the outbox right after the welcome: answer it
         * in the same stream (what a real server would write next). */
        size_t fed = 0;
        size_t cut_here = cut < ans.n ? cut : ans.n;
        imb_client_input(c, ans.p, cut_here, 2);
        fed = cut_here;
        w = written(c);
        struct buf acks = {.n = 0};
        if (count_written(w, "msg") > 0)
            serve(w, &acks);
        json_decref(w);
        size_t rest = cut - fed < acks.n ? cut - fed : acks.n;
        if (cut > fed)
            imb_client_input(c, acks.p, rest, 3);
        drain(c, &rs);
        if (acks.n > 0 && full == SIZE_MAX)
            full = ans.n + acks.n;
        if (cut == full) {
            /* nothing dropped: all done on connection 1 */
            bad += !CHECK_EQ_INT(imb_client_outbox_len(c), 0);
            bad += !CHECK_EQ_INT(count(&rs, IMB_EV_MSG), NIN);
            imb_client_free(c);
            continue;
        }
        /* The drop. */
        imb_client_closed(c, 4);
        drain(c, &rs);
        const struct rec *d = last(&rs, IMB_EV_DISCONNECT);
        bad += !CHECK(d && !d->final && d->edge == 1);
        int64_t at = imb_client_next_deadline(c);
        bad += !CHECK(at >= 4 && at <= 4 + 1000);
        imb_client_tick(c, at);
        drain(c, &rs);
        const struct rec *cn = last(&rs, IMB_EV_CONNECT);
        bad += !CHECK(cn && cn->edge == 1);
        uint64_t stored = imb_client_seq(c);
        imb_client_connected(c, at + 1);
        w = written(c);
        json_t *login = find(w, "login");
        bad += !CHECK(login != NULL);
        bad += !CHECK_EQ_INT(json_integer_value(json_object_get(login, "seq")), stored);
        if (stored > 0 || last(&rs, IMB_EV_SYNC))
            bad += !CHECK_EQ_STR(json_string_value(json_object_get(login, "epoch")), "ep");
        bad += !CHECK_EQ_INT(count_written(w, "msg"), 0); /* not before the welcome */
        ans.n = 0;
        serve(w, &ans);
        json_decref(w);
        imb_client_input(c, ans.p, ans.n, at + 2);
        w = written(c);
        /* Resent: exactly the unacked ones, with their ids. */
        size_t i;
        json_t *f;
        json_array_foreach(w, i, f) {
            if (strcmp(json_string_value(json_object_get(f, "t")), "msg") != 0)
                continue;
            const char *id = json_string_value(json_object_get(f, "id"));
            bad += !CHECK(strcmp(id, id1) == 0 || strcmp(id, id2) == 0);
        }
        acks.n = 0;
        serve(w, &acks);
        json_decref(w);
        imb_client_input(c, acks.p, acks.n, at + 3);
        drain(c, &rs);
        bad += !CHECK_EQ_INT(imb_client_outbox_len(c), 0);
        bad += !CHECK_EQ_INT(count(&rs, IMB_EV_ACK), 2);
        bad += !CHECK_EQ_INT(count(&rs, IMB_EV_MSG), NIN);
        bad += !CHECK_EQ_INT(count(&rs, IMB_EV_LOGGED_IN), cut >= strlen(WELCOME) + 4 ? 2 : 1);
        bad += !CHECK_EQ_INT(imb_client_seq(c), NIN);
        for (size_t k = 1; k <= NIN; k++) {
            size_t seen = 0;
            for (size_t j = 0; j < rs.n; j++)
                seen += rs.r[j].type == IMB_EV_MSG && rs.r[j].seq == k;
            bad += !CHECK_EQ_INT(seen, 1);
        }
        imb_client_free(c);
        if (bad) {
            printf("    (first failure at cut %zu)\n", cut);
            return;
        }
    }
    printf("    drop points tried: %zu\n", full + 1);
}

TEST(client_drop_before_connect_and_during_login)
{
    struct imb_client_opts o = base_opts();
    o.connect_timeout_ms = 500;
    o.login_timeout_ms = 700;
    struct recs rs = {.n = 0};
    struct imb_client *c = imb_client_new(&o);
    imb_client_start(c, 0);
    CHECK_EQ_INT(imb_client_next_deadline(c), 500);
    imb_client_tick(c, 499);
    drain(c, &rs);
    CHECK_EQ_INT(count(&rs, IMB_EV_DISCONNECT), 0);
    imb_client_tick(c, 500); /* the transport never came up */
    drain(c, &rs);
    CHECK_EQ_STR(last(&rs, IMB_EV_DISCONNECT)->reason, "connect_timeout");
    imb_client_tick(c, imb_client_next_deadline(c));
    imb_client_closed(c, imb_client_next_deadline(c)); /* the connect failed */
    drain(c, &rs);
    CHECK_EQ_STR(last(&rs, IMB_EV_DISCONNECT)->reason, "connect_failed");
    int64_t t = imb_client_next_deadline(c);
    imb_client_tick(c, t);
    imb_client_connected(c, t);
    CHECK_EQ_INT(imb_client_next_deadline(c), t + 700);
    imb_client_tick(c, t + 700); /* no welcome */
    drain(c, &rs);
    CHECK_EQ_STR(last(&rs, IMB_EV_DISCONNECT)->reason, "login_timeout");
    CHECK_EQ_INT(count(&rs, IMB_EV_CONNECT), 3);
    imb_client_free(c);
}

TEST(client_reset_clears_position)
{
    struct imb_client_opts o = base_opts();
    o.epoch = "old";
    o.seq = 40;
    struct recs rs = {.n = 0};
    struct imb_client *c = imb_client_new(&o);
    imb_client_start(c, 0);
    imb_client_connected(c, 0);
    json_t *w = written(c);
    json_t *login = find(w, "login");
    CHECK_EQ_STR(json_string_value(json_object_get(login, "epoch")), "old");
    CHECK_EQ_INT(json_integer_value(json_object_get(login, "seq")), 40);
    json_decref(w);
    struct buf b = {.n = 0};
    put(&b, WELCOME);
    put(&b, "{\"t\":\"sync\",\"epoch\":\"new\",\"seq\":0,\"reset\":true}");
    put(&b, "{\"t\":\"msg\",\"seq\":1,\"from\":\"b@l/d\",\"body\":\"after reset\"}");
    put(&b, "{\"t\":\"msg\",\"seq\":2,\"from\":\"b@l/d\",\"body\":\"two\"}");
    put(&b, "{\"t\":\"msg\",\"seq\":2,\"from\":\"b@l/d\",\"body\":\"dup\"}");
    imb_client_input(c, b.p, b.n, 1);
    drain(c, &rs);
    const struct rec *s = last(&rs, IMB_EV_SYNC);
    CHECK(s && s->reset && strcmp(s->epoch, "new") == 0);
    CHECK_EQ_INT(count(&rs, IMB_EV_MSG), 2); /* seq 1 is new again; the dup dropped */
    CHECK_EQ_STR(imb_client_epoch(c), "new");
    CHECK_EQ_INT(imb_client_seq(c), 2);
    /* missed is passed on */
    b.n = 0;
    put(&b, "{\"t\":\"sync\",\"epoch\":\"new\",\"seq\":9,\"missed\":3}");
    imb_client_input(c, b.p, b.n, 2);
    drain(c, &rs);
    CHECK_EQ_INT(last(&rs, IMB_EV_SYNC)->missed, 3);
    /* The next login resumes in the new numbering. */
    imb_client_closed(c, 3);
    imb_client_tick(c, imb_client_next_deadline(c));
    imb_client_connected(c, imb_client_next_deadline(c) + 1);
    w = written(c);
    login = find(w, "login");
    CHECK_EQ_STR(json_string_value(json_object_get(login, "epoch")), "new");
    CHECK_EQ_INT(json_integer_value(json_object_get(login, "seq")), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(login, "token")), "tok1");
    json_decref(w);
    imb_client_free(c);
}

TEST(client_heartbeat_and_dead_link)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = logged_in(&o, &rs, 1000); /* hb 10 s */
    if (!CHECK(c))
        return;
    CHECK_EQ_INT(imb_client_next_deadline(c), 11000);
    imb_client_tick(c, 10999);
    json_t *w = written(c);
    CHECK_EQ_INT(json_array_size(w), 0);
    json_decref(w);
    imb_client_tick(c, 11000);
    w = written(c);
    CHECK_EQ_INT(count_written(w, "hb"), 1);
    json_decref(w);
    /* The answer comes: the next hb is one interval after what we sent. */
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"hb\"}");
    imb_client_input(c, b.p, b.n, 11050);
    CHECK_EQ_INT(imb_client_next_deadline(c), 21000);
    /* Sending counts as activity, but silence from the server still brings
     * a probe one interval after the last received byte. */
    char id[65];
    imb_client_send_msg(c, "bob@localhost", "x", false, NULL, id, NULL, 0);
    imb_client_tick(c, 15000);
    json_decref(written(c));
    CHECK_EQ_INT(imb_client_next_deadline(c), 21050);
    imb_client_tick(c, 21050);
    w = written(c);
    CHECK_EQ_INT(count_written(w, "hb"), 1);
    json_decref(w);
    /* Unanswered for one interval: dead; reconnect at once. */
    CHECK_EQ_INT(imb_client_next_deadline(c), 31050);
    imb_client_tick(c, 31049);
    drain(c, &rs);
    CHECK_EQ_INT(count(&rs, IMB_EV_DISCONNECT), 0);
    imb_client_tick(c, 31050);
    drain(c, &rs);
    const struct rec *d = last(&rs, IMB_EV_DISCONNECT);
    CHECK(d && strcmp(d->reason, "dead_link") == 0 && d->retry_ms == 0);
    CHECK_EQ_INT(imb_client_outbox_len(c), 1); /* kept for the next connection */
    imb_client_free(c);
}

/* opts.hb_events (imcat --json shows every frame): the server's hb comes
 * as an IMB_EV_FRAME "hb"; without it the library keeps it to itself. The
 * dead-link clock is reset either way. */
TEST(client_hb_events)
{
    for (int on = 0; on <= 1; on++) {
        struct imb_client_opts o = base_opts();
        o.hb_events = on;
        struct recs rs = {.n = 0};
        struct imb_client *c = logged_in(&o, &rs, 1000);
        if (!CHECK(c))
            return;
        size_t frames = count(&rs, IMB_EV_FRAME);
        struct buf b = {.n = 0};
        put(&b, "{\"t\":\"hb\"}");
        imb_client_input(c, b.p, b.n, 5000);
        drain(c, &rs);
        CHECK_EQ_INT(count(&rs, IMB_EV_FRAME) - frames, (size_t)on);
        const struct rec *f = last(&rs, IMB_EV_FRAME);
        CHECK(!on || (f && strcmp(f->t, "hb") == 0));
        CHECK_EQ_INT(imb_client_next_deadline(c), 11000); /* our last hb-worthy send still rules */
        imb_client_free(c);
    }
}

TEST(client_backoff_bounds)
{
    struct imb_client_opts o = base_opts();
    o.backoff_base_ms = 100;
    o.backoff_cap_ms = 3000;
    struct recs rs = {.n = 0};
    struct imb_client *c = imb_client_new(&o);
    CHECK_EQ_INT(imb_client_backoff_bound(c, 0), 100);
    CHECK_EQ_INT(imb_client_backoff_bound(c, 3), 800);
    CHECK_EQ_INT(imb_client_backoff_bound(c, 5), 3000);
    CHECK_EQ_INT(imb_client_backoff_bound(c, 1000), 3000);
    imb_client_start(c, 0);
    int64_t now = 0;
    uint64_t worst[12] = {0};
    size_t prev_edge = 0;
    /* 12 failed connects, 50 rounds: each delay within its bound, edges alternate. */
    for (int round = 0; round < 50; round++) {
        for (uint32_t k = 0; k < 12; k++) {
            imb_client_closed(c, now);
            rs.n = 0;
            drain(c, &rs);
            const struct rec *d = last(&rs, IMB_EV_DISCONNECT);
            if (!CHECK(d))
                goto out;
            CHECK(d->retry_ms <= imb_client_backoff_bound(c, k));
            CHECK(d->edge != prev_edge);
            prev_edge = d->edge;
            if (d->retry_ms > worst[k])
                worst[k] = d->retry_ms;
            now += (int64_t)d->retry_ms;
            CHECK_EQ_INT(imb_client_next_deadline(c), now);
            imb_client_tick(c, now);
        }
        /* A welcome restarts the count. */
        imb_client_connected(c, now);
        struct buf b = {.n = 0};
        put(&b, WELCOME);
        imb_client_input(c, b.p, b.n, now);
        imb_client_closed(c, now);
        rs.n = 0;
        drain(c, &rs);
        CHECK(last(&rs, IMB_EV_DISCONNECT)->retry_ms <= 100);
        prev_edge = last(&rs, IMB_EV_DISCONNECT)->edge;
        now += (int64_t)last(&rs, IMB_EV_DISCONNECT)->retry_ms;
        imb_client_tick(c, now);
        imb_client_closed(c, now); /* back in the loop at attempt 1 */
        rs.n = 0;
        drain(c, &rs);
        prev_edge = last(&rs, IMB_EV_DISCONNECT)->edge;
        now += (int64_t)last(&rs, IMB_EV_DISCONNECT)->retry_ms;
        imb_client_tick(c, now);
        imb_client_free(c);
        o.seed = (uint64_t)round + 1000; /* another phone */
        c = imb_client_new(&o);
        imb_client_start(c, now);
        prev_edge = 0;
    }
    /* Jitter spreads: the largest of 50 draws is well above half the bound. */
    CHECK(worst[5] > 1500 && worst[5] <= 3000);
    CHECK(worst[2] > 200 && worst[2] <= 400);
    printf("    worst delays: k=0 %llu ms (<=100), k=2 %llu (<=400), k=5 %llu (<=3000)\n",
           (unsigned long long)worst[0], (unsigned long long)worst[2], (unsigned long long)worst[5]);
out:
    imb_client_free(c);
}

TEST(client_login_errors)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = logging_in(&o, &rs, 0);
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"error\",\"code\":\"rate_limited\",\"msg\":\"later\",\"retry\":5}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    const struct rec *d = last(&rs, IMB_EV_DISCONNECT);
    CHECK(d && !d->final && d->retry_ms >= 5000 && d->retry_ms <= 6000);
    CHECK_EQ_STR(last(&rs, IMB_EV_ERROR)->code, "rate_limited");
    imb_client_free(c);

    rs.n = 0;
    c = logging_in(&o, &rs, 0);
    b.n = 0;
    put(&b, "{\"t\":\"error\",\"code\":\"unavailable\",\"msg\":\"no bridge\"}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    CHECK(last(&rs, IMB_EV_DISCONNECT) && !last(&rs, IMB_EV_DISCONNECT)->final);
    imb_client_free(c);

    rs.n = 0;
    c = logging_in(&o, &rs, 0);
    b.n = 0;
    put(&b, "{\"t\":\"error\",\"code\":\"auth_failed\",\"msg\":\"wrong password\"}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    d = last(&rs, IMB_EV_DISCONNECT);
    CHECK(d && d->final && strcmp(d->reason, "auth_failed") == 0);
    CHECK_EQ_INT(imb_client_next_deadline(c), INT64_MAX);
    /* A new password, start again. */
    CHECK_EQ_INT(imb_client_set_password(c, "right"), 0);
    imb_client_start(c, 20);
    imb_client_connected(c, 21);
    json_t *w = written(c);
    CHECK_EQ_STR(json_string_value(json_object_get(find(w, "login"), "pass")), "right");
    json_decref(w);
    imb_client_free(c);
}

TEST(client_bye_and_logout)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = logged_in(&o, &rs, 0);
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"bye\",\"reason\":\"idle_timeout\"}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    CHECK_EQ_STR(last(&rs, IMB_EV_BYE)->reason, "idle_timeout");
    CHECK(!last(&rs, IMB_EV_DISCONNECT)->final);
    CHECK_EQ_STR(last(&rs, IMB_EV_DISCONNECT)->reason, "idle_timeout");
    imb_client_free(c);

    rs.n = 0;
    c = logged_in(&o, &rs, 0);
    imb_client_logout(c, 5);
    json_t *w = written(c);
    CHECK_EQ_INT(count_written(w, "logout"), 1);
    json_decref(w);
    b.n = 0;
    put(&b, "{\"t\":\"bye\",\"reason\":\"logout\"}");
    imb_client_input(c, b.p, b.n, 10);
    drain(c, &rs);
    CHECK(last(&rs, IMB_EV_DISCONNECT)->final);
    CHECK_EQ_INT(imb_client_next_deadline(c), INT64_MAX);
    imb_client_free(c);
}

TEST(client_outbox_errors_and_retries)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = logged_in(&o, &rs, 0);
    char id[65], err[80] = "";
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "a", false, "m1", id, err, sizeof err), 0);
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "b", false, "m1", id, err, sizeof err), -1);
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "c", false, "bad id!", id, err, sizeof err), -1);
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", "\xff\xfe", false, NULL, id, err, sizeof err), -1);
    CHECK_EQ_INT(imb_client_send_msg(c, "room@conference.localhost", "d", true, "m2", id, err, sizeof err), 0);
    json_t *w = written(c);
    CHECK_EQ_INT(count_written(w, "msg"), 2);
    json_decref(w);
    /* unavailable: kept and sent again later, same id; filtered: dropped. */
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"error\",\"code\":\"unavailable\",\"id\":\"m1\",\"msg\":\"moving\"}");
    put(&b, "{\"t\":\"error\",\"code\":\"filtered\",\"reason\":\"banned_word\",\"id\":\"m2\",\"msg\":\"no\"}");
    imb_client_input(c, b.p, b.n, 100);
    drain(c, &rs);
    CHECK_EQ_INT(imb_client_outbox_len(c), 1);
    CHECK_EQ_STR(last(&rs, IMB_EV_ERROR)->id, "m2");
    CHECK_EQ_STR(last(&rs, IMB_EV_ERROR)->reason, "banned_word");
    int64_t t = imb_client_next_deadline(c);
    CHECK(t >= 1100 && t < 2100);
    imb_client_tick(c, t);
    w = written(c);
    CHECK_EQ_INT(count_written(w, "msg"), 1);
    CHECK_EQ_STR(json_string_value(json_object_get(find(w, "msg"), "id")), "m1");
    json_decref(w);
    /* Requests: only while logged in; not the frames with their own calls. */
    CHECK_EQ_INT(imb_client_presence(c, "away", "busy day"), 0);
    CHECK_EQ_INT(imb_client_typing(c, "bob@localhost", "composing"), 0);
    CHECK_EQ_INT(imb_client_read(c, "bob@localhost/d", "x1"), 0);
    CHECK_EQ_INT(imb_client_set_active(c, false), 0);
    json_t *login = json_pack("{ss}", "t", "login");
    CHECK_EQ_INT(imb_client_send(c, login, err, sizeof err), -1);
    json_decref(login);
    w = written(c);
    CHECK_EQ_INT(json_array_size(w), 4);
    json_decref(w);
    imb_client_free(c);
    /* outbox_max */
    o.outbox_max = 2;
    c = imb_client_new(&o);
    CHECK_EQ_INT(imb_client_send_msg(c, "b@l", "1", false, NULL, NULL, NULL, 0), 0);
    CHECK_EQ_INT(imb_client_send_msg(c, "b@l", "2", false, NULL, NULL, NULL, 0), 0);
    CHECK_EQ_INT(imb_client_send_msg(c, "b@l", "3", false, NULL, NULL, err, sizeof err), -1);
    CHECK_EQ_STR(err, "outbox full");
    imb_client_free(c);
}

TEST(client_manual_ack)
{
    struct imb_client_opts o = base_opts();
    o.manual_ack = true;
    struct recs rs = {.n = 0};
    struct imb_client *c = logged_in(&o, &rs, 0);
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"msg\",\"seq\":1,\"from\":\"b@l/d\",\"body\":\"1\"}");
    put(&b, "{\"t\":\"msg\",\"seq\":2,\"from\":\"b@l/d\",\"body\":\"2\"}");
    imb_client_input(c, b.p, b.n, 1);
    drain(c, &rs);
    json_t *w = written(c);
    CHECK_EQ_INT(count_written(w, "ack"), 0);
    json_decref(w);
    imb_client_ack(c, 9); /* capped at what was received */
    w = written(c);
    CHECK_EQ_INT(json_integer_value(json_object_get(find(w, "ack"), "seq")), 2);
    json_decref(w);
    CHECK_EQ_INT(imb_client_seq(c), 2);
    imb_client_free(c);
}

/* A welcome with a smaller max than the outbox assumed: what no longer fits
 * is answered locally (too_big), the rest goes out; a new message above max
 * is refused at once. Feature frames come out as their events. */
TEST(client_small_max_and_feature_frames)
{
    struct imb_client_opts o = base_opts();
    struct recs rs = {.n = 0};
    struct imb_client *c = imb_client_new(&o);
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", big, false, "big", NULL, NULL, 0), 0);
    CHECK_EQ_INT(imb_client_send_msg(c, "b@l", "s", true, "small", NULL, NULL, 0), 0);
    imb_client_start(c, 0);
    imb_client_connected(c, 0);
    json_decref(written(c));
    struct buf b = {.n = 0};
    put(&b, "{\"t\":\"welcome\",\"v\":1,\"jid\":\"alice@localhost\",\"hb\":30,\"max\":64}");
    imb_client_input(c, b.p, b.n, 1);
    drain(c, &rs);
    const struct rec *e = last(&rs, IMB_EV_ERROR);
    CHECK(e && strcmp(e->code, "too_big") == 0 && strcmp(e->id, "big") == 0);
    CHECK_EQ_INT(imb_client_outbox_len(c), 1);
    json_t *w = written(c);
    json_t *m = find(w, "msg");
    CHECK(m && strcmp(json_string_value(json_object_get(m, "id")), "small") == 0);
    CHECK(m && json_is_true(json_object_get(m, "group")));
    json_decref(w);
    char err[80] = "";
    CHECK_EQ_INT(imb_client_send_msg(c, "bob@localhost", big, false, NULL, NULL, err, sizeof err), -1);
    CHECK_EQ_STR(err, "message too big for the server's max");
    /* Feature frames: answers and events of section 10. */
    rs.n = 0;
    b.n = 0;
    put(&b, "{\"t\":\"ok\",\"id\":\"j1\"}");
    put(&b, "{\"t\":\"typing\",\"from\":\"b@l/d\",\"state\":\"paused\"}");
    put(&b, "{\"t\":\"sub\",\"seq\":1,\"from\":\"b@l\",\"type\":\"subscribe\"}");
    put(&b, "{\"t\":\"roster\",\"id\":\"r\",\"items\":[]}");
    imb_client_input(c, b.p, b.n, 2);
    drain(c, &rs);
    if (CHECK_EQ_INT(rs.n, 4)) {
        CHECK_EQ_INT(rs.r[0].type, IMB_EV_OK);
        CHECK_EQ_STR(rs.r[0].id, "j1");
        CHECK_EQ_INT(rs.r[1].type, IMB_EV_TYPING);
        CHECK_EQ_INT(rs.r[2].type, IMB_EV_FRAME);
        CHECK_EQ_INT(rs.r[2].seq, 1); /* stored: counted and acked */
        CHECK_EQ_STR(rs.r[3].t, "roster");
    }
    w = written(c);
    CHECK_EQ_INT(json_integer_value(json_object_get(find(w, "ack"), "seq")), 1);
    json_decref(w);
    imb_client_free(c);
}

/* Callback mode: events arrive during the call; the callback may send. */
struct cbstate {
    struct imb_client *c;
    struct recs rs;
    int sent;
};

static void on_ev(void *arg, const struct imb_event *ev)
{
    struct cbstate *s = arg;
    record(&s->rs, ev);
    if (ev->type == IMB_EV_MSG && s->sent++ == 0)
        imb_client_send_msg(s->c, "bob@localhost", "reply", false, "r1", NULL, NULL, 0);
}

TEST(client_callback_mode)
{
    struct cbstate s = {0};
    struct imb_client_opts o = base_opts();
    o.on_event = on_ev;
    o.arg = &s;
    s.c = imb_client_new(&o);
    imb_client_start(s.c, 0);
    CHECK_EQ_INT(s.rs.n, 1);
    imb_client_connected(s.c, 0);
    json_decref(written(s.c));
    struct buf b = {.n = 0};
    put(&b, WELCOME);
    put(&b, "{\"t\":\"msg\",\"seq\":1,\"from\":\"b@l/d\",\"body\":\"1\"}");
    put(&b, "{\"t\":\"ack\",\"id\":\"r1\"}");
    imb_client_input(s.c, b.p, b.n, 1);
    CHECK_EQ_INT(count(&s.rs, IMB_EV_MSG), 1);
    /* The ack frame came before the reply was sent: not ours yet, ignored. */
    CHECK_EQ_INT(count(&s.rs, IMB_EV_ACK), 0);
    json_t *w = written(s.c);
    CHECK_EQ_INT(count_written(w, "msg"), 1);
    CHECK_EQ_INT(count_written(w, "ack"), 1);
    json_decref(w);
    const struct imb_event *ev;
    CHECK(!imb_client_next_event(s.c, &ev)); /* nothing left for polling */
    imb_client_free(s.c);
}

int main(void)
{
    RUN(client_opts_checked);
    RUN(client_login_frame_and_welcome);
    RUN(client_partial_and_batched_frames);
    RUN(client_oversized_and_bad_frames);
    RUN(client_drop_at_every_point_of_login_and_resume);
    RUN(client_drop_before_connect_and_during_login);
    RUN(client_reset_clears_position);
    RUN(client_heartbeat_and_dead_link);
    RUN(client_hb_events);
    RUN(client_backoff_bounds);
    RUN(client_login_errors);
    RUN(client_bye_and_logout);
    RUN(client_outbox_errors_and_retries);
    RUN(client_manual_ack);
    RUN(client_small_max_and_feature_frames);
    RUN(client_callback_mode);
    return unit_done();
}
