/* inbox.h - per-user delivery window in Redis: every message to a phone gets
 * the next sequence number of its user, is stored until a phone acks it (or
 * its TTL ends, or it is pushed out by the count limit) and is then
 * published. Phones that reconnect, to any edge, fetch what they miss.
 *
 * Keys: "<prefix>:seq:<jid>"   hash {epoch, seq, aid}: the counter, and the
 *                               archive id of the newest message stored
 *       "<prefix>:inbox:<jid>" zset score=seq member=envelope JSON
 * The epoch is a random id made with the counter: if Redis loses the counter
 * (restart without persistence), the epoch changes and phones learn that
 * their sequence numbers no longer mean anything. */
#ifndef IMB_INBOX_H
#define IMB_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"

#define INBOX_EPOCH_MAX 32

/* Store and publish an envelope (encoded JSON object, "{...}") for jid. The
 * reply handed to cb is an array {seq, receivers} (integers). The stored and
 * published text is the envelope with "seq" and "epoch" added in front. */
void inbox_deliver(struct bus *bus, const char *jid, const char *payload,
                   size_t len, long ttl_ms, long max_count, bus_reply_cb *cb,
                   void *data);

/* Fetch up to limit envelopes with seq > after. The reply is an array
 * {epoch (string, "" if none), head seq (integer), items (array of strings)}. */
void inbox_fetch(struct bus *bus, const char *jid, int64_t after, int limit,
                 bus_reply_cb *cb, void *data);

/* Drop every stored envelope with seq <= upto (the phone has them). */
void inbox_ack(struct bus *bus, const char *jid, int64_t upto);

#endif
