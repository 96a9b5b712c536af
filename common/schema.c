/* schema.c - field rules for untrusted JSON. */
#include "schema.h"
#include "jid.h"

#include <stdio.h>
#include <string.h>

bool schema_id_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return false;
    }
    return n >= 1 && n <= max;
}

bool schema_text_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return false; /* includes NUL: XML 1.0 cannot carry it */
        if (c == 0x7f)
            return false;
        /* U+FFFE and U+FFFF are not XML characters either. */
        if (c == 0xEF && i + 2 < len && p[i + 1] == 0xBF &&
            (p[i + 2] == 0xBE || p[i + 2] == 0xBF))
            return false;
    }
    return true;
}

/* Why s (len bytes) is not a JID of at most max bytes once prepared, or
 * JID_OK; -1 for an embedded NUL. The syntax and the profiles are jid.c's. */
static int jid_problem(const char *s, size_t len, size_t max)
{
    if (len != strlen(s))
        return -1;
    if (len > max)
        return JID_E_TOO_LONG;
    char buf[3 * (JID_PART_MAX + 1)];
    int rc = jid_prep(s, buf, sizeof(buf));
    if (rc == JID_OK && strlen(buf) > max)
        rc = JID_E_TOO_LONG;
    return rc;
}

static int nick_problem(const char *s, size_t len, size_t max)
{
    if (len != strlen(s))
        return -1;
    if (len > max)
        return JID_E_TOO_LONG;
    char buf[JID_PART_MAX + 1];
    int rc = jid_prep_part(JID_RESOURCE, s, len, buf, sizeof(buf), true);
    if (rc == JID_OK && strlen(buf) > max)
        rc = JID_E_TOO_LONG;
    return rc;
}

bool schema_jid_ok(const char *s, size_t max)
{
    return jid_problem(s, strlen(s), max) == JID_OK;
}

bool schema_bare_jid(const char *jid, char *out, size_t n)
{
    size_t len = strcspn(jid, "/");
    if (len + 1 > n)
        return false;
    memcpy(out, jid, len);
    out[len] = '\0';
    return true;
}

static bool str_ok(const struct field *f, const char *s, size_t len)
{
    switch (f->kind) {
    case F_ID:
        return len == strlen(s) && schema_id_ok(s, f->max);
    case F_JID:
        return jid_problem(s, len, f->max) == JID_OK;
    case F_NICK:
        return nick_problem(s, len, f->max) == JID_OK;
    case F_TEXT:
        return len <= f->max && schema_text_ok(s, len);
    case F_STR:
        if (len > f->max || len != strlen(s))
            return false;
        for (size_t i = 0; i < len; i++)
            if (s[i] <= 0x20 || s[i] >= 0x7f)
                return false;
        return true;
    default:
        return false;
    }
}

bool schema_choice_ok(const char *choices, const char *s, size_t len)
{
    for (const char *p = choices; *p;) {
        size_t n = strcspn(p, "|");
        if (n == len && memcmp(p, s, len) == 0)
            return true;
        p += n + (p[n] == '|');
    }
    return false;
}

static const char *kind_name(enum field_kind k)
{
    switch (k) {
    case F_ID: return "an id ([A-Za-z0-9._:-])";
    case F_JID: return "a valid JID";
    case F_NICK: return "a valid nickname (an XMPP resource)";
    case F_TEXT: return "text without control characters";
    case F_STR: return "a printable token";
    case F_INT: return "a non-negative integer";
    case F_BOOL: return "a boolean";
    case F_IDS: return "an array of ids";
    case F_ENUM: return "one of";
    case F_OBJ: return "a JSON object";
    case F_LIST: return "an array of objects";
    }
    return "?";
}

bool schema_check(const json_t *obj, const struct field *fields, size_t n,
                  char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "not a JSON object");
        return false;
    }
    /* The object's value of each field, from one pass over its keys: an
     * envelope has fewer keys than its schema has fields (a chat has 9 of
     * 16), and a first byte rules most names out before any comparison,
     * where a lookup per field hashes every name. */
    json_t *vals[SCHEMA_FIELDS_MAX] = {0};
    bool by_keys = n <= SCHEMA_FIELDS_MAX;
    if (by_keys) {
        const char *key;
        json_t *kv;
        json_object_foreach((json_t *)obj, key, kv) {
            for (size_t i = 0; i < n; i++)
                if (fields[i].name[0] == key[0] && strcmp(fields[i].name, key) == 0) {
                    vals[i] = kv;
                    break;
                }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct field *f = &fields[i];
        json_t *v = by_keys ? vals[i] : json_object_get(obj, f->name);
        if (!v || json_is_null(v)) {
            if (f->required) {
                snprintf(err, errlen, "field '%s' is required", f->name);
                return false;
            }
            continue;
        }
        bool ok = false;
        switch (f->kind) {
        case F_INT:
            ok = json_is_integer(v) && json_integer_value(v) >= 0 &&
                 (f->max == 0 || json_integer_value(v) <= (json_int_t)f->max);
            break;
        case F_BOOL:
            ok = json_is_boolean(v);
            break;
        case F_IDS: {
            size_t cnt = json_is_array(v) ? json_array_size(v) : 0;
            ok = cnt > 0 && cnt <= f->max;
            for (size_t j = 0; ok && j < cnt; j++) {
                json_t *e = json_array_get(v, j);
                ok = json_is_string(e) && schema_id_ok(json_string_value(e), 64);
            }
            break;
        }
        case F_ENUM:
            ok = json_is_string(v) && f->choices &&
                 schema_choice_ok(f->choices, json_string_value(v), json_string_length(v));
            if (!ok) {
                snprintf(err, errlen, "field '%s' must be one of %s", f->name,
                         f->choices ? f->choices : "?");
                return false;
            }
            break;
        case F_OBJ:
            ok = json_is_object(v);
            break;
        case F_LIST: {
            size_t cnt = json_is_array(v) ? json_array_size(v) : 0;
            ok = json_is_array(v) && (f->max == 0 || cnt <= f->max);
            for (size_t j = 0; ok && j < cnt; j++)
                ok = json_is_object(json_array_get(v, j));
            break;
        }
        default:
            ok = json_is_string(v) &&
                 str_ok(f, json_string_value(v), json_string_length(v));
            if (ok && f->kind != F_TEXT && json_string_length(v) == 0)
                ok = false;
            if (ok && f->kind == F_TEXT && f->required &&
                json_string_length(v) == 0)
                ok = false;
            if (!ok && json_is_string(v) && json_string_length(v) > f->max) {
                snprintf(err, errlen, "field '%s' is longer than %u bytes",
                         f->name, f->max);
                return false;
            }
            break;
        }
        if (!ok && json_is_string(v) && (f->kind == F_JID || f->kind == F_NICK)) {
            const char *s = json_string_value(v);
            size_t len = json_string_length(v);
            int why = f->kind == F_JID ? jid_problem(s, len, f->max)
                                       : nick_problem(s, len, f->max);
            if (why > 0) {
                snprintf(err, errlen, "field '%s' must be %s: %s", f->name,
                         kind_name(f->kind), jid_strerror(why));
                return false;
            }
        }
        if (!ok) {
            snprintf(err, errlen, "field '%s' must be %s", f->name,
                     kind_name(f->kind));
            return false;
        }
    }
    return true;
}

bool schema_prep(json_t *obj, const struct field *fields, size_t n, char *err,
                 size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct field *f = &fields[i];
        if (f->kind != F_JID && f->kind != F_NICK)
            continue;
        json_t *v = json_object_get(obj, f->name);
        const char *s = json_string_value(v);
        if (!s)
            continue;
        char buf[3 * (JID_PART_MAX + 1)];
        int rc = f->kind == F_JID
                     ? jid_prep(s, buf, sizeof(buf))
                     : jid_prep_part(JID_RESOURCE, s, strlen(s), buf, sizeof(buf), true);
        if (rc == JID_OK && strlen(buf) > f->max)
            rc = JID_E_TOO_LONG;
        if (rc != JID_OK) {
            snprintf(err, errlen, "field '%s' must be %s: %s", f->name,
                     kind_name(f->kind), jid_strerror(rc));
            return false;
        }
        if (strcmp(buf, s) != 0)
            json_string_set(v, buf);
    }
    return true;
}
