/* phone.h - the phone protocol v1 codec (docs/PROTOCOL.md): decoding and
 * validating frames from phones, encoding frames to them. Pure: no I/O. */
#ifndef IMB_PHONE_H
#define IMB_PHONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define PHONE_VERSION 1
#define PHONE_MAX_PASS 1024
#define PHONE_MAX_ID 64
#define PHONE_MAX_TOKEN 256 /* a device token (welcome -> login) */

enum phone_type {
    PHONE_LOGIN,
    PHONE_MSG,
    PHONE_HB,
    PHONE_LOGOUT,
    PHONE_ACK,       /**< the phone has every message up to "seq" */
    PHONE_TYPE_COUNT,
    PHONE_REQ = PHONE_TYPE_COUNT, /**< a request for the bridge (proto.h) */
    PHONE_UNKNOWN,   /**< well-formed, but a type we don't know */
};

/* Error codes sent in error frames. */
#define PERR_BAD_FRAME "bad_frame"
#define PERR_TOO_BIG "too_big"
#define PERR_BAD_VERSION "bad_version"
#define PERR_UNKNOWN_TYPE "unknown_type"
#define PERR_NOT_LOGGED_IN "not_logged_in"
#define PERR_ALREADY_LOGGED_IN "already_logged_in"
#define PERR_AUTH_FAILED "auth_failed"
#define PERR_UNKNOWN_DOMAIN "unknown_domain"
#define PERR_UNAVAILABLE "unavailable"
#define PERR_INTERNAL "internal"
#define PERR_RATE_LIMITED "rate_limited"
#define PERR_FILTERED "filtered"

/* Decode one frame body. On success returns the type and stores the object
 * (owned by the caller) in *out; fields of known types are validated and
 * their JIDs prepared in place (jid.h: the form the XMPP server uses). On a
 * malformed frame returns -1 with the reason in err, *out NULL, and the
 * frame's "id" in id (PHONE_MAX_ID + 1 bytes; "" if it has no valid one;
 * id may be NULL) for the error frame. body_max bounds a message body in
 * bytes. */
int phone_decode(const char *body, size_t len, size_t body_max, json_t **out,
                 char *id, char *err, size_t errlen);

/* Encode obj (not consumed) as one frame: 4-byte length + compact JSON.
 * Returns a malloc'd buffer of *len bytes. */
char *phone_encode(const json_t *obj, size_t *len);

/* Encode obj (not consumed) as one frame into buf (cap bytes), in one pass
 * of the serialiser. Returns the body's length n: when FRAME_HEADER + n <=
 * cap the frame (header and body) is in buf; otherwise buf holds nothing
 * usable and the caller retries with at least FRAME_HEADER + n bytes. */
size_t phone_encode_to(const json_t *obj, char *buf, size_t cap);

/* Make a frame to a phone fit in max body bytes (PROTOCOL.md section 3: no
 * frame the server sends is longer than the "max" it announced). Called for
 * a frame whose encoding is longer; obj is not consumed. Returns a new array
 * of one or more frames that each fit:
 *   - a frame with a "body" (msg, hist): the body cut at a UTF-8 character
 *     boundary, with "truncated": true;
 *   - a frame with an "items" list (roster): the items split over several
 *     frames, each but the last with "more": true;
 * or NULL when neither applies or the rest of the frame alone is too long. */
json_t *phone_fit(const json_t *obj, size_t max);

/* Builders for the frames the edge sends. Each returns a new reference. */
json_t *phone_error(const char *code, const char *msg, const char *id);

/* The frames a phone gets for every message, written straight into a
 * buffer (cap bytes, header included) from the values the envelope already
 * holds, with no frame object built: jansson escapes every value, the keys
 * are fixed. Each returns the body's length, and writes it (with its
 * header) only when FRAME_HEADER + it <= cap, as phone_encode_to does;
 * the bytes are exactly those phone_encode_to writes of the frame the
 * matching builder makes (test_phone compares them).
 *
 * The msg frame of a chat envelope (phone_msg_frame builds it: t, from,
 * body, id?, ts (now_ms if the envelope has none), room?, sent + to?,
 * filtered?, seq when > 0, in that order). */
struct env;
json_t *phone_msg_frame(const struct env *e, int64_t now_ms);
size_t phone_msg_to(const struct env *e, int64_t now_ms, char *buf, size_t cap);
/* {"t":"ack","id":id} */
size_t phone_ack_to(const json_t *id, char *buf, size_t cap);
json_t *phone_bye(const char *reason);

#endif
