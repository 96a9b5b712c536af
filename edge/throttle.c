/* throttle.c - the failed-login throttle: counts of wrong passwords in
 * Redis per source address, per account and per device token, checked
 * before a login goes to a bridge; and the device tokens in welcome frames.
 * See throttle.h for the rules. */
#include "throttle.h"
#include "bus.h"
#include "edge.h"
#include "keys.h"
#include "log.h"
#include "seal.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A count and its seconds to live, in one round trip (absent: 0, -2). */
static struct bus_script COUNT_READ = BUS_SCRIPT(
    "return {tonumber(redis.call('GET',KEYS[1]) or '0'),"
    "redis.call('TTL',KEYS[1])}");
/* One more failure; the window starts at the first (a count without a
 * TTL is given one, so none outlives its window by mistake). */
static struct bus_script COUNT_ADD = BUS_SCRIPT(
    "local n=redis.call('INCR',KEYS[1]) "
    "if redis.call('TTL',KEYS[1])<0 then "
    "redis.call('EXPIRE',KEYS[1],ARGV[1]) end return n");

#define DEVICE_HEX 16     /* a device id: 64 random bits in hex */
#define KEY_MAX 1200      /* a JID, or "imb-device:" + a JID (token_aad) */
#define OPEN_LOG_MS 10000 /* at most one fail-open line per this */

static const char *const reasons[THROTTLE_VERDICTS] = {"pass", "ip", "account",
                                                       "device"};

struct throttle {
    struct strmap devices;  /* dev -> device id (malloc'd), for the logins in
                               flight that came with a valid device token */
    int64_t open_logged_ms; /* when the last fail-open line was written */
};

/* One count a check reads. */
struct count {
    struct check *k;
    enum throttle_verdict reason; /* what this count over its limit means */
    long limit;
};

/* A check in flight: its counts (at most two) come back one at a time. */
struct check {
    char dev[20];
    uint8_t seq;
    throttle_cb *cb;
    struct count counts[2];
    int ncounts;
    int pending;                  /* replies still to come */
    enum throttle_verdict verdict; /* the first count over its limit, or PASS */
    long retry_s;
    char peer[INET6_ADDRSTRLEN + 4];
    char jid[KEY_MAX];
};

struct throttle *throttle_new(void)
{
    struct throttle *t = xcalloc(1, sizeof(*t));
    strmap_init(&t->devices);
    return t;
}

void throttle_free(struct throttle *t)
{
    if (!t)
        return;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&t->devices, &it); e;
         e = strmap_next(&t->devices, &it))
        free(e->value);
    strmap_free(&t->devices);
    free(t);
}

const char *throttle_reason(enum throttle_verdict v)
{
    return v < THROTTLE_VERDICTS ? reasons[v] : "?";
}

/* The source address as counted: IPv4 dotted (mapped or not); IPv6 by its
 * /64, which one subscriber usually holds whole. */
static void peer_text(const struct conn *c, char *out, size_t n)
{
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)c->ip)) {
        inet_ntop(AF_INET, c->ip + 12, out, (socklen_t)n);
        return;
    }
    uint8_t net[16] = {0};
    memcpy(net, c->ip, 8);
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, net, text, sizeof(text));
    snprintf(out, n, "%s/64", text);
}

static void count_key(const struct edge *edge, char *out, size_t n,
                      const char *kind, const char *id)
{
    keys_user(edge->bus, out, n, kind, id);
}

/* The AAD of a device token: never the JID alone, so a sealed password
 * from the bus is no token, and a token is no sealed password. */
static void token_aad(char *out, size_t n, const char *jid)
{
    snprintf(out, n, "imb-device:%s", jid);
}

static int64_t token_max_age_ms(const struct edge *edge)
{
    return (int64_t)edge->cfg->device_token_days * 86400 * 1000;
}

/* The device id in token if it is a valid token for jid, else false. */
static bool token_open(const struct edge *edge, const char *jid,
                       const char *token, char device[DEVICE_HEX + 1])
{
    if (!token || edge->cfg->device_token_days == 0)
        return false;
    char aad[KEY_MAX];
    token_aad(aad, sizeof(aad), jid);
    char *id = seal_decrypt(edge->cred_key, aad, token, util_wall_ms(),
                            token_max_age_ms(edge));
    bool ok = id && strlen(id) == DEVICE_HEX && strspn(id, "0123456789abcdef") == DEVICE_HEX;
    if (ok)
        memcpy(device, id, DEVICE_HEX + 1);
    seal_wipe_free(id);
    return ok;
}

static void fail_open(struct edge *edge, const char *jid)
{
    edge->stats.throttle_open++;
    int64_t now = util_mono_ms();
    if (edge->throttle->open_logged_ms &&
        now - edge->throttle->open_logged_ms < OPEN_LOG_MS)
        return;
    edge->throttle->open_logged_ms = now;
    LOG(WARN, "throttle_unavailable", "jid=%s hint=\"Redis did not answer: "
        "logins pass unthrottled\"", jid);
}

static void check_done(struct edge *edge, struct check *k)
{
    if (k->verdict != THROTTLE_PASS) {
        edge->stats.logins_throttled[k->verdict]++;
        LOG(WARN, "login_throttled", "reason=%s jid=%s peer=%s dev=%s retry=%ld",
            throttle_reason(k->verdict), k->jid, k->peer, k->dev, k->retry_s);
    }
    k->cb(edge, k->dev, k->seq, k->jid, k->verdict, k->retry_s);
    free(k);
}

static void on_count(void *owner, void *data, redisReply *r)
{
    struct edge *edge = owner;
    struct count *n = data;
    struct check *k = n->k;
    k->pending--;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long failures = r->element[0]->integer, ttl = r->element[1]->integer;
        /* Both over: the address is named (it says more about the attack). */
        if (failures >= n->limit &&
            (k->verdict == THROTTLE_PASS || n->reason < k->verdict)) {
            k->verdict = n->reason;
            k->retry_s = ttl > 0 ? (long)ttl : 1;
        }
    } else {
        fail_open(edge, k->jid);
    }
    if (k->pending == 0)
        check_done(edge, k);
}

static void count_read(struct edge *edge, struct check *k, const char *kind,
                       const char *id, enum throttle_verdict reason, long limit)
{
    char key[KEYS_MAX];
    count_key(edge, key, sizeof(key), kind, id);
    struct count *n = &k->counts[k->ncounts++];
    n->k = k;
    n->reason = reason;
    n->limit = limit;
    k->pending++;
    const char *argv[] = {"1", key};
    bus_eval(edge->bus, &COUNT_READ, on_count, n, 2, argv, NULL);
}

void throttle_check(struct edge *edge, struct conn *c, const char *jid,
                    const char *token, throttle_cb *cb)
{
    const struct edge_cfg *cfg = edge->cfg;
    struct check *k = xcalloc(1, sizeof(*k));
    snprintf(k->dev, sizeof(k->dev), "%s", c->dev);
    snprintf(k->jid, sizeof(k->jid), "%s", jid);
    k->seq = c->login_seq;
    k->cb = cb;
    peer_text(c, k->peer, sizeof(k->peer));
    throttle_forget(edge, c);
    char device[DEVICE_HEX + 1];
    if (token_open(edge, jid, token, device)) {
        /* A device that logged in before: judged on its own failures. */
        edge->stats.token_logins++;
        strmap_put(&edge->throttle->devices, c->dev, xstrdup(device));
        if (cfg->login_fail_per_account > 0)
            count_read(edge, k, KEYS_LF_DEV, device, THROTTLE_DEVICE, cfg->login_fail_per_account);
    } else {
        if (token)
            LOG(INFO, "device_token_refused", "jid=%s dev=%s hint=\"expired, "
                "or made for another account or cred_key\"", jid, c->dev);
        if (cfg->login_fail_per_ip > 0)
            count_read(edge, k, KEYS_LF_IP, k->peer, THROTTLE_IP, cfg->login_fail_per_ip);
        if (cfg->login_fail_per_account > 0)
            count_read(edge, k, KEYS_LF_USER, jid, THROTTLE_ACCOUNT, cfg->login_fail_per_account);
    }
    if (k->pending == 0)
        check_done(edge, k);
}

static void count_add(struct edge *edge, const char *kind, const char *id)
{
    char key[KEYS_MAX], window[24];
    count_key(edge, key, sizeof(key), kind, id);
    snprintf(window, sizeof(window), "%ld", edge->cfg->login_fail_window);
    const char *argv[] = {"1", key, window};
    bus_eval(edge->bus, &COUNT_ADD, NULL, NULL, 3, argv, NULL);
}

void throttle_failed(struct edge *edge, struct conn *c)
{
    char peer[INET6_ADDRSTRLEN + 4];
    peer_text(c, peer, sizeof(peer));
    count_add(edge, KEYS_LF_IP, peer);
    count_add(edge, KEYS_LF_USER, c->user->jid);
    char *device = strmap_get(&edge->throttle->devices, c->dev);
    if (device)
        count_add(edge, KEYS_LF_DEV, device);
    throttle_forget(edge, c);
}

char *throttle_token(struct edge *edge, struct conn *c)
{
    if (edge->cfg->device_token_days == 0) {
        throttle_forget(edge, c);
        return NULL;
    }
    char device[DEVICE_HEX + 1];
    const char *known = strmap_get(&edge->throttle->devices, c->dev);
    if (known)
        memcpy(device, known, sizeof(device));
    else
        util_random_hex(device, DEVICE_HEX / 2);
    throttle_forget(edge, c);
    char aad[KEY_MAX];
    token_aad(aad, sizeof(aad), c->user->jid);
    return seal_encrypt(edge->cred_key, aad, device, util_wall_ms());
}

void throttle_forget(struct edge *edge, const struct conn *c)
{
    char *device = strmap_get(&edge->throttle->devices, c->dev);
    if (!device)
        return;
    strmap_del(&edge->throttle->devices, c->dev);
    free(device);
}
