/* stanza.h - translation between XMPP stanzas and bus envelopes. Pure: builds
 * and reads libstrophe stanza objects, never sends anything. Everything read
 * from the XMPP server is validated here before it becomes an envelope. */
#ifndef IMB_STANZA_H
#define IMB_STANZA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <strophe.h>

#include "envelope.h"

#define STANZA_NS_PING "urn:xmpp:ping"
#define STANZA_NS_RECEIPTS "urn:xmpp:receipts"
#define STANZA_NS_MARKERS "urn:xmpp:chat-markers:0"
#define STANZA_NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define STANZA_NS_CARBONS "urn:xmpp:carbons:2"
#define STANZA_NS_FORWARD "urn:xmpp:forward:0"
#define STANZA_NS_HINTS "urn:xmpp:hints"
#define STANZA_NS_ROSTER "jabber:iq:roster"
#define STANZA_NS_MUC "http://jabber.org/protocol/muc"
#define STANZA_NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define STANZA_NS_CONFERENCE "jabber:x:conference"
#define STANZA_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* <message type='chat' to=.. id=..><body>..</body></message>, asking for a
 * receipt and a read marker; type='groupchat' (no receipt) when group. */
xmpp_stanza_t *stanza_chat(xmpp_ctx_t *ctx, const char *to, const char *body,
                           const char *id, bool group);
/* Append <name xmlns=ns/> to parent; returns it (owned by parent). */
xmpp_stanza_t *stanza_add(xmpp_ctx_t *ctx, xmpp_stanza_t *parent,
                          const char *name, const char *ns);
/* Append <name>text</name> to parent. */
void stanza_add_text(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                     const char *text);
/* The condition of an error stanza: "item-not-found" from <error>
 * <item-not-found xmlns=..stanzas/></error>; "undefined-condition" if none. */
const char *stanza_error_condition(xmpp_stanza_t *st);
/* The RFC 6120 name of a stream error condition ("policy-violation");
 * "undefined-condition" for a value libstrophe does not define. */
const char *stanza_stream_error_name(xmpp_error_type_t type);
/* The stream error's <text/> made fit for one log value: at most n-1 bytes
 * into out, control characters, '"' and '\\' replaced by '?'; "" if none. */
void stanza_stream_error_text(const xmpp_stream_error_t *se, char *out, size_t n);
/* The <delay/> stamp of msg (XEP-0203) in ms since the epoch, or now. */
int64_t stanza_time(xmpp_stanza_t *msg);
/* <iq type='get' id=.. to=domain><ping xmlns='urn:xmpp:ping'/></iq> */
xmpp_stanza_t *stanza_ping(xmpp_ctx_t *ctx, const char *id, const char *to);
/* <presence/>, or <presence type='unavailable'/> */
xmpp_stanza_t *stanza_presence(xmpp_ctx_t *ctx, bool available);

/* Prepare st's 'from' and 'to' in place (jid.h), as the XMPP server would,
 * so what follows compares and forwards canonical JIDs. False with err set
 * if one cannot be prepared: log it and drop the stanza. */
bool stanza_prep_addresses(xmpp_stanza_t *st, char *err, size_t errlen);

/* Prepare attribute attr of el in place; false (attribute left alone) if
 * it is absent or cannot be prepared. bare: keep only the bare JID. */
bool stanza_prep_attr(xmpp_stanza_t *el, const char *attr, bool bare);

enum stanza_verdict {
    STANZA_ENVELOPE, /**< *out holds an envelope for the phone */
    STANZA_IGNORE,   /**< nothing for the phone (no body, chat state, ...) */
    STANZA_INVALID,  /**< malformed or unsafe: err says why; log and drop */
};

/* Translate an incoming <message/> for user (bare JID) into an envelope:
 * ENV_CHAT for a message with a body, ENV_ERROR for type='error'. */
enum stanza_verdict stanza_message_to_env(xmpp_ctx_t *ctx, xmpp_stanza_t *msg,
                                          const char *user,
                                          struct env **out, char *err,
                                          size_t errlen);

/* The server's archive id (XEP-0359 <stanza-id by=user>) of a message to
 * user, or NULL. Valid as an envelope id ([A-Za-z0-9._:-], <= 64). */
const char *stanza_archive_id(xmpp_stanza_t *msg, const char *user);

/* A XEP-0313 query: of the archive at `to` (NULL: the user's own),
 * messages exchanged `with` a JID (NULL: all), at most max, the page
 * `after` an archive id, or `before` one ("" : the newest page). queryid
 * tags the result messages. */
struct mam_query {
    const char *queryid, *to, *with, *after, *before;
    int max;
};
xmpp_stanza_t *stanza_mam_query(xmpp_ctx_t *ctx, const char *iq_id,
                                const struct mam_query *mq);

/* If msg is a MAM result for queryid from the archive of `archive` (the
 * user's bare JID, or a room), the archived message inside it (not a copy:
 * owned by msg) and its archive id in *aid; else NULL. */
xmpp_stanza_t *stanza_mam_result(xmpp_stanza_t *msg, const char *archive,
                                 const char *queryid, const char **aid);

/* Parse an XEP-0082 timestamp ("2026-11-24T16:00:00Z", optional fraction
 * and offset) into ms since the epoch; -1 if malformed. */
int64_t stanza_parse_time(const char *s);

#endif
