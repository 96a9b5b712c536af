/* test_jid.c - common/jid: JIDs prepared as XMPP servers prepare them
 * (RFC 6122 nodeprep, nameprep, resourceprep), and the places that rely on
 * it: the phone codec (login, msg 'to', requests) and the filter's rules. */
#include "jid.h"
#include "../../edge/phone.h"
#include "../../xmppd/filter.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char out[4096];

/* in prepares to want (rc JID_OK), or fails with rc want_rc (want NULL). */
static void expect(const char *in, const char *want, int want_rc, const char *file,
                   int line)
{
    memset(out, 'X', sizeof(out));
    int rc = jid_prep(in, out, sizeof(out));
    if (!unit_check(rc == (want ? JID_OK : want_rc), file, line, "jid_prep's result"))
        printf("    in: %s  rc=%d (%s) want %d\n", in, rc, jid_strerror(rc),
               want ? JID_OK : want_rc);
    if (want) {
        unit_check_str(out, want, file, line, "out", "want");
        /* Prepared is a fixed point: preparing it again changes nothing. */
        char again[4096];
        unit_check(jid_prep(out, again, sizeof(again)) == JID_OK &&
                       strcmp(again, out) == 0,
                   file, line, "preparation is idempotent");
        unit_check(jid_is_prepared(out), file, line, "jid_is_prepared(out)");
    } else {
        unit_check(out[0] == '\0', file, line, "out is \"\" on failure");
    }
}
#define PREP(in, want) expect(in, want, JID_OK, __FILE__, __LINE__)
#define BAD(in, rc) expect(in, NULL, rc, __FILE__, __LINE__)

TEST(jid_fullwidth_folds)
{
    /* ｂｏｂ, ＢＯＢ, ＬＯＣＡＬＨＯＳＴ: U+FF42.. and U+FF22.. (NFKC, then case). */
    PREP("\xef\xbd\x82\xef\xbd\x8f\xef\xbd\x82@localhost", "bob@localhost");
    PREP("\xef\xbc\xa2\xef\xbc\xaf\xef\xbc\xa2@\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa3"
         "\xef\xbc\xa1\xef\xbc\xac\xef\xbc\xa8\xef\xbc\xaf\xef\xbc\xb3\xef\xbc\xb4",
         "bob@localhost");
    /* Ｂｏｂ@ｌｏｃａｌｈｏｓｔ */
    PREP("\xef\xbc\xa2\xef\xbd\x8f\xef\xbd\x82@\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x83"
         "\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x88\xef\xbd\x8f\xef\xbd\x93\xef\xbd\x94",
         "bob@localhost");
    /* Other lookalikes the profiles fold: a soft hyphen (mapped to nothing),
     * the Kelvin sign K (NFKC: K, then k), a ligature ﬁ (fi). */
    PREP("b\xc2\xadob@localhost", "bob@localhost");
    PREP("\xe2\x84\xaa" "ate@localhost", "kate@localhost");
    PREP("\xef\xac\x81ona@localhost", "fiona@localhost");
    /* Non-ASCII that is not a lookalike stays, case folded: ÉLODIE -> élodie. */
    PREP("\xc3\x89lodie@localhost", "\xc3\xa9lodie@localhost");
}

TEST(jid_case)
{
    PREP("Alice@Example.ORG", "alice@example.org");
    PREP("ALICE@LOCALHOST/Phone", "alice@localhost/Phone");
    PREP("example.org", "example.org");
    PREP("Example.Org/Res", "example.org/Res");
    PREP("bob@localhost", "bob@localhost");
}

TEST(jid_resource_kept_but_prepared)
{
    /* Case kept, NFKC applied: ＰｈＯｎＥ -> PhOnE. */
    PREP("bob@localhost/\xef\xbc\xb0\xef\xbd\x88\xef\xbc\xaf\xef\xbd\x8e\xef\xbc\xa5",
         "bob@localhost/PhOnE");
    PREP("bob@localhost/My Phone", "bob@localhost/My Phone");
    /* A resource may hold '/' and '@'. */
    PREP("a@b/c/d@e", "a@b/c/d@e");
    BAD("bob@localhost/a\x01", JID_E_RESOURCE);
    BAD("bob@localhost/a\x7f", JID_E_RESOURCE);
    /* U+200E (a bidi mark) is prohibited in resources. */
    BAD("bob@localhost/a\xe2\x80\x8e", JID_E_RESOURCE);
}

TEST(jid_prohibited)
{
    BAD("a b@x", JID_E_NODE);
    BAD("a\"b@x", JID_E_NODE);
    BAD("a'b@x", JID_E_NODE);
    BAD("a:b@x", JID_E_NODE);
    BAD("a<b@x", JID_E_NODE);
    BAD("a&b@x", JID_E_NODE);
    BAD("a\tb@x", JID_E_NODE);
    BAD("a@b@c", JID_E_DOMAIN);
    BAD("a@b:c", JID_E_DOMAIN);
    BAD("a@b c", JID_E_DOMAIN);
    /* Lookalikes of forbidden characters are forbidden once folded:
     * ＂ (U+FF02) and ＠ (U+FF20) in a node. */
    BAD("a\xef\xbc\x82" "b@x", JID_E_NODE);
    BAD("a\xef\xbc\xa0" "b@x", JID_E_NODE);
    /* ℀ (U+2100) folds to "a/c": no domain holds a '/'. */
    BAD("x@\xe2\x84\x80", JID_E_DOMAIN);
    /* Private use (U+E000) in a node. */
    BAD("\xee\x80\x80@x", JID_E_NODE);
}

TEST(jid_empty_parts)
{
    BAD("", JID_E_EMPTY);
    BAD(NULL, JID_E_EMPTY);
    BAD("@x", JID_E_EMPTY);
    BAD("x@", JID_E_EMPTY);
    BAD("x/", JID_E_EMPTY);
    BAD("a@x/", JID_E_EMPTY);
    BAD("/r", JID_E_EMPTY);
    BAD(".", JID_E_EMPTY);
    BAD("a@.", JID_E_EMPTY);
    /* A node of nothing but a soft hyphen is mapped to nothing. */
    BAD("\xc2\xad@x", JID_E_EMPTY);
}

TEST(jid_trailing_dot)
{
    PREP("bob@localhost.", "bob@localhost");
    PREP("localhost.", "localhost");
    PREP("bob@Localhost./r", "bob@localhost/r");
    /* ． (U+FF0E) is a dot once folded. */
    PREP("bob@localhost\xef\xbc\x8e", "bob@localhost");
    /* Found by fuzzing (tests/fuzz/regress/stanza/domain-of-dots): a second
     * trailing dot is an empty label, not a root dot to strip again;
     * stripping one per preparation made preparing twice differ. */
    BAD("bob@localhost..", JID_E_DOMAIN);
    BAD("bob@lo....", JID_E_DOMAIN);
    BAD("bob@localhost.\xef\xbc\x8e", JID_E_DOMAIN);
}

TEST(jid_too_long)
{
    static char big[8000];
    memset(big, 'a', 1023);
    strcpy(big + 1023, "@x");
    PREP(big, big); /* 1023 bytes: the limit */
    memset(big, 'a', 1024);
    strcpy(big + 1024, "@x");
    BAD(big, JID_E_TOO_LONG);
    memset(big, 'a', 1024);
    big[1024] = '\0';
    BAD(big, JID_E_TOO_LONG); /* a domain */
    strcpy(big, "a@x/");
    memset(big + 4, 'R', 1024);
    big[1028] = '\0';
    BAD(big, JID_E_TOO_LONG);
    /* Short in, long out: ﷺ (U+FDFA, 3 bytes) is 33 bytes once NFKC'd. */
    strcpy(big, "a@x/");
    for (int i = 0; i < 40; i++)
        strcat(big, "\xef\xb7\xba");
    BAD(big, JID_E_TOO_LONG);
    /* Each part fits, the whole does not fit out. */
    char small[8];
    CHECK_EQ_INT(jid_prep("abc@defg", small, sizeof(small)), JID_E_TOO_LONG);
    CHECK_EQ_STR(small, "");
    CHECK_EQ_INT(jid_prep("abc@def", small, sizeof(small)), JID_OK);
    CHECK_EQ_STR(small, "abc@def");
}

TEST(jid_invalid_utf8)
{
    BAD("b\xffob@x", JID_E_UTF8);
    BAD("bob@x/\xc3", JID_E_UTF8);
    BAD("\xc0\xaf@x", JID_E_UTF8);          /* overlong '/' */
    BAD("bob@x/\xed\xa0\x80", JID_E_UTF8);  /* a surrogate */
    BAD("bob@\xf4\x90\x80\x80", JID_E_UTF8); /* above U+10FFFF */
}

TEST(jid_bare)
{
    CHECK_EQ_INT(jid_prep_bare("Bob@LocalHost/Res", out, sizeof(out)), JID_OK);
    CHECK_EQ_STR(out, "bob@localhost");
    /* The resource is dropped unchecked. */
    CHECK_EQ_INT(jid_prep_bare("Bob@LocalHost/\x01", out, sizeof(out)), JID_OK);
    CHECK_EQ_STR(out, "bob@localhost");
    CHECK_EQ_INT(jid_prep_bare("\xef\xbd\x82\xef\xbd\x8f\xef\xbd\x82@localhost", out,
                               sizeof(out)),
                 JID_OK);
    CHECK_EQ_STR(out, "bob@localhost");
    CHECK_EQ_INT(jid_prep_bare("a b@x/r", out, sizeof(out)), JID_E_NODE);
    CHECK(!jid_is_prepared("Bob@localhost"));
    CHECK(jid_is_prepared("bob@localhost"));
    CHECK(!jid_is_prepared("a b@x"));
    CHECK(strstr(jid_strerror(JID_E_NODE), "node") != NULL);
    CHECK(strstr(jid_strerror(JID_E_RESOURCE), "resource") != NULL);
}

/* The ASCII fast path gives exactly what libidn gives: every ASCII byte in
 * every profile, alone and between letters, and many random strings. */
static int same(enum jid_part part, const char *s, size_t len)
{
    char a[2048], b[2048];
    int ra = jid_prep_part(part, s, len, a, sizeof(a), true);
    int rb = jid_prep_part(part, s, len, b, sizeof(b), false);
    if (ra != rb || strcmp(a, b) != 0) {
        printf("    part %d, \"%.*s\": fast %d \"%s\", libidn %d \"%s\"\n", (int)part,
               (int)len, s, ra, a, rb, b);
        return 0;
    }
    return 1;
}

TEST(jid_ascii_fast_path_is_libidn)
{
    int bad = 0, n = 0;
    for (int part = JID_NODE; part <= JID_RESOURCE; part++) {
        for (int c = 1; c < 0x80; c++) {
            char s[4] = {'a', (char)c, 'Z', '\0'};
            bad += !same(part, s, 3);
            bad += !same(part, s + 1, 1);
            n += 2;
        }
        unsigned seed = 12345;
        for (int i = 0; i < 3000; i++) {
            char s[24];
            size_t len = 1 + (seed >> 16) % 20;
            for (size_t k = 0; k < len; k++) {
                seed = seed * 1103515245u + 12345u;
                s[k] = (char)(1 + (seed >> 16) % 0x7f);
            }
            s[len] = '\0';
            bad += !same(part, s, len);
            n++;
        }
    }
    printf("    %d ASCII strings compared, %d differ\n", n, bad);
    CHECK_EQ_INT(bad, 0);
}

/* What comes out is a fixed point: every code point up to U+2FFFF between
 * two letters, in every part, prepared twice gives the same bytes (the
 * worker prepares again what the edge prepared; a JID must not drift). */
static size_t utf8(unsigned c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 63));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 63));
        o[2] = (char)(0x80 | (c & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 63));
    o[2] = (char)(0x80 | ((c >> 6) & 63));
    o[3] = (char)(0x80 | (c & 63));
    return 4;
}

TEST(jid_prepared_is_a_fixed_point)
{
    int prepared = 0, drift = 0;
    for (unsigned c = 1; c < 0x30000; c++) {
        if (c >= 0xD800 && c < 0xE000)
            continue;
        for (int part = JID_NODE; part <= JID_RESOURCE; part++) {
            char in[8], a[512], b[512];
            size_t n = 0;
            in[n++] = 'a';
            n += utf8(c, in + n);
            in[n++] = 'z';
            if (jid_prep_part(part, in, n, a, sizeof(a), true) != JID_OK)
                continue;
            prepared++;
            if (jid_prep_part(part, a, strlen(a), b, sizeof(b), true) != JID_OK ||
                strcmp(a, b) != 0) {
                if (drift++ < 5)
                    printf("    part %d U+%04X: \"%s\" -> \"%s\"\n", part, c, a, b);
            }
        }
    }
    printf("    %d prepared, %d drift\n", prepared, drift);
    CHECK_EQ_INT(drift, 0);
}

/* The phone codec prepares what phones name; a JID it cannot prepare is a
 * bad frame naming the field, with the frame's id. */
TEST(jid_phone_frames_prepared)
{
    char err[256], id[PHONE_MAX_ID + 1];
    json_t *o = NULL;
    const char *login = "{\"t\":\"login\",\"v\":1,\"jid\":\"\\uff42\\uff4f\\uff42@localhost\","
                        "\"pass\":\"x\"}";
    CHECK_EQ_INT(phone_decode(login, strlen(login), 4096, &o, id, err, sizeof(err)),
                 PHONE_LOGIN);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "jid")), "bob@localhost");
    json_decref(o);
    const char *msg = "{\"t\":\"msg\",\"id\":\"m1\",\"to\":\"\\uff22\\uff2c\\uff2f\\uff23"
                      "\\uff2b\\uff25\\uff24@LocalHost/Res\",\"body\":\"x\"}";
    CHECK_EQ_INT(phone_decode(msg, strlen(msg), 4096, &o, id, err, sizeof(err)), PHONE_MSG);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "to")), "blocked@localhost/Res");
    json_decref(o);
    const char *join = "{\"t\":\"join\",\"id\":\"j1\",\"room\":\"Room@Conference.Localhost\","
                       "\"nick\":\"\\uff30hone\"}";
    CHECK_EQ_INT(phone_decode(join, strlen(join), 4096, &o, id, err, sizeof(err)), PHONE_REQ);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "room")), "room@conference.localhost");
    CHECK_EQ_STR(json_string_value(json_object_get(o, "nick")), "Phone");
    json_decref(o);
    const char *bad = "{\"t\":\"msg\",\"id\":\"m2\",\"to\":\"a\\uff02b@localhost\",\"body\":\"x\"}";
    o = (json_t *)1;
    CHECK_EQ_INT(phone_decode(bad, strlen(bad), 4096, &o, id, err, sizeof(err)), -1);
    CHECK(o == NULL);
    CHECK_EQ_STR(id, "m2");
    if (!CHECK(strstr(err, "field 'to'") && strstr(err, "node")))
        printf("    err: %s\n", err);
    const char *badreq = "{\"t\":\"roster_set\",\"id\":\"r1\",\"jid\":\"x@\\u2100\"}";
    CHECK_EQ_INT(phone_decode(badreq, strlen(badreq), 4096, &o, id, err, sizeof(err)), -1);
    CHECK_EQ_STR(id, "r1");
    if (!CHECK(strstr(err, "field 'jid'") && strstr(err, "domain")))
        printf("    err: %s\n", err);
    const char *badlogin = "{\"t\":\"login\",\"v\":1,\"jid\":\"a b@localhost\",\"pass\":\"x\"}";
    CHECK_EQ_INT(phone_decode(badlogin, strlen(badlogin), 4096, &o, id, err, sizeof(err)), -1);
    CHECK_EQ_STR(id, "");
    CHECK(strstr(err, "field 'jid'") != NULL);
}

/* A rule and the peers it is matched with are prepared alike. */
TEST(jid_filter_rules_prepared)
{
    char err[256] = "";
    struct filter *f = filter_parse("block Blocked@LocalHost \xef\xbd\x85vil@x\n", "rules",
                                    err, sizeof(err));
    if (!CHECK(f != NULL)) {
        printf("    %s\n", err);
        return;
    }
    const char *blocked[] = {
        "blocked@localhost", "Blocked@localhost/r",
        "\xef\xbd\x82\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x83\xef\xbd\x8b\xef\xbd\x85\xef\xbd\x84@localhost",
        "\xef\xbc\xa2\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa3\xef\xbc\xab\xef\xbc\xa5\xef\xbc\xa4@"
        "\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa3\xef\xbc\xa1\xef\xbc\xac\xef\xbc\xa8\xef\xbc\xaf"
        "\xef\xbc\xb3\xef\xbc\xb4",
        "blocked@localhost.", "evil@x", "EVIL@X/y", "a b@x"};
    for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++) {
        char *masked = NULL;
        if (!CHECK_EQ_INT(filter_check(f, blocked[i], "hi", &masked), FR_BLOCKED))
            printf("    peer: %s\n", blocked[i]);
        free(masked);
    }
    char *masked = NULL;
    CHECK_EQ_INT(filter_check(f, "blocked2@localhost", "hi", &masked), FR_PASS);
    filter_free(f);
    f = filter_parse("block a\xef\xbc\x82" "b@x\n", "rules", err, sizeof(err));
    CHECK(f == NULL);
    if (!CHECK(strstr(err, "is not a bare JID: the node") != NULL))
        printf("    %s\n", err);
}

int main(void)
{
    RUN(jid_fullwidth_folds);
    RUN(jid_case);
    RUN(jid_resource_kept_but_prepared);
    RUN(jid_prohibited);
    RUN(jid_empty_parts);
    RUN(jid_trailing_dot);
    RUN(jid_too_long);
    RUN(jid_invalid_utf8);
    RUN(jid_bare);
    RUN(jid_ascii_fast_path_is_libidn);
    RUN(jid_prepared_is_a_fixed_point);
    RUN(jid_phone_frames_prepared);
    RUN(jid_filter_rules_prepared);
    return unit_done();
}
