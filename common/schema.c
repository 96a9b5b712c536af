/* schema.c - field rules for untrusted JSON. */
#include "schema.h"

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

/* localpart forbids "&'/:<>@ and space (RFC 7622); domain must be non-empty,
 * no '@'. The resource may hold any text but control characters. */
bool schema_jid_ok(const char *s, size_t max)
{
    size_t len = strlen(s);
    if (len == 0 || len > max)
        return false;
    const char *slash = strchr(s, '/');
    size_t bare_len = slash ? (size_t)(slash - s) : len;
    const char *at = memchr(s, '@', bare_len);
    const char *domain = at ? at + 1 : s;
    size_t domain_len = bare_len - (size_t)(domain - s);
    if (domain_len == 0 || domain_len > 1023)
        return false;
    if (at) {
        size_t local_len = (size_t)(at - s);
        if (local_len == 0 || local_len > 1023)
            return false;
        for (size_t i = 0; i < local_len; i++)
            if (strchr("\"&'/:<>@ ", s[i]) || (unsigned char)s[i] < 0x21 ||
                s[i] == 0x7f)
                return false;
    }
    for (size_t i = 0; i < domain_len; i++) {
        unsigned char c = (unsigned char)domain[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"&'/:<>@", c))
            return false;
    }
    if (slash) {
        size_t res_len = len - bare_len - 1;
        if (res_len == 0 || res_len > 1023 || !schema_text_ok(slash + 1, res_len))
            return false;
        for (size_t i = 0; i < res_len; i++)
            if ((unsigned char)slash[1 + i] < 0x20)
                return false;
    }
    return true;
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
        return len == strlen(s) && schema_jid_ok(s, f->max);
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
    for (size_t i = 0; i < n; i++) {
        const struct field *f = &fields[i];
        json_t *v = json_object_get(obj, f->name);
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
        if (!ok) {
            snprintf(err, errlen, "field '%s' must be %s", f->name,
                     kind_name(f->kind));
            return false;
        }
    }
    return true;
}
