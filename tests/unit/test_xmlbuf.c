/* test_xmlbuf.c - xmppd/xmlbuf: the expat functions every library of the
 * process binds to (libstrophe's included) keep expat's input buffer at its
 * smallest size, free an idle stream's parser between stanzas and make it
 * again where it was, and report the same events as expat's own parser. */
#include "unit.h"
#include "../../xmppd/xmppd.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

/* expat's memory, counted: the largest single block it asked for, and the
 * bytes it holds now. */
static size_t largest;
static long long live;

static void *count_malloc(size_t n)
{
    if (n > largest)
        largest = n;
    void *p = malloc(n);
    if (p)
        live += (long long)malloc_usable_size(p);
    return p;
}

static void *count_realloc(void *p, size_t n)
{
    if (n > largest)
        largest = n;
    size_t before = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q)
        live += (long long)malloc_usable_size(q) - (long long)before;
    return q;
}

static void count_free(void *p)
{
    if (p)
        live -= (long long)malloc_usable_size(p);
    free(p);
}

static const XML_Memory_Handling_Suite counting = {
    count_malloc, count_realloc, count_free,
};

/* expat's own functions, for the parser every result is compared with. */
static struct {
    XML_Parser (*create)(const XML_Char *, const XML_Memory_Handling_Suite *,
                         const XML_Char *);
    void (*free)(XML_Parser);
    enum XML_Status (*parse)(XML_Parser, const char *, int, int);
    void (*set_user)(XML_Parser, void *);
    void (*set_element)(XML_Parser, XML_StartElementHandler, XML_EndElementHandler);
    void (*set_text)(XML_Parser, XML_CharacterDataHandler);
} expat;

static bool find_expat(void)
{
    *(void **)&expat.create = dlsym(RTLD_NEXT, "XML_ParserCreate_MM");
    *(void **)&expat.free = dlsym(RTLD_NEXT, "XML_ParserFree");
    *(void **)&expat.parse = dlsym(RTLD_NEXT, "XML_Parse");
    *(void **)&expat.set_user = dlsym(RTLD_NEXT, "XML_SetUserData");
    *(void **)&expat.set_element = dlsym(RTLD_NEXT, "XML_SetElementHandler");
    *(void **)&expat.set_text = dlsym(RTLD_NEXT, "XML_SetCharacterDataHandler");
    return expat.create && expat.free && expat.parse && expat.set_user &&
           expat.set_element && expat.set_text;
}

/* Everything a parser reported, as text: "<name", ">name", and
 * character data, merged across calls. */
struct trace {
    char text[64 * 1024];
    size_t len;
};

static void trace_add(struct trace *t, const char *s, size_t n)
{
    if (t->len + n < sizeof(t->text)) {
        memcpy(t->text + t->len, s, n);
        t->len += n;
        t->text[t->len] = '\0';
    }
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    trace_add(ud, "<", 1);
    trace_add(ud, name, strlen(name));
    for (int i = 0; atts[i]; i += 2) {
        trace_add(ud, " ", 1);
        trace_add(ud, atts[i], strlen(atts[i]));
        trace_add(ud, "=", 1);
        trace_add(ud, atts[i + 1], strlen(atts[i + 1]));
    }
}

static void on_end(void *ud, const XML_Char *name)
{
    trace_add(ud, ">", 1);
    trace_add(ud, name, strlen(name));
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    trace_add(ud, s, (size_t)len);
}

#define HEAD                                                                   \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "               \
    "xmlns:stream='http://etherx.jabber.org/streams' id='s1' "                 \
    "from='localhost' version='1.0'>"

/* An XMPP stream as a server writes it: the stream header, then a roster
 * of 150 contacts (names with multi-byte characters) and a few messages,
 * about 17 KB. */
static size_t make_stream(char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap,
        HEAD "<iq type='result' id='r1'><query xmlns='jabber:iq:roster'>");
    for (int i = 0; i < 150 && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "<item jid='contact%d@localhost' name='Zoë "
                              "Ñandú %d' subscription='both'><group>Friends"
                              "</group></item>", i, i);
    for (int i = 0; i < 5 && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "<message from='bob@localhost/x' to='alice@"
                              "localhost' id='m%d'><body>héllo %d &amp; "
                              "ünïcödé</body></message>", i, i);
    if (n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "</query></iq>");
    return n;
}

/* Parses the stream read as libstrophe reads it (chunks of up to 4 KiB),
 * by expat's own parser (direct) or through xmlbuf; returns expat's
 * largest block, fills *t. */
static size_t parse_stream(bool direct, struct trace *t, bool *ok)
{
    static char stream[32 * 1024];
    size_t len = make_stream(stream, sizeof(stream));
    largest = 0;
    t->len = 0;
    t->text[0] = '\0';
    XML_Parser p = direct ? expat.create(NULL, &counting, "\x1f")
                          : XML_ParserCreate_MM(NULL, &counting, "\x1f");
    *ok = p != NULL;
    if (!p)
        return 0;
    (direct ? expat.set_user : XML_SetUserData)(p, t);
    (direct ? expat.set_element : XML_SetElementHandler)(p, on_start, on_end);
    (direct ? expat.set_text : XML_SetCharacterDataHandler)(p, on_text);
    for (size_t off = 0; off < len && *ok; off += 4096) {
        size_t n = len - off < 4096 ? len - off : 4096;
        *ok = (direct ? expat.parse : XML_Parse)(p, stream + off, (int)n, 0) ==
              XML_STATUS_OK;
    }
    (direct ? expat.free : XML_ParserFree)(p);
    return largest;
}

TEST(xmlbuf_keeps_expats_buffer_at_its_smallest)
{
    static struct trace direct, sliced;
    bool ok_direct, ok_sliced;
    size_t big = parse_stream(true, &direct, &ok_direct);
    size_t small = parse_stream(false, &sliced, &ok_sliced);
    printf("    expat's largest block: %zu B fed whole, %zu B through "
           "xmlbuf\n", big, small);
    CHECK(ok_direct);
    CHECK(ok_sliced);
    /* Fed 4 KiB reads, expat's own buffer grows to 8 KiB: the fault. */
    CHECK(big >= 8192);
    CHECK(small <= 2048);
    /* The same callbacks, in the same order, with the same text. */
    CHECK(direct.len > 12000);
    CHECK_EQ_INT(sliced.len, direct.len);
    CHECK(strcmp(sliced.text, direct.text) == 0);
}

/* Reads given one at a time to a parser; between reads the test may sweep
 * (twice: a parser that read since the last sweep is kept once). */
struct step {
    const char *bytes;
    int sweeps_asleep; /* -1: no sweep here; else parsers the sweeps free */
};

static const struct step talk[] = {
    {HEAD, 1},
    {"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
     "</stream:features>", 1},
    {"<message from='bob@localhost/x' id='a'><body>one</body></message> ", 1},
    /* Whitespace keepalives between stanzas: still nothing held back. */
    {"\n \n", 1},
    /* A stanza cut in two reads: its parser stays. */
    {"<message from='bob@localhost/x' id='b'><body>tw", 0},
    {"o</body></message>", 1},
    /* A start tag cut in two reads: its parser stays too. */
    {"<presence from='carol@localhost/y'", 0},
    {"><show>away</show></presence><iq type='get' id='p'><ping "
     "xmlns='urn:xmpp:ping'/></iq>", 1},
    /* A prefix the stream declared, used after a sleep. */
    {"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
     "</stream:error>", 1},
    /* The end tag must match the start tag the parser read before its
     * sleep. */
    {"</stream:stream>", 0},
};

static size_t sweep_twice(void)
{
    return xmlbuf_sweep() + xmlbuf_sweep();
}

TEST(xmlbuf_frees_an_idle_streams_parser_and_resumes_where_it_was)
{
    size_t nsteps = sizeof(talk) / sizeof(talk[0]);
    static struct trace want, got;
    want.len = got.len = 0;
    want.text[0] = got.text[0] = '\0';
    XML_Parser d = expat.create(NULL, NULL, "\x1f"); /* (not counted) */
    live = 0;
    XML_Parser p = XML_ParserCreate_MM(NULL, &counting, "\x1f");
    if (!CHECK(d != NULL && p != NULL))
        return;
    expat.set_user(d, &want);
    expat.set_element(d, on_start, on_end);
    expat.set_text(d, on_text);
    XML_SetUserData(p, &got);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    (void)sweep_twice(); /* (another test's parsers, if any, are gone) */
    int slept = 0;
    long long awake_bytes = 0, asleep_bytes = -1;
    for (size_t i = 0; i < nsteps; i++) {
        int n = (int)strlen(talk[i].bytes);
        CHECK(expat.parse(d, talk[i].bytes, n, 0) == XML_STATUS_OK);
        if (!CHECK(XML_Parse(p, talk[i].bytes, n, 0) == XML_STATUS_OK))
            printf("    step %zu: error %d\n", i, (int)XML_GetErrorCode(p));
        if (live > awake_bytes)
            awake_bytes = live;
        size_t freed = sweep_twice();
        if (!CHECK_EQ_INT(freed, talk[i].sweeps_asleep))
            printf("    step %zu\n", i);
        if (freed) {
            slept++;
            CHECK_EQ_INT(xmlbuf_asleep(), 1);
            asleep_bytes = live;
        }
    }
    CHECK_EQ_INT(xmlbuf_asleep(), 0); /* the stream ended: awake */
    printf("    %d sleeps; expat held %lld B reading, %lld B asleep "
           "(the stand-in and the kept start tag are malloc's, not expat's)\n",
           slept, awake_bytes, asleep_bytes);
    CHECK_EQ_INT(slept, 7);
    CHECK(awake_bytes > 4000);
    CHECK_EQ_INT(asleep_bytes, 0);
    /* The same events as expat's own parser that never slept. */
    CHECK(want.len > 300);
    CHECK_EQ_INT(got.len, want.len);
    CHECK(strcmp(got.text, want.text) == 0);
    expat.free(d);
    XML_ParserFree(p);
    CHECK_EQ_INT(live, 0);
}

TEST(xmlbuf_a_reset_stream_sleeps_on_its_own_start_tag)
{
    static struct trace t;
    t.len = 0;
    t.text[0] = '\0';
    XML_Parser p = XML_ParserCreate_MM(NULL, &counting, "\x1f");
    if (!CHECK(p != NULL))
        return;
    XML_SetUserData(p, &t);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    const char *first = HEAD "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
    CHECK(XML_Parse(p, first, (int)strlen(first), 0) == XML_STATUS_OK);
    CHECK_EQ_INT(sweep_twice(), 1);
    /* After SASL libstrophe starts a new stream on the same parser: the
     * handlers go, as with expat's own reset, and come back. */
    CHECK(XML_ParserReset(p, NULL) == XML_TRUE);
    CHECK_EQ_INT(xmlbuf_asleep(), 0);
    XML_SetUserData(p, &t);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    t.len = 0;
    const char *second = "<s:stream xmlns='jabber:client' "
                         "xmlns:s='http://etherx.jabber.org/streams' id='s2'>";
    CHECK(XML_Parse(p, second, (int)strlen(second), 0) == XML_STATUS_OK);
    CHECK_EQ_INT(sweep_twice(), 1);
    const char *rest = "<message id='z'/></s:stream>";
    CHECK(XML_Parse(p, rest, (int)strlen(rest), 0) == XML_STATUS_OK);
    CHECK_EQ_STR(t.text, "<http://etherx.jabber.org/streams\x1fstream id=s2"
                         "<jabber:client\x1fmessage id=z>jabber:client\x1fmessage"
                         ">http://etherx.jabber.org/streams\x1fstream");
    XML_ParserFree(p);
}

TEST(xmlbuf_reports_expats_errors)
{
    XML_Parser p = XML_ParserCreate_MM(NULL, &counting, "\x1f");
    if (!CHECK(p != NULL))
        return;
    char bad[2000];
    memset(bad, 'a', sizeof(bad));
    memcpy(bad, "<a><b></c>", 10); /* mismatched tag in the first slice */
    CHECK(XML_Parse(p, bad, (int)sizeof(bad), 0) == XML_STATUS_ERROR);
    CHECK_EQ_INT(XML_GetErrorCode(p), XML_ERROR_TAG_MISMATCH);
    CHECK_EQ_INT(sweep_twice(), 0); /* (a broken stream never sleeps) */
    XML_ParserFree(p);

    /* After a sleep too: the end tag is checked against the start tag the
     * parser read before it. */
    p = XML_ParserCreate_MM(NULL, &counting, "\x1f");
    if (!CHECK(p != NULL))
        return;
    CHECK(XML_Parse(p, HEAD, (int)strlen(HEAD), 0) == XML_STATUS_OK);
    CHECK_EQ_INT(sweep_twice(), 1);
    CHECK(XML_Parse(p, "</stream:other>", 15, 0) == XML_STATUS_ERROR);
    CHECK_EQ_INT(XML_GetErrorCode(p), XML_ERROR_TAG_MISMATCH);
    XML_ParserFree(p);
}

TEST(xmlbuf_is_the_expat_libraries_bind_to)
{
    /* What a shared library (libstrophe) gets when it looks the functions
     * up: the global definitions, which must be ours, not libexpat's. */
    static const char *const names[] = {
        "XML_Parse", "XML_ParserCreate_MM", "XML_ParserFree", "XML_ParserReset",
        "XML_SetUserData", "XML_SetElementHandler", "XML_SetCharacterDataHandler",
        "XML_GetErrorCode",
    };
    void *ours[] = {
        (void *)XML_Parse, (void *)XML_ParserCreate_MM, (void *)XML_ParserFree,
        (void *)XML_ParserReset, (void *)XML_SetUserData,
        (void *)XML_SetElementHandler, (void *)XML_SetCharacterDataHandler,
        (void *)XML_GetErrorCode,
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        void *global = dlsym(RTLD_DEFAULT, names[i]);
        void *libexpat = dlsym(RTLD_NEXT, names[i]);
        if (!CHECK(global == ours[i]) || !CHECK(libexpat && libexpat != ours[i]))
            printf("    %s\n", names[i]);
    }
}

int main(void)
{
    if (!find_expat()) {
        printf("libexpat's functions not found\n");
        return 1;
    }
    RUN(xmlbuf_keeps_expats_buffer_at_its_smallest);
    RUN(xmlbuf_frees_an_idle_streams_parser_and_resumes_where_it_was);
    RUN(xmlbuf_a_reset_stream_sleeps_on_its_own_start_tag);
    RUN(xmlbuf_reports_expats_errors);
    RUN(xmlbuf_is_the_expat_libraries_bind_to);
    return unit_done();
}
