/* imtap.c - the channel tap: PSUBSCRIBEs "<prefix>:*" on Redis and prints
 * every envelope that crosses the bus, live, one line each (or one JSON line
 * each with --json), filtered by user and type. Secrets never reach the
 * output: a login's sealed `cred` prints as <sealed>, any field named like a
 * password as <hidden>. With --no-bodies, message text (a chat's body, a
 * push preview, and a frame's body, subject, reason or status) prints as its
 * length only. A `req` or `event` envelope prints as the frame it carries:
 * type req/<t> or event/<t>, the frame's fields as k=v.
 *
 * It has its own hiredis async link on libevent rather than common/bus (which
 * only SUBSCRIBEs exact channels and keeps a second, command link a tap has no
 * use for). The link reconnects with capped, jittered backoff, so the tap
 * outlives Redis restarts. */

#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "bus.h"
#include "util.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 6379
#define DEFAULT_PREFIX "imb"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* From connect() to the PSUBSCRIBE confirmation; hiredis 0.14 has no timeout. */
#define CONNECT_TIMEOUT_MS 3000
/* String values longer than this are cut in line mode (not with --full). */
#define VALUE_MAX 200
/* A timestamp further than this from the receive time is printed. */
#define TS_SHOW_MS 2000
/* Longest "<type>/<frame t>" kept for the --type filter and the line. */
#define TYPE_MAX 96
#define MAX_LIST 32

enum exit_code { EXIT_OK = 0, EXIT_REDIS = 1, EXIT_USAGE = 2 };

enum link_state {
    LINK_DOWN,       /* nothing open; the retry timer may be pending */
    LINK_CONNECTING, /* connect + AUTH + PSUBSCRIBE sent, no confirmation yet */
    LINK_UP,         /* PSUBSCRIBE confirmed: messages flow */
};

struct options {
    const char *host;
    int port;
    const char *cluster;    /* Redis Cluster seeds "host:port,...", "" for one Redis */
    const char *user;       /* Redis ACL user, "" for none */
    char *password;         /* our own copy, wiped on exit; "" for no AUTH */
    const char *prefix;
    char *users[MAX_LIST];  /* --user filter, bare JIDs, lowercased; owned */
    size_t nusers;
    char *types[MAX_LIST];  /* --type filter; owned */
    size_t ntypes;
    bool json;
    bool all;               /* also <prefix>:bus:* heartbeats */
    bool full;              /* do not cut long values */
    bool no_bodies;         /* message text shown as its length only */
    unsigned long count;    /* exit after this many printed; 0 = never */
};

struct tap {
    struct options opt;
    char host[256];         /* the Redis connected to: opt's, or a cluster seed */
    int port;
    unsigned seed;          /* cluster: the seed tried next (each in turn) */
    struct event_base *base;
    redisAsyncContext *ac;  /* NULL when DOWN; hiredis owns and frees it */
    enum link_state state;
    int attempt;            /* consecutive failures, for the backoff */
    bool ever_up;           /* later connects are reported as reconnects */
    struct event *timer;    /* retry (DOWN) or connect timeout (CONNECTING) */
    struct event *sigint_ev, *sigterm_ev;
    char pattern[256];      /* "<prefix>:*", glob characters of prefix escaped */
    size_t prefix_len;
    unsigned long printed;
    bool stopping;
    int exit_code;
};

static void link_connect(struct tap *t);

/* ---- small helpers ------------------------------------------------------ */

static void stop(struct tap *t, int code)
{
    if (t->stopping)
        return;
    t->stopping = true;
    t->exit_code = code;
    event_base_loopbreak(t->base);
}

static void status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("imtap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void iso_time(int64_t ms, char *out, size_t n)
{
    int64_t sec = ms / 1000, milli = ms % 1000;
    if (milli < 0) { /* before 1970: floor, not toward zero */
        sec--;
        milli += 1000;
    }
    time_t s = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&s, &tm) || tm.tm_year > 9999 - 1900 || tm.tm_year < -1900) {
        snprintf(out, n, "%" PRId64 "ms", ms); /* no calendar date */
        return;
    }
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)milli);
}

/* "alice@x/phone" -> compare "alice@x" with want (already lowercase). */
static bool bare_jid_is(const char *jid, const char *want)
{
    if (!jid)
        return false;
    size_t n = strcspn(jid, "/");
    return strlen(want) == n && strncasecmp(jid, want, n) == 0;
}

static bool in_list(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return true;
    return false;
}

/* ---- secrets ------------------------------------------------------------ */

static bool contains_ci(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(hay + i, needle, k) == 0)
            return true;
    return false;
}

/* What a field of this name prints as, or NULL when it is not a secret. */
static const char *secret_mask(const char *key)
{
    if (!strcasecmp(key, "cred"))
        return "<sealed>";
    size_t n = strlen(key);
    if (contains_ci(key, n, "pass") || contains_ci(key, n, "secret") ||
        contains_ci(key, n, "token") || !strcasecmp(key, "cred_key") ||
        !strcasecmp(key, "key"))
        return "<hidden>";
    return NULL;
}

/* Replace every secret value, at any depth, with its mask (in place). */
static void redact(json_t *v)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *val;
        void *tmp;
        json_object_foreach_safe(v, tmp, key, val) {
            const char *mask = secret_mask(key);
            if (mask)
                json_object_set_new(v, key, json_string(mask));
            else
                redact(val);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val) redact(val);
    }
}

/* A payload that is not JSON is shown raw, unless it smells of a secret. */
static bool raw_looks_secret(const char *p, size_t n)
{
    return contains_ci(p, n, "cred") || contains_ci(p, n, "pass") ||
           contains_ci(p, n, "secret") || contains_ci(p, n, "token");
}

/* ---- message text (--no-bodies) ----------------------------------------- */

/* Fields that carry what people wrote: of an envelope (common/envelope.c)
 * a chat's body and a push's preview; of a frame (common/proto.c) body,
 * subject, reason and status. (An envelope's reason is a code.) */
static bool text_key(const char *key, bool is_frame)
{
    if (!strcmp(key, "body"))
        return true;
    if (!is_frame)
        return !strcmp(key, "preview");
    return !strcmp(key, "subject") || !strcmp(key, "reason") ||
           !strcmp(key, "status");
}

/* Replace obj[key], if present, with "<N chars>" (N: UTF-8 characters). */
static void hide_text(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return;
    if (!json_is_string(v)) { /* not valid, but not shown either */
        json_object_set_new(obj, key, json_string("<not text>"));
        return;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), chars = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            chars++;
    char mask[48];
    snprintf(mask, sizeof(mask), "<%zu chars>", chars);
    json_object_set_new(obj, key, json_string(mask));
}

/* Hide the message text of an envelope (in place): a chat's body, a push's
 * preview, the text fields of a req's or event's frame, and the same inside
 * a handover's envelope. Fields such as session_end's `reason` are codes,
 * not text, and stay. */
static void hide_bodies(json_t *env, int depth)
{
    if (!json_is_object(env) || depth > 4)
        return;
    hide_text(env, "body");
    hide_text(env, "preview");
    json_t *frame = json_object_get(env, "frame");
    if (json_is_object(frame)) {
        const char *key;
        json_t *val;
        void *tmp;
        json_object_foreach_safe(frame, tmp, key, val) {
            if (text_key(key, true))
                hide_text(frame, key);
        }
    } else if (frame) {
        hide_text(env, "frame"); /* not a frame: not shown either */
    }
    hide_bodies(json_object_get(env, "env"), depth + 1);
}

/* The type an envelope is shown and filtered as: "chat", "login"..., and
 * for a req or event "req/<t>" with the t of its frame. Returns false when
 * the envelope has no type. */
static bool shown_type(json_t *obj, char *out, size_t n)
{
    const char *type = json_string_value(json_object_get(obj, "type"));
    if (!type)
        return false;
    const char *ft = NULL;
    if (!strcmp(type, "req") || !strcmp(type, "event"))
        ft = json_string_value(json_object_get(json_object_get(obj, "frame"), "t"));
    if (ft)
        snprintf(out, n, "%s/%s", type, ft);
    else
        snprintf(out, n, "%s", type);
    return true;
}

/* --type T matches the envelope type, the frame's type alone (presence
 * selects req/presence and event/presence) or both written as "event/typing". */
static bool type_matches(const struct tap *t, const char *shown)
{
    if (in_list(t->opt.types, t->opt.ntypes, shown))
        return true;
    const char *slash = strchr(shown, '/');
    if (!slash)
        return false;
    char env[TYPE_MAX];
    snprintf(env, sizeof(env), "%.*s", (int)(slash - shown), shown);
    return in_list(t->opt.types, t->opt.ntypes, env) ||
           in_list(t->opt.types, t->opt.ntypes, slash + 1);
}

/* ---- line formatting ---------------------------------------------------- */

struct line {
    char *buf;
    size_t len, cap;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (l->len + n + 1 > cap)
            cap *= 2;
        l->buf = xrealloc(l->buf, cap);
        l->cap = cap;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->buf[l->len] = '\0';
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void putf(struct line *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Bytes of a UTF-8 sequence starting with c (1: not a lead byte). */
static size_t utf8_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf5)
        return 4;
    if (c >= 0xe0 && c < 0xf0)
        return 3;
    if (c >= 0xc2 && c < 0xe0)
        return 2;
    return 1;
}

/* A text value: bare when it is a plain word, else quoted with every control
 * character escaped, so no value can break the line, fake another field or
 * send escape sequences to the terminal. Cut at max bytes (0: never). */
static void put_text(struct line *l, const char *s, size_t n, size_t max)
{
    bool bare = n > 0;
    for (size_t i = 0; i < n && bare; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c >= 0x7f)
            bare = false;
    }
    size_t shown = n;
    if (max && n > max) {
        shown = max;
        while (shown > 0 && ((unsigned char)s[shown] & 0xc0) == 0x80)
            shown--; /* do not split a UTF-8 sequence */
        bare = false;
    }
    if (bare) {
        put(l, s, n);
        return;
    }
    put(l, "\"", 1);
    for (size_t i = 0; i < shown;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(l, e, 2);
            i++;
        } else if (c == '\n') {
            put(l, "\\n", 2);
            i++;
        } else if (c == '\t') {
            put(l, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            putf(l, "\\x%02x", c);
            i++;
        } else if (c == 0xc2 && i + 1 < shown &&
                   (unsigned char)s[i + 1] >= 0x80 &&
                   (unsigned char)s[i + 1] < 0xa0) {
            putf(l, "\\u%04x", (unsigned char)s[i + 1]); /* C1 controls */
            i += 2;
        } else if (c < 0x80) {
            put(l, s + i, 1);
            i++;
        } else {
            /* Copy a whole, valid UTF-8 sequence; escape any stray byte (a
             * raw 0x80-0x9f could act as a C1 control on some terminals). */
            size_t k = utf8_len(c);
            bool ok = k > 1 && i + k <= shown;
            for (size_t j = 1; ok && j < k; j++)
                if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                    ok = false;
            if (ok) {
                put(l, s + i, k);
                i += k;
            } else {
                putf(l, "\\x%02x", c);
                i++;
            }
        }
    }
    put(l, "\"", 1);
    if (shown < n)
        putf(l, "...(%zu bytes)", n);
}

static void put_dump(struct line *l, json_t *v, size_t max)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) {
        put_text(l, s, strlen(s), max);
        free(s);
    }
}

/* An array of short words and integers, printable as a,b,c. */
static bool plain_array(json_t *v)
{
    if (json_array_size(v) == 0)
        return false;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (json_is_integer(e))
            continue;
        if (!json_is_string(e))
            return false;
        const char *s = json_string_value(e);
        size_t n = strlen(s);
        if (n == 0 || n > 64 || n != json_string_length(e))
            return false;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)s[k];
            if (c <= ' ' || c >= 0x7f || c == ',' || c == '"' || c == '\\' ||
                c == '=')
                return false;
        }
    }
    return true;
}

static void put_value(struct line *l, json_t *v, size_t max)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_text(l, json_string_value(v), json_string_length(v), max);
        break;
    case JSON_INTEGER:
        putf(l, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        putf(l, "%g", json_real_value(v));
        break;
    case JSON_TRUE:
        puts_(l, "true");
        break;
    case JSON_FALSE:
        puts_(l, "false");
        break;
    case JSON_NULL:
        puts_(l, "null");
        break;
    case JSON_ARRAY:
        /* ids=c1,c2 for arrays of plain words; JSON otherwise. */
        if (plain_array(v)) {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) {
                if (i)
                    put(l, ",", 1);
                put_value(l, e, max);
            }
        } else {
            put_dump(l, v, max);
        }
        break;
    case JSON_OBJECT:
        put_dump(l, v, max);
        break;
    }
}

/* ---- one message -------------------------------------------------------- */

struct msg {
    const char *channel; /* full name */
    const char *kind;    /* "w", "e", "bus"...; NUL-terminated copy */
    const char *id;      /* after "<prefix>:<kind>:", may be "" */
    const char *payload; /* not NUL-terminated */
    size_t len;
    int64_t rx_ms;       /* wall clock at receipt */
};

/* A payload that is not JSON: withheld when it smells of a secret, and
 * always with --no-bodies (it could be anything, text included). */
static bool withhold_raw(const struct tap *t, const struct msg *m)
{
    return t->opt.no_bodies || raw_looks_secret(m->payload, m->len);
}

static bool user_matches(const struct tap *t, const struct msg *m, json_t *obj)
{
    if (!t->opt.nusers)
        return true;
    for (size_t i = 0; i < t->opt.nusers; i++) {
        const char *u = t->opt.users[i];
        if (obj) {
            /* The frame of a req or event names the other side (a contact's
             * presence, the addressee of a typing). */
            json_t *frame = json_object_get(obj, "frame");
            static const char *const keys[] = {"from", "to", "jid"};
            for (size_t k = 0; k < 3; k++)
                if (bare_jid_is(json_string_value(json_object_get(obj, keys[k])), u) ||
                    (json_is_object(frame) &&
                     bare_jid_is(json_string_value(json_object_get(frame, keys[k])), u)))
                    return true;
        }
    }
    return false;
}

static void print_json(struct tap *t, const struct msg *m, json_t *obj)
{
    json_t *out = json_object();
    json_object_set_new(out, "rx", json_integer(m->rx_ms));
    json_object_set_new(out, "channel", json_string(m->channel));
    if (obj) {
        json_object_set(out, "env", obj);
    } else if (withhold_raw(t, m)) {
        json_object_set_new(out, "raw", json_null());
        json_object_set_new(out, "withheld", json_true());
    } else {
        json_t *raw = json_stringn(m->payload, m->len);
        json_object_set_new(out, "raw", raw ? raw : json_string("<not UTF-8>"));
    }
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

/* The k=v fields of an envelope or a frame, but for those already on the
 * line (v, type or t, from/to/jid when shown as "from -> to", a req's or
 * event's frame). Stamps as dates, an envelope's ts only when it is not
 * "now"; pts (publish time) as the publish-to-receive latency. */
static void put_fields(const struct tap *t, struct line *l,
                       const struct msg *m, json_t *obj, bool is_frame,
                       bool skip_jid, bool skip_from, bool skip_to, size_t max)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if ((!strcmp(key, "v") && !is_frame) ||
            (!strcmp(key, "type") && !is_frame) ||
            (!strcmp(key, "t") && is_frame) ||
            (!strcmp(key, "from") && json_is_string(val) && !is_frame) ||
            (!strcmp(key, "to") && json_is_string(val) && !is_frame) ||
            (!strcmp(key, "from") && skip_from) ||
            (!strcmp(key, "to") && skip_to) ||
            (!strcmp(key, "jid") && skip_jid) ||
            (!strcmp(key, "frame") && json_is_object(val) && !is_frame &&
             json_string_value(json_object_get(val, "t"))))
            continue;
        if (!strcmp(key, "pts") && json_is_integer(val) && !is_frame) {
            /* Both positive: the difference cannot overflow. */
            json_int_t pts = json_integer_value(val);
            if (pts > 0)
                putf(l, " lat=%" JSON_INTEGER_FORMAT "ms",
                     (json_int_t)m->rx_ms - pts);
            continue;
        }
        if (!strcmp(key, "ts") && json_is_integer(val)) {
            /* An envelope's stamp is news only when it is not "now" (an
             * offline message's <delay/>, a stuck queue); a frame's (a
             * history page's message) is always shown, as a date. */
            int64_t v = json_integer_value(val);
            if (!is_frame && v > m->rx_ms - TS_SHOW_MS &&
                v < m->rx_ms + TS_SHOW_MS)
                continue;
            char iso[64];
            iso_time(v, iso, sizeof(iso));
            putf(l, " ts=%s", iso);
            continue;
        }
        put(l, " ", 1);
        put_text(l, key, strlen(key), 64);
        put(l, "=", 1);
        const char *mask = secret_mask(key);
        if (mask)
            puts_(l, mask);
        else if (t->opt.no_bodies && json_is_string(val) && text_key(key, is_frame))
            puts_(l, json_string_value(val)); /* our own "<N chars>" */
        else
            put_value(l, val, max);
    }
}

static void print_line(struct tap *t, const struct msg *m, json_t *obj)
{
    struct line l = {0};
    size_t max = t->opt.full ? 0 : VALUE_MAX;
    char ts[64];
    iso_time(m->rx_ms, ts, sizeof(ts));
    puts_(&l, ts);
    put(&l, " ", 1);
    put_text(&l, m->kind, strlen(m->kind), 64);
    if (*m->id) {
        put(&l, ":", 1);
        put_text(&l, m->id, strlen(m->id), 128);
    }
    if (!obj) {
        if (withhold_raw(t, m))
            putf(&l, " (not JSON, %zu bytes, withheld)", m->len);
        else {
            puts_(&l, " (not JSON) ");
            put_text(&l, m->payload, m->len, max);
        }
        goto out;
    }

    char type[TYPE_MAX] = "";
    put(&l, " ", 1);
    if (shown_type(obj, type, sizeof(type)))
        put_text(&l, type, strlen(type), 0);
    else
        put(&l, "?", 1);

    /* A req or event prints the frame it carries; its from/to fill the
     * "from -> to" the envelope leaves open (a contact's presence, the
     * addressee of a typing). */
    json_t *frame = json_object_get(obj, "frame");
    if (!strchr(type, '/') || !json_is_object(frame))
        frame = NULL;

    /* "from -> to": a login names its user in jid, on the way in (w) or
     * out (e). */
    const char *from = json_string_value(json_object_get(obj, "from"));
    const char *to = json_string_value(json_object_get(obj, "to"));
    const char *jid = json_string_value(json_object_get(obj, "jid"));
    bool inbound = !strcmp(m->kind, "w");
    bool jid_used = false, ffrom_used = false, fto_used = false;
    if (!from && !to && jid) {
        if (inbound)
            from = jid;
        else
            to = jid;
        jid_used = true;
    }
    if (frame && !from && (from = json_string_value(json_object_get(frame, "from"))))
        ffrom_used = true;
    if (frame && !to && (to = json_string_value(json_object_get(frame, "to"))))
        fto_used = true;
    if (from || to) {
        put(&l, " ", 1);
        if (from)
            put_text(&l, from, strlen(from), 128);
        else
            put(&l, "-", 1);
        puts_(&l, " -> ");
        if (to)
            put_text(&l, to, strlen(to), 128);
        else
            put(&l, "-", 1);
    }

    put_fields(t, &l, m, obj, false, jid_used, false, false, max);
    if (frame)
        put_fields(t, &l, m, frame, true, false, ffrom_used, fto_used, max);
out:
    put(&l, "\n", 1);
    fwrite(l.buf, 1, l.len, stdout);
    free(l.buf);
}

static void on_message(struct tap *t, const char *channel, const char *payload,
                       size_t len)
{
    if (len > 0 && payload[0] == '[') {
        /* Several envelopes for one user in one PUBLISH (deliver.lua): each
         * is shown as its own. */
        json_t *all = json_loadb(payload, len, 0, NULL);
        if (json_is_array(all)) {
            size_t i;
            json_t *v;
            json_array_foreach(all, i, v) {
                char *one = json_dumps(v, JSON_COMPACT);
                if (one)
                    on_message(t, channel, one, strlen(one));
                free(one);
            }
            json_decref(all);
            return;
        }
        json_decref(all);
    }
    const char *p = t->opt.prefix;
    if (strncmp(channel, p, t->prefix_len) != 0 || channel[t->prefix_len] != ':')
        return; /* a prefix with glob characters can match more */
    const char *rest = channel + t->prefix_len + 1;
    char kind[64];
    size_t klen = strcspn(rest, ":");
    if (klen >= sizeof(kind))
        klen = sizeof(kind) - 1;
    memcpy(kind, rest, klen);
    kind[klen] = '\0';
    const char *id = rest[strcspn(rest, ":")] ? rest + strcspn(rest, ":") + 1 : "";
    if (!strcmp(kind, "bus") && !t->opt.all)
        return;

    struct msg m = {channel, kind, id, payload, len, util_wall_ms()};
    json_t *obj = json_loadb(payload, len, 0, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    if (t->opt.ntypes) {
        char type[TYPE_MAX];
        if (!obj || !shown_type(obj, type, sizeof(type)) || !type_matches(t, type))
            goto done;
    }
    if (!user_matches(t, &m, obj))
        goto done;
    if (obj)
        redact(obj);
    if (obj && t->opt.no_bodies)
        hide_bodies(obj, 0);
    if (t->opt.json)
        print_json(t, &m, obj);
    else
        print_line(t, &m, obj);
    fflush(stdout);
    if (ferror(stdout)) { /* the reader went away (| head) */
        stop(t, EXIT_OK);
        goto done;
    }
    if (t->opt.count && ++t->printed >= t->opt.count)
        stop(t, EXIT_OK);
done:
    json_decref(obj);
}

/* ---- the Redis link ----------------------------------------------------- */

static void schedule_retry(struct tap *t)
{
    if (t->stopping)
        return;
    int ms = BACKOFF_MIN_MS << (t->attempt < 5 ? t->attempt : 5);
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    unsigned jitter;
    util_random(&jitter, sizeof(jitter));
    ms += (int)(jitter % (unsigned)(ms / 4 + 1));
    t->attempt++;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t->timer, &tv);
}

static void link_down(struct tap *t, const char *why)
{
    bool was_up = t->state == LINK_UP;
    t->state = LINK_DOWN;
    t->ac = NULL;
    if (was_up || t->attempt == 0)
        status("redis %s:%d down (%s), reconnecting", t->host, t->port,
               why);
    schedule_retry(t);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tap *t = arg;
    (void)fd;
    (void)what;
    if (t->state == LINK_CONNECTING && t->ac) {
        /* No PSUBSCRIBE confirmation in time. Freeing the context runs the
         * pending callbacks with NULL and, if TCP was up, on_disconnect: mark
         * it ours no more first. */
        redisAsyncContext *ac = t->ac;
        t->ac = NULL;
        redisAsyncFree(ac);
        link_down(t, "timeout");
        return;
    }
    if (t->state == LINK_DOWN)
        link_connect(t);
}

static void on_connect(const redisAsyncContext *ac, int st)
{
    struct tap *t = ac->data;
    if (ac != t->ac)
        return;
    if (st != REDIS_OK) {
        /* hiredis frees the context after this; no on_disconnect follows. */
        evtimer_del(t->timer);
        link_down(t, ac->errstr[0] ? ac->errstr : "connect failed");
    }
}

static void on_disconnect(const redisAsyncContext *ac, int st)
{
    struct tap *t = ac->data;
    (void)st;
    if (ac != t->ac)
        return; /* freed on purpose */
    /* hiredis drops a subscribed link on an error reply; an ACL refusal of
     * the pattern cannot get better by retrying. */
    if (!strncmp(ac->errstr, "NOPERM", 6) || !strncmp(ac->errstr, "NOAUTH", 6) ||
        !strncmp(ac->errstr, "WRONGPASS", 9)) {
        t->ac = NULL;
        status("redis refused PSUBSCRIBE: %s", ac->errstr);
        stop(t, EXIT_REDIS);
        return;
    }
    evtimer_del(t->timer);
    link_down(t, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void fatal_reply(struct tap *t, const char *what, const redisReply *r)
{
    /* Wrong password, no permission, unknown command: retrying cannot help. */
    status("redis refused %s: %s", what, r->str);
    stop(t, EXIT_REDIS);
}

/* Redis is reading its data back after a restart: try again later. */
static void loading(struct tap *t)
{
    redisAsyncContext *ac = t->ac;
    t->ac = NULL;
    redisAsyncDisconnect(ac);
    evtimer_del(t->timer);
    link_down(t, "redis is loading its data");
}

static void on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct tap *t = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && ac == t->ac)
        fatal_reply(t, "AUTH", r);
}

static void on_psub(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct tap *t = privdata;
    redisReply *r = reply;
    if (!r || ac != t->ac || t->stopping)
        return; /* the link is going away; on_disconnect handles it */
    if (r->type == REDIS_REPLY_ERROR) {
        fatal_reply(t, "PSUBSCRIBE", r);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (!strcasecmp(kind, "psubscribe")) {
        evtimer_del(t->timer);
        t->state = LINK_UP;
        t->attempt = 0;
        status("%s %s on %s:%d", t->ever_up ? "resubscribed" : "subscribed",
               t->pattern, t->host, t->port);
        t->ever_up = true;
    } else if (!strcasecmp(kind, "pmessage") && r->elements == 4 &&
               r->element[2]->type == REDIS_REPLY_STRING &&
               r->element[3]->type == REDIS_REPLY_STRING) {
        on_message(t, r->element[2]->str, r->element[3]->str,
                   r->element[3]->len);
    }
}

static void on_ping(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct tap *t = privdata;
    redisReply *r = reply;
    if (!r || ac != t->ac || t->stopping)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!strncmp(r->str, "LOADING", 7)) {
            loading(t);
            return;
        }
        fatal_reply(t, "PING", r);
        return;
    }
    redisAsyncCommand(ac, on_psub, t, "PSUBSCRIBE %s", t->pattern);
}

static void link_connect(struct tap *t)
{
    if (t->stopping)
        return;
    /* A cluster forwards every PUBLISH to every node: one node, any, shows
     * all the traffic. Each seed in turn, the next after a failure. */
    snprintf(t->host, sizeof(t->host), "%s", t->opt.host);
    t->port = t->opt.port;
    if (*t->opt.cluster && !bus_cluster_seed(t->opt.cluster, t->seed++, t->host,
                                             sizeof(t->host), &t->port)) {
        t->seed = 0;
        bus_cluster_seed(t->opt.cluster, t->seed++, t->host, sizeof(t->host), &t->port);
    }
    redisAsyncContext *ac = redisAsyncConnect(t->host, t->port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        t->ac = NULL;
        t->state = LINK_DOWN;
        if (t->attempt == 0)
            status("redis %s:%d: %s, retrying", t->host, t->port, why);
        schedule_retry(t);
        return;
    }
    ac->data = t;
    t->ac = ac;
    t->state = LINK_CONNECTING;
    redisLibeventAttach(ac, t->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    /* Pipelined behind the connect: AUTH first, then the subscription. */
    if (*t->opt.password) {
        if (*t->opt.user)
            redisAsyncCommand(ac, on_auth, t, "AUTH %s %s", t->opt.user,
                              t->opt.password);
        else
            redisAsyncCommand(ac, on_auth, t, "AUTH %s", t->opt.password);
    }
    /* A PING before the PSUBSCRIBE: its reply comes back on an ordinary
     * callback, so a missing or refused AUTH shows up as an error reply
     * (on a subscribed context hiredis would only drop the link). */
    redisAsyncCommand(ac, on_ping, t, "PING");
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000,
                         (CONNECT_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(t->timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    stop(arg, EXIT_OK);
}

/* ---- options ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: imtap [--redis-host H] [--redis-port P] [--redis-cluster H:P,...]\n"
          "             [--redis-user U]\n"
          "             [--redis-password X] [--prefix imb] [--user JID[,JID]]\n"
          "             [--type TYPE[,TYPE]] [--no-bodies] [--json] [--all] [--full]\n"
          "             [--count N]\n"
          "\n"
          "Prints every envelope crossing the imbridge bus, live: PSUBSCRIBE\n"
          "'<prefix>:*', one line per envelope:\n"
          "  TIME KIND:ID TYPE FROM -> TO field=value...\n"
          "KIND is the channel kind (w worker, e edge, bus heartbeats). A req\n"
          "or event shows as the frame it carries: TYPE req/presence,\n"
          "event/typing..., the frame's fields as field=value. An envelope's\n"
          "publish time shows as lat=MS (publish to receipt), its ts only when\n"
          "it is not now; --json keeps the raw values.\n"
          "Secrets are never printed: a login's sealed cred shows as <sealed>,\n"
          "fields named like a password, secret or token as <hidden>.\n"
          "\n"
          "  --redis-host H      Redis address (default: $IMB_REDIS_HOST or 127.0.0.1)\n"
          "  --redis-port P      Redis port (default: $IMB_REDIS_PORT or 6379)\n"
          "  --redis-cluster H:P,H:P  Redis Cluster seed nodes (default:\n"
          "                      $IMB_REDIS_CLUSTER); the tap listens on one node,\n"
          "                      which sees every PUBLISH of the cluster\n"
          "  --redis-user U      Redis ACL user (default: $IMB_REDIS_USER)\n"
          "  --redis-password X  Redis password (default: $IMB_REDIS_PASSWORD;\n"
          "                      prefer the variable: flags show in ps)\n"
          "  --prefix P          bus_prefix of the deployment (default: $IMB_BUS_PREFIX or imb)\n"
          "  --user JID[,JID]    only envelopes of these users (from/to/jid, also\n"
          "                      a req's or event's frame: a contact's presence)\n"
          "  --type T[,T]        only these types: an envelope's (login, chat, ack,\n"
          "                      req, event...), a frame's (presence, typing,\n"
          "                      receipt, roster, join, hist, history...: of a req or\n"
          "                      event) or both (event/presence)\n"
          "  --no-bodies         message text shows as its length, body=<42 chars>:\n"
          "                      a chat's body, a push preview, a frame's body,\n"
          "                      subject, reason or status (line and --json mode)\n"
          "                      (default: on when $IMB_TAP_NO_BODIES is 1)\n"
          "  --json              one JSON object per line:\n"
          "                      {\"rx\":MS,\"channel\":NAME,\"env\":{...}} (secrets masked)\n"
          "  --all               also the <prefix>:bus:* heartbeat channels\n"
          "  --full              do not cut values longer than 200 bytes\n"
          "  --count N           exit after printing N envelopes\n"
          "\n"
          "Redis restarts are survived (reconnect with backoff). Exit status: 0 on\n"
          "SIGINT/SIGTERM, --count or a closed stdout; 1 when Redis refuses AUTH or\n"
          "PSUBSCRIBE; 2 on a usage error.\n",
          f);
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("imtap: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see --help)\n", stderr);
    return EXIT_USAGE;
}

/* Split "a,b,c" into list (each lowercased when lower). */
static bool split_list(const char *s, char **list, size_t *n, bool lower)
{
    const char *p = s;
    while (*p) {
        size_t k = strcspn(p, ",");
        if (k > 0) {
            if (*n >= MAX_LIST)
                return false;
            char *item = xstrndup(p, k);
            if (lower)
                for (char *c = item; *c; c++)
                    if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
            /* A full JID filters by its bare part. */
            if (lower)
                item[strcspn(item, "/")] = '\0';
            list[(*n)++] = item;
        }
        p += k;
        if (*p == ',')
            p++;
    }
    return true;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static bool parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 65535)
        return false;
    *out = (int)v;
    return true;
}

static void free_options(struct options *o)
{
    if (o->password) {
        explicit_bzero(o->password, strlen(o->password));
        free(o->password);
        o->password = NULL;
    }
    for (size_t i = 0; i < o->nusers; i++)
        free(o->users[i]);
    for (size_t i = 0; i < o->ntypes; i++)
        free(o->types[i]);
    o->nusers = o->ntypes = 0;
}

/* Returns -1 to run, or an exit status. */
static int parse_options(struct options *o, int argc, char **argv)
{
    enum { O_HOST = 256, O_PORT, O_CLUSTER, O_RUSER, O_PASS, O_PREFIX, O_USER, O_TYPE,
           O_JSON, O_ALL, O_FULL, O_COUNT, O_NO_BODIES };
    static const struct option longopts[] = {
        {"redis-host", required_argument, NULL, O_HOST},
        {"redis-port", required_argument, NULL, O_PORT},
        {"redis-cluster", required_argument, NULL, O_CLUSTER},
        {"redis-user", required_argument, NULL, O_RUSER},
        {"redis-password", required_argument, NULL, O_PASS},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"user", required_argument, NULL, O_USER},
        {"type", required_argument, NULL, O_TYPE},
        {"json", no_argument, NULL, O_JSON},
        {"all", no_argument, NULL, O_ALL},
        {"full", no_argument, NULL, O_FULL},
        {"count", required_argument, NULL, O_COUNT},
        {"no-bodies", no_argument, NULL, O_NO_BODIES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    o->host = env_or("IMB_REDIS_HOST", DEFAULT_HOST);
    const char *port = env_or("IMB_REDIS_PORT", NULL);
    o->port = DEFAULT_PORT;
    if (port && !parse_port(port, &o->port))
        return usage_error("bad IMB_REDIS_PORT: %s", port);
    o->cluster = env_or("IMB_REDIS_CLUSTER", "");
    o->user = env_or("IMB_REDIS_USER", "");
    o->password = xstrdup(env_or("IMB_REDIS_PASSWORD", ""));
    o->prefix = env_or("IMB_BUS_PREFIX", DEFAULT_PREFIX);
    /* IMB_TAP_NO_BODIES=1: --no-bodies by default, e.g. from the services'
     * environment file, so an operator's tap hides message text unless
     * started with IMB_TAP_NO_BODIES=0. */
    const char *nb = env_or("IMB_TAP_NO_BODIES", "0");
    if (!strcmp(nb, "1") || !strcmp(nb, "yes") || !strcmp(nb, "on") || !strcmp(nb, "true"))
        o->no_bodies = true;
    else if (strcmp(nb, "0") && strcmp(nb, "no") && strcmp(nb, "off") && strcmp(nb, "false"))
        return usage_error("bad IMB_TAP_NO_BODIES (1 or 0): %s", nb);

    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            if (!parse_port(optarg, &o->port))
                return usage_error("bad --redis-port: %s", optarg);
            break;
        case O_CLUSTER:
            o->cluster = optarg;
            break;
        case O_RUSER:
            o->user = optarg;
            break;
        case O_PASS:
            explicit_bzero(o->password, strlen(o->password));
            free(o->password);
            o->password = xstrdup(optarg);
            break;
        case O_PREFIX:
            o->prefix = optarg;
            break;
        case O_USER:
            if (!split_list(optarg, o->users, &o->nusers, true))
                return usage_error("too many --user values: %s", optarg);
            break;
        case O_TYPE:
            if (!split_list(optarg, o->types, &o->ntypes, false))
                return usage_error("too many --type values: %s", optarg);
            break;
        case O_JSON:
            o->json = true;
            break;
        case O_ALL:
            o->all = true;
            break;
        case O_FULL:
            o->full = true;
            break;
        case O_NO_BODIES:
            o->no_bodies = true;
            break;
        case O_COUNT: {
            char *end;
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || v == 0 || optarg[0] == '-')
                return usage_error("bad --count (a positive number): %s", optarg);
            o->count = v;
            break;
        }
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case ':':
            return usage_error("option needs a value: %s", argv[optind - 1]);
        default:
            return usage_error("unknown option: %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument: %s", argv[optind]);
    if (!*o->host)
        return usage_error("%s", "--redis-host is empty");
    char err[200];
    if (*o->cluster && !bus_cluster_seeds_ok(o->cluster, err, sizeof(err)))
        return usage_error("%s", err);
    if (!*o->prefix || strlen(o->prefix) > 100)
        return usage_error("bad --prefix: '%s'", o->prefix);
    return -1;
}

/* "<prefix>:*" with the prefix's glob characters escaped. */
static void build_pattern(struct tap *t)
{
    size_t k = 0;
    for (const char *p = t->opt.prefix; *p && k + 4 < sizeof(t->pattern); p++) {
        if (strchr("*?[]\\", *p))
            t->pattern[k++] = '\\';
        t->pattern[k++] = *p;
    }
    t->pattern[k++] = ':';
    t->pattern[k++] = '*';
    t->pattern[k] = '\0';
    t->prefix_len = strlen(t->opt.prefix);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct tap t;
    memset(&t, 0, sizeof(t));
    int rc = parse_options(&t.opt, argc, argv);
    if (rc >= 0) {
        free_options(&t.opt);
        return rc;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    build_pattern(&t);

    t.base = event_base_new();
    t.timer = evtimer_new(t.base, on_timer, &t);
    t.sigint_ev = evsignal_new(t.base, SIGINT, on_signal, &t);
    t.sigterm_ev = evsignal_new(t.base, SIGTERM, on_signal, &t);
    event_add(t.sigint_ev, NULL);
    event_add(t.sigterm_ev, NULL);

    link_connect(&t);
    event_base_dispatch(t.base);

    if (t.ac) {
        /* Not inside a hiredis callback: freeing here is allowed. */
        redisAsyncContext *ac = t.ac;
        t.ac = NULL;
        redisAsyncFree(ac);
    }
    event_free(t.timer);
    event_free(t.sigint_ev);
    event_free(t.sigterm_ev);
    event_base_free(t.base);
    free_options(&t.opt);
    return t.exit_code;
}
