/* test_seal.c - common/seal: AES-256-GCM sealed credentials. */
#include "seal.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY2_HEX "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define JID "alice@localhost"
#define NOW 1732460000000LL
#define MAX_AGE (5 * 60 * 1000LL)

static uint8_t key[SEAL_KEY_BYTES], key2[SEAL_KEY_BYTES];

static void keys(void)
{
    seal_parse_key(KEY_HEX, key);
    seal_parse_key(KEY2_HEX, key2);
}

/* True when sealed opens (for jid, at now) to exactly want. */
static bool opens_to(const uint8_t *k, const char *jid, const char *sealed,
                     int64_t now, const char *want)
{
    char *s = seal_decrypt(k, jid, sealed, now, MAX_AGE);
    bool ok = s && want && strcmp(s, want) == 0;
    seal_wipe_free(s);
    return ok;
}

/* True when sealed does not open at all. */
static bool refused(const uint8_t *k, const char *jid, const char *sealed,
                    int64_t now)
{
    char *s = seal_decrypt(k, jid, sealed, now, MAX_AGE);
    seal_wipe_free(s);
    return s == NULL;
}

TEST(seal_parse_key_rules)
{
    uint8_t k[SEAL_KEY_BYTES];
    memset(k, 0xAA, sizeof(k));
    CHECK(seal_parse_key(KEY_HEX, k));
    for (int i = 0; i < SEAL_KEY_BYTES; i++)
        CHECK_EQ_INT(k[i], i);
    CHECK(seal_parse_key("FFEEDDCCBBAA99887766554433221100"
                         "ffeeddccbbaa99887766554433221100", k));
    CHECK_EQ_INT(k[0], 0xFF);
    CHECK_EQ_INT(k[1], 0xEE);
    CHECK_EQ_INT(k[31], 0x00);

    char hex[80];
    strcpy(hex, KEY_HEX);
    hex[63] = '\0';
    CHECK(!seal_parse_key(hex, k)); /* 63 */
    strcpy(hex, KEY_HEX "0");
    CHECK(!seal_parse_key(hex, k)); /* 65 */
    CHECK(!seal_parse_key(KEY_HEX KEY_HEX, k));
    CHECK(!seal_parse_key("", k));
    /* Non-hex at the start, the middle and the end. */
    const char *bad = "gGxz -+ \n";
    for (const char *c = bad; *c; c++) {
        for (int pos = 0; pos < 64; pos += 21) {
            strcpy(hex, KEY_HEX);
            hex[pos] = *c;
            CHECK(!seal_parse_key(hex, k));
        }
        strcpy(hex, KEY_HEX);
        hex[63] = *c;
        CHECK(!seal_parse_key(hex, k));
    }
    strcpy(hex, "0x" KEY_HEX);
    hex[64] = '\0';
    CHECK(!seal_parse_key(hex, k));
}

TEST(seal_round_trip)
{
    keys();
    const char *secrets[] = {"s3cret", "", "p\xC3\xA4ss w\xC3\xB6rd \xF0\x9F\x94\x91",
                             "with \"quotes\" and \\ and = signs"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        char *sealed = seal_encrypt(key, JID, secrets[i], NOW);
        if (!CHECK(sealed != NULL))
            continue;
        /* Printable base64 only: it travels in a JSON F_STR field. */
        CHECK(strspn(sealed, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                             "0123456789+/=") == strlen(sealed));
        CHECK(strstr(sealed, secrets[i]) == NULL || !*secrets[i]);
        CHECK(opens_to(key, JID, sealed, NOW, secrets[i]));
        seal_wipe_free(sealed); /* wipes and frees any malloc'd string */
    }
}

TEST(seal_max_secret)
{
    keys();
    char *big = malloc(SEAL_MAX_SECRET + 2);
    memset(big, 'x', SEAL_MAX_SECRET);
    big[SEAL_MAX_SECRET] = '\0';
    char *sealed = seal_encrypt(key, JID, big, NOW);
    CHECK(sealed && opens_to(key, JID, sealed, NOW, big));
    free(sealed);
    big[SEAL_MAX_SECRET] = 'x';
    big[SEAL_MAX_SECRET + 1] = '\0';
    CHECK(seal_encrypt(key, JID, big, NOW) == NULL);
    free(big);
}

TEST(seal_wrong_key_or_jid)
{
    keys();
    char *sealed = seal_encrypt(key, JID, "s3cret", NOW);
    if (!CHECK(sealed != NULL))
        return;
    CHECK(refused(key2, JID, sealed, NOW));
    uint8_t near[SEAL_KEY_BYTES];
    memcpy(near, key, sizeof(near));
    near[31] ^= 1; /* one bit off */
    CHECK(refused(near, JID, sealed, NOW));
    CHECK(refused(key, "bob@localhost", sealed, NOW));
    CHECK(refused(key, "alice@localhost/phone", sealed, NOW));
    CHECK(refused(key, "Alice@localhost", sealed, NOW));
    CHECK(refused(key, "alice@localhos", sealed, NOW));
    CHECK(refused(key, "", sealed, NOW));
    CHECK(opens_to(key, JID, sealed, NOW, "s3cret"));
    free(sealed);
}

TEST(seal_tampered)
{
    keys();
    /* 6 bytes of secret: 12 + 8 + 6 + 16 = 42 bytes, a multiple of 3, so
     * base64 has no padding and every character carries 6 real bits. */
    char *sealed = seal_encrypt(key, JID, "abcdef", NOW);
    if (!CHECK(sealed != NULL))
        return;
    size_t n = strlen(sealed);
    CHECK_EQ_INT(n, 56);
    int opened = 0;
    for (size_t i = 0; i < n; i++) {
        char *t = strdup(sealed);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        if (!refused(key, JID, t, NOW)) {
            opened++;
            printf("    flipping char %zu still opens\n", i);
        }
        free(t);
    }
    CHECK_EQ_INT(opened, 0);

    /* Truncated, extended, and padded versions are refused too. */
    char buf[256];
    snprintf(buf, sizeof(buf), "%.*s", (int)n - 4, sealed);
    CHECK(refused(key, JID, buf, NOW));
    snprintf(buf, sizeof(buf), "%sAAAA", sealed);
    CHECK(refused(key, JID, buf, NOW));
    snprintf(buf, sizeof(buf), "AAAA%s", sealed);
    CHECK(refused(key, JID, buf, NOW));
    free(sealed);
}

TEST(seal_age)
{
    keys();
    char *sealed = seal_encrypt(key, JID, "s3cret", NOW);
    if (!CHECK(sealed != NULL))
        return;
    CHECK(opens_to(key, JID, sealed, NOW + MAX_AGE, "s3cret"));
    CHECK(refused(key, JID, sealed, NOW + MAX_AGE + 1));
    CHECK(refused(key, JID, sealed, NOW + 24 * 3600 * 1000LL));
    /* Dated in the future (the sealer's clock is ahead). */
    CHECK(opens_to(key, JID, sealed, NOW - MAX_AGE, "s3cret"));
    CHECK(refused(key, JID, sealed, NOW - MAX_AGE - 1));
    CHECK(refused(key, JID, sealed, 0));
    /* A zero max age accepts only the very same millisecond. */
    char *s = seal_decrypt(key, JID, sealed, NOW, 0);
    CHECK_EQ_STR(s, "s3cret");
    seal_wipe_free(s);
    s = seal_decrypt(key, JID, sealed, NOW + 1, 0);
    CHECK(s == NULL);
    seal_wipe_free(s);
    free(sealed);
}

TEST(seal_malformed)
{
    keys();
    const char *bad[] = {
        "",
        "A",
        "AAA",                      /* not a multiple of 4 */
        "AAAA",                     /* 3 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAAA", /* 18 bytes: shorter than nonce + tag */
        "====",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 36 zero bytes */
        "AAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (!CHECK(refused(key, JID, bad[i], NOW)))
            printf("    opened: \"%s\"\n", bad[i]);

    /* Non-base64 characters inside an otherwise valid sealed text. */
    char *sealed = seal_encrypt(key, JID, "abcdef", NOW);
    if (sealed) {
        char *t = strdup(sealed);
        t[10] = '*';
        CHECK(refused(key, JID, t, NOW));
        t[10] = '\0'; /* cut short in the middle */
        CHECK(refused(key, JID, t, NOW));
        free(t);
    }
    free(sealed);

    /* A huge input is refused without trouble. */
    size_t big = 1 << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[big] = '\0';
    CHECK(refused(key, JID, huge, NOW));
    free(huge);
}

TEST(seal_nonce_is_random)
{
    keys();
    char *a = seal_encrypt(key, JID, "s3cret", NOW);
    char *b = seal_encrypt(key, JID, "s3cret", NOW);
    CHECK(a && b && strcmp(a, b) != 0);
    /* Not even the nonce (the first 16 base64 chars = 12 bytes) repeats. */
    CHECK(a && b && strncmp(a, b, 16) != 0);
    CHECK(a && opens_to(key, JID, a, NOW, "s3cret"));
    CHECK(b && opens_to(key, JID, b, NOW, "s3cret"));
    free(a);
    free(b);
}

int main(void)
{
    RUN(seal_parse_key_rules);
    RUN(seal_round_trip);
    RUN(seal_max_secret);
    RUN(seal_wrong_key_or_jid);
    RUN(seal_tampered);
    RUN(seal_age);
    RUN(seal_malformed);
    RUN(seal_nonce_is_random);
    return unit_done();
}
