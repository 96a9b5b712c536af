/* keys.h - the names of Redis keys that belong to one thing (a user, a
 * source address, a device): "<prefix>:<kind>:{<id>}". The braces are Redis
 * Cluster's hash tag: every key of one user hashes to one slot, so a script
 * that touches several of them (deliver.lua: the counter, the inbox, the
 * lease, the fence, the cursors) runs on one node. Keys shared by the whole
 * deployment ("<prefix>:workers", "<prefix>:edges", "<prefix>:pushq") have
 * no tag; no script touches them together with a user's keys.
 *
 * Inside the braces the id is written as is, except '{', '}' and '%', which
 * become %7B, %7D and %25: a JID may contain braces ("a}b@x"), and Redis
 * would end the tag at the first '}', or find an empty tag and hash the
 * whole name, which differs per kind. The prefix must not contain braces.
 * scripts/migrate-keys.sh renames the keys of a deployment that predates the
 * tags (docs/DEPLOY.md, "Upgrading"); tests/harness/keys.mjs holds the same
 * rule for the tests. */
#ifndef IMB_KEYS_H
#define IMB_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus;

/* The kinds of a user's keys (docs/ARCHITECTURE.md has the table). */
#define KEYS_LEASE "lease"   /* string "<worker> <token>" (lease.h) */
#define KEYS_FENCE "fence"   /* string, the last token given (lease.h) */
#define KEYS_SEQ "seq"       /* hash {epoch, seq, aid, offline} (inbox.h) */
#define KEYS_INBOX "inbox"   /* zset score = seq (inbox.h) */
#define KEYS_CURSOR "cursor" /* hash device -> "<seq> <ms>" (inbox.h) */
#define KEYS_ACKED "acked"   /* zset of client ids the server has */
#define KEYS_PRES "pres"     /* hash {show, status} */
#define KEYS_ROOMS "rooms"   /* hash room -> state */
#define KEYS_RESUME "resume" /* string: the password sealed under the
                                session's resume token (seal.h) */
#define KEYS_LF_USER "lf:u"  /* failed logins for an account (edge/throttle.c) */
#define KEYS_LF_IP "lf:ip"   /* failed logins from an address */
#define KEYS_LF_DEV "lf:d"   /* failed logins with a device token */

/* Room for the longest key: a prefix (up to 100 bytes), a kind, and a JID
 * of ENV_MAX_JID (1023) bytes each of which may take 3 (a JID of braces).
 * Callers keep keys in char[KEYS_MAX]. */
#define KEYS_MAX 3300

/* "<prefix>:<kind>:{<id>}" into out (size n). False (out "" when n > 0)
 * when it does not fit. */
bool keys_user(const struct bus *bus, char *out, size_t n, const char *kind,
               const char *id);
/* The same with the prefix given (for code without a bus: tests, tools). */
bool keys_format(char *out, size_t n, const char *prefix, const char *kind,
                 const char *id);

/* Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag, or of the
 * whole key without one, mod 16384): for tests and diagnostics. */
unsigned keys_slot(const char *key, size_t len);

#endif
