/* jsonout.h - JSON text written straight into a buffer, byte for byte as
 * jansson's json_dumpb(JSON_COMPACT) would write it. For the texts written
 * for every message (edge/phone.c frames, common/envelope.c envelopes):
 * building an object only to dump it, and jansson's setup per dump, cost
 * more than the rest of the work. Objects of a known shape are written
 * with literal keys and punctuation (jsonout_lit) and their values with
 * jsonout_json; a whole jansson value with jsonout_json alone.
 *
 * Bytes past cap are counted and not written, so one pass says how long the
 * text is, and a second, in room enough, writes it. */
#ifndef IMB_JSONOUT_H
#define IMB_JSONOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
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

/* An integer as jansson writes one ("%" JSON_INTEGER_FORMAT), without
 * printf's machinery. */
static inline void jsonout_int(struct jsonout *o, int64_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    jsonout_put(o, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* Whether jansson writes s as its own bytes between quotes: printable
 * ASCII with no '"' and no '\\' (jansson escapes only those two and the
 * control characters, and validates UTF-8, which ASCII is). */
static inline bool jsonout_plain(const char *s, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static inline void jsonout_dumpb(struct jsonout *o, const json_t *v)
{
    size_t room = o->n < o->cap ? o->cap - o->n : 0;
    o->n += json_dumpb(v, room ? o->p + o->n : NULL, room,
                       JSON_COMPACT | JSON_ENCODE_ANY);
}

/* A value, byte for byte as json_dumpb(v, JSON_COMPACT) writes it (keys in
 * their insertion order, as jansson's). The texts written for every message
 * are mostly ASCII strings and integers, which it writes itself: jansson
 * pays a setup per call and a UTF-8 step per character. Any string with
 * something to escape, any key that is not plain, a real: jansson writes
 * them. test_jsonout compares the two on every byte value and on nested
 * values. */
static inline void jsonout_json(struct jsonout *o, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t k = json_string_length(v);
        if (!jsonout_plain(s, k))
            break;
        jsonout_lit(o, "\"");
        jsonout_put(o, s, k);
        jsonout_lit(o, "\"");
        return;
    }
    case JSON_INTEGER:
        jsonout_int(o, (int64_t)json_integer_value(v));
        return;
    case JSON_TRUE:
        jsonout_lit(o, "true");
        return;
    case JSON_FALSE:
        jsonout_lit(o, "false");
        return;
    case JSON_NULL:
        jsonout_lit(o, "null");
        return;
    case JSON_ARRAY: {
        jsonout_lit(o, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                jsonout_lit(o, ",");
            jsonout_json(o, json_array_get(v, i));
        }
        jsonout_lit(o, "]");
        return;
    }
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val) if (!jsonout_plain(key, strlen(key)))
            goto jansson;
        jsonout_lit(o, "{");
        bool first = true;
        json_object_foreach((json_t *)v, key, val) {
            if (!first)
                jsonout_lit(o, ",");
            first = false;
            jsonout_lit(o, "\"");
            jsonout_put(o, key, strlen(key));
            jsonout_lit(o, "\":");
            jsonout_json(o, val);
        }
        jsonout_lit(o, "}");
        return;
    }
    default:
        break;
    }
jansson:
    jsonout_dumpb(o, v);
}

#endif
