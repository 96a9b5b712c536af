/* phone.c - phone protocol v1: a schema per frame type, checked on decode. */
#include "phone.h"
#include "envelope.h"
#include "frame.h"
#include "jparse.h"
#include "jsonout.h"
#include "proto.h"
#include "schema.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct phone_schema {
    const char *name;
    struct field fields[7];
    size_t nfields;
};

static const struct phone_schema schemas[PHONE_TYPE_COUNT] = {
    [PHONE_LOGIN] = {"login",
                     {{"v", F_INT, 0, true, NULL},
                      {"jid", F_JID, ENV_MAX_JID, true, NULL},
                      {"pass", F_TEXT, PHONE_MAX_PASS, true, NULL},
                      {"dev", F_ID, 64, false, NULL},
                      {"epoch", F_ID, 31, false, NULL},
                      {"seq", F_INT, 0, false, NULL},
                      {"token", F_TEXT, PHONE_MAX_TOKEN, false, NULL}},
                     7},
    [PHONE_MSG] = {"msg",
                   {{"id", F_ID, PHONE_MAX_ID, true, NULL},
                    {"to", F_JID, ENV_MAX_JID, true, NULL},
                    {"body", F_TEXT, ENV_MAX_BODY, true, NULL},
                    {"group", F_BOOL, 0, false, NULL}},
                   4},
    [PHONE_HB] = {"hb", {{0}}, 0},
    [PHONE_LOGOUT] = {"logout", {{0}}, 0},
    [PHONE_ACK] = {"ack", {{"seq", F_INT, 0, true, NULL}}, 1},
};

/* The frame's "id" into id (PHONE_MAX_ID + 1 bytes) if it is a valid one,
 * for the error that answers a bad frame. */
static void take_id(const json_t *obj, char *id)
{
    const char *v = json_string_value(json_object_get(obj, "id"));
    if (id && v && json_string_length(json_object_get(obj, "id")) == strlen(v) &&
        schema_id_ok(v, PHONE_MAX_ID))
        snprintf(id, PHONE_MAX_ID + 1, "%s", v);
}

int phone_decode(const char *body, size_t len, size_t body_max, json_t **out,
                 char *id, char *err, size_t errlen)
{
    *out = NULL;
    if (id)
        id[0] = '\0';
    char why[160];
    json_t *obj = jparse(body, len, why, sizeof(why));
    if (!obj) {
        /* jparse's reasons are ASCII, so the error frame can carry it. */
        snprintf(err, errlen, "not valid JSON: %s", why);
        return -1;
    }
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "a frame must be a JSON object");
        goto fail;
    }
    const char *t = json_string_value(json_object_get(obj, "t"));
    if (!t) {
        snprintf(err, errlen, "field 't' (the frame type) is required");
        goto fail;
    }
    for (int i = 0; i < PHONE_TYPE_COUNT; i++) {
        if (strcmp(t, schemas[i].name) != 0)
            continue;
        /* Every JID is checked, then prepared as the XMPP server would
         * (jid.h): "ＢＯＢ@localhost" logs in as "bob@localhost". */
        if (!schema_check(obj, schemas[i].fields, schemas[i].nfields, err,
                          errlen) ||
            !schema_prep(obj, schemas[i].fields, schemas[i].nfields, err, errlen))
            goto fail;
        if (i == PHONE_MSG &&
            json_string_length(json_object_get(obj, "body")) > body_max) {
            snprintf(err, errlen, "field 'body' is longer than %zu bytes",
                     body_max);
            goto fail;
        }
        if (i == PHONE_LOGIN &&
            strchr(json_string_value(json_object_get(obj, "jid")), '/')) {
            snprintf(err, errlen, "field 'jid' must be a bare JID (no resource)");
            goto fail;
        }
        *out = obj;
        return i;
    }
    const struct proto_frame *pf = proto_request(t);
    if (pf) {
        if (!proto_check_request(obj, err, errlen) || !proto_prep(pf, obj, err, errlen))
            goto fail;
        *out = obj;
        return PHONE_REQ;
    }
    *out = obj;
    return PHONE_UNKNOWN;
fail:
    take_id(obj, id);
    json_decref(obj);
    return -1;
}

size_t phone_encode_to(const json_t *obj, char *buf, size_t cap)
{
    size_t room = cap > FRAME_HEADER ? cap - FRAME_HEADER : 0;
    size_t n = json_dumpb(obj, room ? buf + FRAME_HEADER : NULL, room, JSON_COMPACT);
    if (n <= room)
        frame_header((uint8_t *)buf, (uint32_t)n);
    return n;
}

char *phone_encode(const json_t *obj, size_t *len)
{
    char small[1024];
    size_t n = phone_encode_to(obj, small, sizeof(small));
    char *buf = xmalloc(FRAME_HEADER + n);
    if (FRAME_HEADER + n <= sizeof(small))
        memcpy(buf, small, FRAME_HEADER + n);
    else
        phone_encode_to(obj, buf, FRAME_HEADER + n);
    *len = FRAME_HEADER + n;
    return buf;
}

json_t *phone_error(const char *code, const char *msg, const char *id)
{
    json_t *o = json_pack("{s:s, s:s}", "t", "error", "code", code);
    if (msg)
        json_object_set_new(o, "msg", json_string(msg));
    if (id)
        json_object_set_new(o, "id", json_string(id));
    return o;
}

/* ---- the frames of every message, written straight ------------------------ */

json_t *phone_msg_frame(const struct env *e, int64_t now_ms)
{
    json_t *f = json_pack("{s:s, s:s, s:O}", "t", "msg", "from", env_str(e, "from"),
                          "body", env_json(e, "body"));
    if (env_str(e, "id"))
        json_object_set_new(f, "id", json_string(env_str(e, "id")));
    json_object_set_new(f, "ts", json_integer(env_int(e, "ts", now_ms)));
    if (env_str(e, "room"))
        json_object_set_new(f, "room", json_string(env_str(e, "room")));
    if (json_is_true(env_json(e, "sent"))) {
        json_object_set_new(f, "sent", json_true());
        if (env_str(e, "with"))
            json_object_set_new(f, "to", json_string(env_str(e, "with")));
    }
    if (env_str(e, "filtered"))
        json_object_set_new(f, "filtered", json_string(env_str(e, "filtered")));
    int64_t seq = env_int(e, "seq", -1);
    if (seq > 0)
        json_object_set_new(f, "seq", json_integer(seq));
    return f;
}

/* A frame's body, written behind its header's room (jsonout.h). */
static struct jsonout out_at(char *buf, size_t cap)
{
    return (struct jsonout){buf + FRAME_HEADER, 0, cap > FRAME_HEADER ? cap - FRAME_HEADER : 0};
}

static size_t out_done(const struct jsonout *o, char *buf)
{
    if (o->n <= o->cap)
        frame_header((uint8_t *)buf, (uint32_t)o->n);
    return o->n;
}

size_t phone_msg_to(const struct env *e, int64_t now_ms, char *buf, size_t cap)
{
    struct jsonout o = out_at(buf, cap);
    jsonout_lit(&o, "{\"t\":\"msg\",\"from\":");
    jsonout_json(&o, env_json(e, "from"));
    jsonout_lit(&o, ",\"body\":");
    jsonout_json(&o, env_json(e, "body"));
    if (env_str(e, "id")) {
        jsonout_lit(&o, ",\"id\":");
        jsonout_json(&o, env_json(e, "id"));
    }
    jsonout_lit(&o, ",\"ts\":");
    jsonout_int(&o, env_int(e, "ts", now_ms));
    if (env_str(e, "room")) {
        jsonout_lit(&o, ",\"room\":");
        jsonout_json(&o, env_json(e, "room"));
    }
    if (json_is_true(env_json(e, "sent"))) {
        jsonout_lit(&o, ",\"sent\":true");
        if (env_str(e, "with")) {
            jsonout_lit(&o, ",\"to\":");
            jsonout_json(&o, env_json(e, "with"));
        }
    }
    if (env_str(e, "filtered")) {
        jsonout_lit(&o, ",\"filtered\":");
        jsonout_json(&o, env_json(e, "filtered"));
    }
    int64_t seq = env_int(e, "seq", -1);
    if (seq > 0) {
        jsonout_lit(&o, ",\"seq\":");
        jsonout_int(&o, seq);
    }
    jsonout_lit(&o, "}");
    return out_done(&o, buf);
}

size_t phone_ack_to(const json_t *id, char *buf, size_t cap)
{
    struct jsonout o = out_at(buf, cap);
    jsonout_lit(&o, "{\"t\":\"ack\",\"id\":");
    jsonout_json(&o, id);
    jsonout_lit(&o, "}");
    return out_done(&o, buf);
}

json_t *phone_bye(const char *reason)
{
    return json_pack("{s:s, s:s}", "t", "bye", "reason", reason);
}

/* ---- frames that must fit in max ---------------------------------------- */

static size_t encoded_len(const json_t *obj)
{
    return json_dumpb(obj, NULL, 0, JSON_COMPACT);
}

/* Bytes jansson writes for byte c of a string (JSON_COMPACT, UTF-8 kept):
 * '"' and '\\' and the short escapes take 2, other control bytes 6. */
static size_t escaped_len(unsigned char c)
{
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
        c == '\r' || c == '\t')
        return 2;
    return c < 0x20 ? 6 : 1;
}

/* The longest prefix of s (valid UTF-8) whose escaped length is at most
 * budget bytes, ending on a character boundary. */
static size_t fit_prefix(const char *s, size_t len, size_t budget)
{
    size_t used = 0, cut = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 1; /* bytes of the character at i */
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xf0)
            n = 4;
        else if (c >= 0xe0)
            n = 3;
        else if (c >= 0xc0)
            n = 2;
        size_t w = n == 1 ? escaped_len(c) : n;
        if (i + n > len || used + w > budget)
            break;
        used += w;
        i += n;
        cut = i;
    }
    return cut;
}

static json_t *fit_body(const json_t *obj, size_t max)
{
    const char *body = json_string_value(json_object_get(obj, "body"));
    size_t blen = json_string_length(json_object_get(obj, "body"));
    json_t *f = json_copy((json_t *)obj);
    json_object_set_new(f, "body", json_string(""));
    json_object_set_new(f, "truncated", json_true());
    size_t rest = encoded_len(f);
    if (rest > max) {
        json_decref(f);
        return NULL;
    }
    size_t cut = fit_prefix(body, blen, max - rest);
    json_object_set_new(f, "body", json_stringn(body, cut));
    json_t *out = json_array();
    json_array_append_new(out, f);
    return out;
}

static json_t *fit_items(const json_t *obj, size_t max)
{
    const json_t *items = json_object_get(obj, "items");
    json_t *page = json_copy((json_t *)obj);
    json_object_set_new(page, "items", json_array());
    json_object_set_new(page, "more", json_true());
    size_t rest = encoded_len(page), used = rest;
    json_t *out = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        size_t n = encoded_len(item) + 1; /* and a comma */
        if (rest + n > max)
            goto fail; /* one item alone does not fit */
        if (used + n > max) {
            json_array_append_new(out, page);
            page = json_copy(page);
            json_object_set_new(page, "items", json_array());
            used = rest;
        }
        json_array_append(json_object_get(page, "items"), item);
        used += n;
    }
    json_object_del(page, "more");
    json_array_append_new(out, page);
    return out;
fail:
    json_decref(page);
    json_decref(out);
    return NULL;
}

json_t *phone_fit(const json_t *obj, size_t max)
{
    if (json_is_string(json_object_get(obj, "body")))
        return fit_body(obj, max);
    if (json_is_array(json_object_get(obj, "items")))
        return fit_items(obj, max);
    return NULL;
}
