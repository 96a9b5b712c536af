/* imb_client.h - the imbridge phone protocol (docs/PROTOCOL.md, v1) as a
 * library for apps: framing, login, heartbeats and dead-link detection, the
 * outbox of unacknowledged messages, acks of incoming messages, resume with
 * epoch/seq, reconnecting across a list of edges with backoff and jitter, and
 * every chat feature frame. docs/CLIENT.md shows how to embed it.
 *
 * The core does no I/O ("sans-I/O"): it never opens a socket, reads a clock or
 * sleeps. The app (or the libevent adapter, imb_client_event.h) is the
 * transport, and drives it like this:
 *
 *     c = imb_client_new(&opts);
 *     imb_client_start(c, now);
 *     loop:
 *       while (imb_client_next_event(c, &ev)) handle(ev);   // or opts.on_event
 *           IMB_EV_CONNECT:    open a TCP (or TLS) connection to ev->host:port;
 *                              when it is up: imb_client_connected(c, now)
 *                              if it fails:   imb_client_closed(c, now)
 *           IMB_EV_DISCONNECT: close the connection (the library already
 *                              counts it as closed; it says when it retries)
 *       bytes read from the connection  -> imb_client_input(c, buf, n, now)
 *       the connection closed by itself -> imb_client_closed(c, now)
 *       n = imb_client_output(c, &p): write p[0..n), then imb_client_consumed(c, written)
 *       sleep until imb_client_next_deadline(c) (or I/O), then imb_client_tick(c, now)
 *
 * After every call into the library, take its events and write its output:
 * any call may produce both. `now` is a monotonic clock in milliseconds
 * chosen by the app (never the wall clock; it must not go backwards).
 *
 * No global state: every piece of state lives in the struct imb_client, so
 * several clients (several accounts, or a test's scripted ones) live side by
 * side. One client is not thread safe: call it from one thread at a time.
 *
 * Everything from the server is untrusted: a frame that is not JSON, too long,
 * of the wrong shape, or breaks the protocol becomes an IMB_EV_PROTOCOL event
 * (and, when the stream cannot be trusted after it, a reconnect), never a
 * crash or unbounded memory. */
#ifndef IMB_CLIENT_H
#define IMB_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One place to connect to. The library copies it. */
struct imb_edge {
    const char *host; /* name or address; with tls, the name the certificate must carry */
    const char *port; /* "7222" */
    bool tls;         /* TLS with peer and host name verification (the transport's job) */
};

struct imb_event; /* below */

struct imb_client_opts {
    /* Account. jid and pass are required; the library keeps copies (the
     * password is wiped when the client is freed). */
    const char *jid;
    const char *pass;
    const char *dev; /* device label, 1..64 of [A-Za-z0-9._-]; NULL: none */

    /* Where the app left off, from its storage (NULL/0 on first run): the
     * epoch and highest stored seq of the last IMB_EV_SYNC / IMB_EV_MSG, and
     * the device token of the last IMB_EV_LOGGED_IN. */
    const char *epoch;
    uint64_t seq;
    const char *token;

    /* Edges, tried in turn: a reconnect goes to the next one. At least one. */
    const struct imb_edge *edges;
    size_t n_edges;

    /* Reconnect delay before attempt k (0, 1, ...): a random time in
     * [0, min(backoff_cap_ms, backoff_base_ms * 2^k)] ("full jitter"); the
     * count restarts after a welcome. Defaults 1000 and 60000. The very first
     * connect of imb_client_start is immediate. */
    uint32_t backoff_base_ms;
    uint32_t backoff_cap_ms;
    /* A transport not up (imb_client_connected) this long after IMB_EV_CONNECT,
     * or a login not answered this long after it was sent, counts as a failed
     * attempt. Defaults 10000 and 15000. */
    uint32_t connect_timeout_ms;
    uint32_t login_timeout_ms;

    /* false (default): an incoming msg or stored event counts as stored, and
     * is acknowledged to the server, once the app has taken it (returned from
     * on_event, or the next imb_client_next_event call). true: the app calls
     * imb_client_ack(c, seq) itself once it has stored it. */
    bool manual_ack;

    /* Most unacknowledged messages kept (imb_client_send_msg fails beyond);
     * default 1000. */
    size_t outbox_max;

    /* Prefix of the message ids the library makes ("m" by default): ids are
     * prefix + a per-client counter + a random part, unique across restarts
     * of the app. 1..16 of [A-Za-z0-9._:-]. */
    const char *id_prefix;

    /* Seed of the jitter (and id) randomness. Give a random value (the
     * adapter uses getrandom); 0 still works but phones then share jitter. */
    uint64_t seed;

    /* Events: if on_event is set, the library calls it for each event at the
     * end of the API call that produced it (never from inside another
     * callback); the event and its strings are valid during the call only.
     * The callback may call any imb_client function except imb_client_free.
     * If NULL, poll with imb_client_next_event. */
    void (*on_event)(void *arg, const struct imb_event *ev);
    void *arg;

    /* true: the server's heartbeats (its answers to the library's or the
     * app's hb) come as IMB_EV_FRAME with t "hb", for tools that show every
     * frame (imcat --json). false (default): the library keeps them. */
    bool hb_events;
};

enum imb_event_type {
    IMB_EV_CONNECT,     /**< open a connection to host:port (tls); report with imb_client_connected/closed */
    IMB_EV_DISCONNECT,  /**< close the connection; reason; retry_ms/host/port say what comes next, final: nothing */
    IMB_EV_LOGGED_IN,   /**< welcome: jid (prepared), hb_s, max, token (store it; may be NULL) */
    IMB_EV_SYNC,        /**< epoch, seq; missed (>0: tell the user), reset (the old numbering is void) */
    IMB_EV_MSG,         /**< incoming message: seq, from, body, id?, ts, room?, sent+to?, filtered?, truncated */
    IMB_EV_ACK,         /**< the XMPP server has the app's message id */
    IMB_EV_ERROR,       /**< server error frame: code, msg, id? (a message of the outbox: it is dropped), reason?, retry */
    IMB_EV_RECEIPT,     /**< stored: seq, from, id, state ("delivered" or "read") */
    IMB_EV_PRESENCE,    /**< live: from, show, status? */
    IMB_EV_TYPING,      /**< live: from, state */
    IMB_EV_BYE,         /**< reason; a DISCONNECT follows when the server closes */
    IMB_EV_OK,          /**< answer to a request with id (join/leave/roster_set/...): id, frame */
    IMB_EV_FRAME,       /**< any other frame (roster, roster_push, sub, occupant, subject, invite, hist, history, frames of later versions): type, frame; seq when stored */
    IMB_EV_PROTOCOL,    /**< the server broke the protocol: msg says how (the frame is ignored) */
};

/* One event. Fields not listed for its type are 0/NULL. Strings are UTF-8,
 * borrowed: valid until the callback returns / the next imb_client_next_event
 * call. `frame` is the whole frame as received (borrowed as well), for fields
 * this struct does not name. */
struct imb_event {
    enum imb_event_type type;
    const char *t;      /* the frame's "t" (NULL for CONNECT, DISCONNECT, PROTOCOL) */
    json_t *frame;      /* the frame (NULL for CONNECT, DISCONNECT, PROTOCOL) */
    uint64_t seq;       /* MSG, SYNC, stored FRAME/RECEIPT: the stream position; 0: live */
    const char *id;
    const char *from;
    const char *to;
    const char *body;
    const char *room;
    const char *state;  /* RECEIPT: delivered|read; TYPING: composing|paused|active|inactive|gone */
    const char *show;   /* PRESENCE */
    const char *status; /* PRESENCE */
    const char *code;   /* ERROR: the error code */
    const char *msg;    /* ERROR: text for logs; PROTOCOL: what was wrong */
    const char *reason; /* ERROR (filtered), BYE, DISCONNECT: why */
    const char *jid;    /* LOGGED_IN */
    const char *token;  /* LOGGED_IN */
    const char *epoch;  /* SYNC */
    const char *filtered; /* MSG: "masked" */
    int64_t ts;         /* MSG: ms since the Unix epoch */
    uint64_t missed;    /* SYNC */
    bool reset;         /* SYNC */
    bool sent;          /* MSG: the user sent it from another client */
    bool truncated;     /* MSG */
    bool final;         /* DISCONNECT: the library gave up (logout, bad password...); imb_client_start again to retry */
    uint32_t hb_s;      /* LOGGED_IN */
    uint32_t max;       /* LOGGED_IN */
    uint32_t retry_s;   /* ERROR rate_limited: seconds */
    uint64_t retry_ms;  /* DISCONNECT (not final): IMB_EV_CONNECT comes this much later */
    const char *host;   /* CONNECT; DISCONNECT: the edge of the next attempt */
    const char *port;
    bool tls;
    size_t edge;        /* CONNECT, DISCONNECT: index in opts.edges */
    uint32_t attempt;   /* CONNECT: attempts since the last welcome (0: first) */
};

struct imb_client;

/* A new client, idle until imb_client_start. NULL when opts are invalid (no
 * jid, pass or edge; a bad dev or id_prefix) or memory ran out. */
struct imb_client *imb_client_new(const struct imb_client_opts *opts);
/* Free it (without telling the server: call imb_client_logout first for a
 * clean end). Pending events are dropped. */
void imb_client_free(struct imb_client *c);

/* Begin (or, after a final DISCONNECT, begin again): IMB_EV_CONNECT to the
 * current edge, now. */
void imb_client_start(struct imb_client *c, int64_t now_ms);
/* The connection asked for by the last IMB_EV_CONNECT is up (TCP connected,
 * TLS handshake and verification done): the library queues the login. */
void imb_client_connected(struct imb_client *c, int64_t now_ms);
/* The connection failed or closed. Brings IMB_EV_DISCONNECT (with the next
 * attempt) unless the library had closed it itself. */
void imb_client_closed(struct imb_client *c, int64_t now_ms);
/* Bytes read from the connection (any split: part of a frame, several). */
void imb_client_input(struct imb_client *c, const void *buf, size_t n, int64_t now_ms);
/* Timers: call at (or after) imb_client_next_deadline. */
void imb_client_tick(struct imb_client *c, int64_t now_ms);
/* When imb_client_tick is next due (a now_ms value); INT64_MAX: nothing. */
int64_t imb_client_next_deadline(const struct imb_client *c);

/* Bytes to write: *p points to n bytes owned by the library, valid until the
 * next call into it. 0 when there is nothing (or no connection). */
size_t imb_client_output(struct imb_client *c, const uint8_t **p);
/* n of those bytes were written. */
void imb_client_consumed(struct imb_client *c, size_t n);

/* Take the next event (when opts.on_event is NULL): true and *ev set, or
 * false. *ev points into the client, valid until the next call. */
bool imb_client_next_event(struct imb_client *c, const struct imb_event **ev);

/* --- Sending ------------------------------------------------------------
 * Functions returning int give 0, or -1 with the reason in err (may be
 * NULL, errlen bytes). Frames are only written while logged in; a message
 * (imb_client_send_msg) sent at another time waits in the outbox and goes
 * out after the next welcome, as do the unacknowledged ones after a
 * reconnect, with the same id. Requests and live frames sent while not
 * logged in fail (-1, "not logged in"). */

/* A chat message (group: to is a room). id: NULL to let the library make
 * one, else 1..64 of [A-Za-z0-9._:-] unique among the app's messages. The
 * id used is copied to id_out (65 bytes) when not NULL. IMB_EV_ACK or an
 * IMB_EV_ERROR with that id ends it. */
int imb_client_send_msg(struct imb_client *c, const char *to, const char *body,
                        bool group, const char *id, char id_out[65],
                        char *err, size_t errlen);
/* Any request or live frame of section 10 (presence, state, roster,
 * roster_set, roster_remove, sub, read, typing, join, leave, subject, invite,
 * history): a JSON object with a string "t" other than login, msg, ack,
 * logout. Not stored: resend it yourself after an IMB_EV_ERROR unavailable.
 * Does not take the reference. */
int imb_client_send(struct imb_client *c, json_t *frame, char *err, size_t errlen);
/* Shorthands of imb_client_send. status may be NULL. */
int imb_client_presence(struct imb_client *c, const char *show, const char *status);
int imb_client_typing(struct imb_client *c, const char *to, const char *state);
int imb_client_read(struct imb_client *c, const char *to, const char *id);
int imb_client_set_active(struct imb_client *c, bool active);

/* manual_ack: the app stored every incoming msg/stored event up to seq. */
void imb_client_ack(struct imb_client *c, uint64_t seq);
/* Log out: the server answers bye logout and closes; then a final
 * IMB_EV_DISCONNECT. Unacknowledged messages stay in the outbox. */
void imb_client_logout(struct imb_client *c, int64_t now_ms);

/* A new password (after a final DISCONNECT auth_failed), for the next start. */
int imb_client_set_password(struct imb_client *c, const char *pass);

/* --- State -------------------------------------------------------------- */
/* Stream position (what the next login resumes from): epoch ("" if none)
 * and the highest stored seq. Store both with the messages. */
const char *imb_client_epoch(const struct imb_client *c);
uint64_t imb_client_seq(const struct imb_client *c);
/* Messages waiting for their ack. */
size_t imb_client_outbox_len(const struct imb_client *c);
bool imb_client_logged_in(const struct imb_client *c);

/* --- Exposed for tests and fuzzing -------------------------------------- */
/* The reconnect delay bound before attempt k: min(cap, base * 2^k). */
uint64_t imb_client_backoff_bound(const struct imb_client *c, uint32_t attempt);

#ifdef __cplusplus
}
#endif

#endif
