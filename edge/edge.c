/* edge.c - the edge's envelope side: login through a bridge worker, chat to
 * the user's bridge, and whatever bridges publish back to phones. */
#include "edge.h"
#include "bus.h"
#include "envelope.h"
#include "log.h"
#include "phone.h"
#include "proto.h"
#include "httpd.h"
#include "jparse.h"
#include "jpool.h"
#include "schema.h"
#include "throttle.h"
#include "tlsctx.h"
#include "util.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#define LOGIN_ATTEMPTS 3

/* ---- users ------------------------------------------------------------- */

static struct user *user_attach(struct edge *edge, struct conn *c,
                                const char *jid)
{
    struct user *u = strmap_get(&edge->users, jid);
    if (!u) {
        const char *key;
        u = strmap_put_inline(&edge->users, jid, sizeof(*u), &key);
        u->jid = key;
    }
    c->user = u;
    c->user_next = u->conns;
    u->conns = c;
    return u;
}

static void user_detach(struct edge *edge, struct conn *c)
{
    struct user *u = c->user;
    if (!u)
        return;
    for (struct conn **pp = &u->conns; *pp; pp = &(*pp)->user_next)
        if (*pp == c) {
            *pp = c->user_next;
            break;
        }
    c->user = NULL;
    c->user_next = NULL;
    if (u->conns)
        return;
    if (u->retry)
        event_free(u->retry);
    OPENSSL_cleanse(u->resume, sizeof(u->resume));
    strmap_del(&edge->users, u->jid); /* frees u, its JID with it */
}

/* ---- envelopes out ----------------------------------------------------- */

/* Publish e on "<prefix>:<kind>:<id>"; e is freed. */
/* ---- envelopes to a user's session, one PUBLISH per user and loop turn --
 * A phone's frames of one loop turn (often several: a burst read at once)
 * go to its session's channel together, as a JSON array when there are
 * several; each keeps its own reply callback. Everything for the channel
 * takes this path, so the session sees the frames in the order sent. */

struct outgoing {
    struct outgoing *next;
    char *channel, *payload;
    size_t len;
    bus_reply_cb *cb;
    void *data;
};

/* The callbacks of a batch, each called with the one reply. */
struct out_batch {
    size_t n;
    struct outgoing **o;
};

static void outgoing_free(struct outgoing *o)
{
    free(o->channel);
    free(o->payload);
    free(o);
}

static void on_batch_published(void *owner, void *data, redisReply *reply)
{
    struct out_batch *b = data;
    for (size_t i = 0; i < b->n; i++) {
        if (b->o[i]->cb)
            b->o[i]->cb(owner, b->o[i]->data, reply);
        outgoing_free(b->o[i]);
    }
    free(b->o);
    free(b);
}

#define OUT_BATCH_MAX 64

/* Publish the first envelope of list and those after it for the same
 * channel (at most OUT_BATCH_MAX); returns the list without them. */
static struct outgoing *publish_batch(struct edge *edge, struct outgoing *list)
{
    struct outgoing *head = list, **link = &list;
    struct outgoing *taken[OUT_BATCH_MAX];
    size_t n = 0, bytes = 2;
    /* (A bounded look ahead: the rest for the channel goes in a later
     * PUBLISH, still in order on the one link.) */
    for (size_t looked = 0; *link && n < OUT_BATCH_MAX && looked < 4 * OUT_BATCH_MAX; looked++) {
        struct outgoing *o = *link;
        if (strcmp(o->channel, head->channel) != 0) {
            link = &o->next;
            continue;
        }
        *link = o->next;
        taken[n++] = o;
        bytes += o->len + 1;
    }
    if (n == 1) {
        bus_publish(edge->bus, head->channel, head->payload, head->len, head->cb, head->data);
        outgoing_free(head);
        return list;
    }
    char *all = xmalloc(bytes);
    size_t at = 0;
    all[at++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            all[at++] = ',';
        memcpy(all + at, taken[i]->payload, taken[i]->len);
        at += taken[i]->len;
    }
    all[at++] = ']';
    struct out_batch *b = xmalloc(sizeof(*b));
    b->n = n;
    b->o = xmalloc(n * sizeof(*b->o));
    memcpy(b->o, taken, n * sizeof(*b->o));
    bus_publish(edge->bus, head->channel, all, at, on_batch_published, b);
    free(all);
    return list;
}

static void flush_outgoing(evutil_socket_t fd, short what, void *arg)
{
    struct edge *edge = arg;
    struct outgoing *list = edge->out;
    edge->out = edge->out_tail = NULL;
    while (list)
        list = publish_batch(edge, list);
}

/* Publish an envelope's text (payload, malloc'd: taken) to the worker
 * holding the user's session ("w", the one that answered the login) at the
 * end of the loop turn; cb gets the
 * PUBLISH's reply as for bus_publish. Envelopes for any users of one
 * worker share one PUBLISH. With no worker known yet, cb hears "nobody
 * got it" at once. */
static void publish_text_to_session(struct edge *edge, struct user *u, char *payload,
                                    size_t len, bus_reply_cb *cb, void *data)
{
    char ch[1200];
    if (!u->worker || !bus_channel(edge->bus, ch, sizeof(ch), "w", u->worker)) {
        free(payload);
        redisReply none = {.type = REDIS_REPLY_INTEGER, .integer = 0};
        if (cb)
            cb(edge, data, &none);
        return;
    }
    struct outgoing *o = xcalloc(1, sizeof(*o));
    o->payload = payload;
    o->len = len;
    o->channel = xstrdup(ch);
    o->cb = cb;
    o->data = data;
    if (edge->out_tail)
        edge->out_tail->next = o;
    else {
        edge->out = o;
        event_active(edge->out_ev, EV_TIMEOUT, 0);
    }
    edge->out_tail = o;
}

/* The same for envelope e (freed), stamped with the time it leaves. */
static void publish_to_session(struct edge *edge, struct user *u, struct env *e,
                               bus_reply_cb *cb, void *data)
{
    env_set_int(e, "ts", util_wall_ms());
    env_set_int(e, "pts", util_wall_ms());
    size_t len;
    char *payload = env_encode(e, &len);
    env_free(e);
    publish_text_to_session(edge, u, payload, len, cb, data);
}

/* Tell the user's bridge that this device is gone (dropped or unwanted). */
static void send_detach(struct edge *edge, struct user *u, const char *dev,
                        enum env_type type)
{
    struct env *e = env_new(type);
    env_set_str(e, "from", u->jid);
    env_set_str(e, "edge", edge->id);
    env_set_str(e, "dev", dev);
    publish_to_session(edge, u, e, NULL, NULL);
}

/* The same for a login answered after its phone left (no user here any
 * more): to the worker that answered. */
static void send_late_detach(struct edge *edge, const char *jid, const char *dev,
                             const char *worker)
{
    char ch[200];
    if (!bus_channel(edge->bus, ch, sizeof(ch), "w", worker))
        return;
    struct env *e = env_new(ENV_DETACH);
    env_set_str(e, "from", jid);
    env_set_str(e, "edge", edge->id);
    env_set_str(e, "dev", dev);
    size_t len;
    char *payload = env_encode(e, &len);
    bus_publish(edge->bus, ch, payload, len, NULL, NULL);
    free(payload);
    env_free(e);
}

/* ---- login ------------------------------------------------------------- */

/* A login in flight: kept by the PUBLISH callback so a missed worker can be
 * replaced by another. */
struct login_req {
    struct edge *edge;
    char dev[20];
    char *jid;
    char *payload;              /* the encoded login envelope */
    size_t len;
    char *tried[LOGIN_ATTEMPTS + 1];/* worker ids already tried, then the one to avoid */
    int attempts;
    bool refreshed;             /* the worker list was re-read for it */
    char *avoid;                /* a worker known to be going away, or NULL */
};

static void login_req_free(struct login_req *r)
{
    free(r->jid);
    if (r->payload) {
        /* The envelope holds the sealed password: wipe it anyway. */
        memset(r->payload, 0, r->len);
        free(r->payload);
    }
    for (int i = 0; i < r->attempts; i++)
        free(r->tried[i]);
    free(r->avoid);
    free(r);
}

/* The login of c is over without success: the phone hears code (and, when
 * retry_s > 0, after how many seconds to try again). */
static void login_refused(struct conn *c, const char *code, const char *msg,
                          long retry_s)
{
    struct edge *edge = c->edge;
    edge->stats.logins_failed++;
    seal_wipe_free(c->pending_pass);
    c->pending_pass = NULL;
    throttle_forget(edge, c);
    LOG(INFO, "login_failed", "dev=%s jid=%s code=%s", c->dev,
        c->user ? c->user->jid : "?", code);
    user_detach(edge, c);
    conn_set_state(c, CONN_NEW);
    json_t *f = phone_error(code, msg, NULL);
    if (retry_s > 0)
        json_object_set_new(f, "retry", json_integer(retry_s));
    conn_send(c, f);
    if (strcmp(code, PERR_AUTH_FAILED) == 0 && ++c->auth_failures >= 3)
        conn_bye(c, "too_many_failures");
}

static void login_failed(struct conn *c, const char *code, const char *msg)
{
    login_refused(c, code, msg, 0);
}

static void login_send(struct edge *edge, struct login_req *r);
static void user_relogin_failed(struct edge *edge, struct user *u,
                                const char *code, const char *msg);

/* A login is in flight for c: the phone's own (LOGGING_IN), or the edge's
 * re-login of a logged-in phone (READY, not attached). */
static bool login_pending(const struct conn *c)
{
    return c && (c->state == CONN_LOGGING_IN ||
                 (c->state == CONN_READY && !c->attached && c->user &&
                  c->user->relogging));
}

static void login_fail_conn(struct conn *c, const char *code, const char *msg)
{
    if (c->state == CONN_LOGGING_IN)
        login_failed(c, code, msg);
    else
        user_relogin_failed(c->edge, c->user, code, msg);
}

static void on_login_published(void *owner, void *data, redisReply *reply)
{
    struct edge *edge = owner;
    struct login_req *r = data;
    struct conn *c = strmap_get(&edge->conns, r->dev);
    if (!login_pending(c)) {
        login_req_free(r);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        login_fail_conn(c, PERR_UNAVAILABLE, "message bus unavailable, retry soon");
        login_req_free(r);
    } else if (reply->integer == 0) {
        /* That worker is gone: try another. */
        LOG(WARN, "login_worker_missing", "dev=%s worker=%s", r->dev,
            r->tried[r->attempts - 1]);
        login_send(edge, r);
    } else {
        login_req_free(r);
    }
}

static void login_send(struct edge *edge, struct login_req *r);

static void login_send_after_refresh(void *arg)
{
    struct login_req *r = arg;
    login_send(r->edge, r);
}

static void login_send(struct edge *edge, struct login_req *r)
{
    struct conn *c = strmap_get(&edge->conns, r->dev);
    if (workers_count(edge->workers) == 0 && !r->refreshed) {
        r->refreshed = true;
        r->edge = edge;
        workers_refresh(edge->workers, login_send_after_refresh, r);
        return;
    }
    size_t nexclude = (size_t)r->attempts;
    if (r->avoid)
        r->tried[nexclude++] = r->avoid;
    const char *wid = r->attempts < LOGIN_ATTEMPTS
                          ? workers_pick(edge->workers,
                                         (const char *const *)r->tried, nexclude)
                          : NULL;
    r->tried[r->attempts] = NULL;
    if (!wid) {
        if (login_pending(c))
            login_fail_conn(c, PERR_UNAVAILABLE, "no bridge is available, retry soon");
        login_req_free(r);
        return;
    }
    r->tried[r->attempts++] = xstrdup(wid);
    char ch[128];
    bus_channel(edge->bus, ch, sizeof(ch), "w", wid);
    bus_publish(edge->bus, ch, r->payload, r->len, on_login_published, r);
}

void edge_on_login_timeout(struct conn *c)
{
    login_failed(c, PERR_UNAVAILABLE, "no answer from a bridge, retry soon");
}

/* Send a login for connection c of its user, with sealed credentials;
 * avoid names a worker not to pick (it is going away), or NULL. */
/* Send c's login: with the password sealed (cred), or, re-opening the
 * session, with its resume token (cred NULL). */
static void login_start(struct edge *edge, struct conn *c, const char *cred,
                        const char *avoid)
{
    struct env *e = env_new(ENV_LOGIN);
    env_set_str(e, "jid", c->user->jid);
    if (cred) {
        env_set_str(e, "cred", cred);
    } else {
        char tok[SEAL_TOKEN_HEX + 1];
        seal_token_hex(c->user->resume, tok);
        env_set_str(e, "resume_token", tok);
        OPENSSL_cleanse(tok, sizeof(tok));
    }
    env_set_str(e, "edge", edge->id);
    env_set_str(e, "dev", c->dev);
    if (c->label[0])
        env_set_str(e, "label", c->label);
    env_set_int(e, "ts", util_wall_ms());
    struct login_req *r = xcalloc(1, sizeof(*r));
    snprintf(r->dev, sizeof(r->dev), "%s", c->dev);
    r->jid = xstrdup(c->user->jid);
    r->payload = env_encode(e, &r->len);
    r->avoid = avoid ? xstrdup(avoid) : NULL;
    env_free(e);
    login_send(edge, r);
}

/* ---- re-login: the user's session moves to another worker -------------- */

#define RELOGIN_GIVE_UP 30

static void relogin_retry_cb(evutil_socket_t fd, short what, void *arg);

/* The user's XMPP session is gone or unreachable (its worker died, ended
 * it, or is stopping): open it again, on whichever worker answers, for
 * every connection of the user on this edge. Phones stay connected; what
 * desktops sent meanwhile waits in the XMPP server's offline storage and
 * comes through the inbox after the new session's initial presence. */
static void user_relogin(struct edge *edge, struct user *u, const char *why)
{
    if (u->relogging)
        return;
    if (!u->has_resume) {
        /* No session answered yet (its first login is in flight), or its
         * bridge gave no token (an older release): nothing to re-open
         * with; phones already in must log in again. */
        for (struct conn *c = u->conns; c; c = c->user_next)
            if (c->state == CONN_READY) {
                user_relogin_failed(edge, u, ENV_RESUME_LOST, "no resume token");
                break;
            }
        return;
    }
    u->relogging = true;
    edge->stats.relogins++;
    /* Watchdog: a worker that took the login and died answers nothing. */
    if (!u->retry)
        u->retry = evtimer_new(edge->base, relogin_retry_cb, u);
    struct timeval tv = {edge->cfg->bridge_timeout, 0};
    evtimer_add(u->retry, &tv);
    LOG(INFO, "relogin", "jid=%s why=%s old_worker=%s", u->jid, why,
        u->worker ? u->worker : "-");
    /* The old worker is dying or stopping: don't pick it again. */
    const char *avoid = u->worker && (!strcmp(why, "bridge_shutdown") ||
                                      !strcmp(why, "worker_gone") ||
                                      !strcmp(why, "publish_missed") ||
                                      u->relogin_failures > 0)
                            ? u->worker
                            : NULL;
    for (struct conn *c = u->conns; c; c = c->user_next)
        if (c->state == CONN_READY) {
            c->attached = false;
            /* Whatever the old session had not confirmed: send it again. */
            conn_fail_inflight(c, "your session is moving, send again");
            login_start(edge, c, NULL, avoid);
        }
}

static void user_relogin_failed(struct edge *edge, struct user *u,
                                const char *code, const char *msg)
{
    u->relogging = false;
    bool lost = strcmp(code, ENV_RESUME_LOST) == 0;
    bool give_up = lost || strcmp(code, PERR_AUTH_FAILED) == 0 ||
                   strcmp(code, PERR_UNKNOWN_DOMAIN) == 0 ||
                   ++u->relogin_failures >= RELOGIN_GIVE_UP;
    if (give_up) {
        /* The password changed, the session's sealed password is gone, or
         * the XMPP server stays away: the phones must log in again
         * themselves. */
        LOG(WARN, "relogin_gave_up", "jid=%s code=%s", u->jid, code);
        if (lost) {
            code = PERR_UNAVAILABLE; /* (the phones' word for it) */
            msg = "your session ended: log in again";
        }
        for (struct conn *c = u->conns; c; c = c->user_next)
            if (c->state == CONN_READY) {
                conn_error(c, code, msg, NULL);
                conn_bye(c, "session_ended");
            }
        return;
    }
    if (!u->retry)
        u->retry = evtimer_new(edge->base, relogin_retry_cb, u);
    int ms = 250 << (u->relogin_failures < 3 ? u->relogin_failures : 3);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(u->retry, &tv);
}

static struct edge *the_edge_of(struct user *u)
{
    return u->conns ? u->conns->edge : NULL;
}

static void relogin_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct user *u = arg;
    struct edge *edge = the_edge_of(u);
    if (!edge)
        return;
    if (u->relogging)
        user_relogin_failed(edge, u, PERR_UNAVAILABLE, "no answer from a bridge");
    else
        user_relogin(edge, u, "retry");
}

/* After each read of the worker list: users whose worker vanished. */
static void on_workers_refreshed(void *arg)
{
    struct edge *edge = arg;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&edge->users, &it); e;
         e = strmap_next(&edge->users, &it)) {
        struct user *u = e->value;
        /* (A user already waiting to retry keeps its backoff.) */
        if (u->worker && !u->relogging &&
            !(u->retry && evtimer_pending(u->retry, NULL)) &&
            !workers_alive(edge->workers, u->worker))
            user_relogin(edge, u, "worker_gone");
    }
}

/* The throttle's verdict on a login: refuse it, or send it to a bridge.
 * (The user's channel is subscribed only now: a refused login costs Redis
 * no SUBSCRIBE.) */
static void on_throttle_checked(struct edge *edge, const char *dev, uint8_t seq,
                                const char *jid, enum throttle_verdict v,
                                long retry_s)
{
    struct conn *c = strmap_get(&edge->conns, dev);
    if (!c || c->state != CONN_LOGGING_IN || c->login_seq != seq ||
        !c->pending_pass || c->user)
        return; /* gone, timed out, or logging in anew */
    if (v != THROTTLE_PASS) {
        login_refused(c, PERR_RATE_LIMITED,
                      "too many failed logins, try again later", retry_s);
        return;
    }
    user_attach(edge, c, jid);
    char *cred = seal_encrypt(edge->cred_key, c->user->jid, c->pending_pass,
                              util_wall_ms());
    if (!cred) {
        login_failed(c, PERR_INTERNAL, "the password could not be sealed");
        return;
    }
    login_start(edge, c, cred, NULL);
    seal_wipe_free(cred);
}

void edge_on_login(struct conn *c, json_t *f)
{
    struct edge *edge = c->edge;
    /* Prepared by phone_decode (jid.h), as the XMPP server prepares it:
     * "ＢＯＢ@localhost" and "bob@localhost" share one session and one
     * channel. */
    char *jid = xstrdup(json_string_value(json_object_get(f, "jid")));
    const char *label = json_string_value(json_object_get(f, "dev"));
    /* (Sealed once the throttle lets the login pass.) */
    if (strlen(json_string_value(json_object_get(f, "pass"))) > SEAL_MAX_SECRET) {
        conn_error(c, PERR_BAD_FRAME, "field 'pass' is too long", NULL);
        free(jid);
        return;
    }
    snprintf(c->label, sizeof(c->label), "%s", label ? label : "");
    /* Where the phone says it is in the user's sequence (resume). */
    const char *epoch = json_string_value(json_object_get(f, "epoch"));
    snprintf(c->epoch, sizeof(c->epoch), "%s", epoch ? epoch : "");
    json_t *seq = json_object_get(f, "seq");
    c->last_seq = seq ? (int64_t)json_integer_value(seq) : 0;
    c->positioned = seq != NULL;
    conn_set_state(c, CONN_LOGGING_IN);
    c->pending_pass = xstrdup(json_string_value(json_object_get(f, "pass")));
    LOG(DEBUG, "login_start", "dev=%s jid=%s", c->dev, jid);
    c->login_seq++;
    throttle_check(edge, c, jid, json_string_value(json_object_get(f, "token")),
                   on_throttle_checked);
    free(jid);
}

/* Worker ids are few and long-lived: each is kept once (worker_names),
 * however many users are placed on it. */
static void set_worker(struct edge *edge, struct user *u, const char *worker)
{
    if (worker && *worker)
        u->worker = strmap_intern(&edge->worker_names, worker);
}

/* The session's resume token, from a login_ok (the newest wins: a session
 * opened anew draws a new one). */
static void set_resume(struct user *u, const struct env *e)
{
    const char *tok = env_str(e, "resume_token");
    uint8_t t[SEAL_TOKEN_BYTES];
    if (tok && seal_token_parse(tok, t)) {
        memcpy(u->resume, t, sizeof(t));
        u->has_resume = true;
    }
    OPENSSL_cleanse(t, sizeof(t));
}

static void on_login_ok(struct edge *edge, struct env *e)
{
    const char *dev = env_str(e, "dev"), *jid = env_str(e, "jid");
    struct conn *c = strmap_get(&edge->conns, dev);
    if (c && c->state == CONN_READY && c->user && !c->attached &&
        strcmp(c->user->jid, jid) == 0) {
        /* A re-login: the phone never noticed. */
        c->attached = true;
        c->user->relogging = false;
        c->user->relogin_failures = 0;
        if (c->user->retry)
            evtimer_del(c->user->retry);
        set_worker(edge, c->user, env_str(e, "worker"));
        set_resume(c->user, e);
        LOG(INFO, "relogin_ok", "dev=%s jid=%s worker=%s", dev, jid,
            env_str(e, "worker"));
        return;
    }
    if (c && c->state == CONN_READY && c->user && c->attached &&
        strcmp(c->user->jid, jid) == 0) {
        /* The session moved (what this phone sent reached it through the
         * worker it left): send there from now on. */
        if (!c->user->worker || strcmp(c->user->worker, env_str(e, "worker")) != 0)
            LOG(INFO, "session_moved", "jid=%s worker=%s", jid, env_str(e, "worker"));
        set_worker(edge, c->user, env_str(e, "worker"));
        set_resume(c->user, e);
        return;
    }
    if (!c || c->state != CONN_LOGGING_IN || !c->user ||
        strcmp(c->user->jid, jid) != 0) {
        /* The phone gave up (or left) before the bridge answered: the
         * bridge must not count this device as attached. */
        send_late_detach(edge, jid, dev, env_str(e, "worker"));
        return;
    }
    c->attached = true;
    c->auth_failures = 0;
    conn_set_state(c, CONN_READY);
    set_worker(edge, c->user, env_str(e, "worker"));
    set_resume(c->user, e);
    /* The password is the bridge's to keep (sealed, resume.h), not ours. */
    seal_wipe_free(c->pending_pass);
    c->pending_pass = NULL;
    edge->stats.logins_ok++;
    LOG(INFO, "login_ok", "dev=%s jid=%s worker=%s", dev, jid,
        env_str(e, "worker"));
    json_t *welcome = json_pack("{s:s, s:i, s:s, s:I, s:I}", "t", "welcome", "v",
                                PHONE_VERSION, "jid", jid, "hb",
                                (json_int_t)edge->cfg->heartbeat, "max",
                                (json_int_t)edge->cfg->max_frame);
    char *token = throttle_token(edge, c);
    if (token)
        json_object_set_new(welcome, "token", json_string(token));
    free(token);
    conn_send(c, welcome);
    /* Whatever waits in the inbox comes first, then a sync frame. */
    delivery_replay(c);
}

static void on_login_fail(struct edge *edge, struct env *e)
{
    struct conn *c = strmap_get(&edge->conns, env_str(e, "dev"));
    const char *code = env_str(e, "code");
    const char *msg = env_str(e, "msg");
    if (c && c->state == CONN_READY && login_pending(c)) {
        user_relogin_failed(edge, c->user, code, msg ? msg : "login failed");
        return;
    }
    if (!c || c->state != CONN_LOGGING_IN)
        return;
    if (strcmp(code, PERR_AUTH_FAILED) == 0)
        throttle_failed(edge, c);
    else if (strcmp(code, PERR_UNKNOWN_DOMAIN) != 0)
        code = PERR_UNAVAILABLE;
    login_failed(c, code, msg ? msg : "login failed");
}

/* ---- messages in flight ------------------------------------------------- */

/* Forget id once it is answered; true if it was in flight. */
static bool inflight_done(struct conn *c, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(c->inflight, i, v) {
        if (strcmp(json_string_value(v), id) == 0) {
            json_array_remove(c->inflight, i);
            return true;
        }
    }
    return false;
}

void conn_fail_inflight(struct conn *c, const char *why)
{
    json_t *ids = c->inflight;
    if (!ids || json_array_size(ids) == 0)
        return;
    c->inflight = NULL;
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
        conn_error(c, PERR_UNAVAILABLE, why, json_string_value(v));
    json_decref(ids);
}

/* ---- chat -------------------------------------------------------------- */

/* A frame the edge forwarded to the user's session: which socket, which id
 * ("" when it has none). */
struct forwarded {
    char dev[20];
    char id[PHONE_MAX_ID + 1];
};

static struct forwarded *forwarded_new(const struct conn *c, const char *id)
{
    struct forwarded *r = xcalloc(1, sizeof(*r));
    util_cat(r->dev, sizeof(r->dev), c->dev, (char *)NULL);
    util_cat(r->id, sizeof(r->id), id ? id : "", (char *)NULL);
    return r;
}

static bool published(const redisReply *reply)
{
    return reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
}

/* A forwarded frame reached no worker (or the bus failed): the phone sends
 * it again after a moment; a session nobody holds is re-opened. */
static void publish_failed(struct edge *edge, struct conn *c, const redisReply *reply,
                           const char *id)
{
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        conn_error(c, PERR_UNAVAILABLE, "message bus unavailable, send again", id);
        return;
    }
    conn_error(c, PERR_UNAVAILABLE, "your session is moving, send again", id);
    if (c->user)
        user_relogin(edge, c->user, "publish_missed");
}

static void on_msg_published(void *owner, void *data, redisReply *reply)
{
    struct edge *edge = owner;
    struct forwarded *r = data;
    struct conn *c = strmap_get(&edge->conns, r->dev);
    /* (Not in flight any more: a bulk failure answered it already.) */
    if (c && !published(reply) && inflight_done(c, r->id))
        publish_failed(edge, c, reply, r->id);
    free(r);
}

void edge_on_msg(struct conn *c, json_t *f)
{
    struct edge *edge = c->edge;
    edge->stats.msgs_in++;
    json_t *idv = json_object_get(f, "id");
    const char *id = json_string_value(idv);
    /* Identity is stamped here, from the login, never from the phone. The
     * envelope is written straight from the frame's values (envelope.h). */
    int64_t now = util_wall_ms();
    size_t len;
    char *payload = env_chat_encode(c->user->jid, json_object_get(f, "to"),
                                    json_object_get(f, "body"),
                                    json_is_true(json_object_get(f, "group")), idv,
                                    edge->id, c->dev, now, now, &len);
    struct forwarded *r = forwarded_new(c, id);
    /* Until an ack or an error names it, the edge owes the phone an answer
     * for this id, whatever happens to the bridge or the bus meanwhile. */
    if (!c->inflight)
        c->inflight = json_array();
    json_array_append_new(c->inflight, json_string(id));
    publish_text_to_session(edge, c->user, payload, len, on_msg_published, r);
}

/* ---- requests ---------------------------------------------------------- */

static void on_req_published(void *owner, void *data, redisReply *reply)
{
    struct edge *edge = owner;
    struct forwarded *r = data;
    struct conn *c = strmap_get(&edge->conns, r->dev);
    if (c && !published(reply))
        publish_failed(edge, c, reply, r->id[0] ? r->id : NULL);
    free(r);
}

void edge_on_req(struct conn *c, json_t *f)
{
    struct edge *edge = c->edge;
    edge->stats.reqs_in++;
    const char *t = json_string_value(json_object_get(f, "t"));
    if (strcmp(t, "state") == 0)
        c->inactive = !json_is_true(json_object_get(f, "active"));
    struct env *e = env_new(ENV_REQ);
    /* As for chat: who asks is the login's JID, never the phone's word. */
    env_set_str(e, "from", c->user->jid);
    env_set_str(e, "edge", edge->id);
    env_set_str(e, "dev", c->dev);
    env_set_json(e, "frame", json_incref(f));
    const char *id = json_string_value(json_object_get(f, "id"));
    /* "read" names the message read, not the request: nothing answers it. */
    struct forwarded *r = forwarded_new(c, strcmp(t, "read") != 0 ? id : NULL);
    publish_to_session(edge, c->user, e, on_req_published, r);
}

void edge_on_logout(struct conn *c)
{
    if (c->attached && c->user) {
        send_detach(c->edge, c->user, c->dev, ENV_LOGOUT);
        c->attached = false;
    }
    LOG(INFO, "logout", "dev=%s jid=%s", c->dev, c->user ? c->user->jid : "?");
}

void edge_on_conn_gone(struct conn *c)
{
    delivery_drop_ack(c);
    if (c->attached && c->user)
        send_detach(c->edge, c->user, c->dev, ENV_DETACH);
    c->attached = false;
    throttle_forget(c->edge, c);
    user_detach(c->edge, c);
}

/* ---- envelopes in ------------------------------------------------------ */

/* The connection of this edge an envelope names (edge + dev), if any. */
static struct conn *addressed_conn(struct edge *edge, struct env *e,
                                   struct user *u)
{
    const char *eid = env_str(e, "edge"), *dev = env_str(e, "dev");
    if (!eid || !dev || strcmp(eid, edge->id) != 0)
        return NULL;
    struct conn *c = strmap_get(&edge->conns, dev);
    return c && c->user == u && c->state == CONN_READY ? c : NULL;
}

/* An envelope for a user's phones: its "to" names the user (the bridges
 * publish for every user this edge serves on its one channel). */
static void on_user_env(struct edge *edge, struct env *e)
{
    const char *to = env_str(e, "to");
    struct user *u = to ? strmap_get(&edge->users, to) : NULL;
    if (!u) {
        /* The user's last phone here left while it was on its way. */
        LOG(DEBUG, "envelope_unclaimed", "to=%s type=%s", to ? to : "-",
            env_type_name(e->type));
        return;
    }
    struct conn *c;
    switch (e->type) {
    case ENV_CHAT:
        if (env_int(e, "seq", -1) < 0) {
            /* Every chat for a phone is numbered in the inbox first. */
            edge->stats.bad_envelopes++;
            LOG(WARN, "envelope_invalid", "jid=%s err=\"a chat without seq\"", u->jid);
            break;
        }
        for (c = u->conns; c; c = c->user_next)
            if (c->state == CONN_READY)
                delivery_live(c, e);
        break;
    case ENV_EVENT: {
        char err[200];
        if (!proto_check_event(env_json(e, "frame"), err, sizeof(err))) {
            edge->stats.bad_envelopes++;
            LOG(WARN, "event_invalid", "jid=%s err=\"%s\"", u->jid, err);
            break;
        }
        if (env_str(e, "dev")) {
            if ((c = addressed_conn(edge, e, u)))
                delivery_event(c, e);
            break;
        }
        for (c = u->conns; c; c = c->user_next)
            if (c->state == CONN_READY)
                delivery_event(c, e);
        break;
    }
    case ENV_ACK:
        if ((c = addressed_conn(edge, e, u))) {
            json_t *ids = env_json(e, "ids");
            size_t i;
            json_t *id;
            json_array_foreach(ids, i, id) {
                inflight_done(c, json_string_value(id));
                conn_send_ack(c, id);
                edge->stats.acks++;
            }
        }
        break;
    case ENV_ERROR:
        if (env_str(e, "dev")) {
            if ((c = addressed_conn(edge, e, u))) {
                if (env_str(e, "id"))
                    inflight_done(c, env_str(e, "id"));
                const char *msg = env_str(e, "msg");
                json_t *f = phone_error(env_str(e, "code"), msg ? msg : env_str(e, "code"),
                                        env_str(e, "id"));
                if (env_str(e, "reason"))
                    json_object_set_new(f, "reason", json_string(env_str(e, "reason")));
                conn_send(c, f);
            }
            break;
        }
        /* From the XMPP server (a bounce): every device of the user. */
        for (c = u->conns; c; c = c->user_next)
            if (c->state == CONN_READY)
                conn_error(c, env_str(e, "code"), env_str(e, "msg"),
                           env_str(e, "id"));
        break;
    case ENV_SESSION_END:
        if (env_str(e, "worker") && u->worker && !u->relogging &&
            strcmp(env_str(e, "worker"), u->worker) != 0) {
            /* From a worker the user has left already (its news came
             * late): the session the phones are on is another's. */
            LOG(INFO, "session_end_stale", "jid=%s worker=%s current=%s reason=%s",
                u->jid, env_str(e, "worker"), u->worker, env_str(e, "reason"));
            break;
        }
        if (strcmp(env_str(e, "reason"), "conflict") != 0) {
            /* Moved, stopping, or the XMPP server dropped it: re-open. */
            u->relogging = false;
            user_relogin(edge, u, env_str(e, "reason"));
            break;
        }
        /* Replaced by another login of the same account and resource:
         * fighting back would loop. The phones must decide. */
        for (c = u->conns; c; c = c->user_next) {
            if (c->state != CONN_READY)
                continue;
            c->attached = false;
            conn_error(c, PERR_UNAVAILABLE, "your XMPP session was replaced",
                       NULL);
            conn_bye(c, "session_ended");
        }
        break;
    default:
        edge->stats.bad_envelopes++;
        LOG(WARN, "envelope_unexpected", "jid=%s type=%s", u->jid,
            env_type_name(e->type));
        break;
    }
}

/* One envelope on the edge's channel: a login's answer, or something for
 * a user's phones. */
static void on_edge_env(struct edge *edge, struct env *e)
{
    int64_t pts = env_int(e, "pts", -1);
    if (pts > 0)
        metrics_hist_observe(edge->latency, (double)(util_wall_ms() - pts));
    if (e->type == ENV_LOGIN_OK)
        on_login_ok(edge, e);
    else if (e->type == ENV_LOGIN_FAIL)
        on_login_fail(edge, e);
    else
        on_user_env(edge, e);
}

/* An envelope decoded from the edge's channel, or NULL and why not. */
static void take_env(struct edge *edge, const char *channel, struct env *e,
                     const char *err)
{
    if (!e) {
        edge->stats.bad_envelopes++;
        LOG(WARN, "envelope_invalid", "channel=%s err=\"%s\"", channel, err);
        return;
    }
    on_edge_env(edge, e);
    env_free(e);
}

/* Everything for this edge comes on its one channel ("<prefix>:e:<id>"):
 * an envelope, or a JSON array of several (a user's envelopes stored in
 * one call, deliver.lua, in seq order). */
static void on_bus_msg(void *owner, const char *channel, const char *payload,
                       size_t len)
{
    struct edge *edge = owner;
    char err[256] = "not an array of envelopes";
    if (strcmp(channel, edge->reply_channel) != 0) {
        edge->stats.bad_envelopes++;
        LOG(WARN, "envelope_unexpected", "channel=%s", channel);
        return;
    }
    if (len == 0 || payload[0] != '[') {
        take_env(edge, channel, env_decode(payload, len, err, sizeof(err)), err);
        return;
    }
    json_t *all = len <= 64 * (size_t)ENV_MAX_BYTES ? jparse(payload, len, err, sizeof(err))
                                                    : NULL;
    if (!json_is_array(all)) {
        take_env(edge, channel, NULL, err);
        json_decref(all);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v)
        take_env(edge, channel, env_check(json_incref(v), err, sizeof(err)), err);
    json_decref(all);
}

static void on_tick(evutil_socket_t fd, short what, void *arg);

static void on_bus_state(void *owner, bool up)
{
    struct edge *edge = owner;
    if (!up)
        return;
    /* Say at once that this edge is alive: bridges drop devices of edges
     * missing from the registry. */
    on_tick(-1, 0, edge);
    /* Pub/sub lost whatever was published while the link was down: every
     * phone catches up from the inbox. */
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&edge->conns, &it); e;
         e = strmap_next(&edge->conns, &it)) {
        struct conn *c = e->value;
        if (c->state != CONN_READY)
            continue;
        /* Acks published while we were cut off are gone: ask again. */
        conn_fail_inflight(c, "the message bus reconnected, send again");
        delivery_replay(c);
    }
}

/* ---- lifecycle --------------------------------------------------------- */

#define EDGE_REGISTRY_TTL_MS 5000
/* Sockets freed since the last trim that make the next tick give free heap
 * pages back to the system (an idle TLS socket holds tens of KB). */
#define TRIM_AFTER_FREES 128
/* The pause of the listener after a failed accept(): from the first value,
 * doubling while accept() keeps failing, up to the last. */
#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 1000
/* Sockets accepted in a row before the listener lets the other events of
 * the loop run (a full listen queue is 1024 TLS set-ups). */
#define ACCEPT_BATCH 64

bool log_limit_ok(struct log_limit *l, uint64_t *suppressed)
{
    int64_t now = util_mono_ms();
    if (l->last_ms && now - l->last_ms < 1000) {
        l->suppressed++;
        return false;
    }
    l->last_ms = now;
    *suppressed = l->suppressed;
    l->suppressed = 0;
    return true;
}

/* After a storm of closes glibc keeps the freed heap, and after a burst of
 * frames the pool's free lists (jpool.h) keep blocks no idle phone needs:
 * give them back. Called by the once-a-second tick (the half second keeps
 * the extra tick of a bus reconnect from trimming twice). */
static void edge_trim(struct edge *edge)
{
    int64_t now = util_mono_ms();
    const struct edge_stats *st = &edge->stats;
    uint64_t traffic = st->msgs_in + st->msgs_out + st->reqs_in + st->events_out +
                       st->acks + st->logins_ok + st->logins_failed;
    bool quiet = traffic == edge->trim_traffic;
    edge->trim_traffic = traffic;
    struct jpool_stats pool;
    jpool_stats(&pool);
    if (quiet && pool.kept_bytes > 0) {
        jpool_trim();
        edge->freed = TRIM_AFTER_FREES; /* and the heap's free pages with it */
    }
    if (edge->freed < TRIM_AFTER_FREES || now - edge->trimmed_ms < 500)
        return;
    edge->freed = 0;
    edge->trimmed_ms = now;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Keep "<prefix>:edges" saying this edge is alive: bridges drop devices of
 * edges that vanished (killed) from their sessions. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct edge *edge = arg;
    char key[128];
    edge_trim(edge);
    snprintf(key, sizeof(key), "%s:edges", bus_prefix(edge->bus));
    if (edge->draining) {
        bus_command(edge->bus, NULL, NULL, "HDEL %s %s", key, edge->id);
        return;
    }
    bus_command(edge->bus, NULL, NULL, "HSET %s %s %lld", key, edge->id,
                (long long)(util_wall_ms() + EDGE_REGISTRY_TTL_MS));
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    struct edge *edge = arg;
    edge->accept_backoff_ms = 0;
    conn_accept(edge, fd, sa, salen);
    if (++edge->accept_run >= ACCEPT_BATCH) {
        /* Yield: accept the rest after the events already waiting. */
        struct timeval zero = {0, 0};
        evconnlistener_disable(l);
        evtimer_add(edge->accept_timer, &zero);
    }
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct edge *edge = arg;
    edge->accept_run = 0;
    evconnlistener_enable(edge->listener);
}

/* accept() failed for another reason than a retriable one (libevent
 * swallows EAGAIN, EINTR, ECONNABORTED): out of descriptors (EMFILE,
 * ENFILE) or of kernel memory (ENOBUFS, ENOMEM). The pending socket stays
 * in the listen queue, so the listener would wake at once and fail again:
 * shed that socket with the reserve descriptor and pause the listener. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct edge *edge = arg;
    int err = EVUTIL_SOCKET_ERROR();
    edge->stats.accept_failures++;
    int shed = -1;
    if (err == EMFILE || err == ENFILE) {
        if (edge->reserve_fd >= 0) {
            close(edge->reserve_fd);
            edge->reserve_fd = -1;
        }
        shed = accept(evconnlistener_get_fd(l), NULL, NULL);
        if (shed >= 0) {
            close(shed);
            edge->stats.conns_rejected++;
        }
        edge->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    int ms = edge->accept_backoff_ms;
    ms = ms ? (ms * 2 > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : ms * 2)
            : ACCEPT_BACKOFF_MIN_MS;
    edge->accept_backoff_ms = ms;
    uint64_t skipped;
    if (log_limit_ok(&edge->accept_log, &skipped))
        LOG(WARN, "accept_failed", "err=\"%s\" backoff_ms=%d shed=%d reserve=%d "
            "suppressed=%llu conns=%zu",
            evutil_socket_error_to_string(err), ms, shed >= 0,
            edge->reserve_fd >= 0, (unsigned long long)skipped, edge->conns.count);
    evconnlistener_disable(l);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(edge->accept_timer, &tv);
}

/* "127.0.0.1:7222", "[::1]:7222", "0.0.0.0:0" (port 0: the kernel picks). */
static bool parse_listen(const char *spec, struct sockaddr_storage *ss, int *len)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host))
        return false;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return false;
    memset(ss, 0, sizeof(*ss));
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (evutil_inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return false;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return true;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (evutil_inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return false;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return true;
}

struct edge *edge_new(struct event_base *base, const struct edge_cfg *cfg,
                      char *err, size_t errlen)
{
    struct edge *edge = xcalloc(1, sizeof(*edge));
    edge->base = base;
    edge->cfg = cfg;
    strmap_init(&edge->conns);
    strmap_init(&edge->users);
    strmap_init(&edge->worker_names);
    strmap_init(&edge->unauth);
    /* Taken before the listener: the one descriptor that can always be
     * freed to shed a socket when accept() runs out of them. */
    edge->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (strcmp(cfg->tls, "on") == 0) {
        if (!*cfg->tls_cert || !*cfg->tls_key) {
            snprintf(err, errlen, "tls = on needs tls_cert and tls_key "
                     "(or tls = off, for development only)");
            goto fail;
        }
        if (!(edge->ssl_ctx = tlsctx_server(cfg->tls_cert, cfg->tls_key, err, errlen)))
            goto fail;
    } else if (strcmp(cfg->tls, "off") != 0) {
        snprintf(err, errlen, "tls must be on or off");
        goto fail;
    }
    if (*cfg->edge_id) {
        if (!schema_id_ok(cfg->edge_id, sizeof(edge->id) - 1)) {
            snprintf(err, errlen, "edge_id must be 1..%zu chars of [A-Za-z0-9._:-]",
                     sizeof(edge->id) - 1);
            goto fail;
        }
        snprintf(edge->id, sizeof(edge->id), "%s", cfg->edge_id);
    } else {
        edge->id[0] = 'e';
        util_random_hex(edge->id + 1, 6);
    }
    seal_parse_key(cfg->common.cred_key, edge->cred_key);

    struct sockaddr_storage ss;
    int sslen;
    if (!parse_listen(cfg->listen, &ss, &sslen)) {
        snprintf(err, errlen, "listen: '%s' is not host:port", cfg->listen);
        goto fail;
    }
    edge->listener = evconnlistener_new_bind(
        base, accept_cb, edge, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
        (struct sockaddr *)&ss, sslen);
    if (!edge->listener) {
        snprintf(err, errlen, "listen on %s: %s", cfg->listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    evconnlistener_set_error_cb(edge->listener, accept_error_cb);
    edge->accept_timer = evtimer_new(base, accept_resume_cb, edge);

    struct bus_opts bo = {
        .host = cfg->common.redis_host,
        .port = (int)cfg->common.redis_port,
        .cluster = cfg->common.redis_cluster,
        .user = cfg->common.redis_user,
        .password = cfg->common.redis_password,
        .prefix = cfg->common.bus_prefix,
        .name = "edge",
    };
    edge->bus = bus_new(base, &bo, on_bus_msg, on_bus_state, edge);
    bus_channel(edge->bus, edge->reply_channel, sizeof(edge->reply_channel), "e",
                edge->id);
    bus_subscribe(edge->bus, edge->reply_channel);
    edge->workers = workers_new(base, edge->bus, on_workers_refreshed, edge);
    edge->throttle = throttle_new();
    edge->latency = xcalloc(1, sizeof(*edge->latency));
    if (!edge_metrics_start(edge, err, errlen))
        goto fail;
    edge->tick = event_new(base, -1, EV_PERSIST, on_tick, edge);
    edge->ack_ev = event_new(base, -1, 0, delivery_flush_acks, edge);
    edge->out_ev = event_new(base, -1, 0, flush_outgoing, edge);
    struct timeval tv = {1, 0};
    evtimer_add(edge->tick, &tv);
    return edge;
fail:
    edge_free(edge);
    return NULL;
}

void edge_free(struct edge *edge)
{
    if (!edge)
        return;
    if (edge->listener)
        evconnlistener_free(edge->listener);
    if (edge->accept_timer)
        event_free(edge->accept_timer);
    if (edge->reserve_fd >= 0)
        close(edge->reserve_fd);
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&edge->conns, &it); e;
         e = strmap_next(&edge->conns, &it))
        conn_destroy(e->value);
    conn_deadlines_free(edge);
    /* The bus first: its pending callbacks (answered with NULL) still use
     * the worker list and the maps. */
    if (edge->tick)
        event_free(edge->tick);
    if (edge->ack_ev)
        event_free(edge->ack_ev);
    free(edge->acks);
    if (edge->out_ev) {
        flush_outgoing(-1, 0, edge); /* (the bus, freed next, answers them) */
        event_free(edge->out_ev);
    }
    httpd_free(edge->httpd);
    free(edge->latency);
    bus_free(edge->bus);
    workers_free(edge->workers);
    throttle_free(edge->throttle);
    strmap_free(&edge->conns);
    strmap_free(&edge->users);
    strmap_free(&edge->worker_names);
    strmap_free(&edge->unauth);
    if (edge->ssl_ctx)
        SSL_CTX_free(edge->ssl_ctx);
    free(edge);
}

void edge_listen_addr(const struct edge *edge, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    evutil_socket_t fd = evconnlistener_get_fd(edge->listener);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, n, "?");
        return;
    }
    char host[64];
    int port;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        evutil_inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        snprintf(out, n, "[%s]:%d", host, port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        evutil_inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        snprintf(out, n, "%s:%d", host, port);
    }
}
