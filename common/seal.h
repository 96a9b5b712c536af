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

/* Overwrite a secret before freeing it. */
void seal_wipe_free(char *secret);

#endif
