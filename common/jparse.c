/* jparse.c - yajl's events into jansson values (jparse.h says why and what
 * is refused). One builder per parse: the containers open so far, the key
 * waiting for its value, the first reason to stop. */
#include "jparse.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

static void *(*use_malloc)(size_t) = malloc;
static void *(*use_realloc)(void *, size_t) = realloc;
static void (*use_free)(void *) = free;

void jparse_set_alloc(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                      void (*free_fn)(void *))
{
    use_malloc = malloc_fn;
    use_realloc = realloc_fn;
    use_free = free_fn;
}

static void *y_malloc(void *ctx, size_t n)
{
    return use_malloc(n);
}

static void *y_realloc(void *ctx, void *p, size_t n)
{
    return use_realloc(p, n);
}

static void y_free(void *ctx, void *p)
{
    use_free(p);
}

/* A key whose text yajl had to unescape lives in yajl's decode buffer,
 * which the next escaped string overwrites: such a key is copied here
 * (keys of the input's own bytes are used in place). */
#define KEY_INLINE 128

struct builder {
    yajl_handle h;
    const char *in, *in_end; /* the text being parsed */
    size_t end;              /* where the top-level value ended, once it has */
    json_t *open[JPARSE_MAX_DEPTH]; /* [0..depth): borrowed; open[0] is root */
    int depth;
    json_t *root;            /* owned until handed to the caller */
    const char *key;         /* the key waiting for its value (objects) */
    size_t key_len;
    char *key_heap;          /* a copied key above KEY_INLINE bytes */
    char key_inline[KEY_INLINE];
    char *err;
    size_t errlen;
    bool failed;             /* err says why; yajl reports "client cancelled" */
};

static int fail(struct builder *b, const char *what, const char *key, size_t key_len)
{
    if (!b->failed) {
        /* A key is quoted only when it is printable ASCII (the reason goes
         * into error frames and log lines). */
        bool printable = key && key_len <= 64;
        for (size_t i = 0; printable && i < key_len; i++)
            printable = key[i] >= 0x20 && key[i] < 0x7f && key[i] != '\'' && key[i] != '"';
        if (printable)
            snprintf(b->err, b->errlen, "%s '%.*s'", what, (int)key_len, key);
        else
            snprintf(b->err, b->errlen, "%s", what);
    }
    b->failed = true;
    return 0;
}

/* Put v (a new reference) where the parse stands: the root, the next
 * element of the open array, or the value of the waiting key. */
static int add(struct builder *b, json_t *v, bool container)
{
    if (!v)
        return fail(b, "out of memory or an invalid value", NULL, 0);
    if (b->depth == 0) {
        if (!container) {
            json_decref(v);
            return fail(b, "'[' or '{' expected", NULL, 0);
        }
        b->root = v;
        return 1;
    }
    json_t *top = b->open[b->depth - 1];
    if (json_is_array(top))
        return json_array_append_new(top, v) == 0 ? 1 : fail(b, "out of memory", NULL, 0);
    /* json_object_setn_new checks that the key is valid UTF-8, and replaces
     * the value of a key already there: the size then says "twice" (one
     * lookup, where asking first would be two). */
    size_t had = json_object_size(top);
    if (json_object_setn_new(top, b->key, b->key_len, v) != 0)
        return fail(b, "key is not valid UTF-8", NULL, 0);
    if (json_object_size(top) == had)
        return fail(b, "duplicate key", b->key, b->key_len);
    return 1;
}

static int on_null(void *ctx)
{
    return add(ctx, json_null(), false);
}

static int on_boolean(void *ctx, int v)
{
    return add(ctx, json_boolean(v), false);
}

/* A number, as yajl's lexer found it (JSON's syntax), converted as jansson
 * converts: an integer unless it has a fraction or an exponent; refused
 * when it does not fit (yajl's own conversion refuses INT64_MIN). */
static int on_number(void *ctx, const char *s, size_t len)
{
    struct builder *b = ctx;
    char small[64], *text = small;
    if (len >= sizeof(small) && !(text = use_malloc(len + 1)))
        return fail(b, "out of memory", NULL, 0);
    memcpy(text, s, len);
    text[len] = '\0';
    bool real = strpbrk(text, ".eE") != NULL;
    errno = 0;
    json_t *v;
    if (real) {
        double d = strtod(text, NULL);
        v = (d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE ? NULL : json_real(d);
    } else {
        long long i = strtoll(text, NULL, 10);
        v = errno == ERANGE ? NULL : json_integer((json_int_t)i);
    }
    if (text != small)
        use_free(text);
    if (!v)
        return fail(b, real ? "real number out of range" : "integer out of range", NULL, 0);
    return add(b, v, false);
}

/* Are the len bytes at s all ASCII without U+0000 (most strings: ids,
 * JIDs, Latin text)? Eight at a time. */
static bool plain_ascii(const unsigned char *s, size_t len)
{
    const uint64_t high = 0x8080808080808080ull, ones = 0x0101010101010101ull;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if ((w & high) || ((w - ones) & ~w & high)) /* a byte >= 0x80, or a zero */
            return false;
    }
    for (; i < len; i++)
        if (s[i] == 0 || s[i] >= 0x80)
            return false;
    return true;
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    struct builder *b = ctx;
    if (plain_ascii(s, len))
        return add(b, json_stringn_nocheck((const char *)s, len), false);
    if (memchr(s, '\0', len))
        return fail(b, "\\u0000 is not allowed in a string", NULL, 0);
    /* json_stringn checks UTF-8 (jansson's rules) and copies. */
    json_t *v = json_stringn((const char *)s, len);
    if (!v)
        return fail(b, "string is not valid UTF-8", NULL, 0);
    return add(b, v, false);
}

static int open_container(struct builder *b, json_t *v)
{
    if (b->depth == JPARSE_MAX_DEPTH) {
        json_decref(v);
        return fail(b, "nested too deep", NULL, 0);
    }
    if (!add(b, v, true))
        return 0;
    b->open[b->depth++] = v;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, json_object());
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, json_array());
}

static int on_end(void *ctx)
{
    struct builder *b = ctx;
    if (--b->depth == 0)
        b->end = yajl_get_bytes_consumed(b->h);
    return 1;
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    struct builder *b = ctx;
    const char *k = (const char *)s;
    if (memchr(k, '\0', len))
        return fail(b, "\\u0000 is not allowed in a key", NULL, 0);
    if (k < b->in || k + len > b->in_end) {
        char *to = b->key_inline;
        if (len > KEY_INLINE) {
            char *grown = use_realloc(b->key_heap, len);
            if (!grown)
                return fail(b, "out of memory", NULL, 0);
            b->key_heap = to = grown;
        }
        memcpy(to, k, len);
        k = to;
    }
    b->key = k;
    b->key_len = len;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

/* yajl's own reason ("lexical error: invalid char in json text.\n"),
 * without its newline, and where. */
static void yajl_reason(yajl_handle h, char *err, size_t errlen)
{
    unsigned char *text = yajl_get_error(h, 0, NULL, 0);
    const char *t = text ? (const char *)text : "parse error";
    size_t n = strcspn(t, ".\n");
    snprintf(err, errlen, "%.*s at byte %zu", (int)n, t, yajl_get_bytes_consumed(h));
    if (text)
        yajl_free_error(h, text);
}

/* Could the text hold a \u escape of a high surrogate (\uD800-\uDBFF)?
 * (A false yes, as for "\\\\ud800", only costs the slower parse.) */
static bool surrogate_escape(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while ((p = memchr(p, '\\', (size_t)(end - p))) && end - p >= 4) {
        if (p[1] == 'u' && (p[2] == 'd' || p[2] == 'D') && p[3] && strchr("89abAB", p[3]))
            return true;
        p++;
    }
    return false;
}

/* Containers nested in v, counted up to limit + 1. */
static int depth(const json_t *v, int limit)
{
    if (limit < 0 || !(json_is_object(v) || json_is_array(v)))
        return 0;
    int deepest = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && deepest <= limit; i++) {
            int d = depth(json_array_get(v, i), limit - 1);
            deepest = d > deepest ? d : deepest;
        }
    } else {
        for (void *it = json_object_iter((json_t *)v); it && deepest <= limit;
             it = json_object_iter_next((json_t *)v, it)) {
            int d = depth(json_object_iter_value(it), limit - 1);
            deepest = d > deepest ? d : deepest;
        }
    }
    return deepest + 1;
}

/* yajl decodes a high surrogate escape loosely (jparse.h): such a text,
 * rare (a client that escapes what is not ASCII), goes to jansson's own
 * parser, which checks pairs. */
static json_t *jansson_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    /* (jansson skips a NUL byte between tokens; yajl, and so jparse,
     * refuses it.) */
    if (memchr(buf, '\0', len)) {
        snprintf(err, errlen, "a NUL byte in the text");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        snprintf(err, errlen, "%s at byte %d", jerr.text, jerr.position);
        /* jansson quotes the text near the fault: keep the reason printable
         * ASCII without '"' or '\\' (it goes into log values and frames). */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
            else if (*p == '"' || *p == '\\')
                *p = '\'';
    } else if (depth(v, JPARSE_MAX_DEPTH) > JPARSE_MAX_DEPTH) {
        snprintf(err, errlen, "nested too deep");
        json_decref(v);
        v = NULL;
    }
    return v;
}

json_t *jparse(const char *buf, size_t len, char *err, size_t errlen)
{
    if (surrogate_escape(buf, len))
        return jansson_parse(buf, len, err, errlen);
    /* yajl also takes \v and \f for whitespace; JSON does not, and inside
     * a string they are refused as every control character is: refused
     * wherever they are. */
    if (memchr(buf, '\v', len) || memchr(buf, '\f', len)) {
        snprintf(err, errlen, "a control character outside a string");
        return NULL;
    }
    /* Whitespace after the value is JSON's; yajl reaching the end of its
     * text inside it sets up a buffer for a token that might go on. */
    while (len > 0 && buf[len - 1] && strchr(" \t\r\n", buf[len - 1]))
        len--;
    struct builder b = {.in = buf, .in_end = buf + len, .err = err, .errlen = errlen};
    yajl_alloc_funcs alloc = {y_malloc, y_realloc, y_free, NULL};
    yajl_handle h = yajl_alloc(&callbacks, &alloc, &b);
    b.h = h;
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* Strings are checked by jansson (stricter than yajl's check). */
    yajl_config(h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(h, (const unsigned char *)buf, len);
    /* Once the value has closed, yajl has nothing left to say (text after
     * it is judged below), and complete_parse would cost a 2 KiB buffer:
     * it feeds the lexer one more space, whose end of chunk makes the
     * lexer set up its buffer for a token that might go on. */
    if (st == yajl_status_ok && !(b.root && b.depth == 0))
        st = yajl_complete_parse(h);
    if (st != yajl_status_ok && !b.failed)
        yajl_reason(h, err, errlen);
    /* yajl takes text after the value for an unfinished token and lets
     * complete_parse pass it ("[1]\"" is accepted): only whitespace may
     * follow the value. */
    if (st == yajl_status_ok && !b.failed) {
        size_t at = b.root ? b.end : 0;
        while (at < len && strchr(" \t\r\n", buf[at]) && buf[at])
            at++;
        if (!b.root || at < len)
            fail(&b, "text after the value", NULL, 0);
    }
    yajl_free(h);
    use_free(b.key_heap);
    if (st != yajl_status_ok || b.failed) {
        json_decref(b.root);
        return NULL;
    }
    return b.root;
}
