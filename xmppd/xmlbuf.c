/* xmlbuf.c - an XMPP session's parser costs little while it reads, and
 * nothing while the session is idle.
 *
 * libstrophe parses each session's stream with expat, one parser per
 * connection for the session's whole life. An expat parser holds about
 * 9 KB between stanzas (its input buffer, two string pools, three name
 * tables, the attribute arrays and itself), half of what an idle session
 * costs xmppd, although all it needs to remember there is the stream's
 * start tag: the namespaces it declared and the name its end tag must
 * match. So libstrophe's parser handle is not expat's but a small stand-in
 * (struct xmlbuf) that holds a real expat parser only while the stream is
 * being read:
 *
 *   - xmppd defines the seven expat functions libstrophe calls (create,
 *     reset, free, the three setters and XML_Parse), as tlsbuf.c defines
 *     SSL_new: libstrophe's calls bind to these (the executable comes first
 *     in symbol lookup), which call expat's own through dlsym. The real
 *     parser's handlers are this file's, which pass every event on.
 *   - xmlbuf_sweep(), called once a second by each worker, frees the real
 *     parser of every stand-in that read nothing since the last sweep and
 *     stands between stanzas with no byte held back (the last event ended
 *     where the bytes given to expat end).
 *   - The next read makes a new expat parser and first feeds it the
 *     stream's start tag, kept as it was read, with the handlers silenced:
 *     the new parser is where the old one was, and sees the read.
 *
 * Reads are fed to expat in slices of at most XMLBUF_SLICE bytes. Built
 * with XML_CONTEXT_BYTES, as Debian's is, expat copies each chunk into its
 * input buffer behind up to 1 KiB of context, and that buffer only grows:
 * one roster read whole (4 KiB) would leave 8 KiB there. expat is a
 * streaming parser: the same bytes in smaller calls give the same events in
 * the same order, and a slice plus the context plus an unfinished token fit
 * the smallest buffer expat makes (2 KiB).
 *
 * Only libstrophe may call expat in this process: any other expat function
 * given a stand-in would misread it (XML_GetErrorCode is the one more this
 * file answers). */
#include "xmppd.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

/* Bytes per call into expat: 512 + 1 KiB of context + an unfinished token
 * of up to 512 bytes fit expat's first buffer size (2 KiB). */
#define XMLBUF_SLICE 512

struct xmlbuf {
    XML_Parser real; /* expat's parser; NULL while asleep */
    const XML_Memory_Handling_Suite *mem;
    XML_Char sep;
    bool ns;         /* created with a namespace separator */
    bool muted;      /* replaying the start tag: no event passes */
    bool broken;     /* an error, or a start tag not kept: never sleeps */
    void *user;      /* libstrophe's */
    XML_StartElementHandler start;
    XML_EndElementHandler end;
    XML_CharacterDataHandler text;
    char *head;      /* the stream's start tag, as read */
    int head_len;
    int depth;       /* elements open */
    XML_Index fed;     /* bytes given to the real parser */
    XML_Index settled; /* where its last event between stanzas ended */
    unsigned seen;     /* the sweep round of the last read */
    enum XML_Error error; /* kept from a parser freed after an error */
    struct xmlbuf *prev, *next;
};

static struct {
    bool ok, tried;
    XML_Parser (*create)(const XML_Char *, const XML_Memory_Handling_Suite *,
                         const XML_Char *);
    void (*free)(XML_Parser);
    enum XML_Status (*parse)(XML_Parser, const char *, int, int);
    void (*set_user)(XML_Parser, void *);
    void (*set_element)(XML_Parser, XML_StartElementHandler, XML_EndElementHandler);
    void (*set_text)(XML_Parser, XML_CharacterDataHandler);
    enum XML_Error (*error)(XML_Parser);
    XML_Index (*index)(XML_Parser);
    int (*count)(XML_Parser);
    const char *(*context)(XML_Parser, int *, int *);
} expat;

static struct xmlbuf *all; /* every stand-in, for the sweep */
static unsigned round_no;
static size_t asleep;

static bool expat_ok(void)
{
    if (expat.tried)
        return expat.ok;
    expat.tried = true;
    /* (POSIX's way to turn dlsym's void * into a function pointer.) */
    *(void **)&expat.create = dlsym(RTLD_NEXT, "XML_ParserCreate_MM");
    *(void **)&expat.free = dlsym(RTLD_NEXT, "XML_ParserFree");
    *(void **)&expat.parse = dlsym(RTLD_NEXT, "XML_Parse");
    *(void **)&expat.set_user = dlsym(RTLD_NEXT, "XML_SetUserData");
    *(void **)&expat.set_element = dlsym(RTLD_NEXT, "XML_SetElementHandler");
    *(void **)&expat.set_text = dlsym(RTLD_NEXT, "XML_SetCharacterDataHandler");
    *(void **)&expat.error = dlsym(RTLD_NEXT, "XML_GetErrorCode");
    *(void **)&expat.index = dlsym(RTLD_NEXT, "XML_GetCurrentByteIndex");
    *(void **)&expat.count = dlsym(RTLD_NEXT, "XML_GetCurrentByteCount");
    *(void **)&expat.context = dlsym(RTLD_NEXT, "XML_GetInputContext");
    expat.ok = expat.create && expat.free && expat.parse && expat.set_user &&
               expat.set_element && expat.set_text && expat.error &&
               expat.index && expat.count && expat.context;
    return expat.ok;
}

/* The end of the event being reported. */
static XML_Index event_end(struct xmlbuf *b)
{
    return expat.index(b->real) + expat.count(b->real);
}

/* The stream's start tag, copied out of expat's buffer while its event is
 * reported (the whole tag is there then). Without it the parser stays. */
static void keep_head(struct xmlbuf *b)
{
    int off = 0, size = 0;
    const char *ctx = expat.context(b->real, &off, &size);
    int n = expat.count(b->real);
    free(b->head);
    b->head = NULL;
    if (!ctx || n <= 0 || off < 0 || off + n > size || !(b->head = malloc((size_t)n))) {
        b->broken = true;
        return;
    }
    memcpy(b->head, ctx + off, (size_t)n);
    b->head_len = n;
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xmlbuf *b = ud;
    if (b->muted)
        return;
    if (b->depth == 0)
        keep_head(b);
    if (++b->depth == 1)
        b->settled = event_end(b);
    if (b->start)
        b->start(b->user, name, atts);
}

static void on_end(void *ud, const XML_Char *name)
{
    struct xmlbuf *b = ud;
    if (b->muted)
        return;
    if (--b->depth == 1)
        b->settled = event_end(b);
    if (b->end)
        b->end(b->user, name);
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    struct xmlbuf *b = ud;
    if (b->muted)
        return;
    if (b->depth == 1)
        b->settled = event_end(b); /* (whitespace between stanzas) */
    if (b->text)
        b->text(b->user, s, len);
}

static enum XML_Status feed(struct xmlbuf *b, const char *s, int len, int final)
{
    while (len > XMLBUF_SLICE) {
        enum XML_Status st = expat.parse(b->real, s, XMLBUF_SLICE, 0);
        if (st != XML_STATUS_OK)
            return st;
        b->fed += XMLBUF_SLICE;
        s += XMLBUF_SLICE;
        len -= XMLBUF_SLICE;
    }
    enum XML_Status st = expat.parse(b->real, s, len, final);
    b->fed += len;
    return st;
}

/* A real parser for b: a fresh one, or (after a sleep) one that has read
 * the stream's start tag again. */
static bool wake(struct xmlbuf *b)
{
    b->real = expat.create(NULL, b->mem, b->ns ? &b->sep : NULL);
    if (!b->real)
        return false;
    expat.set_user(b->real, b);
    expat.set_element(b->real, on_start, on_end);
    expat.set_text(b->real, on_text);
    b->fed = b->settled = 0;
    if (b->depth == 0)
        return true;
    asleep--;
    b->muted = true;
    enum XML_Status st = feed(b, b->head, b->head_len, 0);
    b->muted = false;
    b->settled = b->fed;
    return st == XML_STATUS_OK;
}

static void drop_real(struct xmlbuf *b)
{
    if (b->real)
        expat.free(b->real);
    else if (b->depth > 0)
        asleep--;
    b->real = NULL;
}

XML_Parser XML_ParserCreate_MM(const XML_Char *encoding,
                               const XML_Memory_Handling_Suite *mem,
                               const XML_Char *sep)
{
    /* libstrophe names no encoding (XMPP is UTF-8); one named is refused
     * rather than forgotten at the first sleep. */
    if (!expat_ok() || encoding)
        return NULL;
    struct xmlbuf *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->mem = mem;
    b->ns = sep != NULL;
    b->sep = sep ? *sep : 0;
    b->seen = round_no;
    b->next = all;
    if (all)
        all->prev = b;
    all = b;
    return (XML_Parser)b;
}

void XML_ParserFree(XML_Parser p)
{
    struct xmlbuf *b = (struct xmlbuf *)p;
    if (!b)
        return;
    drop_real(b);
    if (b->prev)
        b->prev->next = b->next;
    else
        all = b->next;
    if (b->next)
        b->next->prev = b->prev;
    free(b->head);
    free(b);
}

/* A new stream on the same connection (after TLS or SASL): everything is
 * forgotten, the handlers too (libstrophe sets them again), as expat's own
 * reset does. */
XML_Bool XML_ParserReset(XML_Parser p, const XML_Char *encoding)
{
    struct xmlbuf *b = (struct xmlbuf *)p;
    if (encoding)
        return XML_FALSE;
    drop_real(b);
    free(b->head);
    b->head = NULL;
    b->head_len = b->depth = 0;
    b->broken = false;
    b->error = XML_ERROR_NONE;
    b->user = NULL;
    b->start = NULL;
    b->end = NULL;
    b->text = NULL;
    return XML_TRUE;
}

void XML_SetUserData(XML_Parser p, void *user)
{
    ((struct xmlbuf *)p)->user = user;
}

void XML_SetElementHandler(XML_Parser p, XML_StartElementHandler start,
                           XML_EndElementHandler end)
{
    ((struct xmlbuf *)p)->start = start;
    ((struct xmlbuf *)p)->end = end;
}

void XML_SetCharacterDataHandler(XML_Parser p, XML_CharacterDataHandler text)
{
    ((struct xmlbuf *)p)->text = text;
}

enum XML_Error XML_GetErrorCode(XML_Parser p)
{
    struct xmlbuf *b = (struct xmlbuf *)p;
    return b->real ? expat.error(b->real) : b->error;
}

enum XML_Status XML_Parse(XML_Parser p, const char *s, int len, int is_final)
{
    struct xmlbuf *b = (struct xmlbuf *)p;
    if (b->broken && !b->real)
        return XML_STATUS_ERROR;
    if (!b->real && !wake(b)) {
        b->broken = true;
        b->error = b->real ? expat.error(b->real) : XML_ERROR_NO_MEMORY;
        return XML_STATUS_ERROR;
    }
    b->seen = round_no;
    enum XML_Status st = feed(b, s, len, is_final);
    if (st != XML_STATUS_OK)
        b->broken = true;
    return st;
}

size_t xmlbuf_sweep(void)
{
    size_t n = 0;
    for (struct xmlbuf *b = all; b; b = b->next) {
        if (b->real && !b->broken && b->head && b->depth == 1 &&
            b->seen != round_no && b->settled == b->fed) {
            expat.free(b->real);
            b->real = NULL;
            asleep++;
            n++;
        }
    }
    round_no++;
    return n;
}

size_t xmlbuf_asleep(void)
{
    return asleep;
}
