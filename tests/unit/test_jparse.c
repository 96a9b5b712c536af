/* test_jparse.c - common/jparse.c against jansson's own parser: for every
 * input, jparse gives what json_loadb(JSON_REJECT_DUPLICATES) gives (equal
 * values, or a refusal from both), except the one difference jparse.h
 * documents (NUL bytes between tokens, which jansson skips and jparse
 * refuses). The inputs: frames and envelopes as
 * the services see them, hand-picked faults, and many thousand mutations
 * of both. */
#include "unit.h"
#include "jparse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err[256];

/* jansson's verdict on the len bytes at s. */
static json_t *jansson(const char *s, size_t len)
{
    json_error_t jerr;
    return json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
}

/* Both parsers agree on s; says which way when they do not. */
static bool agree(const char *s, size_t len)
{
    json_t *want = jansson(s, len);
    err[0] = '\0';
    json_t *got = jparse(s, len, err, sizeof(err));
    bool same = (!want && !got) || (want && got && json_equal(want, got));
    if (!same) {
        printf("    jansson %s, jparse %s (%s) on [", want ? "accepts" : "refuses",
               got ? "accepts" : "refuses", err);
        for (size_t i = 0; i < len && i < 200; i++)
            printf(s[i] >= 0x20 && s[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)s[i]);
        printf("]\n");
    }
    if (!got && !err[0]) {
        printf("    jparse refused without a reason: [%.*s]\n", (int)len, s);
        same = false;
    }
    json_decref(want);
    json_decref(got);
    return same;
}

static bool agree_str(const char *s)
{
    return agree(s, strlen(s));
}

/* What the services parse, one of each kind. */
static const char *const samples[] = {
    "[{\"seq\":197,\"epoch\":\"94dd0c6b46bd\",\"v\":1,\"type\":\"chat\",\"ts\":1796553060440,"
    "\"from\":\"b2@localhost/phone\",\"to\":\"a2@localhost\",\"body\":\"182807334:abcdef\","
    "\"id\":\"e2-197\"},{\"seq\":198,\"epoch\":\"94dd0c6b46bd\",\"v\":1,\"type\":\"chat\","
    "\"ts\":1796553060440,\"from\":\"b2@localhost/phone\",\"to\":\"a2@localhost\","
    "\"body\":\"caf\\u00e9 \\u20ac \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\",\"id\":\"e2-198\"}]",
    /* (a surrogate pair escaped: the text goes to jansson's parser) */
    "{\"t\":\"msg\",\"body\":\"\\ud83d\\ude00\",\"to\":\"a@b\"}",
    "{\"v\":1,\"type\":\"ack\",\"to\":\"b2@localhost\",\"ids\":[\"e2-197\",\"e2-198\"],"
    "\"edge\":\"ed98dc2961d5d\",\"dev\":\"c3\",\"ts\":1796553060441}",
    "{\"t\":\"msg\",\"id\":\"m1\",\"to\":\"bob@localhost\",\"body\":\"h\xc3\xa9llo \xe2\x82\xac "
    "\xf0\x9f\x98\x80\",\"group\":false,\"x\":null,\"r\":-1.5e-3,\"big\":-9223372036854775808}",
    "{\"t\":\"req\",\"op\":\"roster\",\"items\":[{\"jid\":\"a@b\",\"groups\":[\"x\",\"y\"]},{}],"
    "\"n\":[0,1,-0,1e2,1E+2,2.5,0.0]}",
    " \t\r\n[ ] ",
    "{}",
    "[[[[[]]]]]",
};

TEST(jparse_gives_what_jansson_gives_on_frames_and_envelopes)
{
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        CHECK(agree_str(samples[i]));
}

TEST(jparse_refuses_what_jansson_refuses)
{
    static const char *const bad[] = {
        "", " ", "1", "\"s\"", "null", "true", "{", "[", "]", "[1,]", "[,1]", "{\"a\"}",
        "{\"a\":}", "{\"a\" 1}", "{a:1}", "{'a':1}", "[01]", "[1.]", "[.5]", "[-]",
        "[+1]", "[NaN]", "[Infinity]", "[1e]", "[0x10]", "[tru]", "[nul]",
        "{\"a\":1,\"a\":2}",               /* a key twice */
        "{\"a\":{\"b\":1,\"b\":1}}",        /* ... nested */
        "{\"a\":1,\"\\u0061\":2}",         /* ... once escaped */
        "{\"a\":1} x", "[1] [2]", "[1]]", "{}{}", /* more after the value */
        "[1]\"", "{} \"ab", "[1] 2",    /* ... an unfinished token (yajl passes it) */
        "[\"\\u0000\"]", "{\"a\\u0000b\":1}",     /* U+0000 */
        "[\"\xff\"]", "[\"\xc0\x80\"]", "[\"\xc3\"]",  /* not UTF-8, overlong, cut */
        "[\"\xed\xa0\x80\"]",              /* a surrogate in UTF-8 */
        "[\"\xf4\x90\x80\x80\"]",          /* above U+10FFFF */
        "{\"\xff\":1}",                    /* a key that is not UTF-8 */
        "[\"a\x01\"]", "[\"a\nb\"]",       /* raw control characters */
        "[\"\\x41\"]", "[\"\\u12\"]", "[\"\\u12g4\"]", "[\"\\\"]", /* bad escapes */
        "[\"\\udc00\"]",                   /* a lone low surrogate */
        "[99999999999999999999]", "[-9223372036854775809]", "[1e999]", "[-1e999]",
        "/* c */[1]", "[1] // c",
        "\xef\xbb\xbf[1]",                 /* a byte order mark */
        "[1\v]", "\f[1]", "{\"a\":\v1}",     /* whitespace to yajl, not to JSON */
        "[\"a\vb\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        json_t *v = jparse(bad[i], strlen(bad[i]), err, sizeof(err));
        if (!CHECK(v == NULL))
            printf("    accepted [%s]\n", bad[i]);
        json_decref(v);
        CHECK(agree_str(bad[i]));
    }
    /* A NUL byte inside a string: both refuse. Between tokens jansson skips
     * it ("[1]\0" and "[1\0]" are [1] to it); jparse refuses. */
    CHECK(agree("[\"a\0b\"]", 7));
    CHECK(jparse("[1]\0", 4, err, sizeof(err)) == NULL);
    CHECK(jparse("[1\0]", 4, err, sizeof(err)) == NULL);
    CHECK(jparse("[\"\\ud83d\\ude00\"]\0", 17, err, sizeof(err)) == NULL);
}

TEST(jparse_reasons_are_short_ascii_and_name_the_key)
{
    CHECK(jparse("{\"to\":1,\"to\":2}", 15, err, sizeof(err)) == NULL);
    CHECK_EQ_STR(err, "duplicate key 'to'");
    CHECK(jparse("[1,x]", 5, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "lexical error") && strstr(err, "at byte"));
    CHECK(jparse("\"s\"", 3, err, sizeof(err)) == NULL);
    CHECK_EQ_STR(err, "'[' or '{' expected");
    /* From jansson's parser too (a text with a surrogate escape goes there):
     * it quotes the text near the fault, without '"' or '\\' here. */
    const char *near = "[\"\\ud83d\\ude00\" \"b\\\\\"]";
    CHECK(jparse(near, strlen(near), err, sizeof(err)) == NULL);
    CHECK(strchr(err, '"') == NULL && strchr(err, '\\') == NULL);
    /* A key that cannot be quoted safely is not. */
    const char *twice = "{\"\xc3\xa9\":1,\"\xc3\xa9\":2}";
    CHECK(jparse(twice, strlen(twice), err, sizeof(err)) == NULL);
    CHECK_EQ_STR(err, "duplicate key");
    for (const char *p = err; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}

TEST(jparse_depth_is_bounded)
{
    char deep[2 * (JPARSE_MAX_DEPTH + 1) + 1];
    for (int n = JPARSE_MAX_DEPTH; n <= JPARSE_MAX_DEPTH + 1; n++) {
        memset(deep, '[', (size_t)n);
        memset(deep + n, ']', (size_t)n);
        json_t *v = jparse(deep, 2 * (size_t)n, err, sizeof(err));
        CHECK((v != NULL) == (n <= JPARSE_MAX_DEPTH));
        if (!v)
            CHECK_EQ_STR(err, "nested too deep");
        json_decref(v);
    }
    /* Objects count as arrays do. */
    char obj[16 * (JPARSE_MAX_DEPTH + 2)];
    size_t o = 0;
    for (int i = 0; i <= JPARSE_MAX_DEPTH; i++)
        o += (size_t)sprintf(obj + o, "{\"k\":");
    o += (size_t)sprintf(obj + o, "1");
    for (int i = 0; i <= JPARSE_MAX_DEPTH; i++)
        obj[o++] = '}';
    CHECK(jparse(obj, o, err, sizeof(err)) == NULL);
    CHECK_EQ_STR(err, "nested too deep");
}

/* Keys yajl had to unescape live in its decode buffer, which the next
 * escaped string overwrites: each must keep its own text. */
TEST(jparse_escaped_keys_keep_their_text)
{
    char big[600];
    size_t n = (size_t)sprintf(big, "{\"\\u0061%0300d\":\"\\u0062\",\"\\u0063\":\"\\u0064\"}", 0);
    CHECK(agree(big, n));
    json_t *v = jparse(big, n, err, sizeof(err));
    CHECK(v && json_object_size(v) == 2);
    CHECK_EQ_STR(json_string_value(json_object_get(v, "c")), "d");
    json_decref(v);
}

/* Surrogate escapes, which yajl decodes loosely, are judged as jansson
 * judges them: a pair is one character, a lone one is refused. */
TEST(jparse_surrogate_escapes_as_jansson_judges_them)
{
    static const char *const inputs[] = {
        "[\"a\\ud83d\\ude00b\"]", "[\"\\uD83D\\uDE00\"]", "[\"a\\ud800b\"]",
        "[\"\\ud800\\u0041\"]", "[\"\\ud800\"]", "[\"\\udc00\\ud800\"]",
        "{\"\\ud83d\\ude00\":1,\"\\ud83d\\ude00\":2}", "[\"\\\\ud800\"]",
    };
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
        CHECK(agree_str(inputs[i]));
    const char *s = "[\"\\ud83d\\ude00\"]";
    json_t *v = jparse(s, strlen(s), err, sizeof(err));
    if (CHECK(v))
        CHECK_EQ_STR(json_string_value(json_array_get(v, 0)), "\xf0\x9f\x98\x80");
    json_decref(v);
    /* The depth limit holds there too. */
    char deep[4 * JPARSE_MAX_DEPTH];
    size_t n = 0;
    for (int i = 0; i <= JPARSE_MAX_DEPTH; i++)
        deep[n++] = '[';
    n += (size_t)sprintf(deep + n, "\"\\ud83d\\ude00\"");
    for (int i = 0; i <= JPARSE_MAX_DEPTH; i++)
        deep[n++] = ']';
    CHECK(jparse(deep, n, err, sizeof(err)) == NULL);
    CHECK_EQ_STR(err, "nested too deep");
}

/* The largest block yajl asked for, through jparse_set_alloc. */
static size_t largest;
static void *big_malloc(size_t n)
{
    largest = n > largest ? n : largest;
    return malloc(n);
}
static void *big_realloc(void *p, size_t n)
{
    largest = n > largest ? n : largest;
    return realloc(p, n);
}

/* yajl sets up a 2 KiB buffer when its text ends where a token might go
 * on: jparse keeps it from happening on every parse (the pool keeps no
 * block that large, so it was a malloc per frame). */
TEST(jparse_asks_for_no_large_buffer)
{
    jparse_set_alloc(big_malloc, big_realloc, free);
    static const char *const texts[] = {"[{\"a\":1,\"b\":\"x\"},2]", "{\"t\":\"hb\"}\r\n ",
                                        " [true] "};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        largest = 0;
        json_t *v = jparse(texts[i], strlen(texts[i]), err, sizeof(err));
        CHECK(v != NULL);
        json_decref(v);
        if (!CHECK(largest < 1024))
            printf("    %zu bytes for [%s]\n", largest, texts[i]);
    }
    jparse_set_alloc(malloc, realloc, free);
}

/* A small PRNG: the same mutations every run. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

TEST(jparse_agrees_with_jansson_on_mutated_inputs)
{
    static const char alphabet[] = "{}[]\":,\\u0123456789abcdefABCDEF.eE+- \t\nnulltrue\x00\x01\x7f"
                                   "\x80\xbf\xc3\xe2\xed\xf0\xf4\xff";
    char buf[1024];
    int runs = 0, accepted = 0, differ = 0, nul_refused = 0, with_nul = 0;
    for (size_t s = 0; s < sizeof(samples) / sizeof(samples[0]); s++) {
        size_t base = strlen(samples[s]);
        for (int k = 0; k < 4000; k++) {
            size_t len = base;
            memcpy(buf, samples[s], len);
            int edits = 1 + (int)(next() % 3);
            for (int e = 0; e < edits && len > 0; e++) {
                size_t at = next() % len;
                char c = alphabet[next() % (sizeof(alphabet) - 1)];
                switch (next() % 3) {
                case 0: /* replace */
                    buf[at] = c;
                    break;
                case 1: /* insert */
                    if (len < sizeof(buf)) {
                        memmove(buf + at + 1, buf + at, len - at);
                        buf[at] = c;
                        len++;
                    }
                    break;
                default: /* delete */
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
            }
            runs++;
            if (memchr(buf, '\0', len)) {
                with_nul++;
                /* jansson may skip it; jparse always refuses. */
                json_t *v = jparse(buf, len, err, sizeof(err));
                nul_refused += v == NULL;
                json_decref(v);
                continue;
            }
            json_t *v = jparse(buf, len, err, sizeof(err));
            accepted += v != NULL;
            json_decref(v);
            if (!agree(buf, len) && ++differ > 5)
                break;
        }
    }
    printf("    %d mutated inputs: %d accepted by both, %d disagreements; %d of the %d "
           "with a NUL byte refused\n",
           runs, accepted, differ, nul_refused, with_nul);
    CHECK(differ == 0);
    CHECK(nul_refused == with_nul && with_nul > 0);
    /* The mutations reach both verdicts, or the test shows nothing. */
    CHECK(accepted > runs / 20 && accepted < runs);
}

int main(void)
{
    RUN(jparse_gives_what_jansson_gives_on_frames_and_envelopes);
    RUN(jparse_refuses_what_jansson_refuses);
    RUN(jparse_reasons_are_short_ascii_and_name_the_key);
    RUN(jparse_depth_is_bounded);
    RUN(jparse_escaped_keys_keep_their_text);
    RUN(jparse_surrogate_escapes_as_jansson_judges_them);
    RUN(jparse_asks_for_no_large_buffer);
    RUN(jparse_agrees_with_jansson_on_mutated_inputs);
    return unit_done();
}
