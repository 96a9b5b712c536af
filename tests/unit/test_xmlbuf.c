/* test_xmlbuf.c - xmppd/xmlbuf: the XML_Parse every library of the process
 * binds to (libstrophe's included) keeps expat's input buffer at its
 * smallest size and reports the same events as expat's own. */
#include "unit.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

/* expat's memory, counted: the largest single block it asked for. */
static size_t largest;

static void *count_malloc(size_t n)
{
    if (n > largest)
        largest = n;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n)
{
    if (n > largest)
        largest = n;
    return realloc(p, n);
}

static const XML_Memory_Handling_Suite counting = {
    count_malloc, count_realloc, free,
};

/* Everything a parser reported, as text: "<name", ">name", and
 * character data in brackets, merged across calls. */
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

/* An XMPP stream as a server writes it: the stream header, then a roster
 * of 150 contacts (names with multi-byte characters) and a few messages,
 * about 17 KB. */
static size_t make_stream(char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap,
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' id='s1' "
        "from='localhost' version='1.0'>"
        "<iq type='result' id='r1'><query xmlns='jabber:iq:roster'>");
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

typedef enum XML_Status xml_parse_fn(XML_Parser, const char *, int, int);

/* Parses the stream read as libstrophe reads it (chunks of up to 4 KiB),
 * through parse; returns expat's largest block, fills *t. */
static size_t parse_stream(xml_parse_fn *parse, struct trace *t, bool *ok)
{
    static char stream[32 * 1024];
    size_t len = make_stream(stream, sizeof(stream));
    largest = 0;
    t->len = 0;
    t->text[0] = '\0';
    XML_Parser p = XML_ParserCreate_MM(NULL, &counting, "\x1f");
    *ok = p != NULL;
    if (!p)
        return 0;
    XML_SetUserData(p, t);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    for (size_t off = 0; off < len && *ok; off += 4096) {
        size_t n = len - off < 4096 ? len - off : 4096;
        *ok = parse(p, stream + off, (int)n, 0) == XML_STATUS_OK;
    }
    XML_ParserFree(p);
    return largest;
}

TEST(xmlbuf_keeps_expats_buffer_at_its_smallest)
{
    xml_parse_fn *expat_parse;
    *(void **)&expat_parse = dlsym(RTLD_NEXT, "XML_Parse");
    if (!CHECK(expat_parse != NULL))
        return;
    static struct trace direct, sliced;
    bool ok_direct, ok_sliced;
    size_t big = parse_stream(expat_parse, &direct, &ok_direct);
    size_t small = parse_stream(XML_Parse, &sliced, &ok_sliced);
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
    XML_ParserFree(p);
}

TEST(xmlbuf_is_the_xml_parse_libraries_bind_to)
{
    /* What a shared library (libstrophe) gets when it looks XML_Parse up:
     * the global definition, which must be ours, not libexpat's. */
    void *global = dlsym(RTLD_DEFAULT, "XML_Parse");
    void *libexpat = dlsym(RTLD_NEXT, "XML_Parse");
    xml_parse_fn *ours = XML_Parse;
    void *ours_p;
    memcpy(&ours_p, &ours, sizeof(ours_p));
    CHECK(global != NULL);
    CHECK(global == ours_p);
    CHECK(libexpat != NULL && libexpat != ours_p);
}

int main(void)
{
    RUN(xmlbuf_keeps_expats_buffer_at_its_smallest);
    RUN(xmlbuf_reports_expats_errors);
    RUN(xmlbuf_is_the_xml_parse_libraries_bind_to);
    return unit_done();
}
