/* metrics.c - the edge's /healthz and /metrics (Prometheus text format). */
#include "bus.h"
#include "config.h"
#include "edge.h"
#include "httpd.h"
#include "log.h"
#include "throttle.h"
#include "workers.h"

#include <stdio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

/* The bus heartbeat went round Redis within this: the real path works. */
#define HEALTH_HEARTBEAT_MS 5000

static bool health(void *owner, char *reason, size_t n)
{
    struct edge *edge = owner;
    int64_t age = bus_heartbeat_age_ms(edge->bus);
    if (edge->draining) {
        snprintf(reason, n, "draining");
        return false;
    }
    if (age < 0) {
        snprintf(reason, n, "redis unreachable");
        return false;
    }
    if (age > HEALTH_HEARTBEAT_MS) {
        snprintf(reason, n, "no publish->receive round trip through redis for %lld ms",
                 (long long)age);
        return false;
    }
    if (workers_count(edge->workers) == 0) {
        snprintf(reason, n, "no live xmppd worker");
        return false;
    }
    return true;
}

static void metrics(void *owner, struct evbuffer *out)
{
    struct edge *edge = owner;
    const struct edge_stats *s = &edge->stats;
    size_t ready = 0, pending = 0, closing = 0, queued = 0;
    struct strmap_iter it;
    for (struct strmap_entry *e = strmap_first(&edge->conns, &it); e;
         e = strmap_next(&edge->conns, &it)) {
        const struct conn *c = e->value;
        queued += c->out.queued;
        if (c->bev)
            queued += evbuffer_get_length(bufferevent_get_output(c->bev));
        if (c->state == CONN_READY)
            ready++;
        else if (c->state != CONN_CLOSING)
            pending++;
        else
            closing++;
    }
    char build[160];
    snprintf(build, sizeof(build), "service=\"edge\",version=\"%s\"", config_release());
    metrics_gauge(out, "imb_build_info", "The running release (VERSION), always 1.", build, 1);
    metrics_gauge(out, "imb_edge_connections", "Phone sockets by state.",
                  "state=\"ready\"", (double)ready);
    metrics_gauge(out, "imb_edge_connections", NULL, "state=\"login\"", (double)pending);
    metrics_gauge(out, "imb_edge_connections", NULL, "state=\"closing\"", (double)closing);
    metrics_gauge(out, "imb_edge_max_connections",
                  "max_conns in force (clamped to the descriptor limit).", "",
                  (double)edge->cfg->max_conns);
    metrics_gauge(out, "imb_edge_output_queued_bytes",
                  "Bytes queued to phones and not yet written, all sockets.", "",
                  (double)queued);
    metrics_gauge(out, "imb_edge_users", "Users with a socket on this edge.", "",
                  (double)edge->users.count);
    metrics_counter(out, "imb_edge_connections_accepted_total", "Sockets accepted.", "",
                    s->conns_accepted);
    metrics_counter(out, "imb_edge_connections_rejected_total",
                    "Sockets refused (limits, draining).", "", s->conns_rejected);
    /* The same family as xmppd's (which says why a login failed, per worker). */
    metrics_counter(out, "imb_logins_total", "Phone logins answered, by result.",
                    "result=\"ok\"", s->logins_ok);
    metrics_counter(out, "imb_logins_total", NULL, "result=\"failed\"", s->logins_failed);
    metrics_counter(out, "imb_edge_messages_total", "Chat messages by direction.",
                    "direction=\"from_phone\"", s->msgs_in);
    metrics_counter(out, "imb_edge_messages_total", NULL, "direction=\"to_phone\"", s->msgs_out);
    metrics_counter(out, "imb_edge_feature_frames_total",
                    "Requests from phones and events to them (PROTOCOL.md section 10).",
                    "direction=\"from_phone\"", s->reqs_in);
    metrics_counter(out, "imb_edge_feature_frames_total", NULL, "direction=\"to_phone\"",
                    s->events_out);
    metrics_counter(out, "imb_edge_acks_total", "Acks sent to phones.", "", s->acks);
    metrics_counter(out, "imb_edge_replayed_total", "Messages replayed from the inbox.", "",
                    s->replayed);
    metrics_counter(out, "imb_edge_gaps_total", "Sequence gaps filled from the inbox.", "",
                    s->gaps);
    metrics_counter(out, "imb_edge_relogins_total", "Sessions re-opened on another worker.",
                    "", s->relogins);
    metrics_counter(out, "imb_edge_rate_limited_total", "Chat and request frames refused by the rate limit.",
                    "", s->rate_limited);
    metrics_counter(out, "imb_edge_numbering_resets_total",
                    "Phones told their numbering is void (sync with reset).", "", s->resets);
    metrics_counter(out, "imb_edge_logins_throttled_total",
                    "Logins refused by the failed-login throttle, by the count over its limit.",
                    "reason=\"ip\"", s->logins_throttled[THROTTLE_IP]);
    metrics_counter(out, "imb_edge_logins_throttled_total", NULL, "reason=\"account\"",
                    s->logins_throttled[THROTTLE_ACCOUNT]);
    metrics_counter(out, "imb_edge_logins_throttled_total", NULL, "reason=\"device\"",
                    s->logins_throttled[THROTTLE_DEVICE]);
    metrics_counter(out, "imb_edge_token_logins_total",
                    "Logins judged on a valid device token (not the address or account counts).",
                    "", s->token_logins);
    metrics_counter(out, "imb_edge_throttle_open_total",
                    "Throttle checks passed unchecked because Redis did not answer.", "",
                    s->throttle_open);
    metrics_counter(out, "imb_edge_slow_readers_total", "Phones cut for not reading.", "",
                    s->slow_readers);
    metrics_counter(out, "imb_edge_frames_fitted_total",
                    "Frames to phones longer than max_frame, cut or split to fit.", "",
                    s->frames_fitted);
    metrics_counter(out, "imb_edge_accept_failures_total",
                    "accept() failures (out of descriptors or memory): the listener backs off.",
                    "", s->accept_failures);
    metrics_counter(out, "imb_edge_closes_forced_total",
                    "Closing sockets freed unflushed after the flush timeout.", "",
                    s->closes_forced);
    metrics_counter(out, "imb_edge_bad_frames_total", "Malformed frames from phones.", "",
                    s->bad_frames);
    metrics_counter(out, "imb_edge_bad_envelopes_total", "Envelopes that failed validation.",
                    "", s->bad_envelopes);
    const struct bus_stats *b = bus_stats(edge->bus);
    metrics_counter(out, "imb_bus_published_total", "PUBLISH that reached a subscriber.", "",
                    b->published);
    metrics_counter(out, "imb_bus_publish_missed_total", "PUBLISH that reached nobody.", "",
                    b->publish_missed);
    metrics_counter(out, "imb_bus_publish_failed_total", "PUBLISH without a reply.", "",
                    b->publish_failed);
    metrics_counter(out, "imb_bus_received_total", "Envelopes received.", "", b->received);
    metrics_counter(out, "imb_bus_reconnects_total", "Redis reconnects.", "", b->reconnects);
    metrics_counter(out, "imb_bus_redirects_total",
                    "Redis Cluster MOVED and ASK answers followed.", "", b->redirects);
    metrics_counter(out, "imb_bus_topology_changes_total",
                    "Redis Cluster slot maps read that differed from the last.", "",
                    b->topology_changes);
    metrics_gauge(out, "imb_bus_up", "Every Redis link up.", "", bus_up(edge->bus) ? 1 : 0);
    metrics_gauge(out, "imb_bus_roundtrip_seconds",
                  "Last heartbeat round trip through Redis.", "",
                  (double)b->last_roundtrip_ms / 1000.0);
    metrics_gauge(out, "imb_edge_workers", "Live xmppd workers known.", "",
                  (double)workers_count(edge->workers));
    metrics_hist_write(out, "imb_envelope_latency_seconds",
                       "Age of envelopes from the bus on arrival (publish to receive).",
                       edge->latency);
}

bool edge_metrics_start(struct edge *edge, char *err, size_t errlen)
{
    const char *listen = edge->cfg->common.http_listen;
    if (!*listen)
        return true;
    edge->httpd = httpd_new(edge->base, listen, health, metrics, edge, err, errlen);
    if (!edge->httpd)
        return false;
    char addr[80];
    if (httpd_addr(edge->httpd, addr, sizeof(addr)))
        LOG(INFO, "http_serving", "addr=%s", addr);
    return true;
}
