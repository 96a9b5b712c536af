/* fuzz_stanza.c - libFuzzer driver for the XMPP -> bus translation
 * (xmppd/stanza.c) over libstrophe's XML parser.
 *
 * The input is one stanza as the XMPP server could send it. It is parsed with
 * xmpp_stanza_new_from_string; a <message/> is translated with
 * stanza_message_to_env for a fixed user. Invariants:
 *   - the verdict and *out agree (an envelope only with STANZA_ENVELOPE; a
 *     reason with STANZA_INVALID);
 *   - every envelope the bridge would publish passes the receiving edge's
 *     validation: env_encode + env_decode succeed with the same type, and it
 *     is addressed to the user, and an error envelope carries "msg";
 *   - stanza_prep_addresses (which the session runs on every stanza first)
 *     leaves 'from' and 'to' in prepared form (jid.h) when it accepts them,
 *     and says why when it refuses; only accepted stanzas are translated;
 *   - stanza_parse_time runs on every attribute value of the tree (and on the
 *     raw input when it is not XML) without a fault, and a parsed <delay/>
 *     stamp becomes the chat envelope's "ts".
 * Buffers handed to the parsers are exact-size heap copies so ASan sees any
 * read past their end. */
#include "fuzz.h"
#include "envelope.h"
#include "jid.h"
#include "stanza.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strophe.h>

#define USER "alice@localhost"

static xmpp_ctx_t *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL);
    return 0;
}

static void parse_time_copy(const char *s)
{
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (!copy)
        abort();
    memcpy(copy, s, n + 1);
    (void)stanza_parse_time(copy);
    free(copy);
}

/* stanza_parse_time on every attribute value of the tree. */
static void walk_times(xmpp_stanza_t *s, int depth)
{
    if (depth > 64)
        return;
    if (xmpp_stanza_is_tag(s)) {
        int n = xmpp_stanza_get_attribute_count(s);
        if (n > 0) {
            const char **attrs = calloc((size_t)n * 2, sizeof(*attrs));
            if (!attrs)
                abort();
            int got = xmpp_stanza_get_attributes(s, attrs, n * 2);
            for (int i = 1; i < got; i += 2)
                if (attrs[i])
                    parse_time_copy(attrs[i]);
            free(attrs);
        }
    }
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(s); c;
         c = xmpp_stanza_get_next(c))
        walk_times(c, depth + 1);
}

/* The stamp of the <delay/> stanza.c reads, or -1. */
static int64_t delay_stamp(xmpp_stanza_t *msg)
{
    xmpp_stanza_t *d =
        xmpp_stanza_get_child_by_name_and_ns(msg, "delay", "urn:xmpp:delay");
    const char *stamp = d ? xmpp_stanza_get_attribute(d, "stamp") : NULL;
    return stamp ? stanza_parse_time(stamp) : -1;
}

static void check_message(xmpp_stanza_t *msg)
{
    struct env *e = (struct env *)1;
    char err[256];
    err[0] = '\0';
    if (!stanza_prep_addresses(msg, err, sizeof(err))) {
        INVARIANT(err[0] != '\0', "an address refused without a reason");
        return;
    }
    const char *from = xmpp_stanza_get_from(msg), *to = xmpp_stanza_get_to(msg);
    INVARIANT(!from || jid_is_prepared(from), "from not prepared: %s", from);
    INVARIANT(!to || jid_is_prepared(to), "to not prepared: %s", to);
    enum stanza_verdict v =
        stanza_message_to_env(ctx, msg, USER, &e, err, sizeof(err));
    switch (v) {
    case STANZA_IGNORE:
        INVARIANT(e == NULL, "IGNORE with an envelope");
        return;
    case STANZA_INVALID:
        INVARIANT(e == NULL, "INVALID with an envelope");
        INVARIANT(err[0] != '\0', "INVALID without a reason");
        return;
    case STANZA_ENVELOPE:
        break;
    default:
        INVARIANT(0, "verdict %d", (int)v);
    }
    INVARIANT(e != NULL, "ENVELOPE without an envelope");
    INVARIANT(e->type == ENV_CHAT || e->type == ENV_ERROR, "type %s",
              env_type_name(e->type));
    INVARIANT(env_str(e, "to") && strcmp(env_str(e, "to"), USER) == 0,
              "not addressed to the user");

    size_t len = 0;
    char *json = env_encode(e, &len);
    char *exact = malloc(len ? len : 1);
    if (!exact)
        abort();
    memcpy(exact, json, len);
    char derr[256] = "";
    struct env *d = env_decode(exact, len, derr, sizeof(derr));
    free(exact);
    INVARIANT(d != NULL, "the bridge would publish an envelope the edge "
                         "refuses: %s\n%s", derr, json);
    INVARIANT(d->type == e->type, "type %s re-decodes as %s",
              env_type_name(e->type), env_type_name(d->type));
    if (e->type == ENV_ERROR) {
        /* ARCHITECTURE.md: an error envelope has "msg"; the edge copies it
         * into the phone's error frame, where it is always present. */
        INVARIANT(env_str(d, "msg") != NULL, "error envelope without 'msg': %s",
                  json);
    }
    if (e->type == ENV_CHAT) {
        int64_t ts = env_int(d, "ts", -1);
        INVARIANT(ts > 0, "chat without a positive ts");
        int64_t stamp = delay_stamp(msg);
        if (stamp > 0)
            INVARIANT(ts == stamp, "ts %lld, delay stamp %lld", (long long)ts,
                      (long long)stamp);
    }
    env_free(d);
    free(json);
    env_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';

    xmpp_stanza_t *s = xmpp_stanza_new_from_string(ctx, text);
    if (!s) {
        if (size && data[0] != '<')
            parse_time_copy(text);
        free(text);
        return 0;
    }
    walk_times(s, 0);
    const char *name = xmpp_stanza_get_name(s);
    if (name && strcmp(name, "message") == 0)
        check_message(s);
    xmpp_stanza_release(s);
    free(text);
    return 0;
}
