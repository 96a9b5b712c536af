/* httpd.c - the health and metrics endpoint (evhttp) and the Prometheus text
 * format helpers. See httpd.h. */
#include "httpd.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

/* Health and metrics requests are tiny; anything bigger is not ours. */
#define HTTPD_MAX_HEADERS 8192
#define HTTPD_MAX_BODY 4096
#define HTTPD_TIMEOUT_S 10
#define HEALTH_REASON_MAX 256

struct httpd {
    struct evhttp *http;              /* NULL when disabled */
    struct evhttp_bound_socket *sock; /* owned by http */
    httpd_health_cb *health;          /* may be NULL: always healthy */
    httpd_metrics_cb *metrics;        /* may be NULL: empty page */
    void *owner;                      /* handed to both callbacks */
};

/* ---- the server --------------------------------------------------------- */

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *ctype, struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason,
                       const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    reply(req, code, reason, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

static void serve_health(struct httpd *h, struct evhttp_request *req)
{
    char why[HEALTH_REASON_MAX] = "";
    if (!h->health || h->health(h->owner, why, sizeof(why))) {
        reply_text(req, 200, "OK", "ok\n");
        return;
    }
    why[sizeof(why) - 1] = '\0';
    /* One line: the reason ends the body. */
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    char body[HEALTH_REASON_MAX + 2];
    snprintf(body, sizeof(body), "%s\n", *why ? why : "unhealthy");
    reply_text(req, 503, "Service Unavailable", body);
}

static void serve_metrics(struct httpd *h, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    if (h->metrics)
        h->metrics(h->owner, b);
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
    evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct httpd *h = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path && !strcmp(path, "/healthz"))
        serve_health(h, req);
    else if (path && !strcmp(path, "/metrics"))
        serve_metrics(h, req);
    else
        reply_text(req, 404, "Not Found", "not found\n");
}

bool httpd_parse_listen(const char *s, char *host, size_t hn, int *port,
                        char *err, size_t errlen)
{
    const char *colon;
    size_t hlen;
    const char *hstart = s;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            goto bad;
        hstart = s + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - s);
    }
    if (hlen >= hn)
        goto bad;
    if (hlen == 0)
        snprintf(host, hn, "0.0.0.0");
    else {
        memcpy(host, hstart, hlen);
        host[hlen] = '\0';
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
        goto bad;
    *port = (int)p;
    return true;
bad:
    snprintf(err, errlen, "http_listen: '%s' is not host:port (or [IPv6]:port, :port)", s);
    return false;
}

struct httpd *httpd_new(struct event_base *base, const char *listen,
                        httpd_health_cb *health, httpd_metrics_cb *metrics,
                        void *owner, char *err, size_t errlen)
{
    struct httpd *h = xcalloc(1, sizeof(*h));
    h->health = health;
    h->metrics = metrics;
    h->owner = owner;
    if (errlen)
        err[0] = '\0';
    if (!listen || !*listen)
        return h; /* disabled */

    char host[256];
    int port;
    if (!httpd_parse_listen(listen, host, sizeof(host), &port, err, errlen))
        goto fail;
    h->http = evhttp_new(base);
    if (!h->http) {
        snprintf(err, errlen, "evhttp_new failed");
        goto fail;
    }
    evhttp_set_max_headers_size(h->http, HTTPD_MAX_HEADERS);
    evhttp_set_max_body_size(h->http, HTTPD_MAX_BODY);
    evhttp_set_timeout(h->http, HTTPD_TIMEOUT_S);
    evhttp_set_gencb(h->http, on_request, h);
    errno = 0;
    h->sock = evhttp_bind_socket_with_handle(h->http, host, (ev_uint16_t)port);
    if (!h->sock) {
        snprintf(err, errlen, "cannot listen for http on %s: %s", listen,
                 errno ? strerror(errno) : "bind failed");
        goto fail;
    }
    return h;
fail:
    httpd_free(h);
    return NULL;
}

void httpd_free(struct httpd *h)
{
    if (!h)
        return;
    if (h->http)
        evhttp_free(h->http);
    free(h);
}

bool httpd_addr(const struct httpd *h, char *out, size_t n)
{
    if (!h || !h->sock || n == 0)
        return false;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(h->sock);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return false;
    char ip[INET6_ADDRSTRLEN];
    int r;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        r = snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        r = snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else {
        return false;
    }
    return r > 0 && (size_t)r < n;
}

/* ---- Prometheus text format ---------------------------------------------- */

const double metrics_hist_bounds[METRICS_HIST_BOUNDS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000};

static bool valid_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     c == '_' || c == ':';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* True when out already has a "# TYPE <name> " line. */
static bool family_written(struct evbuffer *out, const char *name)
{
    char pat[320];
    int plen = snprintf(pat, sizeof(pat), "# TYPE %s ", name);
    if (plen < 0 || (size_t)plen >= sizeof(pat))
        return false;
    struct evbuffer_ptr p = evbuffer_search(out, pat, (size_t)plen, NULL);
    while (p.pos != -1) {
        if (p.pos == 0)
            return true;
        struct evbuffer_ptr prev;
        char c = 0;
        if (evbuffer_ptr_set(out, &prev, (size_t)p.pos - 1,
                             EVBUFFER_PTR_SET) == 0 &&
            evbuffer_copyout_from(out, &prev, &c, 1) == 1 && c == '\n')
            return true;
        if (evbuffer_ptr_set(out, &p, 1, EVBUFFER_PTR_ADD) != 0)
            break;
        p = evbuffer_search(out, pat, (size_t)plen, &p);
    }
    return false;
}

/* HELP and TYPE, once per name. */
static void family_head(struct evbuffer *out, const char *name,
                        const char *help, const char *type)
{
    if (family_written(out, name))
        return;
    if (help && *help) {
        evbuffer_add_printf(out, "# HELP %s ", name);
        /* The format escapes backslash and newline in HELP text. */
        for (const char *p = help; *p; p++) {
            if (*p == '\\')
                evbuffer_add(out, "\\\\", 2);
            else if (*p == '\n')
                evbuffer_add(out, "\\n", 2);
            else
                evbuffer_add(out, p, 1);
        }
        evbuffer_add(out, "\n", 1);
    }
    evbuffer_add_printf(out, "# TYPE %s %s\n", name, type);
}

void metrics_format_value(char *out, size_t n, double v)
{
    if (isnan(v))
        snprintf(out, n, "NaN");
    else if (isinf(v))
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53 */
        snprintf(out, n, "%lld", (long long)v);
    else {
        /* The shortest of %.15g and %.17g that reads back the same. */
        snprintf(out, n, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, n, "%.17g", v);
    }
}

static void sample(struct evbuffer *out, const char *name, const char *suffix,
                   const char *labels, const char *extra_label,
                   const char *value)
{
    bool l1 = labels && *labels, l2 = extra_label && *extra_label;
    evbuffer_add_printf(out, "%s%s%s%s%s%s%s %s\n", name, suffix,
                        l1 || l2 ? "{" : "", l1 ? labels : "",
                        l1 && l2 ? "," : "", l2 ? extra_label : "",
                        l1 || l2 ? "}" : "", value);
}

bool metrics_counter(struct evbuffer *out, const char *name, const char *help,
                     const char *labels, uint64_t v)
{
    if (!valid_name(name))
        return false;
    family_head(out, name, help, "counter");
    char val[32];
    snprintf(val, sizeof(val), "%" PRIu64, v);
    sample(out, name, "", labels, NULL, val);
    return true;
}

bool metrics_gauge(struct evbuffer *out, const char *name, const char *help,
                   const char *labels, double v)
{
    if (!valid_name(name))
        return false;
    family_head(out, name, help, "gauge");
    char val[40];
    metrics_format_value(val, sizeof(val), v);
    sample(out, name, "", labels, NULL, val);
    return true;
}

void metrics_hist_observe(struct metrics_hist *h, double ms)
{
    if (!(ms > 0)) /* negative and NaN */
        ms = 0;
    size_t i = 0;
    while (i < METRICS_HIST_BOUNDS && ms > metrics_hist_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += ms;
}

bool metrics_hist_write_labels(struct evbuffer *out, const char *name,
                               const char *help, const char *labels,
                               const struct metrics_hist *h)
{
    if (!valid_name(name))
        return false;
    family_head(out, name, help, "histogram");
    uint64_t cum = 0;
    char le[48], val[40];
    for (size_t i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        if (i < METRICS_HIST_BOUNDS) {
            metrics_format_value(val, sizeof(val), metrics_hist_bounds[i] / 1000.0);
            snprintf(le, sizeof(le), "le=\"%s\"", val);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        snprintf(val, sizeof(val), "%" PRIu64, cum);
        sample(out, name, "_bucket", labels, le, val);
    }
    metrics_format_value(val, sizeof(val), h->sum / 1000.0);
    sample(out, name, "_sum", labels, NULL, val);
    snprintf(val, sizeof(val), "%" PRIu64, h->count);
    sample(out, name, "_count", labels, NULL, val);
    return true;
}

bool metrics_hist_write(struct evbuffer *out, const char *name,
                        const char *help, const struct metrics_hist *h)
{
    return metrics_hist_write_labels(out, name, help, "", h);
}
