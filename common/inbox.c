/* inbox.c - the delivery window: Lua scripts run atomically in Redis, so the
 * sequence number, the stored copy and the PUBLISH can never disagree. */
#include "inbox.h"
#include "lease.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* The scripts, with their keys and arguments, are in common/lua/. A script
 * that writes on a user's behalf starts with the fence check (lease.h). */
static struct bus_script DELIVER = {
#include "fence.lua.h"
#include "deliver.lua.h"
    , "", false};
static struct bus_script PUSH_OFFLINE = {
#include "push_offline.lua.h"
    , "", false};
static struct bus_script ACK = {
#include "ack.lua.h"
    , "", false};
static struct bus_script UNACKED = {
#include "unacked.lua.h"
    , "", false};
static struct bus_script FETCH = {
#include "fetch.lua.h"
    , "", false};

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

/* A new epoch, in case the user has none (12 hex digits): from a sequence
 * seeded once per process, not a system call per message. Epochs need to
 * differ, not to be secret. */
static void fresh_epoch(char out[INBOX_EPOCH_MAX])
{
    static uint64_t state;
    if (!state)
        util_random(&state, sizeof(state));
    uint64_t z = (state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    snprintf(out, INBOX_EPOCH_MAX, "%012llx", (unsigned long long)(z & 0xffffffffffffull));
}

void inbox_deliver(struct bus *bus, const char *jid, const char *holder,
                   const char *expect, const char *channels,
                   const struct inbox_item *items, size_t n, const char *aid,
                   long ttl_ms, long max_count, bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200], cursor[1200], ttl[24], max[24];
    char lease[1200], fence[1200], rr[24] = "";
    char epoch[INBOX_EPOCH_MAX];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    struct push_names pn;
    push_names(bus, &pn);
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(cursor, sizeof(cursor), "%s:cursor:%s", bus_prefix(bus), jid);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(max, sizeof(max), "%ld", max_count);
    fresh_epoch(epoch);
    for (size_t i = 0; i < n; i++)
        if (items[i].rr)
            snprintf(rr, sizeof(rr), "%zu", i + 1);
    enum { HEAD = 17 };
    const char *argv[HEAD + 2 * INBOX_BATCH_MAX] = {
        "6", seq, inbox, pn.list, lease, fence, cursor, channels, ttl, max, epoch,
        pn.channel, pn.max, holder, expect, aid ? aid : "", rr};
    size_t argvlen[HEAD + 2 * INBOX_BATCH_MAX];
    for (int i = 0; i < HEAD; i++)
        argvlen[i] = strlen(argv[i]);
    if (n > INBOX_BATCH_MAX)
        n = INBOX_BATCH_MAX; /* (callers batch at most that many) */
    for (size_t i = 0; i < n; i++) {
        /* The script prepends seq and epoch: hand it the object minus '{'. */
        argv[HEAD + 2 * i] = items[i].payload + 1;
        argvlen[HEAD + 2 * i] = items[i].len - 1;
        argv[HEAD + 2 * i + 1] = items[i].push ? items[i].push : "";
        argvlen[HEAD + 2 * i + 1] = items[i].push ? strlen(items[i].push) : 0;
    }
    bus_eval(bus, &DELIVER, cb, data, (int)(HEAD + 2 * n), argv, argvlen);
}

void inbox_fetch(struct bus *bus, const char *jid, int64_t after, int limit,
                 bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200], a[24], l[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(a, sizeof(a), "%lld", (long long)after);
    snprintf(l, sizeof(l), "%d", limit);
    const char *argv[] = {"2", seq, inbox, a, l};
    bus_eval(bus, &FETCH, cb, data, 5, argv, NULL);
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

void inbox_ack(struct bus *bus, const char *jid, const char *dev, const char *epoch,
               int64_t upto, long ttl_ms)
{
    char seq[1200], inbox[1200], cursor[1200], lease[1200], fence[1200], workers[200];
    char u[24], now[24], ttl[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(cursor, sizeof(cursor), "%s:cursor:%s", bus_prefix(bus), jid);
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    bus_channel(bus, workers, sizeof(workers), "w", "");
    snprintf(u, sizeof(u), "%lld", (long long)upto);
    snprintf(now, sizeof(now), "%lld", (long long)util_wall_ms());
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    const char *argv[] = {"4", inbox, cursor, seq, lease, u, dev, now, ttl, workers, jid, epoch};
    bus_eval(bus, &ACK, NULL, NULL, 12, argv, NULL);
}

void inbox_unacked(struct bus *bus, const char *jid, int limit, bus_reply_cb *cb,
                   void *data)
{
    char seq[1200], inbox[1200], cursor[1200], l[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(cursor, sizeof(cursor), "%s:cursor:%s", bus_prefix(bus), jid);
    snprintf(l, sizeof(l), "%d", limit);
    const char *argv[] = {"2", inbox, cursor, l};
    bus_eval(bus, &UNACKED, cb, data, 4, argv, NULL);
}

void inbox_push_offline(struct bus *bus, const char *jid, const char *push)
{
    char seq[1200], inbox[1200];
    struct push_names pn;
    keys(bus, jid, seq, inbox, sizeof(seq));
    push_names(bus, &pn);
    const char *argv[] = {"3", seq, inbox, pn.list,
                          pn.channel, push, pn.max};
    bus_eval(bus, &PUSH_OFFLINE, NULL, NULL, 7, argv, NULL);
}

void inbox_offline_reset(struct bus *bus, const char *jid)
{
    char seq[1200], inbox[1200];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HDEL", seq, "offline"};
    bus_command_argv(bus, NULL, NULL, 3, argv, NULL);
}
