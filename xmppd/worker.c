/* worker.c - one worker process: its event loop, its bus, its libstrophe
 * context driven from libevent, its entry in the live-worker registry and
 * the renewal of its sessions' leases. */
#include "bus.h"
#include "inbox.h"
#include "keys.h"
#include "jparse.h"
#include "jpool.h"
#include "lease.h"
#include "log.h"
#include "util.h"
#include "watchdog.h"
#include "xmppd.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/socket.h>

/* A libstrophe pass runs on every readable socket and after every send; a
 * backstop also runs it for timed handlers and for bytes OpenSSL buffered
 * (libstrophe reads one chunk per connection and pass). Those only matter
 * right after traffic or while sessions connect: then the backstop runs
 * every BACKSTOP_BUSY_MS, else every BACKSTOP_IDLE_MS. Each pass select()s
 * over every socket of the worker, so an idle worker polling every 20 ms
 * cost 0.05 cores per 1,000 sessions (docs/BENCHMARKS.md, section 6). */
#define BACKSTOP_BUSY_MS 20
#define BACKSTOP_IDLE_MS 1000
#define BUSY_FOR_MS 500
#define TICK_MS 1000
/* How long a registry entry stays valid without a refresh. */
#define REGISTRY_TTL_MS 5000

static struct worker *current;
void (*worker_reload_hook)(void);

static struct filter *the_filter;

struct filter *worker_filter(void)
{
    return the_filter;
}

/* (Re)load the message filter; on a fault the rules in force stay. */
static void filter_reload(const struct xmppd_cfg *cfg)
{
    if (!*cfg->filter_rules) {
        filter_free(the_filter);
        the_filter = NULL;
        return;
    }
    char err[512];
    struct filter *f = filter_load(cfg->filter_rules, err, sizeof(err));
    if (!f) {
        LOG(ERROR, "filter_rules_invalid", "err=\"%s\" kept=%s", err,
            the_filter ? "previous" : "none");
        return;
    }
    filter_free(the_filter);
    the_filter = f;
    LOG(INFO, "filter_rules_loaded", "file=%s rules=%zu", cfg->filter_rules,
        filter_rule_count(f));
}

struct worker *worker_current(void)
{
    return current;
}

void worker_kick(struct worker *w)
{
    w->busy_until_ms = util_mono_ms() + BUSY_FOR_MS;
    if (!w->backstop_busy) {
        /* An idle backstop may be a second away: what this traffic starts
         * (a TCP connect completing, bytes OpenSSL holds) needs passes now.
         * Without this, logins on an idle worker waited up to a second. */
        struct timeval tv = {0, BACKSTOP_BUSY_MS * 1000};
        evtimer_add(w->backstop, &tv);
        w->backstop_busy = true;
    }
    event_active(w->run_ev, EV_TIMEOUT, 0);
}

/* Publish e on each of the space-separated channels (modified); e is
 * freed. owed: resent until a subscriber got it (bus_publish_owed). */
static void publish_on(struct worker *w, char *channels, struct env *e, bool owed)
{
    if (!json_object_get(e->obj, "ts"))
        env_set_int(e, "ts", util_wall_ms());
    env_set_int(e, "pts", util_wall_ms()); /* publish time, for latency */
    size_t len;
    char *payload = env_encode(e, &len);
    for (char *p = channels, *end; *p; p = end) {
        end = p + strcspn(p, " ");
        if (*end)
            *end++ = '\0';
        if (owed)
            bus_publish_owed(w->bus, p, payload, len, WORKER_OWED_MS);
        else
            bus_publish(w->bus, p, payload, len, NULL, NULL);
    }
    free(payload);
    env_free(e);
}

void worker_publish(struct worker *w, const char *kind, const char *id,
                    struct env *e)
{
    char ch[1200];
    bus_channel(w->bus, ch, sizeof(ch), kind, id);
    publish_on(w, ch, e, true);
}

/* ---- to the phones: on the channels of the edges that hold them --------
 * An edge subscribes to one channel, "<prefix>:e:<edge>", however many
 * users it serves; an envelope names its user in "to". An answer to one
 * device ("edge" and "dev" set) goes to that device's edge alone, the rest
 * to each edge holding one of the session's devices or a login waiting
 * for it. With no phone
 * attached nothing is published: what is stored waits in the inbox for the
 * next login, and the rest was news for nobody. */

/* Append edge's channel to the space-separated list out, unless it is
 * there already (a user has a few devices: a linear search is right). */
static void add_edge(struct worker *w, char *out, size_t n, const char *edge,
                     size_t edge_len)
{
    char ch[200], id[80];
    if (edge_len == 0 || edge_len >= sizeof(id))
        return;
    memcpy(id, edge, edge_len);
    id[edge_len] = '\0';
    if (!bus_channel(w->bus, ch, sizeof(ch), "e", id))
        return;
    size_t chlen = strlen(ch);
    for (const char *p = out; *p;) {
        size_t len = strcspn(p, " ");
        if (len == chlen && memcmp(p, ch, len) == 0)
            return;
        p += len + (p[len] == ' ');
    }
    size_t used = strlen(out);
    if (used + (used > 0) + chlen + 1 > n) {
        LOG(WARN, "edges_truncated", "edge=%s", id);
        return;
    }
    if (used > 0)
        out[used++] = ' ';
    memcpy(out + used, ch, chlen + 1);
}

void worker_phone_channels(struct worker *w, const struct session *s,
                           const struct env *e, char *out, size_t n)
{
    out[0] = '\0';
    const char *edge = e ? env_str(e, "edge") : NULL;
    if (edge && env_str(e, "dev")) {
        add_edge(w, out, n, edge, strlen(edge));
        return;
    }
    if (!s)
        return;
    struct strmap_iter it;
    for (struct strmap_entry *d = strmap_first(&s->devices, &it); d;
         d = strmap_next(&s->devices, &it))
        add_edge(w, out, n, d->key, strcspn(d->key, "/")); /* "edge/dev" */
    /* And the phones whose login waits for the session: a session that
     * ends before answering them (a bridge stopping) must tell their
     * edges, which re-open it elsewhere. */
    for (const struct waiter *wt = s->waiters; wt; wt = wt->next)
        add_edge(w, out, n, wt->edge, strlen(wt->edge));
}

void worker_to_phones(struct worker *w, const struct session *s, struct env *e,
                      bool owed)
{
    char chans[WORKER_CHANNELS_MAX];
    worker_phone_channels(w, s, e, chans, sizeof(chans));
    if (chans[0])
        publish_on(w, chans, e, owed);
    else
        env_free(e);
}

void worker_error(struct worker *w, const char *jid, const char *edge,
                  const char *dev, const char *id, const char *code,
                  const char *reason, const char *msg)
{
    struct env *e = env_new(ENV_ERROR);
    env_set_str(e, "to", jid);
    env_set_str(e, "code", code);
    env_set_str(e, "msg", msg);
    if (reason)
        env_set_str(e, "reason", reason);
    if (id && *id)
        env_set_str(e, "id", id);
    if (edge && dev && *edge && *dev) {
        env_set_str(e, "edge", edge);
        env_set_str(e, "dev", dev);
    }
    worker_to_phones(w, strmap_get(&w->sessions, jid), e, true);
}

/* ---- delivery to phones: through the inbox, retried while Redis is away -- */

#define REDELIVER_MAX 100000
#define REDELIVER_MS 500

static void deliver_payload(struct worker *w, struct pending_delivery *pd);
static void pending_free(struct pending_delivery *pd);

/* A stored delivery joins the ring of recent ones (the oldest goes). */
static void keep_recent(struct worker *w, struct pending_delivery *pd)
{
    struct pending_delivery **slot = &w->recent[w->recent_next];
    if (*slot)
        pending_free(*slot);
    *slot = pd;
    pd->next = NULL;
    free(pd->push); /* a second copy never pushes */
    pd->push = NULL;
    w->recent_next = (w->recent_next + 1) % WORKER_RECENT;
}

/* A copy of a stored delivery to store again: no push, any epoch. */
static struct pending_delivery *pending_copy(const struct pending_delivery *pd)
{
    struct pending_delivery *c = xcalloc(1, sizeof(*c));
    c->jid = xstrdup(pd->jid);
    c->payload = xstrndup(pd->payload, pd->len);
    c->len = pd->len;
    c->aid = pd->aid ? xstrdup(pd->aid) : NULL;
    c->rr_to = pd->rr_to ? xstrdup(pd->rr_to) : NULL;
    c->rr_id = pd->rr_id ? xstrdup(pd->rr_id) : NULL;
    memcpy(c->holder, pd->holder, sizeof(c->holder));
    return c;
}

/* The numbering lost (an epoch Redis no longer has: a restart without
 * persistence, keys evicted or deleted) took with it what was stored in it
 * lately, perhaps before any phone got it (Redis does not flush what it was
 * sending to subscribers when it stops; phones that were away had only the
 * inbox). Store s's recent deliveries of that epoch again, first, in the new
 * numbering; phones learn of it (sync reset) and drop by id what they
 * already have. */
static void restore_recent(struct worker *w, struct session *s, const char *lost)
{
    if (!lost[0] || !strcmp(s->epoch_lost, lost))
        return; /* done already (one call per delivery that found it lost) */
    size_t again = 0;
    for (size_t i = 0; i < WORKER_RECENT; i++) {
        const struct pending_delivery *old = w->recent[(w->recent_next + i) % WORKER_RECENT];
        if (old && !strcmp(old->jid, s->jid) && !strcmp(old->epoch, lost)) {
            deliver_payload(w, pending_copy(old));
            again++;
        }
    }
    session_receipts_forget(s); /* their seqs are void; stored again, they
                                   come back with new ones */
    w->stats.numbering_lost++;
    LOG(WARN, "numbering_lost", "jid=%s epoch=%s stored_again=%zu", s->jid, lost, again);
    memcpy(s->epoch_lost, lost, sizeof(s->epoch_lost));
    s->epoch[0] = '\0';
    s->seq_high = 0;
}

/* pd was refused for going into a numbering Redis no longer has: what went
 * with it first, then pd, in a new one. */
static void numbering_lost(struct worker *w, struct pending_delivery *pd)
{
    struct session *s = strmap_get(&w->sessions, pd->jid);
    if (s)
        restore_recent(w, s, pd->epoch);
    pd->epoch[0] = '\0';
    deliver_payload(w, pd);
}

/* After the bus came back: a user's numbering that Redis lost meanwhile is
 * found now, not only at the user's next message (there may be none). */
static void on_epoch_checked(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || !s->epoch[0] || !r || (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_STRING))
        return;
    if (r->type == REDIS_REPLY_NIL || strcmp(r->str, s->epoch) != 0) {
        char lost[INBOX_EPOCH_MAX];
        memcpy(lost, s->epoch, sizeof(lost));
        restore_recent(w, s, lost);
    }
}

static void check_numbering(struct worker *w)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it)) {
        struct session *s = e->value;
        if (s->epoch[0])
            inbox_epoch(w->bus, s->jid, on_epoch_checked, xstrdup(s->jid));
    }
}

static void pending_free(struct pending_delivery *pd)
{
    free(pd->jid);
    free(pd->payload);
    free(pd->push);
    free(pd->aid);
    free(pd->rr_to);
    free(pd->rr_id);
    free(pd);
}

/* One script call: up to INBOX_BATCH_MAX deliveries for one user, in order. */
struct delivery_batch {
    size_t n;
    struct pending_delivery *pd[INBOX_BATCH_MAX];
};

/* Redis is away (or refused the script): keep pd, in order, for later. */
static void redeliver_later(struct worker *w, struct pending_delivery *pd,
                            const redisReply *r)
{
    if (w->nredeliver >= REDELIVER_MAX) {
        w->stats.delivery_dropped++;
        LOG(ERROR, "delivery_dropped", "jid=%s reason=\"retry queue full\"", pd->jid);
        pending_free(pd);
        return;
    }
    if (r && r->type == REDIS_REPLY_ERROR)
        LOG(ERROR, "delivery_failed", "jid=%s err=\"%s\"", pd->jid, r->str);
    w->stats.delivery_retries++;
    pd->next = NULL;
    if (w->redeliver_tail)
        w->redeliver_tail->next = pd;
    else
        w->redeliver = pd;
    w->redeliver_tail = pd;
    w->nredeliver++;
    if (!evtimer_pending(w->redeliver_timer, NULL)) {
        struct timeval tv = {0, REDELIVER_MS * 1000};
        evtimer_add(w->redeliver_timer, &tv);
    }
}

static void relay(struct worker *w, const char *jid, json_t *obj, bool handover);

/* Hand pd to whichever worker owns its user now (the lease names it). */
static void hand_over(struct worker *w, const struct pending_delivery *pd)
{
    json_t *inner = json_loadb(pd->payload, pd->len, 0, NULL);
    if (!inner || pd->hops >= WORKER_HANDOVER_HOPS) {
        LOG(WARN, "delivery_dropped", "jid=%s reason=\"refused %d times\"", pd->jid,
            pd->hops + 1);
        w->stats.delivery_dropped++;
        json_decref(inner);
        return;
    }
    struct env *e = env_new(ENV_HANDOVER);
    env_set_str(e, "from", pd->jid); /* (the user it is for) */
    env_set_json(e, "env", inner);
    env_set_int(e, "hops", pd->hops + 1);
    w->stats.handed_over++;
    relay(w, pd->jid, json_incref(e->obj), true);
    env_free(e);
}

static void on_delivered(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    struct delivery_batch *b = data;
    struct pending_delivery *pd0 = b->pd[0];
    int64_t first = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
                            r->element[0]->type == REDIS_REPLY_INTEGER
                        ? r->element[0]->integer
                        : 0;
    if (first == -1) {
        /* Fenced: another worker holds the user now (this one was frozen or
         * cut off). The owner may not have these (its XMPP session was not
         * up yet when the server sent them here, or Redis lost what this one
         * stored before): hand them over; it drops what it has already. */
        w->stats.delivery_fenced += b->n;
        LOG(WARN, "delivery_fenced", "jid=%s holder=\"%s\" n=%zu", pd0->jid, pd0->holder,
            b->n);
        session_fenced(w, pd0->jid, pd0->holder);
        const char *gone = r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING
                               ? r->element[2]->str
                               : "";
        struct session *s = strmap_get(&w->sessions, pd0->jid);
        if (*gone && s && pd0->epoch[0]) {
            /* The numbering this worker stored under went with its lease
             * (Redis restarted empty, or came back older, while it was cut
             * off): what it stored lately in it goes to the owner first
             * (stored again, fenced again, handed over), these after it, so
             * a phone sees them in order. */
            restore_recent(w, s, pd0->epoch);
            for (size_t i = 0; i < b->n; i++) {
                b->pd[i]->epoch[0] = '\0';
                deliver_payload(w, b->pd[i]);
            }
        } else {
            for (size_t i = 0; i < b->n; i++) {
                hand_over(w, b->pd[i]);
                pending_free(b->pd[i]);
            }
        }
    } else if (first == -2) {
        if (r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING &&
            !strcmp(r->element[2]->str, "back") && r->element[1]->type == REDIS_REPLY_INTEGER) {
            /* The counter went back under what this worker stored: Redis
             * came back with an older copy. The script moved the user to a
             * new epoch; what went with the old one is stored again. */
            struct session *s = strmap_get(&w->sessions, pd0->jid);
            LOG(WARN, "numbering_went_back", "jid=%s epoch=%s seq=%lld stored=%lld", pd0->jid,
                pd0->epoch, r->element[1]->integer, s ? (long long)s->seq_high : -1LL);
        }
        for (size_t i = 0; i < b->n; i++)
            numbering_lost(w, b->pd[i]);
    } else if (first > 0 && r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING &&
               r->element[2]->len < INBOX_EPOCH_MAX) {
        LOG(DEBUG, "delivered", "jid=%s seq=%lld n=%zu receivers=%lld", pd0->jid,
            (long long)first, b->n, r->element[1]->integer);
        struct session *s = strmap_get(&w->sessions, pd0->jid);
        for (size_t i = 0; i < b->n; i++) {
            struct pending_delivery *pd = b->pd[i];
            memcpy(pd->epoch, r->element[2]->str, r->element[2]->len + 1);
            if (s && pd->rr_to)
                session_receipt_owed(s, first + (int64_t)i, pd->rr_to, pd->rr_id);
            keep_recent(w, pd);
        }
        if (s) {
            if (strcmp(s->epoch, pd0->epoch) != 0)
                s->seq_high = 0;
            memcpy(s->epoch, pd0->epoch, sizeof(s->epoch));
            if (first + (int64_t)b->n - 1 > s->seq_high)
                s->seq_high = first + (int64_t)b->n - 1;
        }
    } else {
        for (size_t i = 0; i < b->n; i++)
            redeliver_later(w, b->pd[i], r);
    }
    free(b);
}

static bool same_call(const struct pending_delivery *a, const struct pending_delivery *b)
{
    return !strcmp(a->jid, b->jid) && !strcmp(a->holder, b->holder) &&
           !strcmp(a->epoch, b->epoch);
}

/* Send one batch: the first delivery of list for its user, and those after
 * it for the same user, holder and numbering (up to INBOX_BATCH_MAX; never
 * past one that differs, so each user's order holds). Returns the list
 * without them. */
static struct pending_delivery *send_batch(struct worker *w, struct pending_delivery *list)
{
    struct delivery_batch *b = xcalloc(1, sizeof(*b));
    struct inbox_item items[INBOX_BATCH_MAX];
    const char *aid = NULL;
    struct pending_delivery **link = &list;
    struct pending_delivery *head = list;
    /* (A bounded look ahead: the rest for the user goes in a later call,
     * still in order on the one link.) */
    for (size_t looked = 0; *link && b->n < INBOX_BATCH_MAX && looked < 4 * INBOX_BATCH_MAX;
         looked++) {
        struct pending_delivery *pd = *link;
        if (pd != head && strcmp(pd->jid, head->jid) != 0) {
            link = &pd->next;
            continue;
        }
        if (pd != head && !same_call(pd, head))
            break;
        *link = pd->next;
        pd->next = NULL;
        items[b->n] = (struct inbox_item){pd->payload, pd->len, pd->push, pd->rr_to != NULL};
        if (pd->aid)
            aid = pd->aid;
        b->pd[b->n++] = pd;
    }
    char chans[WORKER_CHANNELS_MAX];
    struct session *s = strmap_get(&w->sessions, head->jid);
    worker_phone_channels(w, s, NULL, chans, sizeof(chans));
    /* The highest seq the session stored in this numbering: a counter found
     * below it went back (inbox_deliver). */
    int64_t stored = s && head->epoch[0] && !strcmp(s->epoch, head->epoch) ? s->seq_high : 0;
    inbox_deliver(w->bus, head->jid, head->holder, head->epoch, chans, stored, items, b->n,
                  aid, w->cfg->inbox_ttl * 1000, w->cfg->inbox_max, on_delivered, b);
    return list;
}

/* The end of a loop turn: what it delivered goes to Redis, one call per
 * user (a burst of messages costs Redis one script run, not one each). */
static void flush_deliveries(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct pending_delivery *list = w->outq;
    w->outq = w->outq_tail = NULL;
    while (list)
        list = send_batch(w, list);
}

static void deliver_payload(struct worker *w, struct pending_delivery *pd)
{
    pd->next = NULL;
    if (w->outq_tail)
        w->outq_tail->next = pd;
    else {
        w->outq = pd;
        event_active(w->flush_ev, EV_TIMEOUT, 0);
    }
    w->outq_tail = pd;
}

static void redeliver_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (!bus_up(w->bus)) {
        struct timeval tv = {0, REDELIVER_MS * 1000};
        evtimer_add(w->redeliver_timer, &tv);
        return;
    }
    struct pending_delivery *pd = w->redeliver;
    w->redeliver = w->redeliver_tail = NULL;
    w->nredeliver = 0;
    while (pd) {
        struct pending_delivery *next = pd->next;
        deliver_payload(w, pd);
        pd = next;
    }
}

static void deliver_env(struct session *s, struct env *e, json_t *push, int hops)
{
    struct worker *w = s->w;
    const char *jid = s->jid;
    if (!json_object_get(e->obj, "ts"))
        env_set_int(e, "ts", util_wall_ms());
    env_set_int(e, "pts", util_wall_ms());
    struct pending_delivery *pd = xcalloc(1, sizeof(*pd));
    pd->jid = xstrdup(jid);
    pd->hops = hops;
    lease_holder(pd->holder, w->id, s->token);
    memcpy(pd->epoch, s->epoch, sizeof(pd->epoch));
    pd->payload = env_encode(e, &pd->len);
    const char *aid = env_str(e, "aid");
    pd->aid = aid && *aid ? xstrdup(aid) : NULL;
    if (json_is_true(env_json(e, "rr")) && env_str(e, "id")) {
        pd->rr_to = xstrdup(env_str(e, "from"));
        pd->rr_id = xstrdup(env_str(e, "id"));
    }
    env_free(e);
    if (push) {
        pd->push = json_dumps(push, JSON_COMPACT);
        json_decref(push);
    }
    if (w->redeliver) {
        /* Older messages wait for Redis: queue behind them, keep order. */
        w->redeliver_tail->next = pd;
        w->redeliver_tail = pd;
        w->nredeliver++;
        return;
    }
    deliver_payload(w, pd);
}

void worker_deliver(struct session *s, struct env *e, json_t *push)
{
    deliver_env(s, e, push, 0);
}

void worker_deliver_handed(struct session *s, struct env *e, int hops)
{
    deliver_env(s, e, NULL, hops);
}

static void run_pass(evutil_socket_t fd, short what, void *arg);

/* A worker that went quiet gives back what the last burst left: the pool's
 * free lists (jpool.h) and glibc's free pages, at most every TRIM_EVERY_MS
 * so that light traffic does not walk the heap again and again. So does a
 * worker whose tick put idle sessions' parsers to sleep (xmlbuf.c). */
#define TRIM_EVERY_MS 5000

static void on_backstop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    run_pass(fd, what, w);
    int64_t now = util_mono_ms();
    bool busy = w->connecting > 0 || now < w->busy_until_ms;
    if (!busy && (w->backstop_busy || w->trim_due) &&
        now - w->trimmed_ms >= TRIM_EVERY_MS) {
        w->trimmed_ms = now;
        w->trim_due = false;
        jpool_trim();
#ifdef __GLIBC__
        malloc_trim(0);
#endif
    }
    w->backstop_busy = busy;
    int ms = busy ? BACKSTOP_BUSY_MS : BACKSTOP_IDLE_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->backstop, &tv);
}

/* A phone's message is acked once a ping sent after it is answered
 * (session_flush_acks): one ping covers what the session sent since its
 * last. A worker sends its sessions' pings in rounds at most ping_delay_ms
 * apart, so a busy session costs the XMPP server (and the worker) one ping
 * per round, not one per message; a message after a quiet spell is pinged
 * at once. Only the phone's ack waits, never the message. A stopping worker
 * pings at once. Whether a round is due now; if not, the timer is set. */
static bool pings_due(struct worker *w)
{
    int64_t wait = w->pings_due_ms - util_mono_ms();
    if (wait <= 0 || w->stopping)
        return true;
    if (!evtimer_pending(w->ping_timer, NULL)) {
        struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
        evtimer_add(w->ping_timer, &tv);
    }
    return false;
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    worker_kick(arg);
}

static void run_pass(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->flush && pings_due(w) && session_flush_acks(w) > 0)
        w->pings_due_ms = util_mono_ms() + w->cfg->ping_delay_ms;
    worker_flush_out(w); /* (the pings after what they vouch for) */
    /* Before libstrophe may read the server's first bytes (and the only
     * readable event): note which connecting sockets have a peer. */
    session_check_connecting(w);
    watchdog_enter();
    xmpp_run_once(w->ctx, 0);
    session_check_connecting(w);
    watchdog_leave();
    /* Only now, outside every libstrophe callback, free closed sessions. */
    for (size_t i = 0; i < w->ngrave; i++)
        session_free(w->graveyard[i]);
    w->ngrave = 0;
    if (w->flush && pings_due(w))
        worker_kick(w);
}

/* ---- bus ---------------------------------------------------------------- */

/* An envelope for a user nobody holds (its session closed while the
 * envelope was on its way): a chat or a request the phone waits an answer
 * for gets an error; the rest needs none. */
static void answer_orphan(struct worker *w, const struct env *e)
{
    if ((e->type != ENV_CHAT && e->type != ENV_REQ) || !env_str(e, "edge") ||
        !env_str(e, "dev"))
        return;
    json_t *frame = json_object_get(e->obj, "frame");
    const char *t = json_string_value(json_object_get(frame, "t"));
    const char *id = e->type == ENV_CHAT ? env_str(e, "id")
                                         : json_string_value(json_object_get(frame, "id"));
    /* ("read" names the message read, not itself: nothing waits.) */
    if (e->type == ENV_REQ && (!id || (t && strcmp(t, "read") == 0)))
        return;
    worker_error(w, env_str(e, "from"), env_str(e, "edge"), env_str(e, "dev"), id,
                 "unavailable", NULL, "the XMPP session is not up, log in again");
}

/* ---- to the holder: what reached a worker that does not hold the user ---
 * Edges send what a phone has for its session to the worker that answered
 * its login (w:<worker>). When the user moved (the worker stopped, was
 * frozen past its lease, or lost it), what still comes here goes on to the
 * worker the user's lease names, and that worker tells the phone's edge
 * where the session is now (a login_ok the edge takes as a move). A fenced
 * delivery takes the same way as a handover. Nobody holding the user: an
 * orphan is answered at once (the phone sends again after its edge
 * re-opened the session), a handover waits a while for a holder. */

#define RELAY_HOPS 2          /* an envelope is passed on at most this often */
#define RELAY_RETRY_MS 500    /* a handover's next look for a holder */
#define RELAY_ATTEMPTS 20     /* ... for up to 10 s */

struct relay {
    struct relay *prev, *next; /* in w->relays */
    struct worker *w;
    char *jid;
    json_t *obj;           /* the envelope (owned), "fwd" = hops so far */
    bool handover;         /* a fenced delivery, else an orphan */
    bool in_flight;        /* a GET or a PUBLISH is on its way */
    int attempts;
    int64_t next_ms;       /* monotonic: when to look again */
};

static void relay_free(struct relay *r)
{
    struct worker *w = r->w;
    if (r->prev)
        r->prev->next = r->next;
    else if (w->relays == r)
        w->relays = r->next;
    if (r->next)
        r->next->prev = r->prev;
    json_decref(r->obj);
    free(r->jid);
    free(r);
}

/* Nobody took it: an orphan is answered, a handover tried again later. */
static void relay_missed(struct relay *r)
{
    struct worker *w = r->w;
    r->in_flight = false;
    if (r->handover && ++r->attempts < RELAY_ATTEMPTS) {
        r->next_ms = util_mono_ms() + RELAY_RETRY_MS;
        if (!evtimer_pending(w->relay_timer, NULL)) {
            struct timeval tv = {0, RELAY_RETRY_MS * 1000};
            evtimer_add(w->relay_timer, &tv);
        }
        return;
    }
    if (r->handover) {
        w->stats.delivery_dropped++;
        LOG(WARN, "delivery_dropped", "jid=%s reason=\"no worker holds the user\"", r->jid);
    } else {
        char err[256];
        struct env *e = env_check(json_incref(r->obj), err, sizeof(err));
        if (e) {
            answer_orphan(w, e);
            env_free(e);
        }
    }
    relay_free(r);
}

static void on_relayed(void *owner, void *data, redisReply *reply)
{
    struct relay *r = data;
    if (!r)
        return;
    if (r->w->closing) {
        relay_free(r);
        return;
    }
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        r->w->stats.relayed++;
        relay_free(r);
        return;
    }
    relay_missed(r);
}

static void on_holder(void *owner, void *data, redisReply *reply)
{
    struct relay *r = data;
    if (!r)
        return;
    struct worker *w = r->w;
    if (w->closing) { /* the bus is being freed: its last answers */
        relay_free(r);
        return;
    }
    char who[LEASE_HOLDER_MAX] = "";
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len < sizeof(who)) {
        size_t n = strcspn(reply->str, " "); /* "<owner> <token>" */
        memcpy(who, reply->str, n);
        who[n] = '\0';
    }
    if (!who[0] || strcmp(who, w->id) == 0) {
        relay_missed(r);
        return;
    }
    char ch[200];
    json_t *fwd = json_object_get(r->obj, "fwd");
    json_object_set_new(r->obj, "fwd",
                        json_integer(json_is_integer(fwd) ? json_integer_value(fwd) + 1 : 1));
    char *payload = json_dumps(r->obj, JSON_COMPACT);
    if (!payload || !bus_channel(w->bus, ch, sizeof(ch), "w", who)) {
        free(payload);
        relay_missed(r);
        return;
    }
    LOG(DEBUG, "relayed", "jid=%s to=%s handover=%d", r->jid, who, r->handover);
    bus_publish(w->bus, ch, payload, strlen(payload), on_relayed, r);
    free(payload);
}

static void relay_try(struct relay *r)
{
    char lease[KEYS_MAX], fence[KEYS_MAX];
    lease_keys(r->w->bus, r->jid, lease, fence, sizeof(lease));
    r->in_flight = true;
    bus_command(r->w->bus, on_holder, r, "GET %s", lease);
}

static void relay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    int64_t now = util_mono_ms();
    bool waiting = false;
    for (struct relay *r = w->relays; r; r = r->next) {
        if (r->in_flight)
            continue;
        if (r->next_ms <= now)
            relay_try(r);
        else
            waiting = true;
    }
    if (waiting) {
        struct timeval tv = {0, RELAY_RETRY_MS * 1000};
        evtimer_add(w->relay_timer, &tv);
    }
}

/* Send obj (owned) on to jid's holder. */
static void relay(struct worker *w, const char *jid, json_t *obj, bool handover)
{
    json_t *fwd = json_object_get(obj, "fwd");
    struct relay *r = xcalloc(1, sizeof(*r));
    r->w = w;
    r->jid = xstrdup(jid);
    r->obj = obj;
    r->handover = handover;
    r->next = w->relays;
    if (w->relays)
        w->relays->prev = r;
    w->relays = r;
    if (json_is_integer(fwd) && json_integer_value(fwd) >= RELAY_HOPS) {
        r->attempts = RELAY_ATTEMPTS; /* passed on often enough: give up */
        relay_missed(r);
        return;
    }
    relay_try(r);
}

static void relays_free(struct worker *w)
{
    while (w->relays)
        relay_free(w->relays);
}

/* ---- bus ---------------------------------------------------------------- */

/* A login's answer telling the phone's edge which worker holds the session
 * now: an envelope relayed here came through a worker the user left. */
static void tell_edge_where(struct worker *w, const struct session *s, const struct env *e)
{
    const char *edge = env_str(e, "edge"), *dev = env_str(e, "dev");
    if (!edge || !dev || !json_object_get(e->obj, "fwd"))
        return;
    struct env *r = env_new(ENV_LOGIN_OK);
    env_set_str(r, "jid", s->jid);
    env_set_str(r, "edge", edge);
    env_set_str(r, "dev", dev);
    env_set_str(r, "worker", w->id);
    char tok[SEAL_TOKEN_HEX + 1];
    seal_token_hex(s->resume, tok);
    env_set_str(r, "resume_token", tok);
    worker_publish(w, "e", edge, r);
}

/* A login on this worker's channel. */
static void dispatch_login(struct worker *w, const char *channel, struct env *e,
                           const char *payload, size_t len)
{
    struct session *s = strmap_get(&w->sessions, env_str(e, "jid"));
    if (s && session_defer(s, channel, payload, len))
        return; /* run once the lease is known to be ours */
    if (!w->stopping) {
        session_on_login(w, e, payload, len);
        return;
    }
    /* Stopping: the edge tries another worker after a moment. */
    struct env *r = env_new(ENV_LOGIN_FAIL);
    env_set_str(r, "jid", env_str(e, "jid"));
    env_set_str(r, "edge", env_str(e, "edge"));
    env_set_str(r, "dev", env_str(e, "dev"));
    env_set_str(r, "code", "unavailable");
    env_set_str(r, "msg", "this bridge is stopping, retry");
    worker_publish(w, "e", env_str(e, "edge"), r);
}

/* One envelope off this worker's channel: a login, or something for the
 * session of the user in "from" (what phones send, an ack script's news,
 * a handover). payload: its text, or NULL when it came in an array (then
 * encoded again only if it must wait). */
static void dispatch_env(struct worker *w, const char *channel, struct env *e,
                         const char *payload, size_t len)
{
    if (e->type == ENV_LOGIN) {
        char *own = payload ? NULL : json_dumps(e->obj, JSON_COMPACT);
        if (payload || own)
            dispatch_login(w, channel, e, payload ? payload : own,
                           payload ? len : strlen(own));
        free(own);
        return;
    }
    const char *jid = env_str(e, "from");
    if (!jid || (e->type != ENV_CHAT && e->type != ENV_REQ && e->type != ENV_LOGOUT &&
                 e->type != ENV_DETACH && e->type != ENV_ACKED && e->type != ENV_HANDOVER)) {
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_unexpected", "channel=%s type=%s", channel,
            env_type_name(e->type));
        return;
    }
    struct session *s = strmap_get(&w->sessions, jid);
    if (!s || s->lease_lost) { /* (one that lost the user is closing) */
        relay(w, jid, json_incref(e->obj), e->type == ENV_HANDOVER);
        return;
    }
    if (session_must_defer(s)) {
        char *own = payload ? NULL : json_dumps(e->obj, JSON_COMPACT);
        if (payload || own) {
            session_defer(s, channel, payload ? payload : own, payload ? len : strlen(own));
            free(own);
            return; /* run once the lease is known to be ours */
        }
    }
    tell_edge_where(w, s, e);
    session_on_env(s, e);
}

/* Several envelopes in one PUBLISH (an edge's frames of one loop turn, for
 * any of the users it serves): handled one by one, in order. */
static void dispatch_batch(struct worker *w, const char *channel, const char *payload,
                           size_t len)
{
    char why[160] = "not an array of envelopes";
    json_t *all = jparse(payload, len, why, sizeof(why));
    if (!json_is_array(all)) {
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_invalid", "channel=%s err=\"%s\"", channel, why);
        json_decref(all);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
        char err[256];
        struct env *e = env_check(json_incref(v), err, sizeof(err));
        if (!e) {
            w->stats.bad_envelopes++;
            LOG(WARN, "envelope_invalid", "channel=%s err=\"%s\"", channel, err);
            continue;
        }
        int64_t pts = env_int(e, "pts", -1);
        if (pts > 0)
            metrics_hist_observe(&w->latency, (double)(util_wall_ms() - pts));
        dispatch_env(w, channel, e, NULL, 0);
        env_free(e);
    }
    json_decref(all);
}

void worker_dispatch(struct worker *w, const char *channel, const char *payload,
                     size_t len)
{
    if (strcmp(channel, w->channel) != 0) {
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_unexpected", "channel=%s", channel);
        return;
    }
    if (len > 0 && payload[0] == '[') {
        dispatch_batch(w, channel, payload, len);
        return;
    }
    struct env *e = bus_envelope(channel, payload, len, &w->latency,
                                 &w->stats.bad_envelopes);
    if (!e)
        return;
    dispatch_env(w, channel, e, payload, len);
    env_free(e);
}

static void on_bus_msg(void *owner, const char *channel, const char *payload,
                       size_t len)
{
    worker_dispatch(owner, channel, payload, len);
}

static void on_registered(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    if (r && r->type != REDIS_REPLY_ERROR && !w->ready_logged) {
        w->ready_logged = true;
        LOG(INFO, "worker_ready", "worker=%s pid=%d max_sessions=%ld", w->id,
            (int)getpid(), w->cfg->max_sessions);
    }
}

/* How long the registry entry promises this worker is alive: never longer
 * than its leases last, so edges give up on a frozen worker's users about
 * when other workers may take them over. */
static long registry_ttl_ms(const struct worker *w)
{
    return w->cfg->lease_ms < REGISTRY_TTL_MS ? w->cfg->lease_ms : REGISTRY_TTL_MS;
}

static void registry_update(struct worker *w)
{
    char key[128], val[96];
    snprintf(key, sizeof(key), "%s:workers", bus_prefix(w->bus));
    if (w->stopping) {
        bus_command(w->bus, NULL, NULL, "HDEL %s %s", key, w->id);
        return;
    }
    int64_t now = util_wall_ms();
    snprintf(val, sizeof(val), "%lld %zu %ld %lld", (long long)(now + registry_ttl_ms(w)),
             w->sessions.count, w->cfg->max_sessions, (long long)now);
    bus_command(w->bus, on_registered, NULL, "HSET %s %s %s", key, w->id, val);
}

static void on_bus_state(void *owner, bool up)
{
    struct worker *w = owner;
    if (up) {
        /* Redis may have restarted empty: put back our registry entry and
         * leases at once rather than at the next tick. */
        registry_update(w);
        session_lease_renew(w);
        /* What waited for Redis goes first, then the check of each user's
         * numbering (one link: their answers come in this order). */
        if (w->redeliver) {
            evtimer_del(w->redeliver_timer);
            redeliver_cb(-1, 0, w);
        }
        check_numbering(w);
    }
}

/* The live edges, to drop devices of edges that died without a word. */
static void on_edges(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    struct strmap live;
    strmap_init(&live);
    int64_t now = util_wall_ms();
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING &&
            strtoll(r->element[i + 1]->str, NULL, 10) >= now)
            strmap_put(&live, r->element[i]->str, (void *)1);
    session_prune_devices(w, &live);
    strmap_free(&live);
}

/* ---- health: a TCP probe of the XMPP server, the report ----------------- */

static void probe_done(struct bufferevent *bev, short what, void *arg)
{
    struct worker *w = arg;
    w->xmpp_ok = (what & BEV_EVENT_CONNECTED) != 0;
    bufferevent_free(w->probe);
    w->probe = NULL;
}

static void probe_xmpp(struct worker *w)
{
    if (w->probe)
        return;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), "%s:%ld", w->cfg->xmpp_host, w->cfg->xmpp_port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &len) < 0) {
        w->xmpp_ok = w->sessions.count > 0; /* a name, not an address */
        return;
    }
    w->probe = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(w->probe, NULL, NULL, probe_done, w);
    struct timeval tv = {3, 0};
    bufferevent_set_timeouts(w->probe, &tv, &tv);
    if (bufferevent_socket_connect(w->probe, (struct sockaddr *)&ss, len) < 0) {
        bufferevent_free(w->probe);
        w->probe = NULL;
        w->xmpp_ok = false;
    }
}

static void report(struct worker *w)
{
    struct worker_report *r = w->report;
    if (!r)
        return;
    snprintf(r->id, sizeof(r->id), "%s", w->id);
    r->sessions = w->sessions.count;
    r->redeliver_queued = w->nredeliver;
    r->parsers_asleep = xmlbuf_asleep();
    r->bus_up = bus_up(w->bus);
    r->heartbeat_age_ms = bus_heartbeat_age_ms(w->bus);
    r->xmpp_ok = w->xmpp_ok;
    r->push_up = push_component_up();
    r->stats = w->stats;
    r->bus = *bus_stats(w->bus);
    r->latency = w->latency;
    r->updated_ms = util_mono_ms();
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    static int64_t last_renew, last_edges, last_probe;
    if (getppid() != w->parent && !w->stopping) {
        /* Orphaned (the supervisor died and the death signal was missed):
         * a bridge without its supervisor must not keep sessions. */
        LOG(WARN, "supervisor_gone", "worker=%s", w->id);
        kill(getpid(), SIGTERM);
    }
    registry_update(w);
    if (xmlbuf_sweep() > 0)
        w->trim_due = true;
    if (util_mono_ms() - last_probe >= 5000) {
        last_probe = util_mono_ms();
        probe_xmpp(w);
    }
    report(w);
    if (util_mono_ms() - last_edges >= 2000 && w->sessions.count > 0) {
        last_edges = util_mono_ms();
        char key[128];
        snprintf(key, sizeof(key), "%s:edges", bus_prefix(w->bus));
        bus_command(w->bus, on_edges, NULL, "HGETALL %s", key);
    }
    int64_t now = util_mono_ms();
    if (now - last_renew >= w->cfg->lease_ms / 3) {
        last_renew = now;
        session_lease_renew(w);
    }
}

/* ---- libstrophe log: warnings and errors only, never stanzas ------------- */

static void strophe_log(void *userdata, xmpp_log_level_t level,
                        const char *area, const char *msg)
{
    if (level >= XMPP_LEVEL_WARN)
        LOG(WARN, "libstrophe", "area=%s msg=\"%s\"", area, msg);
}

/* ---- libstrophe memory: the pool's free lists (jpool.h) ------------------ */

/* libstrophe and the expat parser under it allocate through these: every
 * stanza read or written is a tree of small blocks, built and freed once
 * per message. */
static void *strophe_alloc(size_t n, void *userdata)
{
    return jpool_malloc(n);
}

static void strophe_free(void *p, void *userdata)
{
    jpool_free(p);
}

static void *strophe_realloc(void *p, size_t n, void *userdata)
{
    return jpool_realloc(p, n);
}

/* ---- lifecycle ----------------------------------------------------------- */

/* How long a stopping worker waits for the sessions it closed half way
 * through their logins to hand their users over (session_close_all; their
 * streams go within CLOSE_WAIT_MS, session.c). */
#define STOP_WAIT_MS 3000

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (session_closes_pending(w) && util_mono_ms() - w->stop_ms < STOP_WAIT_MS) {
        struct timeval tv = {0, 50 * 1000};
        evtimer_add(w->stop_timer, &tv);
        return;
    }
    event_base_loopexit(w->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    if (sig == SIGHUP) {
        if (worker_reload_hook)
            worker_reload_hook();
        filter_reload(w->cfg);
        return;
    }
    if (w->stopping) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    LOG(INFO, "worker_stopping", "worker=%s sessions=%zu", w->id,
        w->sessions.count);
    w->stopping = true;
    w->stop_ms = util_mono_ms();
    registry_update(w);
    /* Logins published to us from now on reach nobody, so edges move on to
     * another worker at once instead of waiting for an answer. */
    bus_unsubscribe(w->bus, w->channel);
    session_close_all(w, "bridge_shutdown");
    /* Let the unavailable presences and session_end envelopes go out. */
    struct timeval tv = {0, 500 * 1000};
    evtimer_add(w->stop_timer, &tv);
}

int worker_main(const struct xmppd_cfg *cfg, const char *bridge_id, int index,
                int generation, struct worker_report *report)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    current = w;
    w->cfg = cfg;
    w->report = report;
    w->parent = getppid();
    snprintf(w->id, sizeof(w->id), "%s-w%d.%d", bridge_id, index, generation);
    char name[80];
    snprintf(name, sizeof(name), "xmppd/%s", w->id);
    log_set_name(name);
    seal_parse_key(cfg->common.cred_key, w->cred_key);
    filter_reload(cfg);
    strmap_init(&w->sessions);
    strmap_init(&w->by_conn);

    w->base = util_event_base();
    if (*cfg->xmpp_cafile) {
        /* libstrophe builds an SSL_CTX per connection from OpenSSL's default
         * paths: pointing those at the one CA we need keeps each TLS session
         * near 64 KiB instead of loading the whole system bundle (~880 KiB). */
        setenv("SSL_CERT_FILE", cfg->xmpp_cafile, 1);
    }
    /* A pass longer than this is a stalled handshake (see watchdog.h). */
    watchdog_start(2000);
    xmpp_initialize();
    static xmpp_log_t xlog = {strophe_log, NULL};
    static xmpp_mem_t xmem = {strophe_alloc, strophe_free, strophe_realloc, NULL};
    w->ctx = xmpp_ctx_new(jpool_on() ? &xmem : NULL, &xlog);

    struct bus_opts bo = {
        .host = cfg->common.redis_host,
        .port = (int)cfg->common.redis_port,
        .cluster = cfg->common.redis_cluster,
        .user = cfg->common.redis_user,
        .password = cfg->common.redis_password,
        .prefix = cfg->common.bus_prefix,
        .name = w->id,
    };
    w->bus = bus_new(w->base, &bo, on_bus_msg, on_bus_state, w);
    bus_channel(w->bus, w->channel, sizeof(w->channel), "w", w->id);
    bus_subscribe(w->bus, w->channel);

    w->run_ev = event_new(w->base, -1, 0, run_pass, w);
    w->ping_timer = evtimer_new(w->base, on_ping_timer, w);
    w->backstop = evtimer_new(w->base, on_backstop, w);
    struct timeval bs = {0, BACKSTOP_BUSY_MS * 1000};
    evtimer_add(w->backstop, &bs);
    w->backstop_busy = true;
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval tk = {TICK_MS / 1000, 0};
    evtimer_add(w->tick, &tk);
    w->stop_timer = evtimer_new(w->base, on_stop_timer, w);
    w->redeliver_timer = evtimer_new(w->base, redeliver_cb, w);
    w->relay_timer = evtimer_new(w->base, relay_cb, w);
    w->flush_ev = event_new(w->base, -1, 0, flush_deliveries, w);
    if (index == 0)
        push_component_start(w); /* one per bridge is enough */
    struct event *sigs[3];
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sigs[i] = evsignal_new(w->base, signums[i], on_signal, w);
        event_add(sigs[i], NULL);
    }

    event_base_dispatch(w->base);

    LOG(INFO, "worker_stopped", "worker=%s", w->id);
    push_component_stop();
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it))
        session_free(e->value);
    for (size_t i = 0; i < w->ngrave; i++)
        session_free(w->graveyard[i]);
    free(w->graveyard);
    /* Replies still pending find no session (bus_free calls them). */
    strmap_free(&w->sessions);
    strmap_init(&w->sessions);
    flush_deliveries(-1, 0, w); /* (Redis answers no more: they come back) */
    w->closing = true;
    bus_free(w->bus); /* pending deliveries come back to the retry queue */
    session_forwards_free(w); /* (after: pending replies name them) */
    relays_free(w);
    while (w->redeliver) {
        struct pending_delivery *pd = w->redeliver;
        w->redeliver = pd->next;
        LOG(ERROR, "delivery_dropped", "jid=%s reason=\"worker stopped with Redis away\"", pd->jid);
        pending_free(pd);
    }
    for (size_t i = 0; i < WORKER_RECENT; i++)
        if (w->recent[i])
            pending_free(w->recent[i]);
    event_free(w->redeliver_timer);
    event_free(w->relay_timer);
    event_free(w->flush_ev);
    if (w->probe)
        bufferevent_free(w->probe);
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    event_free(w->run_ev);
    event_free(w->ping_timer);
    event_free(w->backstop);
    event_free(w->tick);
    event_free(w->stop_timer);
    watchdog_stop();
    xmpp_ctx_free(w->ctx);
    xmpp_shutdown();
    jpool_trim(); /* (what the lists keep, freed for the leak check) */
    strmap_free(&w->sessions);
    strmap_free(&w->by_conn);
    event_base_free(w->base);
    filter_free(the_filter);
    the_filter = NULL;
    free(w);
    current = NULL;
    return 0;
}
