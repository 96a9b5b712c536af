/* stanza.c - stanza <-> envelope translation. */
#include "stanza.h"
#include "jid.h"
#include "schema.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

xmpp_stanza_t *stanza_chat(xmpp_ctx_t *ctx, const char *to, const char *body,
                           const char *id, bool group)
{
    xmpp_stanza_t *m = xmpp_message_new(ctx, group ? "groupchat" : "chat", to, id);
    xmpp_message_set_body(m, body);
    if (!group && id) {
        /* Ask for a delivery receipt and a read marker (XEP-0184, 0333). */
        stanza_add(ctx, m, "request", STANZA_NS_RECEIPTS);
        stanza_add(ctx, m, "markable", STANZA_NS_MARKERS);
    }
    return m;
}

xmpp_stanza_t *stanza_ping(xmpp_ctx_t *ctx, const char *id, const char *to)
{
    xmpp_stanza_t *iq = xmpp_iq_new(ctx, "get", id);
    if (to)
        xmpp_stanza_set_to(iq, to);
    xmpp_stanza_t *ping = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(ping, "ping");
    xmpp_stanza_set_ns(ping, STANZA_NS_PING);
    xmpp_stanza_add_child(iq, ping);
    xmpp_stanza_release(ping);
    return iq;
}

xmpp_stanza_t *stanza_presence(xmpp_ctx_t *ctx, bool available)
{
    xmpp_stanza_t *p = xmpp_presence_new(ctx);
    if (!available)
        xmpp_stanza_set_type(p, "unavailable");
    return p;
}

/* Prepare attr of st into its prepared form; JID_OK when absent. */
static int prep_attr(xmpp_stanza_t *st, const char *attr, bool bare)
{
    const char *v = xmpp_stanza_get_attribute(st, attr);
    if (!v)
        return JID_OK;
    char buf[3 * (JID_PART_MAX + 1)];
    int rc = bare ? jid_prep_bare(v, buf, sizeof(buf)) : jid_prep(v, buf, sizeof(buf));
    if (rc == JID_OK && strlen(buf) > ENV_MAX_JID)
        rc = JID_E_TOO_LONG;
    if (rc == JID_OK && strcmp(buf, v) != 0)
        xmpp_stanza_set_attribute(st, attr, buf);
    return rc;
}

bool stanza_prep_addresses(xmpp_stanza_t *st, char *err, size_t errlen)
{
    static const char *const attrs[] = {"from", "to"};
    for (size_t i = 0; i < 2; i++) {
        int rc = prep_attr(st, attrs[i], false);
        if (rc != JID_OK) {
            snprintf(err, errlen, "'%s' is not a valid JID: %s", attrs[i],
                     jid_strerror(rc));
            return false;
        }
    }
    return true;
}

bool stanza_prep_attr(xmpp_stanza_t *el, const char *attr, bool bare)
{
    return xmpp_stanza_get_attribute(el, attr) && prep_attr(el, attr, bare) == JID_OK;
}

#define NS_SID "urn:xmpp:sid:0"
#define NS_MAM "urn:xmpp:mam:2"
#define NS_FORWARD "urn:xmpp:forward:0"

const char *stanza_archive_id(xmpp_stanza_t *msg, const char *user)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(msg); c;
         c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_get_name(c), *ns = xmpp_stanza_get_ns(c);
        if (!name || !ns || strcmp(name, "stanza-id") || strcmp(ns, NS_SID))
            continue;
        const char *by = xmpp_stanza_get_attribute(c, "by");
        const char *id = xmpp_stanza_get_id(c);
        /* Only the user's own server may stamp the user's archive id. */
        if (by && id && strcasecmp(by, user) == 0 && schema_id_ok(id, 64))
            return id;
    }
    return NULL;
}

xmpp_stanza_t *stanza_add(xmpp_ctx_t *ctx, xmpp_stanza_t *parent,
                          const char *name, const char *ns)
{
    xmpp_stanza_t *c = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(c, name);
    if (ns)
        xmpp_stanza_set_ns(c, ns);
    xmpp_stanza_add_child(parent, c);
    xmpp_stanza_release(c); /* the parent holds it */
    return c;
}

void stanza_add_text(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                     const char *text)
{
    xmpp_stanza_t *el = stanza_add(ctx, parent, name, NULL);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx);
    xmpp_stanza_set_text(t, text);
    xmpp_stanza_add_child(el, t);
    xmpp_stanza_release(t);
}

xmpp_stanza_t *stanza_mam_query(xmpp_ctx_t *ctx, const char *iq_id,
                                const struct mam_query *mq)
{
    xmpp_stanza_t *iq = xmpp_iq_new(ctx, "set", iq_id);
    if (mq->to)
        xmpp_stanza_set_to(iq, mq->to);
    xmpp_stanza_t *q = stanza_add(ctx, iq, "query", NS_MAM);
    xmpp_stanza_set_attribute(q, "queryid", mq->queryid);
    xmpp_stanza_t *x = stanza_add(ctx, q, "x", "jabber:x:data");
    xmpp_stanza_set_type(x, "submit");
    xmpp_stanza_t *f = stanza_add(ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "FORM_TYPE");
    xmpp_stanza_set_type(f, "hidden");
    stanza_add_text(ctx, f, "value", NS_MAM);
    if (mq->with) {
        f = stanza_add(ctx, x, "field", NULL);
        xmpp_stanza_set_attribute(f, "var", "with");
        stanza_add_text(ctx, f, "value", mq->with);
    }
    xmpp_stanza_t *set = stanza_add(ctx, q, "set", "http://jabber.org/protocol/rsm");
    char n[16];
    snprintf(n, sizeof(n), "%d", mq->max);
    stanza_add_text(ctx, set, "max", n);
    if (mq->after)
        stanza_add_text(ctx, set, "after", mq->after);
    else if (mq->before && *mq->before)
        stanza_add_text(ctx, set, "before", mq->before);
    else if (mq->before)
        stanza_add(ctx, set, "before", NULL); /* empty: the newest page */
    return iq;
}

xmpp_stanza_t *stanza_mam_result(xmpp_stanza_t *msg, const char *archive,
                                 const char *queryid, const char **aid)
{
    const char *from = xmpp_stanza_get_from(msg);
    /* Results come from the archive asked: the user's own (no from, or
     * the bare JID), or a room's. */
    if (from && strcasecmp(from, archive) != 0)
        return NULL;
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(msg, "result", NS_MAM);
    const char *qid = r ? xmpp_stanza_get_attribute(r, "queryid") : NULL;
    const char *id = r ? xmpp_stanza_get_id(r) : NULL;
    if (!qid || strcmp(qid, queryid) != 0 || !id || !schema_id_ok(id, 64))
        return NULL;
    xmpp_stanza_t *fw = xmpp_stanza_get_child_by_name_and_ns(r, "forwarded", NS_FORWARD);
    xmpp_stanza_t *inner = fw ? xmpp_stanza_get_child_by_name(fw, "message") : NULL;
    if (!inner)
        return NULL;
    *aid = id;
    return inner;
}

int64_t stanza_parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    int64_t ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (digits++ < 3)
                ms = ms * 10 + (*p - '0');
        while (digits > 0 && digits < 3) {
            ms *= 10;
            digits++;
        }
    }
    int64_t offset = 0;
    if (*p == '+' || *p == '-') {
        /* Exactly "+hh:mm"; check each byte before stepping over it. */
        const char *o = p + 1;
        for (int i = 0; i < 5; i++)
            if (i == 2 ? o[i] != ':' : (o[i] < '0' || o[i] > '9'))
                return -1;
        int hh = (o[0] - '0') * 10 + (o[1] - '0');
        int mm = (o[3] - '0') * 10 + (o[4] - '0');
        if (hh > 23 || mm > 59)
            return -1;
        offset = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else if (*p == 'Z') {
        p++;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    time_t t = timegm(&tm);
    return ((int64_t)t - offset) * 1000 + ms;
}

/* The stamp of a XEP-0203 <delay/> (offline storage sets it), or now. */
int64_t stanza_time(xmpp_stanza_t *msg)
{
    xmpp_stanza_t *d = xmpp_stanza_get_child_by_name_and_ns(msg, "delay",
                                                            "urn:xmpp:delay");
    const char *stamp = d ? xmpp_stanza_get_attribute(d, "stamp") : NULL;
    int64_t t = stamp ? stanza_parse_time(stamp) : -1;
    return t > 0 ? t : util_wall_ms();
}

const char *stanza_stream_error_name(xmpp_error_type_t type)
{
    /* In libstrophe 0.12's enum order (strophe.h). */
    static const char *const names[] = {
        "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout",
        "host-gone", "host-unknown", "improper-addressing", "internal-server-error",
        "invalid-from", "invalid-id", "invalid-namespace", "invalid-xml",
        "not-authorized", "policy-violation", "remote-connection-failed",
        "resource-constraint", "restricted-xml", "see-other-host", "system-shutdown",
        "undefined-condition", "unsupported-encoding", "unsupported-stanza-type",
        "unsupported-version", "not-well-formed",
    };
    _Static_assert(sizeof(names) / sizeof(names[0]) == XMPP_SE_XML_NOT_WELL_FORMED + 1,
                   "one name per libstrophe stream error");
    if ((int)type < 0 || (size_t)type >= sizeof(names) / sizeof(names[0]))
        return "undefined-condition";
    return names[type];
}

void stanza_stream_error_text(const xmpp_stream_error_t *se, char *out, size_t n)
{
    const char *t = se && se->text ? se->text : "";
    size_t i = 0;
    if (n == 0)
        return;
    for (; t[i] && i + 1 < n; i++) {
        unsigned char c = (unsigned char)t[i];
        out[i] = c < 0x20 || c == 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
    }
    /* Cut inside a UTF-8 sequence (the next byte continues it): drop its
     * beginning too. */
    if (((unsigned char)t[i] & 0xC0) == 0x80) {
        while (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0x80)
            i--;
        if (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0xC0)
            i--;
    }
    out[i] = '\0';
}

const char *stanza_error_condition(xmpp_stanza_t *msg)
{
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(msg, "error");
    for (xmpp_stanza_t *c = e ? xmpp_stanza_get_children(e) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c);
        const char *name = xmpp_stanza_get_name(c);
        if (name && ns && strcmp(ns, STANZA_NS_STANZAS) == 0 &&
            strcmp(name, "text") != 0)
            return schema_id_ok(name, 64) ? name : "undefined-condition";
    }
    return "undefined-condition";
}

enum stanza_verdict stanza_message_to_env(xmpp_ctx_t *ctx, xmpp_stanza_t *msg,
                                          const char *user,
                                          struct env **out, char *err,
                                          size_t errlen)
{
    *out = NULL;
    const char *type = xmpp_stanza_get_type(msg);
    const char *from = xmpp_stanza_get_from(msg);
    const char *id = xmpp_stanza_get_id(msg);
    if (!type)
        type = "normal";
    if (id && !schema_id_ok(id, 64))
        id = NULL; /* other clients' ids can be anything: don't forward those */

    if (strcmp(type, "error") == 0) {
        struct env *e = env_new(ENV_ERROR);
        env_set_str(e, "to", user);
        env_set_str(e, "code", "undeliverable");
        /* The condition is a plain id (stanza_error_condition): the text
         * is short ASCII, always a valid "msg". */
        char text[128];
        snprintf(text, sizeof(text), "the XMPP server could not deliver it: %s",
                 stanza_error_condition(msg));
        env_set_str(e, "msg", text);
        if (id)
            env_set_str(e, "id", id);
        *out = e;
        return STANZA_ENVELOPE;
    }
    if (strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0 &&
        strcmp(type, "headline") != 0 && strcmp(type, "groupchat") != 0)
        return STANZA_IGNORE; /* unknown types */

    xmpp_stanza_t *body_el = xmpp_stanza_get_child_by_name(msg, "body");
    if (!body_el)
        return STANZA_IGNORE;
    if (!from || !schema_jid_ok(from, ENV_MAX_JID)) {
        snprintf(err, errlen, "message without a valid 'from'");
        return STANZA_INVALID;
    }
    char *body = xmpp_stanza_get_text(body_el);
    if (!body)
        return STANZA_IGNORE; /* <body/>: empty */
    size_t blen = strlen(body);
    enum stanza_verdict v = STANZA_INVALID;
    if (blen > ENV_MAX_BODY) {
        snprintf(err, errlen, "body of %zu bytes is above %d", blen, ENV_MAX_BODY);
    } else if (!schema_text_ok(body, blen)) {
        snprintf(err, errlen, "body holds characters XML cannot carry");
    } else {
        struct env *e = env_new(ENV_CHAT);
        env_set_str(e, "from", from);
        env_set_str(e, "to", user);
        env_set_str(e, "body", body);
        if (id)
            env_set_str(e, "id", id);
        env_set_int(e, "ts", stanza_time(msg));
        *out = e;
        v = STANZA_ENVELOPE;
    }
    xmpp_free(ctx, body);
    return v;
}
