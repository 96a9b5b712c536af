/* edge.h - the edge service: phone connections in, envelopes out.
 *
 * An edge is stateless apart from its live sockets. A logged-in user's
 * connections are grouped under a struct user, which holds the edge's one
 * subscription to the user's channel "<prefix>:p:<jid>"; whatever a bridge
 * publishes there reaches every edge that serves the user. Bus callbacks
 * never hold connection pointers: they name a connection by its dev id and
 * look it up, so a connection can close at any time. */
#ifndef IMB_EDGE_H
#define IMB_EDGE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/util.h>
#include <jansson.h>

#include "config.h"
#include "outq.h"
#include "seal.h"
#include "strmap.h"

struct event_base;
struct ssl_ctx_st;
struct evconnlistener;
struct bufferevent;
struct bus;
struct event;
struct sockaddr;
struct httpd;
struct metrics_hist;

struct edge_cfg {
    struct common_cfg common;
    char *listen;         /* host:port for phones; port 0 picks one */
    long heartbeat;       /* seconds: the interval phones are told to use */
    long login_timeout;   /* seconds an unauthenticated socket may stay */
    long max_frame;       /* bytes of one frame body */
    long max_output;      /* bytes queued to one phone before it is cut */
    long max_conns;       /* sockets this edge accepts */
    long bridge_timeout;  /* seconds to wait for a bridge's login answer */
    char *edge_id;        /* empty: random */
    char *tls;            /* "on" (cert and key required) | "off" (development) */
    char *tls_cert;       /* PEM certificate chain for phones */
    char *tls_key;        /* PEM private key */
    long max_unauth_per_ip; /* sockets not yet logged in, per source address */
    long max_msg_rate;    /* chat frames per second per connection (burst 2x) */
    long login_fail_window;      /* seconds a count of failed logins lives */
    long login_fail_per_ip;      /* failures per source address; 0 = no limit */
    long login_fail_per_account; /* failures per account, and per device
                                    token; 0 = no limit */
    long device_token_days;      /* age at which a device token expires;
                                    0 = no tokens */
};

enum conn_state {
    CONN_NEW,        /**< connected, no login yet */
    CONN_LOGGING_IN, /**< login sent to a bridge, waiting for its answer */
    CONN_READY,      /**< logged in: chat flows */
    CONN_CLOSING,    /**< bye sent or socket dead; freed once flushed, or
                          CLOSE_FLUSH_TIMEOUT (conn.c) after the close */
};

struct user;

/* One phone socket. */
struct conn {
    struct edge *edge;
    int fd;                   /* the socket, owned (closed by conn_free) */
    struct bufferevent *bev;  /* TLS sockets only (owned), else NULL */
    /* Plaintext sockets (bev NULL): conn.c reads and writes fd itself. */
    struct event *rev;        /* EV_READ|EV_PERSIST, owned; in READY its
                                 timeout is the heartbeat silence */
    struct event *wev;        /* EV_WRITE, owned; made at the first write
                                 the kernel refused, added only while
                                 out owns refused bytes */
    struct outq out;          /* frames not yet written (outq.h) */
    char *part;               /* the start of a frame not yet whole, or
                                 NULL: malloc'd, part_len bytes used, the
                                 whole frame's size once its header is in */
    uint32_t part_len;
    struct conn *fl_prev, *fl_next; /* in the edge's list of sockets to
                                       flush (or free) at the end of the
                                       loop turn, while fl_queued */
    bool fl_queued;
    enum conn_state state;
    char dev[20];             /* "c<n>": unique on this edge, names it on the bus */
    struct user *user;        /* set from LOGGING_IN on; the user owns the list */
    struct conn *user_next;   /* next connection of the same user */
    uint8_t auth_failures;
    uint8_t login_seq;        /* bumped at each login frame: names the login
                                 a throttle check answers (throttle.h) */
    bool attached;            /* a bridge counts this dev among the user's devices */
    bool replaying;           /* fetching missed messages from the inbox */
    bool replay_paused;       /* waiting for the output to drain before the next page */
    bool positioned;          /* last_seq is something the phone said or saw */
    bool ack_listed;          /* in the edge's list of acks to send (acks) */
    bool bye_on_close;        /* a bye frame is queued: close after flush */
    bool inactive;            /* the app is in the background ("state"):
                                 presence and typing are not sent to it */
    int64_t last_seq;         /* highest seq written to this phone */
    char epoch[32];           /* inbox epoch last_seq belongs to ("" unknown) */
    json_t *held;             /* live chats that came during a replay, or NULL */
    char *pending_pass;       /* the password, only while LOGGING_IN; wiped */
    json_t *inflight;         /* client ids sent to the bridge, not yet acked or
                                 refused (array), or NULL */
    char label[16];           /* device label the phone gave, or "" */
    int64_t ack_upto;         /* the phone's newest ack, not yet sent to the
                                 inbox (0: none): acks are cumulative, one
                                 per connection and loop turn goes out */
    /* conn.c's own, by state, sharing their bytes: every idle socket pays
     * for this struct, so it stays small. */
    union {
        struct {              /* NEW, LOGGING_IN, CLOSING */
            struct conn *dl_prev, *dl_next; /* in the edge's deadline queue
                                               of the state */
            int64_t deadline_ms;  /* login deadline, the bridge's, or the
                                     end of a close's flush (monotonic) */
            uint8_t ip[16];       /* NEW, LOGGING_IN: source address (IPv4
                                     as ::ffff:a.b.c.d), counted against
                                     max_unauth_per_ip */
        };
        struct {              /* READY */
            double tokens;        /* rate limit bucket: chat frames allowed now */
            int64_t tokens_ms;    /* when tokens was last refilled (monotonic) */
        };
    };
};

/* A logged-in (or logging-in) user with >= 1 connection on this edge. */
/* It lives inside its entry of edge->users (strmap_put_inline): entry, JID
 * and record are one allocation, freed by removing the entry. */
struct user {
    const char *jid;       /* bare JID: the users map's key */
    struct conn *conns;    /* linked through conn->user_next */
    const char *worker;    /* worker holding the XMPP session, or NULL:
                              interned in edge->worker_names */
    uint8_t resume[SEAL_TOKEN_BYTES]; /* the session's resume token, from
                              login_ok: re-opens the session on another worker
                              without the phone logging in, and without the
                              edge keeping its password (common/resume.h) */
    bool has_resume;       /* resume holds one */
    bool relogging;        /* a re-login is in flight */
    int relogin_failures;  /* consecutive, for backoff and giving up */
    struct event *retry;   /* backoff timer, or NULL */
};

struct edge_stats {
    uint64_t conns_accepted, conns_rejected;
    uint64_t logins_ok, logins_failed;
    uint64_t msgs_in;        /* chat frames from phones */
    uint64_t msgs_out;       /* chat frames to phones */
    uint64_t reqs_in;        /* request frames from phones (proto.h) */
    uint64_t events_out;     /* event frames to phones (proto.h) */
    uint64_t acks;           /* acks sent to phones */
    uint64_t bad_frames;     /* error frames for malformed input */
    uint64_t bad_envelopes;  /* envelopes from the bus that failed validation */
    uint64_t replayed;       /* chats written to phones from the inbox */
    uint64_t gaps;           /* sequence gaps that triggered an inbox fetch */
    uint64_t resets;         /* phones told their numbering is void (sync reset) */
    uint64_t relogins;       /* sessions re-opened on another worker */
    uint64_t rate_limited;   /* chat frames refused by the rate limit */
    uint64_t slow_readers;   /* connections cut for not reading */
    uint64_t frames_fitted;  /* frames over max_frame, cut or split to fit
                                (or, if they could not be, replaced by an error) */
    uint64_t logins_throttled[4]; /* refused by the failed-login throttle, by
                                     enum throttle_verdict (0 unused) */
    uint64_t token_logins;   /* logins judged on a valid device token */
    uint64_t throttle_open;  /* checks that passed because Redis did not answer */
    uint64_t closes_forced;  /* closing sockets freed unflushed after
                                CLOSE_FLUSH_TIMEOUT */
    uint64_t accept_failures;/* accept() errors (EMFILE, ENFILE, ENOBUFS...) */
};

/* Logging of one event at most once a second; what is left out is counted
 * and said on the next line. */
struct log_limit {
    int64_t last_ms;         /* monotonic time of the last line, 0: never */
    uint64_t suppressed;     /* events since then without a line */
};

/* Whether to log an event now; *suppressed gets how many were left out
 * since the last line. */
bool log_limit_ok(struct log_limit *l, uint64_t *suppressed);

struct edge {
    struct event_base *base;
    const struct edge_cfg *cfg;
    char id[20];               /* this edge's id on the bus */
    char reply_channel[128];   /* "<prefix>:e:<id>": answers to our logins */
    struct bus *bus;
    uint8_t cred_key[SEAL_KEY_BYTES];
    struct evconnlistener *listener;
    struct ssl_ctx_st *ssl_ctx;  /* NULL: plaintext (tls = off) */
    struct strmap unauth;      /* source address -> (count) sockets not logged in */
    struct conn_deadlines *deadlines; /* conn.c's queues of sockets not logged
                                         in, by deadline; NULL before the first */
    struct conn_io *io;        /* conn.c's shared read buffer, output arena
                                  and flush list; NULL before the first socket */
    struct strmap conns;       /* dev -> struct conn */
    struct strmap users;       /* bare jid -> struct user (held inline) */
    struct strmap worker_names;/* every worker id a user was placed on, kept
                                  once (user->worker points into it) */
    uint64_t next_conn;        /* for dev ids */
    struct workers *workers;   /* live bridges, for picking one at login */
    struct throttle *throttle; /* throttle.c's logins in flight with a token */
    struct event *tick;        /* registry entry in "<prefix>:edges" */
    struct httpd *httpd;       /* /healthz and /metrics, or NULL */
    struct metrics_hist *latency; /* envelope age on arrival, ms */
    bool draining;             /* no new connections */
    struct edge_stats stats;
    uint64_t freed;            /* sockets freed since the last malloc_trim */
    int64_t trimmed_ms;        /* monotonic time of the last malloc_trim */
    uint64_t trim_traffic;     /* frames in and out at the last tick: the
                                  same count a tick later is a quiet second */
    struct log_limit reject_log; /* conn_rejected lines */
    /* accept() failing (out of descriptors or memory): the listener stops
     * for accept_backoff_ms, doubling up to a second while it keeps
     * failing; the reserve descriptor lets it shed one pending socket each
     * time so the listen queue does not spin. */
    struct event *accept_timer;  /* re-enables the listener */
    int accept_run;              /* accepted since the listener last paused */
    int accept_backoff_ms;       /* the current pause, 0: accepting normally */
    int reserve_fd;              /* a spare descriptor (/dev/null), or -1 */
    struct log_limit accept_log; /* accept_failed lines */
    struct conn **acks;          /* connections with an ack_upto to send at
                                    the end of this loop turn (ack_ev) */
    size_t nacks, capacks;
    struct event *ack_ev;
    struct outgoing *out, *out_tail; /* envelopes to sessions, published at
                                        the end of the loop turn (out_ev) */
    struct event *out_ev;
};

/* delivery.c: the acks of a loop turn, one per connection. */
void delivery_flush_acks(evutil_socket_t fd, short what, void *arg);
void delivery_drop_ack(struct conn *c);

/* metrics.c: /healthz and /metrics. */
bool edge_metrics_start(struct edge *edge, char *err, size_t errlen);

/* edge.c: wiring and the envelope side. */
struct edge *edge_new(struct event_base *base, const struct edge_cfg *cfg,
                      char *err, size_t errlen);
void edge_free(struct edge *edge);
/* Bound listening address as "ip:port". */
void edge_listen_addr(const struct edge *edge, char *out, size_t n);

/* Called by conn.c for each valid frame of a known type. */
void edge_on_login(struct conn *c, json_t *frame);
void edge_on_msg(struct conn *c, json_t *frame);
void edge_on_logout(struct conn *c);
void edge_on_ack(struct conn *c, json_t *frame);
/* A request for the bridge (proto.h): forwarded to the user's session. */
void edge_on_req(struct conn *c, json_t *frame);
/* The bridge did not answer the login in time. */
void edge_on_login_timeout(struct conn *c);
/* Called by conn.c when a connection is about to be freed. */
void edge_on_conn_gone(struct conn *c);

/* edge.c: answer every message of c still in flight with an error, so the
 * phone resends it (its session moved, or acks may have been lost). */
void conn_fail_inflight(struct conn *c, const char *why);

/* delivery.c: chats to phones, in sequence, replayed from the inbox. */
struct env;
void delivery_live(struct conn *c, const struct env *e);
/* Write an event envelope's frame to c (durable ones in seq order). */
void delivery_event(struct conn *c, const struct env *e);
void delivery_replay(struct conn *c);
/* The output drained: a paused replay fetches its next page. */
void delivery_drained(struct conn *c);

/* conn.c: phone sockets. */
void conn_accept(struct edge *edge, int fd, const struct sockaddr *sa, int salen);
/* Queue a frame (obj is consumed). Past max_output queued bytes the phone
 * is cut as a slow reader. */
void conn_send(struct conn *c, json_t *obj);
/* The same without the cut: for output the edge paces itself (replays). */
void conn_send_paced(struct conn *c, json_t *obj);
/* The msg frame of chat envelope e (paced: as conn_send_paced), and the
 * ack frame of a client id, written without building the frame
 * (phone_msg_to, phone_ack_to). */
struct env;
void conn_send_msg(struct conn *c, const struct env *e, bool paced);
void conn_send_ack(struct conn *c, json_t *id);
/* Queue a frame whose body (compact JSON, len bytes) is already written,
 * e.g. once for every device of a user: no JSON value, no serialiser. The
 * same cut as conn_send; a body over max_frame is replaced by an error. */
void conn_send_raw(struct conn *c, const char *body, size_t len);
/* Bytes queued to c and not yet taken by the kernel (TLS: by OpenSSL). */
size_t conn_output_pending(const struct conn *c);
/* Send an error frame; with close, a bye follows and the socket closes. */
void conn_error(struct conn *c, const char *code, const char *msg,
                const char *id);
/* Queue bye(reason) and close once it is flushed. */
void conn_bye(struct conn *c, const char *reason);
void conn_set_state(struct conn *c, enum conn_state s);
void conn_close_all(struct edge *edge, const char *reason);
/* Free c at once: only at shutdown, outside any callback of c. */
void conn_destroy(struct conn *c);
/* At edge_free, after every connection was destroyed: conn.c's per-edge
 * state (deadline queues, read buffer, output arena). */
void conn_deadlines_free(struct edge *edge);

#endif
