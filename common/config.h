/* config.h - one typed option table per service drives the config file, the
 * environment (IMB_<NAME>) and the command line (--name value), in that order
 * of precedence from weakest to strongest, plus --help and --check-config. */
#ifndef IMB_CONFIG_H
#define IMB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL };

#define OPT_SECRET 1u  /**< never printed (passwords, keys) */
#define OPT_RELOAD 2u  /**< re-read on SIGHUP */

struct opt {
    const char *name;  /**< snake_case; flag is --name or --name-with-dashes */
    enum opt_type type;
    size_t offset;     /**< of the char* / long / bool in the config struct */
    const char *def;   /**< default, as text */
    long min, max;     /**< OPT_INT bounds, inclusive */
    unsigned flags;
    const char *help;
};

/* Options both services share: the bus and logging. */
struct common_cfg {
    char *redis_host;
    long redis_port;
    char *redis_cluster; /* "host:port,...": Redis Cluster seeds; "" = one Redis */
    char *redis_user;
    char *redis_password;
    char *bus_prefix;
    char *cred_key;   /* 64 hex chars: seals passwords on the bus */
    char *log_level;
    char *log_format; /* text | json: the shape of every stderr line */
    char *http_listen; /* host:port for /healthz and /metrics; "" = off */
    long max_envelope; /* bytes of one envelope from the bus */
};

#define COMMON_OPTS(type, m)                                                   \
    {"redis_host", OPT_STR, offsetof(type, m.redis_host), "127.0.0.1", 0, 0, 0, \
     "Redis server address"},                                                  \
    {"redis_port", OPT_INT, offsetof(type, m.redis_port), "6379", 1, 65535, 0,  \
     "Redis server port"},                                                     \
    {"redis_cluster", OPT_STR, offsetof(type, m.redis_cluster), "", 0, 0, 0,    \
     "Redis Cluster seed nodes host:port,host:port (replaces redis_host)"},    \
    {"redis_user", OPT_STR, offsetof(type, m.redis_user), "", 0, 0, 0,          \
     "Redis ACL user (empty: password-only AUTH)"},                            \
    {"redis_password", OPT_STR, offsetof(type, m.redis_password), "", 0, 0,     \
     OPT_SECRET, "Redis password (empty: no AUTH)"},                           \
    {"bus_prefix", OPT_STR, offsetof(type, m.bus_prefix), "imb", 0, 0, 0,       \
     "namespace of every Redis channel and key"},                              \
    {"cred_key", OPT_STR, offsetof(type, m.cred_key), "", 0, 0, OPT_SECRET,     \
     "64 hex chars shared by edge and xmppd; seals passwords on the bus"},     \
    {"log_level", OPT_STR, offsetof(type, m.log_level), "info", 0, 0,           \
     OPT_RELOAD, "debug | info | warn | error"},                               \
    {"log_format", OPT_STR, offsetof(type, m.log_format), "text", 0, 0, 0,      \
     "text (ts level proc event k=v...) | json (one object per line)"},        \
    {"http_listen", OPT_STR, offsetof(type, m.http_listen), "", 0, 0, 0,        \
     "host:port serving /healthz and /metrics (empty: off)"},                  \
    {"max_envelope", OPT_INT, offsetof(type, m.max_envelope), "262144", 1024,   \
     262144, 0, "largest envelope accepted from the bus, bytes"}

enum config_status {
    CONFIG_OK,    /**< run */
    CONFIG_EXIT,  /**< --help, --version or --check-config succeeded: exit 0 */
    CONFIG_ERROR, /**< err says why: exit 2 */
};

/* Fill cfg from defaults, then the file named by --config (or IMB_CONFIG),
 * then IMB_* variables, then flags. cfg must be zeroed on the first call.
 * With reload, only OPT_RELOAD options are re-read (for SIGHUP); argv must be
 * the same as at start. */
enum config_status config_load(const struct opt *t, size_t n, void *cfg,
                               int argc, char **argv, bool reload,
                               char *err, size_t errlen);
/* True when --check-config is among the flags: validate, then exit 0. */
bool config_is_check(int argc, char **argv);
/* Validate the common options (cred_key, log_level, log_format, redis_host,
 * http_listen) and apply log_level and log_format. */
bool config_check_common(const struct common_cfg *c, char *err, size_t errlen);
/* The checks the services' own check functions share, each writing one clear
 * sentence into err when it fails:
 * - config_file_ok: path opens for reading ("what: path: reason");
 * - config_addr_ok: "IPv4:port" or "[IPv6]:port" (numeric, port 0..65535),
 *   the grammar of the edge's listen;
 * - config_tls_server_ok: cert and key readable, loaded by OpenSSL, matching;
 * - config_tls_cafile_ok: the CA file readable and holding certificates
 *   OpenSSL loads. */
bool config_file_ok(const char *what, const char *path, char *err, size_t errlen);
bool config_addr_ok(const char *what, const char *spec, char *err, size_t errlen);
bool config_tls_server_ok(const char *cert, const char *key, char *err, size_t errlen);
bool config_tls_cafile_ok(const char *what, const char *path, char *err, size_t errlen);
/* The version: the VERSION file at build time, plus `git describe` when the
 * build ran in a git checkout ("1.2.0 (git v1.2.0-3-gabcdef)"). */
const char *config_version(void);
/* The bare release number (the VERSION file), for imb_build_info. */
const char *config_release(void);
/* Names (snake_case) of the options of every imbridge service, NULL
 * terminated: a variable IMB_<NAME> for one of them is not a typo even in the
 * service that does not read it (one environment file for both). A new
 * option goes here too (tests/integration/config.test.mjs checks). */
extern const char *const config_known_names[];
/* SIGHUP: re-read the reloadable options (file, environment, flags as at
 * start) and apply the log level. Logs the outcome. */
void config_reload(const struct opt *t, size_t n, void *cfg,
                   struct common_cfg *common, int argc, char **argv);
/* The start of every service's main: load, validate the common options and
 * then check(cfg) if given, answer --help, --version and --check-config.
 * An IMB_* variable that names no option is a warning at start-up and an
 * error for --check-config. The same checks run at start-up and for
 * --check-config. Returns -1
 * when the service should run, else its exit status (cfg is freed then). */
int config_main(const struct opt *t, size_t n, void *cfg,
                const struct common_cfg *common, int argc, char **argv,
                const char *prog,
                bool (*check)(const void *cfg, char *err, size_t errlen));
/* Free the strings config_load allocated. */
void config_free(const struct opt *t, size_t n, void *cfg);

#endif
