/* test_phone.c - edge/phone: the phone protocol v1 codec. */
#include "envelope.h"
#include "frame.h"
#include "../../edge/phone.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX 4096

static char err[256];

static int decode(const char *json, json_t **out)
{
    err[0] = '\0';
    return phone_decode(json, strlen(json), BODY_MAX, out, NULL, err, sizeof(err));
}

/* json must be refused: -1, *out NULL, a reason naming want (if given). */
static void expect_bad(const char *json, const char *want, const char *file,
                       int line)
{
    json_t *out = (json_t *)1;
    int t = decode(json, &out);
    if (!unit_check(t == -1, file, line, "phone_decode refuses")) {
        printf("    accepted as %d: %s\n", t, json);
    }
    unit_check(out == NULL, file, line, "*out is NULL");
    if (t != -1)
        json_decref(out);
    if (!unit_check(err[0] != '\0', file, line, "err says why"))
        return;
    if (want && !unit_check(strstr(err, want) != NULL, file, line,
                            "err names the field"))
        printf("    err: %s (want '%s')\n", err, want);
}
#define BAD(json, want) expect_bad(json, want, __FILE__, __LINE__)

TEST(phone_decode_login)
{
    json_t *o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\","
                        "\"pass\":\"secret\"}", &o),
                 PHONE_LOGIN);
    CHECK(o != NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "jid")), "alice@localhost");
    CHECK_EQ_STR(json_string_value(json_object_get(o, "pass")), "secret");
    json_decref(o);
    /* With a device label, and a password with spaces and non-ASCII. */
    CHECK_EQ_INT(decode("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\","
                        "\"pass\":\"s p\\u00e4ss\",\"dev\":\"pixel-7.a_b\"}", &o),
                 PHONE_LOGIN);
    json_decref(o);
    /* With a device token (base64: '+', '/', '='). */
    CHECK_EQ_INT(decode("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\","
                        "\"pass\":\"s\",\"token\":\"q0P1+/nw==\"}", &o),
                 PHONE_LOGIN);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "token")), "q0P1+/nw==");
    json_decref(o);
}

TEST(phone_decode_msg_hb_logout)
{
    json_t *o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"msg\",\"id\":\"c1\",\"to\":\"bob@localhost\","
                        "\"body\":\"hello\\nworld\"}", &o),
                 PHONE_MSG);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "body")), "hello\nworld");
    json_decref(o);
    CHECK_EQ_INT(decode("{\"t\":\"msg\",\"id\":\"c1\",\"to\":\"bob@localhost/desk\","
                        "\"body\":\"x\"}", &o),
                 PHONE_MSG);
    json_decref(o);
    CHECK_EQ_INT(decode("{\"t\":\"hb\"}", &o), PHONE_HB);
    CHECK(o != NULL);
    json_decref(o);
    CHECK_EQ_INT(decode("{\"t\":\"logout\"}", &o), PHONE_LOGOUT);
    json_decref(o);
    /* Unknown members are ignored. */
    CHECK_EQ_INT(decode("{\"t\":\"hb\",\"future\":[1,2,3]}", &o), PHONE_HB);
    json_decref(o);
    /* Only len bytes are read. */
    const char *buf = "{\"t\":\"hb\"}{\"t\":";
    CHECK_EQ_INT(phone_decode(buf, 10, BODY_MAX, &o, NULL, err, sizeof(err)), PHONE_HB);
    json_decref(o);
}

TEST(phone_decode_requests)
{
    json_t *o = NULL;
    /* Requests for the bridge are checked against the catalogue here. */
    CHECK_EQ_INT(decode("{\"t\":\"typing\",\"to\":\"bob@localhost\",\"state\":\"composing\"}", &o),
                 PHONE_REQ);
    json_decref(o);
    o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"typing\",\"to\":\"bob@localhost\",\"state\":\"dancing\"}", &o),
                 -1);
    CHECK(o == NULL);
    CHECK_EQ_INT(decode("{\"t\":\"presence\",\"show\":\"away\",\"status\":\"lunch\"}", &o),
                 PHONE_REQ);
    json_decref(o);
    o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"join\",\"id\":\"j1\",\"room\":\"r@conference.localhost\"}", &o),
                 -1); /* nick is required */
    CHECK_EQ_INT(decode("{\"t\":\"history\",\"id\":\"h1\",\"max\":101}", &o), -1);
    CHECK_EQ_INT(decode("{\"t\":\"history\",\"id\":\"h1\",\"max\":100}", &o), PHONE_REQ);
    json_decref(o);
    o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"msg\",\"id\":\"c1\",\"to\":\"r@c\",\"body\":\"x\",\"group\":1}", &o), -1);
}

TEST(phone_decode_unknown_type)
{
    json_t *o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"dance\",\"to\":\"bob@localhost\"}", &o),
                 PHONE_UNKNOWN);
    CHECK(o != NULL); /* the caller still gets the object (to answer it) */
    json_decref(o);
    o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"\"}", &o), PHONE_UNKNOWN);
    json_decref(o);
    o = NULL;
    CHECK_EQ_INT(decode("{\"t\":\"LOGIN\"}", &o), PHONE_UNKNOWN);
    json_decref(o);
}

TEST(phone_decode_bad_frames)
{
    BAD("", NULL);
    BAD("{", NULL);
    BAD("{\"t\":\"hb\"", NULL);
    BAD("{\"t\":\"hb\"} x", NULL);
    BAD("{\"t\":\"hb\"}{\"t\":\"hb\"}", NULL);
    BAD("[]", NULL);
    BAD("[{\"t\":\"hb\"}]", NULL);
    BAD("\"hb\"", NULL);
    BAD("42", NULL);
    BAD("null", NULL);
    BAD("{}", "'t'");
    BAD("{\"type\":\"hb\"}", "'t'");
    BAD("{\"t\":1}", "'t'");
    BAD("{\"t\":null}", "'t'");
    BAD("{\"t\":[\"hb\"]}", "'t'");
    BAD("{\"t\":\"hb\",\"t\":\"logout\"}", NULL); /* duplicate keys */
    BAD("{\"t\":\"h\xff\"}", NULL);                 /* invalid UTF-8 */
}

#define MSG "{\"t\":\"msg\","

TEST(phone_decode_bad_msg)
{
    BAD(MSG "\"to\":\"bob@localhost\",\"body\":\"x\"}", "'id'");
    BAD(MSG "\"id\":\"c1\",\"body\":\"x\"}", "'to'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\"}", "'body'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"\"}", "'body'");
    BAD(MSG "\"id\":\"c 1\",\"to\":\"bob@localhost\",\"body\":\"x\"}", "'id'");
    BAD(MSG "\"id\":1,\"to\":\"bob@localhost\",\"body\":\"x\"}", "'id'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@\",\"body\":\"x\"}", "'to'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"@localhost\",\"body\":\"x\"}", "'to'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"b ob@localhost\",\"body\":\"x\"}", "'to'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"a\\u0000b\"}", NULL);
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"\\u0002\"}", "'body'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"\\ufffe\"}", "'body'");
    BAD(MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":7}", "'body'");
    /* Ids are at most PHONE_MAX_ID (64) characters. */
    char json[256];
    snprintf(json, sizeof(json),
             MSG "\"id\":\"%065d\",\"to\":\"bob@localhost\",\"body\":\"x\"}", 0);
    BAD(json, "'id'");
    json_t *o = NULL;
    snprintf(json, sizeof(json),
             MSG "\"id\":\"%064d\",\"to\":\"bob@localhost\",\"body\":\"x\"}", 0);
    CHECK_EQ_INT(decode(json, &o), PHONE_MSG);
    json_decref(o);
}

TEST(phone_decode_bad_login)
{
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost/phone\","
        "\"pass\":\"secret\"}", "'jid'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost/\","
        "\"pass\":\"secret\"}", "'jid'");
    BAD("{\"t\":\"login\",\"v\":1,\"pass\":\"secret\"}", "'jid'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\"}", "'pass'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\",\"pass\":\"\"}",
        "'pass'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\",\"pass\":5}",
        "'pass'");
    BAD("{\"t\":\"login\",\"jid\":\"alice@localhost\",\"pass\":\"s\"}", "'v'");
    BAD("{\"t\":\"login\",\"v\":\"1\",\"jid\":\"alice@localhost\",\"pass\":\"s\"}",
        "'v'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\",\"pass\":\"s\","
        "\"dev\":\"my phone\"}", "'dev'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\",\"pass\":\"s\","
        "\"dev\":\"\"}", "'dev'");
    BAD("{\"t\":\"login\",\"v\":1,\"jid\":\"alice@localhost\",\"pass\":\"s\","
        "\"token\":5}", "'token'");
    /* A password over PHONE_MAX_PASS bytes. */
    char *json = malloc(PHONE_MAX_PASS + 200);
    int n = sprintf(json, "{\"t\":\"login\",\"v\":1,\"jid\":\"a@b\",\"pass\":\"");
    memset(json + n, 'p', PHONE_MAX_PASS + 1);
    strcpy(json + n + PHONE_MAX_PASS + 1, "\"}");
    BAD(json, "'pass'");
    json_t *o = NULL;
    strcpy(json + n + PHONE_MAX_PASS, "\"}"); /* exactly the maximum */
    CHECK_EQ_INT(decode(json, &o), PHONE_LOGIN);
    json_decref(o);
    free(json);
}

TEST(phone_decode_body_limit)
{
    char json[256];
    json_t *o = NULL;
    const char *head = MSG "\"id\":\"c1\",\"to\":\"bob@localhost\",\"body\":\"";
    /* body_max 10: 10 bytes pass, 11 do not. */
    snprintf(json, sizeof(json), "%s0123456789\"}", head);
    CHECK_EQ_INT(phone_decode(json, strlen(json), 10, &o, NULL, err, sizeof(err)),
                 PHONE_MSG);
    json_decref(o);
    o = (json_t *)1;
    snprintf(json, sizeof(json), "%s0123456789a\"}", head);
    CHECK_EQ_INT(phone_decode(json, strlen(json), 10, &o, NULL, err, sizeof(err)), -1);
    CHECK(o == NULL);
    CHECK(strstr(err, "'body'") != NULL);
    /* The limit counts bytes: 6 x U+00E9 is 12 bytes. */
    snprintf(json, sizeof(json),
             "%s\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}", head);
    CHECK_EQ_INT(phone_decode(json, strlen(json), 10, &o, NULL, err, sizeof(err)), -1);
    /* Bodies above the envelope's own maximum are refused whatever body_max. */
    size_t big = 64 * 1024 + 1;
    char *s = malloc(strlen(head) + big + 3);
    strcpy(s, head);
    memset(s + strlen(head), 'x', big);
    strcpy(s + strlen(head) + big, "\"}");
    CHECK_EQ_INT(phone_decode(s, strlen(s), 1 << 20, &o, NULL, err, sizeof(err)), -1);
    free(s);
}

TEST(phone_encode_frame)
{
    json_t *o = json_pack("{s:s}", "t", "hb");
    size_t len = 0;
    char *buf = phone_encode(o, &len);
    char *json = json_dumps(o, JSON_COMPACT);
    CHECK_EQ_STR(json, "{\"t\":\"hb\"}");
    CHECK_EQ_INT(len, FRAME_HEADER + strlen(json));
    const uint8_t *h = (const uint8_t *)buf;
    CHECK(h[0] == 0 && h[1] == 0 && h[2] == 0 && h[3] == strlen(json));
    CHECK(memcmp(buf + FRAME_HEADER, json, strlen(json)) == 0);
    free(json);
    free(buf);
    json_decref(o);

    /* A body above 255 bytes uses more than the last header byte, and the
     * frame parses back to the same object. */
    char body[1000];
    memset(body, 'z', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    o = json_pack("{s:s, s:s, s:s}", "t", "msg", "from", "bob@localhost",
                  "body", body);
    buf = phone_encode(o, &len);
    json = json_dumps(o, JSON_COMPACT);
    size_t n = strlen(json);
    CHECK_EQ_INT(len, FRAME_HEADER + n);
    h = (const uint8_t *)buf;
    CHECK_EQ_INT(((size_t)h[0] << 24) | ((size_t)h[1] << 16) |
                 ((size_t)h[2] << 8) | h[3], n);
    const uint8_t *fb;
    size_t fl;
    CHECK_EQ_INT(frame_parse(h, len, FRAME_MAX_LIMIT, &fb, &fl), FRAME_OK);
    CHECK_EQ_INT(fl, n);
    json_t *back = json_loadb((const char *)fb, fl, 0, NULL);
    CHECK(back && json_equal(back, o));
    json_decref(back);
    free(json);
    free(buf);
    json_decref(o);
}

TEST(phone_error_and_bye)
{
    json_t *e = phone_error(PERR_AUTH_FAILED, "wrong password", NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(e, "t")), "error");
    CHECK_EQ_STR(json_string_value(json_object_get(e, "code")), "auth_failed");
    CHECK_EQ_STR(json_string_value(json_object_get(e, "msg")), "wrong password");
    CHECK(json_object_get(e, "id") == NULL);
    CHECK_EQ_INT(json_object_size(e), 3);
    json_decref(e);

    e = phone_error(PERR_BAD_FRAME, "field 'to': bad", "c1");
    CHECK_EQ_STR(json_string_value(json_object_get(e, "id")), "c1");
    CHECK_EQ_INT(json_object_size(e), 4);
    json_decref(e);

    e = phone_error(PERR_INTERNAL, NULL, NULL);
    CHECK_EQ_INT(json_object_size(e), 2);
    CHECK(json_object_get(e, "msg") == NULL);
    json_decref(e);

    json_t *b = phone_bye("idle_timeout");
    char *s = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK_EQ_STR(s, "{\"reason\":\"idle_timeout\",\"t\":\"bye\"}");
    free(s);
    json_decref(b);

    /* What the edge sends decodes as a well-formed (unknown to us) frame. */
    e = phone_error(PERR_TOO_BIG, "frame above 16384 bytes", NULL);
    size_t len;
    char *frame = phone_encode(e, &len);
    json_t *o = NULL;
    CHECK_EQ_INT(phone_decode(frame + FRAME_HEADER, len - FRAME_HEADER, BODY_MAX,
                              &o, NULL, err, sizeof(err)),
                 PHONE_UNKNOWN);
    json_decref(o);
    free(frame);
    json_decref(e);
}

/* Found by fuzzing (tests/fuzz/regress/frame/bad-json-error-msg-not-utf8):
 * jansson's error text quotes the input up to the failing byte, cutting a
 * UTF-8 sequence in two ("invalid escape near '"\<0xC3>'"). The edge answers
 * a bad frame with phone_error(PERR_BAD_FRAME, err, NULL), and json_string()
 * refuses invalid UTF-8, so that error frame went out without "msg", which
 * PROTOCOL.md says an error frame always has. */
TEST(phone_bad_frame_error_text_is_utf8)
{
    const char *body = "{\"t\":\"\\\xc3\xa9\"}"; /* {"t":"\é"} */
    json_t *out = (json_t *)1;
    err[0] = '\0';
    CHECK_EQ_INT(phone_decode(body, strlen(body), BODY_MAX, &out, NULL, err,
                              sizeof(err)),
                 -1);
    CHECK(out == NULL);
    json_t *e = phone_error(PERR_BAD_FRAME, err, NULL);
    if (!CHECK(json_is_string(json_object_get(e, "msg"))))
        printf("    error text is not UTF-8: %s\n", err);
    json_decref(e);
}

/* The encoded body length of obj. */
static size_t enc_len(const json_t *obj)
{
    return json_dumpb(obj, NULL, 0, JSON_COMPACT);
}

/* A msg longer than max is cut to fit, at a character boundary, with
 * "truncated": every other field kept; escapes count as jansson writes them. */
TEST(phone_encode_to_buffer)
{
    /* In room enough: the same frame phone_encode makes. In too little:
     * the body's length, to ask again with room enough (1 KiB body here:
     * longer than phone_encode's stack buffer too). */
    char body[1100];
    memset(body, 'q', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    json_t *o = json_pack("{s:s, s:s}", "t", "msg", "body", body);
    size_t len;
    char *want = phone_encode(o, &len);
    char small[64];
    size_t n = phone_encode_to(o, small, sizeof(small));
    CHECK_EQ_INT(FRAME_HEADER + n, len);
    char *buf = malloc(len);
    CHECK_EQ_INT(phone_encode_to(o, buf, len), n);
    CHECK(memcmp(buf, want, len) == 0);
    /* Too little room by one byte: refused, nothing claimed written. */
    CHECK_EQ_INT(phone_encode_to(o, buf, len - 1), n);
    free(buf);
    free(want);
    json_decref(o);
}

TEST(phone_fit_body)
{
    /* "é" is 2 bytes, "\n" escapes to 2, "\x01" to 6: mixed on purpose. */
    char body[3000];
    size_t n = 0;
    while (n + 8 < sizeof(body)) {
        memcpy(body + n, "a\xc3\xa9\n\"\x01z", 7);
        n += 7;
    }
    body[n] = '\0';
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:s, s:I}", "t", "msg", "seq",
                          (json_int_t)42, "from", "bob@localhost/desk", "body", body,
                          "id", "m1", "ts", (json_int_t)1732460000000);
    CHECK(enc_len(o) > 1000);
    for (size_t max = 200; max <= 1000; max += 37) {
        json_t *out = phone_fit(o, max);
        if (!CHECK(out && json_array_size(out) == 1))
            break;
        json_t *f = json_array_get(out, 0);
        size_t len = enc_len(f);
        CHECK(len <= max);
        CHECK(len + 7 > max); /* no more than one character short of max */
        CHECK(json_is_true(json_object_get(f, "truncated")));
        CHECK_EQ_INT(json_integer_value(json_object_get(f, "seq")), 42);
        CHECK_EQ_STR(json_string_value(json_object_get(f, "id")), "m1");
        const char *cut = json_string_value(json_object_get(f, "body"));
        CHECK(cut && strncmp(cut, body, strlen(cut)) == 0);
        json_decref(out);
    }
    /* Too small for the rest of the frame: no way to fit. */
    CHECK(phone_fit(o, 40) == NULL);
    json_decref(o);
    /* A frame with neither a body nor items cannot be fitted. */
    json_t *p = json_pack("{s:s, s:s}", "t", "presence", "status", body);
    CHECK(phone_fit(p, 100) == NULL);
    json_decref(p);
}

/* A roster longer than max is split over frames with "more", in order. */
TEST(phone_fit_items)
{
    json_t *items = json_array();
    for (int i = 0; i < 300; i++) {
        char jid[64];
        snprintf(jid, sizeof(jid), "contact%03d@localhost", i);
        json_array_append_new(items, json_pack("{s:s, s:s, s:s}", "jid", jid,
                                               "sub", "both", "name", jid));
    }
    json_t *o = json_pack("{s:s, s:s, s:o}", "t", "roster", "id", "r1", "items", items);
    size_t max = 2048;
    CHECK(enc_len(o) > 4 * max);
    json_t *out = phone_fit(o, max);
    if (!CHECK(out && json_array_size(out) > 4))
        return;
    size_t total = 0, k;
    json_t *f;
    json_array_foreach(out, k, f) {
        CHECK(enc_len(f) <= max);
        CHECK_EQ_STR(json_string_value(json_object_get(f, "id")), "r1");
        bool last = k + 1 == json_array_size(out);
        CHECK(last ? json_object_get(f, "more") == NULL
                   : json_is_true(json_object_get(f, "more")));
        json_t *its = json_object_get(f, "items");
        for (size_t j = 0; j < json_array_size(its); j++)
            CHECK(json_equal(json_array_get(its, j), json_array_get(items, total + j)));
        total += json_array_size(its);
    }
    CHECK_EQ_INT(total, 300);
    json_decref(out);
    /* One item alone above max: cannot be fitted. */
    CHECK(phone_fit(o, 60) == NULL);
    json_decref(o);
}

/* The frames written straight (phone_msg_to, phone_ack_to) are byte for
 * byte what phone_encode_to writes of the frames built as objects, for
 * every optional field and every character jansson escapes; in too little
 * room they say how much they need and write nothing past it. */
TEST(phone_frames_written_straight)
{
    static const char *const envs[] = {
        "{\"v\":1,\"type\":\"chat\",\"from\":\"bob@localhost/desk\",\"to\":\"alice@localhost\","
        "\"body\":\"hi\",\"ts\":1765000000123,\"seq\":7,\"epoch\":\"e1\"}",
        "{\"v\":1,\"type\":\"chat\",\"from\":\"bob@localhost/d\\\"e\\\\sk\",\"to\":\"alice@localhost\","
        "\"body\":\"quote \\\" back\\\\ slash / tab\\t nl\\n é ✓ 😀 </script>\","
        "\"id\":\"m-1.x:y\",\"seq\":123456789012}",
        "{\"v\":1,\"type\":\"chat\",\"from\":\"room@conf.localhost/nick\",\"to\":\"alice@localhost\","
        "\"body\":\"x\",\"room\":\"room@conf.localhost\",\"ts\":0,\"filtered\":\"masked\"}",
        "{\"v\":1,\"type\":\"chat\",\"from\":\"alice@localhost/phone\",\"to\":\"alice@localhost\","
        "\"body\":\"mine\",\"sent\":true,\"with\":\"bob@localhost\",\"id\":\"c9\",\"seq\":2}",
        "{\"v\":1,\"type\":\"chat\",\"from\":\"alice@localhost/phone\",\"to\":\"alice@localhost\","
        "\"body\":\"no with\",\"sent\":true,\"seq\":3}",
        "{\"v\":1,\"type\":\"chat\",\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"no seq, sent false\","
        "\"sent\":false}",
    };
    int64_t now = 1765000009999;
    for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
        struct env *e = env_decode(envs[i], strlen(envs[i]), err, sizeof(err));
        if (!CHECK(e != NULL)) {
            printf("    envelope %zu: %s\n", i, err);
            continue;
        }
        json_t *f = phone_msg_frame(e, now);
        size_t len;
        char *want = phone_encode(f, &len);
        char buf[2048], small[16];
        memset(small, 'x', sizeof(small));
        size_t n = phone_msg_to(e, now, buf, sizeof(buf));
        if (!CHECK(FRAME_HEADER + n == len && memcmp(buf, want, len) == 0))
            printf("    envelope %zu:\n    want %.*s\n    got  %.*s\n", i, (int)(len - 4),
                   want + 4, (int)n, buf + 4);
        /* Too little room: the length, and nothing written. */
        CHECK_EQ_INT(phone_msg_to(e, now, small, sizeof(small)), n);
        CHECK_EQ_INT(phone_msg_to(e, now, buf, len - 1), n);
        free(want);
        json_decref(f);
        env_free(e);
    }
    json_t *id = json_string("c-42.a:b");
    json_t *ack = json_pack("{s:s, s:O}", "t", "ack", "id", id);
    size_t len;
    char *want = phone_encode(ack, &len);
    char buf[128];
    CHECK_EQ_INT(FRAME_HEADER + phone_ack_to(id, buf, sizeof(buf)), len);
    CHECK(memcmp(buf, want, len) == 0);
    CHECK_EQ_INT(phone_ack_to(id, buf, len - 1), len - FRAME_HEADER);
    free(want);
    json_decref(ack);
    json_decref(id);
}

int main(void)
{
    RUN(phone_decode_login);
    RUN(phone_decode_msg_hb_logout);
    RUN(phone_decode_requests);
    RUN(phone_decode_unknown_type);
    RUN(phone_decode_bad_frames);
    RUN(phone_decode_bad_msg);
    RUN(phone_decode_bad_login);
    RUN(phone_decode_body_limit);
    RUN(phone_encode_frame);
    RUN(phone_error_and_bye);
    RUN(phone_encode_to_buffer);
    RUN(phone_fit_body);
    RUN(phone_fit_items);
    RUN(phone_bad_frame_error_text_is_utf8);
    RUN(phone_frames_written_straight);
    return unit_done();
}
