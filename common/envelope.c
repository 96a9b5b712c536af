/* envelope.c - envelope codec: a schema table per type over jansson objects. */
#include "envelope.h"
#include "jparse.h"
#include "jsonout.h"
#include "schema.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXF 20

struct env_schema {
    const char *name;
    struct field fields[MAXF];
};

/* Shorthands for the table. */
#define JID(n, r) {n, F_JID, ENV_MAX_JID, r, NULL}
#define ID(n, r) {n, F_ID, 64, r, NULL}
#define TEXT(n, max, r) {n, F_TEXT, max, r, NULL}

static const struct env_schema schemas[ENV_TYPE_COUNT] = {
    /* A login carries the password sealed (cred), or, when an edge
     * re-opens a session on another worker, the session's resume token
     * (seal.h): one of the two. */
    [ENV_LOGIN] = {"login", {JID("jid", true), {"cred", F_STR, 8192, false, NULL},
                             ID("resume_token", false),
                             ID("edge", true), ID("dev", true),
                             ID("label", false)}},
    [ENV_LOGIN_OK] = {"login_ok", {JID("jid", true), ID("edge", true),
                                   ID("dev", true), ID("worker", true),
                                   ID("resume_token", false)}},
    [ENV_LOGIN_FAIL] = {"login_fail", {JID("jid", true), ID("edge", true),
                                       ID("dev", true), ID("code", true),
                                       TEXT("msg", 1024, false)}},
    [ENV_CHAT] = {"chat", {JID("from", true), JID("to", true),
                           TEXT("body", ENV_MAX_BODY, true), ID("id", false),
                           ID("edge", false), ID("dev", false),
                           {"ts", F_INT, 0, false, NULL}, {"seq", F_INT, 0, false, NULL},
                           ID("epoch", false), ID("aid", false),
                           JID("room", false), {"sent", F_BOOL, 0, false, NULL},
                           JID("with", false),
                           {"rr", F_BOOL, 0, false, NULL}, ID("filtered", false),
                           {"group", F_BOOL, 0, false, NULL}}},
    [ENV_ACK] = {"ack", {JID("to", true), {"ids", F_IDS, 1024, true, NULL},
                         ID("edge", false), ID("dev", false)}},
    [ENV_ERROR] = {"error", {JID("to", true), ID("code", true),
                             TEXT("msg", 1024, false), ID("id", false),
                             ID("edge", false), ID("dev", false),
                             ID("reason", false)}},
    [ENV_LOGOUT] = {"logout", {JID("from", true), ID("edge", true),
                               ID("dev", true)}},
    [ENV_DETACH] = {"detach", {JID("from", true), ID("edge", true),
                               ID("dev", true)}},
    [ENV_SESSION_END] = {"session_end", {JID("to", true),
                                         ID("reason", true), ID("worker", false)}},
    [ENV_REQ] = {"req", {JID("from", true), ID("edge", true), ID("dev", true),
                         {"frame", F_OBJ, 0, true, NULL}}},
    [ENV_EVENT] = {"event", {JID("to", true), {"frame", F_OBJ, 0, true, NULL},
                             ID("edge", false), ID("dev", false),
                             {"seq", F_INT, 0, false, NULL}, ID("epoch", false),
                             {"ts", F_INT, 0, false, NULL}}},
    [ENV_ACKED] = {"acked", {JID("from", true), {"upto", F_INT, 0, true, NULL},
                             {"after", F_INT, 0, true, NULL}}},
    [ENV_HANDOVER] = {"handover", {JID("from", true), {"env", F_OBJ, 0, true, NULL},
                                   {"hops", F_INT, 0, true, NULL}}},
};

static size_t nfields(const struct env_schema *s)
{
    size_t n = 0;
    while (n < MAXF && s->fields[n].name)
        n++;
    return n;
}

const char *env_type_name(enum env_type t)
{
    return t < ENV_TYPE_COUNT ? schemas[t].name : "?";
}

struct env *env_new(enum env_type t)
{
    struct env *e = xmalloc(sizeof(*e));
    e->type = t;
    e->obj = json_object();
    json_object_set_new(e->obj, "v", json_integer(ENV_VERSION));
    json_object_set_new(e->obj, "type", json_string(schemas[t].name));
    return e;
}

void env_free(struct env *e)
{
    if (!e)
        return;
    json_decref(e->obj);
    free(e);
}

void env_set_str(struct env *e, const char *key, const char *value)
{
    json_object_set_new(e->obj, key, json_string(value));
}

void env_set_int(struct env *e, const char *key, int64_t value)
{
    json_object_set_new(e->obj, key, json_integer((json_int_t)value));
}

void env_set_json(struct env *e, const char *key, json_t *value)
{
    json_object_set_new(e->obj, key, value);
}

const char *env_str(const struct env *e, const char *key)
{
    return json_string_value(json_object_get(e->obj, key));
}

int64_t env_int(const struct env *e, const char *key, int64_t def)
{
    json_t *v = json_object_get(e->obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

json_t *env_json(const struct env *e, const char *key)
{
    return json_object_get(e->obj, key);
}

/* The text write(o, arg) makes, malloc'd and NUL-terminated, its length
 * in *len: written into a buffer on the stack, and once more into one of
 * its size when it did not fit there. */
static char *text_of(void (*write)(struct jsonout *, const void *), const void *arg,
                     size_t *len)
{
    char small[1024];
    struct jsonout o = {small, 0, sizeof(small)};
    write(&o, arg);
    char *text = xmalloc(o.n + 1);
    if (o.n <= o.cap) {
        memcpy(text, small, o.n);
    } else {
        o = (struct jsonout){text, 0, o.n};
        write(&o, arg);
    }
    text[o.n] = '\0';
    if (len)
        *len = o.n;
    return text;
}

static void write_obj(struct jsonout *o, const void *obj)
{
    jsonout_json(o, obj);
}

char *env_encode(const struct env *e, size_t *len)
{
    return text_of(write_obj, e->obj, len);
}

/* A phone's chat, as env_chat_encode takes it. */
struct chat_fields {
    const json_t *from, *to, *body, *id;
    bool group;
    const char *edge, *dev;
    int64_t ts, pts;
};

static void write_chat(struct jsonout *o, const void *arg)
{
    const struct chat_fields *c = arg;
    jsonout_lit(o, "{\"v\":");
    jsonout_int(o, ENV_VERSION);
    jsonout_lit(o, ",\"type\":\"chat\",\"from\":");
    jsonout_json(o, c->from);
    jsonout_lit(o, ",\"to\":");
    jsonout_json(o, c->to);
    jsonout_lit(o, ",\"body\":");
    jsonout_json(o, c->body);
    if (c->group)
        jsonout_lit(o, ",\"group\":true");
    jsonout_lit(o, ",\"id\":");
    jsonout_json(o, c->id);
    jsonout_lit(o, ",\"edge\":\"");
    jsonout_put(o, c->edge, strlen(c->edge));
    jsonout_lit(o, "\",\"dev\":\"");
    jsonout_put(o, c->dev, strlen(c->dev));
    jsonout_lit(o, "\",\"ts\":");
    jsonout_int(o, c->ts);
    jsonout_lit(o, ",\"pts\":");
    jsonout_int(o, c->pts);
    jsonout_lit(o, "}");
}

char *env_chat_encode(const char *from, const json_t *to, const json_t *body,
                      bool group, const json_t *id, const char *edge,
                      const char *dev, int64_t ts, int64_t pts, size_t *len)
{
    json_t *f = json_string(from);
    struct chat_fields c = {f, to, body, id, group, edge, dev, ts, pts};
    char *text = text_of(write_chat, &c, len);
    json_decref(f);
    return text;
}

static size_t max_bytes = ENV_MAX_BYTES;

void env_set_max_bytes(size_t max)
{
    max_bytes = max;
}

struct env *env_decode(const char *buf, size_t len, char *err, size_t errlen)
{
    if (len > max_bytes) {
        snprintf(err, errlen, "envelope of %zu bytes is above %zu", len, max_bytes);
        return NULL;
    }
    char why[160];
    json_t *obj = jparse(buf, len, why, sizeof(why));
    if (!obj) {
        snprintf(err, errlen, "bad JSON: %s", why);
        return NULL;
    }
    return env_check(obj, err, errlen);
}

struct env *env_check(json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "not a JSON object");
        goto fail;
    }
    json_t *v = json_object_get(obj, "v");
    if (!json_is_integer(v) || json_integer_value(v) != ENV_VERSION) {
        snprintf(err, errlen, "unsupported envelope version");
        goto fail;
    }
    const char *type = json_string_value(json_object_get(obj, "type"));
    if (!type) {
        snprintf(err, errlen, "field 'type' is required");
        goto fail;
    }
    for (int t = 0; t < ENV_TYPE_COUNT; t++) {
        if (strcmp(type, schemas[t].name) != 0)
            continue;
        if (!schema_check(obj, schemas[t].fields, nfields(&schemas[t]), err,
                          errlen))
            goto fail;
        struct env *e = xmalloc(sizeof(*e));
        e->type = (enum env_type)t;
        e->obj = obj;
        return e;
    }
    snprintf(err, errlen, "unknown envelope type");
fail:
    json_decref(obj);
    return NULL;
}
