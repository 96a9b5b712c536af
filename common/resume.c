/* resume.c - a session's password kept sealed under its resume token (see
 * resume.h). */
#include "resume.h"
#include "keys.h"
#include "lease.h"

#include <stdio.h>

#include <openssl/crypto.h>

/* The script, with its keys and arguments, is in common/lua/. It writes on
 * the user's behalf, so it starts with the fence check (lease.h). */
static struct bus_script STORE = {
#include "fence.lua.h"
#include "resume_store.lua.h"
    , "", false};

bool resume_store(struct bus *bus, const uint8_t key[SEAL_KEY_BYTES],
                  const char *jid, const char *holder,
                  const uint8_t token[SEAL_TOKEN_BYTES], const char *password,
                  bus_reply_cb *cb, void *data)
{
    char *sealed = NULL;
    if (password) {
        uint8_t k[SEAL_KEY_BYTES];
        if (seal_resume_key(key, token, k))
            sealed = seal_encrypt(k, jid, password, 0);
        OPENSSL_cleanse(k, sizeof(k));
        if (!sealed)
            return false;
    }
    char lease[KEYS_MAX], fence[KEYS_MAX], resume[KEYS_MAX], ms[24];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    keys_user(bus, resume, sizeof(resume), KEYS_RESUME, jid);
    snprintf(ms, sizeof(ms), "%lld", RESUME_KEEP_MS);
    const char *argv[] = {"3", lease, fence, resume, holder, sealed ? sealed : "", ms};
    bus_eval(bus, &STORE, cb, data, 7, argv, NULL);
    seal_wipe_free(sealed);
    return true;
}

void resume_fetch(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data)
{
    char resume[KEYS_MAX];
    keys_user(bus, resume, sizeof(resume), KEYS_RESUME, jid);
    const char *argv[] = {"GET", resume};
    bus_command_argv(bus, cb, data, 2, argv, NULL);
}

char *resume_open(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                  const uint8_t token[SEAL_TOKEN_BYTES], const char *sealed)
{
    uint8_t k[SEAL_KEY_BYTES];
    char *password = NULL;
    /* Sealed dated 0 (resume_store): how long it is good is Redis's
     * expiry's to say, not a clock's. */
    if (sealed && seal_resume_key(key, token, k))
        password = seal_decrypt(k, jid, sealed, 0, 1);
    OPENSSL_cleanse(k, sizeof(k));
    return password;
}
