/* filter.c - rules file parsing and message judging. Words match whole
 * (delimited by anything but letters, digits and non-ASCII bytes), ASCII
 * letters case-insensitively; lengths count characters, not bytes. */
#include "filter.h"
#include "jid.h"
#include "strmap.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct wordlist {
    char **w;
    size_t n, cap;
};

struct filter {
    long max_length;     /* characters, 0: none */
    double rate_n;       /* messages ... */
    double rate_s;       /* ... per this many seconds; 0: none */
    struct wordlist mask, reject;
    struct strmap blocked; /* prepared bare JID (jid.h) -> (void *)1 */
};

static void words_add(struct wordlist *l, const char *w, size_t len)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->w = xrealloc(l->w, l->cap * sizeof(*l->w));
    }
    char *c = xstrndup(w, len);
    for (char *p = c; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    l->w[l->n++] = c;
}

static void words_free(struct wordlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->w[i]);
    free(l->w);
}

void filter_free(struct filter *f)
{
    if (!f)
        return;
    words_free(&f->mask);
    words_free(&f->reject);
    strmap_free(&f->blocked);
    free(f);
}

size_t filter_rule_count(const struct filter *f)
{
    return (f->max_length > 0) + (f->rate_s > 0) + f->mask.n + f->reject.n +
           f->blocked.count;
}

/* One "key value..." line; false with err set. */
static bool parse_line(struct filter *f, char *line, char *err, size_t errlen)
{
    char *save = NULL;
    char *key = strtok_r(line, " \t", &save);
    if (!key)
        return true;
    char *arg = strtok_r(NULL, " \t", &save);
    if (!arg) {
        snprintf(err, errlen, "'%s' needs a value", key);
        return false;
    }
    if (strcmp(key, "max_length") == 0 || strcmp(key, "rate") == 0) {
        if (strtok_r(NULL, " \t", &save)) {
            snprintf(err, errlen, "'%s' takes one value", key);
            return false;
        }
        char *end;
        errno = 0;
        long n = strtol(arg, &end, 10);
        if (key[0] == 'm') {
            if (errno || *end || n < 1 || n > 1000000) {
                snprintf(err, errlen, "max_length must be 1..1000000");
                return false;
            }
            f->max_length = n;
            return true;
        }
        long secs = 0;
        if (errno || *end != '/' || n < 1 || n > 1000000 ||
            (secs = strtol(end + 1, &end, 10)) < 1 || secs > 86400 || *end) {
            snprintf(err, errlen, "rate must be N/S (N messages per S seconds)");
            return false;
        }
        f->rate_n = (double)n;
        f->rate_s = (double)secs;
        return true;
    }
    struct wordlist *l = strcmp(key, "mask") == 0     ? &f->mask
                         : strcmp(key, "reject") == 0 ? &f->reject
                                                      : NULL;
    bool block = strcmp(key, "block") == 0;
    if (!l && !block) {
        snprintf(err, errlen, "unknown rule '%s' (max_length, rate, mask, reject, block)", key);
        return false;
    }
    for (; arg; arg = strtok_r(NULL, " \t", &save)) {
        if (block) {
            /* Kept prepared (jid.h), as the peers it is compared with. */
            char bare[3 * (JID_PART_MAX + 1)];
            int rc = strchr(arg, '/') ? -1 : jid_prep_bare(arg, bare, sizeof(bare));
            if (rc != JID_OK) {
                snprintf(err, errlen, "'%s' is not a bare JID%s%s", arg,
                         rc > 0 ? ": " : "", rc > 0 ? jid_strerror(rc) : "");
                return false;
            }
            strmap_put(&f->blocked, bare, (void *)1);
        } else {
            words_add(l, arg, strlen(arg));
        }
    }
    return true;
}

struct filter *filter_parse(const char *text, const char *name, char *err,
                            size_t errlen)
{
    struct filter *f = xcalloc(1, sizeof(*f));
    strmap_init(&f->blocked);
    int lineno = 0;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        char *line = xstrndup(p, n);
        lineno++;
        line[strcspn(line, "#\r")] = '\0';
        char why[200];
        bool ok = parse_line(f, line, why, sizeof(why));
        free(line);
        if (!ok) {
            snprintf(err, errlen, "%s:%d: %s", name, lineno, why);
            filter_free(f);
            return NULL;
        }
        p += n + (p[n] == '\n');
    }
    return f;
}

struct filter *filter_load(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *text = xmalloc(cap);
    size_t got;
    while ((got = fread(text + len, 1, cap - len - 1, fp)) > 0) {
        len += got;
        if (len + 1 == cap) {
            if (cap >= 16 * 1024 * 1024)
                break;
            cap *= 2;
            text = xrealloc(text, cap);
        }
    }
    fclose(fp);
    text[len] = '\0';
    struct filter *f = filter_parse(text, path, err, errlen);
    free(text);
    return f;
}

static bool word_byte(unsigned char c)
{
    return isalnum(c) || c >= 0x80;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Offset of the first whole-word occurrence of w in s at or after from,
 * or -1. */
static long find_word(const char *s, size_t len, size_t from, const char *w)
{
    size_t wl = strlen(w);
    for (size_t i = from; wl && i + wl <= len; i++) {
        if (strncasecmp(s + i, w, wl) != 0)
            continue;
        bool start = i == 0 || !word_byte((unsigned char)s[i - 1]);
        bool end = i + wl == len || !word_byte((unsigned char)s[i + wl]);
        if (start && end)
            return (long)i;
    }
    return -1;
}

enum filter_reason filter_check(const struct filter *f, const char *peer,
                                const char *body, char **masked)
{
    *masked = NULL;
    if (!f)
        return FR_PASS;
    if (peer && f->blocked.count > 0) {
        /* Prepared as the rules are: "ＢＬＯＣＫＥＤ@localhost" is
         * "blocked@localhost". What cannot be prepared, no XMPP server
         * would route: refused as blocked. */
        char bare[3 * (JID_PART_MAX + 1)];
        if (jid_prep_bare(peer, bare, sizeof(bare)) != JID_OK ||
            strmap_get(&f->blocked, bare))
            return FR_BLOCKED;
    }
    size_t len = strlen(body);
    if (f->max_length > 0 && utf8_chars(body, len) > (size_t)f->max_length)
        return FR_TOO_LONG;
    for (size_t i = 0; i < f->reject.n; i++)
        if (find_word(body, len, 0, f->reject.w[i]) >= 0)
            return FR_BANNED;
    char *out = NULL;
    for (size_t i = 0; i < f->mask.n; i++) {
        const char *w = f->mask.w[i];
        size_t wl = strlen(w);
        long at;
        size_t from = 0;
        while ((at = find_word(out ? out : body, len, from, w)) >= 0) {
            if (!out)
                out = xstrdup(body);
            /* One '*' per character; the rest of the bytes close up. */
            size_t chars = utf8_chars(out + at, wl);
            memset(out + at, '*', chars);
            memmove(out + at + chars, out + at + wl, len - (size_t)at - wl + 1);
            len -= wl - chars;
            from = (size_t)at + chars;
        }
    }
    if (!out)
        return FR_PASS;
    *masked = out;
    return FR_MASKED;
}

bool filter_rate_ok(const struct filter *f, double *tokens, int64_t *last_ms,
                    int64_t now_ms)
{
    if (!f || f->rate_s <= 0)
        return true;
    if (*last_ms == 0)
        *tokens = f->rate_n;
    else
        *tokens += (double)(now_ms - *last_ms) / 1000.0 * f->rate_n / f->rate_s;
    if (*tokens > f->rate_n)
        *tokens = f->rate_n;
    *last_ms = now_ms;
    if (*tokens < 1.0)
        return false;
    *tokens -= 1.0;
    return true;
}

const char *filter_reason_name(enum filter_reason r)
{
    static const char *const names[FILTER_REASONS] = {
        "pass", "masked", "too_long", "banned_word", "blocked", "rate_limited"};
    return r < FILTER_REASONS ? names[r] : "?";
}
