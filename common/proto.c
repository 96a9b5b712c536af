/* proto.c - the request and event frames of the phone protocol's chat
 * features, as data. docs/PROTOCOL.md section 10 describes the same. */
#include "proto.h"
#include "envelope.h"

#include <stdio.h>
#include <string.h>

#define JID(n, r) {n, F_JID, ENV_MAX_JID, r, NULL}
#define ID(n, r) {n, F_ID, 64, r, NULL}
#define TEXT(n, max, r) {n, F_TEXT, max, r, NULL}
#define ENUM(n, choices, r) {n, F_ENUM, 0, r, choices}
#define BOOL(n, r) {n, F_BOOL, 0, r, NULL}
#define NICK(n, r) {n, F_NICK, 1023, r, NULL}

static const struct proto_frame requests[] = {
    {"presence", {ENUM("show", PROTO_SHOWS, true), TEXT("status", 1024, false)}},
    {"state", {BOOL("active", true)}},
    {"roster", {ID("id", true)}},
    {"roster_set", {ID("id", true), JID("jid", true), TEXT("name", 1024, false),
                    TEXT("group", 1024, false)}},
    {"roster_remove", {ID("id", true), JID("jid", true)}},
    {"sub", {JID("to", true), ENUM("type", PROTO_SUB_TYPES, true)}},
    {"typing", {JID("to", true), ENUM("state", PROTO_CHAT_STATES, true)}},
    {"read", {JID("to", true), ID("id", true)}},
    {"join", {ID("id", true), JID("room", true), NICK("nick", true),
              TEXT("pass", 1024, false)}},
    {"leave", {JID("room", true), ID("id", false)}},
    {"subject", {ID("id", true), JID("room", true), TEXT("subject", 1024, false)}},
    {"invite", {JID("room", true), JID("to", true), TEXT("reason", 1024, false),
                ID("id", false)}},
    {"history", {ID("id", true), JID("with", false), JID("room", false),
                 ID("before", false), ID("after", false),
                 {"max", F_INT, PROTO_HISTORY_MAX, false, NULL}}},
};

static const struct proto_frame events[] = {
    {"presence", {JID("from", true), ENUM("show", PROTO_SHOWS, true),
                  TEXT("status", 1024, false)}},
    {"typing", {JID("from", true), ENUM("state", PROTO_CHAT_STATES, true),
                JID("room", false)}},
    {"receipt", {JID("from", true), ID("id", true),
                 ENUM("state", "delivered|read", true)}},
    {"roster_push", {JID("jid", true), TEXT("name", 1024, false),
                     ENUM("sub", "none|to|from|both|remove", true),
                     ENUM("ask", "subscribe", false), TEXT("group", 1024, false)}},
    {"sub", {JID("from", true), ENUM("type", PROTO_SUB_TYPES, true)}},
    {"occupant", {JID("room", true), NICK("nick", true), JID("jid", false),
                  ID("role", false), ID("affiliation", false),
                  ENUM("show", PROTO_SHOWS, true), BOOL("me", false)}},
    {"subject", {JID("room", true), TEXT("subject", 1024, false),
                 NICK("by", false)}},
    {"invite", {JID("room", true), JID("from", true), TEXT("reason", 1024, false),
                TEXT("pass", 1024, false)}},
    {"ok", {ID("id", true), JID("room", false), NICK("nick", false)}},
    {"roster", {ID("id", true), {"items", F_LIST, 0, true, NULL}}},
    {"hist", {ID("id", true), ID("aid", true), JID("from", true),
              JID("to", false), TEXT("body", ENV_MAX_BODY, true),
              {"ts", F_INT, 0, true, NULL}, ID("mid", false), JID("room", false)}},
    {"history", {ID("id", true), BOOL("complete", true), ID("first", false),
                 ID("last", false), {"count", F_INT, 0, false, NULL}}},
};

static const struct proto_frame *find(const struct proto_frame *tab, size_t n,
                                      const char *t)
{
    for (size_t i = 0; t && i < n; i++)
        if (strcmp(tab[i].t, t) == 0)
            return &tab[i];
    return NULL;
}

const struct proto_frame *proto_request(const char *t)
{
    return find(requests, sizeof(requests) / sizeof(requests[0]), t);
}

const struct proto_frame *proto_event(const char *t)
{
    return find(events, sizeof(events) / sizeof(events[0]), t);
}

static size_t nfields(const struct proto_frame *pf)
{
    size_t n = 0;
    while (n < PROTO_MAXF && pf->fields[n].name)
        n++;
    return n;
}

bool proto_check(const struct proto_frame *pf, const json_t *frame, char *err,
                 size_t errlen)
{
    return schema_check(frame, pf->fields, nfields(pf), err, errlen);
}

bool proto_prep(const struct proto_frame *pf, json_t *frame, char *err,
                size_t errlen)
{
    return schema_prep(frame, pf->fields, nfields(pf), err, errlen);
}

static const struct proto_frame *check_in(const struct proto_frame *(*lookup)(const char *),
                                          const json_t *obj, char *err,
                                          size_t errlen)
{
    const char *t = json_string_value(json_object_get(obj, "t"));
    const struct proto_frame *pf = lookup(t);
    if (!pf) {
        snprintf(err, errlen, "unknown frame type");
        return NULL;
    }
    return proto_check(pf, obj, err, errlen) ? pf : NULL;
}

const struct proto_frame *proto_check_request(const json_t *obj, char *err,
                                              size_t errlen)
{
    return check_in(proto_request, obj, err, errlen);
}

const struct proto_frame *proto_check_event(const json_t *obj, char *err,
                                            size_t errlen)
{
    return check_in(proto_event, obj, err, errlen);
}
