/* req.c - the plumbing every chat feature shares: a phone's request arrives
 * as a "req" envelope and is routed to the feature that serves it (im.c,
 * muc.c, archive.c); answers and news go back to phones as "event"
 * envelopes, to one device or all, stored and numbered when they must
 * survive a phone being away; IQs sent for a request wait in the session's
 * list until the server answers. */
#include "jpool.h"
#include "log.h"
#include "proto.h"
#include "util.h"
#include "xmppd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A session's output buffer lives only while it holds a burst: from the
 * pool's lists (jpool.h) when the pool is on, else from malloc (so that
 * AddressSanitizer still sees its uses). */
static char *out_grow(char *p, size_t n)
{
    return jpool_on() ? jpool_realloc(p, n) : xrealloc(p, n);
}

static void out_free(char *p)
{
    if (jpool_on())
        jpool_free(p);
    else
        free(p);
}

/* Stanzas for an online session are gathered as text and written at the
 * start of the next libstrophe pass in one piece: a burst costs the server
 * (and this process) one write, not one per stanza. Stream management is
 * off (session.c), so libstrophe counts no stanzas it would not see. */
void session_send(struct session *s, xmpp_stanza_t *st)
{
    char *text = NULL;
    size_t len = 0;
    if (!s->conn) {
        xmpp_stanza_release(st); /* (no stream: nothing to write to) */
        return;
    }
    if (s->state != SESSION_ONLINE || xmpp_stanza_to_text(st, &text, &len) != XMPP_EOK) {
        xmpp_send(s->conn, st);
        xmpp_stanza_release(st);
        worker_kick(s->w);
        return;
    }
    xmpp_stanza_release(st);
    /* (NUL-terminated: libstrophe's xmpp_send_raw logs it as a string.) */
    if (s->outlen + len + 1 > s->outcap) {
        s->outcap = s->outcap ? s->outcap : 504; /* (a 512-byte chunk) */
        while (s->outlen + len + 1 > s->outcap)
            s->outcap *= 2;
        s->out = out_grow(s->out, s->outcap);
    }
    memcpy(s->out + s->outlen, text, len);
    s->outlen += len;
    s->out[s->outlen] = '\0';
    xmpp_free(s->w->ctx, text);
    if (!s->out_queued) {
        s->out_queued = true;
        s->out_next = s->w->outs;
        s->w->outs = s;
    }
    worker_kick(s->w);
}

void session_flush_out(struct session *s)
{
    if (!s->outlen)
        return;
    if (s->conn && (s->state == SESSION_ONLINE || s->state == SESSION_CLOSING))
        xmpp_send_raw(s->conn, s->out, s->outlen);
    /* No buffer is kept for an idle session: a burst's small one goes
     * back to the pool's lists (jpool.h), where the next burst of any
     * session finds it. */
    out_free(s->out);
    s->out = NULL;
    s->outlen = s->outcap = 0;
}

void worker_flush_out(struct worker *w)
{
    struct session *s = w->outs;
    w->outs = NULL;
    while (s) {
        struct session *next = s->out_next;
        s->out_queued = false;
        s->out_next = NULL;
        session_flush_out(s);
        s = next;
    }
}

void session_drop_out(struct session *s)
{
    if (s->out_queued) {
        for (struct session **pp = &s->w->outs; *pp; pp = &(*pp)->out_next)
            if (*pp == s) {
                *pp = s->out_next;
                break;
            }
        s->out_queued = false;
    }
    out_free(s->out);
    s->out = NULL;
    s->outlen = s->outcap = 0;
}

void session_event(struct session *s, json_t *frame, const char *edge,
                   const char *dev, bool durable)
{
    struct env *e = env_new(ENV_EVENT);
    env_set_str(e, "to", s->jid);
    env_set_json(e, "frame", frame);
    if (edge && dev && *edge && *dev) {
        env_set_str(e, "edge", edge);
        env_set_str(e, "dev", dev);
    }
    s->w->stats.events++;
    if (durable)
        worker_deliver(s, e, NULL);
    else if (edge && dev && *edge && *dev)
        worker_to_phones(s->w, s, e, true); /* an answer: the phone waits for it */
    else
        worker_to_phones(s->w, s, e, false); /* news nobody waits for */
}

static const char *req_id(const struct env *req)
{
    return json_string_value(json_object_get(env_json(req, "frame"), "id"));
}

void session_req_ok(struct session *s, const struct env *req, json_t *extra)
{
    const char *id = req_id(req);
    if (!id) {
        json_decref(extra);
        return;
    }
    json_t *f = json_pack("{s:s, s:s}", "t", "ok", "id", id);
    if (extra)
        json_object_update(f, extra);
    json_decref(extra);
    session_event(s, f, env_str(req, "edge"), env_str(req, "dev"), false);
}

void session_error(struct session *s, const char *edge, const char *dev,
                   const char *id, const char *code, const char *reason,
                   const char *msg)
{
    worker_error(s->w, s->jid, edge, dev, id, code, reason, msg);
}

void session_req_error(struct session *s, const struct env *req,
                       const char *code, const char *msg)
{
    session_error(s, env_str(req, "edge"), env_str(req, "dev"), req_id(req), code,
                  NULL, msg);
}

static void pending_iq_free(struct pending_iq *pq)
{
    free(pq->archive);
    free(pq->with);
    free(pq->page_edge);
    json_decref(pq->page);
    free(pq);
}

static int on_iq_answer(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct session *s = userdata;
    const char *id = xmpp_stanza_get_id(st);
    for (struct pending_iq **pp = &s->iqs; *pp; pp = &(*pp)->next) {
        struct pending_iq *pq = *pp;
        if (!id || strcmp(pq->iq_id, id) != 0)
            continue;
        *pp = pq->next;
        if (pq->kind == PQ_HISTORY)
            archive_iq_answer(s, pq, st);
        else if (pq->kind == PQ_MUC_CONFIG || pq->kind == PQ_MUC_INVITE)
            muc_iq_answer(s, pq, st);
        else
            im_iq_answer(s, pq, st);
        pending_iq_free(pq);
        break;
    }
    return 0; /* one-shot */
}

struct pending_iq *session_iq_new(struct session *s, enum pending_kind kind,
                                  const struct env *req)
{
    struct pending_iq *pq = xcalloc(1, sizeof(*pq));
    pq->kind = kind;
    snprintf(pq->iq_id, sizeof(pq->iq_id), "imbi%llu",
             (unsigned long long)++s->w->next_ping);
    if (req) {
        snprintf(pq->edge, sizeof(pq->edge), "%s", env_str(req, "edge"));
        snprintf(pq->dev, sizeof(pq->dev), "%s", env_str(req, "dev"));
        if (req_id(req))
            snprintf(pq->req_id, sizeof(pq->req_id), "%s", req_id(req));
    }
    pq->next = s->iqs;
    s->iqs = pq;
    xmpp_id_handler_add(s->conn, on_iq_answer, pq->iq_id, s);
    return pq;
}

void session_iqs_free(struct session *s)
{
    while (s->iqs) {
        struct pending_iq *pq = s->iqs;
        s->iqs = pq->next;
        pending_iq_free(pq);
    }
}

void session_on_req(struct session *s, struct env *e)
{
    char err[200];
    json_t *frame = env_json(e, "frame");
    /* The edge checked it; the bus is not to be trusted: check again. */
    const struct proto_frame *pf = proto_check_request(frame, err, sizeof(err));
    /* ... and its JIDs prepared (the edge did; a no-op then). */
    if (!pf || !proto_prep(pf, frame, err, sizeof(err))) {
        s->w->stats.bad_envelopes++;
        LOG(WARN, "request_invalid", "jid=%s err=\"%s\"", s->jid, err);
        session_req_error(s, e, "bad_frame", err);
        return;
    }
    if (s->state != SESSION_ONLINE) {
        session_req_error(s, e, "unavailable", "the XMPP session is not up, send again");
        return;
    }
    s->w->stats.requests++;
    if (im_on_req(s, e, frame) || muc_on_req(s, e, frame) ||
        archive_on_req(s, e, frame)) {
        worker_kick(s->w);
        return;
    }
    session_req_error(s, e, "unknown_type", "this bridge does not serve that request");
}
