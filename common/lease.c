/* lease.c - a user's session lease and its fencing token (see lease.h). */
#include "lease.h"
#include "keys.h"

#include <stdio.h>
#include <string.h>

/* The scripts, with their keys and arguments, are in common/lua/. */
static struct bus_script TAKE = {
#include "lease_take.lua.h"
    , "", false};
static struct bus_script RELEASE = {
#include "lease_release.lua.h"
    , "", false};

void lease_keys(const struct bus *bus, const char *jid, char *lease, char *fence,
                size_t n)
{
    keys_user(bus, lease, n, KEYS_LEASE, jid);
    keys_user(bus, fence, n, KEYS_FENCE, jid);
}

void lease_holder(char *out, const char *owner, const char *token)
{
    snprintf(out, LEASE_HOLDER_MAX, "%s %s", owner, token);
}

void lease_take(struct bus *bus, const char *jid, const char *owner,
                const char *held, long ms, bus_reply_cb *cb, void *data)
{
    char lease[KEYS_MAX], fence[KEYS_MAX], t[24];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    snprintf(t, sizeof(t), "%ld", ms);
    const char *argv[] = {"2", lease, fence, owner, t, held ? held : ""};
    bus_eval(bus, &TAKE, cb, data, 6, argv, NULL);
}

bool lease_parse(const redisReply *r, struct lease_answer *out)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->len >= sizeof(out->holder) ||
        r->element[1]->len >= sizeof(out->token))
        return false;
    memcpy(out->holder, r->element[0]->str, r->element[0]->len + 1);
    memcpy(out->token, r->element[1]->str, r->element[1]->len + 1);
    out->ttl_ms = r->element[2]->integer > 0 ? r->element[2]->integer : 0;
    return true;
}

void lease_release(struct bus *bus, const char *jid, const char *owner,
                   const char *token, bus_reply_cb *cb, void *data)
{
    char lease[KEYS_MAX], fence[KEYS_MAX], holder[LEASE_HOLDER_MAX];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    lease_holder(holder, owner, token);
    const char *argv[] = {"1", lease, holder};
    bus_eval(bus, &RELEASE, cb, data, 3, argv, NULL);
}
