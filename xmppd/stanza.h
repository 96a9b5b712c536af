/* stanza.h - translation between XMPP stanzas and bus envelopes. Pure: builds
 * and reads libstrophe stanza objects, never sends anything. Everything read
 * from the XMPP server is validated here before it becomes an envelope. */
#ifndef IMB_STANZA_H
#define IMB_STANZA_H

#include <stddef.h>

#include <strophe.h>

#include "envelope.h"

#define STANZA_NS_PING "urn:xmpp:ping"

/* <message type='chat' to=.. id=..><body>..</body></message> */
xmpp_stanza_t *stanza_chat(xmpp_ctx_t *ctx, const char *to, const char *body,
                           const char *id);
/* <iq type='get' id=.. to=domain><ping xmlns='urn:xmpp:ping'/></iq> */
xmpp_stanza_t *stanza_ping(xmpp_ctx_t *ctx, const char *id, const char *to);
/* <presence/>, or <presence type='unavailable'/> */
xmpp_stanza_t *stanza_presence(xmpp_ctx_t *ctx, bool available);

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

/* A XEP-0313 query for user's archive after archive id `after`, at most
 * max results; queryid tags the result messages. */
xmpp_stanza_t *stanza_mam_query(xmpp_ctx_t *ctx, const char *iq_id,
                                const char *queryid, const char *after, int max);

/* If msg is a MAM result for queryid from user's own archive, the archived
 * message inside it (not a copy: owned by msg) and its archive id in *aid;
 * else NULL. */
xmpp_stanza_t *stanza_mam_result(xmpp_stanza_t *msg, const char *user,
                                 const char *queryid, const char **aid);

/* Parse an XEP-0082 timestamp ("2026-11-24T16:00:00Z", optional fraction
 * and offset) into ms since the epoch; -1 if malformed. */
int64_t stanza_parse_time(const char *s);

#endif
