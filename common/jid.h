/* jid.h - the one home for parsing and preparing XMPP addresses (JIDs).
 * Every JID that enters the bridge (a phone's login and every JID a phone
 * names, every JID read from the XMPP server, the filter's rules) goes
 * through jid_prep or jid_prep_bare before it is compared, used as a key or
 * forwarded, so two spellings the XMPP server treats as one address are one
 * address here too: "ＢＯＢ@ｌｏｃａｌｈｏｓｔ" is "bob@localhost".
 *
 * Preparation is RFC 6122's, as Prosody and Openfire do it: the node with
 * nodeprep, the domain with nameprep (a trailing dot dropped), the resource
 * with resourceprep (case kept), each part at most 1023 bytes after
 * preparation; unassigned code points allowed (a query, not a stored
 * string). libidn's stringprep profiles do the work; pure ASCII takes a fast
 * path that gives the same result. Pure: no I/O, no state. */
#ifndef IMB_JID_H
#define IMB_JID_H

#include <stdbool.h>
#include <stddef.h>

/* Longest part (node, domain, resource) in bytes after preparation. */
#define JID_PART_MAX 1023

/* What jid_prep found wrong: which part, or why. */
enum jid_err {
    JID_OK = 0,
    JID_E_EMPTY,    /**< no JID, or an empty part: "", "@x", "x@", "x/" */
    JID_E_NODE,     /**< the node (before '@') has a character XMPP forbids */
    JID_E_DOMAIN,   /**< the domain fails nameprep, or holds " /:<>@..." */
    JID_E_RESOURCE, /**< the resource (after '/') fails resourceprep */
    JID_E_TOO_LONG, /**< a part over 1023 bytes, or the whole over outlen */
    JID_E_UTF8,     /**< not valid UTF-8 */
};

/* The parts of a JID, for jid_prep_part. */
enum jid_part { JID_NODE, JID_DOMAIN, JID_RESOURCE };

/* Prepare in (bare or full) into out (outlen bytes, NUL included): the
 * canonical form the XMPP server would use. Returns JID_OK, or an enum
 * jid_err with out set to "". in and out may not overlap. */
int jid_prep(const char *in, char *out, size_t outlen);

/* The same, keeping only the bare part ("node@domain" or "domain"); any
 * resource of in is dropped unchecked. */
int jid_prep_bare(const char *in, char *out, size_t outlen);

/* One part of len bytes (no NUL needed) prepared with its profile into
 * out. fast: take the ASCII fast path when the part is ASCII (false only
 * for tests, to compare it with libidn). */
int jid_prep_part(enum jid_part part, const char *in, size_t len, char *out,
                  size_t outlen, bool fast);

/* Is in already in prepared form (jid_prep gives it back unchanged)? */
bool jid_is_prepared(const char *in);

/* A short English reason for err, for error frames and logs: "the node
 * (before '@') has a character XMPP forbids". */
const char *jid_strerror(int err);

#endif
