/* log.h - one greppable key=value line per event, level checked before
 * formatting; or, with log_format = json, one JSON object per line. */
#ifndef IMB_LOG_H
#define IMB_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

extern enum log_level log_min_level;
extern enum log_format log_format;

/* Set the process name printed on every line ("edge", "xmppd/w1", ...). */
void log_set_name(const char *name);
/* Parse "debug|info|warn|error"; returns -1 on an unknown name. */
int log_parse_level(const char *s);
const char *log_level_name(enum log_level l);
/* Parse "text|json"; returns -1 on an unknown name. */
int log_parse_format(const char *s);

/* Write "ts level name event k=v..." to stderr. fmt holds the key=value part.
 * In json mode the line is {"ts":..,"level":..,"proc":..,"event":..,k:v...}. */
void log_write(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The JSON line (no newline, malloc'd; NULL on allocation failure) of one
 * event whose key=value part is kv, as log_write prints it in json mode.
 * kv is split at " key=" boundaries (key: [A-Za-z0-9_.-]+), so an unquoted
 * value may hold spaces and '='; a value opening with '"' ends at a '"'
 * followed by the end or by " key=" (\" and \\ inside are unescaped; other
 * quotes are kept as they are). Text before the first key goes to "msg"; a
 * key that would overwrite ts, level, proc or event gets a leading '_'.
 * Bytes that are not UTF-8 become U+FFFD. Every value is a JSON string. */
char *log_json_line(const char *ts, const char *level, const char *proc,
                    const char *event, const char *kv);

/* LOG(INFO, "login_ok", "jid=%s", jid): the arguments are not evaluated below
 * the current level. */
#define LOG(level, event, ...)                                                 \
    do {                                                                       \
        if (LOG_##level >= log_min_level)                                      \
            log_write(LOG_##level, event, __VA_ARGS__);                        \
    } while (0)

#endif
