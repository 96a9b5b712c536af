/* resume.h - a user's session opened again elsewhere without the edge
 * keeping a password.
 *
 * When a worker opens a user's XMPP session with a password, it draws a
 * random resume token (seal.h), seals the password under the key the token
 * opens (with the cred key), and, once the XMPP server has accepted it,
 * stores the sealed text in Redis ("<prefix>:resume:{<jid>}", kept
 * RESUME_KEEP_MS). Edges get the token in login_ok. When the session must
 * move (its worker died or stops), an edge sends the token instead of a
 * password; the worker that takes the login reads the sealed text, opens it
 * with the token and logs in as before. An edge's memory therefore holds 16
 * bytes per user, no password, and Redis holds nothing that opens without a
 * token. Text gone or expired: login_fail ENV_RESUME_LOST, and the phones
 * log in again themselves. */
#ifndef IMB_RESUME_H
#define IMB_RESUME_H

#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "seal.h"

/* How long a session's sealed password is kept: from the login that
 * stored it, renewed each time a session opens with the token (its
 * CONNECT); a token login that joins a session already open renews nothing. */
#define RESUME_KEEP_MS (30LL * 24 * 3600 * 1000)

/* Store password, sealed under token for jid (held under holder's lease:
 * "<owner> <lease token>"); password NULL only renews the time it is kept.
 * Returns false when it could not be sealed. cb (may be NULL) gets 1, or 0
 * when the lease is another's. */
bool resume_store(struct bus *bus, const uint8_t key[SEAL_KEY_BYTES],
                  const char *jid, const char *holder,
                  const uint8_t token[SEAL_TOKEN_BYTES], const char *password,
                  bus_reply_cb *cb, void *data);

/* Read jid's sealed password: cb gets the GET's reply (nil when gone). */
void resume_fetch(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data);

/* Open what resume_fetch read: the password (malloc'd, seal_wipe_free it),
 * or NULL when it is not a text token opens for jid. */
char *resume_open(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                  const uint8_t token[SEAL_TOKEN_BYTES], const char *sealed);

#endif
