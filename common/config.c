/* config.c - typed option table: file, environment, flags; the validation
 * start-up and --check-config share; the version. */
#include "config.h"
#include "bus.h"
#include "envelope.h"
#include "httpd.h"
#include "log.h"
#include "seal.h"
#include "tlsctx.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

/* Set by the Makefile from the VERSION file and `git describe`. */
#ifndef IMB_VERSION
#define IMB_VERSION "0.0.0"
#endif
#ifndef IMB_GIT
#define IMB_GIT ""
#endif

extern char **environ;

const char *const config_known_names[] = {
    /* both */
    "redis_host", "redis_port", "redis_cluster", "redis_user", "redis_password", "bus_prefix",
    "cred_key", "log_level", "log_format", "http_listen", "max_envelope",
    /* imb-edge */
    "listen", "heartbeat", "login_timeout", "max_frame", "max_output",
    "max_conns", "bridge_timeout", "edge_id", "tls", "tls_cert", "tls_key",
    "max_unauth_per_ip", "max_msg_rate", "login_fail_window",
    "login_fail_per_ip", "login_fail_per_account", "device_token_days",
    /* imb-xmppd */
    "xmpp_host", "xmpp_port", "xmpp_tls", "xmpp_cafile", "xmpp_resource",
    "workers", "max_sessions", "connect_timeout", "resume_window", "lease_ms",
    "inbox_ttl", "inbox_max", "xmpp_csi", "push_preview", "filter_rules",
    "push_jid", "push_secret", "push_port", "muc_join_timeout", "bridge_id",
    "ping_delay_ms",
    NULL,
};

/* IMB_* variables of the tooling around the services (tests, scripts, the
 * healthcheck, docker-compose's own settings): not options, not typos. */
static const char *const tool_vars[] = {
    "IMB_CONFIG", "IMB_EDGE_TLS", "IMB_TEST_", "IMB_RUN_", "IMB_DEPS_",
    "IMB_HEALTHCHECK_", "IMB_CHAOS_", "IMB_FAULT_", "IMB_UNIT_", "IMB_BENCH_",
    "IMB_TAP_", /* imtap's own (IMB_TAP_NO_BODIES) */
    NULL,
};

const char *config_version(void)
{
    return *IMB_GIT ? IMB_VERSION " (git " IMB_GIT ")" : IMB_VERSION;
}

const char *config_release(void)
{
    return IMB_VERSION;
}

/* "redis-port" and "redis_port" name the same option. */
static bool name_eq(const char *opt, const char *s, size_t len)
{
    if (strlen(opt) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i] == '-' ? '_' : s[i];
        if (c != opt[i])
            return false;
    }
    return true;
}

static const struct opt *find(const struct opt *t, size_t n, const char *s,
                              size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (name_eq(t[i].name, s, len))
            return &t[i];
    return NULL;
}

static bool set(const struct opt *o, void *cfg, const char *val,
                const char *from, char *err, size_t errlen)
{
    char *p = (char *)cfg + o->offset;
    switch (o->type) {
    case OPT_STR: {
        char **s = (char **)(void *)p;
        free(*s);
        *s = xstrdup(val);
        return true;
    }
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: %s must be an integer in %ld..%ld, not '%s'",
                     from, o->name, o->min, o->max, val);
            return false;
        }
        *(long *)(void *)p = v;
        return true;
    }
    case OPT_BOOL: {
        bool *b = (bool *)(void *)p;
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes") ||
            !strcmp(val, "on"))
            *b = true;
        else if (!strcmp(val, "0") || !strcmp(val, "false") ||
                 !strcmp(val, "no") || !strcmp(val, "off"))
            *b = false;
        else {
            snprintf(err, errlen, "%s: %s must be true or false, not '%s'",
                     from, o->name, val);
            return false;
        }
        return true;
    }
    }
    return false;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static bool load_file(const struct opt *t, size_t n, void *cfg,
                      const char *path, bool reload, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return false;
    }
    char line[4096];
    int lineno = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '#' || *s == '\0')
            continue;
        char *eq = strchr(s, '=');
        char where[64];
        snprintf(where, sizeof(where), "line %d", lineno);
        if (!eq) {
            snprintf(err, errlen, "config file %s %s: expected name = value",
                     path, where);
            ok = false;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vlen = strlen(val);
        if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
            val[vlen - 1] = '\0';
            val++;
        }
        const struct opt *o = find(t, n, key, strlen(key));
        if (!o) {
            snprintf(err, errlen, "config file %s %s: unknown option '%s'", path,
                     where, key);
            ok = false;
        } else if (!reload || (o->flags & OPT_RELOAD)) {
            ok = set(o, cfg, val, where, err, errlen);
        }
    }
    fclose(f);
    return ok;
}

/* Edit distance of a and b (short strings), for "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* True when var (len bytes, no '=') is IMB_<OPT> for option opt, as
 * config_load reads it: upper case. */
static bool env_names(const char *var, size_t len, const char *opt)
{
    size_t ol = strlen(opt);
    if (len != 4 + ol)
        return false;
    for (size_t i = 0; i < ol; i++)
        if (var[4 + i] != toupper((unsigned char)opt[i]))
            return false;
    return true;
}

/* The first IMB_* variable of the environment that is neither an option of
 * any service nor the tooling's: its name into var (size vn) and, when an
 * option of this service is a likely spelling of it, that into hint (IMB_ form,
 * else ""). False when there is none. */
static bool unknown_env(const struct opt *t, size_t n, char *var, size_t vn,
                        char *hint, size_t hn)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "IMB_", 4) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        bool known = false;
        for (const char *const *p = tool_vars; *p && !known; p++) {
            size_t pl = strlen(*p);
            known = (*p)[pl - 1] == '_' ? len > pl && !strncmp(*e, *p, pl)
                                        : len == pl && !strncmp(*e, *p, pl);
        }
        for (size_t i = 0; i < n && !known; i++)
            known = env_names(*e, len, t[i].name);
        for (const char *const *p = config_known_names; *p && !known; p++)
            known = env_names(*e, len, *p);
        if (known)
            continue;
        snprintf(var, vn, "%.*s", (int)len, *e);
        hint[0] = '\0';
        char lower[64];
        if (len - 4 >= sizeof(lower))
            return true;
        for (size_t i = 4; i < len; i++)
            lower[i - 4] = (char)tolower((unsigned char)(*e)[i]);
        lower[len - 4] = '\0';
        size_t best = 3; /* at most 2 edits away */
        for (size_t i = 0; i < n; i++) {
            size_t d = distance(lower, t[i].name);
            if (d < best) {
                best = d;
                snprintf(hint, hn, "IMB_%s", t[i].name);
                for (char *c = hint + 4; *c; c++)
                    *c = (char)toupper((unsigned char)*c);
            }
        }
        return true;
    }
    return false;
}

static void usage(const struct opt *t, size_t n, const char *prog)
{
    printf("usage: %s [--config FILE] [--check-config] [--version] [--OPTION VALUE]...\n\n"
           "Every option can also be set in the config file as 'name = value'\n"
           "or in the environment as IMB_NAME (flags win over the environment,\n"
           "which wins over the file).\n\n",
           prog);
    for (size_t i = 0; i < n; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", t[i].name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_')
                *p = '-';
        printf("  %-22s %s (default: %s)%s\n", flag, t[i].help,
               t[i].flags & OPT_SECRET ? "<secret>" : (*t[i].def ? t[i].def : "\"\""),
               t[i].flags & OPT_RELOAD ? " [SIGHUP]" : "");
    }
}

enum config_status config_load(const struct opt *t, size_t n, void *cfg,
                               int argc, char **argv, bool reload,
                               char *err, size_t errlen)
{
    if (!reload)
        for (size_t i = 0; i < n; i++)
            if (!set(&t[i], cfg, t[i].def, "default", err, errlen))
                return CONFIG_ERROR;

    /* Pass 1: --help, --check-config and the config file. */
    const char *file = getenv("IMB_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(t, n, argv[0]);
            return CONFIG_EXIT;
        } else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option '--config' needs a file name");
                return CONFIG_ERROR;
            }
            file = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            file = argv[i] + 9;
        }
    }
    if (file && *file && !load_file(t, n, cfg, file, reload, err, errlen))
        return CONFIG_ERROR;

    /* Pass 2: the environment. */
    for (size_t i = 0; i < n; i++) {
        char var[80] = "IMB_";
        size_t k = 4;
        for (const char *p = t[i].name; *p && k < sizeof(var) - 1; p++)
            var[k++] = (char)toupper((unsigned char)*p);
        var[k] = '\0';
        const char *v = getenv(var);
        if (v && (!reload || (t[i].flags & OPT_RELOAD)) &&
            !set(&t[i], cfg, v, var, err, errlen))
            return CONFIG_ERROR;
    }

    /* Pass 3: flags. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check-config"))
            continue;
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9))
            continue;
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return CONFIG_ERROR;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct opt *o = find(t, n, a, len);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)",
                     (int)len, a);
            return CONFIG_ERROR;
        }
        const char *val;
        if (eq)
            val = eq + 1;
        else if (o->type == OPT_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2)))
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            snprintf(err, errlen, "option '--%s' needs a value", o->name);
            return CONFIG_ERROR;
        }
        if ((!reload || (o->flags & OPT_RELOAD)) &&
            !set(o, cfg, val, "command line", err, errlen))
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

bool config_file_ok(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return false;
    }
    /* A directory opens; reading it fails. */
    char c;
    bool ok = fread(&c, 1, 1, f) == 1 || !ferror(f);
    int e = errno;
    fclose(f);
    if (!ok)
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
    return ok;
}

bool config_addr_ok(const char *what, const char *spec, char *err, size_t errlen)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    size_t hl = colon ? (size_t)(colon - spec) : 0;
    if (!colon || hl == 0 || hl >= sizeof(host))
        goto bad;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
        goto bad;
    unsigned char a[16];
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, a) == 1)
            return true;
    } else if (inet_pton(AF_INET, host, a) == 1) {
        return true;
    }
bad:
    snprintf(err, errlen,
             "%s: '%s' is not address:port (an IPv4 address or [IPv6] address, "
             "and a port 0..65535)",
             what, spec);
    return false;
}

bool config_tls_server_ok(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!config_file_ok("tls_cert", cert, err, errlen) ||
        !config_file_ok("tls_key", key, err, errlen))
        return false;
    SSL_CTX *ctx = tlsctx_server(cert, key, err, errlen);
    ERR_clear_error();
    if (!ctx)
        return false;
    SSL_CTX_free(ctx);
    return true;
}

bool config_tls_cafile_ok(const char *what, const char *path, char *err, size_t errlen)
{
    if (!config_file_ok(what, path, err, errlen))
        return false;
    char why[256];
    SSL_CTX *ctx = tlsctx_client(path, why, sizeof(why));
    ERR_clear_error();
    if (!ctx) {
        snprintf(err, errlen, "%s %s: no certificate OpenSSL can load (%s)", what,
                 path, why);
        return false;
    }
    SSL_CTX_free(ctx);
    return true;
}

bool config_check_common(const struct common_cfg *c, char *err, size_t errlen)
{
    int level = log_parse_level(c->log_level);
    if (level < 0) {
        snprintf(err, errlen, "log_level must be debug, info, warn or error");
        return false;
    }
    log_min_level = (enum log_level)level;
    /* Unset (a hand-filled struct) is the default, text. */
    int format = c->log_format ? log_parse_format(c->log_format) : LOG_FORMAT_TEXT;
    if (format < 0) {
        snprintf(err, errlen, "log_format must be text or json");
        return false;
    }
    log_format = (enum log_format)format;
    env_set_max_bytes((size_t)c->max_envelope);
    uint8_t key[SEAL_KEY_BYTES];
    if (!seal_parse_key(c->cred_key, key)) {
        snprintf(err, errlen,
                 "cred_key must be 64 hex characters, the same for edge and "
                 "xmppd (generate one with: openssl rand -hex 32)");
        return false;
    }
    if (!c->redis_host || !*c->redis_host) {
        snprintf(err, errlen, "redis_host must not be empty");
        return false;
    }
    if (c->redis_cluster && *c->redis_cluster &&
        !bus_cluster_seeds_ok(c->redis_cluster, err, errlen))
        return false;
    /* A brace in the prefix would be taken for the hash tag that keeps one
     * user's keys on one Redis Cluster slot (common/keys.h). */
    if (c->bus_prefix && strpbrk(c->bus_prefix, "{} \t\r\n")) {
        snprintf(err, errlen, "bus_prefix must be without braces or spaces");
        return false;
    }
    if (c->http_listen && *c->http_listen) {
        char host[256];
        int port;
        if (!httpd_parse_listen(c->http_listen, host, sizeof(host), &port, err, errlen))
            return false;
    }
    return true;
}

void config_reload(const struct opt *t, size_t n, void *cfg,
                   struct common_cfg *common, int argc, char **argv)
{
    char err[512];
    if (config_load(t, n, cfg, argc, argv, true, err, sizeof(err)) != CONFIG_OK) {
        LOG(ERROR, "reload_failed", "err=\"%s\"", err);
        return;
    }
    int level = log_parse_level(common->log_level);
    if (level < 0) {
        LOG(ERROR, "reload_failed", "err=\"log_level must be debug, info, warn or error\"");
        return;
    }
    log_min_level = (enum log_level)level;
    /* Said whatever the new level: the operator asked for it. */
    log_write(LOG_INFO, "reloaded", "log_level=%s", log_level_name(log_min_level));
}

int config_main(const struct opt *t, size_t n, void *cfg,
                const struct common_cfg *common, int argc, char **argv,
                const char *prog,
                bool (*check)(const void *cfg, char *err, size_t errlen))
{
    char err[512];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("%s %s\n", prog, config_version());
            return 0;
        }
    enum config_status st = config_load(t, n, cfg, argc, argv, false, err, sizeof(err));
    if (st == CONFIG_OK && (!config_check_common(common, err, sizeof(err)) ||
                            (check && !check(cfg, err, sizeof(err)))))
        st = CONFIG_ERROR;
    char var[80], hint[80];
    if (st == CONFIG_OK && unknown_env(t, n, var, sizeof(var), hint, sizeof(hint))) {
        /* A typo silently leaves the default in force: say so. */
        if (config_is_check(argc, argv)) {
            snprintf(err, sizeof(err), "environment: %s is not an option%s%s%s", var,
                     *hint ? " (did you mean " : "", hint, *hint ? "?)" : "");
            st = CONFIG_ERROR;
        } else {
            LOG(WARN, "unknown_env", "var=%s hint=%s", var, *hint ? hint : "-");
        }
    }
    if (st == CONFIG_OK && !config_is_check(argc, argv))
        return -1;
    if (st == CONFIG_ERROR)
        fprintf(stderr, "%s: %s\n", prog, err);
    else if (st == CONFIG_OK)
        printf("%s: configuration ok\n", prog);
    config_free(t, n, cfg);
    return st == CONFIG_ERROR ? 2 : 0;
}

void config_free(const struct opt *t, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].type == OPT_STR) {
            char **s = (char **)(void *)((char *)cfg + t[i].offset);
            free(*s);
            *s = NULL;
        }
}


bool config_is_check(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--check-config"))
            return true;
    return false;
}
