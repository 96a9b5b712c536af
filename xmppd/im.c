/* im.c - what chat users expect around messages: the user's presence and
 * their contacts', client state indication (XEP-0352), the roster and
 * subscriptions (RFC 6121), typing (XEP-0085), delivery receipts (XEP-0184)
 * and read markers (XEP-0333) both ways, and carbons (XEP-0280) so what the
 * user's other XMPP clients send and receive reaches the phones too. */
#include "bus.h"
#include "inbox.h"
#include "keys.h"
#include "log.h"
#include "proto.h"
#include "schema.h"
#include "stanza.h"
#include "util.h"
#include "xmppd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Contacts' presences remembered per session, at most. */
#define PRESENCE_KEEP 5000

/* The text of child `name` of el if it is safe to forward (and short
 * enough), else NULL. Free with xmpp_free. */
static char *safe_text(struct session *s, xmpp_stanza_t *el, const char *name,
                       size_t max)
{
    xmpp_stanza_t *c = el ? xmpp_stanza_get_child_by_name(el, name) : NULL;
    char *t = c ? xmpp_stanza_get_text(c) : NULL;
    if (t && (strlen(t) > max || !schema_text_ok(t, strlen(t)))) {
        xmpp_free(s->w->ctx, t);
        t = NULL;
    }
    return t;
}

static bool is_self(const struct session *s, const char *jid)
{
    char bare[ENV_MAX_JID + 1];
    return jid && schema_bare_jid(jid, bare, sizeof(bare)) &&
           strcasecmp(bare, s->jid) == 0;
}

/* ---- the user's own presence -------------------------------------------- */

static void pres_key(const struct session *s, char *out, size_t n)
{
    keys_user(s->w->bus, out, n, KEYS_PRES, s->jid);
}

static void send_own_presence(struct session *s)
{
    xmpp_stanza_t *p = xmpp_presence_new(s->w->ctx);
    if (strcmp(s->show, "offline") == 0) {
        xmpp_stanza_set_type(p, "unavailable");
    } else {
        if (strcmp(s->show, "away") == 0)
            stanza_add_text(s->w->ctx, p, "show", "away");
        else if (strcmp(s->show, "busy") == 0)
            stanza_add_text(s->w->ctx, p, "show", "dnd");
        if (s->status)
            stanza_add_text(s->w->ctx, p, "status", s->status);
    }
    session_send(s, p);
}

static void set_show(struct session *s, const char *show, const char *status)
{
    snprintf(s->show, sizeof(s->show), "%s", show);
    free(s->status);
    s->status = status && *status ? xstrdup(status) : NULL;
}

/* The presence the user chose last (kept in Redis, so a session re-opened
 * on another worker shows the same), then the initial presence: the server
 * answers it with contacts' presences and stored offline messages. */
static void on_pres_loaded(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    /* (A session of the same user opened since asks again for itself.) */
    if (!s || s->state != SESSION_ONLINE || s->available)
        return;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        const char *show = r->element[0]->str;
        const char *status = r->element[1]->type == REDIS_REPLY_STRING
                                 ? r->element[1]->str
                                 : NULL;
        json_t *probe = json_pack("{s:s, s:s}", "t", "presence", "show", show);
        if (status && schema_text_ok(status, strlen(status)) && strlen(status) <= 1024)
            json_object_set_new(probe, "status", json_string(status));
        char err[100];
        if (proto_check(proto_request("presence"), probe, err, sizeof(err)))
            set_show(s, show, status);
        json_decref(probe);
    }
    send_own_presence(s);
    /* Register for pushes only now: before the initial presence the server
     * would store (and push) what arrives for a user with no available
     * resource. For the same reason phones are welcomed only now. */
    push_on_online(s);
    session_available(s);
}

static void csi_update(struct session *s)
{
    if (strcmp(s->w->cfg->xmpp_csi, "on") != 0 || s->state != SESSION_ONLINE)
        return;
    /* Inactive only while phones are attached and all in the background.
     * With none attached the bridge itself reads for the user (the inbox,
     * push): a held-back stream would only delay that, and Prosody 0.12
     * (mod_csi_simple) was seen holding messages with a body for more than
     * 5 s right after <inactive/>. */
    bool inactive = s->devices.count > 0 && !session_foreground(s);
    if (inactive == s->csi_inactive)
        return;
    s->csi_inactive = inactive;
    xmpp_stanza_t *n = xmpp_stanza_new(s->w->ctx);
    xmpp_stanza_set_name(n, inactive ? "inactive" : "active");
    xmpp_stanza_set_ns(n, "urn:xmpp:csi:0");
    LOG(INFO, "csi", "jid=%s state=%s", s->jid, inactive ? "inactive" : "active");
    session_send(s, n);
}

void im_on_online(struct session *s)
{
    struct worker *w = s->w;
    snprintf(s->show, sizeof(s->show), "online");
    /* Carbons first: from then on the phones see what the user's other
     * clients send and receive. */
    xmpp_stanza_t *iq = xmpp_iq_new(w->ctx, "set", NULL);
    struct pending_iq *pq = session_iq_new(s, PQ_CARBONS, NULL);
    xmpp_stanza_set_id(iq, pq->iq_id);
    stanza_add(w->ctx, iq, "enable", STANZA_NS_CARBONS);
    session_send(s, iq);
    /* Ask for the roster: the server then treats the session as an
     * "interested resource" (RFC 6121) and sends it roster pushes and
     * subscription requests. */
    pq = session_iq_new(s, PQ_ROSTER_GET, NULL);
    iq = xmpp_iq_new(w->ctx, "get", pq->iq_id);
    stanza_add(w->ctx, iq, "query", STANZA_NS_ROSTER);
    session_send(s, iq);
    char key[KEYS_MAX];
    pres_key(s, key, sizeof(key));
    bus_command(w->bus, on_pres_loaded, xstrdup(s->jid), "HMGET %s show status", key);
    /* Client state follows once the waiting phones are attached. */
}

void im_on_devices_changed(struct session *s)
{
    csi_update(s);
}

void im_on_attach(struct session *s, const char *edge, const char *dev)
{
    /* What the new phone would have seen had it been there: the presence
     * of every contact online. */
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&s->presence, &it); e;
         e = strmap_next(&s->presence, &it))
        session_event(s, json_deep_copy(e->value), edge, dev, false);
    csi_update(s);
}

/* ---- requests ----------------------------------------------------------- */

/* The storage hint (XEP-0334) on the receipts and read markers the bridge
 * sends: <no-permanent-store/>, "keep it offline if you must, do not
 * archive it". A sender who is offline still gets them (offline storage),
 * but the archives (XEP-0313) do not: there they take the slots of history
 * pages meant for messages (a page of 3 showing 1 message), and a phone
 * pages through pages of nothing. No hint at all would not do: Prosody's
 * mod_mam archives every receipt and marker it is not told to skip, and
 * <store/> (the hint sent before) made ejabberd archive them too. The
 * price: a client of the user or of the contact that was away and syncs
 * from the archive (as XEP-0333 foresees) does not find them there; the
 * messages themselves stay archived. */
static void add_signal_hint(xmpp_ctx_t *ctx, xmpp_stanza_t *m)
{
    stanza_add(ctx, m, "no-permanent-store", STANZA_NS_HINTS);
}

/* Is jid (full: that resource; bare: any) online as far as we know? */
static bool contact_online(const struct session *s, const char *jid)
{
    if (strchr(jid, '/'))
        return strmap_get(&s->presence, jid) != NULL;
    size_t n = strlen(jid);
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&s->presence, &it); e;
         e = strmap_next(&s->presence, &it))
        if (strncasecmp(e->key, jid, n) == 0 && e->key[n] == '/')
            return true;
    return false;
}

bool im_on_req(struct session *s, const struct env *e, const json_t *f)
{
    struct worker *w = s->w;
    const char *t = json_string_value(json_object_get(f, "t"));
#define STR(k) json_string_value(json_object_get(f, k))
    if (strcmp(t, "presence") == 0) {
        set_show(s, STR("show"), STR("status"));
        char key[KEYS_MAX];
        pres_key(s, key, sizeof(key));
        const char *argv[] = {"HSET", key, "show", s->show, "status",
                              s->status ? s->status : ""};
        bus_command_argv(w->bus, NULL, NULL, 6, argv, NULL);
        send_own_presence(s);
    } else if (strcmp(t, "state") == 0) {
        char k[140];
        snprintf(k, sizeof(k), "%s/%s", env_str(e, "edge"), env_str(e, "dev"));
        if (strmap_get(&s->devices, k)) {
            bool active = json_is_true(json_object_get(f, "active"));
            strmap_put(&s->devices, k, (void *)(uintptr_t)(active ? 1 : 2));
        }
        csi_update(s);
    } else if (strcmp(t, "roster") == 0 || strcmp(t, "roster_set") == 0 ||
               strcmp(t, "roster_remove") == 0) {
        bool get = strcmp(t, "roster") == 0;
        struct pending_iq *pq = session_iq_new(s, get ? PQ_ROSTER_GET : PQ_ROSTER_SET, e);
        xmpp_stanza_t *iq = xmpp_iq_new(w->ctx, get ? "get" : "set", pq->iq_id);
        xmpp_stanza_t *q = stanza_add(w->ctx, iq, "query", STANZA_NS_ROSTER);
        if (!get) {
            xmpp_stanza_t *item = stanza_add(w->ctx, q, "item", NULL);
            xmpp_stanza_set_attribute(item, "jid", STR("jid"));
            if (strcmp(t, "roster_remove") == 0) {
                xmpp_stanza_set_attribute(item, "subscription", "remove");
            } else {
                if (STR("name"))
                    xmpp_stanza_set_attribute(item, "name", STR("name"));
                if (STR("group") && *STR("group"))
                    stanza_add_text(w->ctx, item, "group", STR("group"));
            }
        }
        session_send(s, iq);
    } else if (strcmp(t, "sub") == 0) {
        xmpp_stanza_t *p = xmpp_presence_new(w->ctx);
        char bare[ENV_MAX_JID + 1];
        schema_bare_jid(STR("to"), bare, sizeof(bare));
        xmpp_stanza_set_to(p, bare);
        xmpp_stanza_set_type(p, STR("type"));
        session_send(s, p);
    } else if (strcmp(t, "typing") == 0) {
        /* A chat state alone: never stored offline, never archived. Sent
         * only to a contact seen online (to someone offline the server
         * would keep it in offline storage despite the hint). */
        if (!contact_online(s, STR("to")))
            return true;
        xmpp_stanza_t *m = xmpp_message_new(w->ctx, "chat", STR("to"), NULL);
        stanza_add(w->ctx, m, STR("state"), STANZA_NS_CHATSTATES);
        stanza_add(w->ctx, m, "no-store", STANZA_NS_HINTS);
        session_send(s, m);
    } else if (strcmp(t, "read") == 0) {
        xmpp_stanza_t *m = xmpp_message_new(w->ctx, "chat", STR("to"), NULL);
        xmpp_stanza_t *d = stanza_add(w->ctx, m, "displayed", STANZA_NS_MARKERS);
        xmpp_stanza_set_id(d, STR("id"));
        add_signal_hint(w->ctx, m);
        session_send(s, m);
    } else {
        return false;
    }
#undef STR
    return true;
}

/* ---- delivery receipts (XEP-0184), sent once a phone acks --------------- */

/* At most this many receipts wait per user (the inbox's own bound is of the
 * same order); past it the oldest is dropped. */
#define RECEIPTS_MAX 1000

void session_receipt_owed(struct session *s, int64_t seq, const char *to, const char *id)
{
    /* Kept by seq; a seq already known (loaded, then stored here) once. */
    size_t i = s->nreceipts;
    while (i > 0 && s->receipts[i - 1].seq > seq)
        i--;
    if (i > 0 && s->receipts[i - 1].seq == seq)
        return;
    if (s->nreceipts == RECEIPTS_MAX) {
        if (i == 0)
            return; /* older than everything kept */
        free(s->receipts[0].to);
        free(s->receipts[0].id);
        memmove(s->receipts, s->receipts + 1, --s->nreceipts * sizeof(*s->receipts));
        i--;
    }
    if (s->nreceipts == s->capreceipts) {
        s->capreceipts = s->capreceipts ? 2 * s->capreceipts : 8;
        s->receipts = xrealloc(s->receipts, s->capreceipts * sizeof(*s->receipts));
    }
    memmove(s->receipts + i + 1, s->receipts + i, (s->nreceipts - i) * sizeof(*s->receipts));
    s->receipts[i] = (struct owed_receipt){seq, xstrdup(to), xstrdup(id)};
    s->nreceipts++;
}

void session_receipts_forget(struct session *s)
{
    for (size_t i = 0; i < s->nreceipts; i++) {
        free(s->receipts[i].to);
        free(s->receipts[i].id);
    }
    free(s->receipts);
    s->receipts = NULL;
    s->nreceipts = s->capreceipts = 0;
}

/* A phone acked up to "upto": the receipts of every seq up to it go out. */
void im_on_acked(struct session *s, const struct env *e)
{
    int64_t upto = env_int(e, "upto", 0);
    size_t n = 0;
    while (n < s->nreceipts && s->receipts[n].seq <= upto)
        n++;
    for (size_t i = 0; i < n; i++) {
        const struct owed_receipt *o = &s->receipts[i];
        if (s->state == SESSION_ONLINE) {
            xmpp_stanza_t *m = xmpp_message_new(s->w->ctx, "chat", o->to, NULL);
            xmpp_stanza_t *r = stanza_add(s->w->ctx, m, "received", STANZA_NS_RECEIPTS);
            xmpp_stanza_set_id(r, o->id);
            add_signal_hint(s->w->ctx, m);
            session_send(s, m);
            s->w->stats.receipts_sent++;
        }
        free(o->to);
        free(o->id);
    }
    s->nreceipts -= n;
    memmove(s->receipts, s->receipts + n, s->nreceipts * sizeof(*s->receipts));
}

static void on_unacked(void *owner, void *data, redisReply *r)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    redisReply *items = r->element[1];
    for (size_t i = 0; i < items->elements; i++) {
        char err[200];
        if (items->element[i]->type != REDIS_REPLY_STRING)
            continue;
        struct env *e = env_decode(items->element[i]->str, items->element[i]->len, err,
                                   sizeof(err));
        if (e && e->type == ENV_CHAT && json_is_true(env_json(e, "rr")) && env_str(e, "id") &&
            env_int(e, "seq", 0) > 0)
            session_receipt_owed(s, env_int(e, "seq", 0), env_str(e, "from"), env_str(e, "id"));
        env_free(e);
    }
    if (s->nreceipts)
        LOG(INFO, "receipts_owed", "jid=%s n=%zu", s->jid, s->nreceipts);
}

/* A session that takes the user over (from a worker that died, or after a
 * logout) owes the receipts of what no phone acked yet. */
void im_receipts_load(struct session *s)
{
    inbox_unacked(s->w->bus, s->jid, RECEIPTS_MAX, on_unacked, xstrdup(s->jid));
}

/* ---- answers to IQs ------------------------------------------------------ */

/* A roster <item/> as a phone sees it, or NULL if unusable. */
/* A roster item as the phone sees it, or NULL (logged) for one the server
 * sent broken: a subscription state RFC 6121 does not have ("remove" only
 * in a push). */
static json_t *roster_item(struct session *s, xmpp_stanza_t *item, bool push)
{
    if (!stanza_prep_attr(item, "jid", false))
        return NULL; /* none, or one that cannot be prepared */
    const char *jid = xmpp_stanza_get_attribute(item, "jid");
    const char *name = xmpp_stanza_get_attribute(item, "name");
    const char *sub = xmpp_stanza_get_attribute(item, "subscription");
    const char *ask = xmpp_stanza_get_attribute(item, "ask");
    if (!jid || !schema_jid_ok(jid, ENV_MAX_JID))
        return NULL;
    if (sub && strcmp(sub, "none") && strcmp(sub, "to") && strcmp(sub, "from") &&
        strcmp(sub, "both") && (!push || strcmp(sub, "remove"))) {
        s->w->stats.bad_stanzas++;
        LOG(WARN, "roster_item_invalid", "jid=%s contact=%s err=\"subscription %.32s\"",
            s->jid, jid, sub);
        return NULL;
    }
    json_t *o = json_pack("{s:s, s:s}", "jid", jid, "sub", sub ? sub : "none");
    if (name && strlen(name) <= 1024 && schema_text_ok(name, strlen(name)))
        json_object_set_new(o, "name", json_string(name));
    if (ask && strcmp(ask, "subscribe") == 0)
        json_object_set_new(o, "ask", json_string("subscribe"));
    char *group = safe_text(s, item, "group", 1024);
    if (group) {
        json_object_set_new(o, "group", json_string(group));
        xmpp_free(s->w->ctx, group);
    }
    return o;
}

static void answer_error(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "the XMPP server refused it: %s",
             stanza_error_condition(st));
    session_error(s, pq->edge, pq->dev, pq->req_id, "refused", NULL, msg);
}

void im_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st)
{
    const char *type = xmpp_stanza_get_type(st);
    bool ok = type && strcmp(type, "result") == 0;
    if (pq->kind == PQ_CARBONS || pq->kind == PQ_PUSH) {
        if (!ok)
            LOG(WARN, pq->kind == PQ_CARBONS ? "carbons_refused" : "push_enable_refused",
                "jid=%s err=%s", s->jid, stanza_error_condition(st));
        return;
    }
    if (!pq->edge[0])
        return;
    if (!ok) {
        answer_error(s, pq, st);
        return;
    }
    if (pq->kind == PQ_ROSTER_SET) {
        json_t *f = json_pack("{s:s, s:s}", "t", "ok", "id", pq->req_id);
        session_event(s, f, pq->edge, pq->dev, false);
        return;
    }
    json_t *items = json_array();
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", STANZA_NS_ROSTER);
    for (xmpp_stanza_t *it = q ? xmpp_stanza_get_children(q) : NULL; it;
         it = xmpp_stanza_get_next(it)) {
        const char *n = xmpp_stanza_get_name(it);
        json_t *o = n && strcmp(n, "item") == 0 ? roster_item(s, it, false) : NULL;
        if (o)
            json_array_append_new(items, o);
    }
    json_t *f = json_pack("{s:s, s:s, s:o}", "t", "roster", "id", pq->req_id,
                          "items", items);
    session_event(s, f, pq->edge, pq->dev, false);
}

/* ---- from the server ------------------------------------------------------ */

static void iq_reply(struct session *s, xmpp_stanza_t *st, bool error)
{
    const char *id = xmpp_stanza_get_id(st), *from = xmpp_stanza_get_from(st);
    xmpp_stanza_t *r = xmpp_iq_new(s->w->ctx, error ? "error" : "result", id);
    if (from)
        xmpp_stanza_set_to(r, from);
    if (error) {
        xmpp_stanza_t *e = stanza_add(s->w->ctx, r, "error", NULL);
        xmpp_stanza_set_type(e, "cancel");
        stanza_add(s->w->ctx, e, "service-unavailable", STANZA_NS_STANZAS);
    }
    session_send(s, r);
}

int im_on_iq(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    const char *type = xmpp_stanza_get_type(st);
    if (!type || (strcmp(type, "get") && strcmp(type, "set")))
        return 1; /* answers: matched by id elsewhere */
    if (!session_prep_stanza(s, st))
        return 1;
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", STANZA_NS_ROSTER);
    const char *from = xmpp_stanza_get_from(st);
    if (q && strcmp(type, "set") == 0 && (!from || strcasecmp(from, s->jid) == 0)) {
        /* A roster push: the roster changed (here or on another client). */
        iq_reply(s, st, false);
        for (xmpp_stanza_t *it = xmpp_stanza_get_children(q); it;
             it = xmpp_stanza_get_next(it)) {
            const char *n = xmpp_stanza_get_name(it);
            json_t *o = n && strcmp(n, "item") == 0 ? roster_item(s, it, true) : NULL;
            if (!o)
                continue;
            json_object_set_new(o, "t", json_string("roster_push"));
            char err[120];
            if (proto_check(proto_event("roster_push"), o, err, sizeof(err)))
                session_event(s, o, NULL, NULL, false);
            else
                json_decref(o);
        }
        return 1;
    }
    if (xmpp_stanza_get_child_by_name_and_ns(st, "ping", STANZA_NS_PING) &&
        strcmp(type, "get") == 0) {
        iq_reply(s, st, false);
        return 1;
    }
    iq_reply(s, st, true); /* nothing else is served by a phone's session */
    return 1;
}

static const char *show_of(xmpp_stanza_t *p, char *buf)
{
    xmpp_stanza_t *sh = xmpp_stanza_get_child_by_name(p, "show");
    char *t = sh ? xmpp_stanza_get_text(sh) : NULL;
    const char *r = "online";
    if (t && (!strcmp(t, "away") || !strcmp(t, "xa")))
        r = "away";
    else if (t && !strcmp(t, "dnd"))
        r = "busy";
    if (t)
        xmpp_free(xmpp_stanza_get_context(p), t);
    strcpy(buf, r);
    return buf;
}

int im_on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    if (!session_prep_stanza(s, st))
        return 1;
    const char *from = xmpp_stanza_get_from(st);
    if (!from || !schema_jid_ok(from, ENV_MAX_JID))
        return 1;
    if (muc_on_presence(s, st))
        return 1;
    const char *type = xmpp_stanza_get_type(st);
    char bare[ENV_MAX_JID + 1];
    schema_bare_jid(from, bare, sizeof(bare));
    if (type && (!strcmp(type, "subscribe") || !strcmp(type, "subscribed") ||
                 !strcmp(type, "unsubscribe") || !strcmp(type, "unsubscribed"))) {
        /* Kept until a phone has it: a request must not be missed. */
        session_event(s, json_pack("{s:s, s:s, s:s}", "t", "sub", "from", bare,
                                   "type", type),
                      NULL, NULL, true);
        return 1;
    }
    if (type && strcmp(type, "unavailable") != 0)
        return 1; /* error, probe: nothing for a phone */
    if (is_self(s, from))
        return 1; /* the user's own clients */
    json_t *f;
    if (type) {
        f = json_pack("{s:s, s:s, s:s}", "t", "presence", "from", from, "show", "offline");
        json_decref(strmap_del(&s->presence, from));
    } else {
        char show[16];
        f = json_pack("{s:s, s:s, s:s}", "t", "presence", "from", from, "show",
                      show_of(st, show));
        char *status = safe_text(s, st, "status", 1024);
        if (status) {
            json_object_set_new(f, "status", json_string(status));
            xmpp_free(s->w->ctx, status);
        }
        if (strmap_get(&s->presence, from) || s->presence.count < PRESENCE_KEEP)
            json_decref(strmap_put(&s->presence, from, json_incref(f)));
    }
    session_event(s, f, NULL, NULL, false);
    return 1;
}

/* ---- messages ------------------------------------------------------------ */

xmpp_stanza_t *im_unwrap_carbon(struct session *s, xmpp_stanza_t *msg, bool *sent)
{
    *sent = false;
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name_and_ns(msg, "received", STANZA_NS_CARBONS);
    if (!c && (c = xmpp_stanza_get_child_by_name_and_ns(msg, "sent", STANZA_NS_CARBONS)))
        *sent = true;
    if (!c)
        return msg;
    /* Only the user's own server may hand out copies of the user's mail. */
    const char *from = xmpp_stanza_get_from(msg);
    if (from && strcasecmp(from, s->jid) != 0) {
        LOG(WARN, "carbon_forged", "jid=%s from=%s", s->jid, from);
        *sent = false;
        return NULL;
    }
    xmpp_stanza_t *fw = xmpp_stanza_get_child_by_name_and_ns(c, "forwarded", STANZA_NS_FORWARD);
    xmpp_stanza_t *inner = fw ? xmpp_stanza_get_child_by_name(fw, "message") : NULL;
    if (!inner)
        *sent = false;
    return inner;
}

/* Did a phone of the user send a message with this id? The ids the XMPP
 * server acked (the newest ACKED_KEEP of a day, loaded at a session's
 * start: session.c) and those waiting for their ack. */
static bool phone_sent(const struct session *s, const char *id)
{
    return strmap_get(&s->acked.map, id) || session_ack_pending(s, id);
}

/* Whether the contact's client already said this state of this message
 * lately: converse.js, for one, answers a message with a XEP-0184 receipt
 * and a XEP-0333 "received" marker, which are one "delivered" for the
 * phone. Remembers it otherwise. */
static bool signal_repeated(struct session *s, const char *from, const char *id,
                            const char *state)
{
    uint64_t h = 14695981039346656037ull;
    size_t bare = strcspn(from, "/");
    for (size_t i = 0; i < bare; i++)
        h = (h ^ (unsigned char)from[i]) * 1099511628211ull;
    for (const char *parts[] = {"|", id, "|", state, NULL}, **p = parts; *p; p++)
        for (const char *c = *p; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
    for (size_t i = 0; i < IM_SIGNALS_KEPT; i++)
        if (s->signals[i] == h)
            return true;
    s->signals[s->nsignals++ % IM_SIGNALS_KEPT] = h;
    return false;
}

void im_on_signals(struct session *s, xmpp_stanza_t *m)
{
    const char *from = xmpp_stanza_get_from(m);
    if (!from || !schema_jid_ok(from, ENV_MAX_JID))
        return;
    const char *type = xmpp_stanza_get_type(m);
    if (type && strcmp(type, "groupchat") == 0)
        return;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(m); c; c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c), *name = xmpp_stanza_get_name(c);
        if (!ns || !name)
            continue;
        const char *state = NULL;
        if (!strcmp(ns, STANZA_NS_RECEIPTS) && !strcmp(name, "received"))
            state = "delivered";
        else if (!strcmp(ns, STANZA_NS_MARKERS) && !strcmp(name, "received"))
            state = "delivered";
        else if (!strcmp(ns, STANZA_NS_MARKERS) &&
                 (!strcmp(name, "displayed") || !strcmp(name, "acknowledged")))
            state = "read";
        if (state) {
            const char *id = xmpp_stanza_get_id(c);
            if (id && schema_id_ok(id, 64) && !phone_sent(s, id)) {
                /* Not of the phones' messages (another client's, a
                 * request's id, made up): a stored event would be a lie. */
                LOG(DEBUG, "receipt_unknown_id", "jid=%s from=%s id=%s state=%s", s->jid, from,
                    id, state);
                continue;
            }
            if (id && schema_id_ok(id, 64) && signal_repeated(s, from, id, state))
                LOG(DEBUG, "receipt_repeated", "jid=%s from=%s id=%s state=%s", s->jid, from,
                    id, state);
            else if (id && schema_id_ok(id, 64))
                session_event(s, json_pack("{s:s, s:s, s:s, s:s}", "t", "receipt",
                                           "from", from, "id", id, "state", state),
                              NULL, NULL, true);
            continue;
        }
        if (!strcmp(ns, STANZA_NS_CHATSTATES) &&
            !xmpp_stanza_get_child_by_name(m, "body")) {
            json_t *f = json_pack("{s:s, s:s, s:s}", "t", "typing", "from", from,
                                  "state", name);
            char err[100];
            if (proto_check(proto_event("typing"), f, err, sizeof(err)))
                session_event(s, f, NULL, NULL, false);
            else
                json_decref(f);
        }
    }
}

void im_free(struct session *s)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&s->presence, &it); e;
         e = strmap_next(&s->presence, &it))
        json_decref(e->value);
    strmap_free(&s->presence);
    free(s->status);
}
