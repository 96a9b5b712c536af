/* lease.h - ownership of a user's XMPP session: exactly one bridge worker
 * holds it, through a Redis lease that the holder renews, and every write
 * made on the user's behalf is fenced by the lease's token.
 *
 * Keys: "<prefix>:lease:{<jid>}"  "<owner> <token>", expires (PX lease time)
 *       "<prefix>:fence:{<jid>}"  the last token given for the user
 * (keys.h: the braces put every key of one user in one Redis Cluster slot)
 * A token only grows (above the last one given and above the server's clock
 * in microseconds), so a worker that hung, lost its lease and woke up holds an older
 * token than whoever took over. Scripts that write for a user (the inbox's
 * deliver.lua) start with fence.lua's check and refuse a stale holder, so
 * such a worker can no longer number, store or publish anything for that
 * user; its renewal tells it that it lost the user, and it steps down.
 * The scripts: common/lua/lease_take.lua, lease_release.lua, fence.lua. */
#ifndef IMB_LEASE_H
#define IMB_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "bus.h"

#define LEASE_TOKEN_MAX 24
/* "<owner> <token>": owner up to 64 chars. */
#define LEASE_HOLDER_MAX (64 + 1 + LEASE_TOKEN_MAX)

/* What lease_take answered. */
struct lease_answer {
    char holder[65];              /* the owner after the call; "" when the
                                     caller's session lost the user */
    char token[LEASE_TOKEN_MAX];  /* the holder's token */
    int64_t ttl_ms;               /* another holder's time left, else 0 */
};

/* Take the lease on jid for owner, for ms; or renew it for the session that
 * holds token held ("" for a new session: it gets a new token, or the
 * owner's current one). cb gets the raw reply: read it with lease_parse. */
void lease_take(struct bus *bus, const char *jid, const char *owner,
                const char *held, long ms, bus_reply_cb *cb, void *data);
/* Parse lease_take's reply. False when it is not one (Redis away). */
bool lease_parse(const redisReply *r, struct lease_answer *out);

/* Give the lease up if it is still exactly owner's with token. cb (may be
 * NULL) gets the reply: 1 when it was given up. */
void lease_release(struct bus *bus, const char *jid, const char *owner,
                   const char *token, bus_reply_cb *cb, void *data);

/* The keys of jid's lease and fence (each of n bytes, KEYS_MAX), for
 * scripts that check the fence. */
void lease_keys(const struct bus *bus, const char *jid, char *lease, char *fence,
                size_t n);
/* "<owner> <token>" into out (LEASE_HOLDER_MAX). */
void lease_holder(char *out, const char *owner, const char *token);

#endif
