/* xmppd.h - the bridge: a supervisor process forks worker processes; each
 * worker holds up to max_sessions XMPP client sessions (libstrophe's select()
 * loop caps one process near 900 sockets) on its own libevent loop, with its
 * own bus connections.
 *
 * A user's session is owned through a Redis lease "<prefix>:lease:{<jid>}"
 * whose value is the worker id; the owner renews it and is the only one
 * subscribed to the user's channel "<prefix>:x:<jid>". */
#ifndef IMB_XMPPD_H
#define IMB_XMPPD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <strophe.h>

#include "config.h"
#include "envelope.h"
#include "seal.h"
#include "bus.h"
#include "lease.h"
#include "inbox.h"
#include "httpd.h"
#include "strmap.h"
#include "filter.h"

struct event_base;
struct event;
struct bus;
struct bufferevent;
struct httpd;

struct xmppd_cfg {
    struct common_cfg common;
    char *xmpp_host;      /* IP or name of the XMPP server (c2s) */
    long xmpp_port;
    char *xmpp_tls;       /* "required" | "disabled" | "trust" (no verification) */
    char *xmpp_cafile;    /* CA bundle for verifying the server; "" = system */
    char *xmpp_resource;  /* resource of every session */
    long workers;         /* worker processes */
    long max_sessions;    /* per worker */
    long connect_timeout; /* seconds for TCP + TLS + auth to complete */
    long resume_window;   /* seconds a session outlives its last device */
    long lease_ms;        /* lease time; renewed every lease_ms/3 */
    long inbox_ttl;       /* seconds an unacked message waits for a phone */
    long inbox_max;       /* messages kept per user at most */
    char *bridge_id;      /* empty: random */
    char *xmpp_csi;       /* "on": tell the server when no phone is in front
                             (XEP-0352) | "off": the server lacks it */
    char *push_preview;   /* push envelopes carry: "none" | "sender" | "full" */
    char *filter_rules;   /* rules file of the message filter, "" = none */
    char *push_jid;       /* component JID the XMPP server notifies of
                             messages stored offline (XEP-0357); "" = off */
    char *push_secret;    /* its component secret (XEP-0114) */
    long push_port;       /* the XMPP server's component port */
    long muc_join_timeout; /* seconds a room has to answer a join or a subject */
    long ping_delay_ms;   /* a worker's rounds of proof pings at most this
                             often (session_flush_acks; 0: every loop turn) */
};

enum session_state {
    SESSION_LEASING,    /**< waiting for the lease */
    SESSION_CONNECTING, /**< TCP/TLS/SASL in progress */
    SESSION_ONLINE,     /**< bound, presence sent */
    SESSION_CLOSING,    /**< disconnect requested; freed on DISCONNECT */
};

/* Client ids remembered per user to drop resent duplicates. */
#define ACKED_KEEP 512

/* A bounded set of ids: the oldest is forgotten first. */
struct idset {
    struct strmap map;  /* id -> (void *)1 */
    char **ring;        /* the same ids in insertion order (cap slots) */
    size_t cap, next;
};

/* A login waiting for the session to come up. */
struct waiter {
    struct waiter *next;
    char edge[65], dev[65];
    char label[65];        /* the phone's device label, "" if none */
    uint8_t pass_hash[32]; /* SHA-256(salt | password) */
    char *payload;         /* the login envelope, to forward if needed */
    size_t len;
};

/* Client ids sent to the XMPP server and not yet acknowledged to the phone.
 * They are acked when the server answers the ping sent after them. */
struct ack_batch {
    struct ack_batch *next;
    char ping_id[24];   /* "" while not yet covered by a ping */
    char edge[65], dev[65];
    json_t *ids;        /* array of client ids, owned */
};

/* A delivery receipt (XEP-0184) owed to a sender once a phone acks seq. */
struct owed_receipt {
    int64_t seq;
    char *to, *id;
};

/* Receipts and markers remembered per session to drop repeats (im.c). */
#define IM_SIGNALS_KEPT 8

struct session {
    struct worker *w;
    uint64_t serial;         /* unique in the worker: names this session, not
                                the user, in answers that come later */
    char *jid;               /* bare JID, owned */
    enum session_state state;
    xmpp_conn_t *conn;       /* owned; released outside libstrophe callbacks */
    struct event *fd_ev;     /* readable socket -> run libstrophe */
    int fd;                  /* libstrophe's socket, -1 before/after */
    struct event *timer;     /* connect timeout, then resume window */
    uint8_t salt[16];
    uint8_t pass_hash[32];   /* of the password the session logged in with */
    char *password;          /* only until CONNECT; wiped after */
    uint8_t resume[SEAL_TOKEN_BYTES]; /* the session's resume token, given
                                to edges in login_ok (resume.h) */
    bool resume_new;         /* drawn here (a password login): its sealed
                                password is stored at CONNECT; else it came
                                with the login, and CONNECT renews it */
    struct waiter *waiters;  /* logins waiting for LEASING/CONNECTING to end */
    struct strmap devices;   /* "edge/dev" -> (void*)1: attached phones */
    struct ack_batch *acks_head, *acks_tail;
    bool tcp_connected;      /* the server's side of TCP answered: a later
                                failure before CONNECT is about the login */
    bool ping_queued;        /* on the worker's flush list */
    bool tls_failed;         /* the server's certificate was rejected */
    bool close_deferred;     /* closed while it logged in: the stream goes
                                once the login is over (session_close) */
    const char *end_reason;  /* closed that way by session_close_all: the
                                user is handed over (lease released,
                                session_end) only once the stream is gone,
                                for until then it may bind the user's
                                resource and kick the session the user
                                moved to; a string literal, or NULL */
    struct idset acked;      /* client ids the server already has */
    struct idset seen;       /* messages already delivered to the inbox: archive
                                ids and "<from>|<id>" of incoming messages */
    char mam_qid[24];        /* tag of the archive query in flight, or "" */
    int mam_pages;           /* archive pages fetched since CONNECT */
    struct session *flush_next;
    int64_t started_ms;
    struct strmap presence;  /* contact's full JID -> json_t presence frame */
    struct strmap rooms;     /* room bare JID -> struct room */
    struct pending_iq *iqs;  /* IQs waiting for an answer */
    char show[8];            /* the user's presence: PROTO_SHOWS */
    char *status;            /* and its status text, or NULL */
    bool csi_inactive;       /* <inactive/> was sent: no phone in front */
    bool available;          /* initial presence sent, logins answered */
    bool multi_device;       /* the user has more than one phone: what one
                                sends is copied to the stream for the others */
    char *first_label;       /* label of the first phone attached (owned) */
    char token[LEASE_TOKEN_MAX]; /* the token of the lease held ("" while
                                    LEASING): every write for the user is
                                    fenced on it (lease.h) */
    int64_t lease_until;     /* monotonic ms until which the lease is sure to
                                hold (a renewal's send time + lease_ms) */
    bool renewing;           /* a renewal is in flight */
    bool lease_lost;         /* another worker took the user (or the lease was
                                released): nothing more is done for it */
    struct deferred *deferred, *deferred_tail; /* envelopes waiting for a
                                renewal to confirm the lease (session_defer) */
    char epoch[INBOX_EPOCH_MAX]; /* the numbering the session last stored
                                    under ("" before the first) */
    int64_t seq_high;        /* the highest seq stored under epoch (0: none
                                yet): deliver.lua refuses a counter below it
                                (Redis came back with an older copy) */
    size_t acked_since_trim; /* ids stored since the acked list's last trim */
    int64_t acked_trim_ms;   /* monotonic, that trim (0: none yet) */
    char *out;               /* stanzas of this loop turn, written to the
                                server at its end in one piece (req.c) */
    size_t outlen, outcap;
    struct session *out_next; /* in the worker's list of sessions with out */
    bool out_queued;
    struct owed_receipt *receipts; /* delivery receipts owed once a phone acks
                                      the seq (ascending seq) */
    size_t nreceipts, capreceipts;
    char epoch_lost[INBOX_EPOCH_MAX]; /* the last numbering found lost (its
                                    recent messages were stored again) */
    char catch_up_after[65]; /* the archive id the catch-up starts after, kept
                                until the initial presence is out ("": none) */
    bool catching_up;        /* the archive catch-up runs: messages that come
                                live meanwhile, and the phones' envelopes,
                                wait for it (held, deferred) */
    xmpp_stanza_t **held;    /* live messages held during the catch-up (refs) */
    size_t nheld, capheld;
    uint64_t signals[IM_SIGNALS_KEPT]; /* digests of the last receipts and
                                markers turned into events (im.c): one
                                client's second signal of a state is dropped */
    unsigned nsignals;
    double rate_tokens;      /* the filter's per-user message rate */
    int64_t rate_ms;
};

/* An IQ sent on a phone's behalf (or the session's own), waiting for the
 * server's answer: matched by iq id in the session's list. */
enum pending_kind {
    PQ_ROSTER_GET,  /**< answer: a "roster" frame */
    PQ_ROSTER_SET,  /**< answer: "ok" (set or remove) */
    PQ_HISTORY,     /**< archive query for a phone: "hist" frames, "history" */
    PQ_CARBONS,     /**< enabling carbons: log a refusal */
    PQ_MUC_CONFIG,  /**< accepting a new room's defaults: then the join is ok */
    PQ_MUC_INVITE,  /**< a disco#info sent to a room after an invitation: its
                         answer, with no error for the invitation before it,
                         means the room took the invitation */
    PQ_PUSH,        /**< push (XEP-0357) enable or disable: log a refusal */
};

struct pending_iq {
    struct pending_iq *next;
    enum pending_kind kind;
    char iq_id[24];
    char edge[65], dev[65];  /* who asked, "" for the session itself */
    char req_id[65];         /* the request's id, to answer */
    char qid[24];            /* PQ_HISTORY: the query's tag on results;
                                PQ_MUC_INVITE: the invitation message's id */
    char *archive;           /* PQ_HISTORY: whose archive (user or room);
                                PQ_MUC_CONFIG, PQ_MUC_INVITE: the room */
    int count;               /* PQ_HISTORY: messages in the page so far */
    /* PQ_HISTORY, a page filled over several queries when stanzas with no
     * body (receipts, markers) took places (archive.c): */
    json_t *page;            /* "hist" frames held, oldest first, owned */
    size_t insert_at;        /* where this query's results go in page */
    int want, rounds;        /* messages asked for; queries sent */
    bool forward;            /* paging with "after" (else backwards) */
    char *with;              /* the query's "with", owned, or NULL */
    char *page_edge;         /* the page's end the first query saw: its last id
                                (backwards) or first (forward), owned */
};

/* A group chat (XEP-0045) room the user is in, or joining. */
struct room {
    char *jid;               /* bare room JID, owned */
    char *nick;              /* the user's nickname there, owned */
    bool joined;             /* the room sent the user's own presence */
    bool leaving;            /* left: waiting for the room to confirm */
    bool configuring;        /* the join created it: the join is answered once
                                the room accepted its default settings */
    bool await_subject;      /* the room sent the user's own presence for
                                this join; the subject, the last thing a room
                                sends at a join (XEP-0045 7.2.15), completes it */
    char edge[65], dev[65], req_id[65]; /* the join request to answer, or "" */
    /* The leave request to answer once the room confirms the user is out
     * (her own unavailable presence); leave_req "" when none or no id. */
    char leave_edge[65], leave_dev[65], leave_req[65];
    struct session *s;       /* the session the room belongs to */
    struct event *join_timer; /* answers a join or leave the room leaves
                                unanswered; after the user's own presence, a
                                join whose subject does not come */
    /* A subject change waiting for the room's answer (one at a time): the
     * room reflects the new subject (then "ok") or bounces the message
     * with its id (then "error"); subj_timer answers if it does neither. */
    bool subj_pending;
    char subj_edge[65], subj_dev[65], subj_req[65]; /* who asked; req "" if no id */
    char subj_id[24];        /* the id of the subject message sent */
    struct event *subj_timer;
    char *subject;           /* the room's subject as last seen, owned, or NULL */
    char *subject_by;        /* the nickname that set it, owned, or NULL */
    int64_t last_ts;         /* time of the newest room message stored */
    json_t *recent;          /* ids of the newest room messages stored (array):
                                history replayed at a rejoin is matched on them */
    struct strmap occupants; /* nick -> (void *)1 */
};

/* A message for a phone that could not be stored yet (Redis away). */
struct pending_delivery {
    struct pending_delivery *next;
    char *jid;
    char *payload;
    size_t len;
    char *push;       /* push envelope to publish once stored, or NULL */
    char *aid;        /* the server's archive id of the message, or NULL */
    char holder[LEASE_HOLDER_MAX]; /* the session's lease ("<owner> <token>"):
                                      the write is fenced on it */
    char epoch[INBOX_EPOCH_MAX]; /* the numbering it must go into ("": any);
                                    once stored, the one it went into */
    char *rr_to, *rr_id; /* a receipt owed to rr_to for rr_id once a phone
                            acks it, or NULL */
    int hops;            /* handed over from worker to worker so many times */
};

/* Deliveries a worker keeps after they were stored (see struct worker). */
#define WORKER_RECENT 256

struct worker_stats {
    uint64_t logins_ok, logins_auth_failed, logins_unavailable, logins_reused;
    uint64_t msgs_to_xmpp, msgs_from_xmpp, acks, undelivered, bad_envelopes,
        bad_stanzas, dup_msgs, delivery_retries, delivery_dropped;
    uint64_t delivery_fenced;  /* deliveries refused: another worker holds the user */
    uint64_t handed_over;      /* of those, handed to the owner (ENV_HANDOVER) */
    uint64_t taken_over;       /* handovers stored here (not already seen) */
    uint64_t relayed;          /* envelopes for a user held elsewhere, passed on
                                  to the lease holder (struct relay) */
    uint64_t numbering_lost;   /* users whose numbering Redis lost under a session */
    uint64_t leases_lost;      /* sessions that found another worker holding them */
    uint64_t deferred;         /* envelopes held until a renewal confirmed the lease */
    uint64_t requests, events, receipts_sent, pushes;
    uint64_t pings;            /* proof pings sent (session_flush_acks) */
    uint64_t filtered[2][FILTER_REASONS]; /* [direction][reason] */
};

/* What a worker tells the supervisor, in shared memory, once a second:
 * the supervisor serves it on /metrics and judges /healthz by it. */
struct worker_report {
    char id[64];
    int64_t updated_ms;      /* monotonic (system-wide clock), 0: never */
    uint64_t sessions;
    uint64_t redeliver_queued; /* messages for phones waiting for Redis
                                  (worker.nredeliver, at most 100000) */
    uint64_t parsers_asleep;   /* sessions whose expat parser is freed (xmlbuf.c) */
    bool bus_up;
    int64_t heartbeat_age_ms; /* bus publish->receive, -1 when down */
    bool xmpp_ok;            /* the XMPP server accepted a TCP probe */
    bool push_up;            /* this worker holds the push component */
    struct worker_stats stats;
    struct bus_stats bus;
    struct metrics_hist latency;
};

#define MAX_WORKERS 256

struct child {
    pid_t pid;
    int generation;     /* bumped at each restart: a new worker id */
    int64_t started_ms;
};

/* The supervisor process: forks, watches and restarts the workers. */
struct supervisor {
    const struct xmppd_cfg *cfg;
    char bridge_id[48];
    struct event_base *base;
    struct child kids[MAX_WORKERS];
    struct worker_report *reports; /* shared memory, one slot per worker */
    int n;
    int alive;
    bool stopping;
    struct event *deadline;        /* SIGKILL what is left after a stop */
    struct event *sigs[4];         /* SIGCHLD, SIGTERM, SIGINT, SIGHUP */
    struct httpd *httpd;           /* /healthz, /metrics; or NULL */
};

/* Set by main.c: SIGHUP in a worker re-reads the reloadable options. */
extern void (*worker_reload_hook)(void);

/* metrics.c */
bool bridge_metrics_start(struct supervisor *sv, char *err, size_t errlen);

struct worker {
    struct event_base *base;
    const struct xmppd_cfg *cfg;
    char id[64];                /* "<bridge>-w<n>.<generation>" */
    char channel[128];          /* "<prefix>:w:<id>": logins for this worker */
    struct bus *bus;
    uint8_t cred_key[SEAL_KEY_BYTES];
    xmpp_ctx_t *ctx;
    struct strmap sessions;     /* bare jid -> struct session */
    struct strmap by_conn;      /* "%p" of xmpp_conn_t -> struct session */
    struct event *run_ev;       /* one libstrophe pass, coalesced */
    struct event *backstop;     /* periodic pass: timers, TLS-buffered bytes */
    int64_t busy_until_ms;      /* traffic lately: the backstop runs often */
    bool backstop_busy;         /* the backstop is armed BACKSTOP_BUSY_MS apart */
    bool trim_due;              /* parsers were put to sleep: trim when quiet */
    int64_t trimmed_ms;         /* last time the quiet worker gave its free
                                   lists and heap back (monotonic) */
    struct event *tick;         /* registry + lease renewal */
    struct event *stop_timer;   /* graceful stop: exit the loop */
    int64_t stop_ms;            /* when the graceful stop began */
    struct session *outs;    /* sessions with stanzas waiting in out */
    struct session **graveyard; /* closed sessions, freed after the pass */
    struct forward *forwards;   /* logins forwarded to other holders, kept
                                   until their leases should have been renewed */
    size_t ngrave, capgrave;
    struct session *flush;      /* sessions with unpinged acks */
    int64_t pings_due_ms;       /* the next round of pings (monotonic) */
    struct event *ping_timer;   /* wakes the worker for that round */
    uint64_t next_ping;
    size_t connecting;          /* sessions in SESSION_CONNECTING */
    int64_t cert_rejected_ms;   /* when a server certificate was last refused */
    int64_t cred_opened_ms;     /* when a sealed credential last opened (monotonic,
                                   0 never): tells a forged one from a wrong key */
    struct pending_delivery *redeliver, *redeliver_tail; /* FIFO */
    uint64_t session_serial; /* the last struct session's serial */
    struct relay *relays;    /* envelopes waiting to reach a user's holder */
    bool closing;            /* the loop ended: the bus is being freed */
    struct event *relay_timer;
    struct pending_delivery *outq, *outq_tail; /* deliveries of this loop
                                   turn, stored at its end in one script call
                                   per user (flush_ev) */
    struct event *flush_ev;
    struct pending_delivery *recent[WORKER_RECENT]; /* the last deliveries
                                   stored, a ring (recent_next: the oldest), to
                                   store again if Redis loses their numbering */
    size_t recent_next;
    size_t nredeliver;
    struct event *redeliver_timer;
    bool ready_logged;
    bool stopping;
    struct worker_stats stats;
    struct worker_report *report;  /* shared with the supervisor */
    pid_t parent;                  /* the supervisor; a change means it died */
    struct metrics_hist latency;   /* envelope age on arrival, ms */
    struct bufferevent *probe;     /* TCP probe of the XMPP server, or NULL */
    bool xmpp_ok;
};

/* xmlbuf.c: each session's expat parser is freed while the session is idle
 * between stanzas, and made again (at the same point of the stream) by the
 * next read. Once a second: frees the parsers that read nothing since the
 * last call; returns how many. */
size_t xmlbuf_sweep(void);
/* Parsers freed now. */
size_t xmlbuf_asleep(void);

/* worker.c */
int worker_main(const struct xmppd_cfg *cfg, const char *bridge_id, int index,
                int generation, struct worker_report *report);
/* The worker of this process (one per process, by design). */
struct worker *worker_current(void);
/* Schedule one libstrophe pass (after xmpp_send, or a readable socket). */
void worker_kick(struct worker *w);
/* Store e (a chat or event for the phones) in the user's inbox and publish
 * it; keeps it for a retry while Redis is away. e is freed. push (consumed,
 * may be NULL): a push envelope to publish once it is stored. */
void worker_deliver(struct session *s, struct env *e, json_t *push);
/* The same for what another worker handed over (ENV_HANDOVER), hops times
 * already: a worker that is refused the write in turn hands it on, up to
 * WORKER_HANDOVER_HOPS. */
#define WORKER_HANDOVER_HOPS 3
void worker_deliver_handed(struct session *s, struct env *e, int hops);
/* Publish e to "<prefix>:<kind>:<id>"; e is freed. It owes someone an
 * answer (a login answer): resent until a subscriber got it,
 * for up to WORKER_OWED_MS (bus_publish_owed). */
#define WORKER_OWED_MS 10000
void worker_publish(struct worker *w, const char *kind, const char *id,
                    struct env *e);
/* The channels of the edges that hold the phones e is for, space-separated
 * in out ("" for none): the edge of e's "edge" and "dev" when set (an answer
 * to one device), else of each device of s and each login waiting for s
 * (s may be NULL). */
#define WORKER_CHANNELS_MAX 2048
void worker_phone_channels(struct worker *w, const struct session *s,
                           const struct env *e, char *out, size_t n);
/* Publish e (its "to" is the user) to those edges; e is freed. owed: it
 * owes the phone an answer (an ack, an error, a session's end), resent as
 * worker_publish does; else news nobody waits for (presence, typing). */
void worker_to_phones(struct worker *w, const struct session *s, struct env *e,
                      bool owed);
/* An error frame for user jid's phone edge + dev (else all the user's
 * phones), naming the message or request id; id and reason may be NULL. */
void worker_error(struct worker *w, const char *jid, const char *edge,
                  const char *dev, const char *id, const char *code,
                  const char *reason, const char *msg);

/* session.c */
void session_on_login(struct worker *w, struct env *e, const char *payload,
                      size_t len);
void session_on_env(struct session *s, struct env *e);
/* Ping, on each session of the worker's flush list with acks waiting and
 * no ping out, the XMPP server: its answer proves the messages sent before
 * it. Returns the pings sent. */
int session_flush_acks(struct worker *w);
/* Lease renewal answered: owner is who holds it now. */
/* The body of the bus's message callback: an envelope on channel. */
void worker_dispatch(struct worker *w, const char *channel, const char *payload,
                     size_t len);
/* The session's lease may have lapsed (its worker was frozen longer than the
 * lease lasts, or could not renew): keep the envelope, renew, and dispatch it
 * again once the renewal answered (to this session if it still holds the
 * user). False when the lease is known to be good: handle it now. */
bool session_defer(struct session *s, const char *channel, const char *payload,
                   size_t len);
/* Is id (a phone's message) sent to the server and waiting for its ack? */
bool session_ack_pending(const struct session *s, const char *id);
/* Whether session_defer would keep an envelope now. */
bool session_must_defer(const struct session *s);
void session_deferred_free(struct session *s);
/* A delivery made for holder was fenced: if it is jid's session here, it
 * renews at once (and learns that it lost the user). */
void session_fenced(struct worker *w, const char *jid, const char *holder);
/* Pending forwarded logins (their recheck timers), at worker stop. */
void session_forwards_free(struct worker *w);
/* Note which connecting sessions' sockets have reached the server. */
void session_check_connecting(struct worker *w);
/* Forget devices whose edge is not in live (edge id -> anything). */
void session_prune_devices(struct worker *w, const struct strmap *live);
/* Close every session (worker shutting down). */
void session_close_all(struct worker *w, const char *reason);
/* Whether a session closed by session_close_all half way through its login
 * has not handed its user over yet (its stream is not gone). */
bool session_closes_pending(const struct worker *w);
void session_free(struct session *s);
/* Renew the lease of every connecting or online session; cb gets each
 * holder (data: the jid, malloc'd). */
void session_lease_renew(struct worker *w);
/* A chat from the XMPP side for the phones (e consumed): the filter, a push
 * envelope if no phone is connected, then the inbox. peer: the sender (or,
 * for a copy of what the user sent elsewhere, the recipient). */
void session_deliver_chat(struct session *s, struct env *e, const char *peer);
/* Every stanza from the XMPP server passes here first: its 'from' and 'to'
 * prepared in place (jid.h). False (logged, counted as a bad stanza) when
 * one cannot be prepared: drop the stanza. */
bool session_prep_stanza(struct session *s, xmpp_stanza_t *st);
/* The user's initial presence is out: answer the waiting logins. */
void session_available(struct session *s);
/* Does any device of s want traffic now (attached and in the foreground)? */
bool session_foreground(const struct session *s);

/* req.c: the plumbing of phone requests and events. */
/* Send st (released) on the session's stream. */
void session_send(struct session *s, xmpp_stanza_t *st);
/* Write what session_send gathered: every session's (at the start of each
 * libstrophe pass), or one session's (before it closes its stream). */
void worker_flush_out(struct worker *w);
void session_flush_out(struct session *s);
/* Forget s's unwritten stanzas (its stream is gone). */
void session_drop_out(struct session *s);
/* Send frame (consumed) to the user's phones: to one device when edge and
 * dev are set, else to all; durable ones are numbered and stored like
 * chats (replayed to a phone that was away), the others only published. */
void session_event(struct session *s, json_t *frame, const char *edge,
                   const char *dev, bool durable);
/* Answer the request in req (a "req" envelope): "ok" with the request's id
 * plus the fields of extra (consumed, may be NULL), or an error frame. */
void session_req_ok(struct session *s, const struct env *req, json_t *extra);
/* An error frame for one phone (edge + dev; else all the user's), naming
 * the message or request id; reason may be NULL. */
void session_error(struct session *s, const char *edge, const char *dev,
                   const char *id, const char *code, const char *reason,
                   const char *msg);
void session_req_error(struct session *s, const struct env *req,
                       const char *code, const char *msg);
/* Register an IQ about to be sent (its id written to pq->iq_id); its answer
 * reaches session_on_iq_answer. req (may be NULL) is who to answer. */
struct pending_iq *session_iq_new(struct session *s, enum pending_kind kind,
                                  const struct env *req);
void session_iqs_free(struct session *s);
/* Route a phone's request to the feature that serves it. */
void session_on_req(struct session *s, struct env *e);

/* im.c: presence, client state, roster, subscriptions, typing, receipts,
 * read markers, carbons. */
void im_on_online(struct session *s);
void im_on_attach(struct session *s, const char *edge, const char *dev);
void im_on_devices_changed(struct session *s);
bool im_on_req(struct session *s, const struct env *e, const json_t *frame);
void im_on_acked(struct session *s, const struct env *e);
/* Receipts owed once a phone acks a seq: noted when the message is stored
 * (worker.c), read back from the inbox when a session takes the user over
 * (im_receipts_load), forgotten when the numbering is lost (the messages
 * are stored again under new seqs) or the session ends. */
void session_receipt_owed(struct session *s, int64_t seq, const char *to, const char *id);
void session_receipts_forget(struct session *s);
void im_receipts_load(struct session *s);
int im_on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata);
int im_on_iq(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata);
void im_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st);
/* The message a carbon copy carries (sent by another client of the user:
 * *sent), or msg itself when it is none. */
xmpp_stanza_t *im_unwrap_carbon(struct session *s, xmpp_stanza_t *msg, bool *sent);
/* Receipts, read markers and chat states in msg: events for the phones. */
void im_on_signals(struct session *s, xmpp_stanza_t *msg);
void im_free(struct session *s);

/* muc.c: group chat rooms. */
void muc_on_online(struct session *s);
bool muc_on_req(struct session *s, const struct env *e, const json_t *frame);
/* true when st was about a room (consumed). */
bool muc_on_presence(struct session *s, xmpp_stanza_t *st);
bool muc_on_message(struct session *s, xmpp_stanza_t *msg);
void muc_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st);
void muc_free(struct session *s);

/* archive.c: history (XEP-0313) for phones. */
bool archive_on_req(struct session *s, const struct env *e, const json_t *frame);
/* true when msg was a result of a phone's query (consumed). */
bool archive_on_message(struct session *s, xmpp_stanza_t *msg);
void archive_iq_answer(struct session *s, struct pending_iq *pq, xmpp_stanza_t *st);

/* push.c: push envelopes for messages stored offline (XEP-0357). */
/* A push envelope (PROTOCOL.md 10.10) for a message to `to` from sender
 * (full JID; in a room, room/nick), telling what push_preview allows. */
json_t *push_envelope(const struct xmppd_cfg *cfg, const char *to,
                      const char *sender, const char *room, const char *body,
                      int64_t ts);
/* The component's answer to IQ req (result, or error bad-request when !ok),
 * from component_jid to the requester. The caller sends and releases it. */
xmpp_stanza_t *push_reply(xmpp_ctx_t *ctx, const char *component_jid,
                          xmpp_stanza_t *req, bool ok);
void push_on_online(struct session *s);
void push_on_logout(struct session *s);
/* The component connection, in the first worker of a bridge. */
void push_component_start(struct worker *w);
void push_component_stop(void);
bool push_component_up(void);

/* The worker's message filter (loaded from filter_rules), or NULL. */
struct filter *worker_filter(void);

#endif
