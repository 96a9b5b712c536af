/* inbox.c - the delivery window: Lua scripts run atomically in Redis, so the
 * sequence number, the stored copy and the PUBLISH can never disagree. */
#include "inbox.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* KEYS: seq hash, inbox zset. ARGV: channel, envelope without its leading
 * '{', ttl ms, max count, a fresh epoch (used only if there is none). An
 * "aid" in the envelope (the XMPP server's archive id) is kept as the
 * newest one stored. The
 * counter lives ten times longer than the inbox, so an idle user keeps the
 * epoch across long silences. */
static const char DELIVER[] =
    "local e=redis.call('HGET',KEYS[1],'epoch') "
    "if not e then e=ARGV[5] redis.call('HSET',KEYS[1],'epoch',e) end "
    "local s=redis.call('HINCRBY',KEYS[1],'seq',1) "
    "local p='{\"seq\":'..s..',\"epoch\":\"'..e..'\",'..ARGV[2] "
    "redis.call('ZADD',KEYS[2],s,p) "
    /* The server's archive id of the newest message stored: after a lost
     * session the bridge asks the archive for what came after it. */
    "local ok,d=pcall(cjson.decode,'{'..ARGV[2]) "
    "if ok and type(d)=='table' and type(d.aid)=='string' then "
    "redis.call('HSET',KEYS[1],'aid',d.aid) end "
    "redis.call('ZREMRANGEBYRANK',KEYS[2],0,-(tonumber(ARGV[4])+1)) "
    "redis.call('PEXPIRE',KEYS[2],ARGV[3]) "
    "redis.call('PEXPIRE',KEYS[1],tonumber(ARGV[3])*10) "
    "return {s,redis.call('PUBLISH',ARGV[1],p)}";

/* KEYS: seq hash, inbox zset. ARGV: after, limit. */
static const char FETCH[] =
    "local e=redis.call('HGET',KEYS[1],'epoch') or '' "
    "local s=tonumber(redis.call('HGET',KEYS[1],'seq') or '0') "
    "return {e,s,redis.call('ZRANGEBYSCORE',KEYS[2],'('..ARGV[1],'+inf',"
    "'LIMIT',0,ARGV[2])}";

static void keys(struct bus *bus, const char *jid, char *seq, char *inbox,
                 size_t n)
{
    snprintf(seq, n, "%s:seq:%s", bus_prefix(bus), jid);
    snprintf(inbox, n, "%s:inbox:%s", bus_prefix(bus), jid);
}

void inbox_deliver(struct bus *bus, const char *jid, const char *payload,
                   size_t len, long ttl_ms, long max_count, bus_reply_cb *cb,
                   void *data)
{
    char seq[1200], inbox[1200], channel[1200], ttl[24], max[24];
    char epoch[INBOX_EPOCH_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    bus_channel(bus, channel, sizeof(channel), "p", jid);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(max, sizeof(max), "%ld", max_count);
    util_random_hex(epoch, 6);
    /* The script prepends seq and epoch: hand it the object minus '{'. */
    const char *argv[] = {"EVAL", DELIVER, "2", seq, inbox, channel,
                          payload + 1, ttl, max, epoch};
    size_t argvlen[] = {4, sizeof(DELIVER) - 1, 1, strlen(seq), strlen(inbox),
                        strlen(channel), len - 1, strlen(ttl), strlen(max),
                        strlen(epoch)};
    bus_command_argv(bus, cb, data, 10, argv, argvlen);
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

void inbox_ack(struct bus *bus, const char *jid, int64_t upto)
{
    char seq[1200], inbox[1200], u[24];
    keys(bus, jid, seq, inbox, sizeof(seq));
    snprintf(u, sizeof(u), "%lld", (long long)upto);
    const char *argv[] = {"ZREMRANGEBYSCORE", inbox, "-inf", u};
    bus_command_argv(bus, NULL, NULL, 4, argv, NULL);
}
