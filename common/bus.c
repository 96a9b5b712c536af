/* bus.c - Redis pub/sub and commands: hiredis async links on libevent,
 * reconnect with backoff, tracked subscriptions, heartbeat; one Redis or a
 * Redis Cluster.
 *
 * The bus talks to a set of nodes, each with a command link and, when a
 * channel it holds maps there, a subscription link. With one Redis there is
 * one node and every key and channel maps to it. With a cluster the nodes
 * are the masters of the last CLUSTER SLOTS answer, and a name's hash slot
 * (common/keyslot.h) picks its node: a command goes to the master of its
 * first key's slot, a channel is subscribed and published on the master of
 * its own slot (so PUBLISH's count of receivers means what it means on one
 * Redis: Redis forwards a cluster's PUBLISH to every node, but counts only
 * the subscribers of the node that took it). MOVED and ASK answers are
 * followed; the map is read again after a MOVED, when a master's link drops,
 * and every few seconds. */
#include "bus.h"
#include "envelope.h"
#include "httpd.h"
#include "keyslot.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MS 3000
#define HEARTBEAT_MS 1000
/* No heartbeat back on the sub link for this long: the subscription is dead. */
#define HEARTBEAT_DEAD_MS 5000
#define RESUBSCRIBE_BATCH 256
#define BUS_SCRIPTS_MAX 32
/* Cluster: nodes known at once (masters, and seeds until the map is read). */
#define NODES_MAX 64
#define NODE_NONE 0xff
/* The slot map is read again this often, and at most this often on demand. */
#define TOPOLOGY_EVERY_MS 5000
#define TOPOLOGY_DEGRADED_MS 200
#define TOPOLOGY_SOON_MS 100
/* MOVED followed for one command; ASK and TRYAGAIN (a slot in migration:
 * its keys partly moved) followed or waited out, TRYAGAIN_MS apart: up to
 * 10 s of one slot's migration (an operator's MIGRATE of a slot's keys in
 * small batches) before the command fails to its caller, who may then
 * retry it after newer ones. */
#define REDIRECTS_MAX 5
#define MIGRATING_MAX 400
#define TRYAGAIN_MS 25

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_UP };

/* Subscription states, stored in the strmap value's low bits; the node the
 * channel is subscribed on (or will be, once its link is up) above them. */
enum sub_state {
    SUB_ACTIVE = 1,      /* SUBSCRIBE sent (or restored): wanted */
    SUB_UNSUB_PENDING,   /* UNSUBSCRIBE sent, reply not yet seen */
    SUB_RESUB,           /* wanted again while the UNSUBSCRIBE is in flight */
};
#define SUB_VALUE(st, node) ((void *)(uintptr_t)((unsigned)(st) | ((unsigned)(node) << 4)))
/* The node of a channel subscribed before the cluster's map was read: none
 * yet (subs_follow_map places it). */
#define SUB_UNPLACED 0xfffu
#define SUB_STATE(v) ((enum sub_state)((uintptr_t)(v) & 0xf))
#define SUB_NODE(v) ((unsigned)((uintptr_t)(v) >> 4))

struct node;

struct link {
    struct node *node;
    redisAsyncContext *ac; /* NULL unless CONNECTING or UP; hiredis owns it */
    enum link_state state;
    bool is_sub;
    bool wanted;           /* connect and reconnect; false: stay down */
    int attempt;           /* consecutive failed connects, for backoff */
    bool ever_up;          /* a later connect counts as a reconnect */
    int64_t up_since_ms;   /* monotonic, when the link last came up */
    struct event *timer;   /* retry or connect timeout */
};

/* One Redis server: the only one, or a cluster node. Never freed before the
 * bus (the slot map and subscriptions name nodes by index). */
struct node {
    struct bus *bus;
    char *host;
    int port;
    unsigned idx;          /* in bus->nodes */
    bool master;           /* serves slots in the current map (one Redis: yes) */
    struct link cmd, sub;
    char hb_channel[112];  /* "<prefix>:bus:<random>.<idx>": this node's heartbeat */
    int64_t hb_last_rx_ms; /* monotonic, last heartbeat seen on sub */
};

/* A queued command: what to call back when its reply arrives. */
struct req {
    struct bus *bus;
    bus_reply_cb *cb; /* may be NULL */
    void *data;       /* the caller's; handed to cb */
    bool is_publish;
    struct req *next; /* deferred-failure or retry queue */
    struct bus_script *script; /* bus_eval: loaded again after NOSCRIPT */
    sds cmd;          /* the formatted command (an sds), sent again after
                         MOVED, ASK, TRYAGAIN or NOSCRIPT */
    size_t cmdlen;
    int slot;         /* of its first key, -1: any node */
    int moved;        /* MOVED followed */
    int migrating;    /* ASK followed, TRYAGAIN waited out */
};

/* A publish that owes someone an answer, resent until a subscriber got it
 * (bus_publish_owed). In the bus's list from start to end. */
struct owed {
    struct bus *bus;
    char *channel, *payload; /* owned; payload is len bytes */
    size_t len;
    int64_t deadline_ms;     /* monotonic: give up after this */
    int attempt;             /* sends so far */
    struct event *timer;     /* the next resend */
    struct owed *prev, *next;
};

struct bus {
    struct event_base *base;
    char *user, *password, *prefix, *name;
    bool cluster;               /* opts->cluster given: nodes come from CLUSTER SLOTS */
    bus_msg_cb *on_msg;
    bus_state_cb *on_state;
    void *owner;
    struct node *nodes[NODES_MAX];
    unsigned nnodes;
    unsigned char *slot_node;   /* cluster: KEYSLOT_COUNT node indexes, NODE_NONE unknown */
    bool map_complete;          /* cluster: every slot has a master */
    unsigned topo_next;         /* the node asked next for the map (round robin) */
    bool topo_inflight;         /* a CLUSTER SLOTS is out */
    bool topo_soon;             /* the timer is set to ask shortly */
    int64_t topo_last_ms;       /* monotonic, when the last one was sent */
    struct event *topo_timer;
    bool was_up;
    struct strmap subs;         /* channel -> SUB_VALUE(state, node) */
    char hb_prefix[96];         /* "<prefix>:bus:<random>" */
    struct event *hb_timer;
    struct owed *owed;          /* publishes being resent until someone gets them */
    bool closing;               /* bus_free runs: owed publishes end */
    struct req *deferred;       /* commands failed before sending, callback pending */
    struct event *deferred_ev;
    struct event *flush_ev;     /* the loop turn's commands written at its end */
    bool flush_armed;
    struct req *retry, *retry_tail; /* commands waiting out a TRYAGAIN, and
                                   those for the same slots behind them */
    struct event *retry_ev;
    struct bus_script *scripts[BUS_SCRIPTS_MAX]; /* loaded on every connect */
    size_t nscripts;
    struct bus_stats stats;
};

static void link_connect(struct link *l);
static void link_want(struct link *l, bool wanted);
static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata);
static void script_load(struct link *l, const struct bus_script *s);
static void topology_soon(struct bus *bus);
static void topology_ask(struct bus *bus);
static void cmd_cb(redisAsyncContext *ac, void *reply, void *privdata);

static const char *link_name(const struct link *l)
{
    return l->is_sub ? "sub" : "cmd";
}

/* The node a name maps to; NULL when the cluster's map has no master for
 * its slot yet. */
static struct node *node_of(const struct bus *bus, const char *name, size_t len)
{
    if (!bus->cluster)
        return bus->nodes[0];
    unsigned n = bus->slot_node[keyslot(name, len)];
    return n == NODE_NONE ? NULL : bus->nodes[n];
}

static unsigned channel_node(const struct bus *bus, const char *channel)
{
    struct node *n = node_of(bus, channel, strlen(channel));
    return n ? n->idx : NODE_NONE;
}

bool bus_up(const struct bus *bus)
{
    if (bus->cluster && !bus->map_complete)
        return false;
    for (unsigned i = 0; i < bus->nnodes; i++) {
        const struct node *n = bus->nodes[i];
        if (n->master && n->cmd.state != LINK_UP)
            return false;
        if (n->sub.wanted && n->sub.state != LINK_UP)
            return false;
    }
    return true;
}

static void notify_state(struct bus *bus)
{
    bool up = bus_up(bus);
    if (up == bus->was_up)
        return;
    bus->was_up = up;
    if (bus->cluster) {
        unsigned masters = 0;
        for (unsigned i = 0; i < bus->nnodes; i++)
            masters += bus->nodes[i]->master;
        LOG(INFO, up ? "bus_up" : "bus_down", "bus=%s cluster_masters=%u", bus->name,
            masters);
    } else {
        LOG(INFO, up ? "bus_up" : "bus_down", "bus=%s host=%s port=%d", bus->name,
            bus->nodes[0]->host, bus->nodes[0]->port);
    }
    if (bus->on_state)
        bus->on_state(bus->owner, up);
}

/* ---- deferred failures: a command issued while a link is down ---------- */

static void req_free(struct req *r)
{
    sdsfree(r->cmd);
    free(r);
}

/* A queue pushed at its head, reversed into the order of its pushes. */
static struct req *req_list_ordered(struct req *r)
{
    struct req *ordered = NULL;
    while (r) {
        struct req *next = r->next;
        r->next = ordered;
        ordered = r;
        r = next;
    }
    return ordered;
}

static void deferred_run(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    struct req *ordered = req_list_ordered(bus->deferred);
    bus->deferred = NULL;
    while (ordered) {
        struct req *next = ordered->next;
        if (ordered->is_publish)
            bus->stats.publish_failed++;
        if (ordered->cb)
            ordered->cb(bus->owner, ordered->data, NULL);
        req_free(ordered);
        ordered = next;
    }
}

static void defer_failure(struct req *r)
{
    r->next = r->bus->deferred;
    r->bus->deferred = r;
    event_active(r->bus->deferred_ev, EV_TIMEOUT, 0);
}

/* Send r on node's command link (ASKING first for an ASK redirection), or
 * fail it from the loop when that link is not up. */
static void req_send(struct req *r, struct node *n, bool asking)
{
    if (!n || n->cmd.state != LINK_UP) {
        if (r->bus->cluster)
            topology_soon(r->bus);
        defer_failure(r);
        return;
    }
    if (asking)
        redisAsyncCommand(n->cmd.ac, NULL, NULL, "ASKING");
    if (redisAsyncFormattedCommand(n->cmd.ac, cmd_cb, r, r->cmd, r->cmdlen) != REDIS_OK) {
        defer_failure(r);
        return;
    }
    if (!r->bus->flush_armed) {
        r->bus->flush_armed = true;
        event_active(r->bus->flush_ev, EV_WRITE, 0);
    }
}

/* The commands of a loop turn are written at its end, by a write of their
 * own: hiredis would wait for the socket to be writable, which costs a
 * trip through epoll_wait and, with its libevent adapter, four epoll_ctl
 * calls per command burst (with the changelist, util_event_base, the
 * adapter's changes of one turn cancel out). */
static void flush_run(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    bus->flush_armed = false;
    for (unsigned i = 0; i < bus->nnodes; i++) {
        struct link *l = &bus->nodes[i]->cmd;
        if (l->state == LINK_UP && l->ac)
            redisAsyncHandleWrite(l->ac); /* may drop the link: not touched after */
    }
}

static struct node *req_node(const struct req *r)
{
    const struct bus *bus = r->bus;
    if (!bus->cluster)
        return bus->nodes[0];
    if (r->slot >= 0) {
        unsigned n = bus->slot_node[r->slot];
        return n == NODE_NONE ? NULL : bus->nodes[n];
    }
    for (unsigned i = 0; i < bus->nnodes; i++)
        if (bus->nodes[i]->master && bus->nodes[i]->cmd.state == LINK_UP)
            return bus->nodes[i];
    return NULL;
}

static void retry_run(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    struct req *ordered = bus->retry;
    bus->retry = bus->retry_tail = NULL;
    while (ordered) {
        struct req *next = ordered->next;
        ordered->next = NULL;
        req_send(ordered, req_node(ordered), false);
        ordered = next;
    }
}

/* ---- links ------------------------------------------------------------- */

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct link *l = arg;
    if (l->state == LINK_CONNECTING && l->ac) {
        /* Connect timed out: hiredis has no timeout of its own. Freeing a
         * context that never connected calls no callback. */
        LOG(WARN, "redis_connect_timeout", "bus=%s link=%s host=%s port=%d",
            l->node->bus->name, link_name(l), l->node->host, l->node->port);
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        l->state = LINK_DOWN;
        redisAsyncFree(ac);
    }
    if (l->state == LINK_DOWN && l->wanted)
        link_connect(l);
}

static void schedule_retry(struct link *l)
{
    if (!l->wanted)
        return;
    int ms = BACKOFF_MIN_MS << (l->attempt < 5 ? l->attempt : 5);
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    unsigned jitter;
    util_random(&jitter, sizeof(jitter));
    ms += (int)(jitter % (unsigned)(ms / 4 + 1));
    l->attempt++;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(l->timer, &tv);
}

static void auth_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct link *l = privdata;
    redisReply *r = reply;
    if (!ac->data)
        return; /* closing */
    if (r && r->type == REDIS_REPLY_ERROR) {
        LOG(ERROR, "redis_auth_failed", "bus=%s link=%s err=\"%s\"",
            l->node->bus->name, link_name(l), r->str);
        redisAsyncDisconnect(ac);
    }
}

static void send_auth(struct link *l)
{
    struct bus *bus = l->node->bus;
    if (!bus->password || !*bus->password)
        return;
    if (bus->user && *bus->user)
        redisAsyncCommand(l->ac, auth_cb, l, "AUTH %s %s", bus->user,
                          bus->password);
    else
        redisAsyncCommand(l->ac, auth_cb, l, "AUTH %s", bus->password);
}

/* SUBSCRIBE every wanted channel of this node, in batches, and its
 * heartbeat channel, after the node's sub link came up. */
static void resubscribe_all(struct node *n)
{
    struct bus *bus = n->bus;
    const char *argv[RESUBSCRIBE_BATCH + 1];
    int argc = 0;
    argv[argc++] = "SUBSCRIBE";
    argv[argc++] = n->hb_channel;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&bus->subs, &it); e;
         e = strmap_next(&bus->subs, &it)) {
        if (SUB_NODE(e->value) != n->idx)
            continue;
        if (SUB_STATE(e->value) == SUB_UNSUB_PENDING) {
            /* The old connection is gone: nothing to unsubscribe any more. */
            strmap_del(&bus->subs, e->key);
            continue;
        }
        e->value = SUB_VALUE(SUB_ACTIVE, n->idx);
        argv[argc++] = e->key;
        if (argc == RESUBSCRIBE_BATCH + 1) {
            redisAsyncCommandArgv(n->sub.ac, sub_cb, n, argc, argv, NULL);
            argc = 1;
        }
    }
    if (argc > 1)
        redisAsyncCommandArgv(n->sub.ac, sub_cb, n, argc, argv, NULL);
}

/* Name the link "imb-<bus name>-cmd|sub" (CLIENT LIST shows which process
 * and which link; an operator can CLIENT KILL one). Not a name Redis takes
 * (an ACL without +client): the link works the same. */
static void send_name(struct link *l)
{
    char name[160];
    snprintf(name, sizeof(name), "imb-%s-%s", l->node->bus->name, link_name(l));
    for (char *p = name; *p; p++)
        if (*p <= ' ' || *p > '~')
            *p = '_';
    redisAsyncCommand(l->ac, NULL, NULL, "CLIENT SETNAME %s", name);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct link *l = cac->data;
    if (!l)
        return; /* closed by link_stop */
    struct node *n = l->node;
    struct bus *bus = n->bus;
    evtimer_del(l->timer);
    if (status != REDIS_OK) {
        LOG(WARN, "redis_connect_failed", "bus=%s link=%s host=%s port=%d err=\"%s\"",
            bus->name, link_name(l), n->host, n->port, cac->errstr);
        l->ac = NULL; /* hiredis frees it after this callback */
        l->state = LINK_DOWN;
        schedule_retry(l);
        if (bus->cluster)
            topology_soon(bus);
        return;
    }
    redisEnableKeepAlive((redisContext *)&cac->c);
    l->state = LINK_UP;
    l->attempt = 0;
    l->up_since_ms = util_mono_ms();
    if (l->ever_up)
        bus->stats.reconnects++;
    l->ever_up = true;
    LOG(INFO, "redis_connected", "bus=%s link=%s host=%s port=%d", bus->name,
        link_name(l), n->host, n->port);
    send_auth(l);
    send_name(l);
    if (!l->is_sub) {
        for (size_t i = 0; i < bus->nscripts; i++)
            script_load(l, bus->scripts[i]);
        if (bus->cluster && !bus->map_complete)
            topology_ask(bus);
    } else {
        n->hb_last_rx_ms = util_mono_ms();
        resubscribe_all(n);
    }
    notify_state(bus);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct link *l = cac->data;
    if (!l)
        return;
    struct bus *bus = l->node->bus;
    LOG(WARN, "redis_disconnected", "bus=%s link=%s host=%s port=%d err=\"%s\"", bus->name,
        link_name(l), l->node->host, l->node->port,
        status == REDIS_OK ? "closed" : cac->errstr);
    l->ac = NULL;
    l->state = LINK_DOWN;
    schedule_retry(l);
    if (bus->cluster)
        topology_soon(bus);
    notify_state(bus);
}

static void link_connect(struct link *l)
{
    struct node *n = l->node;
    struct bus *bus = n->bus;
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac || ac->err) {
        LOG(WARN, "redis_connect_failed", "bus=%s link=%s host=%s port=%d err=\"%s\"",
            bus->name, link_name(l), n->host, n->port, ac ? ac->errstr : "oom");
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    ac->data = l;
    redisLibeventAttach(ac, bus->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l->ac = ac;
    l->state = LINK_CONNECTING;
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, 0};
    evtimer_add(l->timer, &tv);
}

/* Drop the connection now, without a reconnect of its own: commands waiting
 * on it are answered NULL. */
static void link_stop(struct link *l)
{
    evtimer_del(l->timer);
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        l->state = LINK_DOWN;
        /* No callback may touch the link (or re-arm its timer) from here on. */
        ac->data = NULL;
        redisAsyncSetDisconnectCallback(ac, NULL);
        redisAsyncFree(ac);
    }
    l->state = LINK_DOWN;
}

/* Keep the link connected (wanted) or not. */
static void link_want(struct link *l, bool wanted)
{
    if (wanted == l->wanted)
        return;
    l->wanted = wanted;
    if (!wanted) {
        link_stop(l);
        return;
    }
    l->attempt = 0;
    if (l->state == LINK_DOWN && !evtimer_pending(l->timer, NULL))
        link_connect(l);
}

static void link_init(struct node *n, struct link *l, bool is_sub)
{
    memset(l, 0, sizeof(*l));
    l->node = n;
    l->is_sub = is_sub;
    l->timer = evtimer_new(n->bus->base, retry_cb, l);
}

/* ---- nodes ------------------------------------------------------------- */

static struct node *node_find(struct bus *bus, const char *host, int port)
{
    for (unsigned i = 0; i < bus->nnodes; i++)
        if (bus->nodes[i]->port == port && strcmp(bus->nodes[i]->host, host) == 0)
            return bus->nodes[i];
    return NULL;
}

/* The node at host:port, added (not connected) when new; NULL when the bus
 * knows NODES_MAX already. */
static struct node *node_get(struct bus *bus, const char *host, int port)
{
    struct node *n = node_find(bus, host, port);
    if (n || bus->nnodes == NODES_MAX)
        return n;
    n = xcalloc(1, sizeof(*n));
    n->bus = bus;
    n->host = xstrdup(host);
    n->port = port;
    n->idx = bus->nnodes;
    snprintf(n->hb_channel, sizeof(n->hb_channel), "%s.%u", bus->hb_prefix, n->idx);
    link_init(n, &n->cmd, false);
    link_init(n, &n->sub, true);
    bus->nodes[bus->nnodes++] = n;
    return n;
}

/* Count channels held on each node; a node's sub link is wanted while it
 * holds one (with one Redis, always: its heartbeat keeps it subscribed). */
static void subs_links_update(struct bus *bus)
{
    unsigned count[NODES_MAX] = {0};
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&bus->subs, &it); e;
         e = strmap_next(&bus->subs, &it))
        if (SUB_NODE(e->value) < NODES_MAX)
            count[SUB_NODE(e->value)]++;
    for (unsigned i = 0; i < bus->nnodes; i++)
        link_want(&bus->nodes[i]->sub, !bus->cluster || count[i] > 0);
}

/* ---- the cluster's slot map -------------------------------------------- */

static void topology_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    bus->topo_soon = false;
    topology_ask(bus);
    /* While a master is unreachable the map is read often: the failover
     * shows in it as soon as the cluster promoted a replica. */
    int ms = bus_up(bus) ? TOPOLOGY_EVERY_MS : TOPOLOGY_DEGRADED_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(bus->topo_timer, &tv);
}

/* Read the map again shortly (MOVED, a master's link dropped). */
static void topology_soon(struct bus *bus)
{
    if (bus->closing || bus->topo_inflight || bus->topo_soon)
        return;
    bus->topo_soon = true;
    struct timeval tv = {0, TOPOLOGY_SOON_MS * 1000};
    evtimer_add(bus->topo_timer, &tv);
}

/* A channel whose slot moved: it is subscribed again on its new master. Both
 * nodes' sub links start afresh (an UNSUBSCRIBE on one and a SUBSCRIBE on the
 * other could overlap, and Redis forwards every PUBLISH of a cluster to every
 * node: the channel would be received twice), which takes the bus down and
 * up: its owner then catches up on what the move may have lost. */
static void subs_follow_map(struct bus *bus)
{
    bool restart[NODES_MAX] = {false};
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&bus->subs, &it); e;
         e = strmap_next(&bus->subs, &it)) {
        unsigned was = SUB_NODE(e->value), now = channel_node(bus, e->key);
        if (was == now || now == NODE_NONE)
            continue;
        if (SUB_STATE(e->value) == SUB_UNSUB_PENDING) {
            strmap_del(&bus->subs, e->key);
        } else {
            e->value = SUB_VALUE(SUB_ACTIVE, now);
            restart[now] = true;
        }
        if (was < NODES_MAX) {
            restart[was] = true;
            LOG(INFO, "redis_channel_moved", "bus=%s channel=%s node=%s:%d", bus->name,
                e->key, bus->nodes[now]->host, bus->nodes[now]->port);
        }
    }
    for (unsigned i = 0; i < bus->nnodes; i++)
        if (restart[i] && bus->nodes[i]->sub.wanted)
            link_want(&bus->nodes[i]->sub, false); /* (wanted again just below) */
    subs_links_update(bus);
}

/* CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...]. */
static void on_slots(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct bus *bus = privdata;
    redisReply *r = reply;
    struct link *asked = ac->data;
    bus->topo_inflight = false;
    if (!r || bus->closing)
        return;
    if (r->type != REDIS_REPLY_ARRAY) {
        LOG(ERROR, "redis_cluster_map_failed", "bus=%s host=%s port=%d err=\"%s\"", bus->name,
            asked ? asked->node->host : "?", asked ? asked->node->port : 0,
            r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        return;
    }
    unsigned char map[KEYSLOT_COUNT];
    memset(map, NODE_NONE, sizeof(map));
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            range->element[0]->type != REDIS_REPLY_INTEGER ||
            range->element[1]->type != REDIS_REPLY_INTEGER ||
            range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2 ||
            range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long lo = range->element[0]->integer, hi = range->element[1]->integer;
        long long port = range->element[2]->element[1]->integer;
        const char *host = range->element[2]->element[0]->str;
        if (lo < 0 || hi >= KEYSLOT_COUNT || lo > hi || port <= 0 || port > 65535)
            continue;
        /* An empty (or "?") endpoint: the node that answered. */
        if ((!*host || strcmp(host, "?") == 0) && asked)
            host = asked->node->host;
        struct node *n = node_get(bus, host, (int)port);
        if (!n) {
            LOG(ERROR, "redis_cluster_too_many_nodes", "bus=%s max=%d", bus->name, NODES_MAX);
            return;
        }
        memset(map + lo, (int)n->idx, (size_t)(hi - lo + 1));
    }
    bool complete = memchr(map, NODE_NONE, sizeof(map)) == NULL;
    bool changed = memcmp(map, bus->slot_node, sizeof(map)) != 0;
    if (changed) {
        memcpy(bus->slot_node, map, sizeof(map));
        bus->stats.topology_changes++;
    }
    bus->map_complete = complete;
    unsigned masters = 0;
    bool is_master[NODES_MAX] = {false};
    for (unsigned s = 0; s < KEYSLOT_COUNT; s++)
        if (map[s] != NODE_NONE)
            is_master[map[s]] = true;
    for (unsigned i = 0; i < bus->nnodes; i++) {
        struct node *n = bus->nodes[i];
        n->master = is_master[i];
        masters += n->master;
        /* Nodes that serve no slot (seeds that are replicas, a failed master
         * now following its replacement) keep no link. */
        link_want(&n->cmd, n->master);
    }
    if (changed)
        LOG(INFO, "redis_cluster_map", "bus=%s masters=%u complete=%s", bus->name, masters,
            complete ? "yes" : "no");
    subs_follow_map(bus);
    notify_state(bus);
}

/* Ask one reachable node for the map; with none reachable, connect to every
 * node known (the seeds included) and ask once one answers. */
static void topology_ask(struct bus *bus)
{
    if (!bus->cluster || bus->closing || bus->topo_inflight)
        return;
    for (unsigned k = 0; k < bus->nnodes; k++) {
        struct node *n = bus->nodes[(bus->topo_next + k) % bus->nnodes];
        if (n->cmd.state != LINK_UP)
            continue;
        bus->topo_next = (n->idx + 1) % bus->nnodes;
        bus->topo_inflight = true;
        bus->topo_last_ms = util_mono_ms();
        redisAsyncCommand(n->cmd.ac, on_slots, bus, "CLUSTER SLOTS");
        return;
    }
    for (unsigned i = 0; i < bus->nnodes; i++)
        link_want(&bus->nodes[i]->cmd, true);
}

/* "host:port" or "[v6]:port"; false when it is neither. */
static bool parse_hostport(const char *s, size_t len, char *host, size_t hostn, int *port)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || colon == s || colon == s + len - 1)
        return false;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostn)
        return false;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (end != s + len || p < 1 || p > 65535)
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return true;
}

bool bus_cluster_seed(const char *seeds, unsigned i, char *host, size_t hostn, int *port)
{
    for (const char *p = seeds; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (i-- == 0)
            return parse_hostport(p, len, host, hostn, port);
        p += len + (end ? 1 : 0);
    }
    return false;
}

bool bus_cluster_seeds_ok(const char *seeds, char *err, size_t errlen)
{
    size_t count = 0;
    for (const char *p = seeds; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char host[256];
        int port;
        if (!parse_hostport(p, len, host, sizeof(host), &port)) {
            snprintf(err, errlen, "redis_cluster: \"%.*s\" is not host:port", (int)len, p);
            return false;
        }
        count++;
        p += len + (end ? 1 : 0);
    }
    if (count == 0 || count > NODES_MAX / 2) {
        snprintf(err, errlen, "redis_cluster: give 1 to %d seed nodes as host:port,host:port",
                 NODES_MAX / 2);
        return false;
    }
    return true;
}

/* ---- subscriptions ----------------------------------------------------- */

static void on_heartbeat(struct node *n, const char *payload, size_t len)
{
    char buf[32];
    if (len >= sizeof(buf))
        return;
    memcpy(buf, payload, len);
    buf[len] = '\0';
    int64_t sent = strtoll(buf, NULL, 10);
    int64_t now = util_mono_ms();
    n->hb_last_rx_ms = now;
    if (sent > 0 && sent <= now)
        n->bus->stats.last_roundtrip_ms = now - sent;
}

static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct node *n = privdata;
    struct bus *bus = n->bus;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    const char *channel = r->element[1]->str;
    if (strcasecmp(kind, "message") == 0) {
        redisReply *p = r->element[2];
        if (p->type != REDIS_REPLY_STRING)
            return;
        if (strcmp(channel, n->hb_channel) == 0) {
            on_heartbeat(n, p->str, p->len);
            return;
        }
        /* Even on a channel being unsubscribed: Redis counted this message
         * as received, so its publisher waits for what the owner does with
         * it (a stopping worker answers a login, say). */
        bus->stats.received++;
        bus->on_msg(bus->owner, channel, p->str, p->len);
    } else if (strcasecmp(kind, "unsubscribe") == 0) {
        void *v = strmap_get(&bus->subs, channel);
        if (!v || SUB_NODE(v) != n->idx)
            return;
        if (SUB_STATE(v) == SUB_UNSUB_PENDING) {
            strmap_del(&bus->subs, channel);
            subs_links_update(bus);
        } else if (SUB_STATE(v) == SUB_RESUB && n->sub.state == LINK_UP) {
            /* Now that hiredis dropped its callback for the channel, the
             * new SUBSCRIBE registers a fresh one. */
            strmap_put(&bus->subs, channel, SUB_VALUE(SUB_ACTIVE, n->idx));
            redisAsyncCommand(n->sub.ac, sub_cb, n, "SUBSCRIBE %s", channel);
        }
    }
}

void bus_subscribe(struct bus *bus, const char *channel)
{
    void *v = strmap_get(&bus->subs, channel);
    if (v && (SUB_STATE(v) == SUB_ACTIVE || SUB_STATE(v) == SUB_RESUB))
        return;
    if (v && SUB_STATE(v) == SUB_UNSUB_PENDING) {
        strmap_put(&bus->subs, channel, SUB_VALUE(SUB_RESUB, SUB_NODE(v)));
        return;
    }
    /* A cluster whose map is not known yet: the channel is placed once it
     * is (subs_follow_map). */
    unsigned node = channel_node(bus, channel);
    strmap_put(&bus->subs, channel, SUB_VALUE(SUB_ACTIVE, node == NODE_NONE ? SUB_UNPLACED : node));
    if (node == NODE_NONE)
        return;
    struct node *n = bus->nodes[node];
    if (n->sub.state == LINK_UP)
        redisAsyncCommand(n->sub.ac, sub_cb, n, "SUBSCRIBE %s", channel);
    else
        subs_links_update(bus);
}

void bus_unsubscribe(struct bus *bus, const char *channel)
{
    void *v = strmap_get(&bus->subs, channel);
    if (!v)
        return;
    unsigned node = SUB_NODE(v);
    if (SUB_STATE(v) == SUB_RESUB) {
        strmap_put(&bus->subs, channel, SUB_VALUE(SUB_UNSUB_PENDING, node));
        return;
    }
    if (SUB_STATE(v) != SUB_ACTIVE)
        return;
    struct node *n = node < bus->nnodes ? bus->nodes[node] : NULL;
    if (!n || n->sub.state != LINK_UP) {
        strmap_del(&bus->subs, channel); /* resubscribe will skip it */
        subs_links_update(bus);
        return;
    }
    strmap_put(&bus->subs, channel, SUB_VALUE(SUB_UNSUB_PENDING, node));
    redisAsyncCommand(n->sub.ac, sub_cb, n, "UNSUBSCRIBE %s", channel);
}

/* ---- commands ---------------------------------------------------------- */

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the node it names, added when new
 * (a master: it serves that slot now). */
static struct node *redirect_node(struct bus *bus, const char *err, int *slot)
{
    const char *sp = strchr(err, ' ');
    if (!sp)
        return NULL;
    char *end;
    long s = strtol(sp + 1, &end, 10);
    if (*end != ' ' || s < 0 || s >= KEYSLOT_COUNT)
        return NULL;
    char host[256];
    int port;
    if (!parse_hostport(end + 1, strlen(end + 1), host, sizeof(host), &port))
        return NULL;
    struct node *n = node_get(bus, host, port);
    if (n)
        link_want(&n->cmd, true);
    *slot = (int)s;
    return n;
}

/* ---- a slot in migration ------------------------------------------------
 * A command that met TRYAGAIN waits TRYAGAIN_MS and is sent again. Those for
 * the same slot issued or redirected meanwhile wait behind it: sent at
 * once, one could be stored before it (a script of the same user: its
 * messages numbered out of order). */

static bool slot_waits(const struct bus *bus, int slot)
{
    for (const struct req *q = bus->retry; q && slot >= 0; q = q->next)
        if (q->slot == slot)
            return true;
    return false;
}

static void retry_later(struct bus *bus, struct req *r)
{
    r->next = NULL;
    if (bus->retry_tail)
        bus->retry_tail->next = r;
    else
        bus->retry = r;
    bus->retry_tail = r;
    if (!evtimer_pending(bus->retry_ev, NULL)) {
        struct timeval tv = {0, TRYAGAIN_MS * 1000};
        evtimer_add(bus->retry_ev, &tv);
    }
}

/* A cluster's answer that the command belongs elsewhere or later: follow it.
 * True when r was sent again (or will be). */
static bool cluster_redirect(struct bus *bus, struct req *r, const redisReply *rep)
{
    int slot;
    struct node *n;
    if (strncmp(rep->str, "MOVED ", 6) == 0) {
        bus->stats.redirects++;
        topology_soon(bus);
        if (!(n = redirect_node(bus, rep->str, &slot)) || ++r->moved > REDIRECTS_MAX)
            return false;
        bus->slot_node[slot] = (unsigned char)n->idx;
        n->master = true;
        if (slot_waits(bus, r->slot))
            retry_later(bus, r);
        else
            req_send(r, n, false);
        return true;
    }
    if (strncmp(rep->str, "ASK ", 4) == 0) {
        bus->stats.redirects++;
        if (!(n = redirect_node(bus, rep->str, &slot)) || ++r->migrating > MIGRATING_MAX)
            return false;
        if (slot_waits(bus, r->slot))
            retry_later(bus, r); /* (sent to the map's node: ASK again) */
        else
            req_send(r, n, true);
        return true;
    }
    if (strncmp(rep->str, "TRYAGAIN", 8) == 0 && ++r->migrating <= MIGRATING_MAX) {
        /* A slot in migration with this command's keys on both sides. */
        retry_later(bus, r);
        return true;
    }
    return false;
}

static void cmd_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *r = privdata;
    struct bus *bus = r->bus;
    struct link *l = ac->data;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        if (r->script && strncmp(rep->str, "NOSCRIPT", 8) == 0 && l &&
            l->state == LINK_UP) {
            /* Redis forgot the script (SCRIPT FLUSH, or a node that never
             * had it): load it, then the call again, once; commands behind
             * it on the link may run first. */
            LOG(WARN, "redis_noscript", "bus=%s sha=%s", bus->name, r->script->sha);
            struct bus_script *s = r->script;
            r->script = NULL;
            script_load(l, s);
            if (redisAsyncFormattedCommand(ac, cmd_cb, r, r->cmd, r->cmdlen) == REDIS_OK)
                return;
            rep = NULL;
        } else if (bus->cluster && !bus->closing && cluster_redirect(bus, r, rep)) {
            return;
        }
    }
    if (r->is_publish) {
        if (!rep || rep->type != REDIS_REPLY_INTEGER)
            bus->stats.publish_failed++;
        else if (rep->integer == 0)
            bus->stats.publish_missed++;
        else
            bus->stats.published++;
    }
    if (r->cb)
        r->cb(bus->owner, r->data, rep);
    req_free(r);
}

/* A command formatted in cmd (an sds, taken over), routed by the name at
 * key (len bytes; NULL: any master). */
static void req_issue(struct bus *bus, bus_reply_cb *cb, void *data, bool is_publish,
                      struct bus_script *script, sds cmd, long long cmdlen,
                      const char *key, size_t keylen)
{
    struct req *r = xcalloc(1, sizeof(*r));
    r->bus = bus;
    r->cb = cb;
    r->data = data;
    r->is_publish = is_publish;
    r->script = script;
    r->slot = key ? (int)keyslot(key, keylen) : -1;
    if (cmdlen <= 0) {
        sdsfree(cmd);
        defer_failure(r);
        return;
    }
    r->cmd = cmd;
    r->cmdlen = (size_t)cmdlen;
    if (bus->retry && slot_waits(bus, r->slot))
        retry_later(bus, r);
    else
        req_send(r, req_node(r), false);
}

/* A command in Redis's protocol, by hiredis's sds formatter: the commands
 * of every message are formatted here, and hiredis's other formatter calls
 * sprintf for each argument's length. */
static long long format_argv(sds *cmd, int argc, const char **argv, const size_t *argvlen)
{
    *cmd = NULL;
    int n = redisFormatSdsCommandArgv(cmd, argc, argv, argvlen);
    if (n <= 0) {
        sdsfree(*cmd);
        *cmd = NULL;
    }
    return n;
}

void bus_command_argv(struct bus *bus, bus_reply_cb *cb, void *data, int argc,
                      const char **argv, const size_t *argvlen)
{
    sds cmd;
    long long n = format_argv(&cmd, argc, argv, argvlen);
    size_t keylen = argc > 1 ? (argvlen ? argvlen[1] : strlen(argv[1])) : 0;
    req_issue(bus, cb, data, false, NULL, cmd, n, argc > 1 ? argv[1] : NULL, keylen);
}

/* The second argument of a command formatted by hiredis
 * ("*N\r\n$L\r\nNAME\r\n$L\r\nARG\r\n..."): where a plain command's key is. */
static const char *formatted_key(const char *cmd, size_t len, size_t *keylen)
{
    const char *p = cmd, *end = cmd + len;
    for (int arg = 0; arg < 2; arg++) {
        p = memchr(p, '$', (size_t)(end - p));
        if (!p)
            return NULL;
        char *nl;
        long l = strtol(p + 1, &nl, 10);
        if (l < 0 || nl + 2 + l > end)
            return NULL;
        p = nl + 2;
        if (arg == 1) {
            *keylen = (size_t)l;
            return p;
        }
        p += l + 2;
    }
    return NULL;
}

void bus_command(struct bus *bus, bus_reply_cb *cb, void *data,
                 const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&text, fmt, ap);
    va_end(ap);
    sds cmd = n > 0 ? sdsnewlen(text, (size_t)n) : NULL;
    redisFreeCommand(text);
    size_t keylen = 0;
    const char *key = n > 0 ? formatted_key(cmd, (size_t)n, &keylen) : NULL;
    req_issue(bus, cb, data, false, NULL, cmd, n, key, keylen);
}

static void script_load(struct link *l, const struct bus_script *s)
{
    redisAsyncCommand(l->ac, NULL, NULL, "SCRIPT LOAD %s", s->text);
}

/* The script's SHA1, and its place in the list loaded on connect. */
static void script_know(struct bus *bus, struct bus_script *s)
{
    if (!s->sha[0]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        EVP_Digest(s->text, strlen(s->text), md, &n, EVP_sha1(), NULL);
        for (unsigned int i = 0; i < n && i < 20; i++)
            snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
    }
    for (size_t i = 0; i < bus->nscripts; i++)
        if (bus->scripts[i] == s)
            return;
    if (bus->nscripts < BUS_SCRIPTS_MAX) {
        bus->scripts[bus->nscripts++] = s;
        for (unsigned i = 0; i < bus->nnodes; i++)
            if (bus->nodes[i]->cmd.state == LINK_UP)
                script_load(&bus->nodes[i]->cmd, s);
    }
}

void bus_eval(struct bus *bus, struct bus_script *script, bus_reply_cb *cb,
              void *data, int argc, const char **argv, const size_t *argvlen)
{
    script_know(bus, script);
    const char *stack_v[40];
    size_t stack_l[40];
    bool heap = argc + 2 > 40;
    const char **v = heap ? xcalloc((size_t)argc + 2, sizeof(*v)) : stack_v;
    size_t *l = heap ? xcalloc((size_t)argc + 2, sizeof(*l)) : stack_l;
    v[0] = "EVALSHA";
    l[0] = 7;
    v[1] = script->sha;
    l[1] = 40;
    for (int i = 0; i < argc; i++) {
        v[i + 2] = argv[i];
        l[i + 2] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    sds cmd;
    long long n = format_argv(&cmd, argc + 2, v, l);
    /* Routed by its first key (argv: numkeys, keys..., args...). */
    bool keyed = argc > 1 && strtol(argv[0], NULL, 10) > 0;
    const char *key = keyed ? v[3] : NULL;
    size_t keylen = keyed ? l[3] : 0;
    req_issue(bus, cb, data, false, script, cmd, n, key, keylen);
    if (heap) {
        free(v);
        free(l);
    }
}

void bus_publish(struct bus *bus, const char *channel, const char *payload,
                 size_t len, bus_reply_cb *cb, void *data)
{
    const char *argv[3] = {"PUBLISH", channel, payload};
    size_t clen = strlen(channel);
    size_t argvlen[3] = {7, clen, len};
    sds cmd;
    long long n = format_argv(&cmd, 3, argv, argvlen);
    req_issue(bus, cb, data, true, NULL, cmd, n, channel, clen);
}

/* ---- publishes that owe an answer --------------------------------------
 * An ack or a login answer that reached nobody leaves a phone waiting: the
 * edge that waits for it is resubscribing (Redis restarted, its link was
 * killed) or the command link itself was down. Resend it with backoff until
 * a subscriber got it or its time is up. */

static void owed_send(struct owed *o);

static void owed_free(struct owed *o)
{
    struct bus *bus = o->bus;
    if (o->prev)
        o->prev->next = o->next;
    else
        bus->owed = o->next;
    if (o->next)
        o->next->prev = o->prev;
    event_free(o->timer);
    free(o->channel);
    free(o->payload);
    free(o);
}

static void owed_cb(void *owner, void *data, redisReply *r)
{
    struct owed *o = data;
    struct bus *bus = o->bus;
    if (bus->closing || (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)) {
        if (o->attempt > 1 && !bus->closing)
            LOG(INFO, "publish_redelivered", "bus=%s channel=%s attempts=%d", bus->name,
                o->channel, o->attempt);
        owed_free(o);
        return;
    }
    int64_t now = util_mono_ms();
    if (now >= o->deadline_ms) {
        LOG(WARN, "publish_undelivered", "bus=%s channel=%s attempts=%d why=%s", bus->name,
            o->channel, o->attempt, r ? "no_subscriber" : "redis_unreachable");
        bus->stats.owed_undelivered++;
        owed_free(o);
        return;
    }
    int ms = 50 << (o->attempt < 5 ? o->attempt - 1 : 4); /* 50 .. 800 ms */
    if (now + ms > o->deadline_ms)
        ms = (int)(o->deadline_ms - now);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(o->timer, &tv);
}

static void owed_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    owed_send(arg);
}

static void owed_send(struct owed *o)
{
    o->attempt++;
    if (o->attempt > 1)
        o->bus->stats.owed_resent++;
    bus_publish(o->bus, o->channel, o->payload, o->len, owed_cb, o);
}

void bus_publish_owed(struct bus *bus, const char *channel, const char *payload,
                      size_t len, int64_t within_ms)
{
    struct owed *o = xcalloc(1, sizeof(*o));
    o->bus = bus;
    o->channel = xstrdup(channel);
    o->payload = xstrndup(payload, len);
    o->len = len;
    o->deadline_ms = util_mono_ms() + within_ms;
    o->timer = evtimer_new(bus->base, owed_timer_cb, o);
    o->next = bus->owed;
    if (bus->owed)
        bus->owed->prev = o;
    bus->owed = o;
    owed_send(o);
}

/* ---- heartbeat ---------------------------------------------------------- */

static void hb_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    int64_t now = util_mono_ms();
    for (unsigned i = 0; i < bus->nnodes; i++) {
        struct node *n = bus->nodes[i];
        if (!n->sub.wanted)
            continue;
        if (n->cmd.state == LINK_UP) {
            char buf[32];
            int len = snprintf(buf, sizeof(buf), "%lld", (long long)now);
            const char *argv[3] = {"PUBLISH", n->hb_channel, buf};
            size_t argvlen[3] = {7, strlen(n->hb_channel), (size_t)len};
            redisAsyncCommandArgv(n->cmd.ac, NULL, NULL, 3, argv, argvlen);
        }
        /* The heartbeat only proves anything when both links are up and the
         * sub link had time to subscribe. */
        if (n->cmd.state == LINK_UP && n->sub.state == LINK_UP &&
            now - n->sub.up_since_ms > HEARTBEAT_DEAD_MS &&
            now - n->cmd.up_since_ms > HEARTBEAT_DEAD_MS &&
            now - n->hb_last_rx_ms > HEARTBEAT_DEAD_MS) {
            LOG(WARN, "redis_subscription_dead", "bus=%s host=%s port=%d silent_ms=%lld",
                bus->name, n->host, n->port, (long long)(now - n->hb_last_rx_ms));
            n->hb_last_rx_ms = now;
            redisAsyncDisconnect(n->sub.ac);
        }
    }
    /* (The map is not read by this timer: topology_timer_cb.) */
}

/* ---- lifecycle --------------------------------------------------------- */

struct bus *bus_new(struct event_base *base, const struct bus_opts *opts,
                    bus_msg_cb *on_msg, bus_state_cb *on_state, void *owner)
{
    struct bus *bus = xcalloc(1, sizeof(*bus));
    bus->base = base;
    bus->user = xstrdup(opts->user ? opts->user : "");
    bus->password = xstrdup(opts->password ? opts->password : "");
    bus->prefix = xstrdup(opts->prefix && *opts->prefix ? opts->prefix : "imb");
    bus->name = xstrdup(opts->name ? opts->name : "bus");
    bus->on_msg = on_msg;
    bus->on_state = on_state;
    bus->owner = owner;
    bus->stats.last_roundtrip_ms = -1;
    strmap_init(&bus->subs);
    char rnd[17];
    util_random_hex(rnd, 8);
    snprintf(bus->hb_prefix, sizeof(bus->hb_prefix), "%s:bus:%s", bus->prefix, rnd);
    bus->deferred_ev = event_new(base, -1, 0, deferred_run, bus);
    bus->flush_ev = event_new(base, -1, 0, flush_run, bus);
    bus->retry_ev = evtimer_new(base, retry_run, bus);
    bus->topo_timer = evtimer_new(base, topology_timer_cb, bus);
    bus->hb_timer = event_new(base, -1, EV_PERSIST, hb_timer_cb, bus);
    struct timeval hb = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    evtimer_add(bus->hb_timer, &hb);
    bus->cluster = opts->cluster && *opts->cluster;
    if (!bus->cluster) {
        struct node *n = node_get(bus, opts->host, opts->port);
        n->master = true;
        link_want(&n->cmd, true);
        link_want(&n->sub, true);
        return bus;
    }
    /* A cluster: the seeds are asked for the map; their links close once it
     * is known unless they are masters in it. */
    bus->slot_node = xcalloc(1, KEYSLOT_COUNT);
    memset(bus->slot_node, NODE_NONE, KEYSLOT_COUNT);
    char host[256];
    int port;
    for (unsigned i = 0; bus_cluster_seed(opts->cluster, i, host, sizeof(host), &port); i++)
        node_get(bus, host, port);
    for (unsigned i = 0; i < bus->nnodes; i++)
        link_want(&bus->nodes[i]->cmd, true);
    struct timeval tv = {TOPOLOGY_EVERY_MS / 1000, (TOPOLOGY_EVERY_MS % 1000) * 1000};
    evtimer_add(bus->topo_timer, &tv);
    return bus;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    event_free(bus->hb_timer);
    event_free(bus->topo_timer);
    bus->closing = true;
    for (unsigned i = 0; i < bus->nnodes; i++) {
        struct node *n = bus->nodes[i];
        n->sub.wanted = n->cmd.wanted = false;
        link_stop(&n->sub);
        link_stop(&n->cmd); /* pending command callbacks run with NULL */
    }
    retry_run(-1, 0, bus);    /* (no link is up: they fail into deferred) */
    deferred_run(-1, 0, bus); /* (owed publishes in flight end there) */
    while (bus->owed)
        owed_free(bus->owed); /* those waiting for their next send */
    for (unsigned i = 0; i < bus->nnodes; i++) {
        struct node *n = bus->nodes[i];
        event_free(n->sub.timer);
        event_free(n->cmd.timer);
        free(n->host);
        free(n);
    }
    event_free(bus->deferred_ev);
    event_free(bus->flush_ev);
    event_free(bus->retry_ev);
    strmap_free(&bus->subs);
    free(bus->slot_node);
    free(bus->user);
    free(bus->password);
    free(bus->prefix);
    free(bus->name);
    free(bus);
}

const char *bus_prefix(const struct bus *bus)
{
    return bus->prefix;
}

bool bus_channel(const struct bus *bus, char *out, size_t n, const char *kind,
                 const char *id)
{
    return util_cat(out, n, bus->prefix, ":", kind, ":", id, (char *)NULL);
}

const struct bus_stats *bus_stats(const struct bus *bus)
{
    return &bus->stats;
}

struct env *bus_envelope(const char *channel, const char *payload, size_t len,
                         struct metrics_hist *latency, uint64_t *bad)
{
    char err[256];
    struct env *e = env_decode(payload, len, err, sizeof(err));
    if (!e) {
        (*bad)++;
        LOG(WARN, "envelope_invalid", "channel=%s err=\"%s\"", channel, err);
        return NULL;
    }
    int64_t pts = env_int(e, "pts", -1);
    if (pts > 0)
        metrics_hist_observe(latency, (double)(util_wall_ms() - pts));
    return e;
}

int64_t bus_heartbeat_age_ms(const struct bus *bus)
{
    /* The oldest among the nodes holding the bus's channels: what this
     * process receives. (A cluster's other masters may be failing over
     * meanwhile: the bus is then down, but not this path.) */
    if (bus->cluster && !bus->map_complete)
        return -1;
    int64_t now = util_mono_ms(), age = 0;
    for (unsigned i = 0; i < bus->nnodes; i++) {
        const struct node *n = bus->nodes[i];
        if (!n->sub.wanted)
            continue;
        if (n->sub.state != LINK_UP || n->cmd.state != LINK_UP)
            return -1;
        if (now - n->hb_last_rx_ms > age)
            age = now - n->hb_last_rx_ms;
    }
    return age;
}
