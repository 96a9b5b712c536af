/* fuzz_client.c - libFuzzer driver for the phone client library
 * (client/imb_client.c): the input is what a (hostile) server sends.
 *
 * The first byte picks the read size (1..32 bytes, or all at once) and the
 * clock step; the rest is fed to a logged-in-or-logging-in client in reads
 * of that size, with ticks of a fake clock between reads, two messages in
 * the outbox, a message sent after each welcome, and every DISCONNECT
 * followed by the reconnect the client asks for (so one input can cross
 * several connections). Invariants checked:
 *   - everything the client writes is whole frames of 2..max bytes of a
 *     JSON object with a string "t";
 *   - the outbox never exceeds outbox_max, the position never goes past
 *     what was delivered;
 *   - every event has a known type, strings the type promises are set.
 * Input buffers are exact-size heap copies so ASan sees reads past them. */
#include "fuzz.h"
#include "imb_client.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static void check_event(struct imb_client *c, const struct imb_event *ev)
{
    switch (ev->type) {
    case IMB_EV_CONNECT:
        INVARIANT(ev->host && ev->port, "connect without an edge");
        break;
    case IMB_EV_DISCONNECT:
        INVARIANT(ev->reason, "disconnect without a reason");
        break;
    case IMB_EV_MSG:
        INVARIANT(ev->from && ev->body && ev->seq > 0, "msg fields");
        break;
    case IMB_EV_SYNC:
        INVARIANT(ev->epoch, "sync epoch");
        break;
    case IMB_EV_LOGGED_IN:
        INVARIANT(ev->jid && ev->hb_s > 0 && ev->max >= 64, "welcome fields");
        imb_client_send_msg(c, "bob@localhost", "after welcome", false, NULL, NULL, NULL, 0);
        break;
    case IMB_EV_ERROR:
        INVARIANT(ev->code, "error code");
        break;
    case IMB_EV_PROTOCOL:
        INVARIANT(ev->msg, "protocol msg");
        break;
    case IMB_EV_ACK:
    case IMB_EV_RECEIPT:
    case IMB_EV_PRESENCE:
    case IMB_EV_TYPING:
    case IMB_EV_BYE:
    case IMB_EV_OK:
    case IMB_EV_FRAME:
        INVARIANT(ev->frame && ev->t, "frame event without its frame");
        break;
    default:
        INVARIANT(0, "unknown event type %d", (int)ev->type);
    }
}

static void check_output(struct imb_client *c)
{
    const uint8_t *p;
    size_t n = imb_client_output(c, &p);
    size_t off = 0;
    while (off < n) {
        INVARIANT(n - off >= 4, "partial header in output");
        size_t len = ((size_t)p[off] << 24) | ((size_t)p[off + 1] << 16) |
                     ((size_t)p[off + 2] << 8) | p[off + 3];
        INVARIANT(len >= 2 && len <= (1u << 20) && n - off - 4 >= len, "frame length %zu", len);
        json_t *f = json_loadb((const char *)p + off + 4, len, 0, NULL);
        INVARIANT(json_is_object(f) && json_is_string(json_object_get(f, "t")),
                  "written frame is not an object with t");
        json_decref(f);
        off += 4 + len;
    }
    imb_client_consumed(c, n);
}

/* Take events; act on CONNECT/DISCONNECT like a transport that connects at
 * once (a DISCONNECT: the clock jumps to the reconnect). Returns false when
 * the client stopped for good. */
static bool drain(struct imb_client *c, int64_t *now)
{
    for (int round = 0; round < 8; round++) {
        const struct imb_event *ev;
        bool connect = false, disconnect = false;
        while (imb_client_next_event(c, &ev)) {
            check_event(c, ev);
            if (ev->type == IMB_EV_CONNECT)
                connect = true;
            if (ev->type == IMB_EV_DISCONNECT) {
                if (ev->final)
                    return false;
                disconnect = true;
                connect = false;
            }
        }
        if (connect) {
            imb_client_connected(c, *now);
            check_output(c);
        } else if (disconnect) {
            int64_t d = imb_client_next_deadline(c);
            INVARIANT(d != INT64_MAX && d >= *now, "no reconnect after a disconnect");
            *now = d;
            imb_client_tick(c, *now);
        } else {
            return true;
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (data[0] & 31) + 1;
    if (data[0] & 0x80)
        step = size;
    int64_t tick = (data[0] & 0x40) ? 7000 : 3;
    data++;
    size--;
    struct imb_edge edges[2] = {{"a", "1", false}, {"b", "2", true}};
    struct imb_client_opts o = {0};
    o.jid = "alice@localhost";
    o.pass = "secret";
    o.edges = edges;
    o.n_edges = 2;
    o.outbox_max = 8;
    o.seed = 1;
    struct imb_client *c = imb_client_new(&o);
    if (!c)
        return 0;
    imb_client_send_msg(c, "bob@localhost", "one", false, "c1", NULL, NULL, 0);
    imb_client_send_msg(c, "room@conference.localhost", "two", true, NULL, NULL, NULL, 0);
    int64_t now = 0;
    imb_client_start(c, now);
    bool alive = drain(c, &now);
    for (size_t off = 0; alive && off < size; off += step) {
        size_t k = size - off < step ? size - off : step;
        uint8_t *chunk = malloc(k);
        memcpy(chunk, data + off, k);
        imb_client_input(c, chunk, k, now);
        free(chunk);
        alive = drain(c, &now);
        check_output(c);
        now += tick;
        imb_client_tick(c, now);
        alive = alive && drain(c, &now);
        check_output(c);
        INVARIANT(imb_client_outbox_len(c) <= 8, "outbox %zu", imb_client_outbox_len(c));
    }
    imb_client_free(c);
    return 0;
}
