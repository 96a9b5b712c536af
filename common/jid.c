/* jid.c - the one home for JID parsing and preparation (RFC 6122 stringprep
 * through libidn, with an ASCII fast path); see jid.h. */
#include "jid.h"

#include <stdint.h>
#include <string.h>

#include <stringprep.h>

/* Room for a part before preparation: preparation may shrink a part
 * (characters mapped to nothing), so a part may start longer than
 * JID_PART_MAX; one longer than this is refused as too long outright. */
#define PART_IN_MAX 4095

/* ASCII a prepared part may not hold: no part a control; a node none of
 * nodeprep's own list (RFC 6122 appendix A.5) nor space; a domain neither
 * (nameprep lets them through; no DNS name has them). A table, so the
 * per-byte check is one load. */
static const bool node_bad[128] = {
    [' '] = true, ['"'] = true, ['&'] = true, ['\''] = true, ['/'] = true,
    [':'] = true, ['<'] = true, ['>'] = true, ['@'] = true,
};

static bool ascii_only(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

/* The checks every prepared part passes, whichever path prepared it. */
static int check_prepared(enum jid_part part, const char *s, size_t len)
{
    bool resource = part == JID_RESOURCE;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (!resource && c < 0x80 && node_bad[c]))
            return part == JID_NODE     ? JID_E_NODE
                   : part == JID_DOMAIN ? JID_E_DOMAIN
                                        : JID_E_RESOURCE;
    }
    return JID_OK;
}

/* ASCII through the profiles: no mapping to nothing, no prohibited
 * non-ASCII, NFKC is the identity, no bidi class R/AL; only nodeprep and
 * nameprep's case folding (B.2 maps A-Z to a-z and no other ASCII) and the
 * prohibited ASCII controls are left. The unit tests check every ASCII byte
 * in every profile against libidn. */
static int prep_ascii(enum jid_part part, const char *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        out[i] = part == JID_RESOURCE ? in[i] : ascii_lower(in[i]);
    out[len] = '\0';
    return check_prepared(part, out, len);
}

static int prep_idn(enum jid_part part, const char *in, size_t len, char *out,
                    size_t outlen)
{
    static const int errs[] = {[JID_NODE] = JID_E_NODE, [JID_DOMAIN] = JID_E_DOMAIN,
                               [JID_RESOURCE] = JID_E_RESOURCE};
    char buf[PART_IN_MAX + 1];
    memcpy(buf, in, len);
    buf[len] = '\0';
    const Stringprep_profile *profile = part == JID_NODE     ? stringprep_xmpp_nodeprep
                                        : part == JID_DOMAIN ? stringprep_nameprep
                                                             : stringprep_xmpp_resourceprep;
    int rc = stringprep(buf, sizeof(buf), 0, profile);
    if (rc == STRINGPREP_ICONV_ERROR)
        return JID_E_UTF8;
    if (rc == STRINGPREP_TOO_SMALL_BUFFER)
        return JID_E_TOO_LONG;
    if (rc != STRINGPREP_OK)
        return errs[part];
    size_t n = strlen(buf);
    if (n >= outlen)
        return JID_E_TOO_LONG;
    memcpy(out, buf, n + 1);
    return check_prepared(part, out, n);
}

int jid_prep_part(enum jid_part part, const char *in, size_t len, char *out,
                  size_t outlen, bool fast)
{
    if (outlen == 0)
        return JID_E_TOO_LONG;
    out[0] = '\0';
    if (len == 0)
        return JID_E_EMPTY;
    if (len > PART_IN_MAX)
        return JID_E_TOO_LONG;
    int rc;
    if (fast && ascii_only(in, len)) {
        if (len >= outlen)
            return JID_E_TOO_LONG;
        rc = prep_ascii(part, in, len, out);
    } else {
        rc = prep_idn(part, in, len, out, outlen);
    }
    size_t n = rc == JID_OK ? strlen(out) : 0;
    /* The root label's dot: "example.org." is "example.org". One more
     * ("example.org..") is an empty label: no domain (and stripping it too
     * would make preparing twice differ from preparing once). */
    if (rc == JID_OK && part == JID_DOMAIN && n > 0 && out[n - 1] == '.') {
        out[--n] = '\0';
        if (n > 0 && out[n - 1] == '.')
            rc = JID_E_DOMAIN;
    }
    if (rc == JID_OK && n == 0)
        rc = JID_E_EMPTY; /* mapped to nothing, or "." */
    if (rc == JID_OK && n > JID_PART_MAX)
        rc = JID_E_TOO_LONG;
    if (rc != JID_OK)
        out[0] = '\0';
    return rc;
}

/* After the part just written at *p (NUL-terminated), the separator ch;
 * *p and *room move past both. False when it does not fit. */
static bool append_sep(char **p, size_t *room, char ch)
{
    size_t n = strlen(*p);
    if (n + 1 >= *room)
        return false;
    (*p)[n] = ch;
    *p += n + 1;
    *room -= n + 1;
    return true;
}

/* Prepare in into out; with_resource false drops the resource unchecked. */
static int prep(const char *in, char *out, size_t outlen, bool with_resource)
{
    if (!out || outlen == 0)
        return JID_E_TOO_LONG;
    out[0] = '\0';
    if (!in || !*in)
        return JID_E_EMPTY;
    /* RFC 6122 2.1: the resource starts at the first '/', the node ends at
     * the first '@' before it; the domain may hold no other '@'. */
    size_t bare_len = strcspn(in, "/");
    const char *at = memchr(in, '@', bare_len);
    const char *domain = at ? at + 1 : in;
    size_t domain_len = bare_len - (size_t)(domain - in);
    if (memchr(domain, '@', domain_len))
        return JID_E_DOMAIN;
    char *p = out;
    size_t room = outlen;
    int rc;
    if (at) {
        if ((rc = jid_prep_part(JID_NODE, in, (size_t)(at - in), p, room, true)) != JID_OK)
            goto fail;
        if (!append_sep(&p, &room, '@')) {
            rc = JID_E_TOO_LONG;
            goto fail;
        }
    }
    if ((rc = jid_prep_part(JID_DOMAIN, domain, domain_len, p, room, true)) != JID_OK)
        goto fail;
    if (with_resource && in[bare_len] == '/') {
        if (!append_sep(&p, &room, '/')) {
            rc = JID_E_TOO_LONG;
            goto fail;
        }
        const char *res = in + bare_len + 1;
        if ((rc = jid_prep_part(JID_RESOURCE, res, strlen(res), p, room, true)) != JID_OK)
            goto fail;
    }
    return JID_OK;
fail:
    out[0] = '\0';
    return rc;
}

int jid_prep(const char *in, char *out, size_t outlen)
{
    return prep(in, out, outlen, true);
}

int jid_prep_bare(const char *in, char *out, size_t outlen)
{
    return prep(in, out, outlen, false);
}

bool jid_is_prepared(const char *in)
{
    char buf[3 * (JID_PART_MAX + 1)];
    return jid_prep(in, buf, sizeof(buf)) == JID_OK && strcmp(buf, in) == 0;
}

const char *jid_strerror(int err)
{
    switch (err) {
    case JID_OK: return "a valid JID";
    case JID_E_EMPTY: return "a part of the JID is empty";
    case JID_E_NODE: return "the node (before '@') has a character XMPP forbids";
    case JID_E_DOMAIN: return "the domain (after '@') is not a valid domain";
    case JID_E_RESOURCE: return "the resource (after '/') has a character XMPP forbids";
    case JID_E_TOO_LONG: return "a part of the JID is longer than 1023 bytes";
    case JID_E_UTF8: return "the JID is not valid UTF-8";
    }
    return "not a valid JID";
}
