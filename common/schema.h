/* schema.h - declarative validation of JSON objects from untrusted peers
 * (phone frames, bus envelopes): one table of fields per message type. */
#ifndef IMB_SCHEMA_H
#define IMB_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

enum field_kind {
    F_ID,    /**< 1..max chars of [A-Za-z0-9._:-] */
    F_JID,   /**< an XMPP address, bare or full, <= max bytes once prepared
                  (jid.h): checked by schema_check, normalised by schema_prep */
    F_NICK,  /**< a room nickname: an XMPP resource (resourceprep), <= max */
    F_TEXT,  /**< UTF-8 that XML can carry: no control chars but \t \n \r */
    F_STR,   /**< printable ASCII, no spaces (tokens, base64) */
    F_INT,   /**< a JSON integer, 0..max (max 0: any non-negative) */
    F_BOOL,  /**< true or false */
    F_IDS,   /**< a non-empty array of at most max F_ID strings (64 chars each) */
    F_ENUM,  /**< one of the words in choices ("a|b|c") */
    F_OBJ,   /**< a JSON object (its own schema is checked by whoever reads it) */
    F_LIST,  /**< an array of at most max JSON objects (may be empty) */
};

struct field {
    const char *name;
    enum field_kind kind;
    unsigned max;  /**< bytes for strings, count for F_IDS, value for F_INT */
    bool required;
    const char *choices; /**< F_ENUM only: the allowed words, '|'-separated */
};

/* Schemas up to this many fields are checked in one pass over the object's
 * keys; longer ones by a lookup per field. */
#define SCHEMA_FIELDS_MAX 32

/* Check obj against fields[0..n). Unknown members are ignored (newer peers may
 * add them). On failure writes "field 'to': not a valid JID" style text to err
 * and returns false. */
bool schema_check(const json_t *obj, const struct field *fields, size_t n,
                  char *err, size_t errlen);

/* Replace every F_JID and F_NICK string of obj by its prepared form (jid.h):
 * "ＢＯＢ@ｌｏｃａｌｈｏｓｔ" becomes "bob@localhost". What cannot be prepared:
 * false, with "field 'to' must be a valid JID: <which part>" in err. Run it
 * after schema_check, on every object whose JIDs the bridge acts on. */
bool schema_prep(json_t *obj, const struct field *fields, size_t n, char *err,
                 size_t errlen);

/* The same rules on their own, for values that do not come in JSON. */
bool schema_id_ok(const char *s, size_t max);
/* s is a JID that can be prepared (jid.h) into at most max bytes. */
bool schema_jid_ok(const char *s, size_t max);
bool schema_text_ok(const char *s, size_t len);
/* Is s (len bytes) one of the '|'-separated words of choices? */
bool schema_choice_ok(const char *choices, const char *s, size_t len);

/* The bare part of a JID ("a@b/c" -> "a@b") into out; false if it won't fit. */
bool schema_bare_jid(const char *jid, char *out, size_t n);

#endif
