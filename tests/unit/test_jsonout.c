/* test_jsonout.c - common/jsonout.h writes what jansson's
 * json_dumpb(JSON_COMPACT) writes, byte for byte. */
#include "jsonout.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

/* v through jsonout and through jansson; whether both wrote the same. */
static bool same_as_jansson(const json_t *v)
{
    char want[4096], got[4096];
    size_t wn = json_dumpb(v, want, sizeof(want), JSON_COMPACT | JSON_ENCODE_ANY);
    struct jsonout o = {got, 0, sizeof(got)};
    jsonout_json(&o, v);
    if (wn == 0 || wn > sizeof(want) || o.n != wn || memcmp(got, want, wn) != 0) {
        fprintf(stderr, "  jansson: %.*s\n  jsonout: %.*s\n", (int)wn, want,
                (int)(o.n < sizeof(got) ? o.n : sizeof(got)), got);
        return false;
    }
    return true;
}

TEST(jsonout_every_byte_in_a_string)
{
    /* Every byte that is a character by itself (0x01..0x7f), alone and
     * between others; the non-ASCII ones as UTF-8 of several lengths. */
    int bad = 0;
    for (int c = 1; c < 0x80; c++) {
        char s[8] = {'a', (char)c, 'b', '\0'};
        json_t *v = json_string(s);
        bad += !same_as_jansson(v);
        json_decref(v);
    }
    CHECK_EQ_INT(bad, 0);
    const char *texts[] = {"", "plain", "caf\xC3\xA9", "\xE2\x80\xA8 line sep",
                           "\xF0\x9F\x91\x8B wave", "tab\there", "quote\"s",
                           "back\\slash", "slash/ok", "\x7f del",
                           "\xEF\xBC\xA1\xEF\xBD\x82\xEF\xBD\x83 fullwidth"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *v = json_string(texts[i]);
        CHECK(v && same_as_jansson(v));
        json_decref(v);
    }
}

TEST(jsonout_integers_and_literals)
{
    const json_int_t ints[] = {0, 1, -1, 9, 10, -10, 123456789, 1796533494123LL,
                               INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_t *v = json_integer(ints[i]);
        CHECK(same_as_jansson(v));
        json_decref(v);
    }
    json_t *lits[] = {json_true(), json_false(), json_null(), json_real(0.1),
                      json_real(-2.5e300), json_real(3.0)};
    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        CHECK(same_as_jansson(lits[i]));
        json_decref(lits[i]);
    }
}

TEST(jsonout_nested_values_and_keys)
{
    const char *texts[] = {
        "{}", "[]", "[[],{}]",
        ("{\"v\":1,\"type\":\"chat\",\"from\":\"bob@localhost/desk\",\"to\":\"a@b\","
         "\"body\":\"hi \\u00e9\\n\",\"seq\":42,\"rr\":true,\"x\":null,\"r\":1.5}"),
        "{\"z\":1,\"a\":2,\"m\":{\"k\":[1,\"two\",{\"three\":[false]}]}}",
        /* keys jsonout leaves to jansson: escapes and non-ASCII */
        "{\"plain\":1,\"qu\\\"ote\":2}", "{\"caf\\u00e9\":[\"\\u0001\"]}",
        "{\"outer\":{\"t\\tab\":0},\"after\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        if (!CHECK(v != NULL))
            continue;
        CHECK(same_as_jansson(v));
        json_decref(v);
    }
    /* Insertion order, not sorted: a key set last is written last. */
    json_t *o = json_object();
    json_object_set_new(o, "zeta", json_integer(1));
    json_object_set_new(o, "alpha", json_integer(2));
    json_object_set_new(o, "zeta", json_integer(3));
    CHECK(same_as_jansson(o));
    json_decref(o);
}

TEST(jsonout_counts_past_cap_and_writes_nothing_there)
{
    json_t *v = json_loads("{\"body\":\"0123456789\",\"n\":12345,\"q\":\"a\\\"b\"}", 0, NULL);
    char want[128];
    size_t wn = json_dumpb(v, want, sizeof(want), JSON_COMPACT);
    for (size_t cap = 0; cap <= wn; cap++) {
        char buf[128];
        memset(buf, '#', sizeof(buf));
        struct jsonout o = {buf, 0, cap};
        jsonout_json(&o, v);
        CHECK_EQ_INT(o.n, wn);
        bool untouched = true;
        for (size_t i = cap; i < sizeof(buf); i++)
            untouched &= buf[i] == '#';
        CHECK(untouched);
    }
    json_decref(v);
}

int main(void)
{
    RUN(jsonout_every_byte_in_a_string);
    RUN(jsonout_integers_and_literals);
    RUN(jsonout_nested_values_and_keys);
    RUN(jsonout_counts_past_cap_and_writes_nothing_there);
    return unit_done();
}
