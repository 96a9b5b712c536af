/* log.c - the line logger: "2026-01-02T03:04:05.678Z INFO edge login_ok jid=a@b",
 * or with log_format = json the same event as one JSON object per line (the
 * key=value text of the call site parsed into string members, jansson
 * writing the JSON). */
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>

enum log_level log_min_level = LOG_INFO;
enum log_format log_format = LOG_FORMAT_TEXT;
static char log_name[32] = "imbridge";

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const format_names[] = {"text", "json"};

void log_set_name(const char *name)
{
    snprintf(log_name, sizeof(log_name), "%s", name);
}

int log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return level_names[l];
}

int log_parse_format(const char *s)
{
    for (int i = 0; i < 2; i++)
        if (strcasecmp(s, format_names[i]) == 0)
            return i;
    return -1;
}

static bool key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

/* The length of the key when p starts "key=", else 0. */
static size_t key_at(const char *p)
{
    size_t n = 0;
    while (key_char(p[n]))
        n++;
    return n && p[n] == '=' ? n : 0;
}

/* True when p (at a space) is where a value ends: spaces, then the end or
 * the next "key=". */
static bool boundary(const char *p)
{
    while (*p == ' ')
        p++;
    return *p == '\0' || key_at(p) > 0;
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* A JSON string of s (n bytes), any byte that is not UTF-8 as U+FFFD. */
static json_t *clean_string(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *buf = malloc(3 * n + 1);
    if (!buf)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i);
        if (l == 0) {
            memcpy(buf + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else {
            memcpy(buf + k, s + i, l);
            k += l;
            i += l;
        }
    }
    j = json_stringn(buf, k);
    free(buf);
    return j;
}

/* Add key (klen bytes) = value (vlen bytes) to o; a key naming one of the
 * line's own members gets a leading '_'. */
static bool add_member(json_t *o, const char *key, size_t klen, const char *val,
                       size_t vlen)
{
    char name[80];
    bool own = false;
    static const char *const reserved[] = {"ts", "level", "proc", "event"};
    for (size_t i = 0; i < 4; i++)
        own |= strlen(reserved[i]) == klen && !memcmp(reserved[i], key, klen);
    if (klen > sizeof(name) - 2)
        klen = sizeof(name) - 2;
    snprintf(name, sizeof(name), "%s%.*s", own ? "_" : "", (int)klen, key);
    json_t *v = clean_string(val, vlen);
    return v && json_object_set_new(o, name, v) == 0;
}

char *log_json_line(const char *ts, const char *level, const char *proc,
                    const char *event, const char *kv)
{
    char *out = NULL;
    char *val = malloc(strlen(kv) + 1);
    json_t *o = json_object();
    if (!val || !o)
        goto fail;
    if (json_object_set_new(o, "ts", json_string(ts)) ||
        json_object_set_new(o, "level", json_string(level)) ||
        json_object_set_new(o, "proc", clean_string(proc, strlen(proc))) ||
        json_object_set_new(o, "event", clean_string(event, strlen(event))))
        goto fail;
    const char *p = kv;
    while (*p == ' ')
        p++;
    if (*p && !key_at(p)) {
        /* Free text before the first key. */
        const char *q = p;
        while (*q && !(*q == ' ' && boundary(q)))
            q++;
        if (!add_member(o, "msg", 3, p, (size_t)(q - p)))
            goto fail;
        p = q;
    }
    while (*p) {
        while (*p == ' ')
            p++;
        size_t klen = key_at(p);
        if (!klen)
            break; /* only spaces were left */
        const char *key = p;
        p += klen + 1;
        size_t vlen = 0;
        if (*p == '"') {
            const char *q = p + 1;
            for (;;) {
                if (*q == '\\' && (q[1] == '"' || q[1] == '\\')) {
                    val[vlen++] = q[1];
                    q += 2;
                } else if (*q == '"' && (q[1] == '\0' || (q[1] == ' ' && boundary(q + 1)))) {
                    q++;
                    break;
                } else if (*q == '\0') {
                    break; /* cut short: the value runs to the end */
                } else {
                    val[vlen++] = *q++;
                }
            }
            p = q;
        } else {
            const char *q = p;
            while (*q && !(*q == ' ' && boundary(q)))
                q++;
            vlen = (size_t)(q - p);
            memcpy(val, p, vlen);
            p = q;
        }
        if (!add_member(o, key, klen, val, vlen))
            goto fail;
    }
    out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
fail:
    json_decref(o);
    free(val);
    return out;
}

void log_write(enum log_level level, const char *event, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[96];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    int n = log_format == LOG_FORMAT_JSON
                ? 0
                : snprintf(line, sizeof(line), "%s %s %s %s ", ts,
                           level_names[level], log_name, event);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len] = '\0';
    if (log_format == LOG_FORMAT_JSON) {
        /* jansson escapes what would break the line. */
        char *j = log_json_line(ts, level_names[level], log_name, event, line);
        size_t jl = j ? strlen(j) : 0;
        char *nl = j ? realloc(j, jl + 2) : NULL;
        if (nl) {
            /* One write: workers share stderr. */
            nl[jl] = '\n';
            fwrite(nl, 1, jl + 1, stderr);
            free(nl);
            return;
        }
        free(j);
        /* Out of memory: the text line rather than nothing. */
        char head[160];
        int h = snprintf(head, sizeof(head), "%s %s %s %s ", ts,
                         level_names[level], log_name, event);
        fwrite(head, 1, h > 0 && (size_t)h < sizeof(head) ? (size_t)h : 0, stderr);
    }
    /* One event, one line: never let a value break the line. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
