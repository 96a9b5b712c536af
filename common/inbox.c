/* inbox.c - the delivery window: Lua scripts run atomically in Redis, so the
 * sequence number, the stored copy and the PUBLISH can never disagree. */
#include "inbox.h"
#include "lease.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* The scripts, with their keys and arguments, are in common/lua/. A script
 * that writes on a user's behalf starts with the fence check (lease.h). */
static const char DELIVER[] =
#include "fence.lua.h"
#include "deliver.lua.h"
    ;
static const char PUSH_OFFLINE[] =
#include "push_offline.lua.h"
    ;
static const char ACK[] =
#include "ack.lua.h"
    ;
static const char FETCH[] =
#include "fetch.lua.h"
    ;

static void keys(struct bus *bus, const char *jid, char *seq, char *inbox,
                 size_t n)
{
    snprintf(seq, n, "%s:seq:%s", bus_prefix(bus), jid);
    snprintf(inbox, n, "%s:inbox:%s", bus_prefix(bus), jid);
}

/* The push list, the push channel, and the list's last index kept. */
struct push_names {
    char list[200], channel[200], max[24];
};

static void push_names(struct bus *bus, struct push_names *pn)
{
    snprintf(pn->list, sizeof(pn->list), "%s:pushq", bus_prefix(bus));
    snprintf(pn->channel, sizeof(pn->channel), "%s:push", bus_prefix(bus));
    snprintf(pn->max, sizeof(pn->max), "%d", INBOX_PUSHQ_MAX - 1);
}

void inbox_deliver(struct bus *bus, const char *jid, const char *holder,
                   const char *expect, const char *payload, size_t len, long ttl_ms,
                   long max_count, const char *aid, const char *push, bus_reply_cb *cb,
                   void *data)
{
    char seq[1200], inbox[1200], channel[1200], ttl[24], max[24];
    char lease[1200], fence[1200];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    struct push_names pn;
    push_names(bus, &pn);
    if (!push)
        push = "";
    if (!aid)
        aid = "";
    char epoch[INBOX_EPOCH_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    bus_channel(bus, channel, sizeof(channel), "p", jid);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(max, sizeof(max), "%ld", max_count);
    util_random_hex(epoch, 6);
    /* The script prepends seq and epoch: hand it the object minus '{'. */
    const char *argv[] = {"EVAL", DELIVER, "5", seq, inbox, pn.list, lease, fence,
                          channel, payload + 1, ttl, max, epoch, push, pn.channel,
                          pn.max, aid, holder, expect};
    size_t argvlen[] = {4, sizeof(DELIVER) - 1, 1, strlen(seq), strlen(inbox),
                        strlen(pn.list), strlen(lease), strlen(fence), strlen(channel),
                        len - 1, strlen(ttl), strlen(max), strlen(epoch), strlen(push),
                        strlen(pn.channel), strlen(pn.max), strlen(aid), strlen(holder),
                        strlen(expect)};
    bus_command_argv(bus, cb, data, 19, argv, argvlen);
}

void inbox_fetch(struct bus *bus, const char *jid, int64_t after, int limit,
                 bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200], a[24], l[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(a, sizeof(a), "%lld", (long long)after);
    snprintf(l, sizeof(l), "%d", limit);
    const char *argv[] = {"EVAL", FETCH, "2", seq, inbox, a, l};
    bus_command_argv(bus, cb, data, 7, argv, NULL);
}

void inbox_epoch(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HGET", seq, "epoch"};
    bus_command_argv(bus, cb, data, 3, argv, NULL);
}

void inbox_last_aid(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HGET", seq, "aid"};
    bus_command_argv(bus, cb, data, 3, argv, NULL);
}

void inbox_ack(struct bus *bus, const char *jid, const char *dev, int64_t upto,
               long ttl_ms)
{
    char seq[1200], inbox[1200], cursor[1200], channel[1200];
    char u[24], now[24], ttl[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(cursor, sizeof(cursor), "%s:cursor:%s", bus_prefix(bus), jid);
    bus_channel(bus, channel, sizeof(channel), "x", jid);
    snprintf(u, sizeof(u), "%lld", (long long)upto);
    snprintf(now, sizeof(now), "%lld", (long long)util_wall_ms());
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    const char *argv[] = {"EVAL", ACK, "3", seq, inbox, cursor, u, dev, now,
                          ttl, channel, jid};
    bus_command_argv(bus, NULL, NULL, 12, argv, NULL);
}

void inbox_push_offline(struct bus *bus, const char *jid, const char *push)
{
    char seq[1200], inbox[1200];
    struct push_names pn;
    keys(bus, jid, seq, inbox, sizeof(seq));
    push_names(bus, &pn);
    const char *argv[] = {"EVAL", PUSH_OFFLINE, "3", seq, inbox, pn.list,
                          pn.channel, push, pn.max};
    bus_command_argv(bus, NULL, NULL, 9, argv, NULL);
}

void inbox_offline_reset(struct bus *bus, const char *jid)
{
    char seq[1200], inbox[1200];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HDEL", seq, "offline"};
    bus_command_argv(bus, NULL, NULL, 3, argv, NULL);
}
