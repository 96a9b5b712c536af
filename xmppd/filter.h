/* filter.h - the central message filter: one rules file, applied by the
 * worker to every chat in both directions (docs/PROTOCOL.md, "Message
 * filtering"; the file format is in deploy/filter.rules). Pure: parses text
 * and judges messages, no I/O but reading the file. */
#ifndef IMB_FILTER_H
#define IMB_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum filter_reason {
    FR_PASS,        /**< unchanged */
    FR_MASKED,      /**< passes with masked words (*masked holds the text) */
    FR_TOO_LONG,    /**< longer than max_length characters */
    FR_BANNED,      /**< holds a word of a "reject" rule */
    FR_BLOCKED,     /**< to (or from) a JID of a "block" rule */
    FR_RATE,        /**< the user sent more than the rate allows */
    FILTER_REASONS,
};

enum filter_dir { FILTER_OUT, FILTER_IN }; /* phone -> XMPP, XMPP -> phone */

struct filter;

/* Parse the rules file at path. NULL with a reason (file:line: ...) in err
 * if it cannot be read or a line is wrong: the caller keeps its old rules. */
struct filter *filter_load(const char *path, char *err, size_t errlen);
/* The same from text in memory (tests). */
struct filter *filter_parse(const char *text, const char *name, char *err,
                            size_t errlen);
void filter_free(struct filter *f);

/* Judge a message: peer is the other party's JID (recipient going out,
 * sender coming in; its bare part is matched). FR_MASKED sets *masked to a
 * malloc'd copy of body with each masked word's characters replaced by '*'. */
enum filter_reason filter_check(const struct filter *f, const char *peer,
                                const char *body, char **masked);

/* The per-user rate ("rate N/S": N messages per S seconds, as a bucket that
 * refills continuously). *tokens and *last_ms are the user's state, zero at
 * first; true if one more message is allowed now. */
bool filter_rate_ok(const struct filter *f, double *tokens, int64_t *last_ms,
                    int64_t now_ms);

/* "too_long", "banned_word", ... as sent to phones and in metrics. */
const char *filter_reason_name(enum filter_reason r);
/* Number of rules loaded (for the log line at load). */
size_t filter_rule_count(const struct filter *f);

#endif
