/* bus.c - Redis pub/sub and commands: two hiredis async links on libevent,
 * reconnect with backoff, tracked subscriptions, heartbeat. */
#include "bus.h"
#include "envelope.h"
#include "httpd.h"
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

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MS 3000
#define HEARTBEAT_MS 1000
/* No heartbeat back on the sub link for this long: the subscription is dead. */
#define HEARTBEAT_DEAD_MS 5000
#define RESUBSCRIBE_BATCH 256
#define BUS_SCRIPTS_MAX 32

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_UP };

/* Subscription states, stored as the strmap value. */
enum sub_state {
    SUB_ACTIVE = 1,      /* SUBSCRIBE sent (or restored): wanted */
    SUB_UNSUB_PENDING,   /* UNSUBSCRIBE sent, reply not yet seen */
    SUB_RESUB,           /* wanted again while the UNSUBSCRIBE is in flight */
};

struct link {
    struct bus *bus;
    redisAsyncContext *ac; /* NULL unless CONNECTING or UP; hiredis owns it */
    enum link_state state;
    bool is_sub;
    int attempt;           /* consecutive failed connects, for backoff */
    bool ever_up;          /* a later connect counts as a reconnect */
    int64_t up_since_ms;   /* monotonic, when the link last came up */
    struct event *timer;   /* retry or connect timeout */
};

/* A queued command: what to call back when its reply arrives. */
struct req {
    struct bus *bus;
    bus_reply_cb *cb; /* may be NULL */
    void *data;       /* the caller's; handed to cb */
    bool is_publish;
    struct req *next; /* deferred-failure queue */
    /* bus_eval: the formatted EVALSHA, kept to repeat it after NOSCRIPT. */
    struct bus_script *script;
    char *cmd;
    size_t cmdlen;
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
    char *host, *user, *password, *prefix, *name;
    int port;
    bus_msg_cb *on_msg;
    bus_state_cb *on_state;
    void *owner;
    struct link cmd, sub;
    bool was_up;
    struct strmap subs;         /* channel -> enum sub_state */
    char hb_channel[96];        /* "<prefix>:bus:<random>": heartbeat, always subscribed */
    int64_t hb_last_rx_ms;      /* monotonic, last heartbeat seen on sub */
    struct event *hb_timer;
    struct owed *owed;          /* publishes being resent until someone gets them */
    bool closing;               /* bus_free runs: owed publishes end */
    struct req *deferred;       /* commands failed before sending, callback pending */
    struct event *deferred_ev;
    struct bus_script *scripts[BUS_SCRIPTS_MAX]; /* loaded on every connect */
    size_t nscripts;
    struct bus_stats stats;
};

static void link_connect(struct link *l);
static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata);
static void script_load(struct bus *bus, const struct bus_script *s);

static const char *link_name(const struct link *l)
{
    return l->is_sub ? "sub" : "cmd";
}

static void notify_state(struct bus *bus)
{
    bool up = bus_up(bus);
    if (up == bus->was_up)
        return;
    bus->was_up = up;
    LOG(INFO, up ? "bus_up" : "bus_down", "bus=%s host=%s port=%d", bus->name,
        bus->host, bus->port);
    if (bus->on_state)
        bus->on_state(bus->owner, up);
}

/* ---- deferred failures: a command issued while a link is down ---------- */

static void deferred_run(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    struct req *r = bus->deferred;
    bus->deferred = NULL;
    /* Reverse into issue order. */
    struct req *ordered = NULL;
    while (r) {
        struct req *next = r->next;
        r->next = ordered;
        ordered = r;
        r = next;
    }
    while (ordered) {
        struct req *next = ordered->next;
        if (ordered->is_publish)
            bus->stats.publish_failed++;
        if (ordered->cb)
            ordered->cb(bus->owner, ordered->data, NULL);
        free(ordered->cmd);
        free(ordered);
        ordered = next;
    }
}

static void defer_failure(struct req *r)
{
    r->next = r->bus->deferred;
    r->bus->deferred = r;
    event_active(r->bus->deferred_ev, EV_TIMEOUT, 0);
}

/* ---- links ------------------------------------------------------------- */

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct link *l = arg;
    if (l->state == LINK_CONNECTING && l->ac) {
        /* Connect timed out: hiredis has no timeout of its own. Freeing a
         * context that never connected calls no callback. */
        LOG(WARN, "redis_connect_timeout", "bus=%s link=%s", l->bus->name,
            link_name(l));
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        l->state = LINK_DOWN;
        redisAsyncFree(ac);
    }
    if (l->state == LINK_DOWN)
        link_connect(l);
}

static void schedule_retry(struct link *l)
{
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
            l->bus->name, link_name(l), r->str);
        redisAsyncDisconnect(ac);
    }
}

static void send_auth(struct link *l)
{
    struct bus *bus = l->bus;
    if (!bus->password || !*bus->password)
        return;
    if (bus->user && *bus->user)
        redisAsyncCommand(l->ac, auth_cb, l, "AUTH %s %s", bus->user,
                          bus->password);
    else
        redisAsyncCommand(l->ac, auth_cb, l, "AUTH %s", bus->password);
}

/* SUBSCRIBE every wanted channel, in batches, after the sub link came up. */
static void resubscribe_all(struct bus *bus)
{
    const char *argv[RESUBSCRIBE_BATCH + 1];
    int argc = 0;
    argv[argc++] = "SUBSCRIBE";
    argv[argc++] = bus->hb_channel;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&bus->subs, &it); e;
         e = strmap_next(&bus->subs, &it)) {
        enum sub_state st = (enum sub_state)(uintptr_t)e->value;
        if (st == SUB_UNSUB_PENDING) {
            /* The old connection is gone: nothing to unsubscribe any more. */
            strmap_del(&bus->subs, e->key);
            continue;
        }
        e->value = (void *)(uintptr_t)SUB_ACTIVE;
        argv[argc++] = e->key;
        if (argc == RESUBSCRIBE_BATCH + 1) {
            redisAsyncCommandArgv(bus->sub.ac, sub_cb, bus, argc, argv, NULL);
            argc = 1;
        }
    }
    if (argc > 1)
        redisAsyncCommandArgv(bus->sub.ac, sub_cb, bus, argc, argv, NULL);
}

/* Name the link "imb-<bus name>-cmd|sub" (CLIENT LIST shows which process
 * and which link; an operator can CLIENT KILL one). Not a name Redis takes
 * (an ACL without +client): the link works the same. */
static void send_name(struct link *l)
{
    char name[160];
    snprintf(name, sizeof(name), "imb-%s-%s", l->bus->name, link_name(l));
    for (char *p = name; *p; p++)
        if (*p <= ' ' || *p > '~')
            *p = '_';
    redisAsyncCommand(l->ac, NULL, NULL, "CLIENT SETNAME %s", name);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct link *l = cac->data;
    if (!l)
        return; /* closed by link_close */
    evtimer_del(l->timer);
    if (status != REDIS_OK) {
        LOG(WARN, "redis_connect_failed", "bus=%s link=%s err=\"%s\"",
            l->bus->name, link_name(l), cac->errstr);
        l->ac = NULL; /* hiredis frees it after this callback */
        l->state = LINK_DOWN;
        schedule_retry(l);
        return;
    }
    redisEnableKeepAlive((redisContext *)&cac->c);
    l->state = LINK_UP;
    l->attempt = 0;
    l->up_since_ms = util_mono_ms();
    if (l->ever_up)
        l->bus->stats.reconnects++;
    l->ever_up = true;
    LOG(INFO, "redis_connected", "bus=%s link=%s", l->bus->name, link_name(l));
    send_auth(l);
    send_name(l);
    if (!l->is_sub)
        for (size_t i = 0; i < l->bus->nscripts; i++)
            script_load(l->bus, l->bus->scripts[i]);
    if (l->is_sub) {
        l->bus->hb_last_rx_ms = util_mono_ms();
        resubscribe_all(l->bus);
    }
    notify_state(l->bus);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct link *l = cac->data;
    if (!l)
        return;
    LOG(WARN, "redis_disconnected", "bus=%s link=%s err=\"%s\"", l->bus->name,
        link_name(l), status == REDIS_OK ? "closed" : cac->errstr);
    l->ac = NULL;
    l->state = LINK_DOWN;
    schedule_retry(l);
    notify_state(l->bus);
}

static void link_connect(struct link *l)
{
    struct bus *bus = l->bus;
    redisAsyncContext *ac = redisAsyncConnect(bus->host, bus->port);
    if (!ac || ac->err) {
        LOG(WARN, "redis_connect_failed", "bus=%s link=%s err=\"%s\"",
            bus->name, link_name(l), ac ? ac->errstr : "oom");
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

static void link_init(struct bus *bus, struct link *l, bool is_sub)
{
    memset(l, 0, sizeof(*l));
    l->bus = bus;
    l->is_sub = is_sub;
    l->timer = evtimer_new(bus->base, retry_cb, l);
}

static void link_close(struct link *l)
{
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        l->state = LINK_DOWN;
        /* No callback may touch the link (or re-arm its timer) from here on:
         * the bus is going away. */
        ac->data = NULL;
        redisAsyncSetDisconnectCallback(ac, NULL);
        redisAsyncFree(ac);
    }
    event_free(l->timer);
    l->timer = NULL;
}

/* ---- subscriptions ----------------------------------------------------- */

static void on_heartbeat(struct bus *bus, const char *payload, size_t len)
{
    char buf[32];
    if (len >= sizeof(buf))
        return;
    memcpy(buf, payload, len);
    buf[len] = '\0';
    int64_t sent = strtoll(buf, NULL, 10);
    int64_t now = util_mono_ms();
    bus->hb_last_rx_ms = now;
    if (sent > 0 && sent <= now)
        bus->stats.last_roundtrip_ms = now - sent;
}

static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct bus *bus = privdata;
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
        if (strcmp(channel, bus->hb_channel) == 0) {
            on_heartbeat(bus, p->str, p->len);
            return;
        }
        /* Even on a channel being unsubscribed: Redis counted this message
         * as received, so its publisher waits for what the owner does with
         * it (a stopping worker answers a login, say). */
        bus->stats.received++;
        bus->on_msg(bus->owner, channel, p->str, p->len);
    } else if (strcasecmp(kind, "unsubscribe") == 0) {
        enum sub_state st = (enum sub_state)(uintptr_t)strmap_get(&bus->subs, channel);
        if (st == SUB_UNSUB_PENDING) {
            strmap_del(&bus->subs, channel);
        } else if (st == SUB_RESUB && bus->sub.state == LINK_UP) {
            /* Now that hiredis dropped its callback for the channel, the
             * new SUBSCRIBE registers a fresh one. */
            strmap_put(&bus->subs, channel, (void *)(uintptr_t)SUB_ACTIVE);
            redisAsyncCommand(bus->sub.ac, sub_cb, bus, "SUBSCRIBE %s", channel);
        }
    }
}

void bus_subscribe(struct bus *bus, const char *channel)
{
    enum sub_state st = (enum sub_state)(uintptr_t)strmap_get(&bus->subs, channel);
    if (st == SUB_ACTIVE || st == SUB_RESUB)
        return;
    if (st == SUB_UNSUB_PENDING) {
        strmap_put(&bus->subs, channel, (void *)(uintptr_t)SUB_RESUB);
        return;
    }
    strmap_put(&bus->subs, channel, (void *)(uintptr_t)SUB_ACTIVE);
    if (bus->sub.state == LINK_UP)
        redisAsyncCommand(bus->sub.ac, sub_cb, bus, "SUBSCRIBE %s", channel);
}

void bus_unsubscribe(struct bus *bus, const char *channel)
{
    enum sub_state st = (enum sub_state)(uintptr_t)strmap_get(&bus->subs, channel);
    if (st == SUB_RESUB) {
        strmap_put(&bus->subs, channel, (void *)(uintptr_t)SUB_UNSUB_PENDING);
        return;
    }
    if (st != SUB_ACTIVE)
        return;
    if (bus->sub.state != LINK_UP) {
        strmap_del(&bus->subs, channel); /* resubscribe will skip it */
        return;
    }
    strmap_put(&bus->subs, channel, (void *)(uintptr_t)SUB_UNSUB_PENDING);
    redisAsyncCommand(bus->sub.ac, sub_cb, bus, "UNSUBSCRIBE %s", channel);
}

/* ---- commands ---------------------------------------------------------- */

static void cmd_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *r = privdata;
    struct bus *bus = r->bus;
    redisReply *rep = reply;
    if (r->script && rep && rep->type == REDIS_REPLY_ERROR &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0 && bus->cmd.state == LINK_UP) {
        /* Redis forgot the script (SCRIPT FLUSH): load it, then the call
         * again, once; commands behind it on the link may run first. */
        LOG(WARN, "redis_noscript", "bus=%s sha=%s", bus->name, r->script->sha);
        struct bus_script *s = r->script;
        r->script = NULL;
        redisAsyncCommand(bus->cmd.ac, NULL, NULL, "SCRIPT LOAD %s", s->text);
        if (redisAsyncFormattedCommand(bus->cmd.ac, cmd_cb, r, r->cmd, r->cmdlen) == REDIS_OK)
            return;
        rep = NULL;
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
    free(r->cmd);
    free(r);
}

static struct req *req_new(struct bus *bus, bus_reply_cb *cb, void *data,
                           bool is_publish)
{
    struct req *r = xcalloc(1, sizeof(*r));
    r->bus = bus;
    r->cb = cb;
    r->data = data;
    r->is_publish = is_publish;
    return r;
}

void bus_command_argv(struct bus *bus, bus_reply_cb *cb, void *data, int argc,
                      const char **argv, const size_t *argvlen)
{
    struct req *r = req_new(bus, cb, data, false);
    if (bus->cmd.state != LINK_UP ||
        redisAsyncCommandArgv(bus->cmd.ac, cmd_cb, r, argc, argv, argvlen) !=
            REDIS_OK)
        defer_failure(r);
}

static void script_load(struct bus *bus, const struct bus_script *s)
{
    redisAsyncCommand(bus->cmd.ac, NULL, NULL, "SCRIPT LOAD %s", s->text);
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
        if (bus->cmd.state == LINK_UP)
            script_load(bus, s);
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
    struct req *r = req_new(bus, cb, data, false);
    r->script = script;
    int n = redisFormatCommandArgv(&r->cmd, argc + 2, v, l);
    if (heap) {
        free(v);
        free(l);
    }
    r->cmdlen = n > 0 ? (size_t)n : 0;
    if (n <= 0 || bus->cmd.state != LINK_UP ||
        redisAsyncFormattedCommand(bus->cmd.ac, cmd_cb, r, r->cmd, r->cmdlen) != REDIS_OK)
        defer_failure(r);
}

void bus_command(struct bus *bus, bus_reply_cb *cb, void *data,
                 const char *fmt, ...)
{
    struct req *r = req_new(bus, cb, data, false);
    va_list ap;
    va_start(ap, fmt);
    int rc = bus->cmd.state == LINK_UP
                 ? redisvAsyncCommand(bus->cmd.ac, cmd_cb, r, fmt, ap)
                 : REDIS_ERR;
    va_end(ap);
    if (rc != REDIS_OK)
        defer_failure(r);
}

void bus_publish(struct bus *bus, const char *channel, const char *payload,
                 size_t len, bus_reply_cb *cb, void *data)
{
    struct req *r = req_new(bus, cb, data, true);
    const char *argv[3] = {"PUBLISH", channel, payload};
    size_t argvlen[3] = {7, strlen(channel), len};
    if (bus->cmd.state != LINK_UP ||
        redisAsyncCommandArgv(bus->cmd.ac, cmd_cb, r, 3, argv, argvlen) !=
            REDIS_OK)
        defer_failure(r);
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
    if (bus->cmd.state == LINK_UP) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%lld", (long long)now);
        const char *argv[3] = {"PUBLISH", bus->hb_channel, buf};
        size_t argvlen[3] = {7, strlen(bus->hb_channel), (size_t)n};
        redisAsyncCommandArgv(bus->cmd.ac, NULL, NULL, 3, argv, argvlen);
    }
    /* The heartbeat only proves anything when both links are up and the sub
     * link had time to subscribe. */
    if (bus->cmd.state == LINK_UP && bus->sub.state == LINK_UP &&
        now - bus->sub.up_since_ms > HEARTBEAT_DEAD_MS &&
        now - bus->cmd.up_since_ms > HEARTBEAT_DEAD_MS &&
        now - bus->hb_last_rx_ms > HEARTBEAT_DEAD_MS) {
        LOG(WARN, "redis_subscription_dead", "bus=%s silent_ms=%lld",
            bus->name, (long long)(now - bus->hb_last_rx_ms));
        bus->hb_last_rx_ms = now;
        redisAsyncDisconnect(bus->sub.ac);
    }
}

/* ---- lifecycle --------------------------------------------------------- */

struct bus *bus_new(struct event_base *base, const struct bus_opts *opts,
                    bus_msg_cb *on_msg, bus_state_cb *on_state, void *owner)
{
    struct bus *bus = xcalloc(1, sizeof(*bus));
    bus->base = base;
    bus->host = xstrdup(opts->host);
    bus->port = opts->port;
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
    snprintf(bus->hb_channel, sizeof(bus->hb_channel), "%s:bus:%s",
             bus->prefix, rnd);
    bus->deferred_ev = event_new(base, -1, 0, deferred_run, bus);
    bus->hb_timer = event_new(base, -1, EV_PERSIST, hb_timer_cb, bus);
    struct timeval hb = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    evtimer_add(bus->hb_timer, &hb);
    link_init(bus, &bus->cmd, false);
    link_init(bus, &bus->sub, true);
    link_connect(&bus->cmd);
    link_connect(&bus->sub);
    return bus;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    event_free(bus->hb_timer);
    bus->closing = true;
    link_close(&bus->sub);
    link_close(&bus->cmd); /* pending command callbacks run with NULL */
    deferred_run(-1, 0, bus); /* (owed publishes in flight end there) */
    while (bus->owed)
        owed_free(bus->owed); /* those waiting for their next send */
    event_free(bus->deferred_ev);
    strmap_free(&bus->subs);
    free(bus->host);
    free(bus->user);
    free(bus->password);
    free(bus->prefix);
    free(bus->name);
    free(bus);
}

bool bus_up(const struct bus *bus)
{
    return bus->cmd.state == LINK_UP && bus->sub.state == LINK_UP;
}

const char *bus_prefix(const struct bus *bus)
{
    return bus->prefix;
}

bool bus_channel(const struct bus *bus, char *out, size_t n, const char *kind,
                 const char *id)
{
    int len = snprintf(out, n, "%s:%s:%s", bus->prefix, kind, id);
    return len > 0 && (size_t)len < n;
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
    return bus_up(bus) ? util_mono_ms() - bus->hb_last_rx_ms : -1;
}
