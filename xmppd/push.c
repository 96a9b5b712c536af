/* push.c - push envelopes for messages that arrive after a user's session
 * closed (XEP-0357). While the session is online the worker publishes push
 * envelopes itself (session_deliver_chat, in the resume window); once it has
 * closed, the XMPP server keeps messages in offline storage where no session
 * sees them. So every session registers the bridge as the user's push
 * service (<enable jid=push_jid node=user/>), and the first worker of each
 * bridge connects to the XMPP server as the external component push_jid
 * (XEP-0114): the server publishes a notification to it for every message it
 * stores offline, which becomes the same push envelope on the same channel.
 * The server takes one connection per component name, so with several
 * bridges one holds it and the others keep trying: one push per message. */
#include "bus.h"
#include "inbox.h"
#include "log.h"
#include "schema.h"
#include "stanza.h"
#include "util.h"
#include "xmppd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define RETRY_S 5

struct push_component {
    struct worker *w;
    xmpp_conn_t *conn;      /* NULL between attempts */
    xmpp_conn_t *donor;     /* a client conn that gives its SM state (below) */
    bool donor_done;
    struct event *fd_ev;    /* its socket, to run libstrophe when readable */
    struct event *retry;    /* next attempt; also releases a dead conn */
    bool up;
};

static struct push_component *comp;

static bool enabled(const struct xmppd_cfg *cfg)
{
    return cfg->push_jid && *cfg->push_jid;
}

json_t *push_envelope(const struct xmppd_cfg *cfg, const char *to,
                      const char *sender, const char *room, const char *body,
                      int64_t ts)
{
    const char *mode = cfg->push_preview;
    json_t *p = json_pack("{s:i, s:s, s:s, s:I}", "v", ENV_VERSION, "type", "push",
                          "to", to, "ts", (json_int_t)ts);
    char bare[ENV_MAX_JID + 1];
    if (strcmp(mode, "none") != 0 && sender && schema_jid_ok(sender, ENV_MAX_JID)) {
        const char *nick = strchr(sender, '/');
        if (room) {
            json_object_set_new(p, "room", json_string(room));
            if (nick)
                json_object_set_new(p, "from", json_string(nick + 1));
        } else if (schema_bare_jid(sender, bare, sizeof(bare))) {
            json_object_set_new(p, "from", json_string(bare));
        }
    }
    if (strcmp(mode, "full") == 0 && body && schema_text_ok(body, strlen(body))) {
        /* The first 100 characters, never cutting one in two. */
        size_t n = 0, chars = 0;
        while (body[n] && chars < 100) {
            n++;
            while (((unsigned char)body[n] & 0xC0) == 0x80)
                n++;
            chars++;
        }
        json_object_set_new(p, "preview", json_stringn(body, n));
    }
    return p;
}

/* ---- sessions: register, and unregister at logout ------------------------ */

static void send_push_iq(struct session *s, const char *what)
{
    struct worker *w = s->w;
    struct pending_iq *pq = session_iq_new(s, PQ_PUSH, NULL);
    xmpp_stanza_t *iq = xmpp_iq_new(w->ctx, "set", pq->iq_id);
    xmpp_stanza_t *el = stanza_add(w->ctx, iq, what, NS_PUSH);
    xmpp_stanza_set_attribute(el, "jid", w->cfg->push_jid);
    xmpp_stanza_set_attribute(el, "node", s->jid);
    session_send(s, iq);
}

void push_on_online(struct session *s)
{
    if (!enabled(s->w->cfg))
        return;
    send_push_iq(s, "enable");
    inbox_offline_reset(s->w->bus, s->jid);
}

void push_on_logout(struct session *s)
{
    if (enabled(s->w->cfg) && s->state == SESSION_ONLINE)
        send_push_iq(s, "disable"); /* logged out: no pushes wanted */
}

/* ---- the component -------------------------------------------------------- */

static char *field_value(xmpp_stanza_t *form, const char *var)
{
    for (xmpp_stanza_t *f = form ? xmpp_stanza_get_children(form) : NULL; f;
         f = xmpp_stanza_get_next(f)) {
        const char *v = xmpp_stanza_get_attribute(f, "var");
        xmpp_stanza_t *val = v && !strcmp(v, var) ? xmpp_stanza_get_child_by_name(f, "value") : NULL;
        if (val)
            return xmpp_stanza_get_text(val);
    }
    return NULL;
}

xmpp_stanza_t *push_reply(xmpp_ctx_t *ctx, const char *component_jid,
                          xmpp_stanza_t *req, bool ok)
{
    xmpp_stanza_t *r = xmpp_iq_new(ctx, ok ? "result" : "error", xmpp_stanza_get_id(req));
    /* A component addresses every stanza itself (XEP-0114): the server
     * stamps nothing. Prosody fills in a missing 'from'; ejabberd closes
     * the stream (improper-addressing), and the notifications sent before
     * the component is back find no route. */
    xmpp_stanza_set_from(r, component_jid);
    const char *to = xmpp_stanza_get_from(req);
    if (to)
        xmpp_stanza_set_to(r, to);
    if (!ok) {
        xmpp_stanza_t *e = stanza_add(ctx, r, "error", NULL);
        xmpp_stanza_set_type(e, "cancel");
        stanza_add(ctx, e, "bad-request", STANZA_NS_STANZAS);
    }
    return r;
}

/* A notification from the XMPP server: one message stored offline. */
static void on_notification(struct worker *w, const char *node, xmpp_stanza_t *form)
{
    char *sender = field_value(form, "last-message-sender");
    char *body = field_value(form, "last-message-body");
    json_t *p = push_envelope(w->cfg, node, sender, NULL, body, util_wall_ms());
    if (sender)
        xmpp_free(w->ctx, sender);
    if (body)
        xmpp_free(w->ctx, body);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    inbox_push_offline(w->bus, node, text);
    free(text);
    w->stats.pushes++;
    LOG(DEBUG, "push_offline", "jid=%s", node);
}

static int on_iq(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    struct push_component *pc = userdata;
    const char *type = xmpp_stanza_get_type(st), *from = xmpp_stanza_get_from(st);
    if (!type || (strcmp(type, "set") && strcmp(type, "get")))
        return 1;
    xmpp_stanza_t *ps = xmpp_stanza_get_child_by_name_and_ns(st, "pubsub", NS_PUBSUB);
    xmpp_stanza_t *pub = ps ? xmpp_stanza_get_child_by_name(ps, "publish") : NULL;
    const char *node = pub ? xmpp_stanza_get_attribute(pub, "node") : NULL;
    xmpp_stanza_t *item = pub ? xmpp_stanza_get_child_by_name(pub, "item") : NULL;
    xmpp_stanza_t *n = item ? xmpp_stanza_get_child_by_name_and_ns(item, "notification", NS_PUSH) : NULL;
    xmpp_stanza_t *form = n ? xmpp_stanza_get_child_by_name_and_ns(n, "x", "jabber:x:data") : NULL;
    const char *at = node ? strchr(node, '@') : NULL;
    /* Only the user's own server publishes for the user. */
    bool ok = !strcmp(type, "set") && form && node && schema_jid_ok(node, ENV_MAX_JID) &&
              !strchr(node, '/') && at && from && strcasecmp(from, at + 1) == 0;
    xmpp_stanza_t *r = push_reply(pc->w->ctx, pc->w->cfg->push_jid, st, ok);
    if (ok) {
        on_notification(pc->w, node, form);
    } else {
        LOG(WARN, "push_refused", "from=%s node=%s", from ? from : "-", node ? node : "-");
    }
    xmpp_send(conn, r);
    xmpp_stanza_release(r);
    worker_kick(pc->w);
    return 1;
}

static void schedule_retry(struct push_component *pc)
{
    struct timeval tv = {RETRY_S, 0};
    evtimer_add(pc->retry, &tv);
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                    xmpp_stream_error_t *stream_error, void *userdata)
{
    struct push_component *pc = userdata;
    if (event == XMPP_CONN_CONNECT) {
        pc->up = true;
        LOG(INFO, "push_component_up", "jid=%s", pc->w->cfg->push_jid);
        return;
    }
    if (pc->up)
        LOG(WARN, "push_component_down", "jid=%s error=%d", pc->w->cfg->push_jid, error);
    else
        LOG(DEBUG, "push_component_busy", "jid=%s error=%d conflict=%d", pc->w->cfg->push_jid,
            error, stream_error && stream_error->type == XMPP_SE_CONFLICT);
    pc->up = false;
    if (pc->fd_ev) {
        event_free(pc->fd_ev);
        pc->fd_ev = NULL;
    }
    schedule_retry(pc); /* the conn is released there, outside libstrophe */
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    worker_kick(arg);
}

static int sockopt(xmpp_conn_t *conn, void *sock)
{
    struct push_component *pc = comp;
    if (pc && pc->conn == conn) {
        if (pc->fd_ev)
            event_free(pc->fd_ev);
        pc->fd_ev = event_new(pc->w->base, *(int *)sock, EV_READ | EV_PERSIST, on_readable, pc->w);
        event_add(pc->fd_ev, NULL);
    }
    return xmpp_sockopt_cb_keepalive(conn, sock);
}

/* libstrophe 0.12 reads the stream-management state of a connection on
 * every stanza it receives, but allocates that state only for client
 * connections: a component connection crashes on its first stanza. So each
 * attempt first makes a client connection to a closed port, which fails at
 * once, and hands its state to the component connection (public API:
 * xmpp_conn_get_sm_state / xmpp_conn_set_sm_state). */
static void on_donor(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                     xmpp_stream_error_t *stream_error, void *userdata)
{
    struct push_component *pc = userdata;
    if (event == XMPP_CONN_CONNECT) {
        xmpp_disconnect(conn);
        return;
    }
    pc->donor_done = true;
    struct timeval now = {0, 0};
    evtimer_add(pc->retry, &now);
}

static void attempt(evutil_socket_t fd, short what, void *arg)
{
    struct push_component *pc = arg;
    struct worker *w = pc->w;
    if (pc->conn) {
        xmpp_conn_release(pc->conn);
        pc->conn = NULL;
    }
    if (w->stopping)
        return;
    if (!pc->donor) {
        pc->donor = xmpp_conn_new(w->ctx);
        pc->donor_done = false;
        xmpp_conn_set_jid(pc->donor, "donor@localhost");
        if (xmpp_connect_client(pc->donor, "127.0.0.1", 1, on_donor, pc) != 0) {
            xmpp_conn_release(pc->donor);
            pc->donor = NULL;
            schedule_retry(pc);
        }
        worker_kick(w);
        return;
    }
    if (!pc->donor_done)
        return; /* not yet failed: on_donor calls again */
    xmpp_sm_state_t *sm = xmpp_conn_get_sm_state(pc->donor);
    xmpp_conn_release(pc->donor);
    pc->donor = NULL;
    if (!sm) {
        LOG(ERROR, "push_component_failed", "reason=\"no stream state to lend\"");
        schedule_retry(pc);
        return;
    }
    pc->conn = xmpp_conn_new(w->ctx);
    xmpp_conn_set_sm_state(pc->conn, sm);
    /* libstrophe 0.12 dereferences its stream-management state on every
     * stanza of a component stream unless it is disabled. */
    xmpp_conn_set_flags(pc->conn, XMPP_CONN_FLAG_DISABLE_SM);
    xmpp_conn_set_jid(pc->conn, w->cfg->push_jid);
    xmpp_conn_set_pass(pc->conn, w->cfg->push_secret);
    xmpp_conn_set_sockopt_callback(pc->conn, sockopt);
    /* Added before connecting: user handlers fire once authenticated. */
    xmpp_handler_add(pc->conn, on_iq, NULL, "iq", NULL, pc);
    if (xmpp_connect_component(pc->conn, w->cfg->xmpp_host,
                               (unsigned short)w->cfg->push_port, on_conn, pc) != 0)
        schedule_retry(pc);
    worker_kick(w);
}

void push_component_start(struct worker *w)
{
    if (!enabled(w->cfg))
        return;
    comp = xcalloc(1, sizeof(*comp));
    comp->w = w;
    comp->retry = evtimer_new(w->base, attempt, comp);
    attempt(-1, 0, comp);
}

bool push_component_up(void)
{
    return comp && comp->up;
}

void push_component_stop(void)
{
    if (!comp)
        return;
    /* Releasing a live conn runs on_conn (DISCONNECT): events after it. */
    if (comp->conn)
        xmpp_conn_release(comp->conn);
    if (comp->donor)
        xmpp_conn_release(comp->donor);
    if (comp->fd_ev)
        event_free(comp->fd_ev);
    event_free(comp->retry);
    free(comp);
    comp = NULL;
}
