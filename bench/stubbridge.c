/* bench/stubbridge.c - a stand-in for imb-xmppd with no XMPP behind it, for
 * the benches that need logged-in phones without XMPP sessions: the edge's
 * cost per logged-in idle phone, and the "edge -> Redis -> edge" path next
 * to Socket.IO's Redis adapter.
 *
 * It speaks the documented bus (docs/ARCHITECTURE.md) through the project's
 * own modules (common/bus.c, common/envelope.c, common/inbox.c), so the
 * edges run only their existing code paths and the delivery script it runs
 * is always the one xmppd runs:
 *   - registers itself in <prefix>:workers every second;
 *   - answers every `login` on <prefix>:w:<id> with `login_ok` on the edge's
 *     channel (no password check: there is no XMPP server), and keeps the
 *     edge of the user's last login (one phone per user here);
 *   - for the `chat`s edges publish on the same channel, at the end of each loop turn
 *     as xmppd does: one inbox_deliver() per receiver (next seqs, store in
 *     the inbox, one PUBLISH on the receiver's edge's <prefix>:e:<edge>) and
 *     one `ack` per sender's device on its edge's channel (xmppd acks once
 *     the XMPP server confirmed; here at once).
 * It holds no lease: the fence lets a writer through when nobody holds one.
 * Cheap on purpose: one decode and an encode per chat, little else, with
 * the envelope code, the allocator (jpool.h) and the event loop
 * (util_event_base) xmppd's workers use.
 *
 *   stubbridge --redis-port P [--redis-host 127.0.0.1] [--prefix imb]
 *              [--id stub-w0] [--redis-cluster H:P,H:P]
 * Prints "stubbridge ready id=..." on stderr once the bus is up, and the
 * counts on exit (SIGTERM/SIGINT). */
#include "bus.h"
#include "envelope.h"
#include "inbox.h"
#include "jparse.h"
#include "jpool.h"
#include "lease.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#include <ctype.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define REGISTER_MS 1000
#define REGISTRY_TTL_MS 5000
#define INBOX_TTL_MS 86400000L
#define INBOX_MAX 1000
#define CAPACITY 100000000L

struct stub {
    struct event_base *base;
    struct bus *bus;
    const char *id;          /* worker id, as in <prefix>:workers */
    char holder[LEASE_HOLDER_MAX]; /* "<id> 0": no lease held */
    struct strmap users;     /* jid -> the channel of the edge of its last
                                login (owned string) */
    size_t nusers;
    uint64_t logins, chats, deliver_errors;
    bool ready_said;
    struct event *reg_timer;
    struct pending *turn, *turn_tail; /* chats of this loop turn */
    struct event *flush_ev;
};

static void registry_update(struct stub *s)
{
    char key[256], val[96];
    snprintf(key, sizeof(key), "%s:workers", bus_prefix(s->bus));
    snprintf(val, sizeof(val), "%lld %zu %ld",
             (long long)(util_wall_ms() + REGISTRY_TTL_MS), s->nusers, CAPACITY);
    const char *argv[] = {"HSET", key, s->id, val};
    bus_command_argv(s->bus, NULL, NULL, 4, argv, NULL);
}

static void on_reg_timer(evutil_socket_t fd, short what, void *arg)
{
    struct stub *s = arg;
    if (bus_up(s->bus))
        registry_update(s);
}

static void publish_env(struct stub *s, const char *kind, const char *id,
                        struct env *e)
{
    char ch[1200];
    size_t len;
    env_set_int(e, "ts", util_wall_ms());
    char *payload = env_encode(e, &len);
    if (bus_channel(s->bus, ch, sizeof(ch), kind, id))
        bus_publish(s->bus, ch, payload, len, NULL, NULL);
    free(payload);
    env_free(e);
}

static void on_login(struct stub *s, const struct env *in)
{
    const char *jid = env_str(in, "jid"), *edge = env_str(in, "edge"),
               *dev = env_str(in, "dev");
    if (!jid || !edge || !dev)
        return;
    s->logins++;
    char ch[1200];
    char *old = strmap_get(&s->users, jid);
    if (!old)
        s->nusers++;
    if (!bus_channel(s->bus, ch, sizeof(ch), "e", edge))
        return;
    strmap_put(&s->users, jid, xstrdup(ch));
    free(old);
    struct env *e = env_new(ENV_LOGIN_OK);
    env_set_str(e, "jid", jid);
    env_set_str(e, "edge", edge);
    env_set_str(e, "dev", dev);
    env_set_str(e, "worker", s->id);
    publish_env(s, "e", edge, e);
}

static void on_delivered(void *owner, void *data, redisReply *r)
{
    struct stub *s = owner;
    if (!r || r->type == REDIS_REPLY_ERROR ||
        (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
         r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer < 0)) {
        if (s->deliver_errors++ < 5)
            fprintf(stderr, "stubbridge deliver: %s\n",
                    !r ? "no reply" : r->type == REDIS_REPLY_ERROR ? r->str : "refused");
    }
}

/* What a loop turn brought, sent at its end as xmppd does: one inbox call
 * per receiver (up to INBOX_BATCH_MAX), one ack per sender's device. */
struct pending {
    struct pending *next;
    char *to;       /* receiver, lower-cased */
    char *payload;  /* the envelope to store */
    size_t len;
    char *from, *id, *edge, *dev; /* for the ack */
};

static void pending_free(struct pending *p)
{
    free(p->to);
    free(p->payload);
    free(p->from);
    free(p->id);
    free(p->edge);
    free(p->dev);
    free(p);
}

static const char *or_empty(const char *v)
{
    return v ? v : "";
}

static void flush_turn(evutil_socket_t fd, short what, void *arg)
{
    struct stub *s = arg;
    struct pending *list = s->turn;
    s->turn = s->turn_tail = NULL;
    /* Deliveries: each receiver's in order, several per call. */
    for (struct pending *p = list; p; p = p->next) {
        if (!p->payload)
            continue;
        struct inbox_item items[INBOX_BATCH_MAX];
        size_t n = 0;
        for (struct pending *q = p; q && n < INBOX_BATCH_MAX; q = q->next) {
            if (!q->payload || strcmp(q->to, p->to) != 0)
                continue;
            items[n++] = (struct inbox_item){q->payload, q->len, NULL, false};
        }
        const char *edge_ch = strmap_get(&s->users, p->to);
        inbox_deliver(s->bus, p->to, s->holder, "", edge_ch ? edge_ch : "", 0, items, n, NULL,
                      INBOX_TTL_MS, INBOX_MAX, on_delivered, s);
        size_t done = 0;
        for (struct pending *q = p; q && done < n; q = q->next)
            if (q->payload && strcmp(q->to, p->to) == 0) {
                free(q->payload);
                q->payload = NULL;
                done++;
            }
    }
    /* Acks: one per sender's device, with every id of the turn. */
    for (struct pending *p = list; p; p = p->next) {
        if (!p->id)
            continue;
        struct env *a = env_new(ENV_ACK);
        env_set_str(a, "to", p->from);
        json_t *ids = json_array();
        for (struct pending *q = p; q; q = q->next)
            if (q->id && !strcmp(q->from, p->from) && !strcmp(or_empty(q->edge), or_empty(p->edge)) &&
                !strcmp(or_empty(q->dev), or_empty(p->dev)) && json_array_size(ids) < 1000) {
                json_array_append_new(ids, json_string(q->id));
                if (q != p) {
                    free(q->id);
                    q->id = NULL;
                }
            }
        env_set_json(a, "ids", ids);
        if (!p->edge || !p->dev) {
            env_free(a);
            continue;
        }
        env_set_str(a, "edge", p->edge);
        env_set_str(a, "dev", p->dev);
        publish_env(s, "e", p->edge, a);
    }
    while (list) {
        struct pending *next = list->next;
        pending_free(list);
        list = next;
    }
}

static void on_chat(struct stub *s, const struct env *in)
{
    const char *from = env_str(in, "from"), *to = env_str(in, "to"),
               *id = env_str(in, "id"), *edge = env_str(in, "edge"),
               *dev = env_str(in, "dev");
    json_t *body = env_json(in, "body");
    if (!from || !to || !id || !body)
        return;
    s->chats++;
    char lto[ENV_MAX_JID + 1], full[ENV_MAX_JID + 8];
    size_t i = 0;
    for (; to[i] && i < ENV_MAX_JID; i++)
        lto[i] = (char)tolower((unsigned char)to[i]);
    lto[i] = '\0';
    snprintf(full, sizeof(full), "%s/phone", from);

    /* The message, as xmppd stores it for the receiver. */
    struct env *m = env_new(ENV_CHAT);
    env_set_int(m, "ts", util_wall_ms());
    env_set_str(m, "from", full);
    env_set_str(m, "to", lto);
    env_set_json(m, "body", json_incref(body));
    env_set_str(m, "id", id);
    struct pending *p = xcalloc(1, sizeof(*p));
    p->payload = env_encode(m, &p->len);
    env_free(m);
    p->to = xstrdup(lto);
    p->from = xstrdup(from);
    p->id = xstrdup(id);
    p->edge = edge ? xstrdup(edge) : NULL;
    p->dev = dev ? xstrdup(dev) : NULL;
    if (s->turn_tail)
        s->turn_tail->next = p;
    else {
        s->turn = p;
        event_active(s->flush_ev, EV_TIMEOUT, 0);
    }
    s->turn_tail = p;
}

static void on_one(struct stub *s, struct env *e)
{
    if (e->type == ENV_LOGIN)
        on_login(s, e);
    else if (e->type == ENV_CHAT)
        on_chat(s, e);
    env_free(e);
}

static void on_msg(void *owner, const char *channel, const char *payload, size_t len)
{
    struct stub *s = owner;
    char err[200];
    if (len > 0 && payload[0] == '[') {
        /* An edge's envelopes of one loop turn for a session. */
        json_t *all = jparse(payload, len, err, sizeof(err));
        size_t i;
        json_t *v;
        json_array_foreach(all, i, v) {
            struct env *e = env_check(json_incref(v), err, sizeof(err));
            if (e)
                on_one(s, e);
        }
        json_decref(all);
        return;
    }
    struct env *e = env_decode(payload, len, err, sizeof(err));
    if (e)
        on_one(s, e);
}

static void on_state(void *owner, bool up)
{
    struct stub *s = owner;
    if (!up)
        return;
    registry_update(s);
    if (!s->ready_said) {
        s->ready_said = true;
        fprintf(stderr, "stubbridge ready id=%s\n", s->id);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct stub *s = arg;
    event_base_loopbreak(s->base);
}

static void usage(void)
{
    fprintf(stderr, "usage: stubbridge --redis-port P [--redis-host 127.0.0.1] "
                    "[--prefix imb] [--id stub-w0] [--redis-cluster H:P,H:P]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"redis-port", 1, 0, 'p'},
                                       {"redis-host", 1, 0, 'h'},
                                       {"prefix", 1, 0, 'x'},
                                       {"id", 1, 0, 'i'},
                                       {"redis-cluster", 1, 0, 'c'},
                                       {0, 0, 0, 0}};
    struct bus_opts bo = {.host = "127.0.0.1", .prefix = "imb", .name = "stub"};
    const char *id = "stub-w0";
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'p': bo.port = atoi(optarg); break;
        case 'h': bo.host = optarg; break;
        case 'x': bo.prefix = optarg; break;
        case 'i': id = optarg; break;
        case 'c': bo.cluster = optarg; break;
        default: usage();
        }
    }
    if (bo.port <= 0 || strlen(id) > 64)
        usage();
    signal(SIGPIPE, SIG_IGN);
    jpool_install(); /* as imb-xmppd: jansson's blocks from the pool's lists */
    log_set_name("stubbridge");
    log_min_level = LOG_WARN;

    static struct stub s;
    s.id = id;
    snprintf(s.holder, sizeof(s.holder), "%s 0", id);
    strmap_init(&s.users);
    s.base = util_event_base();
    s.bus = bus_new(s.base, &bo, on_msg, on_state, &s);
    char ch_w[1200];
    bus_channel(s.bus, ch_w, sizeof(ch_w), "w", id);
    bus_subscribe(s.bus, ch_w);
    s.reg_timer = event_new(s.base, -1, EV_PERSIST, on_reg_timer, &s);
    s.flush_ev = event_new(s.base, -1, 0, flush_turn, &s);
    struct timeval tv = {REGISTER_MS / 1000, (REGISTER_MS % 1000) * 1000};
    event_add(s.reg_timer, &tv);
    struct event *sigs[2] = {evsignal_new(s.base, SIGTERM, on_signal, &s),
                             evsignal_new(s.base, SIGINT, on_signal, &s)};
    event_add(sigs[0], NULL);
    event_add(sigs[1], NULL);

    event_base_dispatch(s.base);

    fprintf(stderr, "stubbridge exit logins=%llu chats=%llu deliver_errors=%llu\n",
            (unsigned long long)s.logins, (unsigned long long)s.chats,
            (unsigned long long)s.deliver_errors);
    fflush(stderr);
    /* Leave the registry at once (a worker going away says so); the process
     * ends without waiting for the reply. */
    if (bus_up(s.bus)) {
        char key[256];
        snprintf(key, sizeof(key), "%s:workers", bus_prefix(s.bus));
        const char *argv2[] = {"HDEL", key, s.id};
        bus_command_argv(s.bus, NULL, NULL, 3, argv2, NULL);
        struct timeval t = {0, 100000};
        event_base_loopexit(s.base, &t);
        event_base_dispatch(s.base);
    }
    return 0;
}
