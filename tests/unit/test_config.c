/* test_config.c - common/config: defaults < file < IMB_* < flags. */
#include "config.h"
#include "log.h"
#include "unit.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tcfg {
    char *name;
    long port;
    bool verbose;
    long max_frame;
    char *level;
};

static const struct opt table[] = {
    {"name", OPT_STR, offsetof(struct tcfg, name), "anon", 0, 0, 0, "a name"},
    {"port", OPT_INT, offsetof(struct tcfg, port), "80", 1, 65535, 0, "a port"},
    {"verbose", OPT_BOOL, offsetof(struct tcfg, verbose), "false", 0, 0, 0,
     "chatty"},
    {"max_frame", OPT_INT, offsetof(struct tcfg, max_frame), "16384", 2,
     1048576, 0, "largest frame"},
    {"level", OPT_STR, offsetof(struct tcfg, level), "info", 0, 0, OPT_RELOAD,
     "log level"},
};
#define N (sizeof(table) / sizeof(table[0]))

static const char *vars[] = {"IMB_CONFIG", "IMB_NAME", "IMB_PORT", "IMB_VERBOSE",
                             "IMB_MAX_FRAME", "IMB_LEVEL"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static char err[512];

/* config_load over a fresh zeroed cfg with argv = {"prog", args..., NULL}. */
#define LOAD(cfg, ...) load_args(cfg, (const char *[]){"prog", __VA_ARGS__, NULL})
#define LOAD0(cfg) load_args(cfg, (const char *[]){"prog", NULL})

static enum config_status load_args(struct tcfg *c, const char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    return config_load(table, N, c, argc, (char **)args, false, err, sizeof(err));
}

/* A temporary file holding text; its path goes into path (size >= 32). */
static void write_file(char *path, const char *text)
{
    strcpy(path, "/tmp/imb-unit-config.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) {
        perror("write");
        exit(2);
    }
    close(fd);
}

TEST(config_defaults)
{
    clear_env();
    struct tcfg c;
    CHECK_EQ_INT(LOAD0(&c), CONFIG_OK);
    CHECK_EQ_STR(c.name, "anon");
    CHECK_EQ_INT(c.port, 80);
    CHECK(c.verbose == false);
    CHECK_EQ_INT(c.max_frame, 16384);
    CHECK_EQ_STR(c.level, "info");
    config_free(table, N, &c);
    CHECK(c.name == NULL && c.level == NULL);
}

static const char *sample_file =
    "# a comment\n"
    "\n"
    "   # an indented comment\n"
    "name = \"Alice Smith\"   \n"
    "port=8080\n"
    "  verbose   =   yes\n"
    "max-frame = 2048\n";

TEST(config_file)
{
    clear_env();
    char path[64];
    write_file(path, sample_file);
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--config", path), CONFIG_OK);
    CHECK_EQ_STR(c.name, "Alice Smith");
    CHECK_EQ_INT(c.port, 8080);
    CHECK(c.verbose);
    CHECK_EQ_INT(c.max_frame, 2048);
    CHECK_EQ_STR(c.level, "info"); /* not in the file: the default */
    config_free(table, N, &c);

    char arg[96];
    snprintf(arg, sizeof(arg), "--config=%s", path);
    CHECK_EQ_INT(LOAD(&c, arg), CONFIG_OK);
    CHECK_EQ_INT(c.port, 8080);
    config_free(table, N, &c);

    setenv("IMB_CONFIG", path, 1);
    CHECK_EQ_INT(LOAD0(&c), CONFIG_OK);
    CHECK_EQ_INT(c.port, 8080);
    CHECK_EQ_STR(c.name, "Alice Smith");
    config_free(table, N, &c);
    unsetenv("IMB_CONFIG");
    unlink(path);
}

/* Loading a file holding text fails, and err mentions want. */
static void file_fails(const char *text, const char *want, const char *file,
                       int line)
{
    clear_env();
    char path[64];
    write_file(path, text);
    struct tcfg c;
    unit_check(LOAD(&c, "--config", path) == CONFIG_ERROR, file, line, text);
    if (!unit_check(strstr(err, want) != NULL, file, line, "err explains"))
        printf("    err: %s\n", err);
    config_free(table, N, &c);
    unlink(path);
}
#define FILE_FAILS(text, want) file_fails(text, want, __FILE__, __LINE__)

TEST(config_file_errors)
{
    FILE_FAILS("name = a\nbogus = 1\n", "bogus");
    FILE_FAILS("port = 8080\njust some words\n", "line 2");
    FILE_FAILS("port = 0\n", "port");
    FILE_FAILS("port = 65536\n", "port");
    FILE_FAILS("port = 80x\n", "port");
    FILE_FAILS("port =\n", "port");
    FILE_FAILS("verbose = maybe\n", "verbose");

    clear_env();
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--config", "/nonexistent/imb.conf"), CONFIG_ERROR);
    CHECK(strstr(err, "/nonexistent/imb.conf") != NULL);
    config_free(table, N, &c);
}

TEST(config_env_overrides_file)
{
    clear_env();
    char path[64];
    write_file(path, sample_file);
    setenv("IMB_PORT", "9090", 1);
    setenv("IMB_VERBOSE", "off", 1);
    setenv("IMB_MAX_FRAME", "4096", 1);
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--config", path), CONFIG_OK);
    CHECK_EQ_INT(c.port, 9090);
    CHECK(!c.verbose);
    CHECK_EQ_INT(c.max_frame, 4096);
    CHECK_EQ_STR(c.name, "Alice Smith"); /* from the file still */
    config_free(table, N, &c);

    setenv("IMB_PORT", "70000", 1); /* out of range in the environment */
    CHECK_EQ_INT(LOAD0(&c), CONFIG_ERROR);
    CHECK(strstr(err, "IMB_PORT") != NULL);
    config_free(table, N, &c);
    clear_env();
    unlink(path);
}

TEST(config_flags_override_env)
{
    clear_env();
    setenv("IMB_PORT", "9090", 1);
    setenv("IMB_NAME", "from-env", 1);
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--port", "7000"), CONFIG_OK);
    CHECK_EQ_INT(c.port, 7000);
    CHECK_EQ_STR(c.name, "from-env");
    config_free(table, N, &c);

    CHECK_EQ_INT(LOAD(&c, "--port=7001", "--name=x=y"), CONFIG_OK);
    CHECK_EQ_INT(c.port, 7001);
    CHECK_EQ_STR(c.name, "x=y"); /* only the first '=' splits */
    config_free(table, N, &c);

    /* Dashes and underscores name the same option. */
    CHECK_EQ_INT(LOAD(&c, "--max-frame", "100"), CONFIG_OK);
    CHECK_EQ_INT(c.max_frame, 100);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--max_frame=200"), CONFIG_OK);
    CHECK_EQ_INT(c.max_frame, 200);
    config_free(table, N, &c);

    /* The last of repeated flags wins; an empty string value is kept. */
    CHECK_EQ_INT(LOAD(&c, "--port", "1", "--port", "2", "--name", ""),
                 CONFIG_OK);
    CHECK_EQ_INT(c.port, 2);
    CHECK_EQ_STR(c.name, "");
    config_free(table, N, &c);
    clear_env();
}

TEST(config_bool_flags)
{
    clear_env();
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--verbose"), CONFIG_OK);
    CHECK(c.verbose);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--verbose", "--port", "5"), CONFIG_OK);
    CHECK(c.verbose);
    CHECK_EQ_INT(c.port, 5);
    config_free(table, N, &c);
    setenv("IMB_VERBOSE", "1", 1);
    CHECK_EQ_INT(LOAD(&c, "--verbose", "false"), CONFIG_OK);
    CHECK(!c.verbose);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--verbose=no"), CONFIG_OK);
    CHECK(!c.verbose);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--verbose=sometimes"), CONFIG_ERROR);
    config_free(table, N, &c);
    clear_env();
}

TEST(config_flag_errors)
{
    clear_env();
    struct tcfg c;
    static const char *bad_ports[] = {"0", "65536", "-1", "abc", "12x", "",
                                      "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_ports) / sizeof(bad_ports[0]); i++) {
        if (!CHECK_EQ_INT(LOAD(&c, "--port", bad_ports[i]), CONFIG_ERROR))
            printf("    accepted --port '%s'\n", bad_ports[i]);
        CHECK(strstr(err, "port") != NULL);
        config_free(table, N, &c);
    }
    CHECK_EQ_INT(LOAD(&c, "--port", "65535"), CONFIG_OK); /* bounds inclusive */
    CHECK_EQ_INT(c.port, 65535);
    config_free(table, N, &c);

    CHECK_EQ_INT(LOAD(&c, "--nope", "1"), CONFIG_ERROR);
    CHECK(strstr(err, "nope") != NULL);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--nope=1"), CONFIG_ERROR);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--por", "1"), CONFIG_ERROR); /* no prefix match */
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--PORT", "1"), CONFIG_ERROR);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "stray"), CONFIG_ERROR);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "-p", "1"), CONFIG_ERROR);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--port"), CONFIG_ERROR); /* value missing */
    CHECK(strstr(err, "port") != NULL);
    config_free(table, N, &c);
    CHECK_EQ_INT(LOAD(&c, "--name"), CONFIG_ERROR);
    config_free(table, N, &c);
}

TEST(config_config_flag_needs_value)
{
    /* "--config" with nothing after it must not silently run on defaults. */
    clear_env();
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--config"), CONFIG_ERROR);
    config_free(table, N, &c);
}

TEST(config_help)
{
    clear_env();
    struct tcfg c;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    close(devnull);
    enum config_status a = LOAD(&c, "--help");
    config_free(table, N, &c);
    enum config_status b = LOAD(&c, "--port", "1", "-h");
    config_free(table, N, &c);
    /* --help wins even over an otherwise broken command line. */
    enum config_status d = LOAD(&c, "--nope", "--help");
    config_free(table, N, &c);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    CHECK_EQ_INT(a, CONFIG_EXIT);
    CHECK_EQ_INT(b, CONFIG_EXIT);
    CHECK_EQ_INT(d, CONFIG_EXIT);
}

TEST(config_check_flag)
{
    char *yes[] = {"prog", "--port", "1", "--check-config", NULL};
    char *no[] = {"prog", "--port", "1", NULL};
    CHECK(config_is_check(4, yes));
    CHECK(!config_is_check(3, no));
    clear_env();
    struct tcfg c;
    CHECK_EQ_INT(LOAD(&c, "--check-config", "--port", "3"), CONFIG_OK);
    CHECK_EQ_INT(c.port, 3);
    config_free(table, N, &c);
}

TEST(config_reload_only_reloadable)
{
    clear_env();
    char path[64];
    write_file(path, "name = first\nlevel = debug\nport = 1000\n");
    struct tcfg c;
    char *argv[] = {"prog", "--config", path, NULL};
    CHECK_EQ_INT(LOAD(&c, "--config", path), CONFIG_OK);
    CHECK_EQ_STR(c.level, "debug");

    FILE *f = fopen(path, "w");
    fputs("name = second\nlevel = warn\nport = 2000\n", f);
    fclose(f);
    CHECK_EQ_INT(config_load(table, N, &c, 3, argv, true, err, sizeof(err)),
                 CONFIG_OK);
    CHECK_EQ_STR(c.level, "warn");  /* OPT_RELOAD: re-read */
    CHECK_EQ_STR(c.name, "first");  /* not reloadable: kept */
    CHECK_EQ_INT(c.port, 1000);
    config_free(table, N, &c);
    unlink(path);
}

TEST(config_common)
{
    struct common_cfg c = {0};
    char e[256];
    c.redis_host = "127.0.0.1";
    c.log_level = "info";
    c.cred_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    CHECK(config_check_common(&c, e, sizeof(e)));
    c.cred_key = "";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    CHECK(strstr(e, "cred_key") != NULL);
    c.cred_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    c.cred_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    c.log_level = "loud";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    CHECK(strstr(e, "log_level") != NULL);
    c.log_level = "info";
    CHECK(config_check_common(&c, e, sizeof(e)));
    c.redis_host = "";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    CHECK(strstr(e, "redis_host") != NULL);
    c.redis_host = "redis";
    c.http_listen = "9100";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    CHECK(strstr(e, "http_listen: '9100'") != NULL);
    c.http_listen = ":9100";
    CHECK(config_check_common(&c, e, sizeof(e)));
    CHECK_EQ_INT(log_format, LOG_FORMAT_TEXT); /* unset: text */
    c.log_format = "xml";
    CHECK(!config_check_common(&c, e, sizeof(e)));
    CHECK(strstr(e, "log_format") != NULL);
    c.log_format = "json";
    CHECK(config_check_common(&c, e, sizeof(e)));
    CHECK_EQ_INT(log_format, LOG_FORMAT_JSON);
    c.log_format = "text";
    CHECK(config_check_common(&c, e, sizeof(e)));
    CHECK_EQ_INT(log_format, LOG_FORMAT_TEXT);
}

/* listen's grammar: numeric IPv4 or [IPv6], a port 0..65535. */
TEST(config_addr)
{
    char e[256];
    const char *good[] = {"127.0.0.1:7222", "0.0.0.0:0", "[::1]:7222", "[::]:65535"};
    const char *bad[] = {"", "7222", ":7222", "localhost:7222", "127.0.0.1:", "127.0.0.1:x",
                         "127.0.0.1:65536", "127.0.0.1:-1", "[::1]", "::1:7222", "[zz]:1",
                         "1.2.3.4:80 "};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(config_addr_ok("listen", good[i], e, sizeof(e)));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!config_addr_ok("listen", bad[i], e, sizeof(e)));
        CHECK(strncmp(e, "listen: '", 9) == 0);
    }
}

/* Files that cannot be read are named with the reason. */
TEST(config_files)
{
    char e[256], path[64];
    CHECK(!config_file_ok("tls_cert", "/nonexistent/x.pem", e, sizeof(e)));
    CHECK(strstr(e, "tls_cert /nonexistent/x.pem: No such file") != NULL);
    CHECK(!config_file_ok("xmpp_cafile", "/", e, sizeof(e)));
    CHECK(strstr(e, "Is a directory") != NULL);
    write_file(path, "not a certificate\n");
    CHECK(config_file_ok("xmpp_cafile", path, e, sizeof(e)));
    CHECK(!config_tls_cafile_ok("xmpp_cafile", path, e, sizeof(e)));
    CHECK(strstr(e, "no certificate OpenSSL can load") != NULL);
    CHECK(!config_tls_server_ok(path, path, e, sizeof(e)));
    unlink(path);
}

int main(void)
{
    RUN(config_defaults);
    RUN(config_file);
    RUN(config_file_errors);
    RUN(config_env_overrides_file);
    RUN(config_flags_override_env);
    RUN(config_bool_flags);
    RUN(config_flag_errors);
    RUN(config_config_flag_needs_value);
    RUN(config_help);
    RUN(config_check_flag);
    RUN(config_reload_only_reloadable);
    RUN(config_common);
    RUN(config_addr);
    RUN(config_files);
    clear_env();
    return unit_done();
}
