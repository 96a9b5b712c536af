/* session.c - one phone user's XMPP client session: lease, connect, login
 * answers, chat out with acks proven by a ping, chat in, devices, the resume
 * window, and close. Never releases a libstrophe conn inside a libstrophe
 * callback: a closed session goes to the worker's graveyard instead. */
#include "bus.h"
#include "inbox.h"
#include "jid.h"
#include "keys.h"
#include "lease.h"
#include "log.h"
#include "resume.h"
#include "schema.h"
#include "stanza.h"
#include "util.h"
#include "watchdog.h"
#include "xmppd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

static const char *const state_names[] = {"leasing", "connecting", "online",
                                          "closing"};

static void session_set_state(struct session *s, enum session_state st)
{
    LOG(DEBUG, "session_state", "jid=%s from=%s to=%s", s->jid,
        state_names[s->state], state_names[st]);
    /* Keep the worker's count of connecting sessions, so the per-pass TCP
     * check costs nothing when no session is connecting. */
    if (s->state == SESSION_CONNECTING)
        s->w->connecting--;
    if (st == SESSION_CONNECTING)
        s->w->connecting++;
    s->state = st;
}

static void hash_password(const struct session *s, const char *pass,
                          uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned len = 32;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, s->salt, sizeof(s->salt));
    EVP_DigestUpdate(md, pass, strlen(pass));
    EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
}

/* ---- answers to edges -------------------------------------------------- */

static void reply_login(struct worker *w, const char *jid, const char *edge,
                        const char *dev, const char *code, const char *msg)
{
    struct env *e = env_new(code ? ENV_LOGIN_FAIL : ENV_LOGIN_OK);
    env_set_str(e, "jid", jid);
    env_set_str(e, "edge", edge);
    env_set_str(e, "dev", dev);
    if (code) {
        env_set_str(e, "code", code);
        env_set_str(e, "msg", msg);
    } else {
        env_set_str(e, "worker", w->id);
    }
    worker_publish(w, "e", edge, e);
}

/* A login's success, with the session's resume token (resume.h). */
static void reply_login_ok(struct session *s, const char *edge, const char *dev)
{
    struct env *e = env_new(ENV_LOGIN_OK);
    char tok[SEAL_TOKEN_HEX + 1];
    seal_token_hex(s->resume, tok);
    env_set_str(e, "jid", s->jid);
    env_set_str(e, "edge", edge);
    env_set_str(e, "dev", dev);
    env_set_str(e, "worker", s->w->id);
    env_set_str(e, "resume_token", tok);
    worker_publish(s->w, "e", edge, e);
}

static void device_key(char *out, size_t n, const char *edge, const char *dev)
{
    snprintf(out, n, "%s/%s", edge, dev);
}

static void device_attach(struct session *s, const char *edge, const char *dev,
                          const char *label)
{
    char key[140];
    device_key(key, sizeof(key), edge, dev);
    strmap_put(&s->devices, key, (void *)1);
    /* A second phone (by label: the same phone reconnecting is not one). */
    if (!label || !*label)
        label = "-";
    if (!s->first_label)
        s->first_label = xstrdup(label);
    else if (strcmp(s->first_label, label) != 0)
        s->multi_device = true;
    if (s->timer && s->state == SESSION_ONLINE)
        evtimer_del(s->timer); /* a phone is back: the resume window ends */
}

static void waiter_free(struct waiter *wt)
{
    if (wt->payload) {
        OPENSSL_cleanse(wt->payload, wt->len);
        free(wt->payload);
    }
    free(wt);
}

/* Answer every waiting login: ok for those whose password is the session's
 * (when code is NULL), else code/msg. */
static void answer_waiters(struct session *s, const char *code, const char *msg)
{
    struct worker *w = s->w;
    while (s->waiters) {
        struct waiter *wt = s->waiters;
        s->waiters = wt->next;
        if (code) {
            reply_login(w, s->jid, wt->edge, wt->dev, code, msg);
        } else if (CRYPTO_memcmp(wt->pass_hash, s->pass_hash, 32) != 0) {
            w->stats.logins_auth_failed++;
            reply_login(w, s->jid, wt->edge, wt->dev, "auth_failed",
                        "wrong user or password");
        } else {
            device_attach(s, wt->edge, wt->dev, wt->label);
            w->stats.logins_ok++;
            reply_login_ok(s, wt->edge, wt->dev);
            im_on_attach(s, wt->edge, wt->dev);
        }
        waiter_free(wt);
    }
}

/* The XMPP server refused the session's password: answer the logins that
 * gave that same password. A login with another password was not tried, so
 * it is not answered: the session is marked closing and session_free runs
 * those logins again as fresh ones, each judged on its own password (one
 * wrong login must not fail the right one that came while it was in
 * flight). */
static void answer_auth_failed(struct session *s)
{
    struct waiter **pp = &s->waiters;
    while (*pp) {
        struct waiter *wt = *pp;
        if (CRYPTO_memcmp(wt->pass_hash, s->pass_hash, 32) != 0) {
            pp = &wt->next;
            continue;
        }
        *pp = wt->next;
        reply_login(s->w, s->jid, wt->edge, wt->dev, "auth_failed",
                    "wrong user or password");
        waiter_free(wt);
    }
    if (s->waiters) {
        LOG(INFO, "login_retry_others", "jid=%s", s->jid);
        session_set_state(s, SESSION_CLOSING);
    }
}

/* ---- client ids the XMPP server already has ----------------------------- */

static void acked_key(const struct session *s, char *out, size_t n)
{
    keys_user(s->w->bus, out, n, KEYS_ACKED, s->jid);
}

/* The ring is allocated at the first id: most sessions never need one. */
static void idset_init(struct idset *set, size_t cap)
{
    strmap_init(&set->map);
    set->ring = NULL;
    set->cap = cap;
    set->next = 0;
}

static void idset_free(struct idset *set)
{
    strmap_free(&set->map);
    for (size_t i = 0; set->ring && i < set->cap; i++)
        free(set->ring[i]);
    free(set->ring);
}

static bool idset_has(const struct idset *set, const char *id)
{
    return strmap_get(&set->map, id) != NULL;
}

/* Remember id (bounded: the oldest is forgotten first). */
static void idset_add(struct idset *set, const char *id)
{
    if (idset_has(set, id))
        return;
    if (!set->ring)
        set->ring = xcalloc(set->cap, sizeof(*set->ring));
    char *old = set->ring[set->next];
    if (old) {
        strmap_del(&set->map, old);
        free(old);
    }
    set->ring[set->next] = xstrdup(id);
    strmap_put(&set->map, id, (void *)1);
    set->next = (set->next + 1) % set->cap;
}

static void acked_remember(struct session *s, const char *id)
{
    idset_add(&s->acked, id);
}

/* Ids acked by earlier sessions of this user (another worker, before a
 * restart), so a phone resending after a failover is not duplicated. */
static void on_acked_loaded(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || !r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            schema_id_ok(r->element[i]->str, 64))
            acked_remember(s, r->element[i]->str);
}

/* Phones of the user that acked lately (the inbox's cursors): two or more
 * make the user a several-device user. */
static void on_devices_counted(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || !r || r->type != REDIS_REPLY_ARRAY)
        return;
    size_t devices = 0; /* (fields "~..." are the inbox's own) */
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->str[0] != '~')
            devices++;
    if (devices >= 2)
        s->multi_device = true;
}

static void devices_load(struct session *s)
{
    char key[KEYS_MAX];
    keys_user(s->w->bus, key, sizeof(key), KEYS_CURSOR, s->jid);
    bus_command(s->w->bus, on_devices_counted, xstrdup(s->jid), "HKEYS %s", key);
}

static void acked_load(struct session *s)
{
    char key[KEYS_MAX];
    acked_key(s, key, sizeof(key));
    bus_command(s->w->bus, on_acked_loaded, xstrdup(s->jid),
                "ZRANGE %s -%d -1", key, ACKED_KEEP);
}

/* Record a batch of acked ids in Redis (a day, at most ACKED_KEEP). No
 * fence: that the XMPP server has an id is true whoever writes it, and a
 * stale writer can only make a resend be acked instead of sent again, which
 * is right. One ZADD per batch; the trim and the expiry after every
 * ACKED_TRIM_EVERY ids or an hour. */
#define ACKED_TRIM_EVERY (ACKED_KEEP / 4)
static void acked_store(struct session *s, json_t *ids)
{
    char key[KEYS_MAX], now[24];
    acked_key(s, key, sizeof(key));
    snprintf(now, sizeof(now), "%lld", (long long)util_wall_ms());
    size_t n = json_array_size(ids);
    const char **argv = xcalloc(2 + 2 * n, sizeof(*argv));
    argv[0] = "ZADD";
    argv[1] = key;
    for (size_t i = 0; i < n; i++) {
        argv[2 + 2 * i] = now;
        argv[3 + 2 * i] = json_string_value(json_array_get(ids, i));
    }
    bus_command_argv(s->w->bus, NULL, NULL, (int)(2 + 2 * n), argv, NULL);
    free(argv);
    s->acked_since_trim += n;
    int64_t mono = util_mono_ms();
    if (s->acked_since_trim >= ACKED_TRIM_EVERY || !s->acked_trim_ms ||
        mono - s->acked_trim_ms > 3600 * 1000) {
        s->acked_since_trim = 0;
        s->acked_trim_ms = mono;
        bus_command(s->w->bus, NULL, NULL, "ZREMRANGEBYRANK %s 0 %d", key, -(ACKED_KEEP + 1));
        bus_command(s->w->bus, NULL, NULL, "EXPIRE %s 86400", key);
    }
}

bool session_ack_pending(const struct session *s, const char *id)
{
    for (const struct ack_batch *b = s->acks_head; b; b = b->next) {
        size_t i;
        json_t *v;
        json_array_foreach(b->ids, i, v) if (strcmp(json_string_value(v), id) == 0)
            return true;
    }
    return false;
}

/* ---- lifecycle --------------------------------------------------------- */

static struct session *session_new(struct worker *w, const char *jid)
{
    struct session *s = xcalloc(1, sizeof(*s));
    s->w = w;
    s->serial = ++w->session_serial;
    s->jid = xstrdup(jid);
    s->state = SESSION_LEASING;
    s->fd = -1;
    s->started_ms = util_mono_ms();
    util_random(s->salt, sizeof(s->salt));
    strmap_init(&s->devices);
    strmap_init(&s->presence);
    strmap_init(&s->rooms);
    snprintf(s->show, sizeof(s->show), "online");
    idset_init(&s->acked, ACKED_KEEP);
    idset_init(&s->seen, ACKED_KEEP);
    strmap_put(&w->sessions, jid, s);
    acked_load(s);
    devices_load(s);
    im_receipts_load(s);
    return s;
}

static void conn_key(char *out, size_t n, const xmpp_conn_t *conn)
{
    snprintf(out, n, "%p", (const void *)conn);
}

/* Envelopes that came for a session while it could not be sure of its lease,
 * in arrival order (session_defer). */
struct deferred {
    struct deferred *next;
    char *channel;
    char *payload;   /* len bytes, owned; wiped (a login carries a sealed password) */
    size_t len;
};

static void deferred_free(struct deferred *d)
{
    OPENSSL_cleanse(d->payload, d->len);
    free(d->payload);
    free(d->channel);
    free(d);
}

void session_free(struct session *s)
{
    session_receipts_forget(s);
    session_drop_out(s);
    struct worker *w = s->w;
    if (s->state == SESSION_CONNECTING)
        w->connecting--;
    /* Logins that came while it was closing, or that a failed login left
     * untried (answer_auth_failed): run them again now that the user has no
     * session here (outside every libstrophe callback). */
    struct waiter *again = NULL;
    if (s->state == SESSION_CLOSING && !w->stopping) {
        /* Oldest first (the list is newest first): each round of a flood
         * of logins tries the oldest password waiting, so a login is never
         * overtaken for ever by later ones. */
        while (s->waiters) {
            struct waiter *wt = s->waiters;
            s->waiters = wt->next;
            wt->next = again;
            again = wt;
        }
    }
    /* Envelopes that waited for a renewal or the catch-up: they go where
     * envelopes for a session that is gone go. */
    struct deferred *later = w->stopping ? NULL : s->deferred;
    if (later)
        s->deferred = s->deferred_tail = NULL;
    if (s->conn) {
        char key[32];
        conn_key(key, sizeof(key), s->conn);
        strmap_del(&w->by_conn, key);
        xmpp_conn_release(s->conn);
    }
    if (s->fd_ev)
        event_free(s->fd_ev);
    if (s->timer)
        event_free(s->timer);
    while (s->waiters) {
        struct waiter *wt = s->waiters;
        s->waiters = wt->next;
        waiter_free(wt);
    }
    while (s->acks_head) {
        struct ack_batch *b = s->acks_head;
        s->acks_head = b->next;
        json_decref(b->ids);
        free(b);
    }
    if (s->password) {
        OPENSSL_cleanse(s->password, strlen(s->password));
        free(s->password);
    }
    strmap_free(&s->devices);
    free(s->first_label);
    im_free(s);
    muc_free(s);
    session_iqs_free(s);
    session_deferred_free(s);
    for (size_t i = 0; i < s->nheld; i++)
        xmpp_stanza_release(s->held[i]);
    free(s->held);
    idset_free(&s->acked);
    idset_free(&s->seen);
    free(s->jid);
    free(s);
    while (again) {
        struct waiter *wt = again;
        again = wt->next;
        char err[200];
        struct env *e = env_decode(wt->payload, wt->len, err, sizeof(err));
        if (e)
            session_on_login(w, e, wt->payload, wt->len);
        env_free(e);
        waiter_free(wt);
    }
    while (later) {
        struct deferred *d = later;
        later = d->next;
        worker_dispatch(w, d->channel, d->payload, d->len);
        deferred_free(d);
    }
}

/* Take s out of service now; its memory (and libstrophe conn) is freed after
 * the current libstrophe pass. */
static void session_bury(struct session *s)
{
    struct worker *w = s->w;
    if (strmap_get(&w->sessions, s->jid) != s)
        return; /* already buried */
    strmap_del(&w->sessions, s->jid);
    if (s->token[0] && !s->lease_lost)
        lease_release(w->bus, s->jid, w->id, s->token, NULL, NULL);
    if (s->fd_ev) {
        event_free(s->fd_ev);
        s->fd_ev = NULL;
    }
    watchdog_untrack(s->fd);
    s->fd = -1;
    if (s->timer)
        evtimer_del(s->timer);
    session_drop_out(s);
    /* Unlink from the ack flush list. */
    for (struct session **pp = &w->flush; *pp; pp = &(*pp)->flush_next)
        if (*pp == s) {
            *pp = s->flush_next;
            break;
        }
    if (w->ngrave == w->capgrave) {
        w->capgrave = w->capgrave ? 2 * w->capgrave : 16;
        w->graveyard = xrealloc(w->graveyard, w->capgrave * sizeof(*w->graveyard));
    }
    w->graveyard[w->ngrave++] = s;
    worker_kick(w);
}

/* How long a session closed while it logged in waits for the login to end
 * before its stream goes anyway. */
#define CLOSE_WAIT_MS 2000

/* A login half way: TCP is up, the stream not yet online. Closing such a
 * session leaves its stream up until the login is over (session_close). */
static bool login_half_way(const struct session *s)
{
    return s->state == SESSION_CONNECTING && s->tcp_connected;
}

/* Whether s's stream stays up after a close (deferred already, or about to
 * be), and may still bind the user's resource meanwhile. */
static bool close_defers(const struct session *s)
{
    return s->close_deferred || login_half_way(s);
}

static bool ping_batches(struct session *s);

static void session_close(struct session *s, const char *reason)
{
    LOG(INFO, "session_close", "jid=%s reason=%s state=%s", s->jid, reason,
        state_names[s->state]);
    if (login_half_way(s)) {
        /* The login may be half way: libstrophe frees its SASL state only
         * when the server answers the exchange (a stream torn down before
         * that leaks it), so the stream goes once the login is over
         * (conn_handler), or after CLOSE_WAIT_MS at the latest. */
        session_set_state(s, SESSION_CLOSING);
        s->close_deferred = true;
        struct timeval tv = {CLOSE_WAIT_MS / 1000, (CLOSE_WAIT_MS % 1000) * 1000};
        evtimer_add(s->timer, &tv);
        return;
    }
    if (s->state == SESSION_ONLINE || s->state == SESSION_CONNECTING) {
        if (s->state == SESSION_ONLINE) {
            /* Messages sent and not proven yet (waiting for a ping round):
             * the server answers this ping before it ends the stream, so
             * their ids are remembered as the server's (on_ping_reply) and
             * the phone's resend after its next login is acked, not sent
             * again. */
            ping_batches(s);
            xmpp_stanza_t *p = stanza_presence(s->w->ctx, false);
            session_send(s, p);
            session_flush_out(s); /* (before the stream's end) */
        }
        session_set_state(s, SESSION_CLOSING);
        xmpp_disconnect(s->conn);
        worker_kick(s->w);
    } else if (s->state == SESSION_LEASING) {
        session_bury(s);
    }
}

/* Connect timeout, or the resume window after the last device left. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    if (s->state == SESSION_CONNECTING) {
        LOG(WARN, "session_connect_timeout", "jid=%s", s->jid);
        answer_waiters(s, "unavailable", "the XMPP server did not answer in time");
        s->w->stats.logins_unavailable++;
        session_close(s, "connect_timeout");
    } else if (s->state == SESSION_ONLINE && s->devices.count == 0) {
        session_close(s, "resume_window_over");
    } else if (s->state == SESSION_CLOSING && s->close_deferred) {
        s->close_deferred = false; /* (the server never answered the login) */
        xmpp_disconnect(s->conn);
        worker_kick(s->w);
    }
}

/* ---- libstrophe callbacks ---------------------------------------------- */

/* Has the server's side of TCP answered? libstrophe reports a refused
 * connection and a failed login alike, so the worker looks for itself: a
 * socket with a peer is connected. */
static void check_connected(struct session *s)
{
    if (s->tcp_connected || s->fd < 0)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(s->fd, (struct sockaddr *)&ss, &len) == 0)
        s->tcp_connected = true;
}

void session_check_connecting(struct worker *w)
{
    if (w->connecting == 0)
        return;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it)) {
        struct session *s = e->value;
        if (s->state == SESSION_CONNECTING)
            check_connected(s);
    }
}

static void on_fd_readable(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    check_connected(s);
    worker_kick(s->w);
}

static int sockopt_cb(xmpp_conn_t *conn, void *sock)
{
    /* libstrophe made a socket for this conn: watch it from libevent so a
     * readable socket runs libstrophe at once. */
    struct worker *w = worker_current();
    char key[32];
    conn_key(key, sizeof(key), conn);
    struct session *s = strmap_get(&w->by_conn, key);
    if (s) {
        if (s->fd_ev)
            event_free(s->fd_ev);
        s->fd_ev = event_new(w->base, *(int *)sock, EV_READ | EV_PERSIST,
                             on_fd_readable, s);
        event_add(s->fd_ev, NULL);
        if (s->fd >= 0)
            watchdog_untrack(s->fd);
        s->fd = *(int *)sock;
        watchdog_track(s->fd); /* until CONNECT: the handshake may stall */
    }
    return xmpp_sockopt_cb_keepalive(conn, sock);
}

/* The XMPP server's certificate did not verify: remember it, so the phone
 * hears "unavailable" (our trust problem), not "wrong password". */
static int certfail_cb(const xmpp_tlscert_t *cert, const char *const errormsg)
{
    struct worker *w = worker_current();
    char key[32];
    xmpp_conn_t *conn = xmpp_tlscert_get_conn(cert);
    struct session *s = NULL;
    if (conn) {
        conn_key(key, sizeof(key), conn);
        s = strmap_get(&w->by_conn, key);
    }
    LOG(WARN, "xmpp_cert_rejected", "jid=%s err=\"%s\"", s ? s->jid : "?",
        errormsg ? errormsg : "?");
    if (s)
        s->tls_failed = true;
    else
        w->cert_rejected_ms = util_mono_ms(); /* 0.12 does not say whose */
    return 0; /* reject */
}

static void mam_next(struct session *s, const char *after);

/* Count a filtered message and log it. */
static void count_filtered(struct session *s, enum filter_dir dir,
                           enum filter_reason r, const char *peer)
{
    s->w->stats.filtered[dir][r]++;
    LOG(INFO, "message_filtered", "jid=%s dir=%s peer=%s reason=%s", s->jid,
        dir == FILTER_OUT ? "out" : "in", peer, filter_reason_name(r));
}

/* Tell the sender of a refused message why (RFC 6120 policy-violation). */
static void bounce(struct session *s, const char *to, const char *id,
                   enum filter_reason r)
{
    xmpp_ctx_t *ctx = s->w->ctx;
    xmpp_stanza_t *m = xmpp_message_new(ctx, "error", to, id);
    xmpp_stanza_t *err = stanza_add(ctx, m, "error", NULL);
    xmpp_stanza_set_type(err, "modify");
    stanza_add(ctx, err, "policy-violation", STANZA_NS_STANZAS);
    xmpp_stanza_t *t = stanza_add(ctx, err, "text", STANZA_NS_STANZAS);
    xmpp_stanza_t *txt = xmpp_stanza_new(ctx);
    xmpp_stanza_set_text(txt, filter_reason_name(r));
    xmpp_stanza_add_child(t, txt);
    xmpp_stanza_release(txt);
    session_send(s, m);
}

/* The push envelope for a message that finds no phone connected, or NULL
 * when a phone is there. What it tells depends on push_preview. */
static json_t *push_for(struct session *s, const struct env *e, const char *peer)
{
    /* A phone attached, or one being welcomed (the session opened for it
     * and is not available yet): nobody to wake. */
    if (s->devices.count > 0 || s->waiters || !s->available)
        return NULL;
    s->w->stats.pushes++;
    return push_envelope(s->w->cfg, s->jid, peer, env_str(e, "room"),
                         env_str(e, "body"), env_int(e, "ts", util_wall_ms()));
}

void session_deliver_chat(struct session *s, struct env *e, const char *peer)
{
    char *masked = NULL;
    enum filter_reason r = filter_check(worker_filter(), peer, env_str(e, "body"), &masked);
    if (r == FR_MASKED) {
        count_filtered(s, FILTER_IN, r, peer);
        env_set_str(e, "body", masked);
        env_set_str(e, "filtered", "masked");
        free(masked);
    } else if (r != FR_PASS) {
        count_filtered(s, FILTER_IN, r, peer);
        if (!env_str(e, "room") && !json_is_true(env_json(e, "sent")))
            bounce(s, peer, env_str(e, "id"), r);
        env_free(e);
        return;
    }
    json_t *push = json_is_true(env_json(e, "sent")) ? NULL : push_for(s, e, peer);
    worker_deliver(s, e, push);
}

/* What identifies an incoming message when the server gave it no archive id
 * on one of the ways it came (live, or from the archive after a lost
 * session): sender's full JID, its id and a digest (FNV-1a) of the body.
 * Clients reuse ids (many count from 1 in every session): the id alone
 * would drop a new message as a copy of an old one. */
static void key_of(const char *from, const char *xid, const char *body, char *out,
                   size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *p = body; p && *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    snprintf(out, n, "%s|%s|%016llx", from, xid, (unsigned long long)h);
}

static void message_key(xmpp_ctx_t *ctx, xmpp_stanza_t *m, const char *from,
                        const char *xid, char *out, size_t n)
{
    xmpp_stanza_t *b = xmpp_stanza_get_child_by_name(m, "body");
    char *body = b ? xmpp_stanza_get_text(b) : NULL;
    key_of(from, xid, body, out, n);
    if (body)
        xmpp_free(ctx, body);
}

/* message_key for a chat envelope (from, id, body), as the stanza gave. */
static bool envelope_key(const struct env *e, char *out, size_t n)
{
    const char *from = env_str(e, "from"), *xid = env_str(e, "id"), *body = env_str(e, "body");
    if (!from || !xid || strlen(from) + strlen(xid) + 20 >= n)
        return false;
    key_of(from, xid, body, out, n);
    return true;
}

/* What a worker that lost the user could not store: stored here unless
 * this session has it already (it came here too). */
static void session_on_handover(struct session *s, const struct env *e)
{
    struct worker *w = s->w;
    char err[200], key[ENV_MAX_JID + 100];
    struct env *in = env_check(json_incref(env_json(e, "env")), err, sizeof(err));
    const char *to = in ? env_str(in, "to") : NULL;
    char bare[ENV_MAX_JID + 1];
    if (!in || (in->type != ENV_CHAT && in->type != ENV_EVENT) || !to ||
        !schema_bare_jid(to, bare, sizeof(bare)) || strcasecmp(bare, s->jid) != 0) {
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_invalid", "jid=%s type=handover err=\"%s\"", s->jid,
            in ? "not a chat or event for this user" : err);
        env_free(in);
        return;
    }
    if (in->type == ENV_CHAT) {
        const char *aid = env_str(in, "aid");
        bool has_key = envelope_key(in, key, sizeof(key));
        if ((aid && idset_has(&s->seen, aid)) || (has_key && idset_has(&s->seen, key))) {
            env_free(in);
            return;
        }
        if (aid)
            idset_add(&s->seen, aid);
        if (has_key)
            idset_add(&s->seen, key);
    }
    json_object_del(in->obj, "seq");
    json_object_del(in->obj, "epoch");
    w->stats.taken_over++;
    LOG(INFO, "delivery_taken_over", "jid=%s type=%s hops=%lld", s->jid,
        env_type_name(in->type), (long long)env_int(e, "hops", 0));
    worker_deliver_handed(s, in, (int)env_int(e, "hops", 0));
}

bool session_prep_stanza(struct session *s, xmpp_stanza_t *st)
{
    char err[200];
    if (stanza_prep_addresses(st, err, sizeof(err)))
        return true;
    s->w->stats.bad_stanzas++;
    LOG(WARN, "stanza_bad_jid", "jid=%s name=%s err=\"%s\"", s->jid,
        xmpp_stanza_get_name(st) ? xmpp_stanza_get_name(st) : "?", err);
    return false;
}

static void session_undefer(struct session *s);
static void session_renew(struct session *s);

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    struct worker *w = s->w;
    if (!session_prep_stanza(s, st))
        return 1;
    if (archive_on_message(s, st))
        return 1; /* a page of history a phone asked for */
    /* A message from the archive (catching up after a lost session), or a
     * live one; either way identified by its archive id and its sender's
     * id, so the one that comes both ways reaches the inbox once. */
    const char *aid = NULL;
    bool sent = false;
    xmpp_stanza_t *m = s->mam_qid[0] ? stanza_mam_result(st, s->jid, s->mam_qid, &aid) : NULL;
    if (m && !session_prep_stanza(s, m))
        return 1;
    if (!m && s->catching_up) {
        /* Live, while the archive is read: after what it holds (older). */
        if (s->nheld == s->capheld) {
            s->capheld = s->capheld ? 2 * s->capheld : 16;
            s->held = xrealloc(s->held, s->capheld * sizeof(*s->held));
        }
        s->held[s->nheld++] = xmpp_stanza_clone(st);
        return 1;
    }
    if (m) {
        const char *to = xmpp_stanza_get_to(m);
        char bare[ENV_MAX_JID + 1];
        if (!to || !schema_bare_jid(to, bare, sizeof(bare)) || strcasecmp(bare, s->jid) != 0) {
            /* One the user sent: not for the phone. Perhaps a phone's
             * message that the worker before this one sent and could not
             * ack (it died or froze): the server has it, so a resend of
             * that id is acked, not sent twice. */
            const char *xid = xmpp_stanza_get_id(m);
            if (xid && schema_id_ok(xid, 64))
                acked_remember(s, xid);
            return 1;
        }
    } else {
        aid = stanza_archive_id(st, s->jid);
        /* A carbon: what another client of the user sent or received. */
        if (!(m = im_unwrap_carbon(s, st, &sent)))
            return 1;
        if (m != st && !session_prep_stanza(s, m))
            return 1;
        if (!sent)
            im_on_signals(s, m); /* receipts, read markers, typing */
        if (muc_on_message(s, m))
            return 1;
    }
    char key[ENV_MAX_JID + 100];
    const char *from = xmpp_stanza_get_from(m), *xid = xmpp_stanza_get_id(m);
    bool has_key = from && xid && strlen(from) + strlen(xid) + 20 < sizeof(key);
    if (has_key)
        message_key(w->ctx, m, from, xid, key, sizeof(key));
    if ((aid && idset_has(&s->seen, aid)) || (has_key && idset_has(&s->seen, key)))
        return 1;
    struct env *e;
    char err[200];
    switch (stanza_message_to_env(w->ctx, m, s->jid, &e, err, sizeof(err))) {
    case STANZA_ENVELOPE:
        if (e->type == ENV_CHAT) {
            w->stats.msgs_from_xmpp++;
            if (aid) {
                env_set_str(e, "aid", aid);
                idset_add(&s->seen, aid);
            }
            if (has_key)
                idset_add(&s->seen, key);
            const char *to = xmpp_stanza_get_to(m);
            if (sent) {
                if (!to || !schema_jid_ok(to, ENV_MAX_JID)) {
                    env_free(e);
                    break;
                }
                env_set_json(e, "sent", json_true());
                env_set_str(e, "with", to);
            } else if (xid && schema_id_ok(xid, 64) &&
                       xmpp_stanza_get_child_by_name_and_ns(m, "request", STANZA_NS_RECEIPTS)) {
                env_set_json(e, "rr", json_true()); /* answered once a phone acks */
            }
            session_deliver_chat(s, e, sent ? to : from);
        } else if (m == st) {
            worker_to_phones(w, s, e, true);
        } else {
            env_free(e); /* an old bounce from the archive or a copy: not news */
        }
        break;
    case STANZA_INVALID:
        w->stats.bad_stanzas++;
        LOG(WARN, "stanza_invalid", "jid=%s err=\"%s\"", s->jid, err);
        break;
    case STANZA_IGNORE:
        break;
    }
    return 1;
}

/* ---- catching up from the server's archive (XEP-0313) -------------------- */

#define MAM_PAGE 100
#define MAM_MAX_PAGES 20
/* A catch-up the archive does not finish in this long is given up: what it
 * held back (live messages, the phones' envelopes) goes on. */
#define MAM_CATCH_UP_MS 5000

/* The catch-up is over (or there was none): what it found is on its way to
 * the inbox, so what came live meanwhile (newer: the server flushes offline
 * messages at the initial presence) goes now, after it, and so do the
 * phones' envelopes that waited (a resend of what the catch-up showed the
 * server has is acked, not sent twice). */
static void catch_up_done(struct session *s, const char *how)
{
    if (!s->catching_up)
        return;
    s->catching_up = false;
    LOG(DEBUG, "mam_catch_up_done", "jid=%s how=%s pages=%d held=%zu", s->jid, how,
        s->mam_pages, s->nheld);
    xmpp_stanza_t **held = s->held;
    size_t n = s->nheld;
    s->held = NULL;
    s->nheld = s->capheld = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->state == SESSION_ONLINE)
            on_message(s->conn, held[i], s);
        xmpp_stanza_release(held[i]);
    }
    free(held);
    if (util_mono_ms() < s->lease_until)
        session_undefer(s);
    else
        session_renew(s);
}

static int catch_up_timeout(xmpp_conn_t *conn, void *userdata)
{
    struct session *s = userdata;
    if (s->catching_up)
        LOG(WARN, "mam_catch_up_slow", "jid=%s pages=%d", s->jid, s->mam_pages);
    catch_up_done(s, "timeout");
    return 0; /* once */
}

/* The archive query's answer: <fin complete='true'/> or the last id of the
 * page, to ask for the next one. */
static int on_mam_fin(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    xmpp_stanza_t *fin = xmpp_stanza_get_child_by_name_and_ns(st, "fin", "urn:xmpp:mam:2");
    const char *complete = fin ? xmpp_stanza_get_attribute(fin, "complete") : NULL;
    xmpp_stanza_t *set = fin ? xmpp_stanza_get_child_by_name(fin, "set") : NULL;
    xmpp_stanza_t *last = set ? xmpp_stanza_get_child_by_name(set, "last") : NULL;
    char *last_id = last ? xmpp_stanza_get_text(last) : NULL;
    bool more = fin && (!complete || strcmp(complete, "true") != 0) && last_id &&
                schema_id_ok(last_id, 64) && s->mam_pages < MAM_MAX_PAGES;
    if (!fin)
        LOG(WARN, "mam_failed", "jid=%s type=%s", s->jid,
            xmpp_stanza_get_type(st) ? xmpp_stanza_get_type(st) : "?");
    if (more) {
        mam_next(s, last_id);
    } else {
        s->mam_qid[0] = '\0';
        catch_up_done(s, fin ? "complete" : "failed");
    }
    if (last_id)
        xmpp_free(s->w->ctx, last_id);
    return 0;
}

static void mam_next(struct session *s, const char *after)
{
    struct worker *w = s->w;
    char iq_id[24];
    snprintf(s->mam_qid, sizeof(s->mam_qid), "imbq%llu", (unsigned long long)++w->next_ping);
    snprintf(iq_id, sizeof(iq_id), "imbm%llu", (unsigned long long)w->next_ping);
    s->mam_pages++;
    xmpp_id_handler_add(s->conn, on_mam_fin, iq_id, s);
    struct mam_query mq = {.queryid = s->mam_qid, .after = after, .max = MAM_PAGE};
    xmpp_stanza_t *q = stanza_mam_query(w->ctx, iq_id, &mq);
    session_send(s, q);
}

/* The archive id of the newest message stored for the user: if there is
 * one, ask the archive what came after it (a session that died may have
 * taken messages with it). */
static void on_last_aid(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || s->state != SESSION_ONLINE)
        return;
    if (!r || r->type != REDIS_REPLY_STRING || !schema_id_ok(r->str, 64)) {
        catch_up_done(s, "nothing stored");
        return;
    }
    LOG(INFO, "mam_catch_up", "jid=%s after=%s", s->jid, r->str);
    if (s->available) {
        mam_next(s, r->str);
    } else {
        /* Asked once the initial presence is out: a message that comes
         * while the user has no available resource is archived (and, for a
         * client that reads the archive, not stored offline), so the query
         * must come after it to see it. */
        snprintf(s->catch_up_after, sizeof(s->catch_up_after), "%s", r->str);
    }
}

static void mam_catch_up(struct session *s)
{
    s->catching_up = true;
    xmpp_timed_handler_add(s->conn, catch_up_timeout, MAM_CATCH_UP_MS, s);
    inbox_last_aid(s->w->bus, s->jid, on_last_aid, xstrdup(s->jid));
}

static int on_ping_reply(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    const char *id = xmpp_stanza_get_id(st);
    /* The server answered the ping: every stanza sent before it on this
     * stream was processed. Ack those batches, in order. */
    while (s->acks_head && id && strcmp(s->acks_head->ping_id, id) == 0) {
        struct ack_batch *b = s->acks_head;
        s->acks_head = b->next;
        if (!s->acks_head)
            s->acks_tail = NULL;
        size_t i;
        json_t *v;
        json_array_foreach(b->ids, i, v) acked_remember(s, json_string_value(v));
        acked_store(s, b->ids);
        struct env *e = env_new(ENV_ACK);
        env_set_str(e, "to", s->jid);
        s->w->stats.acks += json_array_size(b->ids);
        env_set_json(e, "ids", b->ids);
        env_set_str(e, "edge", b->edge);
        env_set_str(e, "dev", b->dev);
        worker_to_phones(s->w, s, e, true);
        free(b);
    }
    /* Stanzas sent while that ping was out are covered by the next one. */
    if (s->acks_head && !s->acks_head->ping_id[0] && !s->ping_queued) {
        s->ping_queued = true;
        s->flush_next = s->w->flush;
        s->w->flush = s;
        worker_kick(s->w);
    }
    return 0; /* one-shot */
}

static void session_hand_over(struct session *s, const char *reason);

/* session_end to the user's phones: the session they were on is over. It
 * names this worker, so that an edge can tell one that comes late, from a
 * worker the user has left already. */
static void session_announce_end(struct session *s, const char *reason)
{
    struct env *e = env_new(ENV_SESSION_END);
    env_set_str(e, "to", s->jid);
    env_set_str(e, "reason", reason);
    env_set_str(e, "worker", s->w->id);
    worker_to_phones(s->w, s, e, true);
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                         xmpp_stream_error_t *stream_error, void *userdata)
{
    struct session *s = userdata;
    struct worker *w = s->w;
    if (event == XMPP_CONN_CONNECT && s->close_deferred) {
        /* Closed while it logged in (session_close): now it may go. */
        s->close_deferred = false;
        evtimer_del(s->timer);
        xmpp_disconnect(conn);
        worker_kick(w);
        return;
    }
    if (event == XMPP_CONN_CONNECT) {
        watchdog_untrack(s->fd);
        session_set_state(s, SESSION_ONLINE);
        evtimer_del(s->timer);
        /* The server took the password: keep it sealed for the edges'
         * re-logins (resume.h), then forget it. */
        char holder[LEASE_HOLDER_MAX];
        lease_holder(holder, w->id, s->token);
        if (!resume_store(w->bus, w->cred_key, s->jid, holder, s->resume,
                          s->resume_new ? s->password : NULL, NULL, NULL))
            LOG(WARN, "resume_unsealed", "jid=%s", s->jid);
        s->resume_new = false;
        OPENSSL_cleanse(s->password, strlen(s->password));
        free(s->password);
        s->password = NULL;
        xmpp_handler_add(conn, on_message, NULL, "message", NULL, s);
        xmpp_handler_add(conn, im_on_presence, NULL, "presence", NULL, s);
        xmpp_handler_add(conn, im_on_iq, NULL, "iq", NULL, s);
        /* The archive catch-up: from now on, live messages and the phones'
         * envelopes wait for it; its query goes out after the initial
         * presence (session_available). */
        mam_catch_up(s);
        im_on_online(s);  /* carbons, then the user's presence */
        muc_on_online(s); /* rooms the user was in */
        /* The phones are welcomed once the initial presence is out
         * (session_available, after im.c loaded the user's presence). */
        worker_kick(w);
        return;
    }
    /* DISCONNECT (or FAIL, never raised in 0.12 but handled alike). */
    enum session_state was = s->state;
    if (was == SESSION_CONNECTING) {
        /* libstrophe reports a refused or failed TCP connect with an errno,
         * a failed SASL exchange with none: tell the phone which. */
        const char *code = "auth_failed", *msg = "wrong user or password";
        char text[200];
        if (s->tls_failed || (w->cert_rejected_ms &&
                              util_mono_ms() - w->cert_rejected_ms < 2000)) {
            code = "unavailable";
            msg = "the XMPP server's certificate is not trusted";
            w->stats.logins_unavailable++;
        } else if (error || !s->tcp_connected) {
            code = "unavailable";
            snprintf(text, sizeof(text), "the XMPP server is unreachable%s%s",
                     error ? ": " : "", error ? strerror(error) : "");
            msg = text;
            w->stats.logins_unavailable++;
        } else if (stream_error && stream_error->type == XMPP_SE_HOST_UNKNOWN) {
            /* Permanent: the server does not host the JID's domain. */
            const char *at = strchr(s->jid, '@');
            code = "unknown_domain";
            snprintf(text, sizeof(text), "the XMPP server does not host %s",
                     at ? at + 1 : s->jid);
            msg = text;
            w->stats.logins_auth_failed++;
        } else if (stream_error) {
            /* Not the user's password: the server refuses the bridge (e.g.
             * ejabberd's mod_fail2ban bans its address after failed logins
             * in a row, policy-violation). The phone gets the condition;
             * the server's text (it may name the bridge's address) goes to
             * the operator's log only. */
            const char *cond = stanza_stream_error_name(stream_error->type);
            char why[160];
            stanza_stream_error_text(stream_error, why, sizeof(why));
            LOG(WARN, "xmpp_refused", "jid=%s condition=%s text=\"%s\"", s->jid, cond, why);
            code = "unavailable";
            snprintf(text, sizeof(text), "the XMPP server refused the connection: %s", cond);
            msg = text;
            w->stats.logins_unavailable++;
        } else {
            w->stats.logins_auth_failed++;
        }
        LOG(INFO, "session_login_failed", "jid=%s code=%s error=%d", s->jid,
            code, error);
        if (strcmp(code, "auth_failed") == 0)
            answer_auth_failed(s);
        else
            answer_waiters(s, code, msg);
    } else if (was == SESSION_ONLINE) {
        const char *reason = stream_error && stream_error->type == XMPP_SE_CONFLICT
                                 ? "conflict"
                                 : "xmpp_disconnected";
        LOG(WARN, "session_lost", "jid=%s reason=%s error=%d", s->jid, reason,
            error);
        /* Sent but not confirmed by the server: the phones must resend. */
        for (struct ack_batch *b = s->acks_head; b; b = b->next) {
            size_t i;
            json_t *v;
            json_array_foreach(b->ids, i, v)
                session_error(s, b->edge, b->dev, json_string_value(v), "unavailable", NULL,
                              "the XMPP session dropped before the server confirmed it, send again");
        }
        session_announce_end(s, reason);
    } else {
        LOG(INFO, "session_closed", "jid=%s", s->jid);
    }
    if (s->end_reason) {
        session_hand_over(s, s->end_reason); /* (session_close_all) */
        s->end_reason = NULL;
    }
    session_bury(s);
}

void session_available(struct session *s)
{
    if (s->available)
        return;
    s->available = true;
    LOG(INFO, "session_online", "jid=%s ms=%lld", s->jid,
        (long long)(util_mono_ms() - s->started_ms));
    answer_waiters(s, NULL, NULL);
    if (s->catch_up_after[0]) {
        mam_next(s, s->catch_up_after);
        s->catch_up_after[0] = '\0';
    }
    if (s->devices.count == 0)
        session_close(s, "no_device");
    worker_kick(s->w);
}

/* ---- connect ------------------------------------------------------------ */

static void session_connect(struct session *s)
{
    struct worker *w = s->w;
    const struct xmppd_cfg *cfg = w->cfg;
    s->conn = xmpp_conn_new(w->ctx);
    long flags = XMPP_CONN_FLAG_DISABLE_SM;
    if (!strcmp(cfg->xmpp_tls, "disabled"))
        flags |= XMPP_CONN_FLAG_DISABLE_TLS;
    else if (!strcmp(cfg->xmpp_tls, "trust"))
        flags |= XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS;
    else
        flags |= XMPP_CONN_FLAG_MANDATORY_TLS;
    xmpp_conn_set_flags(s->conn, flags);
    if (*cfg->xmpp_cafile)
        xmpp_conn_set_cafile(s->conn, cfg->xmpp_cafile);
    char full[1200];
    snprintf(full, sizeof(full), "%s/%s", s->jid, cfg->xmpp_resource);
    xmpp_conn_set_jid(s->conn, full);
    xmpp_conn_set_pass(s->conn, s->password);
    xmpp_conn_set_sockopt_callback(s->conn, sockopt_cb);
    xmpp_conn_set_certfail_handler(s->conn, certfail_cb);
    char key[32];
    conn_key(key, sizeof(key), s->conn);
    strmap_put(&w->by_conn, key, s);
    session_set_state(s, SESSION_CONNECTING);
    s->timer = evtimer_new(w->base, on_timer, s);
    struct timeval tv = {cfg->connect_timeout, 0};
    evtimer_add(s->timer, &tv);
    if (xmpp_connect_client(s->conn, cfg->xmpp_host,
                            (unsigned short)cfg->xmpp_port, conn_handler, s) != 0) {
        LOG(WARN, "session_connect_failed", "jid=%s", s->jid);
        answer_waiters(s, "unavailable", "cannot connect to the XMPP server");
        w->stats.logins_unavailable++;
        session_bury(s);
        return;
    }
    worker_kick(w);
}

/* ---- login -------------------------------------------------------------- */

/* A login handed to the worker that holds the user's lease. Kept until
 * that lease has had time to lapse: a holder that hangs (a paused VM, a
 * swap storm) still takes the login off its channel but answers nothing,
 * so the login runs here once its lease is gone. In the worker's list. */
struct forward {
    struct worker *w;
    char *jid;
    char *owner;           /* the lease holder it went to */
    char token[LEASE_TOKEN_MAX]; /* and its token then */
    int64_t ttl_ms;        /* the time its lease had left */
    char edge[65], dev[65];
    char *payload;         /* the login envelope, to run here if the holder is dead */
    size_t len;
    struct event *recheck; /* when the holder's lease should have been renewed */
    struct forward *prev, *next;
};

static void forward_free(struct forward *f)
{
    struct worker *w = f->w;
    if (f->prev)
        f->prev->next = f->next;
    else if (w->forwards == f)
        w->forwards = f->next;
    if (f->next)
        f->next->prev = f->prev;
    if (f->recheck)
        event_free(f->recheck);
    OPENSSL_cleanse(f->payload, f->len);
    free(f->payload);
    free(f->owner);
    free(f->jid);
    free(f);
}

void session_forwards_free(struct worker *w)
{
    while (w->forwards)
        forward_free(w->forwards);
}

/* The holder hangs: take its lease if it lapsed, and run the login here. */
static void on_recheck_taken(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    struct forward *f = data;
    struct lease_answer a;
    if (lease_parse(r, &a) && strcmp(a.holder, w->id) == 0) {
        /* Ours now: the session the login makes here finds it so (a lease
         * this worker holds is handed to its next session of the user). */
        char err[200];
        struct env *e = env_decode(f->payload, f->len, err, sizeof(err));
        if (e) {
            LOG(WARN, "lease_taken_over", "jid=%s hung_owner=%s", f->jid, f->owner);
            session_on_login(w, e, f->payload, f->len);
            env_free(e);
        }
    }
    forward_free(f);
}

/* The holder's registry entry: a holder that still promises to be alive
 * took the login off its channel and answered it (its lease may simply be
 * gone because that session ended); one whose promise ran out with its
 * lease hangs, and the login runs here. */
static void on_holder_checked(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    struct forward *f = data;
    long long expires = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    if (!r || r->type == REDIS_REPLY_ERROR || expires > util_wall_ms() || w->stopping) {
        forward_free(f);
        return;
    }
    lease_take(w->bus, f->jid, w->id, "", w->cfg->lease_ms, on_recheck_taken, f);
}

static void recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    struct forward *f = arg;
    if (f->w->stopping) {
        forward_free(f);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "%s:workers", bus_prefix(f->w->bus));
    const char *argv[] = {"HGET", key, f->owner};
    bus_command_argv(f->w->bus, on_holder_checked, f, 3, argv, NULL);
}

static void on_stolen(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    struct forward *f = data;
    char err[200];
    struct env *e = r ? env_decode(f->payload, f->len, err, sizeof(err)) : NULL;
    if (e) {
        LOG(WARN, "lease_taken_over", "jid=%s dead_owner=%s", f->jid, f->owner);
        session_on_login(w, e, f->payload, f->len);
        env_free(e);
    } else {
        reply_login(w, f->jid, f->edge, f->dev, "unavailable",
                    "message bus unavailable, retry soon");
    }
    forward_free(f);
}

static void on_forwarded(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    struct forward *f = data;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        if (w->stopping) {
            forward_free(f);
            return;
        }
        f->recheck = evtimer_new(w->base, recheck_cb, f);
        int64_t ms = f->ttl_ms + 100;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(f->recheck, &tv);
        return;
    }
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        reply_login(w, f->jid, f->edge, f->dev, "unavailable",
                    "message bus unavailable, retry soon");
        forward_free(f);
        return;
    }
    /* Nobody listens on the holder's channel: it died without releasing
     * the lease. Drop the lease if it is still that holder's (never a live
     * one's) and log in here instead of waiting for it to expire. */
    lease_release(w->bus, f->jid, f->owner, f->token, on_stolen, f);
}

/* A lease request in flight: for whom, and when it was sent (a lease is
 * sure to last lease_ms from then). */
struct lease_req {
    char *jid;
    uint64_t serial;  /* of the session it was for: a later session of the
                         same user must not take its answer */
    int64_t sent_ms;
};

/* The session a lease request was for (NULL if gone, or replaced by a new
 * session of the user meanwhile), and when the request was sent; frees lr. */
static struct session *lease_req_done(struct worker *w, struct lease_req *lr,
                                      int64_t *sent_ms)
{
    struct session *s = strmap_get(&w->sessions, lr->jid);
    if (s && s->serial != lr->serial)
        s = NULL;
    *sent_ms = lr->sent_ms;
    free(lr->jid);
    free(lr);
    return s;
}

static void on_lease_acquired(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    int64_t sent_ms;
    struct lease_answer a;
    const struct lease_req *lr = data;
    if (!strmap_get(&w->sessions, lr->jid) && lease_parse(r, &a) &&
        strcmp(a.holder, w->id) == 0) {
        /* The session went while its lease was being taken (a stopping
         * worker buries the sessions still leasing): let the lease go now
         * rather than hold the user for lease_ms. (No other session of
         * the user here: a newer one would share the token.) */
        lease_release(w->bus, lr->jid, w->id, a.token, NULL, NULL);
    }
    struct session *s = lease_req_done(w, data, &sent_ms);
    if (!s || s->state != SESSION_LEASING)
        return;
    if (!lease_parse(r, &a) || !a.holder[0]) {
        answer_waiters(s, "unavailable", "message bus unavailable, retry soon");
        session_bury(s);
        return;
    }
    if (strcmp(a.holder, w->id) == 0) {
        snprintf(s->token, sizeof(s->token), "%s", a.token);
        s->lease_until = sent_ms + w->cfg->lease_ms;
        session_connect(s);
        return;
    }
    /* Another worker holds the session: hand the logins to it. */
    LOG(INFO, "login_forward", "jid=%s owner=%s ttl_ms=%lld", s->jid, a.holder,
        (long long)a.ttl_ms);
    char ch[128];
    bus_channel(w->bus, ch, sizeof(ch), "w", a.holder);
    while (s->waiters) {
        struct waiter *wt = s->waiters;
        s->waiters = wt->next;
        struct forward *f = xcalloc(1, sizeof(*f));
        f->w = w;
        f->next = w->forwards;
        if (w->forwards)
            w->forwards->prev = f;
        w->forwards = f;
        f->jid = xstrdup(s->jid);
        f->owner = xstrdup(a.holder);
        snprintf(f->token, sizeof(f->token), "%s", a.token);
        f->ttl_ms = a.ttl_ms;
        memcpy(f->edge, wt->edge, sizeof(f->edge));
        memcpy(f->dev, wt->dev, sizeof(f->dev));
        f->payload = wt->payload;
        f->len = wt->len;
        wt->payload = NULL;
        bus_publish(w->bus, ch, f->payload, f->len, on_forwarded, f);
        waiter_free(wt);
    }
    session_bury(s);
}

/* Take (held "") or renew (held: the session's token) s's lease. */
static void lease_request(struct session *s, const char *held, bus_reply_cb *cb)
{
    struct lease_req *lr = xcalloc(1, sizeof(*lr));
    lr->jid = xstrdup(s->jid);
    lr->serial = s->serial;
    lr->sent_ms = util_mono_ms();
    lease_take(s->w->bus, s->jid, s->w->id, held, s->w->cfg->lease_ms, cb, lr);
}

static void login_with(struct worker *w, struct env *e, const char *payload,
                       size_t len, char *pass, const uint8_t *token);

/* A re-login with a resume token waits for the sealed password. */
struct resume_req {
    struct worker *w;
    char *payload; /* the login envelope, wiped when freed */
    size_t len;
    uint8_t token[SEAL_TOKEN_BYTES];
};

static void on_resume_fetched(void *owner, void *data, redisReply *r)
{
    struct resume_req *rr = data;
    struct worker *w = rr->w;
    char err[200];
    struct env *e = env_decode(rr->payload, rr->len, err, sizeof(err));
    if (e) {
        const char *jid = env_str(e, "jid"), *edge = env_str(e, "edge"),
                   *dev = env_str(e, "dev");
        if (!r || r->type == REDIS_REPLY_ERROR) {
            /* Redis away: the edge tries again (its re-login backs off). */
            reply_login(w, jid, edge, dev, "unavailable", "message bus unavailable, retry soon");
        } else {
            char *pass = r->type == REDIS_REPLY_STRING
                             ? resume_open(w->cred_key, jid, rr->token, r->str)
                             : NULL;
            struct session *s = strmap_get(&w->sessions, jid);
            if (pass && w->stopping) {
                /* (What dispatch_login does, now that time has passed.) */
                seal_wipe_free(pass);
                reply_login(w, jid, edge, dev, "unavailable", "this bridge is stopping, retry");
            } else if (pass && s && session_defer(s, w->channel, rr->payload, rr->len)) {
                seal_wipe_free(pass); /* (run again, token and all, once the lease is sure) */
            } else if (pass) {
                login_with(w, e, rr->payload, rr->len, pass, rr->token);
            } else {
                /* Expired, gone with Redis, or stored under another token
                 * (a later login's): the phones log in again. */
                LOG(INFO, "resume_lost", "jid=%s edge=%s found=%s", jid, edge,
                    r->type == REDIS_REPLY_STRING ? "other" : "none");
                reply_login(w, jid, edge, dev, ENV_RESUME_LOST,
                            "the session must be opened again with the password");
            }
        }
        env_free(e);
    }
    OPENSSL_cleanse(rr->payload, rr->len);
    free(rr->payload);
    OPENSSL_cleanse(rr->token, sizeof(rr->token));
    free(rr);
}

void session_on_login(struct worker *w, struct env *e, const char *payload,
                      size_t len)
{
    const char *jid = env_str(e, "jid"), *edge = env_str(e, "edge"),
               *dev = env_str(e, "dev");
    /* The edge prepared it (jid.h); one that is not prepared would open a
     * second session for the same account. */
    if (strchr(jid, '/') || !jid_is_prepared(jid)) {
        w->stats.bad_envelopes++;
        LOG(WARN, "login_jid_unprepared", "edge=%s", edge ? edge : "-");
        return;
    }
    const char *cred = env_str(e, "cred"), *tok = env_str(e, "resume_token");
    if (!cred == !tok) {
        w->stats.bad_envelopes++;
        LOG(WARN, "login_bad_credentials", "jid=%s edge=%s hint=\"a login carries "
            "cred or resume_token, one of the two\"", jid, edge);
        reply_login(w, jid, edge, dev, "unavailable", "the login could not be read");
        return;
    }
    if (tok) {
        struct resume_req *rr = xcalloc(1, sizeof(*rr));
        if (!seal_token_parse(tok, rr->token)) {
            free(rr);
            w->stats.bad_envelopes++;
            reply_login(w, jid, edge, dev, ENV_RESUME_LOST, "not a resume token");
            return;
        }
        rr->w = w;
        rr->payload = xstrndup(payload, len);
        rr->len = len;
        resume_fetch(w->bus, jid, on_resume_fetched, rr);
        return;
    }
    char *pass = seal_decrypt(w->cred_key, jid, cred, util_wall_ms(), 5 * 60 * 1000);
    if (!pass) {
        /* Other logins open with this key: this one was sealed for another
         * user, altered or replayed late, by whoever can publish on the bus. */
        if (w->cred_opened_ms && util_mono_ms() - w->cred_opened_ms < 10 * 60 * 1000)
            LOG(WARN, "cred_rejected", "jid=%s edge=%s hint=\"sealed for another user, "
                "altered or too old; other logins open with this key\"", jid, edge);
        else
            LOG(ERROR, "cred_unreadable", "jid=%s edge=%s hint=\"cred_key differs "
                "between edge and xmppd, or clocks differ by over 5 minutes\"", jid, edge);
        reply_login(w, jid, edge, dev, "unavailable",
                    "the bridge could not read the credentials");
        return;
    }
    w->cred_opened_ms = util_mono_ms();
    login_with(w, e, payload, len, pass, NULL);
}

/* A login whose password is known (pass: owned, wiped here): from the
 * sealed cred, or opened with a resume token (token: then the session, if
 * one starts, keeps that token). */
static void login_with(struct worker *w, struct env *e, const char *payload,
                       size_t len, char *pass, const uint8_t *token)
{
    const char *jid = env_str(e, "jid"), *edge = env_str(e, "edge"),
               *dev = env_str(e, "dev");
    struct session *s = strmap_get(&w->sessions, jid);
    if (!s && w->stopping) {
        /* (A login that waited, for a password or a lease, past the stop:
         * a session opened now would be one session_close_all never saw.) */
        reply_login(w, jid, edge, dev, "unavailable", "this bridge is stopping, retry");
        seal_wipe_free(pass);
        return;
    }
    if (!s && w->sessions.count >= (size_t)w->cfg->max_sessions) {
        reply_login(w, jid, edge, dev, "unavailable", "this bridge is full");
        seal_wipe_free(pass);
        return;
    }
    if (!s) {
        s = session_new(w, jid);
        s->password = pass;
        hash_password(s, pass, s->pass_hash);
        pass = NULL;
        if (token) {
            memcpy(s->resume, token, SEAL_TOKEN_BYTES);
        } else {
            util_random(s->resume, SEAL_TOKEN_BYTES);
            s->resume_new = true;
        }
        lease_request(s, "", on_lease_acquired);
    }
    uint8_t hash[32];
    hash_password(s, pass ? pass : s->password, hash);
    seal_wipe_free(pass);
    /* Online but the initial presence not out yet: wait like the others. */
    enum session_state st = s->state;
    if (st == SESSION_ONLINE && !s->available)
        st = SESSION_CONNECTING;
    switch (st) {
    case SESSION_LEASING:
    case SESSION_CONNECTING: {
        struct waiter *wt = xcalloc(1, sizeof(*wt));
        snprintf(wt->edge, sizeof(wt->edge), "%s", edge);
        snprintf(wt->dev, sizeof(wt->dev), "%s", dev);
        snprintf(wt->label, sizeof(wt->label), "%s",
                 env_str(e, "label") ? env_str(e, "label") : "");
        memcpy(wt->pass_hash, hash, 32);
        wt->payload = xstrndup(payload, len);
        wt->len = len;
        wt->next = s->waiters;
        s->waiters = wt;
        break;
    }
    case SESSION_ONLINE:
        if (CRYPTO_memcmp(hash, s->pass_hash, 32) != 0) {
            w->stats.logins_auth_failed++;
            reply_login(w, jid, edge, dev, "auth_failed", "wrong user or password");
        } else {
            device_attach(s, edge, dev, env_str(e, "label"));
            w->stats.logins_ok++;
            w->stats.logins_reused++;
            LOG(INFO, "session_reused", "jid=%s edge=%s dev=%s", jid, edge, dev);
            reply_login_ok(s, edge, dev);
            im_on_attach(s, edge, dev);
        }
        break;
    case SESSION_CLOSING: {
        /* Closing (a logout a moment ago): wait for it, then start anew. */
        struct waiter *wt = xcalloc(1, sizeof(*wt));
        snprintf(wt->edge, sizeof(wt->edge), "%s", edge);
        snprintf(wt->dev, sizeof(wt->dev), "%s", dev);
        wt->payload = xstrndup(payload, len);
        wt->len = len;
        wt->next = s->waiters;
        s->waiters = wt;
        break;
    }
    }
}

/* The resume window starts when the last device is gone. */
static void last_device_gone(struct session *s, bool logout)
{
    if (s->devices.count > 0 || s->state != SESSION_ONLINE)
        return;
    if (logout)
        push_on_logout(s);
    if (logout || s->w->cfg->resume_window == 0) {
        session_close(s, logout ? "logout" : "detach");
    } else {
        struct timeval tv = {s->w->cfg->resume_window, 0};
        evtimer_add(s->timer, &tv);
    }
}

/* ---- envelopes for an open session ---------------------------------------- */

static void queue_ack(struct session *s, const char *id, const char *edge,
                      const char *dev)
{
    struct ack_batch *b = s->acks_tail;
    if (!b || b->ping_id[0] || strcmp(b->edge, edge) || strcmp(b->dev, dev)) {
        b = xcalloc(1, sizeof(*b));
        snprintf(b->edge, sizeof(b->edge), "%s", edge);
        snprintf(b->dev, sizeof(b->dev), "%s", dev);
        b->ids = json_array();
        if (s->acks_tail)
            s->acks_tail->next = b;
        else
            s->acks_head = b;
        s->acks_tail = b;
    }
    json_array_append_new(b->ids, json_string(id));
    if (!s->ping_queued) {
        s->ping_queued = true;
        s->flush_next = s->w->flush;
        s->w->flush = s;
    }
    worker_kick(s->w);
}

/* Ping the server for every batch of acks of s that no ping covers yet:
 * its answer proves them (on_ping_reply). Returns whether a ping went. */
static bool ping_batches(struct session *s)
{
    struct worker *w = s->w;
    char id[24];
    snprintf(id, sizeof(id), "imbp%llu", (unsigned long long)++w->next_ping);
    bool any = false;
    for (struct ack_batch *b = s->acks_head; b; b = b->next)
        if (!b->ping_id[0]) {
            memcpy(b->ping_id, id, sizeof(b->ping_id));
            any = true;
        }
    if (!any)
        return false;
    xmpp_id_handler_add(s->conn, on_ping_reply, id, s);
    session_send(s, stanza_ping(w->ctx, id, NULL)); /* after the messages it vouches for */
    w->stats.pings++;
    return true;
}

int session_flush_acks(struct worker *w)
{
    int pings = 0;
    while (w->flush) {
        struct session *s = w->flush;
        w->flush = s->flush_next;
        s->ping_queued = false;
        if (s->state != SESSION_ONLINE)
            continue;
        /* One ping out at a time: what was sent since waits for its answer
         * (on_ping_reply sends the next), so a busy session costs the
         * server one ping per round trip to it, not one per loop turn. */
        if (s->acks_head && s->acks_head->ping_id[0])
            continue;
        pings += ping_batches(s);
    }
    return pings;
}

static void reply_error(struct session *s, struct env *req, const char *code,
                        const char *msg)
{
    session_error(s, env_str(req, "edge"), env_str(req, "dev"), env_str(req, "id"),
                  code, NULL, msg);
}

void session_on_env(struct session *s, struct env *e)
{
    struct worker *w = s->w;
    const char *from = env_str(e, "from");
    if (!from || strcmp(from, s->jid) != 0) {
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_identity", "jid=%s from=%s type=%s", s->jid,
            from ? from : "-", env_type_name(e->type));
        return;
    }
    char key[140];
    switch (e->type) {
    case ENV_CHAT: {
        const char *id = env_str(e, "id"), *edge = env_str(e, "edge"),
                   *dev = env_str(e, "dev");
        if (s->state != SESSION_ONLINE) {
            reply_error(s, e, "unavailable", "the XMPP session is not up, send again");
            return;
        }
        if (id && idset_has(&s->acked, id)) {
            /* A resend of something the server has: ack it again, don't
             * send it twice. */
            w->stats.dup_msgs++;
            struct env *a = env_new(ENV_ACK);
            env_set_str(a, "to", s->jid);
            env_set_json(a, "ids", json_pack("[s]", id));
            if (edge && dev) {
                env_set_str(a, "edge", edge);
                env_set_str(a, "dev", dev);
            }
            worker_to_phones(w, s, a, true);
            return;
        }
        if (id && session_ack_pending(s, id)) {
            w->stats.dup_msgs++;
            if (edge && dev)
                queue_ack(s, id, edge, dev); /* acked with the original */
            return;
        }
        const char *body = env_str(e, "body");
        /* The edge prepared it; the bus is not to be trusted: again. */
        char to[3 * (JID_PART_MAX + 1)];
        int jrc = jid_prep(env_str(e, "to"), to, sizeof(to));
        if (jrc != JID_OK) {
            char msg[160];
            snprintf(msg, sizeof(msg), "field 'to' must be a valid JID: %s",
                     jid_strerror(jrc));
            reply_error(s, e, "bad_frame", msg);
            return;
        }
        char *masked = NULL;
        enum filter_reason fr = filter_check(worker_filter(), to, body, &masked);
        if (fr == FR_PASS || fr == FR_MASKED) {
            if (!filter_rate_ok(worker_filter(), &s->rate_tokens, &s->rate_ms,
                                util_mono_ms())) {
                free(masked);
                fr = FR_RATE;
            }
        }
        if (fr != FR_PASS)
            count_filtered(s, FILTER_OUT, fr, to);
        if (fr != FR_PASS && fr != FR_MASKED) {
            char msg[160];
            snprintf(msg, sizeof(msg), "the message filter refused it: %s",
                     filter_reason_name(fr));
            session_error(s, edge, dev, id, "filtered", filter_reason_name(fr), msg);
            return;
        }
        if (masked)
            body = masked;
        bool group = json_is_true(env_json(e, "group"));
        xmpp_stanza_t *m = stanza_chat(w->ctx, to, body, id, group);
        session_send(s, m);
        w->stats.msgs_to_xmpp++;
        if (!group && s->multi_device) {
            /* A copy for the user's phones, in the numbered stream (a room
             * echoes group messages itself). */
            struct env *copy = env_new(ENV_CHAT);
            env_set_str(copy, "from", s->jid);
            env_set_str(copy, "to", s->jid);
            env_set_str(copy, "with", to);
            env_set_str(copy, "body", body);
            if (id)
                env_set_str(copy, "id", id);
            env_set_json(copy, "sent", json_true());
            if (edge && dev) {
                env_set_str(copy, "edge", edge);
                env_set_str(copy, "dev", dev);
            }
            if (masked)
                env_set_str(copy, "filtered", "masked");
            worker_deliver(s, copy, NULL);
        }
        free(masked);
        if (id && edge && dev)
            queue_ack(s, id, edge, dev);
        worker_kick(w);
        break;
    }
    case ENV_LOGOUT:
    case ENV_DETACH:
        device_key(key, sizeof(key), env_str(e, "edge"), env_str(e, "dev"));
        strmap_del(&s->devices, key);
        LOG(INFO, e->type == ENV_LOGOUT ? "device_logout" : "device_detach",
            "jid=%s dev=%s devices=%zu", s->jid, key, s->devices.count);
        im_on_devices_changed(s);
        last_device_gone(s, e->type == ENV_LOGOUT);
        break;
    case ENV_REQ:
        session_on_req(s, e);
        break;
    case ENV_HANDOVER:
        session_on_handover(s, e);
        break;
    case ENV_ACKED:
        im_on_acked(s, e);
        break;
    default:
        w->stats.bad_envelopes++;
        LOG(WARN, "envelope_unexpected", "jid=%s type=%s", s->jid,
            env_type_name(e->type));
        break;
    }
}

bool session_foreground(const struct session *s)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&s->devices, &it); e;
         e = strmap_next(&s->devices, &it))
        if (e->value == (void *)1)
            return true;
    return false;
}

void session_prune_devices(struct worker *w, const struct strmap *live)
{
    struct strmap_iter it, dit;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it)) {
        struct session *s = e->value;
        size_t before = s->devices.count;
        for (struct strmap_entry *d = strmap_first(&s->devices, &dit); d;
             d = strmap_next(&s->devices, &dit)) {
            char edge[80];
            size_t n = strcspn(d->key, "/");
            if (n >= sizeof(edge))
                continue;
            memcpy(edge, d->key, n);
            edge[n] = '\0';
            if (!strmap_get(live, edge)) {
                LOG(INFO, "device_edge_gone", "jid=%s dev=%s", s->jid, d->key);
                strmap_del(&s->devices, d->key);
            }
        }
        if (before > 0)
            last_device_gone(s, false);
    }
}

/* The user leaves this worker: its lease freed first (same link, so Redis
 * sees it before the announcement: the edges' re-logins must find it
 * free), then session_end to its phones, which re-log elsewhere. */
static void session_hand_over(struct session *s, const char *reason)
{
    struct worker *w = s->w;
    if (s->token[0] && !s->lease_lost)
        lease_release(w->bus, s->jid, w->id, s->token, NULL, NULL);
    s->lease_lost = true; /* released: not again at bury */
    session_announce_end(s, reason);
}

void session_close_all(struct worker *w, const char *reason)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it)) {
        struct session *s = e->value;
        if (close_defers(s)) {
            /* Half way through its login, its stream stays until the
             * login is over, and may bind the user's resource meanwhile:
             * handed over once it is gone (conn_handler). */
            s->end_reason = reason;
            session_close(s, reason);
            continue;
        }
        session_hand_over(s, reason);
        session_close(s, reason);
    }
}

bool session_closes_pending(const struct worker *w)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it))
        if (((const struct session *)e->value)->end_reason)
            return true;
    return false;
}

/* ---- the lease held: renewal, and a worker that was frozen -------------- */

void session_deferred_free(struct session *s)
{
    while (s->deferred) {
        struct deferred *d = s->deferred;
        s->deferred = d->next;
        deferred_free(d);
    }
    s->deferred_tail = NULL;
}

/* Hand what waited back to the worker's dispatch, as if it came now: to
 * this session if it still holds the user, else to whatever answers for a
 * session that is gone or closing. */
static void session_undefer(struct session *s)
{
    struct worker *w = s->w;
    struct deferred *d = s->deferred;
    s->deferred = s->deferred_tail = NULL;
    while (d) {
        struct deferred *next = d->next;
        worker_dispatch(w, d->channel, d->payload, d->len);
        deferred_free(d);
        d = next;
    }
}

static void on_renewed(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    int64_t sent_ms;
    struct session *s = lease_req_done(w, data, &sent_ms);
    if (!s || s->lease_lost)
        return;
    s->renewing = false;
    struct lease_answer a;
    if (!lease_parse(r, &a))
        return; /* Redis away: the next renewal tells */
    if (!strcmp(a.holder, w->id) && !strcmp(a.token, s->token)) {
        s->lease_until = sent_ms + w->cfg->lease_ms;
        if (!s->catching_up)
            session_undefer(s); /* (else when it is over) */
        return;
    }
    /* Another worker took the user while this one could not renew (it was
     * frozen, or cut from Redis): whatever it would still write for the user
     * is fenced off; step down, and let the edges attach the phones to the
     * new holder. */
    s->lease_lost = true;
    w->stats.leases_lost++;
    LOG(WARN, "lease_lost", "jid=%s owner=%s token=%s ours=%s", s->jid,
        a.holder[0] ? a.holder : "-", a.token, s->token);
    session_announce_end(s, "moved");
    session_close(s, "lease_lost");
    session_undefer(s);
}

/* Renew s's lease now (once at a time). */
static void session_renew(struct session *s)
{
    if (s->renewing || s->lease_lost || !s->token[0])
        return;
    s->renewing = true;
    lease_request(s, s->token, on_renewed);
}

void session_lease_renew(struct worker *w)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&w->sessions, &it); e;
         e = strmap_next(&w->sessions, &it)) {
        struct session *s = e->value;
        if (s->state == SESSION_CONNECTING || s->state == SESSION_ONLINE)
            session_renew(s);
    }
}

bool session_must_defer(const struct session *s)
{
    /* (Only for a session that acts for the user: one still connecting or
     * already closing answers envelopes its own way.) */
    if (s->state != SESSION_ONLINE || !s->token[0] || s->lease_lost)
        return false;
    return util_mono_ms() >= s->lease_until || s->catching_up || s->deferred;
}

bool session_defer(struct session *s, const char *channel, const char *payload,
                   size_t len)
{
    if (!session_must_defer(s))
        return false;
    bool unsure = util_mono_ms() >= s->lease_until;
    /* The lease may have lapsed (this worker was frozen longer than it
     * lasts): act for the user only once a renewal says it is still ours.
     * Or the archive catch-up runs: wait for what it shows the server has. */
    struct deferred *d = xcalloc(1, sizeof(*d));
    d->channel = xstrdup(channel);
    d->payload = xstrndup(payload, len);
    d->len = len;
    if (s->deferred_tail)
        s->deferred_tail->next = d;
    else
        s->deferred = d;
    s->deferred_tail = d;
    s->w->stats.deferred++;
    LOG(DEBUG, "envelope_deferred", "jid=%s lease_age_ms=%lld catching_up=%d", s->jid,
        (long long)(util_mono_ms() - s->lease_until + s->w->cfg->lease_ms), s->catching_up);
    if (unsure)
        session_renew(s);
    return true;
}

void session_fenced(struct worker *w, const char *jid, const char *holder)
{
    struct session *s = strmap_get(&w->sessions, jid);
    char mine[LEASE_HOLDER_MAX];
    if (!s || !s->token[0])
        return;
    lease_holder(mine, w->id, s->token);
    if (strcmp(mine, holder) == 0) {
        s->lease_until = 0; /* not sure of it any more */
        session_renew(s);
    }
}
