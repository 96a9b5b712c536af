/* fuzz_envelope.c - libFuzzer driver for the bus envelope codec
 * (common/envelope.c, common/schema.c) and credential sealing (common/seal.c).
 *
 * The input is one message payload as it arrives from Redis. Invariants:
 *   - env_decode returns NULL with a reason, or an envelope of a known type
 *     whose required fields the getters find;
 *   - a decoded envelope re-encodes (env_encode) to JSON that decodes again to
 *     the same type, and encoding is stable (encode . decode . encode is the
 *     identity on encoded text);
 *   - a decoded login's "cred" is opened the way a worker opens it;
 *   - the frame of a "req" or "event" is judged by the frame catalogue
 *     (common/proto.c) the way the worker and the edge judge it: a frame
 *     it accepts names a catalogue entry;
 *   - the input, as sealed text, is refused by seal_decrypt (or opened) without
 *     a fault;
 *   - the input, as a secret, survives seal_encrypt + seal_decrypt and is
 *     refused for another JID.
 * Buffers handed to the decoders are exact-size heap copies so ASan sees any
 * read past their end. */
#include "fuzz.h"
#include "envelope.h"
#include "proto.h"
#include "seal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JID "alice@localhost"
/* 2026-11-24T16:00:00Z, the clock of the sealed seeds */
#define NOW_MS 1795536000000LL
#define MAX_AGE_MS (5 * 60 * 1000)

/* The key of the seeds: 00 01 02 .. 1f. */
static uint8_t key[SEAL_KEY_BYTES];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (int i = 0; i < SEAL_KEY_BYTES; i++)
        key[i] = (uint8_t)i;
    return 0;
}

/* Required fields per type, as the receivers read them. */
static const char *const required[ENV_TYPE_COUNT][5] = {
    [ENV_LOGIN] = {"jid", "edge", "dev"}, /* (and cred or resume_token) */
    [ENV_LOGIN_OK] = {"jid", "edge", "dev", "worker"},
    [ENV_LOGIN_FAIL] = {"jid", "edge", "dev", "code"},
    [ENV_CHAT] = {"from", "to", "body"},
    [ENV_ACK] = {"to"},
    [ENV_ERROR] = {"to", "code"},
    [ENV_LOGOUT] = {"from", "edge", "dev"},
    [ENV_DETACH] = {"from", "edge", "dev"},
    [ENV_SESSION_END] = {"to", "reason"},
    [ENV_REQ] = {"from", "edge", "dev", "frame"},
    [ENV_EVENT] = {"to", "frame"},
    [ENV_ACKED] = {"from", "rr"},
};

static void check_envelope(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    char err[256];
    err[0] = '\0';
    struct env *e = env_decode(buf, size, err, sizeof(err));
    free(buf);
    if (!e) {
        INVARIANT(err[0] != '\0', "refused without a reason");
        return;
    }
    INVARIANT((unsigned)e->type < ENV_TYPE_COUNT, "type %d", (int)e->type);
    INVARIANT(env_int(e, "v", -1) == ENV_VERSION, "version");
    INVARIANT(strcmp(env_str(e, "type"), env_type_name(e->type)) == 0,
              "type name");
    for (int i = 0; i < 5 && required[e->type][i]; i++)
        INVARIANT(env_json(e, required[e->type][i]) != NULL,
                  "%s without '%s'", env_type_name(e->type),
                  required[e->type][i]);

    size_t len = 0;
    char *json = env_encode(e, &len);
    INVARIANT(json && len == strlen(json), "env_encode length");
    char *exact = malloc(len ? len : 1);
    if (!exact)
        abort();
    memcpy(exact, json, len);
    struct env *d = env_decode(exact, len, err, sizeof(err));
    free(exact);
    INVARIANT(d != NULL, "re-encoded %s does not decode: %s\n%s",
              env_type_name(e->type), err, json);
    INVARIANT(d->type == e->type, "type %s re-decodes as %s",
              env_type_name(e->type), env_type_name(d->type));
    size_t len2 = 0;
    char *json2 = env_encode(d, &len2);
    INVARIANT(len2 == len && memcmp(json, json2, len) == 0,
              "encoding not stable:\n%s\n%s", json, json2);
    free(json2);
    env_free(d);
    free(json);

    if (e->type == ENV_REQ || e->type == ENV_EVENT) {
        json_t *frame = env_json(e, "frame");
        const struct proto_frame *pf = e->type == ENV_REQ
                                           ? proto_check_request(frame, err, sizeof(err))
                                           : proto_check_event(frame, err, sizeof(err));
        const char *t = json_string_value(json_object_get(frame, "t"));
        if (pf)
            INVARIANT(t && strcmp(pf->t, t) == 0, "frame accepted as another type");
        else
            INVARIANT(err[0] != '\0', "frame refused without a reason");
    }
    if (e->type == ENV_LOGIN) {
        /* A worker opens the credential with the envelope's own JID, or
         * the sealed password a resume token opens (xmppd/session.c). */
        const char *cred = env_str(e, "cred"), *tok = env_str(e, "resume_token");
        if (cred)
            seal_wipe_free(seal_decrypt(key, env_str(e, "jid"), cred, NOW_MS, MAX_AGE_MS));
        uint8_t token[SEAL_TOKEN_BYTES], k[SEAL_KEY_BYTES];
        if (tok && seal_token_parse(tok, token) && seal_resume_key(key, token, k))
            seal_wipe_free(seal_decrypt(k, env_str(e, "jid"), cred ? cred : "AAAA", 0, 1));
    }
    env_free(e);
}

static void check_seal(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';

    char *secret = seal_decrypt(key, JID, text, NOW_MS, MAX_AGE_MS);
    seal_wipe_free(secret);

    /* The input as a password: sealing round-trips and binds the JID. */
    char *sealed = seal_encrypt(key, JID, text, NOW_MS);
    if (strlen(text) > SEAL_MAX_SECRET) {
        INVARIANT(sealed == NULL, "sealed a secret above the limit");
    } else {
        INVARIANT(sealed != NULL, "cannot seal %zu bytes", strlen(text));
        char *back = seal_decrypt(key, JID, sealed, NOW_MS + 1000, MAX_AGE_MS);
        INVARIANT(back && strcmp(back, text) == 0, "seal round trip");
        seal_wipe_free(back);
        char *other = seal_decrypt(key, "bob@localhost", sealed, NOW_MS,
                                   MAX_AGE_MS);
        INVARIANT(other == NULL, "opened for another JID");
        char *stale = seal_decrypt(key, JID, sealed,
                                   NOW_MS + MAX_AGE_MS + 1, MAX_AGE_MS);
        INVARIANT(stale == NULL, "opened after max_age");
        free(sealed);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_envelope(data, size);
    check_seal(data, size);
    return 0;
}
