/* xmlbuf.c - an XMPP session's parser buffer stays small.
 *
 * libstrophe parses each session's stream with expat, one parser per
 * connection for the session's whole life, and hands it every read whole
 * (up to 4 KiB at a time). Built with XML_CONTEXT_BYTES, as Debian's is,
 * expat copies each chunk into its own input buffer behind up to 1 KiB of
 * context, and that buffer only grows: a power of two holding the largest
 * chunk plus the context, kept until the connection closes. One roster or
 * one burst of stanzas read at once leaves an idle session holding 8 KiB
 * of buffer where 2 KiB would do.
 *
 * So xmppd defines XML_Parse itself, as tlsbuf.c does for SSL_new:
 * libstrophe's call binds to this one, which feeds expat's own XML_Parse
 * slices of at most XMLBUF_SLICE bytes. expat is a streaming parser: the
 * same bytes in smaller calls give the same callbacks in the same order,
 * and a slice plus the context plus an unfinished token fits the smallest
 * buffer expat makes (2 KiB). A start tag longer than that still grows it,
 * as before. (libstrophe never suspends its parser; a status other than OK
 * ends the call, as it would have ended expat's.) */
#include <dlfcn.h>
#include <stddef.h>

#include <expat.h>

/* Bytes per call into expat: 512 + 1 KiB of context + an unfinished token
 * of up to 512 bytes fit expat's first buffer size (2 KiB). */
#define XMLBUF_SLICE 512

typedef enum XML_Status xml_parse_fn(XML_Parser, const char *, int, int);

enum XML_Status XML_Parse(XML_Parser parser, const char *s, int len,
                          int is_final)
{
    static xml_parse_fn *expat_parse;
    if (!expat_parse) {
        /* (POSIX's way to turn dlsym's void * into a function pointer.) */
        *(void **)&expat_parse = dlsym(RTLD_NEXT, "XML_Parse");
        if (!expat_parse)
            return XML_STATUS_ERROR;
    }
    while (len > XMLBUF_SLICE) {
        enum XML_Status st = expat_parse(parser, s, XMLBUF_SLICE, 0);
        if (st != XML_STATUS_OK)
            return st;
        s += XMLBUF_SLICE;
        len -= XMLBUF_SLICE;
    }
    return expat_parse(parser, s, len, is_final);
}
