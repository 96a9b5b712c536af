/* inbox.c - the delivery window: Lua scripts run atomically in Redis, so the
 * sequence number, the stored copy and the PUBLISH can never disagree. */
#include "inbox.h"
#include "keys.h"
#include "lease.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The scripts, with their keys and arguments, are in common/lua/. A script
 * that writes on a user's behalf starts with the fence check (lease.h). */
static struct bus_script DELIVER = {
#include "fence.lua.h"
#include "renumber.lua.h"
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
    keys_user(bus, seq, n, KEYS_SEQ, jid);
    keys_user(bus, inbox, n, KEYS_INBOX, jid);
}

/* ---- push envelopes: after the script, from here ------------------------
 * The push list and channel are the deployment's, not the user's: in a
 * Redis Cluster they live on another node than the user's keys, and no
 * script may touch both. The scripts return the push envelopes they built
 * (with seq and unread); they are published and queued here, as soon as
 * the reply comes, in their order. A bridge that dies between the two
 * loses those pushes, not the messages (they stay in the inbox). */

/* A script call whose reply carries push envelopes, and its caller's cb. */
struct push_call {
    struct bus *bus;
    bus_reply_cb *cb; /* the caller's, may be NULL */
    void *data;       /* the caller's, handed to cb */
    int at;           /* where the reply holds them: the index of an array
                         of strings in an array reply, or -1: the reply is
                         one string */
};

static void push_send(struct bus *bus, const redisReply *const *texts, size_t n)
{
    char list[200], channel[200], max[24]; /* (a prefix is <= 100) */
    if (n == 0)
        return;
    snprintf(list, sizeof(list), "%s:pushq", bus_prefix(bus));
    snprintf(channel, sizeof(channel), "%s:push", bus_prefix(bus));
    snprintf(max, sizeof(max), "%d", INBOX_PUSHQ_MAX - 1);
    const char *argv[2 + INBOX_BATCH_MAX] = {"LPUSH", list};
    size_t argvlen[2 + INBOX_BATCH_MAX] = {5, strlen(list)};
    size_t k = 2;
    for (size_t i = 0; i < n && k < 2 + INBOX_BATCH_MAX; i++) {
        bus_publish(bus, channel, texts[i]->str, texts[i]->len, NULL, NULL);
        argv[k] = texts[i]->str;
        argvlen[k++] = texts[i]->len;
    }
    bus_command_argv(bus, NULL, NULL, (int)k, argv, argvlen);
    const char *trim[] = {"LTRIM", list, "0", max};
    bus_command_argv(bus, NULL, NULL, 4, trim, NULL);
}

static void on_pushes(void *owner, void *data, redisReply *r)
{
    struct push_call *pc = data;
    const redisReply *texts[INBOX_BATCH_MAX];
    size_t n = 0;
    const redisReply *a = NULL;
    if (r && pc->at < 0 && r->type == REDIS_REPLY_STRING)
        texts[n++] = r;
    else if (r && pc->at >= 0 && r->type == REDIS_REPLY_ARRAY && r->elements > (size_t)pc->at)
        a = r->element[pc->at];
    for (size_t i = 0; a && a->type == REDIS_REPLY_ARRAY && i < a->elements &&
                       n < INBOX_BATCH_MAX; i++)
        if (a->element[i]->type == REDIS_REPLY_STRING)
            texts[n++] = a->element[i];
    push_send(pc->bus, texts, n);
    if (pc->cb)
        pc->cb(owner, pc->data, r);
    free(pc);
}

static struct push_call *push_call(struct bus *bus, bus_reply_cb *cb, void *data, int at)
{
    struct push_call *pc = xcalloc(1, sizeof(*pc));
    *pc = (struct push_call){bus, cb, data, at};
    return pc;
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
    for (int i = 11; i >= 0; i--, z >>= 4) /* 12 hex digits */
        out[i] = "0123456789abcdef"[z & 15];
    out[12] = '\0';
}

void inbox_deliver(struct bus *bus, const char *jid, const char *holder,
                   const char *expect, const char *channels,
                   int64_t stored, const struct inbox_item *items, size_t n,
                   const char *aid, long ttl_ms, long max_count, bus_reply_cb *cb,
                   void *data)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX], cursor[KEYS_MAX];
    char ttl[UTIL_I64_MAX], max[UTIL_I64_MAX], high[UTIL_I64_MAX], rr[UTIL_I64_MAX] = "";
    char lease[KEYS_MAX], fence[KEYS_MAX];
    char epoch[INBOX_EPOCH_MAX];
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    keys(bus, jid, seq, inbox, sizeof(seq));
    keys_user(bus, cursor, sizeof(cursor), KEYS_CURSOR, jid);
    util_i64(ttl, ttl_ms);
    util_i64(max, max_count);
    util_i64(high, expect[0] ? stored : 0);
    fresh_epoch(epoch);
    bool pushes = false;
    for (size_t i = 0; i < n; i++) {
        if (items[i].rr)
            util_i64(rr, (int64_t)i + 1);
        pushes |= items[i].push != NULL;
    }
    /* Every key is the user's (one hash tag: one Cluster slot). */
    enum { HEAD = 15 };
    const char *argv[HEAD + 2 * INBOX_BATCH_MAX] = {
        "5", seq, inbox, lease, fence, cursor, channels, ttl, max, epoch,
        holder, expect, aid ? aid : "", rr, high};
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
    if (pushes) /* (rare: only for users whose phones are all away) */
        bus_eval(bus, &DELIVER, on_pushes, push_call(bus, cb, data, 3),
                 (int)(HEAD + 2 * n), argv, argvlen);
    else
        bus_eval(bus, &DELIVER, cb, data, (int)(HEAD + 2 * n), argv, argvlen);
}

void inbox_fetch(struct bus *bus, const char *jid, int64_t after, int limit,
                 bus_reply_cb *cb, void *data)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX], a[24], l[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(a, sizeof(a), "%lld", (long long)after);
    snprintf(l, sizeof(l), "%d", limit);
    const char *argv[] = {"2", seq, inbox, a, l};
    bus_eval(bus, &FETCH, cb, data, 5, argv, NULL);
}

void inbox_epoch(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HGET", seq, "epoch"};
    bus_command_argv(bus, cb, data, 3, argv, NULL);
}

void inbox_last_aid(struct bus *bus, const char *jid, bus_reply_cb *cb, void *data)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HGET", seq, "aid"};
    bus_command_argv(bus, cb, data, 3, argv, NULL);
}

void inbox_ack(struct bus *bus, const char *jid, const char *dev, const char *epoch,
               int64_t upto, long ttl_ms)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX], cursor[KEYS_MAX], lease[KEYS_MAX], fence[KEYS_MAX];
    char workers[200];
    char u[UTIL_I64_MAX], now[UTIL_I64_MAX], ttl[UTIL_I64_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    keys_user(bus, cursor, sizeof(cursor), KEYS_CURSOR, jid);
    lease_keys(bus, jid, lease, fence, sizeof(lease));
    bus_channel(bus, workers, sizeof(workers), "w", "");
    util_i64(u, upto);
    util_i64(now, util_wall_ms());
    util_i64(ttl, ttl_ms);
    const char *argv[] = {"4", inbox, cursor, seq, lease, u, dev, now, ttl, workers, jid, epoch};
    bus_eval(bus, &ACK, NULL, NULL, 12, argv, NULL);
}

void inbox_unacked(struct bus *bus, const char *jid, int limit, bus_reply_cb *cb,
                   void *data)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX], cursor[KEYS_MAX], l[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    keys_user(bus, cursor, sizeof(cursor), KEYS_CURSOR, jid);
    snprintf(l, sizeof(l), "%d", limit);
    const char *argv[] = {"2", inbox, cursor, l};
    bus_eval(bus, &UNACKED, cb, data, 4, argv, NULL);
}

void inbox_push_offline(struct bus *bus, const char *jid, const char *push)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"2", seq, inbox, push};
    bus_eval(bus, &PUSH_OFFLINE, on_pushes, push_call(bus, NULL, NULL, -1), 4, argv, NULL);
}

void inbox_offline_reset(struct bus *bus, const char *jid)
{
    char seq[KEYS_MAX], inbox[KEYS_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    const char *argv[] = {"HDEL", seq, "offline"};
    bus_command_argv(bus, NULL, NULL, 3, argv, NULL);
}
