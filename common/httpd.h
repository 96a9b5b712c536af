/* httpd.h - a tiny HTTP endpoint on libevent's evhttp for health checks and
 * Prometheus metrics, plus the text-format helpers the metrics callback uses.
 *
 *   GET /healthz  200 "ok\n", or 503 with the health callback's reason
 *   GET /metrics  200, Content-Type: text/plain; version=0.0.4
 *   anything else 404 (GET/HEAD) or 405 (other methods)
 *
 * The server is meant for a private port (loopback, a pod network): it has no
 * authentication and no TLS. It runs on the caller's event_base, in the
 * caller's thread, so the callbacks may read the service's state directly.
 *
 * The metrics helpers are pure: they only append to an evbuffer. */
#ifndef IMB_HTTPD_H
#define IMB_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct httpd;

/* Healthy: return true. Unhealthy: write a short reason (one line, e.g.
 * "redis down") into reason (size n, NUL-terminated) and return false. */
typedef bool httpd_health_cb(void *owner, char *reason, size_t n);
/* Append the whole exposition to out with the metrics_* helpers below. */
typedef void httpd_metrics_cb(void *owner, struct evbuffer *out);

/* Listen on "host:port" ("[v6addr]:port" for IPv6, ":port" for every IPv4
 * address; port 0 picks a free port, see httpd_addr). listen "" (or NULL)
 * disables the endpoint: the call then succeeds and returns an httpd that
 * serves nothing (httpd_addr() is false), so callers need no special case.
 * health and metrics may be NULL (always healthy; an empty page).
 * Returns NULL with a reason in err when the address is malformed or the bind
 * fails. */
struct httpd *httpd_new(struct event_base *base, const char *listen,
                        httpd_health_cb *health, httpd_metrics_cb *metrics,
                        void *owner, char *err, size_t errlen);
/* Split "host:port", "[v6]:port" or ":port" into host (size hn) and port, as
 * httpd_new does. False with a reason in err when it is not that. */
bool httpd_parse_listen(const char *s, char *host, size_t hn, int *port,
                        char *err, size_t errlen);
/* Close the listener and every open HTTP connection. NULL is a no-op. */
void httpd_free(struct httpd *h);
/* The bound address as "127.0.0.1:9100" or "[::1]:9100" into out (size n).
 * False when disabled (or h is NULL) or it does not fit. */
bool httpd_addr(const struct httpd *h, char *out, size_t n);

/* ---- Prometheus text format (version 0.0.4) ----------------------------
 *
 * Each helper writes "# HELP" and "# TYPE" the first time a metric name
 * appears in out (it looks for "# TYPE <name> " in what out already holds),
 * then the sample. Write all the series of one name one after the other:
 * the format wants a metric's lines together.
 *
 * labels is "" (or NULL) or the inside of the braces, already formatted and
 * escaped by the caller: 'worker="w1"' or 'worker="w1",kind="p"'.
 * A name that is not a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)
 * writes nothing and returns false. */
bool metrics_counter(struct evbuffer *out, const char *name, const char *help,
                     const char *labels, uint64_t v);
/* Gauges may be negative or fractional (NaN and infinities are written as
 * Prometheus spells them); integral values print without a decimal point. */
bool metrics_gauge(struct evbuffer *out, const char *name, const char *help,
                   const char *labels, double v);

/* A latency histogram with fixed buckets, observed in milliseconds:
 * 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, +Inf; written in Prometheus'
 * base unit, seconds (le="0.001" ... le="1", the sum in seconds): name such a
 * metric with a "_seconds" suffix. Zero-initialise it
 * (struct metrics_hist h = {0}). Not thread-safe: one per thread/process. */
#define METRICS_HIST_BOUNDS 10
#define METRICS_HIST_BUCKETS (METRICS_HIST_BOUNDS + 1)
extern const double metrics_hist_bounds[METRICS_HIST_BOUNDS];

struct metrics_hist {
    uint64_t buckets[METRICS_HIST_BUCKETS]; /* per bucket, NOT cumulative;
                                               the last one is (1000, +Inf) */
    uint64_t count; /* observations */
    double sum;     /* of the observed values, ms */
};

/* Count one observation of ms milliseconds (negative or NaN counts as 0). */
void metrics_hist_observe(struct metrics_hist *h, double ms);
/* Write name_bucket{le=...} (cumulative, seconds), name_sum (seconds) and
 * name_count. */
bool metrics_hist_write(struct evbuffer *out, const char *name,
                        const char *help, const struct metrics_hist *h);
/* The same with extra labels on every line ('worker="w1"'). */
bool metrics_hist_write_labels(struct evbuffer *out, const char *name,
                               const char *help, const char *labels,
                               const struct metrics_hist *h);

/* Format a sample value the way the helpers do ("3", "-1", "0.25", "NaN",
 * "+Inf") into out (size n >= 32). Exposed for tests. */
void metrics_format_value(char *out, size_t n, double v);

#endif
