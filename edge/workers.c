/* workers.c - cached list of live xmppd workers and load-aware picking. */
#include "workers.h"
#include "bus.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define REFRESH_MS 1000
#define MAX_WORKERS 4096
/* Logins sent lately, remembered to add to the counts workers report: a
 * storm of logins at a few thousand a second fits. */
#define PICKS_KEPT 2048

struct worker_info {
    char *id;
    long sessions;  /* as last reported, plus the logins we sent since */
    long load;      /* as last reported, plus the logins we sent since
                       once per live edge (picking compares these) */
    long capacity;
    int64_t expires; /* its last heartbeat's promise (wall ms) */
    int64_t reported; /* when it wrote that report (wall ms), 0: unknown */
    bool listed;     /* in the last read; else kept until it expires */
};

/* A login this edge sent to a worker, and when (wall ms). */
struct pick {
    char id[65];
    int64_t ms;
};

/* Someone waiting for a refresh. */
struct refresh_waiter {
    struct refresh_waiter *next;
    void (*done)(void *arg);
    void *arg;
};

struct workers {
    struct bus *bus;
    void (*on_refresh)(void *arg);
    void *arg;
    struct refresh_waiter *waiters;
    struct event *timer;
    struct worker_info *list;
    size_t n;
    struct strmap index; /* id -> its entry in list: lookups once per user
                            and refresh stay O(1) with many workers */
    bool refreshing;
    char key[128];       /* "<prefix>:workers" */
    char edges_key[128]; /* "<prefix>:edges": edge -> alive until (wall ms) */
    long edges;          /* edges alive at the last refresh, >= 1 */
    struct pick *picks;  /* ring of PICKS_KEPT, the newest at next_pick - 1 */
    size_t next_pick;
};

static void clear(struct workers *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->list[i].id);
    free(w->list);
    w->list = NULL;
    w->n = 0;
    strmap_free(&w->index);
}

static void parse_list(struct workers *w, redisReply *r);

static void on_hgetall(void *owner, void *data, redisReply *r)
{
    struct workers *w = data;
    w->refreshing = false;
    /* Those waiting now get this answer; whoever starts waiting during
     * on_refresh gets the next one (its request is on its way already). */
    struct refresh_waiter *rw = w->waiters;
    w->waiters = NULL;
    /* Without an answer keep the last known list while Redis is away. */
    if (r && r->type == REDIS_REPLY_ARRAY) {
        parse_list(w, r);
        if (w->on_refresh)
            w->on_refresh(w->arg);
    }
    while (rw) {
        struct refresh_waiter *next = rw->next;
        rw->done(rw->arg);
        free(rw);
        rw = next;
    }
}

/* A worker missing from the hash is not dead yet: Redis may have restarted
 * empty, and its workers put their entries back on reconnecting. It stays
 * alive (never picked) until its last heartbeat's promise runs out, as a
 * worker killed outright does; so a Redis restart moves no session. */
static void parse_list(struct workers *w, redisReply *r)
{
    int64_t now = util_wall_ms();
    size_t cap = r->elements / 2 + w->n;
    if (cap > MAX_WORKERS)
        cap = MAX_WORKERS;
    struct worker_info *list = xcalloc(cap ? cap : 1, sizeof(*list));
    size_t n = 0;
    /* (Fields of a hash are unique: no duplicate to skip.) */
    for (size_t i = 0; i + 1 < r->elements && n < cap; i += 2) {
        redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            k->len == 0 || k->len > 64 || strlen(k->str) != k->len)
            continue;
        long long expires, reported = 0;
        long sessions, capacity;
        /* (A fourth field, the report's time, came later: optional.) */
        if (sscanf(v->str, "%lld %ld %ld %lld", &expires, &sessions, &capacity,
                   &reported) < 3 ||
            expires < now)
            continue;
        list[n++] = (struct worker_info){xstrdup(k->str), sessions, sessions, capacity,
                                         expires, reported, true};
    }
    struct strmap listed;
    strmap_init(&listed);
    for (size_t i = 0; i < n; i++)
        strmap_put(&listed, list[i].id, &list[i]);
    for (size_t i = 0; i < w->n && n < cap; i++) {
        struct worker_info *old = &w->list[i];
        if (old->expires >= now && !strmap_get(&listed, old->id))
            list[n++] = (struct worker_info){xstrdup(old->id), 0, 0, 0,
                                             old->expires, 0, false};
    }
    strmap_free(&listed);
    clear(w);
    w->list = list;
    w->n = n;
    for (size_t i = 0; i < n; i++)
        strmap_put(&w->index, list[i].id, &list[i]);
    /* A report counts the sessions its worker had when it wrote it: the
     * logins this edge sent since are on their way, and count on top (else
     * a refresh in the middle of a burst forgets them and the next picks
     * pile onto the same workers). The other edges sent logins since too,
     * which this one cannot see: about as many as it did (a balancer in
     * front spreads the phones), so in the load that picking compares each
     * of its own counts once per live edge. Counted once, every edge read
     * the same deficits in the same report and filled them all at once:
     * 52 logins through two edges onto 4 workers came out 16/13/12/11 and
     * 16/16/10/10 under ASan. Edges and bridges on one clock, or nearly: a
     * skew of a few ms moves a login or two. */
    for (size_t i = 0; w->picks && i < PICKS_KEPT; i++) {
        struct pick *p = &w->picks[i];
        struct worker_info *wi = p->ms ? strmap_get(&w->index, p->id) : NULL;
        if (wi && wi->listed && wi->reported && p->ms >= wi->reported) {
            wi->sessions++;
            wi->load += w->edges;
        }
    }
}

/* The edges alive now: entries of "<prefix>:edges" whose promise (wall ms)
 * has not run out. A killed edge's entry stays in the hash (nobody removes
 * it), so its length would count every edge that ever ran. */
static void on_edges(void *owner, void *data, redisReply *r)
{
    struct workers *w = data;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    int64_t now = util_wall_ms();
    long live = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *v = r->element[i + 1];
        if (v->type == REDIS_REPLY_STRING && strtoll(v->str, NULL, 10) >= now)
            live++;
    }
    w->edges = live < 1 ? 1 : live > 1000 ? 1000 : live;
}

static void refresh(evutil_socket_t fd, short what, void *arg)
{
    struct workers *w = arg;
    if (w->refreshing)
        return;
    w->refreshing = true;
    /* (Answered in order: the edge count is in before the list.) */
    bus_command(w->bus, on_edges, w, "HGETALL %s", w->edges_key);
    bus_command(w->bus, on_hgetall, w, "HGETALL %s", w->key);
}

struct workers *workers_new(struct event_base *base, struct bus *bus,
                            void (*on_refresh)(void *arg), void *arg)
{
    struct workers *w = xcalloc(1, sizeof(*w));
    w->bus = bus;
    w->on_refresh = on_refresh;
    w->arg = arg;
    snprintf(w->key, sizeof(w->key), "%s:workers", bus_prefix(bus));
    snprintf(w->edges_key, sizeof(w->edges_key), "%s:edges", bus_prefix(bus));
    w->edges = 1;
    w->timer = event_new(base, -1, EV_PERSIST, refresh, w);
    struct timeval tv = {0, REFRESH_MS * 1000};
    evtimer_add(w->timer, &tv);
    refresh(-1, 0, w);
    return w;
}

void workers_refresh(struct workers *w, void (*done)(void *arg), void *arg)
{
    struct refresh_waiter *rw = xmalloc(sizeof(*rw));
    rw->done = done;
    rw->arg = arg;
    rw->next = w->waiters;
    w->waiters = rw;
    refresh(-1, 0, w);
}

void workers_free(struct workers *w)
{
    if (!w)
        return;
    /* The bus was freed first, so every refresh has been answered. */
    event_free(w->timer);
    clear(w);
    free(w->picks);
    free(w);
}

bool workers_alive(const struct workers *w, const char *id)
{
    return strmap_get(&w->index, id) != NULL;
}

size_t workers_count(const struct workers *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        n += w->list[i].listed;
    return n;
}

static bool excluded(const char *id, const char *const *ex, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(id, ex[i]) == 0)
            return true;
    return false;
}

const char *workers_pick(struct workers *w, const char *const *exclude,
                         size_t nexclude)
{
    /* The least loaded eligible worker, ties broken at random. Each pick
     * counts at once in the local estimate (once per live edge in the load:
     * see parse_list), so a burst of logins spreads evenly even between two
     * refreshes of the list, and several edges together stay even too. */
    struct worker_info *best = NULL;
    unsigned ties = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct worker_info *wi = &w->list[i];
        if (!wi->listed || excluded(wi->id, exclude, nexclude) ||
            wi->sessions >= wi->capacity)
            continue;
        if (!best || wi->load < best->load) {
            best = wi;
            ties = 1;
        } else if (wi->load == best->load) {
            unsigned r;
            util_random(&r, sizeof(r));
            if (r % ++ties == 0)
                best = wi;
        }
    }
    if (!best)
        return NULL;
    best->sessions++;
    best->load += w->edges;
    if (!w->picks)
        w->picks = xcalloc(PICKS_KEPT, sizeof(*w->picks));
    struct pick *p = &w->picks[w->next_pick];
    snprintf(p->id, sizeof(p->id), "%s", best->id);
    p->ms = util_wall_ms();
    w->next_pick = (w->next_pick + 1) % PICKS_KEPT;
    return best->id;
}
