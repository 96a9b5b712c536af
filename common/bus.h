/* bus.h - the Redis bus: pub/sub and commands over hiredis async on libevent,
 * on one Redis or on a Redis Cluster.
 *
 * Two connections per Redis node, as hiredis requires: "cmd" carries commands
 * and PUBLISH, "sub" carries (UN)SUBSCRIBE and incoming messages. Each
 * reconnects on its own with backoff; after "sub" reconnects every tracked
 * channel is subscribed again. A heartbeat published on cmd and expected on
 * sub detects a subscription that died silently. AUTH is the first command on
 * each link.
 *
 * On a cluster (bus_opts.cluster) the bus reads the slot map itself: a
 * command goes to the master of its first key's slot (so a command or script
 * must touch one slot: keys that go together share a hash tag), a channel is
 * subscribed and published on the master of the channel's slot. MOVED and
 * ASK are followed, TRYAGAIN waited out, and the map read again after a
 * MOVED, a master's link loss, and every few seconds. A channel whose slot
 * moved is subscribed on its new master; the bus reports itself down and up
 * around that, as around any lost subscription.
 *
 * Channel names: "<prefix>:<kind>:<id>" (see docs/ARCHITECTURE.md). */
#ifndef IMB_BUS_H
#define IMB_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct event_base;
struct bus;

struct bus_opts {
    const char *host;     /* one Redis (when cluster is NULL or "") */
    int port;
    const char *cluster;  /* "host:port,host:port": Redis Cluster seed nodes */
    const char *user;     /* "" or NULL: AUTH with password only */
    const char *password; /* "" or NULL: no AUTH */
    const char *prefix;   /* channel/key namespace, e.g. "imb" */
    const char *name;     /* short name used in log lines */
};

/* A message on a subscribed channel. payload is not NUL-terminated. */
typedef void bus_msg_cb(void *owner, const char *channel, const char *payload,
                        size_t len);
/* The bus became usable (both links up, subscriptions restored) or not. */
typedef void bus_state_cb(void *owner, bool up);
/* A command's reply. reply is NULL when the command could not be sent or the
 * link dropped before the reply; data is the caller's and the callback owns
 * it from then on. Always called exactly once, never from inside the call
 * that queued the command. */
typedef void bus_reply_cb(void *owner, void *data, redisReply *reply);

struct bus *bus_new(struct event_base *base, const struct bus_opts *opts,
                    bus_msg_cb *on_msg, bus_state_cb *on_state, void *owner);
void bus_free(struct bus *bus);

/* A seed list for bus_opts.cluster is well formed: one sentence in err when
 * not. */
bool bus_cluster_seeds_ok(const char *seeds, char *err, size_t errlen);
/* The i-th seed (from 0) of a well-formed list; false past the last. */
bool bus_cluster_seed(const char *seeds, unsigned i, char *host, size_t hostn, int *port);

/* True when every link is connected: on a cluster, the slot map is complete
 * and every master's command link and the subscription link of every master
 * holding one of the bus's channels are up. */
bool bus_up(const struct bus *bus);
const char *bus_prefix(const struct bus *bus);

/* Subscriptions are tracked: subscribing twice or unsubscribing a channel
 * that is not subscribed is a no-op, and the set is restored on reconnect.
 * Messages Redis delivered before it processed an UNSUBSCRIBE still reach
 * on_msg: their publishers were told someone got them. */
void bus_subscribe(struct bus *bus, const char *channel);
void bus_unsubscribe(struct bus *bus, const char *channel);

/* PUBLISH channel payload. The reply (integer: how many subscribers got it)
 * goes to cb; cb may be NULL (fire and forget, a miss is only counted). */
void bus_publish(struct bus *bus, const char *channel, const char *payload,
                 size_t len, bus_reply_cb *cb, void *data);

/* PUBLISH a message that owes someone an answer (an ack, a login answer, an
 * error for a phone): resent with backoff (50 ms doubling to 800 ms) while
 * it reaches no subscriber or Redis is away, for at most within_ms; then
 * logged (publish_undelivered) and counted. The bus copies channel and
 * payload. A resend may reach a subscriber that already had it: only for
 * messages whose receivers ignore a second copy. */
void bus_publish_owed(struct bus *bus, const char *channel, const char *payload,
                      size_t len, int64_t within_ms);

/* Any command on the cmd link, printf-style as redisAsyncCommand. */
void bus_command(struct bus *bus, bus_reply_cb *cb, void *data,
                 const char *fmt, ...);
void bus_command_argv(struct bus *bus, bus_reply_cb *cb, void *data, int argc,
                      const char **argv, const size_t *argvlen);

/* A Lua script, run by its SHA1 (EVALSHA): Redis keeps it compiled, and a
 * call carries 40 bytes instead of its text. The text is loaded on every
 * connect of the command link, and again (then the call repeated, in order
 * on the link) if Redis answers NOSCRIPT (SCRIPT FLUSH). Declare one per
 * script, static: BUS_SCRIPT("...text..."). */
struct bus_script {
    const char *text;
    char sha[41]; /* hex SHA1 of text, filled at the first call */
    bool known;   /* in the bus's list of scripts to load */
};
#define BUS_SCRIPT(lit) {lit, "", false}

/* EVALSHA script: argv is what follows the SHA (numkeys, keys, args);
 * argvlen as for bus_command_argv (NULL: strlen). cb as for bus_command. */
void bus_eval(struct bus *bus, struct bus_script *script, bus_reply_cb *cb,
              void *data, int argc, const char **argv, const size_t *argvlen);

/* Format "<prefix>:<kind>:<id>" into out (size n). Returns false when it does
 * not fit. */
bool bus_channel(const struct bus *bus, char *out, size_t n, const char *kind,
                 const char *id);

/* Decode and validate an envelope that arrived on channel; count its age
 * (publish time "pts" to now) in latency. On a bad one: log it, count it in
 * *bad and return NULL. */
struct env;
struct metrics_hist;
struct env *bus_envelope(const char *channel, const char *payload, size_t len,
                         struct metrics_hist *latency, uint64_t *bad);

/* Counters for metrics and tests. */
struct bus_stats {
    uint64_t published;      /* PUBLISH replies received */
    uint64_t publish_missed; /* PUBLISH that reached no subscriber */
    uint64_t publish_failed; /* PUBLISH that got no reply */
    uint64_t owed_resent;    /* resends of owed publishes (bus_publish_owed) */
    uint64_t owed_undelivered; /* owed publishes given up on */
    uint64_t received;       /* messages delivered to on_msg */
    uint64_t reconnects;     /* successful reconnects after a drop, both links */
    int64_t last_roundtrip_ms; /* heartbeat publish->receive, -1 before the first */
    uint64_t redirects;      /* cluster: MOVED and ASK answers followed */
    uint64_t topology_changes; /* cluster: slot maps read that differed */
};
const struct bus_stats *bus_stats(const struct bus *bus);
/* Milliseconds since the bus's own heartbeat last came back through Redis
 * (publish on one link, received on the other): the health of the real
 * path. -1 when a node holding one of the bus's channels is unreachable (on
 * a cluster, another master failing over leaves this path up). */
int64_t bus_heartbeat_age_ms(const struct bus *bus);

#endif
