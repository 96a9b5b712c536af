/* test_lease.c - the ownership scripts (common/lua/lease_take.lua,
 * fence.lua, and the write fenced by it: deliver.lua; then ack.lua) against
 * a real redis-server: who holds a user, which token, and that a writer
 * whose token is stale can no longer store anything, whatever Redis lost;
 * a batch stored under consecutive seqs in one call; acks that trim and
 * tell the session only when a receipt is owed. */
#include "lease.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

static const char TAKE[] =
#include "lease_take.lua.h"
    ;
static const char DELIVER[] =
#include "fence.lua.h"
#include "renumber.lua.h"
#include "deliver.lua.h"
    ;
static const char ACK[] =
#include "ack.lua.h"
    ;
static const char UNACKED[] =
#include "unacked.lua.h"
    ;

static redisContext *cli;

/* lease_take for owner with held ("" for a new session), 10 s. */
static bool take(const char *owner, const char *held, struct lease_answer *a)
{
    redisReply *r = redisCommand(cli, "EVAL %s 2 t:lease:u t:fence:u %s 10000 %s", TAKE,
                                 owner, held);
    bool ok = lease_parse(r, a);
    freeReplyObject(r);
    return ok;
}

/* deliver.lua for holder under epoch expect, n envelopes (the last asking
 * for a receipt when rr): the first seq (or -1, -2). */
/* The push envelope of every item of the next deliver_n, or NULL; and
 * deliver_n's last reply (freed by the next). */
static const char *push_next;
static redisReply *last_reply;
/* The highest seq the writer stored, for the next deliver_n (then 0). */
static long long stored_next;
enum { HEAD = 17 }; /* EVAL, the script, numkeys, 5 keys, 9 arguments */

static long long deliver_n(const char *holder, const char *expect, char *epoch_out, int n,
                           bool rr)
{
    static unsigned calls;
    char fresh[16]; /* the epoch a new numbering gets (random in inbox.c) */
    snprintf(fresh, sizeof(fresh), "e%011u", ++calls);
    char rrpos[8] = "";
    if (rr)
        snprintf(rrpos, sizeof(rrpos), "%d", n);
    char high[24];
    snprintf(high, sizeof(high), "%lld", stored_next);
    stored_next = 0;
    const char *argv[HEAD + 2 * 8] = {"EVAL", DELIVER, "5", "t:seq:u", "t:inbox:u",
                                      "t:lease:u", "t:fence:u", "t:cursor:u", "t:p:u",
                                      "60000", "100", fresh, holder, expect, "", rrpos, high};
    for (int i = 0; i < n && i < 8; i++) {
        argv[HEAD + 2 * i] = "\"type\":\"chat\"}";
        argv[HEAD + 1 + 2 * i] = push_next ? push_next : "";
    }
    push_next = NULL;
    redisReply *r = redisCommandArgv(cli, HEAD + 2 * n, argv, NULL);
    long long seq = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2
                        ? r->element[0]->integer
                        : -99;
    freeReplyObject(last_reply);
    last_reply = r;
    if (epoch_out && r && r->type == REDIS_REPLY_ARRAY && r->elements == 4)
        snprintf(epoch_out, 32, "%s", r->element[2]->str);
    return seq;
}

static long long deliver(const char *holder, const char *expect, char *epoch_out)
{
    return deliver_n(holder, expect, epoch_out, 1, false);
}

/* ack.lua: device dev acked upto at now: the seq trimmed up to. */
static long long ack(const char *dev, long long upto, long long now)
{
    char u[24], t[24];
    snprintf(u, sizeof(u), "%lld", upto);
    snprintf(t, sizeof(t), "%lld", now);
    char epoch[32] = "";
    redisReply *e = redisCommand(cli, "HGET t:seq:u epoch");
    if (e && e->type == REDIS_REPLY_STRING)
        snprintf(epoch, sizeof(epoch), "%s", e->str);
    freeReplyObject(e);
    const char *argv[] = {"EVAL", ACK, "4", "t:inbox:u", "t:cursor:u", "t:seq:u", "t:lease:u",
                          u, dev, t, "100000", "t:w:", "u@localhost", epoch};
    redisReply *r = redisCommandArgv(cli, 14, argv, NULL);
    long long low = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return low;
}

static long long zcard(void)
{
    redisReply *r = redisCommand(cli, "ZCARD t:inbox:u");
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return n;
}

static void cmd(const char *c)
{
    freeReplyObject(redisCommand(cli, c));
}

TEST(lease_one_holder_and_its_token)
{
    cmd("FLUSHALL");
    struct lease_answer a, b;
    if (!CHECK(take("A", "", &a)))
        return;
    CHECK_EQ_STR(a.holder, "A");
    CHECK(a.token[0] && a.ttl_ms == 0);
    /* Another worker is told who holds it, and for how long. */
    CHECK(take("B", "", &b));
    CHECK_EQ_STR(b.holder, "A");
    CHECK_EQ_STR(b.token, a.token);
    CHECK(b.ttl_ms > 0 && b.ttl_ms <= 10000);
    /* The holder renews with its token; with another it is not the holder. */
    CHECK(take("A", a.token, &b));
    CHECK_EQ_STR(b.holder, "A");
    CHECK(take("A", "1", &b));
    CHECK_EQ_STR(b.holder, "A");
    CHECK(strcmp(b.token, "1") != 0);
    CHECK(b.ttl_ms > 0);
}

TEST(fence_refuses_a_stale_holder)
{
    cmd("FLUSHALL");
    struct lease_answer a, b;
    char ha[LEASE_HOLDER_MAX], hb[LEASE_HOLDER_MAX];
    take("A", "", &a);
    lease_holder(ha, "A", a.token);
    CHECK_EQ_INT(deliver(ha, "", NULL), 1);
    /* A freezes; its lease lapses; B takes the user with a larger token. */
    cmd("DEL t:lease:u");
    CHECK(take("B", "", &b));
    CHECK_EQ_STR(b.holder, "B");
    CHECK(strtoll(b.token, NULL, 10) > strtoll(a.token, NULL, 10));
    lease_holder(hb, "B", b.token);
    /* A wakes: nothing it writes for the user is taken. */
    CHECK_EQ_INT(deliver(ha, "", NULL), -1);
    CHECK_EQ_INT(deliver(hb, "", NULL), 2);
    /* Its renewal says it lost the user. */
    struct lease_answer r;
    CHECK(take("A", a.token, &r));
    CHECK_EQ_STR(r.holder, "B");
    /* B leaves (lease released); A's token is still older than B's. */
    cmd("DEL t:lease:u");
    CHECK_EQ_INT(deliver(ha, "", NULL), -1);
    CHECK(take("A", a.token, &r));
    CHECK_EQ_STR(r.holder, ""); /* lost to a later token */
}

TEST(fence_survives_redis_losing_everything)
{
    cmd("FLUSHALL");
    struct lease_answer a, r;
    char ha[LEASE_HOLDER_MAX];
    take("A", "", &a);
    lease_holder(ha, "A", a.token);
    /* Redis restarts empty: the holder keeps the user (nobody took it)... */
    cmd("FLUSHALL");
    CHECK_EQ_INT(deliver(ha, "", NULL), 1);
    CHECK(take("A", a.token, &r));
    CHECK_EQ_STR(r.holder, "A");
    CHECK_EQ_STR(r.token, a.token);
    /* ...and a newcomer after the loss gets a token above the lost one. */
    cmd("FLUSHALL");
    struct lease_answer b;
    CHECK(take("B", "", &b));
    CHECK(strtoll(b.token, NULL, 10) > strtoll(a.token, NULL, 10));
    CHECK_EQ_INT(deliver(ha, "", NULL), -1);
}

TEST(deliver_refuses_a_numbering_it_does_not_know)
{
    cmd("FLUSHALL");
    char e1[32] = "", e2[32] = "";
    CHECK_EQ_INT(deliver("A 1", "", e1), 1);
    CHECK(strlen(e1) == 12);
    CHECK_EQ_INT(deliver("A 1", e1, NULL), 2);
    /* The counter is gone: a writer that knew e1 is told, nothing stored. */
    cmd("DEL t:seq:u");
    CHECK_EQ_INT(deliver("A 1", e1, NULL), -2);
    redisReply *r = redisCommand(cli, "EXISTS t:seq:u");
    CHECK(r && r->integer == 0);
    freeReplyObject(r);
    /* Stored again knowingly: a new numbering. */
    CHECK_EQ_INT(deliver("A 1", "", e2), 1);
    CHECK(strcmp(e1, e2) != 0);
}

TEST(deliver_a_batch_then_acks)
{
    cmd("FLUSHALL");
    /* A subscriber on the user's channel sees one PUBLISH per call. */
    int port = cli->tcp.port;
    redisContext *sub = redisConnect("127.0.0.1", port);
    redisReply *r = redisCommand(sub, "SUBSCRIBE t:p:u");
    freeReplyObject(r);
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 3, false), 1);
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 1, false), 4);
    CHECK_EQ_INT(zcard(), 4);
    void *reply;
    CHECK(redisGetReply(sub, &reply) == REDIS_OK);
    r = reply;
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          r->element[2]->str[0] == '[' && strstr(r->element[2]->str, "\"seq\":3,"));
    freeReplyObject(r);
    CHECK(redisGetReply(sub, &reply) == REDIS_OK);
    r = reply;
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          r->element[2]->str[0] == '{' && strstr(r->element[2]->str, "\"seq\":4,"));
    freeReplyObject(r);
    redisFree(sub);
    /* One device: what it acked goes. Another, seen lately, holds back
     * what it has not acked. */
    CHECK_EQ_INT(ack("p1", 2, 1000), 2);
    CHECK_EQ_INT(zcard(), 2);
    CHECK_EQ_INT(ack("p2", 1, 1000), 1);
    CHECK_EQ_INT(ack("p1", 4, 1001), 1);
    CHECK_EQ_INT(zcard(), 2);
    /* p2 unseen for longer than the cursor ttl: forgotten. */
    CHECK_EQ_INT(ack("p1", 4, 1000 + 100001), 4);
    CHECK_EQ_INT(zcard(), 0);
    redisReply *h = redisCommand(cli, "HGET t:cursor:u ~top");
    CHECK(h && h->type == REDIS_REPLY_STRING && strcmp(h->str, "4") == 0);
    freeReplyObject(h);
    /* Redis lost the numbering; an ack of the old one trims nothing of the
     * new one. */
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 3, false), 5);
    char u[8] = "7", t[8] = "2000";
    const char *argv[] = {"EVAL", ACK, "4", "t:inbox:u", "t:cursor:u", "t:seq:u", "t:lease:u",
                          u, "p1", t, "100000", "t:w:", "u@localhost", "0ldepoch0000"};
    redisReply *r2 = redisCommandArgv(cli, 14, argv, NULL);
    CHECK(r2 && r2->type == REDIS_REPLY_INTEGER && r2->integer == -1);
    freeReplyObject(r2);
    CHECK_EQ_INT(zcard(), 3);
}

TEST(ack_tells_the_session_only_when_a_receipt_is_owed)
{
    cmd("FLUSHALL");
    redisContext *sub = redisConnect("127.0.0.1", cli->tcp.port);
    /* The news goes to the worker the lease names ("A"). */
    freeReplyObject(redisCommand(sub, "SUBSCRIBE t:w:A"));
    freeReplyObject(redisCommand(cli, "SET t:lease:u %s", "A 1"));
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 2, false), 1); /* 1, 2: no receipt */
    ack("p1", 2, 1000);   /* nothing owed: no message */
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 2, true), 3);  /* 4 asks for one */
    ack("p1", 4, 1001);   /* passes 4: the session hears of it */
    ack("p1", 4, 1002);   /* again: not twice */
    freeReplyObject(redisCommand(cli, "PUBLISH t:w:A end"));
    void *reply;
    CHECK(redisGetReply(sub, &reply) == REDIS_OK);
    redisReply *r = reply;
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          strstr(r->element[2]->str, "\"type\":\"acked\"") &&
          strstr(r->element[2]->str, "\"upto\":4") && strstr(r->element[2]->str, "\"after\":2"));
    freeReplyObject(r);
    CHECK(redisGetReply(sub, &reply) == REDIS_OK);
    r = reply;
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          strcmp(r->element[2]->str, "end") == 0);
    freeReplyObject(r);
    redisFree(sub);
}

/* unacked.lua: how many envelopes a session taking the user over reads. */
static long long unacked(void)
{
    redisReply *r = redisCommand(cli, "EVAL %s 2 t:inbox:u t:cursor:u 100", UNACKED);
    long long n = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                          r->element[1]->type == REDIS_REPLY_ARRAY
                      ? (long long)r->element[1]->elements
                      : -99;
    freeReplyObject(r);
    return n;
}

TEST(unacked_reads_only_when_a_receipt_is_owed)
{
    cmd("FLUSHALL");
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 3, false), 1);
    CHECK_EQ_INT(unacked(), 0); /* nothing owed: nothing read */
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 2, true), 4);
    CHECK_EQ_INT(ack("p1", 2, 1000), 2);
    CHECK_EQ_INT(unacked(), 3); /* 3..5, the last asking for a receipt */
    CHECK_EQ_INT(ack("p1", 5, 1001), 5);
    CHECK_EQ_INT(unacked(), 0);
}

/* Push envelopes come back in the reply, with seq and unread: the script
 * writes no key outside its KEYS (the deployment's push list is another
 * Cluster slot than the user's keys; common/inbox.c queues them). */
TEST(deliver_returns_pushes_and_writes_only_its_keys)
{
    cmd("FLUSHALL");
    push_next = "{\"v\":1,\"type\":\"push\",\"to\":\"u@x\",\"ts\":1}";
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 2, false), 1);
    redisReply *r = last_reply;
    if (!CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
               r->element[3]->type == REDIS_REPLY_ARRAY && r->element[3]->elements == 2))
        return;
    CHECK(strstr(r->element[3]->element[0]->str, "\"seq\":1") &&
          strstr(r->element[3]->element[0]->str, "\"unread\":1"));
    CHECK(strstr(r->element[3]->element[1]->str, "\"seq\":2") &&
          strstr(r->element[3]->element[1]->str, "\"unread\":2"));
    /* Without pushes: an empty list. */
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 1, false), 3);
    r = last_reply;
    CHECK(r && r->elements == 4 && r->element[3]->type == REDIS_REPLY_ARRAY &&
          r->element[3]->elements == 0);
    /* Only the user's keys exist: the counter, the inbox (no lease was
     * taken; no cursor without a receipt). */
    redisReply *k = redisCommand(cli, "KEYS *");
    CHECK(k && k->type == REDIS_REPLY_ARRAY && k->elements == 2);
    for (size_t i = 0; k && i < k->elements; i++)
        CHECK(!strcmp(k->element[i]->str, "t:seq:u") || !strcmp(k->element[i]->str, "t:inbox:u"));
    freeReplyObject(k);
}

/* Redis came back with an older copy of the counter (same epoch, a lower
 * seq): the writer, which stored higher seqs, is refused, and the user is
 * moved to a new epoch at once; the counter goes on from where it is. An
 * ack of a seq the counter never gave changes nothing. */
TEST(deliver_refuses_a_counter_that_went_back)
{
    cmd("FLUSHALL");
    char e1[32] = "", e2[32] = "";
    CHECK_EQ_INT(deliver_n("A 1", "", e1, 5, true), 1);
    stored_next = 5;
    CHECK_EQ_INT(deliver_n("A 1", e1, NULL, 1, false), 6); /* as it should */
    CHECK_EQ_INT(ack("p1", 2, 1000), 2); /* the inbox holds 3..6 */
    /* The older copy: seq 3 of the same epoch. */
    cmd("HSET t:seq:u seq 3");
    CHECK_EQ_INT(ack("p1", 6, 1000), -1); /* beyond the counter: refused */
    stored_next = 6;
    CHECK_EQ_INT(deliver_n("A 1", e1, NULL, 1, false), -2);
    redisReply *r = last_reply;
    CHECK(r && r->elements == 3 && r->element[1]->integer == 3 &&
          !strcmp(r->element[2]->str, "back"));
    redisReply *h = redisCommand(cli, "HMGET t:cursor:u ~rr ~top");
    CHECK(h && h->element[0]->type == REDIS_REPLY_NIL && h->element[1]->type == REDIS_REPLY_NIL);
    freeReplyObject(h);
    /* The new epoch holds what the inbox held (3..6), renumbered 1..4; the
     * device's cursor counts nothing of it yet; the writer stores again
     * after them. */
    CHECK_EQ_INT(zcard(), 4);
    redisReply *c = redisCommand(cli, "HGET t:cursor:u p1");
    CHECK(c && c->type == REDIS_REPLY_STRING && !strcmp(c->str, "0 1000"));
    freeReplyObject(c);
    CHECK_EQ_INT(deliver_n("A 1", "", e2, 1, false), 5);
    redisReply *z = redisCommand(cli, "ZRANGE t:inbox:u 0 0 WITHSCORES");
    CHECK(z && z->elements == 2 && !strcmp(z->element[1]->str, "1") &&
          strstr(z->element[0]->str, e2) && !strstr(z->element[0]->str, e1));
    freeReplyObject(z);
    CHECK(e2[0] && strcmp(e1, e2) != 0);
    /* The old epoch's writer is told it is lost, not back. */
    stored_next = 6;
    CHECK_EQ_INT(deliver_n("A 1", e1, NULL, 1, false), -2);
    CHECK(last_reply && last_reply->elements == 3 && !strcmp(last_reply->element[2]->str, "lost"));
    /* A counter at or above what the writer stored is fine. */
    stored_next = 5;
    CHECK_EQ_INT(deliver_n("A 1", e2, NULL, 1, false), 6);
}

static long long pttl(const char *key)
{
    redisReply *r = redisCommand(cli, "PTTL %s", key);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return v;
}

/* ack.lua sets the cursor hash's TTL (100000 ms here) when none was set,
 * then again only once a quarter of it has gone by the acks' clock, or
 * when an ack's clock is behind the last setting: the hash never has
 * less than three quarters of its TTL left, and most acks spend no
 * PEXPIRE. */
TEST(ack_sets_the_cursor_ttl_once_a_quarter_has_gone)
{
    cmd("FLUSHALL");
    CHECK_EQ_INT(deliver_n("A 1", "", NULL, 6, false), 1);
    /* A hash deliver.lua made (a receipt owed) has no TTL: the first ack sets it. */
    cmd("HSET t:cursor:u ~rr 1");
    CHECK_EQ_INT(pttl("t:cursor:u"), -1);
    CHECK_EQ_INT(ack("p1", 1, 50000), 1);
    CHECK(pttl("t:cursor:u") > 99000);
    /* Within a quarter: the TTL is left as it is (lowered by hand to see it). */
    cmd("PEXPIRE t:cursor:u 60000");
    CHECK_EQ_INT(ack("p1", 2, 50000 + 24999), 2);
    long long left = pttl("t:cursor:u");
    if (!CHECK(left > 0 && left <= 60000))
        printf("    pttl %lld\n", left);
    /* A quarter gone: set again. */
    CHECK_EQ_INT(ack("p1", 3, 50000 + 25000), 3);
    CHECK(pttl("t:cursor:u") > 99000);
    /* A clock behind the last setting (another edge's): set again. */
    cmd("PEXPIRE t:cursor:u 60000");
    CHECK_EQ_INT(ack("p2", 3, 40000), 3);
    CHECK(pttl("t:cursor:u") > 99000);
    /* The stamp is not taken for a device. */
    redisReply *h = redisCommand(cli, "HGET t:cursor:u ~exp");
    CHECK(h && h->type == REDIS_REPLY_STRING && strcmp(h->str, "40000") == 0);
    freeReplyObject(h);
    CHECK_EQ_INT(ack("p1", 6, 40001), 3); /* p2 still holds 4..6 back */
}

int main(void)
{
    int port;
    if (!(cli = unit_redis_start(&port))) {
        printf("test_lease: could not start redis-server\n");
        unit_redis_stop(NULL);
        return 1;
    }
    RUN(lease_one_holder_and_its_token);
    RUN(fence_refuses_a_stale_holder);
    RUN(fence_survives_redis_losing_everything);
    RUN(deliver_refuses_a_numbering_it_does_not_know);
    RUN(deliver_a_batch_then_acks);
    RUN(ack_tells_the_session_only_when_a_receipt_is_owed);
    RUN(unacked_reads_only_when_a_receipt_is_owed);
    RUN(deliver_returns_pushes_and_writes_only_its_keys);
    RUN(deliver_refuses_a_counter_that_went_back);
    RUN(ack_sets_the_cursor_ttl_once_a_quarter_has_gone);
    freeReplyObject(last_reply);
    unit_redis_stop(cli);
    return unit_done();
}
