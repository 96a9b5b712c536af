/* fuzz_frame.c - libFuzzer driver for the phone link: the edge's framing
 * (common/frame.c) and the protocol codec (edge/phone.c).
 *
 * The input is the byte stream a phone sends on its socket. It is fed the way
 * edge/conn.c read_cb sees it: appended to a growing input buffer in reads of
 * varying size, complete frames taken off the front one after another, each
 * body decoded with phone_decode. Two passes per input: the default max_frame
 * (16384) with the stream split into small reads, and the smallest allowed
 * max_frame (64) with the stream in one read. Invariants checked:
 *   - frame_parse keeps its contract (body inside the buffer, lengths agree
 *     with the header, the header-only call conn.c makes gives the same
 *     verdict on the length);
 *   - phone_decode returns -1 with an error text and no object, or a type
 *     with a JSON object;
 *   - every decoded object re-encodes (phone_encode) to a frame that parses and
 *     decodes again to the same type;
 *   - the error frame the edge answers a bad frame with (with the frame's
 *     id, when it had one) carries "msg" (PROTOCOL.md: always) and decodes
 *     as a frame;
 *   - every JID of a decoded frame is in prepared form (jid.h) and the
 *     round trip keeps it.
 *   - phone_fit, asked to fit a decoded object in a smaller max, gives NULL
 *     or frames that each fit and that keep their "t".
 * Buffers handed to the parsers are exact-size heap copies so ASan sees any
 * read past their end. */
#include "fuzz.h"
#include "frame.h"
#include "jid.h"
#include "phone.h"
#include "proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX 16384
#define SMALLEST_MAX 64

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    if (!q)
        abort();
    if (n)
        memcpy(q, p, n);
    return q;
}

/* What the edge sends back for a bad frame must itself be a valid frame. */
static void check_error_reply(const char *err, const char *id, size_t max)
{
    json_t *e = phone_error(PERR_BAD_FRAME, err, id[0] ? id : NULL);
    INVARIANT(e != NULL, "phone_error returned NULL");
    INVARIANT(json_is_string(json_object_get(e, "msg")),
              "error frame without 'msg' for error text \"%s\"", err);
    size_t elen;
    char *enc = phone_encode(e, &elen);
    json_t *back = NULL;
    char err2[256];
    int t = phone_decode(enc + FRAME_HEADER, elen - FRAME_HEADER, max, &back,
                         NULL, err2, sizeof(err2));
    INVARIANT(t >= 0, "the edge's own error frame does not decode: %s", err2);
    json_decref(back);
    free(enc);
    json_decref(e);
}

/* Encode obj, parse the frame, decode it again: same type. */
static void check_round_trip(const json_t *obj, int type, size_t max)
{
    size_t elen = 0;
    char *enc = phone_encode(obj, &elen);
    INVARIANT(enc != NULL && elen >= FRAME_HEADER + FRAME_MIN_BODY,
              "phone_encode gave %zu bytes", elen);
    uint8_t *frame = dup_exact((const uint8_t *)enc, elen);
    free(enc);
    const uint8_t *body = NULL;
    size_t blen = 0;
    enum frame_status st = frame_parse(frame, elen, FRAME_MAX_LIMIT, &body, &blen);
    INVARIANT(st == FRAME_OK && body == frame + FRAME_HEADER &&
                  blen == elen - FRAME_HEADER,
              "re-encoded frame does not parse (status %d)", (int)st);
    uint8_t *copy = dup_exact(body, blen);
    json_t *again = NULL;
    char err[256] = "";
    int t2 = phone_decode((const char *)copy, blen, max, &again, NULL, err, sizeof(err));
    INVARIANT(t2 == type, "type %d re-decodes as %d (%s): %.*s", type, t2, err,
              (int)blen, (const char *)copy);
    json_decref(again);
    free(copy);
    free(frame);
}

/* What phone_fit makes of obj, asked for max bytes, fits and keeps "t". */
static void check_fit(const json_t *obj, size_t max)
{
    json_t *out = phone_fit(obj, max);
    size_t i;
    json_t *f;
    json_array_foreach(out, i, f) {
        size_t n = json_dumpb(f, NULL, 0, JSON_COMPACT);
        INVARIANT(n <= max, "fitted frame of %zu bytes above %zu", n, max);
        INVARIANT(json_equal(json_object_get(f, "t"), json_object_get(obj, "t")),
                  "fitted frame lost its type");
    }
    json_decref(out);
}

/* Every JID field of the frame's schema is in prepared form (fields the
 * schema does not name are not the bridge's business). */
static void check_field_prepared(const json_t *obj, const char *f)
{
    const char *j = json_string_value(json_object_get(obj, f));
    INVARIANT(!j || jid_is_prepared(j), "field '%s' not prepared: %s", f, j);
}

static void check_prepared(const json_t *obj, int type)
{
    if (type == PHONE_LOGIN || type == PHONE_MSG)
        check_field_prepared(obj, type == PHONE_LOGIN ? "jid" : "to");
    const struct proto_frame *pf =
        type == PHONE_REQ ? proto_request(json_string_value(json_object_get(obj, "t"))) : NULL;
    for (size_t i = 0; pf && i < PROTO_MAXF && pf->fields[i].name; i++)
        if (pf->fields[i].kind == F_JID)
            check_field_prepared(obj, pf->fields[i].name);
}

static void decode_body(const uint8_t *body, size_t len, size_t max)
{
    uint8_t *copy = dup_exact(body, len);
    json_t *obj = (json_t *)1;
    char err[256], id[PHONE_MAX_ID + 1];
    err[0] = '\0';
    int type = phone_decode((const char *)copy, len, max, &obj, id, err, sizeof(err));
    if (type < 0) {
        INVARIANT(type == -1, "phone_decode returned %d", type);
        INVARIANT(obj == NULL, "failed decode left an object");
        INVARIANT(err[0] != '\0', "failed decode without a reason");
        INVARIANT(memchr(err, '\0', sizeof(err)) != NULL, "err not terminated");
        INVARIANT(strlen(id) <= PHONE_MAX_ID, "id of %zu bytes", strlen(id));
        check_error_reply(err, id, max);
    } else {
        INVARIANT(type <= PHONE_UNKNOWN, "phone_decode returned %d", type);
        INVARIANT(json_is_object(obj), "decoded frame is not an object");
        INVARIANT(json_is_string(json_object_get(obj, "t")),
                  "decoded frame without a string 't'");
        check_prepared(obj, type);
        check_round_trip(obj, type, max);
        check_fit(obj, len / 2 + SMALLEST_MAX);
        json_decref(obj);
    }
    free(copy);
}

/* A tiny PRNG so the read sizes depend on the input only. */
static uint32_t next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Feed data to one simulated connection with max_frame max, in reads of at
 * most max_read bytes (0: all at once). */
static void run_stream(const uint8_t *data, size_t size, size_t max,
                       size_t max_read)
{
    uint8_t *buf = NULL; /* exactly `have` bytes */
    size_t have = 0, off = 0;
    uint32_t rng = (uint32_t)size * 2654435761u + 1u;
    bool closed = false;
    while (off < size && !closed) {
        size_t n = size - off;
        if (max_read) {
            size_t r = 1 + next_rand(&rng) % max_read;
            if (n > r)
                n = r;
        }
        uint8_t *grown = malloc(have + n);
        if (!grown)
            abort();
        if (have)
            memcpy(grown, buf, have);
        memcpy(grown + have, data + off, n);
        free(buf);
        buf = grown;
        have += n;
        off += n;

        /* read_cb: take every complete frame off the front. */
        for (;;) {
            const uint8_t *body = NULL;
            size_t blen = (size_t)-1;
            enum frame_status st = frame_parse(buf, have, max, &body, &blen);
            if (have < FRAME_HEADER) {
                INVARIANT(st == FRAME_NEED_MORE, "status %d on %zu bytes",
                          (int)st, have);
                break;
            }
            uint32_t announced = ((uint32_t)buf[0] << 24) |
                                 ((uint32_t)buf[1] << 16) |
                                 ((uint32_t)buf[2] << 8) | buf[3];
            INVARIANT(blen == announced, "body_len %zu, header says %u", blen,
                      announced);
            /* conn.c asks with the 4 header bytes only. */
            const uint8_t *hbody = NULL;
            size_t hlen = 0;
            uint8_t *hdr = dup_exact(buf, FRAME_HEADER);
            enum frame_status hst = frame_parse(hdr, FRAME_HEADER, max, &hbody, &hlen);
            free(hdr);
            INVARIANT(hlen == announced, "header-only body_len %zu", hlen);
            if (st == FRAME_TOO_BIG || st == FRAME_TOO_SMALL) {
                INVARIANT(hst == st, "header-only status %d vs %d", (int)hst,
                          (int)st);
                INVARIANT(st == FRAME_TOO_BIG ? announced > max
                                              : announced < FRAME_MIN_BODY,
                          "status %d for length %u (max %zu)", (int)st,
                          announced, max);
                closed = true; /* too_big, bye, close */
                break;
            }
            INVARIANT(announced >= FRAME_MIN_BODY && announced <= max,
                      "status %d for length %u", (int)st, announced);
            INVARIANT(hst == FRAME_NEED_MORE, "header-only status %d", (int)hst);
            if (st == FRAME_NEED_MORE) {
                INVARIANT(have < FRAME_HEADER + (size_t)announced,
                          "need more with %zu bytes for %u", have, announced);
                break;
            }
            INVARIANT(st == FRAME_OK, "unknown status %d", (int)st);
            INVARIANT(body == buf + FRAME_HEADER && blen <= have - FRAME_HEADER,
                      "body outside the buffer");
            decode_body(body, blen, max);
            /* evbuffer_drain */
            size_t rest = have - FRAME_HEADER - blen;
            uint8_t *left = dup_exact(buf + FRAME_HEADER + blen, rest);
            free(buf);
            buf = left;
            have = rest;
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_stream(data, size, DEFAULT_MAX, 16);
    run_stream(data, size, SMALLEST_MAX, 0);
    return 0;
}
