/* seal.h - credentials sealed for the bus: AES-256-GCM with a key that edge
 * and xmppd share (config "cred_key"), so operators watching Redis never see
 * a password. The sealed text binds the user's JID (as AAD) and a timestamp,
 * so it cannot be replayed for another user or long after it was made. */
#ifndef IMB_SEAL_H
#define IMB_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_BYTES 32
#define SEAL_MAX_SECRET 1024

/* Parse 64 hex characters into key. */
bool seal_parse_key(const char *hex, uint8_t key[SEAL_KEY_BYTES]);

/* Seal secret for jid at time now_ms. Returns a malloc'd base64 string. */
char *seal_encrypt(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                   const char *secret, int64_t now_ms);

/* Open sealed text for jid. Returns the malloc'd secret, or NULL when the
 * text is malformed, was sealed for another jid or key, or is older than
 * max_age_ms (or dated more than max_age_ms in the future) at now_ms. */
char *seal_decrypt(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                   const char *sealed, int64_t now_ms, int64_t max_age_ms);

/* Resume tokens. A bridge that opened a user's XMPP session stores the
 * password in Redis sealed under a key derived from a random token, and
 * gives the token to the edges (login_ok): an edge re-opens the session on
 * another worker with the token, and keeps no password. The token alone
 * opens nothing without the cred key, and the key alone nothing without
 * the token. */
#define SEAL_TOKEN_BYTES 16
#define SEAL_TOKEN_HEX (2 * SEAL_TOKEN_BYTES)

/* The key a token opens: HMAC-SHA256(key, "imbridge resume v1" || token). */
bool seal_resume_key(const uint8_t key[SEAL_KEY_BYTES],
                     const uint8_t token[SEAL_TOKEN_BYTES],
                     uint8_t out[SEAL_KEY_BYTES]);
/* A token as 32 lowercase hex characters (out: SEAL_TOKEN_HEX + 1 bytes),
 * and back (false unless exactly 32 hex characters). */
void seal_token_hex(const uint8_t token[SEAL_TOKEN_BYTES], char *out);
bool seal_token_parse(const char *hex, uint8_t token[SEAL_TOKEN_BYTES]);

/* Overwrite a secret before freeing it. */
void seal_wipe_free(char *secret);

#endif
