/* archive.c - history for phones (XEP-0313): a phone asks for a page of a
 * conversation's (or a room's) archive; each archived message comes back as
 * a "hist" frame, then one "history" frame closes the page with what is
 * needed to ask for the next (RSM ids, XEP-0059). An archive counts every
 * stanza it keeps (receipts, read markers, errors) against a page's max;
 * the bridge holds the page and asks again, up to HISTORY_ROUNDS queries,
 * until it holds max messages with a body or the archive has no more. */
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
/* Queries one page may take (the first, then refills). */
#define HISTORY_ROUNDS 5

/* Ask the archive for up to max stanzas of pq's page, before or after
 * cursor (NULL: the newest page). */
static void send_query(struct session *s, struct pending_iq *pq, const char *cursor, int max)
{
    bool room = strcasecmp(pq->archive, s->jid) != 0;
    struct mam_query mq = {
        .queryid = pq->qid,
        .to = room ? pq->archive : NULL,
        .with = room ? NULL : pq->with,
        .after = pq->forward ? cursor : NULL,
        .before = pq->forward ? NULL : cursor ? cursor : "",
        .max = max,
    };
    xmpp_stanza_t *q = stanza_mam_query(s->w->ctx, pq->iq_id, &mq);
    session_send(s, q);
}

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
    pq->with = !room && STR("with") ? xstrdup(STR("with")) : NULL;
    json_int_t max = json_integer_value(json_object_get(f, "max"));
    pq->want = max > 0 ? (int)max : HISTORY_DEFAULT;
    pq->forward = STR("after") != NULL;
    pq->page = json_array();
    pq->rounds = 1;
    send_query(s, pq, pq->forward ? STR("after") : STR("before"), pq->want);
#undef STR
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
    if (body && pq->count >= pq->want) {
        /* More than asked for: an archive that ignores the page size
         * would otherwise grow the held page without bound. */
        s->w->stats.bad_stanzas++;
        LOG(DEBUG, "history_extra", "jid=%s want=%d", s->jid, pq->want);
    } else if (body && from && schema_jid_ok(from, ENV_MAX_JID) && strlen(body) <= ENV_MAX_BODY &&
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
        /* Held: a refill (older, when paging backwards) goes before. */
        pq->count++;
        if (pq->forward)
            json_array_append_new(pq->page, f);
        else
            json_array_insert_new(pq->page, pq->insert_at++, f);
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

/* The same page, asked further from cursor: a new pending query takes
 * over pq's state (pq is freed by the caller). */
static void refill(struct session *s, struct pending_iq *pq, const char *cursor)
{
    struct pending_iq *nq = session_iq_new(s, PQ_HISTORY, NULL);
    memcpy(nq->edge, pq->edge, sizeof(nq->edge));
    memcpy(nq->dev, pq->dev, sizeof(nq->dev));
    memcpy(nq->req_id, pq->req_id, sizeof(nq->req_id));
    snprintf(nq->qid, sizeof(nq->qid), "imbh%llu", (unsigned long long)++s->w->next_ping);
    nq->archive = pq->archive;
    nq->with = pq->with;
    nq->page = pq->page;
    nq->page_edge = pq->page_edge;
    pq->archive = pq->with = pq->page_edge = NULL;
    pq->page = NULL;
    nq->count = pq->count;
    nq->want = pq->want;
    nq->forward = pq->forward;
    nq->rounds = pq->rounds + 1;
    nq->insert_at = 0;
    LOG(DEBUG, "history_refill", "jid=%s round=%d count=%d want=%d", s->jid, nq->rounds,
        nq->count, nq->want);
    send_query(s, nq, cursor, nq->want - nq->count);
}

void archive_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st)
{
    const char *type = xmpp_stanza_get_type(st);
    xmpp_stanza_t *fin = xmpp_stanza_get_child_by_name_and_ns(st, "fin", "urn:xmpp:mam:2");
    bool ok = type && strcmp(type, "result") == 0 && fin;
    if (!ok && pq->rounds == 1) {
        session_error(s, pq->edge, pq->dev, pq->req_id, "refused", NULL,
                      "the XMPP server has no archive to offer for that");
        return;
    }
    /* A refill the archive refused: the page as held, not complete. */
    const char *complete = ok ? xmpp_stanza_get_attribute(fin, "complete") : NULL;
    bool done = complete && !strcmp(complete, "true");
    xmpp_stanza_t *set = ok ? xmpp_stanza_get_child_by_name(fin, "set") : NULL;
    char *first = rsm_text(set, "first"), *last = rsm_text(set, "last");
    if (first && !schema_id_ok(first, 64)) {
        xmpp_free(s->w->ctx, first);
        first = NULL;
    }
    if (last && !schema_id_ok(last, 64)) {
        xmpp_free(s->w->ctx, last);
        last = NULL;
    }
    /* This query's far end (where a next one goes on), and the page's
     * other end as the first query saw it. */
    char *far = pq->forward ? last : first, *near = pq->forward ? first : last;
    if (pq->rounds == 1 && near)
        pq->page_edge = xstrdup(near);
    if (ok && !done && far && pq->count < pq->want && pq->rounds < HISTORY_ROUNDS) {
        refill(s, pq, far);
    } else {
        size_t i;
        json_t *h;
        json_array_foreach(pq->page, i, h)
            session_event(s, json_incref(h), pq->edge, pq->dev, false);
        json_t *f = json_pack("{s:s, s:s, s:b, s:i}", "t", "history", "id", pq->req_id,
                              "complete", done, "count", pq->count);
        const char *pfirst = pq->forward ? pq->page_edge : first;
        const char *plast = pq->forward ? last : pq->page_edge;
        if (pfirst)
            json_object_set_new(f, "first", json_string(pfirst));
        if (plast)
            json_object_set_new(f, "last", json_string(plast));
        session_event(s, f, pq->edge, pq->dev, false);
    }
    if (first)
        xmpp_free(s->w->ctx, first);
    if (last)
        xmpp_free(s->w->ctx, last);
}
