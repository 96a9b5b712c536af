/* jsonout.h - a JSON object of a known shape written straight into a
 * buffer: the keys and punctuation are literals, every value is written by
 * jansson (json_dumpb, so escaping is jansson's). For the texts written for
 * every message (edge/phone.c frames, common/envelope.c chats), where
 * building an object only to dump it costs more than the rest of the work.
 *
 * Bytes past cap are counted and not written, so one pass says how long the
 * text is, and a second, in room enough, writes it. */
#ifndef IMB_JSONOUT_H
#define IMB_JSONOUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

struct jsonout {
    char *p;
    size_t n, cap;
};

static inline void jsonout_put(struct jsonout *o, const char *s, size_t k)
{
    if (o->n + k <= o->cap)
        memcpy(o->p + o->n, s, k);
    o->n += k;
}

/* A literal: jsonout_lit(o, ",\"to\":"). */
#define jsonout_lit(o, lit) jsonout_put((o), (lit), sizeof(lit) - 1)

/* A value as jansson writes it inside a JSON_COMPACT object. */
static inline void jsonout_json(struct jsonout *o, const json_t *v)
{
    size_t room = o->n < o->cap ? o->cap - o->n : 0;
    o->n += json_dumpb(v, room ? o->p + o->n : NULL, room,
                       JSON_COMPACT | JSON_ENCODE_ANY);
}

/* An integer as jansson writes one. */
static inline void jsonout_int(struct jsonout *o, int64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, (json_int_t)v);
    jsonout_put(o, tmp, (size_t)k);
}

#endif
