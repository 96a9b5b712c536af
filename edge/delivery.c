/* delivery.c - chats to phones in sequence: live ones from the user's
 * channel, missed ones from the inbox (common/inbox.h). Each connection
 * tracks the last seq it wrote; a live chat that skips a number, a new login
 * and a bus reconnect each start a replay from the inbox, during which live
 * chats are held and then released in order. The phone acks by seq, which
 * trims the inbox. */
#include "edge.h"
#include "envelope.h"
#include "inbox.h"
#include "log.h"
#include "phone.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define REPLAY_PAGE 100
/* Live chats kept while a replay runs; past this they are dropped here and
 * fetched from the inbox by the next replay instead. */
#define HELD_MAX 256

/* A stored item to the phone: a chat becomes "msg" (written straight,
 * phone.h), an event carries its own frame. */
static void write_chat(struct conn *c, const struct env *e, bool paced)
{
    if (e->type != ENV_EVENT) {
        conn_send_msg(c, e, paced);
        c->edge->stats.msgs_out++;
        return;
    }
    json_t *f = json_deep_copy(env_json(e, "frame"));
    int64_t seq = env_int(e, "seq", -1);
    if (seq > 0)
        json_object_set_new(f, "seq", json_integer(seq));
    if (paced)
        conn_send_paced(c, f);
    else
        conn_send(c, f);
    c->edge->stats.events_out++;
}

/* Events not stored (no seq) that a phone in the background goes without. */
static bool background_noise(const char *t)
{
    return !strcmp(t, "presence") || !strcmp(t, "typing") || !strcmp(t, "occupant");
}

void delivery_event(struct conn *c, const struct env *e)
{
    if (env_int(e, "seq", -1) > 0) {
        delivery_live(c, e); /* stored: in order, like chats */
        return;
    }
    const char *t = json_string_value(json_object_get(env_json(e, "frame"), "t"));
    if (c->inactive && background_noise(t))
        return;
    write_chat(c, e, false);
}

struct fetch_req {
    char dev[20];
    char *jid;
};

static void on_fetched(void *owner, void *data, redisReply *r);

/* Fetch what the phone misses after c->last_seq; live chats are held until
 * it is written. One fetch per connection at a time. */
static void fetch_page(struct conn *c)
{
    struct fetch_req *fr = xcalloc(1, sizeof(*fr));
    snprintf(fr->dev, sizeof(fr->dev), "%s", c->dev);
    fr->jid = xstrdup(c->user->jid);
    inbox_fetch(c->edge->bus, c->user->jid, c->last_seq, REPLAY_PAGE, on_fetched, fr);
}

void delivery_replay(struct conn *c)
{
    if (c->replaying || !c->user)
        return;
    c->replaying = true;
    fetch_page(c);
}

void delivery_drained(struct conn *c)
{
    c->replay_paused = false;
    if (c->replaying && c->state == CONN_READY)
        fetch_page(c);
}

/* The numbering the phone knows is not the user's (Redis lost the counter,
 * or the phone names an epoch or seq the server never gave): say so at once,
 * before any message of the new numbering, so a client that drops a seq it
 * already stored (PROTOCOL.md section 8) does not drop new messages under
 * old numbers. The replay that follows starts from the first one stored. */
static void numbering_reset(struct conn *c, const char *epoch)
{
    LOG(WARN, "numbering_reset", "dev=%s jid=%s old_epoch=%s old_seq=%lld epoch=%s",
        c->dev, c->user->jid, c->epoch[0] ? c->epoch : "-", (long long)c->last_seq,
        epoch[0] ? epoch : "-");
    c->edge->stats.resets++;
    c->ack_upto = 0; /* an ack not sent yet is of the old numbering */
    snprintf(c->epoch, sizeof(c->epoch), "%s", epoch);
    c->last_seq = 0;
    c->positioned = false; /* what the phone said is void: no "missed" from it */
    conn_send(c, json_pack("{s:s, s:s, s:i, s:b}", "t", "sync", "epoch", epoch, "seq", 0,
                           "reset", 1));
}

static void hold(struct conn *c, const struct env *e)
{
    if (!c->held)
        c->held = json_array();
    if (json_array_size(c->held) < HELD_MAX)
        json_array_append(c->held, e->obj);
}

void delivery_live(struct conn *c, const struct env *e)
{
    int64_t seq = env_int(e, "seq", -1);
    const char *epoch = env_str(e, "epoch");
    if (seq < 0)
        return; /* (edge.c refuses a chat without seq: never here) */
    if (c->replaying) {
        hold(c, e);
        return;
    }
    if (epoch && strcmp(epoch, c->epoch) != 0 && (c->epoch[0] || c->last_seq > 0)) {
        /* The user's counter was lost and restarted: everything the phone
         * knew by number is void. Start over from the inbox. */
        numbering_reset(c, epoch);
        hold(c, e);
        delivery_replay(c);
        return;
    }
    if (epoch && !c->epoch[0]) {
        /* The first numbered message this phone sees: tell it the epoch
         * its numbers belong to, which it hands back when it resumes. */
        snprintf(c->epoch, sizeof(c->epoch), "%s", epoch);
        conn_send(c, json_pack("{s:s, s:s, s:I}", "t", "sync", "epoch", epoch,
                               "seq", (json_int_t)c->last_seq));
    }
    if (seq <= c->last_seq)
        return; /* already written (replayed, or a second copy) */
    if (seq > c->last_seq + 1) {
        /* Something in between never reached us (pub/sub is at most
         * once): fetch it, in order. */
        c->edge->stats.gaps++;
        hold(c, e);
        delivery_replay(c);
        return;
    }
    write_chat(c, e, false);
    c->last_seq = seq;
}

static int by_seq(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "seq"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "seq"));
    return (x > y) - (x < y);
}

static void release_held(struct conn *c)
{
    json_t *held = c->held;
    c->held = NULL;
    if (!held)
        return;
    size_t n = json_array_size(held);
    json_t **v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(held, i);
    qsort(v, n, sizeof(*v), by_seq);
    for (size_t i = 0; i < n && c->state == CONN_READY; i++) {
        const char *type = json_string_value(json_object_get(v[i], "type"));
        struct env e = {type && !strcmp(type, "event") ? ENV_EVENT : ENV_CHAT, v[i]};
        delivery_live(c, &e);
    }
    free(v);
    json_decref(held);
}

static void on_fetched(void *owner, void *data, redisReply *r)
{
    struct edge *edge = owner;
    struct fetch_req *fr = data;
    struct conn *c = strmap_get(&edge->conns, fr->dev);
    bool ours = c && c->state == CONN_READY && c->user &&
                strcmp(c->user->jid, fr->jid) == 0;
    free(fr->jid);
    free(fr);
    if (!ours)
        return;
    c->replaying = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_ARRAY) {
        /* Redis is away: what is held stays held; the replay runs again
         * when the bus is back. */
        LOG(WARN, "replay_failed", "dev=%s jid=%s", c->dev, c->user->jid);
        return;
    }
    const char *epoch = r->element[0]->str;
    int64_t head = r->element[1]->integer;
    redisReply *items = r->element[2];
    /* A numbering the phone does not share: another epoch, none at all
     * while the phone names one, or a seq past the newest one given. */
    if ((c->epoch[0] && strcmp(epoch, c->epoch) != 0) ||
        (c->positioned && c->last_seq > head && (!*epoch || !strcmp(epoch, c->epoch)))) {
        numbering_reset(c, epoch);
        delivery_replay(c);
        return;
    }
    /* A phone that gave no position (first login, new install) cannot have
     * missed anything before the first message still stored. */
    bool positioned = c->positioned;
    if (*epoch)
        snprintf(c->epoch, sizeof(c->epoch), "%s", epoch);
    int64_t missed = 0;
    for (size_t i = 0; i < items->elements; i++) {
        redisReply *it = items->element[i];
        char err[200];
        struct env *e = it->type == REDIS_REPLY_STRING
                            ? env_decode(it->str, it->len, err, sizeof(err))
                            : NULL;
        int64_t seq = e ? env_int(e, "seq", -1) : -1;
        if (!e || (e->type != ENV_CHAT && e->type != ENV_EVENT) || seq <= 0 ||
            (e->type == ENV_EVENT && !proto_check_event(env_json(e, "frame"), err,
                                                        sizeof(err)))) {
            edge->stats.bad_envelopes++;
            env_free(e);
            continue;
        }
        if (seq > c->last_seq) {
            if (positioned)
                missed += seq - c->last_seq - 1;
            positioned = true;
            write_chat(c, e, true);
            edge->stats.replayed++;
            c->last_seq = seq;
        }
        env_free(e);
    }
    if (items->elements == REPLAY_PAGE) {
        /* More to come. A replay is paced by the phone's reading: the next
         * page waits until this one is written out. */
        c->replaying = true;
        if (conn_output_pending(c) > 0)
            c->replay_paused = true;
        else
            fetch_page(c);
        return;
    }
    if (head > c->last_seq) {
        /* Trimmed by the count limit or expired: gone for good (unless the
         * phone never had a position: then it was acked by another). */
        if (positioned)
            missed += head - c->last_seq;
        c->last_seq = head;
    }
    c->positioned = true;
    json_t *sync = json_pack("{s:s, s:s, s:I}", "t", "sync", "epoch", c->epoch,
                             "seq", (json_int_t)c->last_seq);
    if (missed > 0)
        json_object_set_new(sync, "missed", json_integer(missed));
    conn_send(c, sync);
    if (missed > 0)
        LOG(WARN, "replay_missed", "dev=%s jid=%s missed=%lld", c->dev,
            c->user->jid, (long long)missed);
    release_held(c);
}

void edge_on_ack(struct conn *c, json_t *f)
{
    json_int_t seq = json_integer_value(json_object_get(f, "seq"));
    if (seq > c->last_seq) {
        conn_error(c, PERR_BAD_FRAME, "field 'seq' is beyond what was delivered",
                   NULL);
        return;
    }
    /* Cumulative: only the newest of a loop turn goes to the inbox. */
    if (seq <= c->ack_upto)
        return;
    struct edge *edge = c->edge;
    if (!c->ack_listed) {
        c->ack_listed = true;
        if (edge->nacks == edge->capacks) {
            edge->capacks = edge->capacks ? 2 * edge->capacks : 64;
            edge->acks = xrealloc(edge->acks, edge->capacks * sizeof(*edge->acks));
        }
        edge->acks[edge->nacks++] = c;
        if (edge->nacks == 1)
            event_active(edge->ack_ev, EV_TIMEOUT, 0);
    }
    c->ack_upto = seq;
}

static void send_ack(struct conn *c)
{
    if (c->user && c->epoch[0])
        inbox_ack(c->edge->bus, c->user->jid, c->label[0] ? c->label : "-", c->epoch,
                  c->ack_upto, INBOX_CURSOR_TTL_MS);
    c->ack_upto = 0;
}

void delivery_flush_acks(evutil_socket_t fd, short what, void *arg)
{
    struct edge *edge = arg;
    for (size_t i = 0; i < edge->nacks; i++) {
        edge->acks[i]->ack_listed = false;
        if (edge->acks[i]->ack_upto > 0)
            send_ack(edge->acks[i]);
    }
    edge->nacks = 0;
}

void delivery_drop_ack(struct conn *c)
{
    if (!c->ack_listed)
        return;
    c->ack_listed = false;
    if (c->ack_upto > 0)
        send_ack(c); /* now: the connection goes, its ack stands */
    struct edge *edge = c->edge;
    for (size_t i = 0; i < edge->nacks; i++)
        if (edge->acks[i] == c) {
            edge->acks[i] = edge->acks[--edge->nacks];
            break;
        }
}
