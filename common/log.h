/* log.h - one greppable key=value line per event, level checked before formatting. */
#ifndef IMB_LOG_H
#define IMB_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

/* Set the process name printed on every line ("edge", "xmppd/w1", ...). */
void log_set_name(const char *name);
/* Parse "debug|info|warn|error"; returns -1 on an unknown name. */
int log_parse_level(const char *s);
const char *log_level_name(enum log_level l);

/* Write "ts level name event k=v..." to stderr. fmt holds the key=value part. */
void log_write(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* LOG(INFO, "login_ok", "jid=%s", jid): the arguments are not evaluated below
 * the current level. */
#define LOG(level, event, ...)                                                 \
    do {                                                                       \
        if (LOG_##level >= log_min_level)                                      \
            log_write(LOG_##level, event, __VA_ARGS__);                        \
    } while (0)

#endif
