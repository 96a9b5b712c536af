/* inbox.c - the delivery window: Lua scripts run atomically in Redis, so the
 * sequence number, the stored copy and the PUBLISH can never disagree. */
#include "inbox.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* KEYS: seq hash, inbox zset, push list. ARGV: channel, envelope without
 * its leading '{', ttl ms, max count, a fresh epoch (used only if there is
 * none), push envelope or "", push channel, push list max index. An
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
    "local n=redis.call('PUBLISH',ARGV[1],p) "
    /* A push envelope: one per stored message, whoever stored it. */
    "if ARGV[6]~='' then "
    "local q=cjson.decode(ARGV[6]) q.seq=s q.unread=redis.call('ZCARD',KEYS[2]) "
    "local t=cjson.encode(q) redis.call('PUBLISH',ARGV[7],t) "
    "redis.call('LPUSH',KEYS[3],t) redis.call('LTRIM',KEYS[3],0,ARGV[8]) end "
    "return {s,n}";

/* KEYS: seq hash, inbox zset, push list. ARGV: push channel, envelope, list
 * max index. "unread": what waits in the inbox plus what the XMPP server
 * stored since the session closed (counted in the seq hash's "offline",
 * reset by the next session). */
static const char PUSH_OFFLINE[] =
    "local n=redis.call('HINCRBY',KEYS[1],'offline',1) "
    "local q=cjson.decode(ARGV[2]) q.unread=redis.call('ZCARD',KEYS[2])+n "
    "local t=cjson.encode(q) redis.call('PUBLISH',ARGV[1],t) "
    "redis.call('LPUSH',KEYS[3],t) redis.call('LTRIM',KEYS[3],0,ARGV[3]) return n";

/* KEYS: seq hash, inbox zset, cursor hash. ARGV: upto, device, now ms,
 * ttl ms, the session's channel, the user's JID. The seq hash's "acked" is
 * the highest seq any device acked: receipts go out once, at the first. */
static const char ACK[] =
    "local upto=tonumber(ARGV[1]) local now=tonumber(ARGV[3]) "
    "local ttl=tonumber(ARGV[4]) "
    "redis.call('HSET',KEYS[3],ARGV[2],upto..' '..now) "
    "redis.call('PEXPIRE',KEYS[3],ttl) "
    "local top=tonumber(redis.call('HGET',KEYS[1],'acked') or '0') "
    "local rr={} "
    "if upto>top then "
    "for _,p in ipairs(redis.call('ZRANGEBYSCORE',KEYS[2],'('..top,upto)) do "
    "local ok,d=pcall(cjson.decode,p) "
    "if ok and type(d)=='table' and d.rr==true and type(d.from)=='string' "
    "and type(d.id)=='string' then rr[#rr+1]={to=d.from,id=d.id} end end "
    "redis.call('HSET',KEYS[1],'acked',upto) end "
    /* Keep what a device seen lately has not acked yet. */
    "local low=upto local all=redis.call('HGETALL',KEYS[3]) "
    "for i=1,#all,2 do local a,b=string.match(all[i+1],'^(%d+) (%d+)$') "
    "if a and now-tonumber(b)<ttl then if tonumber(a)<low then low=tonumber(a) end "
    "else redis.call('HDEL',KEYS[3],all[i]) end end "
    "redis.call('ZREMRANGEBYSCORE',KEYS[2],'-inf',low) "
    "if #rr>0 then redis.call('PUBLISH',ARGV[5],cjson.encode("
    "{v=1,type='acked',from=ARGV[6],rr=rr})) end "
    "return low";

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

void inbox_deliver(struct bus *bus, const char *jid, const char *payload,
                   size_t len, long ttl_ms, long max_count, const char *push,
                   bus_reply_cb *cb, void *data)
{
    char seq[1200], inbox[1200], channel[1200], ttl[24], max[24];
    struct push_names pn;
    push_names(bus, &pn);
    if (!push)
        push = "";
    char epoch[INBOX_EPOCH_MAX];
    keys(bus, jid, seq, inbox, sizeof(seq));
    bus_channel(bus, channel, sizeof(channel), "p", jid);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(max, sizeof(max), "%ld", max_count);
    util_random_hex(epoch, 6);
    /* The script prepends seq and epoch: hand it the object minus '{'. */
    const char *argv[] = {"EVAL", DELIVER, "3", seq, inbox, pn.list, channel,
                          payload + 1, ttl, max, epoch, push, pn.channel, pn.max};
    size_t argvlen[] = {4, sizeof(DELIVER) - 1, 1, strlen(seq), strlen(inbox),
                        strlen(pn.list), strlen(channel), len - 1, strlen(ttl),
                        strlen(max), strlen(epoch), strlen(push),
                        strlen(pn.channel), strlen(pn.max)};
    bus_command_argv(bus, cb, data, 14, argv, argvlen);
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
