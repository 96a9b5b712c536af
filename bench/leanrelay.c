/* bench/leanrelay.c - the floor of bench 3: the leanest relay of the phone
 * protocol's chats this box can run, with none of imbridge's promises.
 *
 * The brief's anchor ("a libevent + hiredis relay doing one pipelined
 * PUBLISH per message"), built so the same load generator (loadgen, the
 * client library) drives it as it drives two edges:
 *   - a phone's `login` is taken without a check: the relay SUBSCRIBEs to
 *     <prefix>:u:<jid> and, once Redis confirms, answers `welcome` + `sync`;
 *   - a phone's `msg` becomes one PUBLISH on the receiver's channel of the
 *     frame the receiver will get, minus its seq; the sender's `ack` is
 *     written when Redis answers that PUBLISH;
 *   - what comes on a user's channel is written to its phone with the
 *     connection's next seq, not parsed (Redis is trusted here);
 *   - a phone's `ack` is parsed and dropped (nothing is stored), `hb`
 *     answered.
 * What it leaves out is what imbridge is for: no inbox (a message to a
 * phone that is away is lost), no numbering that survives a reconnect, no
 * bridge holding a session (no XMPP), no fencing, no validation of what
 * Redis sends, no limits. Two of them on one Redis stand where the two
 * edges and the bridge stand in bench 3.
 *
 * It uses what the edge uses where the edge's cost is not the point: the
 * same JSON lexer and values (common/jparse.c on jansson, the allocator
 * pool), the same event loop setup (util_event_base), one read per socket
 * per readiness and the output of a loop turn written at its end, one
 * write per socket.
 *
 *   leanrelay --redis-port R [--port P] [--prefix lr]
 * Prints "leanrelay listening port=P" on stderr once it listens (Redis is
 * connected to meanwhile; a login waits for its SUBSCRIBE's answer). */
#include "frame.h"
#include "jparse.h"
#include "jpool.h"
#include "jsonout.h"
#include "strmap.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#define FRAME_MAX 16384
#define JID_MAX 256

struct conn {
    struct relay *r;
    evutil_socket_t fd;
    struct event *rd, *wr; /* wr: armed only while the kernel refuses bytes */
    struct evbuffer *in, *out;
    char *jid;             /* once logged in */
    uint64_t seq;          /* the last seq written to this phone */
    struct conn *next_dirty;
    bool dirty, dead;
    unsigned refs;         /* 1 for the socket, 1 per PUBLISH in flight */
};

struct relay {
    struct event_base *base;
    redisAsyncContext *pub, *sub;
    const char *prefix;
    struct strmap users;   /* jid -> struct conn * */
    struct conn *dirty;
    struct event *flush_ev;
    uint64_t msgs, delivered;
};

/* A user's channel: "<prefix>:u:<jid>". */
static void user_channel(const struct relay *r, const char *jid, char *out, size_t n)
{
    snprintf(out, n, "%s:u:%s", r->prefix, jid);
}

/* A PUBLISH waiting for Redis: the sender and the id to ack. */
struct sent {
    struct conn *c;
    char id[72];
};

static void conn_unref(struct conn *c)
{
    if (--c->refs == 0) {
        evbuffer_free(c->in);
        evbuffer_free(c->out);
        free(c->jid);
        free(c);
    }
}

static void conn_close(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    event_free(c->rd);
    event_free(c->wr);
    close(c->fd);
    if (c->jid && strmap_get(&c->r->users, c->jid) == c) {
        strmap_del(&c->r->users, c->jid);
        char ch[JID_MAX + 64];
        user_channel(c->r, c->jid, ch, sizeof(ch));
        redisAsyncCommand(c->r->sub, NULL, NULL, "UNSUBSCRIBE %s", ch);
    }
    if (!c->dirty)
        conn_unref(c);
    /* else: the flush drops the last reference */
}

/* Output of this loop turn, written at its end. */
static void mark_dirty(struct conn *c)
{
    if (c->dirty || c->dead)
        return;
    c->dirty = true;
    c->next_dirty = c->r->dirty;
    c->r->dirty = c;
    event_active(c->r->flush_ev, EV_TIMEOUT, 0);
}

static void put_frame(struct conn *c, const char *body, size_t len)
{
    uint8_t h[FRAME_HEADER];
    frame_header(h, (uint32_t)len);
    evbuffer_add(c->out, h, sizeof(h));
    evbuffer_add(c->out, body, len);
    mark_dirty(c);
}

#define put_lit(c, lit) put_frame((c), (lit), sizeof(lit) - 1)

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct relay *r = arg;
    while (r->dirty) {
        struct conn *c = r->dirty;
        r->dirty = c->next_dirty;
        c->dirty = false;
        if (c->dead) {
            conn_unref(c);
            continue;
        }
        while (evbuffer_get_length(c->out) > 0) {
            if (evbuffer_write(c->out, c->fd) <= 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    event_add(c->wr, NULL); /* the rest when it drains */
                else
                    conn_close(c);
                break;
            }
        }
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    mark_dirty(arg);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    struct sent *s = priv;
    struct conn *c = s->c;
    if (reply && !c->dead) {
        char buf[128];
        struct jsonout o = {buf, 0, sizeof(buf)};
        jsonout_lit(&o, "{\"t\":\"ack\",\"id\":\"");
        jsonout_put(&o, s->id, strlen(s->id));
        jsonout_lit(&o, "\"}");
        if (o.n <= o.cap)
            put_frame(c, buf, o.n);
    }
    conn_unref(c);
    free(s);
}

static void on_channel(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = priv;
    redisReply *m = reply;
    if (!m || m->type != REDIS_REPLY_ARRAY || m->elements != 3 ||
        m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = m->element[0]->str, *ch = m->element[1]->str;
    size_t plen = strlen(r->prefix) + 3; /* "<prefix>:u:" */
    if (strlen(ch) <= plen)
        return;
    struct conn *c = strmap_get(&r->users, ch + plen);
    if (!c || c->dead)
        return;
    if (!strcmp(kind, "subscribe")) {
        /* Subscribed: now nothing sent to this user can miss it. */
        char buf[JID_MAX + 128];
        struct jsonout o = {buf, 0, sizeof(buf)};
        jsonout_lit(&o, "{\"t\":\"welcome\",\"v\":1,\"jid\":\"");
        jsonout_put(&o, c->jid, strlen(c->jid));
        jsonout_lit(&o, "\",\"hb\":30,\"max\":");
        jsonout_int(&o, FRAME_MAX);
        jsonout_lit(&o, "}");
        put_frame(c, buf, o.n);
        put_lit(c, "{\"t\":\"sync\",\"epoch\":\"lr\",\"seq\":0}");
        return;
    }
    if (strcmp(kind, "message") || m->element[2]->type != REDIS_REPLY_STRING ||
        m->element[2]->len < 2 || m->element[2]->str[0] != '{')
        return;
    /* {"t":"msg","seq":N, + the published text after its '{' */
    char head[64];
    struct jsonout o = {head, 0, sizeof(head)};
    jsonout_lit(&o, "{\"t\":\"msg\",\"seq\":");
    jsonout_int(&o, (int64_t)++c->seq);
    jsonout_lit(&o, ",");
    uint8_t h[FRAME_HEADER];
    frame_header(h, (uint32_t)(o.n + m->element[2]->len - 1));
    evbuffer_add(c->out, h, sizeof(h));
    evbuffer_add(c->out, head, o.n);
    evbuffer_add(c->out, m->element[2]->str + 1, m->element[2]->len - 1);
    r->delivered++;
    mark_dirty(c);
}

static const char *str_field(json_t *f, const char *k)
{
    return json_string_value(json_object_get(f, k));
}

static void on_login(struct conn *c, json_t *f)
{
    const char *jid = str_field(f, "jid");
    if (c->jid || !jid || strlen(jid) > JID_MAX || !jsonout_plain(jid, strlen(jid))) {
        conn_close(c);
        return;
    }
    c->jid = xstrdup(jid);
    struct conn *old = strmap_put(&c->r->users, c->jid, c);
    if (old && old != c) {
        free(old->jid);
        old->jid = NULL; /* the newer login has the user's channel */
        conn_close(old);
    }
    char ch[JID_MAX + 64];
    user_channel(c->r, c->jid, ch, sizeof(ch));
    redisAsyncCommand(c->r->sub, on_channel, c->r, "SUBSCRIBE %s", ch);
}

static void on_msg(struct conn *c, json_t *f)
{
    const char *to = str_field(f, "to"), *id = str_field(f, "id");
    json_t *body = json_object_get(f, "body");
    if (!c->jid || !to || !id || !json_is_string(body) || strlen(id) > 64 ||
        !jsonout_plain(id, strlen(id)) || strlen(to) > JID_MAX) {
        conn_close(c);
        return;
    }
    /* What the receiver gets, minus {"t":"msg","seq":N, */
    char text[FRAME_MAX + 512];
    struct jsonout o = {text, 0, sizeof(text)};
    jsonout_lit(&o, "{\"from\":\"");
    jsonout_put(&o, c->jid, strlen(c->jid)); /* plain ASCII: checked at login */
    jsonout_lit(&o, "/phone\"");
    jsonout_lit(&o, ",\"body\":");
    jsonout_json(&o, body);
    jsonout_lit(&o, ",\"id\":\"");
    jsonout_put(&o, id, strlen(id));
    jsonout_lit(&o, "\",\"ts\":");
    jsonout_int(&o, util_wall_ms());
    jsonout_lit(&o, "}");
    if (o.n > o.cap) {
        conn_close(c);
        return;
    }
    char ch[JID_MAX + 64];
    user_channel(c->r, to, ch, sizeof(ch));
    struct sent *s = xmalloc(sizeof(*s));
    s->c = c;
    snprintf(s->id, sizeof(s->id), "%s", id);
    c->refs++;
    c->r->msgs++;
    redisAsyncCommand(c->r->pub, on_published, s, "PUBLISH %s %b", ch, text, o.n);
}

static void on_frame(struct conn *c, const char *buf, size_t len)
{
    char err[160];
    json_t *f = jparse(buf, len, err, sizeof(err));
    const char *t = f && json_is_object(f) ? str_field(f, "t") : NULL;
    if (!t) {
        conn_close(c);
    } else if (!strcmp(t, "msg")) {
        on_msg(c, f);
    } else if (!strcmp(t, "ack")) {
        /* nothing stored: nothing to drop */
    } else if (!strcmp(t, "login")) {
        on_login(c, f);
    } else if (!strcmp(t, "hb")) {
        put_lit(c, "{\"t\":\"hb\"}");
    }
    json_decref(f);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    int n = evbuffer_read(c->in, fd, 65536);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    c->refs++; /* a frame may close it */
    while (!c->dead) {
        size_t have = evbuffer_get_length(c->in);
        const uint8_t *body;
        size_t len;
        enum frame_status st = frame_parse(evbuffer_pullup(c->in, -1), have, FRAME_MAX, &body, &len);
        if (st == FRAME_NEED_MORE)
            break;
        if (st != FRAME_OK) {
            conn_close(c);
            break;
        }
        on_frame(c, (const char *)body, len);
        evbuffer_drain(c->in, FRAME_HEADER + len);
    }
    conn_unref(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct relay *r = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = xcalloc(1, sizeof(*c));
    c->r = r;
    c->fd = fd;
    c->refs = 1;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rd = event_new(r->base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->wr = event_new(r->base, fd, EV_WRITE, on_writable, c);
    event_add(c->rd, NULL);
}

static redisAsyncContext *redis_connect(struct relay *r, const char *host, int port)
{
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (!ac || ac->err) {
        fprintf(stderr, "leanrelay: redis %s:%d: %s\n", host, port, ac ? ac->errstr : "no memory");
        exit(1);
    }
    redisLibeventAttach(ac, r->base);
    return ac;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct relay *r = arg;
    fprintf(stderr, "leanrelay: %llu messages published, %llu delivered\n",
            (unsigned long long)r->msgs, (unsigned long long)r->delivered);
    event_base_loopbreak(r->base);
}

int main(int argc, char **argv)
{
    struct relay r = {.prefix = "lr"};
    const char *host = "127.0.0.1";
    int rport = 6379, port = 0;
    static const struct option opts[] = {{"redis-port", 1, 0, 'R'}, {"redis-host", 1, 0, 'H'},
                                         {"port", 1, 0, 'p'},       {"prefix", 1, 0, 'x'},
                                         {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'R')
            rport = atoi(optarg);
        else if (o == 'H')
            host = optarg;
        else if (o == 'p')
            port = atoi(optarg);
        else if (o == 'x')
            r.prefix = optarg;
        else {
            fprintf(stderr, "usage: leanrelay --redis-port R [--redis-host H] [--port P] [--prefix lr]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    jpool_install(); /* as the edge: jansson's and yajl's blocks from the pool */
    r.base = util_event_base();
    strmap_init(&r.users);
    r.flush_ev = event_new(r.base, -1, 0, on_flush, &r);
    r.pub = redis_connect(&r, host, rport);
    r.sub = redis_connect(&r, host, rport);

    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *l =
        evconnlistener_new_bind(r.base, on_accept, &r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                4096, (struct sockaddr *)&sin, sizeof(sin));
    if (!l) {
        perror("leanrelay: listen");
        return 1;
    }
    struct sockaddr_in got;
    socklen_t gl = sizeof(got);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&got, &gl);
    struct event *sigs[2] = {evsignal_new(r.base, SIGTERM, on_signal, &r),
                             evsignal_new(r.base, SIGINT, on_signal, &r)};
    event_add(sigs[0], NULL);
    event_add(sigs[1], NULL);
    fprintf(stderr, "leanrelay listening port=%d\n", ntohs(got.sin_port));
    event_base_dispatch(r.base);
    evconnlistener_free(l);
    event_free(sigs[0]);
    event_free(sigs[1]);
    event_free(r.flush_ev);
    redisAsyncFree(r.pub);
    redisAsyncFree(r.sub);
    strmap_free(&r.users);
    event_base_free(r.base);
    return 0;
}
