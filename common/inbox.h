/* inbox.h - per-user delivery window in Redis: every message to a phone gets
 * the next sequence number of its user, is stored until a phone acks it (or
 * its TTL ends, or it is pushed out by the count limit) and is then
 * published. Phones that reconnect, to any edge, fetch what they miss.
 *
 * Keys: "<prefix>:seq:{<jid>}"   hash {epoch, seq, aid, offline}: the
 *                                 counter, the archive id of the newest
 *                                 message stored, offline messages since the last session
 *       "<prefix>:inbox:{<jid>}"  zset score=seq member=envelope JSON
 *       "<prefix>:cursor:{<jid>}" hash device label -> "<seq> <ms>": how far
 *                                 each of the user's devices has acked;
 *                                 "~top" the highest seq acked, "~rr" the
 *                                 newest seq that asked for a delivery receipt
 *       "<prefix>:pushq"          list of push envelopes (newest first)
 * (keys.h: a user's keys share one hash tag, so one Redis Cluster slot;
 * every script here touches that user's keys only. The push list is the
 * deployment's: the scripts return the push envelopes, and this module
 * publishes and queues them once the reply came.)
 * The epoch is a random id made with the counter: if Redis loses the counter
 * (restart without persistence), the epoch changes and phones learn that
 * their sequence numbers no longer mean anything. */
#ifndef IMB_INBOX_H
#define IMB_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

#define INBOX_EPOCH_MAX 32

/* One envelope for inbox_deliver. */
struct inbox_item {
    const char *payload; /* encoded JSON object, "{...}" */
    size_t len;
    const char *push;    /* NULL, or a push envelope (below) */
    bool rr;             /* a delivery receipt is owed once a phone acks it */
};

/* Store and publish n envelopes (n <= INBOX_BATCH_MAX) for jid, in order,
 * under consecutive sequence numbers, in one script call, on behalf of
 * holder ("<owner> <token>", the session's lease: lease.h), under the
 * numbering expect (the epoch the writer last stored under; "": any). The
 * reply handed to cb is an array {first seq, receivers, epoch, pushes}; the first
 * seq is -1 and nothing was written when holder no longer owns the user
 * (fenced), -2 when the user's numbering is not expect (Redis lost it: the
 * third element "lost"), or is expect but its counter is below stored, the
 * highest seq the writer stored in it (Redis came back with an older copy:
 * "back", the second element the counter found; the script has moved the
 * user to a new epoch, which the writer's next call, with expect "", gets:
 * a counter never goes back under a seq phones were given). The
 * stored text is each envelope with "seq" and "epoch" added in front; one
 * PUBLISH on each of channels (space-separated: the edges holding the
 * user's phones, "" for none) carries it, or a JSON array of them when
 * n > 1.
 * aid: the XMPP server's archive id of the newest message, or NULL; kept as
 * where a new session's archive catch-up starts. */
#define INBOX_BATCH_MAX 64
void inbox_deliver(struct bus *bus, const char *jid, const char *holder,
                   const char *expect, const char *channels,
                   int64_t stored, const struct inbox_item *items, size_t n,
                   const char *aid, long ttl_ms, long max_count, bus_reply_cb *cb,
                   void *data);

/* push: NULL, or a push envelope (JSON object) to publish on
 * "<prefix>:push" and queue on "<prefix>:pushq" once the message is stored,
 * with "seq" and "unread" (messages waiting for the user) added: done here,
 * when the script's reply comes (the reply's fourth element, an array of
 * them), before cb runs. */
#define INBOX_PUSHQ_MAX 100000
/* A push envelope (JSON object) for a message the XMPP server stored
 * offline (no session): published and queued like the others, with
 * "unread" = the inbox plus what was stored offline since the last session. */
void inbox_push_offline(struct bus *bus, const char *jid, const char *push);
/* A session is up: nothing waits offline any more. */
void inbox_offline_reset(struct bus *bus, const char *jid);

/* A device unseen (no ack) for this long no longer holds messages back. */
#define INBOX_CURSOR_TTL_MS (24L * 3600 * 1000)

/* Fetch up to limit envelopes with seq > after. The reply is an array
 * {epoch (string, "" if none), head seq (integer), items (array of strings)}. */
void inbox_fetch(struct bus *bus, const char *jid, int64_t after, int limit,
                 bus_reply_cb *cb, void *data);

/* The user's epoch, as a string reply (nil if Redis has none). */
void inbox_epoch(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data);

/* The server archive id ("aid") of the newest message stored, as a string
 * reply (nil if none): where a new session's archive catch-up starts. */
void inbox_last_aid(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data);

/* The device labelled dev has every envelope with seq <= upto of the
 * numbering epoch (an ack of another one, lost with Redis, is ignored). Envelopes
 * every device of the user seen within ttl_ms has acked are dropped. When
 * upto passes, for the first time, a seq that asked for a delivery receipt,
 * the user's session gets an "acked" envelope {upto, after}: it sends the
 * receipts of the seqs in (after, upto]. */
void inbox_ack(struct bus *bus, const char *jid, const char *dev, const char *epoch,
               int64_t upto, long ttl_ms);

/* The envelopes after the highest seq any phone acked, for a session that
 * takes the user over (the receipts it owes). The reply is an array
 * {highest acked (integer), envelopes (array of strings)}. */
void inbox_unacked(struct bus *bus, const char *jid, int limit, bus_reply_cb *cb,
                   void *data);

#endif
