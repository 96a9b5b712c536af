/* test_lease.c - the ownership scripts (common/lua/lease_take.lua,
 * fence.lua, and the writes fenced by it: deliver.lua, acked.lua) against a
 * real redis-server: who holds a user, which token, and that a writer whose
 * token is stale can no longer store anything, whatever Redis lost. */
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
#include "deliver.lua.h"
    ;
static const char ACKED[] =
#include "fence.lua.h"
#include "acked.lua.h"
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

/* deliver.lua for holder under epoch expect: the seq (or -1, -2). */
static long long deliver(const char *holder, const char *expect, char *epoch_out)
{
    static unsigned calls;
    char fresh[16]; /* the epoch a new numbering gets (random in inbox.c) */
    snprintf(fresh, sizeof(fresh), "e%011u", ++calls);
    const char *argv[] = {"EVAL", DELIVER, "5", "t:seq:u", "t:inbox:u", "t:pushq",
                          "t:lease:u", "t:fence:u", "t:p:u", "\"type\":\"chat\"}",
                          "60000", "100", fresh, "", "t:push", "99", "", holder,
                          expect};
    redisReply *r = redisCommandArgv(cli, 19, argv, NULL);
    long long seq = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2
                        ? r->element[0]->integer
                        : -99;
    if (epoch_out && r && r->type == REDIS_REPLY_ARRAY && r->elements == 3)
        snprintf(epoch_out, 32, "%s", r->element[2]->str);
    freeReplyObject(r);
    return seq;
}

static long long acked(const char *holder)
{
    redisReply *r = redisCommand(cli, "EVAL %s 3 t:acked:u t:lease:u t:fence:u %s 1 512 c1",
                                 ACKED, holder);
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
    CHECK_EQ_INT(acked(ha), 1);
    /* A freezes; its lease lapses; B takes the user with a larger token. */
    cmd("DEL t:lease:u");
    CHECK(take("B", "", &b));
    CHECK_EQ_STR(b.holder, "B");
    CHECK(strtoll(b.token, NULL, 10) > strtoll(a.token, NULL, 10));
    lease_holder(hb, "B", b.token);
    /* A wakes: nothing it writes for the user is taken. */
    CHECK_EQ_INT(deliver(ha, "", NULL), -1);
    CHECK_EQ_INT(acked(ha), -1);
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
    unit_redis_stop(cli);
    return unit_done();
}
