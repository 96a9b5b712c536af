/* test_stanza.c - xmppd/stanza: XMPP stanzas <-> bus envelopes. */
#include "../../xmppd/stanza.h"
#include "unit.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER "alice@localhost"
/* 2026-11-24T16:00:00Z */
#define T0 1795536000000LL

static xmpp_ctx_t *ctx;
static char err[256];

/* Translate the message in xml; *out gets the envelope (or NULL). */
static enum stanza_verdict translate(const char *xml, struct env **out)
{
    *out = NULL;
    err[0] = '\0';
    xmpp_stanza_t *s = xmpp_stanza_new_from_string(ctx, xml);
    if (!s) {
        printf("    test bug: cannot parse %s\n", xml);
        return (enum stanza_verdict)-1;
    }
    enum stanza_verdict v = stanza_message_to_env(ctx, s, USER, out, err,
                                                  sizeof(err));
    xmpp_stanza_release(s);
    return v;
}

/* The envelope survives encode + decode: it passes its own schema. */
static bool env_is_valid(const struct env *e)
{
    char *json = env_encode(e, NULL);
    char derr[256];
    struct env *d = env_decode(json, strlen(json), derr, sizeof(derr));
    if (!d)
        printf("    envelope fails its schema: %s\n    %s\n", derr, json);
    free(json);
    env_free(d);
    return d != NULL;
}

TEST(stanza_chat_builds_message)
{
    xmpp_stanza_t *m = stanza_chat(ctx, "bob@localhost", "hi <there> & \"you\"",
                                   "c1", false);
    CHECK_EQ_STR(xmpp_stanza_get_name(m), "message");
    CHECK_EQ_STR(xmpp_stanza_get_type(m), "chat");
    /* Asks for a delivery receipt and a read marker. */
    CHECK(xmpp_stanza_get_child_by_name_and_ns(m, "request", STANZA_NS_RECEIPTS) != NULL);
    CHECK(xmpp_stanza_get_child_by_name_and_ns(m, "markable", STANZA_NS_MARKERS) != NULL);
    CHECK_EQ_STR(xmpp_stanza_get_to(m), "bob@localhost");
    CHECK_EQ_STR(xmpp_stanza_get_id(m), "c1");
    char *body = xmpp_message_get_body(m);
    CHECK_EQ_STR(body, "hi <there> & \"you\"");
    xmpp_free(ctx, body);

    char *text = NULL;
    size_t len = 0;
    CHECK_EQ_INT(xmpp_stanza_to_text(m, &text, &len), XMPP_EOK);
    CHECK(text && strstr(text, "<message") == text);
    CHECK(text && strstr(text, "<body>hi &lt;there&gt; &amp; ") != NULL);
    CHECK(text && strstr(text, "<there>") == NULL); /* escaped, not markup */
    /* Parsing the text back yields the same body. */
    xmpp_stanza_t *back = text ? xmpp_stanza_new_from_string(ctx, text) : NULL;
    char *b2 = back ? xmpp_message_get_body(back) : NULL;
    CHECK_EQ_STR(b2, "hi <there> & \"you\"");
    if (b2)
        xmpp_free(ctx, b2);
    if (back)
        xmpp_stanza_release(back);
    xmpp_free(ctx, text);
    xmpp_stanza_release(m);
}

TEST(stanza_ping_builds_iq)
{
    xmpp_stanza_t *iq = stanza_ping(ctx, "p1", "localhost");
    CHECK_EQ_STR(xmpp_stanza_get_name(iq), "iq");
    CHECK_EQ_STR(xmpp_stanza_get_type(iq), "get");
    CHECK_EQ_STR(xmpp_stanza_get_id(iq), "p1");
    CHECK_EQ_STR(xmpp_stanza_get_to(iq), "localhost");
    xmpp_stanza_t *ping = xmpp_stanza_get_child_by_name_and_ns(iq, "ping",
                                                               STANZA_NS_PING);
    CHECK(ping != NULL);
    CHECK_EQ_STR(STANZA_NS_PING, "urn:xmpp:ping");
    CHECK(ping && xmpp_stanza_get_children(ping) == NULL);
    xmpp_stanza_release(iq);

    iq = stanza_ping(ctx, "p2", NULL);
    CHECK(xmpp_stanza_get_to(iq) == NULL);
    CHECK(xmpp_stanza_get_child_by_name_and_ns(iq, "ping", STANZA_NS_PING));
    xmpp_stanza_release(iq);
}

TEST(stanza_presence_builds)
{
    xmpp_stanza_t *p = stanza_presence(ctx, true);
    CHECK_EQ_STR(xmpp_stanza_get_name(p), "presence");
    CHECK(xmpp_stanza_get_type(p) == NULL);
    xmpp_stanza_release(p);
    p = stanza_presence(ctx, false);
    CHECK_EQ_STR(xmpp_stanza_get_type(p), "unavailable");
    xmpp_stanza_release(p);
}

TEST(stanza_chat_to_env)
{
    struct env *e;
    int64_t before = util_wall_ms();
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/desktop' "
                           "to='alice@localhost/imb' id='m1'>"
                           "<body>hi &amp; bye\n</body></message>", &e),
                 STANZA_ENVELOPE);
    int64_t after = util_wall_ms();
    if (!CHECK(e != NULL))
        return;
    CHECK_EQ_INT(e->type, ENV_CHAT);
    CHECK_EQ_STR(env_str(e, "from"), "bob@localhost/desktop");
    CHECK_EQ_STR(env_str(e, "to"), USER); /* the user, not the full to */
    CHECK_EQ_STR(env_str(e, "body"), "hi & bye\n");
    CHECK_EQ_STR(env_str(e, "id"), "m1");
    int64_t ts = env_int(e, "ts", -1);
    CHECK(ts >= before && ts <= after); /* no <delay/>: now */
    CHECK(env_is_valid(e));
    env_free(e);

    /* No type means "normal": delivered as well. */
    CHECK_EQ_INT(translate("<message from='bob@localhost'>"
                           "<body>plain</body></message>", &e),
                 STANZA_ENVELOPE);
    CHECK(e && e->type == ENV_CHAT);
    if (e) {
        CHECK_EQ_STR(env_str(e, "body"), "plain");
        CHECK(env_str(e, "id") == NULL);
        CHECK(env_is_valid(e));
    }
    env_free(e);
}

TEST(stanza_delay_sets_ts)
{
    struct env *e;
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/d' id='m2'>"
                           "<body>stored</body>"
                           "<delay xmlns='urn:xmpp:delay' from='localhost' "
                           "stamp='2026-11-24T16:00:00.250Z'/></message>", &e),
                 STANZA_ENVELOPE);
    CHECK(e != NULL);
    if (e)
        CHECK_EQ_INT(env_int(e, "ts", -1), T0 + 250);
    env_free(e);

    /* A garbage stamp falls back to now rather than failing the message. */
    int64_t before = util_wall_ms();
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/d'>"
                           "<body>x</body><delay xmlns='urn:xmpp:delay' "
                           "stamp='yesterday'/></message>", &e),
                 STANZA_ENVELOPE);
    if (e)
        CHECK(env_int(e, "ts", -1) >= before);
    env_free(e);
}

TEST(stanza_ignored)
{
    struct env *e = (struct env *)1;
    /* A chat state notification: no body. */
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/d'>"
                           "<composing xmlns='http://jabber.org/protocol/"
                           "chatstates'/></message>", &e),
                 STANZA_IGNORE);
    CHECK(e == NULL);
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/d'>"
                           "<body/></message>", &e),
                 STANZA_IGNORE);
    CHECK(e == NULL);
    CHECK_EQ_INT(translate("<message type='bogus' from='bob@localhost'>"
                           "<body>?</body></message>", &e),
                 STANZA_IGNORE);
    CHECK(e == NULL);
}

TEST(stanza_error_to_env)
{
    struct env *e;
    CHECK_EQ_INT(translate("<message type='error' from='nobody@localhost' id='c7'>"
                           "<body>lost</body><error type='cancel'>"
                           "<item-not-found xmlns='urn:ietf:params:xml:ns:"
                           "xmpp-stanzas'/></error></message>", &e),
                 STANZA_ENVELOPE);
    if (!CHECK(e != NULL))
        return;
    CHECK_EQ_INT(e->type, ENV_ERROR);
    CHECK_EQ_STR(env_str(e, "to"), USER);
    CHECK_EQ_STR(env_str(e, "code"), "undeliverable");
    CHECK_EQ_STR(env_str(e, "id"), "c7");
    const char *msg = env_str(e, "msg");
    CHECK(msg && strstr(msg, "item-not-found") != NULL);
    CHECK(env_is_valid(e));
    env_free(e);

    /* Without an id (or with one we cannot forward) there is no id field. */
    CHECK_EQ_INT(translate("<message type='error' from='localhost' id='a b'>"
                           "<error type='cancel'/></message>", &e),
                 STANZA_ENVELOPE);
    CHECK(e && e->type == ENV_ERROR);
    if (e) {
        CHECK(env_str(e, "id") == NULL);
        CHECK(env_is_valid(e));
    }
    env_free(e);
}

TEST(stanza_invalid)
{
    struct env *e = (struct env *)1;
    CHECK_EQ_INT(translate("<message type='chat'><body>who?</body></message>", &e),
                 STANZA_INVALID);
    CHECK(e == NULL);
    CHECK(err[0] != '\0');
    CHECK_EQ_INT(translate("<message type='chat' from='@localhost'>"
                           "<body>x</body></message>", &e),
                 STANZA_INVALID);
    CHECK(e == NULL);
    CHECK_EQ_INT(translate("<message type='chat' from='bob@localhost/'>"
                           "<body>x</body></message>", &e),
                 STANZA_INVALID);

    /* Characters XML 1.0 cannot carry, set through the API (a parser would
     * refuse them): a control character, U+FFFE. */
    const char *bodies[] = {"a\001b", "\x1b[2J", "x\xEF\xBF\xBEy"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        xmpp_stanza_t *m = xmpp_message_new(ctx, "chat", USER, "m9");
        xmpp_stanza_set_from(m, "bob@localhost/d");
        xmpp_message_set_body(m, bodies[i]);
        e = NULL;
        CHECK_EQ_INT(stanza_message_to_env(ctx, m, USER, &e, err, sizeof(err)),
                     STANZA_INVALID);
        CHECK(e == NULL);
        env_free(e);
        xmpp_stanza_release(m);
    }

    /* A body above ENV_MAX_BODY. */
    char *big = malloc(ENV_MAX_BODY + 2);
    memset(big, 'x', ENV_MAX_BODY + 1);
    big[ENV_MAX_BODY + 1] = '\0';
    xmpp_stanza_t *m = xmpp_message_new(ctx, "chat", USER, "m10");
    xmpp_stanza_set_from(m, "bob@localhost/d");
    xmpp_message_set_body(m, big);
    e = NULL;
    CHECK_EQ_INT(stanza_message_to_env(ctx, m, USER, &e, err, sizeof(err)),
                 STANZA_INVALID);
    env_free(e);
    xmpp_stanza_release(m);
    /* ENV_MAX_BODY itself is fine. */
    big[ENV_MAX_BODY] = '\0';
    m = xmpp_message_new(ctx, "chat", USER, "m11");
    xmpp_stanza_set_from(m, "bob@localhost/d");
    xmpp_message_set_body(m, big);
    e = NULL;
    CHECK_EQ_INT(stanza_message_to_env(ctx, m, USER, &e, err, sizeof(err)),
                 STANZA_ENVELOPE);
    CHECK(e && env_is_valid(e));
    env_free(e);
    xmpp_stanza_release(m);
    free(big);
}

TEST(stanza_weird_id_dropped)
{
    static const char *ids[] = {"a b", "x/y", "&lt;script&gt;", ""};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char xml[256];
        snprintf(xml, sizeof(xml),
                 "<message type='chat' from='bob@localhost/d' id='%s'>"
                 "<body>still here</body></message>", ids[i]);
        struct env *e;
        CHECK_EQ_INT(translate(xml, &e), STANZA_ENVELOPE);
        if (!CHECK(e != NULL))
            continue;
        CHECK(env_str(e, "id") == NULL);
        CHECK_EQ_STR(env_str(e, "body"), "still here");
        CHECK(env_is_valid(e));
        env_free(e);
    }
    /* A 65-character id is dropped too; 64 is kept. */
    char xml[512], id[70];
    memset(id, 'i', 65);
    id[65] = '\0';
    snprintf(xml, sizeof(xml), "<message type='chat' from='b@l' id='%s'>"
                               "<body>x</body></message>", id);
    struct env *e;
    CHECK_EQ_INT(translate(xml, &e), STANZA_ENVELOPE);
    CHECK(e && env_str(e, "id") == NULL);
    env_free(e);
    id[64] = '\0';
    snprintf(xml, sizeof(xml), "<message type='chat' from='b@l' id='%s'>"
                               "<body>x</body></message>", id);
    CHECK_EQ_INT(translate(xml, &e), STANZA_ENVELOPE);
    CHECK(e && env_str(e, "id") && strlen(env_str(e, "id")) == 64);
    env_free(e);
}

TEST(stanza_parse_time_valid)
{
    CHECK_EQ_INT(stanza_parse_time("1970-01-01T00:00:00Z"), 0);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T16:00:00Z"), T0);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T16:00:00.123Z"), T0 + 123);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T16:00:00.5Z"), T0 + 500);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T16:00:00.123456Z"), T0 + 123);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T18:00:00+02:00"), T0);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T14:30:00-01:30"), T0);
    CHECK_EQ_INT(stanza_parse_time("2026-11-24T16:00:00+00:00"), T0);
    CHECK_EQ_INT(stanza_parse_time("2026-11-25T01:00:00.250+09:00"), T0 + 250);
    CHECK_EQ_INT(stanza_parse_time("2024-02-29T12:00:00Z"), 1709208000000LL);
}

TEST(stanza_parse_time_garbage)
{
    static const char *bad[] = {
        "", "yesterday", "2026-11-24", "2026-11-24T16:00", "2026-11-24T16:00:00",
        "2026-11-24 16:00:00Z", "2026-11-24T16:00:00Zjunk", "2026-11-24T16:00:00z",
        "2026-11-24T16:00:00+02", "2026-11-24T16:00:00+0200",
        "2026-11-24T16:00:00+02:00x", "2026-11-24T16:00:00.123", "2026-13-01T00:00:00Z",
        "2026-11-24T25:00:00Z", "T16:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (!CHECK_EQ_INT(stanza_parse_time(bad[i]), -1))
            printf("    accepted \"%s\"\n", bad[i]);
}

TEST(stanza_parse_time_short_offset)
{
    /* XEP-0082 offsets are exactly "hh:mm". A one-digit hour makes the
     * offset 5 bytes, but the parser skips 6 and reads past the string's
     * NUL. Zero padding after the string makes that deterministic here: the
     * parser then sees "end of string" and accepts it. */
    char buf[64] = {0};
    strcpy(buf, "2026-11-24T16:00:00+2:00");
    CHECK_EQ_INT(stanza_parse_time(buf), -1);
    memset(buf, 0, sizeof(buf));
    strcpy(buf, "2026-11-24T16:00:00+2:0");
    CHECK_EQ_INT(stanza_parse_time(buf), -1);
}

/* Found by fuzzing (tests/fuzz/regress/stanza/error-condition-cut-utf8): the
 * error text "the XMPP server could not deliver it: <condition>" is built in a
 * 256-byte buffer; a long condition element name with a multibyte character at
 * the cut left half a UTF-8 sequence at the end, json_string() refused it, and
 * the error envelope (so the phone's error frame) went out without "msg".
 * Condition names are now passed on only when they are plain ids. */
TEST(stanza_error_long_condition_keeps_msg)
{
    char name[260];
    memset(name, 'a', 216);
    memcpy(name + 216, "\xc3\xa9", 3); /* U+00E9 and the NUL */
    char xml[700];
    snprintf(xml, sizeof(xml),
             "<message type='error' from='bob@localhost' id='c1'>"
             "<error type='cancel'><%s xmlns='urn:ietf:params:xml:ns:"
             "xmpp-stanzas'/></error></message>", name);
    struct env *e;
    CHECK_EQ_INT(translate(xml, &e), STANZA_ENVELOPE);
    if (!CHECK(e != NULL))
        return;
    CHECK_EQ_INT(e->type, ENV_ERROR);
    const char *msg = env_str(e, "msg");
    /* A name that is no real condition is not passed on. */
    CHECK_EQ_STR(msg, "the XMPP server could not deliver it: undefined-condition");
    CHECK(env_is_valid(e));
    env_free(e);
}

TEST(stanza_stream_error_names)
{
    CHECK_EQ_STR(stanza_stream_error_name(XMPP_SE_BAD_FORMAT), "bad-format");
    CHECK_EQ_STR(stanza_stream_error_name(XMPP_SE_POLICY_VIOLATION), "policy-violation");
    CHECK_EQ_STR(stanza_stream_error_name(XMPP_SE_IMPROPER_ADDR), "improper-addressing");
    CHECK_EQ_STR(stanza_stream_error_name(XMPP_SE_XML_NOT_WELL_FORMED), "not-well-formed");
    CHECK_EQ_STR(stanza_stream_error_name((xmpp_error_type_t)99), "undefined-condition");
    CHECK_EQ_STR(stanza_stream_error_name((xmpp_error_type_t)-1), "undefined-condition");
}

TEST(stanza_stream_error_text_for_a_log)
{
    char out[16];
    xmpp_stream_error_t se = {XMPP_SE_POLICY_VIOLATION, NULL, NULL};
    stanza_stream_error_text(&se, out, sizeof(out));
    CHECK_EQ_STR(out, "");
    stanza_stream_error_text(NULL, out, sizeof(out));
    CHECK_EQ_STR(out, "");
    char t1[] = "a\"b\\c\nd";
    se.text = t1;
    stanza_stream_error_text(&se, out, sizeof(out));
    CHECK_EQ_STR(out, "a?b?c?d");
    /* Cut at 15 bytes, never inside a character: "\xc3\xa9" is kept whole or dropped. */
    char t2[] = "12345678901234\xc3\xa9z";
    se.text = t2;
    stanza_stream_error_text(&se, out, sizeof(out));
    CHECK_EQ_STR(out, "12345678901234");
    char t3[] = "1234567890123\xc3\xa9z";
    se.text = t3;
    stanza_stream_error_text(&se, out, sizeof(out));
    CHECK_EQ_STR(out, "1234567890123\xc3\xa9");
}

int main(void)
{
    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL);
    RUN(stanza_chat_builds_message);
    RUN(stanza_ping_builds_iq);
    RUN(stanza_presence_builds);
    RUN(stanza_chat_to_env);
    RUN(stanza_delay_sets_ts);
    RUN(stanza_ignored);
    RUN(stanza_error_to_env);
    RUN(stanza_error_long_condition_keeps_msg);
    RUN(stanza_invalid);
    RUN(stanza_weird_id_dropped);
    RUN(stanza_parse_time_valid);
    RUN(stanza_parse_time_garbage);
    RUN(stanza_parse_time_short_offset);
    RUN(stanza_stream_error_names);
    RUN(stanza_stream_error_text_for_a_log);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    return unit_done();
}
