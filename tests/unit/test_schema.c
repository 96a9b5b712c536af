/* test_schema.c - common/schema: field rules for untrusted JSON. */
#include "schema.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A malloc'd string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

TEST(schema_ids)
{
    CHECK(schema_id_ok("c1", 64));
    CHECK(schema_id_ok("A-Za-z0-9._:-", 64));
    CHECK(schema_id_ok("x", 1));
    CHECK(!schema_id_ok("", 64));
    CHECK(!schema_id_ok("ab", 1));
    CHECK(!schema_id_ok("a b", 64));
    CHECK(!schema_id_ok("a/b", 64));
    CHECK(!schema_id_ok("a@b", 64));
    CHECK(!schema_id_ok("a\"b", 64));
    CHECK(!schema_id_ok("<id>", 64));
    CHECK(!schema_id_ok("tab\t", 64));
    CHECK(!schema_id_ok("caf\xC3\xA9", 64)); /* non-ASCII */

    char *s64 = repeat('a', 64), *s65 = repeat('a', 65);
    CHECK(schema_id_ok(s64, 64));
    CHECK(!schema_id_ok(s65, 64));
    free(s64);
    free(s65);
}

TEST(schema_jids_valid)
{
    CHECK(schema_jid_ok("alice@localhost", 1023));
    CHECK(schema_jid_ok("alice@localhost/desktop", 1023));
    CHECK(schema_jid_ok("alice@localhost/My Phone (2)", 1023));
    CHECK(schema_jid_ok("localhost", 1023));             /* a server */
    CHECK(schema_jid_ok("conference.example.org/room", 1023));
    CHECK(schema_jid_ok("a/b@c", 1023)); /* domain "a", resource "b@c" */
    CHECK(schema_jid_ok("alice@localhost/a/b", 1023));   /* '/' in resource */
    CHECK(schema_jid_ok("j\xC3\xBCrgen@example.de", 1023)); /* UTF-8 */
}

TEST(schema_jids_invalid)
{
    CHECK(!schema_jid_ok("", 1023));
    CHECK(!schema_jid_ok("@", 1023));
    CHECK(!schema_jid_ok("@localhost", 1023));      /* empty localpart */
    CHECK(!schema_jid_ok("alice@", 1023));          /* empty domain */
    CHECK(!schema_jid_ok("alice@/res", 1023));
    CHECK(!schema_jid_ok("/res", 1023));
    CHECK(!schema_jid_ok("alice@localhost/", 1023)); /* empty resource */
    CHECK(!schema_jid_ok("a@b@c", 1023));
    CHECK(!schema_jid_ok("al ice@localhost", 1023));
    CHECK(!schema_jid_ok("alice@local host", 1023));
    CHECK(!schema_jid_ok(" alice@localhost", 1023));
    CHECK(!schema_jid_ok("alice@localhost ", 1023));
    /* RFC 7622 forbids "&':<> in the localpart ('@' and '/' delimit it). */
    const char *forbidden = "\"&':<>";
    for (const char *c = forbidden; *c; c++) {
        char jid[32] = "al?ce@localhost";
        jid[2] = *c;
        if (!CHECK(!schema_jid_ok(jid, 1023)))
            printf("    accepted localpart char '%c'\n", *c);
    }
    CHECK(!schema_jid_ok("al\x01" "ce@localhost", 1023));
    CHECK(!schema_jid_ok("al\x7f" "ce@localhost", 1023));
    CHECK(!schema_jid_ok("alice@loc<al>host", 1023));
    CHECK(!schema_jid_ok("alice@localhost/re\x01s", 1023));
    CHECK(!schema_jid_ok("alice@localhost/re\ns", 1023));
    CHECK(!schema_jid_ok("alice@localhost/re\ts", 1023));
    CHECK(!schema_jid_ok("alice@localhost/re\x7fs", 1023));
    CHECK(!schema_jid_ok("alice@localhost/\xEF\xBF\xBE", 1023)); /* U+FFFE */
}

TEST(schema_jid_length)
{
    CHECK(schema_jid_ok("alice@localhost", 15));
    CHECK(!schema_jid_ok("alice@localhost", 14));
    /* A 1024-byte localpart is over RFC 7622's 1023 even when max allows. */
    char *local = repeat('a', 1024);
    char *jid = malloc(1024 + 20);
    strcpy(jid, local);
    strcat(jid, "@localhost");
    CHECK(!schema_jid_ok(jid, 4096));
    CHECK(!schema_jid_ok(jid, 1023));
    jid[1023] = '\0';
    strcat(jid, "@x");
    CHECK(schema_jid_ok(jid, 4096));   /* 1023-byte localpart is fine */
    CHECK(!schema_jid_ok(jid, 1023));  /* but the whole is over max */
    free(local);
    free(jid);
}

TEST(schema_text)
{
    CHECK(schema_text_ok("hello", 5));
    CHECK(schema_text_ok("", 0));
    CHECK(schema_text_ok("tab\there\nnew\r\nline", 18));
    CHECK(schema_text_ok("caf\xC3\xA9 \xF0\x9F\x98\x80", 10)); /* é, emoji */
    CHECK(schema_text_ok("\xEF\xBF\xBD", 3));                  /* U+FFFD */
    CHECK(!schema_text_ok("a\x01" "b", 3));
    CHECK(!schema_text_ok("\x1f", 1));
    CHECK(!schema_text_ok("\x1b[31mred", 8)); /* terminal escapes */
    CHECK(!schema_text_ok("a\x7f", 2));
    CHECK(!schema_text_ok("a\0b", 3));         /* NUL inside the length */
    CHECK(!schema_text_ok("\xEF\xBF\xBE", 3)); /* U+FFFE */
    CHECK(!schema_text_ok("\xEF\xBF\xBF", 3)); /* U+FFFF */
    CHECK(!schema_text_ok("ok \xEF\xBF\xBF ok", 9));
    /* Only len bytes are looked at. */
    CHECK(schema_text_ok("ab\x01", 2));
}

/* The table schema_check tests run against. */
static const struct field fields[] = {
    {"id", F_ID, 8, true, NULL},
    {"to", F_JID, 64, true, NULL},
    {"body", F_TEXT, 16, true, NULL},
    {"note", F_TEXT, 16, false, NULL},
    {"tok", F_STR, 8, false, NULL},
    {"n", F_INT, 10, false, NULL},
    {"any", F_INT, 0, false, NULL},
    {"flag", F_BOOL, 0, false, NULL},
    {"ids", F_IDS, 3, false, NULL},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* Parse json and run schema_check; err gets the reason. */
static bool check_json(const char *json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *o = json_loads(json, 0, &jerr);
    if (!o) {
        printf("    test bug: bad JSON %s: %s\n", json, jerr.text);
        return false;
    }
    err[0] = '\0';
    bool ok = schema_check(o, fields, NFIELDS, err, errlen);
    json_decref(o);
    return ok;
}

#define BASE "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"hi\""

/* json must fail, and err must name the field. */
static void expect_fail(const char *json, const char *field, const char *file,
                        int line)
{
    char err[256];
    if (!unit_check(!check_json(json, err, sizeof(err)), file, line, json))
        return;
    char quoted[64];
    snprintf(quoted, sizeof(quoted), "'%s'", field);
    if (!unit_check(strstr(err, quoted) != NULL, file, line,
                    "err names the field"))
        printf("    err: %s\n", err);
}
#define FAILS(json, field) expect_fail(json, field, __FILE__, __LINE__)

TEST(schema_check_valid)
{
    char err[256];
    CHECK(check_json("{" BASE "}", err, sizeof(err)));
    CHECK(check_json("{" BASE ",\"note\":\"\",\"tok\":\"ab+/=\",\"n\":10,"
                     "\"any\":123456789,\"flag\":false,"
                     "\"ids\":[\"a\",\"b.c\",\"d:e\"]}",
                     err, sizeof(err)));
    /* Optional fields may be null. */
    CHECK(check_json("{" BASE ",\"note\":null,\"n\":null}", err, sizeof(err)));
    /* Unknown members are ignored, whatever they hold. */
    CHECK(check_json("{" BASE ",\"zzz\":[1,{\"a\":null}],\"x\":\"\\u0001\"}",
                     err, sizeof(err)));
    /* Exactly at the limits. */
    CHECK(check_json("{\"id\":\"12345678\",\"to\":\"bob@localhost\","
                     "\"body\":\"0123456789abcdef\",\"n\":0}",
                     err, sizeof(err)));
}

TEST(schema_check_missing)
{
    FAILS("{\"to\":\"bob@localhost\",\"body\":\"hi\"}", "id");
    FAILS("{\"id\":\"c1\",\"body\":\"hi\"}", "to");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\"}", "body");
    FAILS("{\"id\":null,\"to\":\"bob@localhost\",\"body\":\"hi\"}", "id");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"\"}", "body");
    char err[64];
    json_t *arr = json_array();
    CHECK(!schema_check(arr, fields, NFIELDS, err, sizeof(err)));
    json_decref(arr);
}

TEST(schema_check_mistyped)
{
    FAILS("{\"id\":1,\"to\":\"bob@localhost\",\"body\":\"hi\"}", "id");
    FAILS("{\"id\":\"c1\",\"to\":[\"bob@localhost\"],\"body\":\"hi\"}", "to");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":{}}", "body");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":true}", "body");
    FAILS("{\"id\":\"c 1\",\"to\":\"bob@localhost\",\"body\":\"hi\"}", "id");
    FAILS("{\"id\":\"\",\"to\":\"bob@localhost\",\"body\":\"hi\"}", "id");
    FAILS("{\"id\":\"c1\",\"to\":\"@localhost\",\"body\":\"hi\"}", "to");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"a\\u0007\"}",
          "body");
    FAILS("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"\\uffff\"}",
          "body");
    FAILS("{" BASE ",\"note\":\"\\u001b\"}", "note");
    FAILS("{" BASE ",\"tok\":\"a b\"}", "tok");
    FAILS("{" BASE ",\"tok\":\"\"}", "tok");
    FAILS("{" BASE ",\"tok\":\"caf\\u00e9\"}", "tok");
    FAILS("{" BASE ",\"n\":\"1\"}", "n");
    FAILS("{" BASE ",\"n\":1.0}", "n");
    FAILS("{" BASE ",\"n\":-1}", "n");
    FAILS("{" BASE ",\"n\":11}", "n");
    FAILS("{" BASE ",\"any\":-5}", "any");
    FAILS("{" BASE ",\"flag\":1}", "flag");
    FAILS("{" BASE ",\"flag\":\"true\"}", "flag");
    /* A NUL inside an id or JID (jansson allows it only on request). */
    json_t *o = json_pack("{s:s, s:s, s:s#}", "id", "c1", "body", "hi", "to",
                          "bob@localhost\0evil", (int)18);
    char err[128];
    CHECK(o && !schema_check(o, fields, NFIELDS, err, sizeof(err)));
    json_decref(o);
    o = json_pack("{s:s#, s:s, s:s}", "id", "c1\0x", (int)4, "to",
                  "bob@localhost", "body", "hi");
    CHECK(o && !schema_check(o, fields, NFIELDS, err, sizeof(err)));
    json_decref(o);
}

TEST(schema_check_overlong)
{
    char err[256];
    CHECK(!check_json("{\"id\":\"123456789\",\"to\":\"bob@localhost\","
                      "\"body\":\"hi\"}",
                      err, sizeof(err)));
    CHECK(strstr(err, "'id'") && strstr(err, "longer"));
    CHECK(!check_json("{\"id\":\"c1\",\"to\":\"bob@localhost\","
                      "\"body\":\"0123456789abcdefg\"}",
                      err, sizeof(err)));
    CHECK(strstr(err, "'body'") && strstr(err, "longer"));
    /* The limit is in bytes: 9 two-byte characters are 18 bytes. */
    CHECK(!check_json("{\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":"
                      "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                      "\\u00e9\\u00e9\"}",
                      err, sizeof(err)));
    CHECK(!check_json("{" BASE ",\"tok\":\"123456789\"}", err, sizeof(err)));
    CHECK(strstr(err, "'tok'") != NULL);
    /* A JID over the field's max. */
    CHECK(!check_json("{\"id\":\"c1\",\"to\":\"bob@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"body\":\"hi\"}",
                      err, sizeof(err)));
    CHECK(strstr(err, "'to'") != NULL);
    /* A tiny err buffer is never overrun (ASan would tell). */
    char tiny[4];
    json_t *o = json_loads("{}", 0, NULL);
    CHECK(!schema_check(o, fields, NFIELDS, tiny, sizeof(tiny)));
    CHECK_EQ_INT(strlen(tiny), 3);
    json_decref(o);
}

TEST(schema_check_ids)
{
    FAILS("{" BASE ",\"ids\":[]}", "ids");
    FAILS("{" BASE ",\"ids\":\"c1\"}", "ids");
    FAILS("{" BASE ",\"ids\":[\"a\",\"b\",\"c\",\"d\"]}", "ids");
    FAILS("{" BASE ",\"ids\":[\"a\",1]}", "ids");
    FAILS("{" BASE ",\"ids\":[\"a\",null]}", "ids");
    FAILS("{" BASE ",\"ids\":[\"a\",\"b c\"]}", "ids");
    FAILS("{" BASE ",\"ids\":[\"\"]}", "ids");
    FAILS("{" BASE ",\"ids\":[[\"a\"]]}", "ids");
    FAILS("{" BASE ",\"ids\":{\"a\":\"b\"}}", "ids");
    /* Each id is limited to 64 characters. */
    char *id64 = repeat('x', 64), *id65 = repeat('x', 65);
    char json[256], err[256];
    snprintf(json, sizeof(json), "{" BASE ",\"ids\":[\"%s\"]}", id64);
    CHECK(check_json(json, err, sizeof(err)));
    snprintf(json, sizeof(json), "{" BASE ",\"ids\":[\"%s\"]}", id65);
    CHECK(!check_json(json, err, sizeof(err)));
    free(id64);
    free(id65);
}

TEST(schema_bare_jid_helper)
{
    char out[64];
    CHECK(schema_bare_jid("alice@localhost/desktop", out, sizeof(out)));
    CHECK_EQ_STR(out, "alice@localhost");
    CHECK(schema_bare_jid("alice@localhost", out, sizeof(out)));
    CHECK_EQ_STR(out, "alice@localhost");
    CHECK(schema_bare_jid("localhost/a/b", out, sizeof(out)));
    CHECK_EQ_STR(out, "localhost");
    CHECK(schema_bare_jid("a@b/", out, sizeof(out)));
    CHECK_EQ_STR(out, "a@b");
    /* Exactly fits (3 bytes + NUL), then one byte short. */
    char small[4] = "zzz";
    CHECK(schema_bare_jid("a@b/res", small, 4));
    CHECK_EQ_STR(small, "a@b");
    char tiny[3] = {'q', 'q', 'q'};
    CHECK(!schema_bare_jid("a@b/res", tiny, 3));
    CHECK(!schema_bare_jid("a@b", tiny, 0));
}

int main(void)
{
    RUN(schema_ids);
    RUN(schema_jids_valid);
    RUN(schema_jids_invalid);
    RUN(schema_jid_length);
    RUN(schema_text);
    RUN(schema_check_valid);
    RUN(schema_check_missing);
    RUN(schema_check_mistyped);
    RUN(schema_check_overlong);
    RUN(schema_check_ids);
    RUN(schema_bare_jid_helper);
    return unit_done();
}
