/* archive.c - history for phones (XEP-0313): a phone asks for a page of a
 * conversation's (or a room's) archive; each archived message comes back as
 * a "hist" frame, then one "history" frame closes the page with what is
 * needed to ask for the next (RSM ids, XEP-0059). */
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

#define HISTORY_DEFAULT 50

bool archive_on_req(struct session *s, const struct env *e, const json_t *f)
{
    const char *t = json_string_value(json_object_get(f, "t"));
    if (strcmp(t, "history") != 0)
        return false;
#define STR(k) json_string_value(json_object_get(f, k))
    const char *room = STR("room");
    if (room && strchr(room, '/')) {
        session_req_error(s, e, "bad_frame", "field 'room' must be a bare JID");
        return true;
    }
    struct pending_iq *pq = session_iq_new(s, PQ_HISTORY, e);
    snprintf(pq->qid, sizeof(pq->qid), "imbh%llu", (unsigned long long)++s->w->next_ping);
    pq->archive = xstrdup(room ? room : s->jid);
    json_int_t max = json_integer_value(json_object_get(f, "max"));
    struct mam_query mq = {
        .queryid = pq->qid,
        .to = room,
        .with = room ? NULL : STR("with"),
        .after = STR("after"),
        .before = STR("after") ? NULL : STR("before") ? STR("before") : "",
        .max = max > 0 ? (int)max : HISTORY_DEFAULT,
    };
#undef STR
    xmpp_stanza_t *q = stanza_mam_query(s->w->ctx, pq->iq_id, &mq);
    session_send(s, q);
    return true;
}

/* The pending history query whose results carry queryid qid. */
static struct pending_iq *query_of(struct session *s, xmpp_stanza_t *msg)
{
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(msg, "result", "urn:xmpp:mam:2");
    const char *qid = r ? xmpp_stanza_get_attribute(r, "queryid") : NULL;
    for (struct pending_iq *pq = s->iqs; qid && pq; pq = pq->next)
        if (pq->kind == PQ_HISTORY && strcmp(pq->qid, qid) == 0)
            return pq;
    return NULL;
}

bool archive_on_message(struct session *s, xmpp_stanza_t *msg)
{
    struct pending_iq *pq = query_of(s, msg);
    if (!pq)
        return false;
    const char *aid = NULL;
    xmpp_stanza_t *m = stanza_mam_result(msg, pq->archive, pq->qid, &aid);
    if (!m)
        return true; /* a forged or broken result: not the archive's */
    if (!session_prep_stanza(s, m))
        return true;
    xmpp_stanza_t *body_el = xmpp_stanza_get_child_by_name(m, "body");
    char *body = body_el ? xmpp_stanza_get_text(body_el) : NULL;
    const char *from = xmpp_stanza_get_from(m), *to = xmpp_stanza_get_to(m);
    const char *mid = xmpp_stanza_get_id(m);
    if (body && from && schema_jid_ok(from, ENV_MAX_JID) && strlen(body) <= ENV_MAX_BODY &&
        schema_text_ok(body, strlen(body))) {
        /* The time is on the <forwarded/> wrapper's <delay/>. */
        xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(msg, "result", "urn:xmpp:mam:2");
        xmpp_stanza_t *fw = xmpp_stanza_get_child_by_name_and_ns(r, "forwarded", STANZA_NS_FORWARD);
        json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "t", "hist", "id",
                              pq->req_id, "aid", aid, "from", from, "body", body,
                              "ts", (json_int_t)stanza_time(fw));
        if (to && schema_jid_ok(to, ENV_MAX_JID))
            json_object_set_new(f, "to", json_string(to));
        if (mid && schema_id_ok(mid, 64))
            json_object_set_new(f, "mid", json_string(mid));
        if (strcasecmp(pq->archive, s->jid) != 0)
            json_object_set_new(f, "room", json_string(pq->archive));
        pq->count++;
        session_event(s, f, pq->edge, pq->dev, false);
    }
    if (body)
        xmpp_free(s->w->ctx, body);
    return true;
}

static char *rsm_text(xmpp_stanza_t *set, const char *name)
{
    xmpp_stanza_t *c = set ? xmpp_stanza_get_child_by_name(set, name) : NULL;
    return c ? xmpp_stanza_get_text(c) : NULL;
}

void archive_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st)
{
    const char *type = xmpp_stanza_get_type(st);
    xmpp_stanza_t *fin = xmpp_stanza_get_child_by_name_and_ns(st, "fin", "urn:xmpp:mam:2");
    if (!type || strcmp(type, "result") != 0 || !fin) {
        session_error(s, pq->edge, pq->dev, pq->req_id, "refused", NULL,
                      "the XMPP server has no archive to offer for that");
        return;
    }
    const char *complete = xmpp_stanza_get_attribute(fin, "complete");
    xmpp_stanza_t *set = xmpp_stanza_get_child_by_name(fin, "set");
    json_t *f = json_pack("{s:s, s:s, s:b, s:i}", "t", "history", "id", pq->req_id,
                          "complete", complete && !strcmp(complete, "true"),
                          "count", pq->count);
    char *first = rsm_text(set, "first"), *last = rsm_text(set, "last");
    if (first && schema_id_ok(first, 64))
        json_object_set_new(f, "first", json_string(first));
    if (last && schema_id_ok(last, 64))
        json_object_set_new(f, "last", json_string(last));
    if (first)
        xmpp_free(s->w->ctx, first);
    if (last)
        xmpp_free(s->w->ctx, last);
    session_event(s, f, pq->edge, pq->dev, false);
}
