/* muc.c - group chat rooms (XEP-0045): join with a nickname, leave, send,
 * receive, occupants, subject, invitations. Rooms the user is in are kept
 * in Redis ("<prefix>:rooms:{<jid>}": room -> {"nick","ts"}) so a session
 * re-opened on another worker joins them again and asks the room only for
 * what came after the newest message stored. */
#include "bus.h"
#include "jid.h"
#include "keys.h"
#include "log.h"
#include "proto.h"
#include "schema.h"
#include "stanza.h"
#include "util.h"
#include "xmppd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"

/* Seconds a room has, once it sent the user's own presence, to send its
 * subject (which completes a join) before the join is answered anyway. */
#define SUBJECT_WAIT_S 5
/* Ids of the newest messages remembered per room. */
#define RECENT_KEEP 32
/* Rooms one user may be in (each costs a presence and room state). */
#define ROOMS_MAX 100

static void rooms_key(const struct session *s, char *out, size_t n)
{
    keys_user(s->w->bus, out, n, KEYS_ROOMS, s->jid);
}

static void room_store(struct session *s, const struct room *r)
{
    char key[KEYS_MAX];
    rooms_key(s, key, sizeof(key));
    json_t *v = json_pack("{s:s, s:I, s:O}", "nick", r->nick, "ts", (json_int_t)r->last_ts,
                          "recent", r->recent);
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    const char *argv[] = {"HSET", key, r->jid, text};
    bus_command_argv(s->w->bus, NULL, NULL, 4, argv, NULL);
    free(text);
}

static void room_free(struct room *r)
{
    if (r->join_timer)
        event_free(r->join_timer);
    if (r->subj_timer)
        event_free(r->subj_timer);
    free(r->subject);
    free(r->subject_by);
    json_decref(r->recent);
    strmap_free(&r->occupants);
    free(r->jid);
    free(r->nick);
    free(r);
}

static void answer_subject(struct session *s, struct room *r, const char *code,
                           const char *msg);

static void room_drop(struct session *s, struct room *r)
{
    answer_subject(s, r, "not_in_room", "you are no longer in the room");
    char key[KEYS_MAX];
    rooms_key(s, key, sizeof(key));
    const char *argv[] = {"HDEL", key, r->jid};
    bus_command_argv(s->w->bus, NULL, NULL, 3, argv, NULL);
    strmap_del(&s->rooms, r->jid);
    room_free(r);
}

static struct room *room_new(struct session *s, const char *jid, const char *nick)
{
    struct room *r = xcalloc(1, sizeof(*r));
    r->jid = xstrdup(jid);
    r->nick = xstrdup(nick);
    r->s = s;
    r->recent = json_array();
    strmap_init(&r->occupants);
    strmap_put(&s->rooms, jid, r);
    return r;
}

/* Presence to room/nick with <x xmlns=muc>: ask for history since the
 * newest message stored (none at a first join: history is the phone's to
 * ask for). In a room already joined it asks for a new nickname. */
static void send_join(struct session *s, struct room *r, const char *nick,
                      const char *pass)
{
    xmpp_ctx_t *ctx = s->w->ctx;
    char to[2100];
    snprintf(to, sizeof(to), "%s/%s", r->jid, nick);
    xmpp_stanza_t *p = xmpp_presence_new(ctx);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_t *x = stanza_add(ctx, p, "x", STANZA_NS_MUC);
    xmpp_stanza_t *h = stanza_add(ctx, x, "history", NULL);
    if (r->last_ts > 0) {
        char since[40];
        time_t t = (time_t)(r->last_ts / 1000) - 1; /* stamps are in seconds */
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
        xmpp_stanza_set_attribute(h, "since", since);
    } else {
        xmpp_stanza_set_attribute(h, "maxstanzas", "0");
    }
    if (pass && *pass)
        stanza_add_text(ctx, x, "password", pass);
    session_send(s, p);
}

static void on_rooms_loaded(void *owner, void *data, redisReply *rep)
{
    struct worker *w = owner;
    char *jid = data;
    struct session *s = strmap_get(&w->sessions, jid);
    free(jid);
    if (!s || s->state != SESSION_ONLINE || !rep || rep->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *room = rep->element[i]->str;
        json_t *v = rep->element[i + 1]->type == REDIS_REPLY_STRING
                        ? json_loads(rep->element[i + 1]->str, 0, NULL)
                        : NULL;
        const char *nick = json_string_value(json_object_get(v, "nick"));
        json_int_t ts = json_integer_value(json_object_get(v, "ts"));
        if (room && nick && schema_jid_ok(room, ENV_MAX_JID) && !strchr(room, '/') &&
            strlen(nick) <= 1023 && *nick && schema_text_ok(nick, strlen(nick)) &&
            !strmap_get(&s->rooms, room)) {
            struct room *r = room_new(s, room, nick);
            r->last_ts = ts > 0 ? ts : 0;
            json_t *recent = json_object_get(v, "recent");
            size_t k;
            json_t *id;
            json_array_foreach(recent, k, id)
                if (json_is_string(id) && k < RECENT_KEEP)
                    json_array_append(r->recent, id);
            LOG(INFO, "muc_rejoin", "jid=%s room=%s", s->jid, room);
            send_join(s, r, r->nick, NULL);
        }
        json_decref(v);
    }
}

void muc_on_online(struct session *s)
{
    char key[KEYS_MAX];
    rooms_key(s, key, sizeof(key));
    bus_command(s->w->bus, on_rooms_loaded, xstrdup(s->jid), "HGETALL %s", key);
}

static void answer_join(struct session *s, struct room *r, const char *code,
                        const char *msg)
{
    r->await_subject = false;
    if (!r->req_id[0])
        return;
    if (code) {
        session_error(s, r->edge, r->dev, r->req_id, code, NULL, msg);
    } else {
        session_event(s, json_pack("{s:s, s:s, s:s, s:s}", "t", "ok", "id", r->req_id,
                                   "room", r->jid, "nick", r->nick),
                      r->edge, r->dev, false);
    }
    r->req_id[0] = '\0';
    if (r->join_timer)
        evtimer_del(r->join_timer);
}

/* The join is complete once the room sent the user's own presence, its
 * subject (the last thing a room sends at a join) and, for a room the join
 * created, accepted its default settings. */
static void join_done_maybe(struct session *s, struct room *r)
{
    if (r->joined && !r->configuring && !r->await_subject)
        answer_join(s, r, NULL, NULL);
}

/* A leave is answered "ok" once the room confirms the user is out. */
static void answer_leave(struct session *s, struct room *r)
{
    if (!r->leave_req[0])
        return;
    session_event(s, json_pack("{s:s, s:s}", "t", "ok", "id", r->leave_req), r->leave_edge,
                  r->leave_dev, false);
    r->leave_req[0] = '\0';
}

static void leave_room(struct session *s, const struct room *r)
{
    char to[2100];
    snprintf(to, sizeof(to), "%s/%s", r->jid, r->nick);
    xmpp_stanza_t *p = xmpp_presence_new(s->w->ctx);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, "unavailable");
    session_send(s, p);
}

/* The subject change waiting for the room is answered: "ok" (code NULL)
 * or an error, with the request's id. */
static void answer_subject(struct session *s, struct room *r, const char *code,
                           const char *msg)
{
    if (!r->subj_pending)
        return;
    r->subj_pending = false;
    if (r->subj_timer)
        evtimer_del(r->subj_timer);
    if (!r->subj_req[0])
        return;
    if (code)
        session_error(s, r->subj_edge, r->subj_dev, r->subj_req, code, NULL, msg);
    else
        session_event(s, json_pack("{s:s, s:s}", "t", "ok", "id", r->subj_req), r->subj_edge,
                      r->subj_dev, false);
}

static void on_subject_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct room *r = arg;
    LOG(INFO, "muc_subject_timeout", "jid=%s room=%s", r->s->jid, r->jid);
    answer_subject(r->s, r, "unavailable", "the room did not answer");
}

/* A subject change: sent with an id of its own, answered when the room
 * reflects the new subject (muc_on_message) or bounces the message with
 * that id (on_error), never before: a room where only moderators may set
 * the subject refuses a mere participant. */
static void send_subject(struct session *s, struct room *r, const struct env *e,
                         const char *subject)
{
    xmpp_ctx_t *ctx = s->w->ctx;
    if (r->subj_pending) {
        session_req_error(s, e, "unavailable",
                          "a subject change of that room is still waiting for the room, "
                          "send again in a moment");
        return;
    }
    /* The subject the user already set: the room has it, and a room may
     * stay silent about a change that changes nothing (Prosody does). */
    if (r->subject_by && strcmp(r->subject_by, r->nick) == 0 &&
        strcmp(r->subject ? r->subject : "", subject) == 0) {
        session_req_ok(s, e, NULL);
        return;
    }
    const char *id = json_string_value(json_object_get(env_json(e, "frame"), "id"));
    r->subj_pending = true;
    snprintf(r->subj_edge, sizeof(r->subj_edge), "%s", env_str(e, "edge"));
    snprintf(r->subj_dev, sizeof(r->subj_dev), "%s", env_str(e, "dev"));
    snprintf(r->subj_req, sizeof(r->subj_req), "%s", id ? id : "");
    snprintf(r->subj_id, sizeof(r->subj_id), "imbs%llu", (unsigned long long)++s->w->next_ping);
    xmpp_stanza_t *m = xmpp_message_new(ctx, "groupchat", r->jid, r->subj_id);
    xmpp_stanza_t *sub = stanza_add(ctx, m, "subject", NULL);
    if (*subject) {
        xmpp_stanza_t *txt = xmpp_stanza_new(ctx);
        xmpp_stanza_set_text(txt, subject);
        xmpp_stanza_add_child(sub, txt);
        xmpp_stanza_release(txt);
    }
    session_send(s, m);
    if (!r->subj_timer)
        r->subj_timer = evtimer_new(s->w->base, on_subject_timeout, r);
    struct timeval tv = {s->w->cfg->muc_join_timeout, 0};
    evtimer_add(r->subj_timer, &tv);
}

/* A JID that is no room (a user's, say) may never answer a join: the
 * phone is told once muc_join_timeout runs out. */
static void on_join_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct room *r = arg;
    struct session *s = r->s;
    if (r->leaving) {
        /* The room did not confirm: the user is out as far as the bridge
         * knows (the room was told, and forgotten here). */
        LOG(INFO, "muc_leave_unconfirmed", "jid=%s room=%s", s->jid, r->jid);
        answer_leave(s, r);
        room_drop(s, r);
        return;
    }
    if (r->joined && r->await_subject && !r->configuring) {
        LOG(INFO, "muc_join_no_subject", "jid=%s room=%s", s->jid, r->jid);
        answer_join(s, r, NULL, NULL);
        return;
    }
    LOG(INFO, "muc_join_timeout", "jid=%s room=%s joined=%d", s->jid, r->jid,
        (int)r->joined);
    answer_join(s, r, "unavailable", "the room did not answer");
    if (!r->joined) {
        leave_room(s, r); /* in case it answers after all */
        room_drop(s, r);
    }
}

bool muc_on_req(struct session *s, const struct env *e, const json_t *f)
{
    xmpp_ctx_t *ctx = s->w->ctx;
    const char *t = json_string_value(json_object_get(f, "t"));
#define STR(k) json_string_value(json_object_get(f, k))
    const char *room = STR("room");
    if (room && strchr(room, '/')) {
        session_req_error(s, e, "bad_frame", "field 'room' must be a bare JID");
        return true;
    }
    struct room *r = room ? strmap_get(&s->rooms, room) : NULL;
    if (strcmp(t, "join") == 0) {
        if (r && r->leaving) {
            session_req_error(s, e, "unavailable", "still leaving that room, join again in a moment");
            return true;
        }
        if (r && r->joined && strcmp(r->nick, STR("nick")) == 0) {
            session_req_ok(s, e, json_pack("{s:s, s:s}", "room", r->jid, "nick", r->nick));
            return true;
        }
        if (!r && s->rooms.count >= ROOMS_MAX) {
            session_req_error(s, e, "refused", "too many rooms: leave one first");
            return true;
        }
        if (!r) {
            r = room_new(s, room, STR("nick"));
        } else if (!r->joined) {
            free(r->nick);
            r->nick = xstrdup(STR("nick"));
        } /* else a new nickname: r->nick changes once the room says so */
        if (r->req_id[0]) /* an earlier join of this room not answered yet */
            session_error(s, r->edge, r->dev, r->req_id, "unavailable", NULL,
                          "replaced by a newer join of the same room");
        snprintf(r->edge, sizeof(r->edge), "%s", env_str(e, "edge"));
        snprintf(r->dev, sizeof(r->dev), "%s", env_str(e, "dev"));
        snprintf(r->req_id, sizeof(r->req_id), "%s", STR("id"));
        if (!r->join_timer)
            r->join_timer = evtimer_new(s->w->base, on_join_timeout, r);
        struct timeval tv = {s->w->cfg->muc_join_timeout, 0};
        evtimer_add(r->join_timer, &tv);
        send_join(s, r, STR("nick"), STR("pass"));
    } else if (strcmp(t, "leave") == 0) {
        if (!r || r->leaving) {
            session_req_error(s, e, "not_in_room", "you are not in that room");
            return true;
        }
        leave_room(s, r);
        answer_join(s, r, "unavailable", "you left the room");
        /* Forgotten at once for later sessions; here once the room says
         * the user is out (its last presence is the room's, not a
         * contact's). */
        char key[KEYS_MAX];
        rooms_key(s, key, sizeof(key));
        const char *argv[] = {"HDEL", key, r->jid};
        bus_command_argv(s->w->bus, NULL, NULL, 3, argv, NULL);
        r->leaving = true;
        if (!r->joined) { /* a join still on its way: nothing to confirm */
            room_drop(s, r);
            session_req_ok(s, e, NULL);
            return true;
        }
        /* Answered when the room sends the user's own unavailable presence
         * (muc_on_presence), or after muc_join_timeout. */
        snprintf(r->leave_edge, sizeof(r->leave_edge), "%s", env_str(e, "edge"));
        snprintf(r->leave_dev, sizeof(r->leave_dev), "%s", env_str(e, "dev"));
        snprintf(r->leave_req, sizeof(r->leave_req), "%s", STR("id") ? STR("id") : "");
        if (!r->join_timer)
            r->join_timer = evtimer_new(s->w->base, on_join_timeout, r);
        struct timeval tv = {s->w->cfg->muc_join_timeout, 0};
        evtimer_add(r->join_timer, &tv);
    } else if (strcmp(t, "subject") == 0 || strcmp(t, "invite") == 0) {
        if (!r || !r->joined) {
            session_req_error(s, e, "not_in_room", "join the room first");
            return true;
        }
        if (t[0] == 's') {
            send_subject(s, r, e, STR("subject") ? STR("subject") : "");
            return true;
        }
        /* A room takes a mediated invitation silently, and refuses one
         * with an error carrying its id (XEP-0045 7.8.2: a members-only
         * room where members may not invite, a visitor of a moderated
         * room). An IQ to the room right after it tells the two apart: a
         * room handles a user's stanzas in order, so its answer with no
         * error before it means the invitation went out. */
        struct pending_iq *pq = session_iq_new(s, PQ_MUC_INVITE, e);
        pq->archive = xstrdup(r->jid);
        snprintf(pq->qid, sizeof(pq->qid), "imbv%llu", (unsigned long long)++s->w->next_ping);
        xmpp_stanza_t *m = xmpp_message_new(ctx, NULL, r->jid, pq->qid);
        xmpp_stanza_t *x = stanza_add(ctx, m, "x", STANZA_NS_MUC_USER);
        xmpp_stanza_t *inv = stanza_add(ctx, x, "invite", NULL);
        xmpp_stanza_set_attribute(inv, "to", STR("to"));
        if (STR("reason") && *STR("reason"))
            stanza_add_text(ctx, inv, "reason", STR("reason"));
        session_send(s, m);
        xmpp_stanza_t *iq = xmpp_iq_new(ctx, "get", pq->iq_id);
        xmpp_stanza_set_to(iq, r->jid);
        stanza_add(ctx, iq, "query", NS_DISCO_INFO);
        session_send(s, iq);
    } else {
        return false;
    }
#undef STR
    return true;
}

bool muc_on_presence(struct session *s, xmpp_stanza_t *st)
{
    const char *from = xmpp_stanza_get_from(st);
    char bare[ENV_MAX_JID + 1];
    if (!from || !schema_bare_jid(from, bare, sizeof(bare)))
        return false;
    struct room *r = strmap_get(&s->rooms, bare);
    if (!r)
        return false;
    const char *nick = strchr(from, '/');
    const char *type = xmpp_stanza_get_type(st);
    if (type && strcmp(type, "error") == 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "the room refused the %s: %s",
                 r->joined ? "nickname" : "join", stanza_error_condition(st));
        LOG(INFO, "muc_join_failed", "jid=%s room=%s joined=%d err=%s", s->jid, r->jid,
            (int)r->joined, stanza_error_condition(st));
        if (r->leaving) { /* the room says she is not in: she is out */
            answer_leave(s, r);
            room_drop(s, r);
            return true;
        }
        answer_join(s, r, "refused", msg);
        if (!r->joined)
            room_drop(s, r);
        return true;
    }
    if (!nick || !nick[1])
        return true;
    nick++;
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", STANZA_NS_MUC_USER);
    xmpp_stanza_t *item = x ? xmpp_stanza_get_child_by_name(x, "item") : NULL;
    bool me = strcmp(nick, r->nick) == 0, created = false, renamed = false;
    for (xmpp_stanza_t *c = x ? xmpp_stanza_get_children(x) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *n = xmpp_stanza_get_name(c);
        const char *code = xmpp_stanza_get_attribute(c, "code");
        if (!n || strcmp(n, "status") != 0 || !code)
            continue;
        me |= strcmp(code, "110") == 0;
        created |= strcmp(code, "201") == 0;
        renamed |= strcmp(code, "303") == 0; /* a new nickname (7.6) */
    }
    if (me && created) {
        /* The user's join created the room, which stays locked until its
         * owner configures it: accept the defaults (an "instant room"). */
        struct pending_iq *pq = session_iq_new(s, PQ_MUC_CONFIG, NULL);
        pq->archive = xstrdup(r->jid);
        xmpp_stanza_t *iq = xmpp_iq_new(s->w->ctx, "set", pq->iq_id);
        xmpp_stanza_set_to(iq, r->jid);
        xmpp_stanza_t *q = stanza_add(s->w->ctx, iq, "query", STANZA_NS_MUC "#owner");
        xmpp_stanza_t *form = stanza_add(s->w->ctx, q, "x", "jabber:x:data");
        xmpp_stanza_set_type(form, "submit");
        session_send(s, iq);
        r->configuring = true;
        LOG(INFO, "muc_created", "jid=%s room=%s", s->jid, r->jid);
    }
    bool gone = type && strcmp(type, "unavailable") == 0;
    json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "t", "occupant", "room", r->jid,
                          "nick", nick, "show", gone ? "offline" : "online");
    const char *role = item ? xmpp_stanza_get_attribute(item, "role") : NULL;
    const char *aff = item ? xmpp_stanza_get_attribute(item, "affiliation") : NULL;
    const char *real = item && stanza_prep_attr(item, "jid", false)
                           ? xmpp_stanza_get_attribute(item, "jid")
                           : NULL;
    if (role && schema_id_ok(role, 64))
        json_object_set_new(f, "role", json_string(role));
    if (aff && schema_id_ok(aff, 64))
        json_object_set_new(f, "affiliation", json_string(aff));
    if (real && schema_jid_ok(real, ENV_MAX_JID))
        json_object_set_new(f, "jid", json_string(real));
    if (me)
        json_object_set_new(f, "me", json_true());
    char err[120];
    if (proto_check(proto_event("occupant"), f, err, sizeof(err)))
        session_event(s, f, NULL, NULL, false);
    else
        json_decref(f);
    if (gone)
        strmap_del(&r->occupants, nick);
    else if (r->occupants.count < 10000)
        strmap_put(&r->occupants, nick, (void *)1);
    /* A nickname is a resource of the room's JID: prepared like one. */
    const char *raw_nick = renamed && item ? xmpp_stanza_get_attribute(item, "nick") : NULL;
    char nick_buf[JID_PART_MAX + 1];
    const char *new_nick = raw_nick && jid_prep_part(JID_RESOURCE, raw_nick, strlen(raw_nick),
                                                     nick_buf, sizeof(nick_buf), true) == JID_OK
                               ? nick_buf
                               : NULL;
    if (me && gone && new_nick) {
        /* The user's old nickname leaves; the new one's presence follows. */
        LOG(INFO, "muc_nick", "jid=%s room=%s nick=%s", s->jid, r->jid, new_nick);
        free(r->nick);
        r->nick = xstrdup(new_nick);
        room_store(s, r);
    } else if (me && gone) {
        /* Left, kicked or banned: the room is gone for the user. */
        LOG(INFO, "muc_left", "jid=%s room=%s", s->jid, r->jid);
        if (!r->leaving)
            answer_join(s, r, "refused", "the room removed you");
        answer_leave(s, r);
        room_drop(s, r);
    } else if (me && !r->joined) {
        r->joined = true;
        if (strcmp(nick, r->nick) != 0) { /* the room gave another (210) */
            free(r->nick);
            r->nick = xstrdup(nick);
        }
        LOG(INFO, "muc_joined", "jid=%s room=%s occupants=%zu", s->jid, r->jid,
            r->occupants.count);
        room_store(s, r);
        /* History, then the subject follow: the join is answered on the
         * subject (and, for a new room, once it is unlocked). */
        r->await_subject = true;
        if (r->req_id[0] && !created) {
            long wait = s->w->cfg->muc_join_timeout < SUBJECT_WAIT_S
                            ? s->w->cfg->muc_join_timeout
                            : SUBJECT_WAIT_S;
            struct timeval tv = {wait, 0};
            evtimer_add(r->join_timer, &tv);
        }
    } else if (me && !gone && !r->configuring && !r->await_subject) {
        answer_join(s, r, NULL, NULL); /* a new nickname, if one was asked */
    }
    return true;
}

void muc_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st)
{
    const char *type = xmpp_stanza_get_type(st);
    bool ok = type && strcmp(type, "result") == 0;
    if (pq->kind == PQ_MUC_INVITE) {
        /* No error for the invitation came before: the room took it. */
        if (!pq->req_id[0])
            return;
        if (ok) {
            session_event(s, json_pack("{s:s, s:s}", "t", "ok", "id", pq->req_id), pq->edge,
                          pq->dev, false);
        } else {
            char msg[200];
            snprintf(msg, sizeof(msg), "the room refused the invitation: %s",
                     stanza_error_condition(st));
            session_error(s, pq->edge, pq->dev, pq->req_id, "refused", NULL, msg);
        }
        return;
    }
    struct room *r = pq->archive ? strmap_get(&s->rooms, pq->archive) : NULL;
    if (!r)
        return;
    r->configuring = false;
    if (ok)
        join_done_maybe(s, r);
    else
        answer_join(s, r, "refused", "the new room could not be opened to others");
}

/* An invitation in msg: mediated (from the room, XEP-0045 7.8.2) or direct
 * (XEP-0249). Kept until a phone has it. */
static bool on_invite(struct session *s, xmpp_stanza_t *m)
{
    const char *from = xmpp_stanza_get_from(m);
    char bare[ENV_MAX_JID + 1];
    if (!from || !schema_jid_ok(from, ENV_MAX_JID) ||
        !schema_bare_jid(from, bare, sizeof(bare)))
        return false;
    const char *room = NULL, *inviter = NULL, *reason = NULL, *pass = NULL;
    char *reason_text = NULL, *pass_text = NULL; /* owned, libstrophe's */
    xmpp_ctx_t *ctx = s->w->ctx;
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(m, "x", STANZA_NS_MUC_USER);
    xmpp_stanza_t *inv = x ? xmpp_stanza_get_child_by_name(x, "invite") : NULL;
    xmpp_stanza_t *d = xmpp_stanza_get_child_by_name_and_ns(m, "x", STANZA_NS_CONFERENCE);
    if (inv) {
        room = bare;
        inviter = stanza_prep_attr(inv, "from", false) ? xmpp_stanza_get_attribute(inv, "from")
                                                       : NULL;
        xmpp_stanza_t *rs = xmpp_stanza_get_child_by_name(inv, "reason");
        reason = reason_text = rs ? xmpp_stanza_get_text(rs) : NULL;
        xmpp_stanza_t *pw = xmpp_stanza_get_child_by_name(x, "password");
        pass = pass_text = pw ? xmpp_stanza_get_text(pw) : NULL;
    } else if (d) {
        room = stanza_prep_attr(d, "jid", false) ? xmpp_stanza_get_attribute(d, "jid") : NULL;
        inviter = from;
        reason = xmpp_stanza_get_attribute(d, "reason");
        pass = xmpp_stanza_get_attribute(d, "password");
    } else {
        return false;
    }
    if (room && inviter && schema_jid_ok(room, ENV_MAX_JID) && !strchr(room, '/') &&
        schema_jid_ok(inviter, ENV_MAX_JID)) {
        json_t *f = json_pack("{s:s, s:s, s:s}", "t", "invite", "room", room,
                              "from", inviter);
        if (reason && *reason && strlen(reason) <= 1024 &&
            schema_text_ok(reason, strlen(reason)))
            json_object_set_new(f, "reason", json_string(reason));
        if (pass && *pass && strlen(pass) <= 1024 && schema_text_ok(pass, strlen(pass)))
            json_object_set_new(f, "pass", json_string(pass));
        char err[120];
        if (proto_check(proto_event("invite"), f, err, sizeof(err)))
            session_event(s, f, NULL, NULL, true);
        else
            json_decref(f);
    }
    if (reason_text)
        xmpp_free(ctx, reason_text);
    if (pass_text)
        xmpp_free(ctx, pass_text);
    return true;
}

/* A bounce from a room: the answer to a subject change or an invitation
 * when it carries that one's id (consumed), else left to the caller (an
 * undeliverable message). */
static bool on_error(struct session *s, xmpp_stanza_t *m)
{
    const char *from = xmpp_stanza_get_from(m), *id = xmpp_stanza_get_id(m);
    char bare[ENV_MAX_JID + 1];
    if (!from || !id || !schema_jid_ok(from, ENV_MAX_JID) ||
        !schema_bare_jid(from, bare, sizeof(bare)))
        return false;
    for (struct pending_iq *pq = s->iqs; pq; pq = pq->next) {
        if (pq->kind != PQ_MUC_INVITE || strcmp(pq->qid, id) != 0 ||
            strcasecmp(pq->archive, bare) != 0)
            continue;
        LOG(INFO, "muc_invite_refused", "jid=%s room=%s err=%s", s->jid, pq->archive,
            stanza_error_condition(m));
        if (pq->req_id[0]) {
            char msg[200];
            snprintf(msg, sizeof(msg), "the room refused the invitation: %s",
                     stanza_error_condition(m));
            session_error(s, pq->edge, pq->dev, pq->req_id, "refused", NULL, msg);
            pq->req_id[0] = '\0'; /* answered: the IQ's answer is not */
        }
        return true;
    }
    struct room *r = strmap_get(&s->rooms, bare);
    if (!r || !r->subj_pending || strcmp(id, r->subj_id) != 0)
        return false;
    char msg[200];
    snprintf(msg, sizeof(msg), "the room refused the subject: %s", stanza_error_condition(m));
    LOG(INFO, "muc_subject_refused", "jid=%s room=%s err=%s", s->jid, r->jid,
        stanza_error_condition(m));
    answer_subject(s, r, "refused", msg);
    return true;
}

bool muc_on_message(struct session *s, xmpp_stanza_t *m)
{
    const char *type = xmpp_stanza_get_type(m);
    if (type && strcmp(type, "error") == 0)
        return on_error(s, m);
    if (!type || strcmp(type, "groupchat") != 0)
        return on_invite(s, m);
    const char *from = xmpp_stanza_get_from(m);
    char bare[ENV_MAX_JID + 1];
    if (!from || !schema_jid_ok(from, ENV_MAX_JID) ||
        !schema_bare_jid(from, bare, sizeof(bare)))
        return true;
    struct room *r = strmap_get(&s->rooms, bare);
    if (!r)
        return true; /* a room the user is not in (any more) */
    const char *nick = strchr(from, '/');
    xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(m, "body");
    xmpp_stanza_t *subj = xmpp_stanza_get_child_by_name(m, "subject");
    if (subj && !body) {
        char *text = xmpp_stanza_get_text(subj);
        const char *shown = text && schema_text_ok(text, strlen(text)) &&
                                    strlen(text) <= 1024 ? text : "";
        json_t *f = json_pack("{s:s, s:s, s:s}", "t", "subject", "room", r->jid,
                              "subject", shown);
        if (nick && nick[1])
            json_object_set_new(f, "by", json_string(nick + 1));
        free(r->subject);
        free(r->subject_by);
        r->subject = xstrdup(shown);
        r->subject_by = nick && nick[1] ? xstrdup(nick + 1) : NULL;
        if (text)
            xmpp_free(s->w->ctx, text);
        /* The room reflects the user's own change: Prosody from the
         * user's nickname, without the message's id; others with it.
         * (The subject a room sends at a join carries a <delay/>.) */
        const char *xid = xmpp_stanza_get_id(m);
        bool delayed = xmpp_stanza_get_child_by_name_and_ns(m, "delay", "urn:xmpp:delay") != NULL;
        bool answers = r->subj_pending &&
                       ((xid && strcmp(xid, r->subj_id) == 0) ||
                        (!delayed && r->subject_by && strcmp(r->subject_by, r->nick) == 0));
        char err[120];
        if (proto_check(proto_event("subject"), f, err, sizeof(err)))
            session_event(s, f, NULL, NULL, false);
        else
            json_decref(f);
        if (answers)
            answer_subject(s, r, NULL, NULL);
        if (r->await_subject) { /* the last thing a room sends at a join */
            r->await_subject = false;
            join_done_maybe(s, r);
        }
        return true;
    }
    if (!body || !nick || !nick[1])
        return true;
    int64_t ts = stanza_time(m);
    /* The message's identity: the room's archive id, else sender and id. */
    char key[ENV_MAX_JID + 80];
    const char *sid = stanza_archive_id(m, r->jid), *xid = xmpp_stanza_get_id(m);
    if (sid)
        snprintf(key, sizeof(key), "a:%s", sid);
    else
        snprintf(key, sizeof(key), "m:%s|%s", nick + 1, xid ? xid : "");
    bool delayed = xmpp_stanza_get_child_by_name_and_ns(m, "delay", "urn:xmpp:delay") != NULL;
    if (delayed) {
        /* History the room sends at a rejoin, from the second of the
         * newest message stored: skip what the user already has. */
        size_t k;
        json_t *id;
        json_array_foreach(r->recent, k, id)
            if (strcmp(json_string_value(id), key) == 0)
                return true;
        if (ts < r->last_ts - 1000)
            return true;
    }
    struct env *e;
    char err[200];
    if (stanza_message_to_env(s->w->ctx, m, s->jid, &e, err, sizeof(err)) != STANZA_ENVELOPE) {
        s->w->stats.bad_stanzas++;
        return true;
    }
    env_set_str(e, "room", r->jid);
    if (ts > r->last_ts)
        r->last_ts = ts;
    json_array_append_new(r->recent, json_string(key));
    while (json_array_size(r->recent) > RECENT_KEEP)
        json_array_remove(r->recent, 0);
    room_store(s, r);
    s->w->stats.msgs_from_xmpp++;
    session_deliver_chat(s, e, from);
    return true;
}

void muc_free(struct session *s)
{
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&s->rooms, &it); e;
         e = strmap_next(&s->rooms, &it))
        room_free(e->value);
    strmap_free(&s->rooms);
}
