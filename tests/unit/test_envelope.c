/* test_envelope.c - common/envelope: the bus envelopes' codec. */
#include "envelope.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One valid envelope per type: its string fields, as key/value pairs. */
struct sample {
    enum env_type type;
    const char *name;
    const char *kv[14]; /* NULL-terminated key, value, key, value... */
};

static const struct sample samples[] = {
    {ENV_LOGIN, "login",
     {"jid", "alice@localhost", "cred", "c2VhbGVk+/==", "edge", "e1", "dev",
      "c1", "label", "pixel7"}},
    {ENV_LOGIN_OK, "login_ok",
     {"jid", "alice@localhost", "edge", "e1", "dev", "c1", "worker", "b1-w0"}},
    {ENV_LOGIN_FAIL, "login_fail",
     {"jid", "alice@localhost", "edge", "e1", "dev", "c1", "code",
      "auth_failed", "msg", "not authorized"}},
    {ENV_CHAT, "chat",
     {"from", "bob@localhost/desktop", "to", "alice@localhost", "body",
      "hi \xF0\x9F\x91\x8B\n<&>\"", "id", "m1", "edge", "e1", "dev", "c1"}},
    {ENV_ACK, "ack", {"to", "alice@localhost", "edge", "e1", "dev", "c1"}},
    {ENV_ERROR, "error",
     {"to", "alice@localhost", "code", "undeliverable", "msg", "no such user",
      "id", "m1"}},
    {ENV_LOGOUT, "logout", {"from", "alice@localhost", "edge", "e1", "dev", "c1"}},
    {ENV_DETACH, "detach", {"from", "alice@localhost", "edge", "e1", "dev", "c1"}},
    {ENV_SESSION_END, "session_end",
     {"to", "alice@localhost", "reason", "xmpp_disconnected"}},
    {ENV_REQ, "req", {"from", "alice@localhost", "edge", "e1", "dev", "c1"}},
    {ENV_EVENT, "event", {"to", "alice@localhost", "edge", "e1", "dev", "c1"}},
    {ENV_ACKED, "acked", {"from", "alice@localhost"}},
    {ENV_HANDOVER, "handover", {"from", "alice@localhost"}},
};
#define NSAMPLES (sizeof(samples) / sizeof(samples[0]))

static struct env *make(const struct sample *s)
{
    struct env *e = env_new(s->type);
    for (int i = 0; s->kv[i]; i += 2)
        env_set_str(e, s->kv[i], s->kv[i + 1]);
    if (s->type == ENV_ACK)
        env_set_json(e, "ids", json_pack("[s,s]", "c1", "c2"));
    if (s->type == ENV_CHAT)
        env_set_int(e, "ts", 1732460000123LL);
    if (s->type == ENV_REQ)
        env_set_json(e, "frame", json_pack("{s:s, s:s}", "t", "roster", "id", "r1"));
    if (s->type == ENV_EVENT)
        env_set_json(e, "frame", json_pack("{s:s, s:s}", "t", "ok", "id", "r1"));
    if (s->type == ENV_ACKED) {
        env_set_int(e, "upto", 7);
        env_set_int(e, "after", 3);
    }
    if (s->type == ENV_HANDOVER) {
        env_set_json(e, "env", json_pack("{s:i, s:s}", "v", 1, "type", "chat"));
        env_set_int(e, "hops", 1);
    }
    return e;
}

/* Decode json and expect a rejection with a non-empty reason. */
static void expect_reject(const char *json, size_t len, const char *file,
                          int line)
{
    char err[256] = "";
    struct env *e = env_decode(json, len, err, sizeof(err));
    if (!unit_check(e == NULL, file, line, "env_decode rejects")) {
        printf("    accepted: %.200s\n", json);
        env_free(e);
    }
    unit_check(err[0] != '\0', file, line, "err says why");
}
#define REJECTS(json) expect_reject(json, strlen(json), __FILE__, __LINE__)

TEST(env_every_type_round_trips)
{
    CHECK_EQ_INT(NSAMPLES, ENV_TYPE_COUNT);
    for (size_t i = 0; i < NSAMPLES; i++) {
        const struct sample *s = &samples[i];
        CHECK_EQ_STR(env_type_name(s->type), s->name);
        struct env *e = make(s);
        size_t len = 0;
        char *json = env_encode(e, &len);
        CHECK_EQ_INT(len, strlen(json));
        char *jansson = json_dumps(e->obj, JSON_COMPACT); /* what it must equal */
        CHECK_EQ_STR(json, jansson);
        free(jansson);
        CHECK(strstr(json, "\"v\":1") != NULL);
        CHECK(!strstr(json, "\": ") && !strstr(json, ", \"")); /* compact */
        char err[256] = "";
        struct env *d = env_decode(json, len, err, sizeof(err));
        if (!CHECK(d != NULL)) {
            printf("    %s: %s\n    %s\n", s->name, err, json);
        } else {
            CHECK_EQ_INT(d->type, s->type);
            CHECK_EQ_STR(env_str(d, "type"), s->name);
            CHECK_EQ_INT(env_int(d, "v", -1), ENV_VERSION);
            for (int k = 0; s->kv[k]; k += 2)
                CHECK_EQ_STR(env_str(d, s->kv[k]), s->kv[k + 1]);
            CHECK(json_equal(d->obj, e->obj));
        }
        env_free(d);
        env_free(e);
        free(json);
    }
}

TEST(env_getters)
{
    struct env *e = env_new(ENV_CHAT);
    env_set_str(e, "from", "a@b");
    env_set_int(e, "ts", 42);
    CHECK_EQ_STR(env_str(e, "from"), "a@b");
    CHECK(env_str(e, "nope") == NULL);
    CHECK(env_str(e, "ts") == NULL); /* not a string */
    CHECK_EQ_INT(env_int(e, "ts", -1), 42);
    CHECK_EQ_INT(env_int(e, "nope", -7), -7);
    CHECK_EQ_INT(env_int(e, "from", -7), -7); /* not an integer */
    CHECK(env_json(e, "nope") == NULL);
    CHECK(json_is_integer(env_json(e, "ts")));
    /* Setters copy: the caller's buffer may change afterwards. */
    char buf[16] = "x@y";
    env_set_str(e, "to", buf);
    buf[0] = 'z';
    CHECK_EQ_STR(env_str(e, "to"), "x@y");
    /* Replacing a field. */
    env_set_str(e, "from", "c@d");
    CHECK_EQ_STR(env_str(e, "from"), "c@d");
    /* Large timestamps survive the trip. */
    env_set_int(e, "ts", 4102444800000LL);
    CHECK_EQ_INT(env_int(e, "ts", 0), 4102444800000LL);
    env_free(e);
    env_free(NULL);
}

TEST(env_decode_accepts)
{
    char err[256];
    /* Unknown members are ignored; order does not matter. */
    const char *json = "{\"body\":\"x\",\"future\":{\"a\":[1,2]},\"to\":\"a@b\","
                       "\"type\":\"chat\",\"from\":\"c@d/e\",\"v\":1}";
    struct env *e = env_decode(json, strlen(json), err, sizeof(err));
    CHECK(e && e->type == ENV_CHAT);
    if (e)
        CHECK_EQ_STR(env_str(e, "from"), "c@d/e");
    env_free(e);
    /* Only len bytes are read: the buffer need not end in NUL. */
    const char *buf = "{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\","
                      "\"reason\":\"moved\"}GARBAGE";
    e = env_decode(buf, strlen(buf) - 7, err, sizeof(err));
    CHECK(e && e->type == ENV_SESSION_END);
    env_free(e);
}

TEST(env_decode_rejects_bad_json)
{
    REJECTS("");
    REJECTS("{");
    REJECTS("{\"v\":1,\"type\":\"chat\"");
    REJECTS("not json");
    REJECTS("{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}"
            " trailing");
    REJECTS("{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}"
            "{}");
    /* Invalid UTF-8 in a string. */
    REJECTS("{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"\xff\"}");
    /* A lone surrogate. */
    REJECTS("{\"v\":1,\"type\":\"chat\",\"from\":\"a@b\",\"to\":\"c@d\","
            "\"body\":\"\\ud800\"}");
}

TEST(env_decode_rejects_duplicates_and_non_objects)
{
    REJECTS("{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\",\"to\":\"c@d\","
            "\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":\"chat\",\"type\":\"session_end\",\"to\":\"a@b\","
            "\"reason\":\"x\"}");
    REJECTS("[]");
    REJECTS("[{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}]");
    REJECTS("\"chat\"");
    REJECTS("1");
    REJECTS("null");
}

TEST(env_decode_rejects_version_and_type)
{
    REJECTS("{\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":2,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":0,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":\"1\",\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1.0,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":null,\"type\":\"session_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":\"sesion_end\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":\"SESSION_END\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":\"\",\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":3,\"to\":\"a@b\",\"reason\":\"x\"}");
    REJECTS("{\"v\":1,\"type\":[\"chat\"],\"to\":\"a@b\",\"reason\":\"x\"}");
}

TEST(env_decode_rejects_missing_field)
{
    /* Drop each required field of each sample in turn. */
    static const char *required[ENV_TYPE_COUNT][6] = {
        /* (cred or resume_token: the worker wants one of the two) */
        [ENV_LOGIN] = {"jid", "edge", "dev"},
        [ENV_LOGIN_OK] = {"jid", "edge", "dev", "worker"},
        [ENV_LOGIN_FAIL] = {"jid", "edge", "dev", "code"},
        [ENV_CHAT] = {"from", "to", "body"},
        [ENV_ACK] = {"to", "ids"},
        [ENV_ERROR] = {"to", "code"},
        [ENV_LOGOUT] = {"from", "edge", "dev"},
        [ENV_DETACH] = {"from", "edge", "dev"},
        [ENV_SESSION_END] = {"to", "reason"},
        [ENV_REQ] = {"from", "edge", "dev", "frame"},
        [ENV_EVENT] = {"to", "frame"},
        [ENV_ACKED] = {"from", "upto", "after"},
        [ENV_HANDOVER] = {"from", "env", "hops"},
    };
    for (size_t i = 0; i < NSAMPLES; i++) {
        for (int k = 0; required[samples[i].type][k]; k++) {
            const char *field = required[samples[i].type][k];
            struct env *e = make(&samples[i]);
            json_object_del(e->obj, field);
            char *json = env_encode(e, NULL);
            char err[256] = "";
            struct env *d = env_decode(json, strlen(json), err, sizeof(err));
            if (!CHECK(d == NULL))
                printf("    %s without '%s' accepted\n", samples[i].name, field);
            else
                CHECK(strstr(err, field) != NULL);
            env_free(d);
            free(json);
            env_free(e);
        }
    }
}

#define CHAT_HEAD "{\"v\":1,\"type\":\"chat\","

TEST(env_decode_rejects_wrong_field_type)
{
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":5}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":[\"x\"]}");
    REJECTS(CHAT_HEAD "\"from\":{},\"to\":\"c@d\",\"body\":\"x\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"x\",\"ts\":\"1\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"x\",\"ts\":-1}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"x\",\"ts\":1.5}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"x\",\"id\":\"a b\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"x\",\"id\":7}");
    REJECTS("{\"v\":1,\"type\":\"ack\",\"to\":\"a@b\",\"ids\":\"c1\"}");
    REJECTS("{\"v\":1,\"type\":\"ack\",\"to\":\"a@b\",\"ids\":[]}");
    REJECTS("{\"v\":1,\"type\":\"ack\",\"to\":\"a@b\",\"ids\":[\"c1\",2]}");
    REJECTS("{\"v\":1,\"type\":\"login\",\"jid\":\"a@b\",\"cred\":\"has space\","
            "\"edge\":\"e1\",\"dev\":\"c1\"}");
    REJECTS("{\"v\":1,\"type\":\"login_fail\",\"jid\":\"a@b\",\"edge\":\"e1\","
            "\"dev\":\"c1\",\"code\":\"auth failed\"}");
}

TEST(env_decode_rejects_bad_jids)
{
    static const char *bad[] = {"", "@", "@localhost", "bob@", "bob@@localhost",
                                "b ob@localhost", "bob@localhost/",
                                "b<o>b@localhost", "bob@localhost/\\u0001"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 CHAT_HEAD "\"from\":\"%s\",\"to\":\"c@d\",\"body\":\"x\"}",
                 bad[i]);
        REJECTS(json);
        snprintf(json, sizeof(json),
                 CHAT_HEAD "\"from\":\"c@d\",\"to\":\"%s\",\"body\":\"x\"}",
                 bad[i]);
        REJECTS(json);
    }
}

TEST(env_decode_rejects_bad_body)
{
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"a\\u0000b\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\\u0000\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"a\\u0001b\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\\u001b[2J\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\\u007f\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\\ufffe\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\\uffff\"}");
    REJECTS(CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"\"}");
    /* Tabs and newlines are fine. */
    const char *ok = CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"a\\tb\\r\\nc\"}";
    char err[256];
    struct env *e = env_decode(ok, strlen(ok), err, sizeof(err));
    CHECK(e != NULL);
    if (e)
        CHECK_EQ_STR(env_str(e, "body"), "a\tb\r\nc");
    env_free(e);
}

/* A chat envelope of exactly total bytes, with body_len bytes of body and the
 * rest in an unknown padding member. */
static char *chat_of_size(size_t total, size_t body_len)
{
    const char *head = CHAT_HEAD "\"from\":\"a@b\",\"to\":\"c@d\",\"body\":\"";
    const char *mid = "\",\"pad\":\"";
    const char *tail = "\"}";
    size_t fixed = strlen(head) + strlen(mid) + strlen(tail);
    if (total < fixed + body_len)
        return NULL;
    char *s = malloc(total + 1), *p = s;
    p += sprintf(p, "%s", head);
    memset(p, 'b', body_len);
    p += body_len;
    p += sprintf(p, "%s", mid);
    size_t pad = total - fixed - body_len;
    memset(p, 'p', pad);
    p += pad;
    strcpy(p, tail);
    return s;
}

TEST(env_decode_size_limits)
{
    char err[256];
    char *s = chat_of_size(ENV_MAX_BYTES, 10);
    CHECK_EQ_INT(strlen(s), ENV_MAX_BYTES);
    struct env *e = env_decode(s, strlen(s), err, sizeof(err));
    CHECK(e != NULL);
    env_free(e);
    free(s);

    s = chat_of_size(ENV_MAX_BYTES + 1, 10);
    expect_reject(s, strlen(s), __FILE__, __LINE__);
    free(s);

    s = chat_of_size(4 * ENV_MAX_BYTES, 10);
    expect_reject(s, strlen(s), __FILE__, __LINE__);
    free(s);

    /* The body: ENV_MAX_BODY bytes are fine, one more is not. */
    s = chat_of_size(ENV_MAX_BODY + 200, ENV_MAX_BODY);
    e = env_decode(s, strlen(s), err, sizeof(err));
    CHECK(e != NULL);
    env_free(e);
    free(s);
    s = chat_of_size(ENV_MAX_BODY + 200, ENV_MAX_BODY + 1);
    expect_reject(s, strlen(s), __FILE__, __LINE__);
    free(s);
}

TEST(env_decode_deep_nesting)
{
    /* Hostile nesting in an unknown member must not crash the decoder. */
    size_t depth = 100000;
    const char *head = "{\"v\":1,\"type\":\"session_end\",\"to\":\"a@b\","
                       "\"reason\":\"x\",\"deep\":";
    char *s = malloc(strlen(head) + 2 * depth + 2), *p = s;
    p += sprintf(p, "%s", head);
    memset(p, '[', depth);
    p += depth;
    memset(p, ']', depth);
    p += depth;
    strcpy(p, "}");
    expect_reject(s, strlen(s), __FILE__, __LINE__);
    free(s);
}

/* A phone's chat written straight is the text jansson makes of the
 * envelope built field by field, escapes and all, short or long. */
TEST(env_chat_encode_matches_the_built_envelope)
{
    static char longbody[3000];
    memset(longbody, 'w', sizeof(longbody) - 1);
    const char *bodies[] = {"hi", "quote \" back\\ / tab\t nl\n é ✓ 😀", longbody};
    const char *froms[] = {"alice@localhost", "a\\b@localhost"};
    for (size_t i = 0; i < 3; i++) {
        for (size_t k = 0; k < 2; k++) {
            bool group = i == 1;
            json_t *to = json_string(group ? "room@conf.localhost" : "bob@localhost");
            json_t *body = json_string(bodies[i]);
            json_t *id = json_string("c-1.x");
            struct env *e = env_new(ENV_CHAT);
            env_set_str(e, "from", froms[k]);
            env_set_json(e, "to", json_incref(to));
            env_set_json(e, "body", json_incref(body));
            if (group)
                env_set_json(e, "group", json_true());
            env_set_json(e, "id", json_incref(id));
            env_set_str(e, "edge", "e1a2");
            env_set_str(e, "dev", "c7");
            env_set_int(e, "ts", 1765000000123);
            env_set_int(e, "pts", 1765000000124);
            size_t wlen, glen;
            char *want = json_dumps(e->obj, JSON_COMPACT);
            wlen = strlen(want);
            char *got = env_chat_encode(froms[k], to, body, group, id, "e1a2", "c7",
                                        1765000000123, 1765000000124, &glen);
            if (!CHECK(glen == wlen && strcmp(got, want) == 0))
                printf("    want %.120s\n    got  %.120s\n", want, got);
            char err[128];
            struct env *d = env_decode(got, glen, err, sizeof(err));
            CHECK(d != NULL && d->type == ENV_CHAT);
            env_free(d);
            free(want);
            free(got);
            env_free(e);
            json_decref(to);
            json_decref(body);
            json_decref(id);
        }
    }
}

int main(void)
{
    RUN(env_every_type_round_trips);
    RUN(env_getters);
    RUN(env_decode_accepts);
    RUN(env_decode_rejects_bad_json);
    RUN(env_decode_rejects_duplicates_and_non_objects);
    RUN(env_decode_rejects_version_and_type);
    RUN(env_decode_rejects_missing_field);
    RUN(env_decode_rejects_wrong_field_type);
    RUN(env_decode_rejects_bad_jids);
    RUN(env_decode_rejects_bad_body);
    RUN(env_decode_size_limits);
    RUN(env_decode_deep_nesting);
    RUN(env_chat_encode_matches_the_built_envelope);
    return unit_done();
}
