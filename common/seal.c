/* seal.c - AES-256-GCM via OpenSSL EVP. Layout before base64:
 * 12-byte nonce | ciphertext of (8-byte big-endian ms timestamp | secret) | 16-byte tag. */
#include "seal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define NONCE 12
#define TAG 16
#define STAMP 8

static bool hex_bytes(const char *hex, uint8_t *out, size_t n)
{
    if (!hex || strlen(hex) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
            else return false;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

bool seal_parse_key(const char *hex, uint8_t key[SEAL_KEY_BYTES])
{
    return hex_bytes(hex, key, SEAL_KEY_BYTES);
}

bool seal_token_parse(const char *hex, uint8_t token[SEAL_TOKEN_BYTES])
{
    return hex_bytes(hex, token, SEAL_TOKEN_BYTES);
}

void seal_token_hex(const uint8_t token[SEAL_TOKEN_BYTES], char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < SEAL_TOKEN_BYTES; i++) {
        out[2 * i] = digits[token[i] >> 4];
        out[2 * i + 1] = digits[token[i] & 15];
    }
    out[SEAL_TOKEN_HEX] = '\0';
}

bool seal_resume_key(const uint8_t key[SEAL_KEY_BYTES],
                     const uint8_t token[SEAL_TOKEN_BYTES],
                     uint8_t out[SEAL_KEY_BYTES])
{
    static const char label[] = "imbridge resume v1";
    uint8_t msg[sizeof(label) + SEAL_TOKEN_BYTES];
    memcpy(msg, label, sizeof(label)); /* (with its NUL: label | 0 | token) */
    memcpy(msg + sizeof(label), token, SEAL_TOKEN_BYTES);
    unsigned len = 0;
    bool ok = HMAC(EVP_sha256(), key, SEAL_KEY_BYTES, msg, sizeof(msg), out,
                   &len) != NULL &&
              len == SEAL_KEY_BYTES;
    OPENSSL_cleanse(msg, sizeof(msg));
    return ok;
}

/* Run AES-256-GCM over in (n bytes) into out; enc selects the direction.
 * The tag is written (enc) or checked (!enc). Returns false on any failure. */
static bool gcm(bool enc, const uint8_t *key, const uint8_t *nonce,
                const char *aad, const uint8_t *in, int n, uint8_t *out,
                uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc);
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL);
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc);
    ok = ok && EVP_CipherUpdate(c, NULL, &len, (const uint8_t *)aad,
                                (int)strlen(aad));
    ok = ok && EVP_CipherUpdate(c, out, &len, in, n);
    if (!enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag);
    ok = ok && EVP_CipherFinal_ex(c, out + len, &len);
    if (enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, tag);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

char *seal_encrypt(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                   const char *secret, int64_t now_ms)
{
    size_t slen = strlen(secret);
    if (slen > SEAL_MAX_SECRET)
        return NULL;
    size_t plen = STAMP + slen;
    uint8_t *plain = xmalloc(plen);
    for (int i = 0; i < STAMP; i++)
        plain[i] = (uint8_t)((uint64_t)now_ms >> (56 - 8 * i));
    memcpy(plain + STAMP, secret, slen);
    size_t rawlen = NONCE + plen + TAG;
    uint8_t *raw = xmalloc(rawlen);
    util_random(raw, NONCE);
    bool ok = gcm(true, key, raw, jid, plain, (int)plen, raw + NONCE,
                  raw + NONCE + plen);
    OPENSSL_cleanse(plain, plen);
    free(plain);
    char *out = NULL;
    if (ok) {
        out = xmalloc(4 * ((rawlen + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)out, raw, (int)rawlen);
    }
    free(raw);
    return out;
}

char *seal_decrypt(const uint8_t key[SEAL_KEY_BYTES], const char *jid,
                   const char *sealed, int64_t now_ms, int64_t max_age_ms)
{
    size_t blen = strlen(sealed);
    if (blen == 0 || blen % 4 != 0 || blen > 4 * (SEAL_MAX_SECRET + 64))
        return NULL;
    uint8_t *raw = xmalloc(blen);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)sealed, (int)blen);
    if (n > 0 && sealed[blen - 1] == '=')
        n--;
    if (n > 0 && sealed[blen - 2] == '=')
        n--;
    char *secret = NULL;
    if (n >= NONCE + STAMP + TAG) {
        int plen = n - NONCE - TAG;
        uint8_t *plain = xmalloc((size_t)plen + 1);
        if (gcm(false, key, raw, jid, raw + NONCE, plen, plain,
                raw + NONCE + plen)) {
            uint64_t stamp = 0;
            for (int i = 0; i < STAMP; i++)
                stamp = (stamp << 8) | plain[i];
            int64_t age = now_ms - (int64_t)stamp;
            if (age <= max_age_ms && age >= -max_age_ms &&
                !memchr(plain + STAMP, '\0', (size_t)plen - STAMP))
                secret = xstrndup((char *)plain + STAMP, (size_t)plen - STAMP);
        }
        OPENSSL_cleanse(plain, (size_t)plen);
        free(plain);
    }
    free(raw);
    return secret;
}

void seal_wipe_free(char *secret)
{
    if (!secret)
        return;
    OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
}
