/* metrics.c - the bridge's /healthz and /metrics, served by the supervisor
 * from the reports its workers write into shared memory every second. */
#include "config.h"
#include "httpd.h"
#include "log.h"
#include "util.h"
#include "xmppd.h"

#include <stdio.h>

#include <event2/buffer.h>

/* A worker whose report is older than this is stuck or dead. */
#define REPORT_STALE_MS 5000
#define HEALTH_HEARTBEAT_MS 5000

static bool health(void *owner, char *reason, size_t n)
{
    struct supervisor *sv = owner;
    if (sv->stopping) {
        snprintf(reason, n, "stopping");
        return false;
    }
    int64_t now = util_mono_ms();
    for (int i = 0; i < sv->n; i++) {
        const struct worker_report *r = &sv->reports[i];
        if (sv->kids[i].pid <= 0 || r->updated_ms == 0 ||
            now - r->updated_ms > REPORT_STALE_MS) {
            snprintf(reason, n, "worker %d not reporting", i);
            return false;
        }
        if (!r->bus_up || r->heartbeat_age_ms < 0 ||
            r->heartbeat_age_ms > HEALTH_HEARTBEAT_MS) {
            snprintf(reason, n, "worker %s: no publish->receive round trip through redis", r->id);
            return false;
        }
        if (!r->xmpp_ok) {
            snprintf(reason, n, "worker %s: XMPP server unreachable", r->id);
            return false;
        }
    }
    return true;
}

#define PER_WORKER(kind, name, help, field)                                      \
    for (int i = 0; i < sv->n; i++) {                                            \
        char l[96];                                                              \
        snprintf(l, sizeof(l), "worker=\"%d\"", i);                              \
        metrics_##kind(out, name, i == 0 ? help : NULL, l, sv->reports[i].field); \
    }

static void metrics(void *owner, struct evbuffer *out)
{
    struct supervisor *sv = owner;
    char build[160];
    snprintf(build, sizeof(build), "service=\"xmppd\",version=\"%s\"", config_release());
    metrics_gauge(out, "imb_build_info", "The running release (VERSION), always 1.", build, 1);
    PER_WORKER(gauge, "imb_xmppd_sessions", "XMPP sessions held, per worker.",
               sessions)
    for (int i = 0; i < sv->n; i++) {
        char l[96];
        snprintf(l, sizeof(l), "worker=\"%d\"", i);
        metrics_gauge(out, "imb_xmppd_max_sessions",
                      i == 0 ? "XMPP sessions a worker holds at most (max_sessions)." : NULL,
                      l, (double)sv->cfg->max_sessions);
    }
    PER_WORKER(gauge, "imb_xmppd_worker_bus_up", "Both Redis links up.", bus_up)
    PER_WORKER(gauge, "imb_xmppd_worker_xmpp_ok", "XMPP server reachable.", xmpp_ok)
    /* The edge's family, with why a login failed: auth_failed (the XMPP
     * server refused the password), unavailable (it could not be reached). */
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < sv->n; i++) {
            static const char *const results[3] = {"ok", "auth_failed", "unavailable"};
            const struct worker_stats *st = &sv->reports[i].stats;
            uint64_t v = r == 0 ? st->logins_ok : r == 1 ? st->logins_auth_failed
                                                         : st->logins_unavailable;
            char l[96];
            snprintf(l, sizeof(l), "worker=\"%d\",result=\"%s\"", i, results[r]);
            metrics_counter(out, "imb_logins_total",
                            r == 0 && i == 0 ? "Logins answered, by result." : NULL, l, v);
        }
    PER_WORKER(counter, "imb_xmppd_logins_reused_total",
               "Logins that reused an open session (counted in result=ok too).",
               stats.logins_reused)
    PER_WORKER(counter, "imb_xmppd_messages_to_xmpp_total", "Chat stanzas sent.",
               stats.msgs_to_xmpp)
    PER_WORKER(counter, "imb_xmppd_messages_from_xmpp_total", "Chat stanzas received.",
               stats.msgs_from_xmpp)
    PER_WORKER(counter, "imb_xmppd_acks_total", "Client ids acked after the server had them.",
               stats.acks)
    PER_WORKER(counter, "imb_xmppd_pings_total",
               "Pings sent to prove phones' messages reached the XMPP server.",
               stats.pings)
    PER_WORKER(counter, "imb_xmppd_duplicates_total", "Resent client ids not sent again.",
               stats.dup_msgs)
    PER_WORKER(counter, "imb_xmppd_delivery_retries_total",
               "Messages for phones kept while Redis was away.", stats.delivery_retries)
    PER_WORKER(counter, "imb_xmppd_delivery_fenced_total",
               "Messages for phones refused: another worker holds the user (fencing).",
               stats.delivery_fenced)
    PER_WORKER(counter, "imb_xmppd_handed_over_total",
               "Refused messages handed to the worker that owns the user.", stats.handed_over)
    PER_WORKER(counter, "imb_xmppd_taken_over_total",
               "Messages handed over by another worker and stored here.", stats.taken_over)
    PER_WORKER(counter, "imb_xmppd_relayed_total",
               "Envelopes for a user held by another worker, passed on to it.", stats.relayed)
    PER_WORKER(counter, "imb_xmppd_numbering_lost_total",
               "Users whose numbering Redis lost while a session stored for them.",
               stats.numbering_lost)
    PER_WORKER(counter, "imb_xmppd_leases_lost_total",
               "Sessions that found another worker holding their user, and stepped down.",
               stats.leases_lost)
    PER_WORKER(counter, "imb_xmppd_deferred_total",
               "Envelopes held until a renewal confirmed the session's lease.",
               stats.deferred)
    PER_WORKER(gauge, "imb_xmppd_parsers_asleep",
               "Idle sessions whose XML parser is freed until their next read.",
               parsers_asleep)
    PER_WORKER(gauge, "imb_xmppd_delivery_queued",
               "Messages for phones waiting for Redis to store them (queue depth; "
               "dropped past 100000).", redeliver_queued)
    PER_WORKER(counter, "imb_xmppd_delivery_dropped_total",
               "Messages for phones dropped (retry queue full).", stats.delivery_dropped)
    PER_WORKER(counter, "imb_xmppd_bad_envelopes_total", "Envelopes that failed validation.",
               stats.bad_envelopes)
    PER_WORKER(counter, "imb_xmppd_bad_stanzas_total", "Stanzas that failed validation.",
               stats.bad_stanzas)
    PER_WORKER(counter, "imb_xmppd_requests_total", "Phone requests served (presence, roster, rooms...).",
               stats.requests)
    PER_WORKER(counter, "imb_xmppd_events_total", "Event frames sent to phones.",
               stats.events)
    PER_WORKER(counter, "imb_xmppd_receipts_sent_total",
               "Delivery receipts sent once a phone acked.", stats.receipts_sent)
    PER_WORKER(gauge, "imb_xmppd_push_component_up",
               "This worker holds the push component (one in the deployment does).", push_up)
    PER_WORKER(counter, "imb_xmppd_push_total",
               "Push envelopes for messages that found no phone connected.", stats.pushes)
    /* The filter's verdicts, by direction and reason (masked ones passed). */
    for (int d = 0; d < 2; d++)
        for (int r = FR_MASKED; r < FILTER_REASONS; r++)
            for (int i = 0; i < sv->n; i++) {
                char l[128];
                snprintf(l, sizeof(l), "worker=\"%d\",direction=\"%s\",reason=\"%s\"", i,
                         d == FILTER_OUT ? "out" : "in", filter_reason_name((enum filter_reason)r));
                metrics_counter(out, "imb_xmppd_filtered_total",
                                d == 0 && r == FR_MASKED && i == 0
                                    ? "Messages the filter masked or refused."
                                    : NULL,
                                l, sv->reports[i].stats.filtered[d][r]);
            }
    PER_WORKER(counter, "imb_bus_published_total", "PUBLISH that reached a subscriber.",
               bus.published)
    PER_WORKER(counter, "imb_bus_publish_missed_total", "PUBLISH that reached nobody.",
               bus.publish_missed)
    PER_WORKER(counter, "imb_bus_publish_failed_total", "PUBLISH without a reply.",
               bus.publish_failed)
    PER_WORKER(counter, "imb_bus_owed_resent_total",
               "Resends of answers (acks, login answers, errors) that reached nobody.",
               bus.owed_resent)
    PER_WORKER(counter, "imb_bus_owed_undelivered_total",
               "Answers given up on after WORKER_OWED_MS of resends.", bus.owed_undelivered)
    PER_WORKER(counter, "imb_bus_reconnects_total", "Redis reconnects.", bus.reconnects)
    PER_WORKER(counter, "imb_bus_redirects_total",
               "Redis Cluster MOVED and ASK answers followed.", bus.redirects)
    PER_WORKER(counter, "imb_bus_topology_changes_total",
               "Redis Cluster slot maps read that differed from the last.", bus.topology_changes)
    PER_WORKER(gauge, "imb_bus_roundtrip_seconds", "Last heartbeat round trip through Redis.",
               bus.last_roundtrip_ms / 1000.0)
    for (int i = 0; i < sv->n; i++) {
        char l[96];
        snprintf(l, sizeof(l), "worker=\"%d\"", i);
        metrics_hist_write_labels(out, "imb_envelope_latency_seconds",
                                  i == 0 ? "Age of envelopes from the bus on arrival." : NULL,
                                  l, &sv->reports[i].latency);
    }
    uint64_t restarts = 0;
    for (int i = 0; i < sv->n; i++)
        restarts += (uint64_t)sv->kids[i].generation;
    metrics_counter(out, "imb_xmppd_worker_restarts_total", "Workers restarted after dying.",
                    "", restarts);
}

bool bridge_metrics_start(struct supervisor *sv, char *err, size_t errlen)
{
    const char *listen = sv->cfg->common.http_listen;
    if (!*listen)
        return true;
    sv->httpd = httpd_new(sv->base, listen, health, metrics, sv, err, errlen);
    if (!sv->httpd)
        return false;
    char addr[80];
    if (httpd_addr(sv->httpd, addr, sizeof(addr)))
        LOG(INFO, "http_serving", "addr=%s", addr);
    return true;
}
