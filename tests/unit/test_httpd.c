/* test_httpd.c - common/httpd: the Prometheus text helpers (pure) and the
 * health/metrics endpoint itself, served and fetched on loopback. */
#include "httpd.h"
#include "unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

/* The buffer's contents as a malloc'd string. */
static char *text(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

TEST(format_value)
{
    char v[40];
    metrics_format_value(v, sizeof(v), 0);
    CHECK_EQ_STR(v, "0");
    metrics_format_value(v, sizeof(v), 3);
    CHECK_EQ_STR(v, "3");
    metrics_format_value(v, sizeof(v), -1);
    CHECK_EQ_STR(v, "-1");
    metrics_format_value(v, sizeof(v), 0.25);
    CHECK_EQ_STR(v, "0.25");
    metrics_format_value(v, sizeof(v), 0.1);
    CHECK_EQ_STR(v, "0.1");
    metrics_format_value(v, sizeof(v), 1e300);
    CHECK_EQ_STR(v, "1e+300");
    metrics_format_value(v, sizeof(v), 12345678901234.0);
    CHECK_EQ_STR(v, "12345678901234");
    metrics_format_value(v, sizeof(v), NAN);
    CHECK_EQ_STR(v, "NaN");
    metrics_format_value(v, sizeof(v), INFINITY);
    CHECK_EQ_STR(v, "+Inf");
    metrics_format_value(v, sizeof(v), -INFINITY);
    CHECK_EQ_STR(v, "-Inf");
    /* Round-trips even when 15 digits are not enough. */
    metrics_format_value(v, sizeof(v), 1.0 / 3.0);
    CHECK(strtod(v, NULL) == 1.0 / 3.0);
}

TEST(counter_help_type_once_per_name)
{
    struct evbuffer *b = evbuffer_new();
    CHECK(metrics_counter(b, "imb_logins_total", "logins answered",
                          "worker=\"w0\"", 3));
    CHECK(metrics_counter(b, "imb_logins_total", "logins answered",
                          "worker=\"w1\"", 18446744073709551615ull));
    CHECK(metrics_counter(b, "imb_publish_missed_total", "PUBLISH that reached "
                          "no subscriber", "", 0));
    char *s = text(b);
    CHECK_EQ_STR(s,
                 "# HELP imb_logins_total logins answered\n"
                 "# TYPE imb_logins_total counter\n"
                 "imb_logins_total{worker=\"w0\"} 3\n"
                 "imb_logins_total{worker=\"w1\"} 18446744073709551615\n"
                 "# HELP imb_publish_missed_total PUBLISH that reached no subscriber\n"
                 "# TYPE imb_publish_missed_total counter\n"
                 "imb_publish_missed_total 0\n");
    free(s);
    evbuffer_free(b);
}

TEST(gauge_values_and_null_labels)
{
    struct evbuffer *b = evbuffer_new();
    CHECK(metrics_gauge(b, "imb_bus_roundtrip_seconds", "heartbeat round trip",
                        NULL, -1));
    CHECK(metrics_gauge(b, "imb_sessions", NULL, "worker=\"w0\"", 799));
    CHECK(metrics_gauge(b, "imb_sessions", NULL, "worker=\"w1\"", 0.5));
    char *s = text(b);
    CHECK_EQ_STR(s,
                 "# HELP imb_bus_roundtrip_seconds heartbeat round trip\n"
                 "# TYPE imb_bus_roundtrip_seconds gauge\n"
                 "imb_bus_roundtrip_seconds -1\n"
                 "# TYPE imb_sessions gauge\n"
                 "imb_sessions{worker=\"w0\"} 799\n"
                 "imb_sessions{worker=\"w1\"} 0.5\n");
    free(s);
    evbuffer_free(b);
}

TEST(name_prefix_of_another_gets_its_own_head)
{
    /* "# TYPE imb_conns " must not be mistaken for "# TYPE imb_conns_total ". */
    struct evbuffer *b = evbuffer_new();
    metrics_counter(b, "imb_conns_total", "h1", "", 1);
    metrics_gauge(b, "imb_conns", "h2", "", 2);
    metrics_gauge(b, "imb_conns", "h2", "x=\"y\"", 3);
    char *s = text(b);
    CHECK_EQ_INT(count_of(s, "# TYPE imb_conns gauge\n"), 1);
    CHECK_EQ_INT(count_of(s, "# TYPE imb_conns_total counter\n"), 1);
    CHECK_EQ_INT(count_of(s, "# HELP "), 2);
    free(s);
    evbuffer_free(b);
}

TEST(help_is_escaped_and_bad_names_write_nothing)
{
    struct evbuffer *b = evbuffer_new();
    CHECK(!metrics_counter(b, "", "x", "", 1));
    CHECK(!metrics_counter(b, NULL, "x", "", 1));
    CHECK(!metrics_counter(b, "9lives", "x", "", 1));
    CHECK(!metrics_gauge(b, "has space", "x", "", 1));
    CHECK(!metrics_gauge(b, "dash-ed", "x", "", 1));
    struct metrics_hist h = {0};
    CHECK(!metrics_hist_write(b, "bad{", "x", &h));
    CHECK_EQ_INT(evbuffer_get_length(b), 0);
    CHECK(metrics_gauge(b, "ns:sub_name9", "a\\b\nc", "", 1));
    char *s = text(b);
    CHECK_EQ_STR(s, "# HELP ns:sub_name9 a\\\\b\\nc\n"
                    "# TYPE ns:sub_name9 gauge\n"
                    "ns:sub_name9 1\n");
    free(s);
    evbuffer_free(b);
}

TEST(hist_observe_buckets)
{
    struct metrics_hist h = {0};
    /* le semantics: a value equal to a bound falls in that bound's bucket. */
    double obs[] = {0, 0.5, 1, 1.5, 2, 3, 1000, 1000.5, 99999, -5, NAN};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        metrics_hist_observe(&h, obs[i]);
    CHECK_EQ_INT(h.count, 11);
    CHECK_EQ_INT(h.buckets[0], 5); /* 0, 0.5, 1, -5->0, NaN->0 */
    CHECK_EQ_INT(h.buckets[1], 2); /* 1.5, 2 */
    CHECK_EQ_INT(h.buckets[2], 1); /* 3 */
    CHECK_EQ_INT(h.buckets[9], 1); /* 1000 */
    CHECK_EQ_INT(h.buckets[10], 2); /* 1000.5, 99999 */
    uint64_t total = 0;
    for (int i = 0; i < METRICS_HIST_BUCKETS; i++)
        total += h.buckets[i];
    CHECK_EQ_INT(total, h.count);
    CHECK(fabs(h.sum - (0.5 + 1 + 1.5 + 2 + 3 + 1000 + 1000.5 + 99999)) < 1e-9);
}

TEST(hist_write_cumulative)
{
    struct metrics_hist h = {0};
    metrics_hist_observe(&h, 0.25);
    metrics_hist_observe(&h, 7);
    metrics_hist_observe(&h, 7);
    metrics_hist_observe(&h, 300);
    metrics_hist_observe(&h, 5000);
    struct evbuffer *b = evbuffer_new();
    CHECK(metrics_hist_write(b, "imb_chat_ack_seconds", "phone chat to ack", &h));
    char *s = text(b);
    /* Observed in ms, written in seconds. */
    CHECK_EQ_STR(s,
                 "# HELP imb_chat_ack_seconds phone chat to ack\n"
                 "# TYPE imb_chat_ack_seconds histogram\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.001\"} 1\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.002\"} 1\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.005\"} 1\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.01\"} 3\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.025\"} 3\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.05\"} 3\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.1\"} 3\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.25\"} 3\n"
                 "imb_chat_ack_seconds_bucket{le=\"0.5\"} 4\n"
                 "imb_chat_ack_seconds_bucket{le=\"1\"} 4\n"
                 "imb_chat_ack_seconds_bucket{le=\"+Inf\"} 5\n"
                 "imb_chat_ack_seconds_sum 5.31425\n"
                 "imb_chat_ack_seconds_count 5\n");
    free(s);
    evbuffer_free(b);
}

TEST(hist_write_labels_two_series_one_head)
{
    struct metrics_hist a = {0}, z = {0};
    metrics_hist_observe(&a, 1);
    struct evbuffer *b = evbuffer_new();
    CHECK(metrics_hist_write_labels(b, "imb_login_seconds", "login", "worker=\"w0\"", &a));
    CHECK(metrics_hist_write_labels(b, "imb_login_seconds", "login", "worker=\"w1\"", &z));
    char *s = text(b);
    CHECK_EQ_INT(count_of(s, "# TYPE imb_login_seconds histogram\n"), 1);
    CHECK_EQ_INT(count_of(s, "# HELP imb_login_seconds login\n"), 1);
    CHECK(strstr(s, "imb_login_seconds_bucket{worker=\"w0\",le=\"0.001\"} 1\n") != NULL);
    CHECK(strstr(s, "imb_login_seconds_bucket{worker=\"w1\",le=\"+Inf\"} 0\n") != NULL);
    CHECK(strstr(s, "imb_login_seconds_sum{worker=\"w0\"} 0.001\n") != NULL);
    CHECK(strstr(s, "imb_login_seconds_count{worker=\"w1\"} 0\n") != NULL);
    CHECK_EQ_INT(count_of(s, "\n"), 2 + 2 * 13);
    free(s);
    evbuffer_free(b);
}

/* ---- the endpoint, on loopback ------------------------------------------ */

struct svc {
    bool healthy;
    int metrics_calls;
};

static bool svc_health(void *owner, char *reason, size_t n)
{
    struct svc *s = owner;
    if (!s->healthy)
        snprintf(reason, n, "redis down\nsecond line");
    return s->healthy;
}

static void svc_metrics(void *owner, struct evbuffer *out)
{
    struct svc *s = owner;
    s->metrics_calls++;
    metrics_counter(out, "imb_test_total", "a test counter", "", 42);
}

struct fetch {
    struct event_base *base;
    int code;          /* 0: no answer */
    char ctype[128];
    char body[4096];
};

static void fetch_done(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    if (req) {
        f->code = evhttp_request_get_response_code(req);
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
                                            "Content-Type");
        snprintf(f->ctype, sizeof(f->ctype), "%s", ct ? ct : "");
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        if (n >= sizeof(f->body))
            n = sizeof(f->body) - 1;
        evbuffer_copyout(in, f->body, n);
        f->body[n] = '\0';
    }
    event_base_loopexit(f->base, NULL);
}

/* One request on a fresh connection, the loop run until the answer (5 s max). */
static struct fetch fetch(struct event_base *base, int port,
                          enum evhttp_cmd_type cmd, const char *path)
{
    struct fetch f = {.base = base};
    struct evhttp_connection *c =
        evhttp_connection_base_new(base, NULL, "127.0.0.1", (ev_uint16_t)port);
    struct evhttp_request *req = evhttp_request_new(fetch_done, &f);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "localhost");
    evhttp_make_request(c, req, cmd, path);
    struct timeval tv = {5, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    evhttp_connection_free(c);
    return f;
}

static int port_of(struct httpd *h)
{
    char addr[64];
    if (!httpd_addr(h, addr, sizeof(addr)))
        return -1;
    const char *colon = strrchr(addr, ':');
    return colon ? atoi(colon + 1) : -1;
}

TEST(endpoint_health_metrics_404_405)
{
    struct event_base *base = event_base_new();
    struct svc s = {.healthy = true};
    char err[256];
    struct httpd *h = httpd_new(base, "127.0.0.1:0", svc_health, svc_metrics,
                                &s, err, sizeof(err));
    if (!CHECK(h != NULL)) {
        printf("    err: %s\n", err);
        event_base_free(base);
        return;
    }
    char addr[64];
    CHECK(httpd_addr(h, addr, sizeof(addr)));
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
    int port = port_of(h);
    CHECK(port > 0);

    struct fetch f = fetch(base, port, EVHTTP_REQ_GET, "/healthz");
    CHECK_EQ_INT(f.code, 200);
    CHECK_EQ_STR(f.body, "ok\n");

    s.healthy = false;
    f = fetch(base, port, EVHTTP_REQ_GET, "/healthz");
    CHECK_EQ_INT(f.code, 503);
    CHECK_EQ_STR(f.body, "redis down second line\n");

    f = fetch(base, port, EVHTTP_REQ_GET, "/metrics?x=1");
    CHECK_EQ_INT(f.code, 200);
    CHECK_EQ_STR(f.ctype, "text/plain; version=0.0.4; charset=utf-8");
    CHECK_EQ_STR(f.body, "# HELP imb_test_total a test counter\n"
                         "# TYPE imb_test_total counter\n"
                         "imb_test_total 42\n");
    CHECK_EQ_INT(s.metrics_calls, 1);

    f = fetch(base, port, EVHTTP_REQ_HEAD, "/metrics");
    CHECK_EQ_INT(f.code, 200);
    CHECK_EQ_STR(f.body, "");

    f = fetch(base, port, EVHTTP_REQ_GET, "/");
    CHECK_EQ_INT(f.code, 404);
    f = fetch(base, port, EVHTTP_REQ_GET, "/healthz/x");
    CHECK_EQ_INT(f.code, 404);
    f = fetch(base, port, EVHTTP_REQ_POST, "/healthz");
    CHECK_EQ_INT(f.code, 405);

    httpd_free(h);
    event_base_free(base);
}

TEST(endpoint_disabled_bad_address_port_taken)
{
    struct event_base *base = event_base_new();
    char err[256] = "x";
    struct httpd *h = httpd_new(base, "", NULL, NULL, NULL, err, sizeof(err));
    CHECK(h != NULL);
    CHECK_EQ_STR(err, "");
    char addr[64];
    CHECK(!httpd_addr(h, addr, sizeof(addr)));
    httpd_free(h);
    h = httpd_new(base, NULL, NULL, NULL, NULL, err, sizeof(err));
    CHECK(h != NULL);
    httpd_free(h);
    httpd_free(NULL);
    CHECK(!httpd_addr(NULL, addr, sizeof(addr)));

    const char *bad[] = {"9100", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
                         "[::1]9100", "[::1", "127.0.0.1:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        h = httpd_new(base, bad[i], NULL, NULL, NULL, err, sizeof(err));
        if (!CHECK(h == NULL))
            printf("    accepted '%s'\n", bad[i]);
        httpd_free(h);
        CHECK(strstr(err, "not host:port") != NULL);
    }

    /* Without callbacks: healthy, empty metrics. */
    struct httpd *a = httpd_new(base, "127.0.0.1:0", NULL, NULL, NULL, err,
                                sizeof(err));
    if (CHECK(a != NULL)) {
        int port = port_of(a);
        struct fetch f = fetch(base, port, EVHTTP_REQ_GET, "/healthz");
        CHECK_EQ_INT(f.code, 200);
        f = fetch(base, port, EVHTTP_REQ_GET, "/metrics");
        CHECK_EQ_INT(f.code, 200);
        CHECK_EQ_STR(f.body, "");
        /* A second server on the same port fails with a reason. */
        char spec[64];
        snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
        struct httpd *b = httpd_new(base, spec, NULL, NULL, NULL, err, sizeof(err));
        CHECK(b == NULL);
        CHECK(strstr(err, "cannot listen for http on") != NULL);
        httpd_free(b);
    }
    httpd_free(a);
    event_base_free(base);
}

int main(void)
{
    RUN(format_value);
    RUN(counter_help_type_once_per_name);
    RUN(gauge_values_and_null_labels);
    RUN(name_prefix_of_another_gets_its_own_head);
    RUN(help_is_escaped_and_bad_names_write_nothing);
    RUN(hist_observe_buckets);
    RUN(hist_write_cumulative);
    RUN(hist_write_labels_two_series_one_head);
    RUN(endpoint_health_metrics_404_405);
    RUN(endpoint_disabled_bad_address_port_taken);
    return unit_done();
}
