/* envelope.h - the JSON envelopes edge and xmppd exchange over the bus.
 * Versioned ("v":1), one schema per type, every field validated on decode.
 * Pure: no I/O. The catalogue of types and fields is in docs/ARCHITECTURE.md. */
#ifndef IMB_ENVELOPE_H
#define IMB_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define ENV_VERSION 1
/* Largest encoded envelope accepted from the bus, by default; a service
 * may lower it (option max_envelope) with env_set_max_bytes. */
#define ENV_MAX_BYTES (256 * 1024)
#define ENV_MAX_BODY (64 * 1024)
#define ENV_MAX_JID 1023

/* login_fail's code when a resume token opens nothing (its sealed password
 * expired or is gone from Redis): the phones must log in again. Between
 * the services only; phones never see it. */
#define ENV_RESUME_LOST "resume_lost"

enum env_type {
    ENV_LOGIN,       /**< edge -> worker: open (or reuse) a user's session */
    ENV_LOGIN_OK,    /**< worker -> edge: the session is up */
    ENV_LOGIN_FAIL,  /**< worker -> edge: auth_failed | unavailable | ... */
    ENV_CHAT,        /**< a chat message, either direction */
    ENV_ACK,         /**< worker -> edge: the XMPP server has these client ids */
    ENV_ERROR,       /**< worker -> edge: a request failed */
    ENV_LOGOUT,      /**< edge -> worker: the phone logged out */
    ENV_DETACH,      /**< edge -> worker: the phone's socket dropped */
    ENV_SESSION_END, /**< worker -> edge: the XMPP session ended */
    ENV_REQ,         /**< edge -> worker: a phone's request frame (proto.h) */
    ENV_EVENT,       /**< worker -> edge: a frame for phones (proto.h) */
    ENV_ACKED,       /**< inbox -> worker: phones acked up to "upto", past a
                          message that asked for a delivery receipt */
    ENV_HANDOVER,    /**< worker -> worker: what a worker that no longer owns
                          the user could not store ("env"), for the owner */
    ENV_TYPE_COUNT
};

struct env {
    enum env_type type;
    json_t *obj; /* owned; holds "v", "type" and every field */
};

const char *env_type_name(enum env_type t);

/* A new envelope of type t ("v" and "type" set). */
struct env *env_new(enum env_type t);
void env_free(struct env *e);

/* Setters copy their arguments. */
void env_set_str(struct env *e, const char *key, const char *value);
void env_set_int(struct env *e, const char *key, int64_t value);
/* Takes ownership of value (a jansson reference). */
void env_set_json(struct env *e, const char *key, json_t *value);

/* Getters: NULL / def when absent. Decoded envelopes already passed the
 * type's schema, so present fields have the right type. */
const char *env_str(const struct env *e, const char *key);
int64_t env_int(const struct env *e, const char *key, int64_t def);
json_t *env_json(const struct env *e, const char *key);

/* Encode to compact JSON; returns a malloc'd NUL-terminated string (free()). */
char *env_encode(const struct env *e, size_t *len);

/* A phone's chat for its session (edge -> worker), written straight
 * (jsonout.h) rather than built and encoded: the text env_encode makes of
 * the envelope the edge would build, fields in its order (v, type, from,
 * to, body, group when true, id, edge, dev, ts, pts). edge and dev are ids
 * (no character JSON escapes). Returns it malloc'd, its length in *len. */
char *env_chat_encode(const char *from, const json_t *to, const json_t *body,
                      bool group, const json_t *id, const char *edge,
                      const char *dev, int64_t ts, int64_t pts, size_t *len);

/* Set the size limit env_decode applies (process-wide, at start-up). */
void env_set_max_bytes(size_t max);

/* Decode and validate. Returns NULL and a reason in err on any fault: not
 * JSON, duplicate keys, wrong version, unknown type, a field missing or
 * malformed, too large. */
struct env *env_decode(const char *buf, size_t len, char *err, size_t errlen);
/* The same for a decoded value (one element of a batch); takes obj's
 * reference either way. */
struct env *env_check(json_t *obj, char *err, size_t errlen);

#endif
