/* test_bus.c - common/bus against a real redis-server, which this test
 * starts itself (loopback, a free port, no persistence) and stops: the
 * delivery rules the services build on, in orders a test of the whole
 * system cannot force. */
#include "bus.h"
#include "unit.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

static int redis_port;
static redisContext *cli; /* a plain client: publishes in its own order */

/* Receivers of a PUBLISH from the plain client. */
static long long publish(const char *channel, const char *payload)
{
    redisReply *r = redisCommand(cli, "PUBLISH %s %s", channel, payload);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

struct probe {
    bool up;
    int got;
    char last[64];
};

static void on_msg(void *owner, const char *channel, const char *payload, size_t len)
{
    struct probe *p = owner;
    p->got++;
    snprintf(p->last, sizeof(p->last), "%.*s", (int)len, payload);
}

static void on_state(void *owner, bool up)
{
    ((struct probe *)owner)->up = up;
}

/* Run the loop until *flag or about ms have passed. */
static void run_until(struct event_base *base, const bool *flag, int ms)
{
    int64_t end = util_mono_ms() + ms;
    while ((!flag || !*flag) && util_mono_ms() < end) {
        struct timeval tv = {0, 10 * 1000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

TEST(bus_delivers_what_redis_sent_before_an_unsubscribe)
{
    struct event_base *base = event_base_new();
    struct probe p = {0};
    struct bus_opts o = {.host = "127.0.0.1", .port = redis_port, .prefix = "t",
                         .name = "test"};
    struct bus *bus = bus_new(base, &o, on_msg, on_state, &p);
    run_until(base, &p.up, 5000);
    if (!CHECK(p.up))
        goto done;
    bus_subscribe(bus, "t:w:1");
    for (int i = 0; i < 200 && p.got == 0; i++) {
        publish("t:w:1", "first");
        run_until(base, NULL, 10);
    }
    if (!CHECK(p.got >= 1))
        goto done;
    int before = p.got;

    /* The UNSUBSCRIBE is queued, not yet written (the loop writes it). A
     * PUBLISH now is one Redis counts as received: the owner must see it. */
    bus_unsubscribe(bus, "t:w:1");
    CHECK_EQ_INT(publish("t:w:1", "in flight"), 1);
    run_until(base, NULL, 300);
    CHECK_EQ_INT(p.got, before + 1);
    CHECK_EQ_STR(p.last, "in flight");
    /* And once Redis processed it, nobody listens any more. */
    CHECK_EQ_INT(publish("t:w:1", "after"), 0);
    run_until(base, NULL, 100);
    CHECK_EQ_INT(p.got, before + 1);
done:
    bus_free(bus);
    event_base_free(base);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!(cli = unit_redis_start(&redis_port))) {
        printf("test_bus: could not start redis-server\n");
        unit_redis_stop(NULL);
        return 1;
    }
    RUN(bus_delivers_what_redis_sent_before_an_unsubscribe);
    unit_redis_stop(cli);
    return unit_done();
}
