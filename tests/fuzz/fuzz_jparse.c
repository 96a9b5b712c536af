/* fuzz_jparse.c - libFuzzer driver for common/jparse.c, against jansson's
 * own parser. The input is one text as a phone or Redis sends it.
 * Invariants:
 *   - jparse accepts exactly what json_loadb(JSON_REJECT_DUPLICATES)
 *     accepts, and to an equal value, when the text holds no NUL byte;
 *     with one, jparse refuses (jansson skips NULs between tokens);
 *   - what jparse accepts is an object or an array, nested at most
 *     JPARSE_MAX_DEPTH deep (jansson's limit is higher: a text nested
 *     deeper is refused by jparse alone), and survives json_dumpb and
 *     jparse again unchanged;
 *   - a refusal comes with a reason in printable ASCII.
 * The buffer handed to jparse is an exact-size heap copy so ASan sees any
 * read past its end. */
#include "fuzz.h"
#include "jparse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Containers nested in v. */
static int depth(const json_t *v)
{
    int deepest = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = depth(json_array_get(v, i));
            deepest = d > deepest ? d : deepest;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            int d = depth(e);
            deepest = d > deepest ? d : deepest;
        }
    } else {
        return 0;
    }
    return deepest + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    char err[256] = "";
    json_t *got = jparse(text, size, err, sizeof(err));
    json_error_t jerr;
    json_t *want = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    bool nul = memchr(text, '\0', size) != NULL;
    if (nul)
        INVARIANT(!got, "accepted a text with a NUL byte");
    else if (want && depth(want) > JPARSE_MAX_DEPTH)
        INVARIANT(!got, "accepted nesting of %d", depth(want));
    else
        INVARIANT(!got == !want && (!got || json_equal(got, want)),
                  "jparse %s, jansson %s (%s)", got ? "accepts" : "refuses",
                  want ? "accepts" : "refuses", got ? jerr.text : err);
    if (got) {
        INVARIANT(json_is_object(got) || json_is_array(got), "a scalar at the top");
        size_t n = json_dumpb(got, NULL, 0, JSON_COMPACT);
        char *again = malloc(n ? n : 1);
        if (!again)
            abort();
        json_dumpb(got, again, n, JSON_COMPACT);
        json_t *back = jparse(again, n, err, sizeof(err));
        INVARIANT(back && json_equal(back, got), "its own text back: %s", err);
        json_decref(back);
        free(again);
    } else {
        INVARIANT(err[0] != '\0', "refused without a reason");
        for (const char *p = err; *p; p++)
            INVARIANT(*p >= 0x20 && *p < 0x7f, "reason not printable ASCII: %s", err);
    }
    json_decref(got);
    json_decref(want);
    free(text);
    return 0;
}
