/* imb_client_event.h - an optional adapter that runs an imb_client on a
 * libevent event_base: it opens the connections the client asks for (plain
 * TCP, or TLS with OpenSSL verifying the peer's certificate and host name),
 * feeds it bytes and a monotonic clock, writes its output and runs its
 * timers. The app gets the same events (opts.on_event), CONNECT and
 * DISCONNECT included, after the adapter has acted on them.
 *
 *     struct imb_client_ev *ev = imb_client_ev_new(base, &opts, NULL, err, sizeof err);
 *     imb_client_ev_start(ev);
 *     event_base_dispatch(base);
 *     ...
 *     imb_client_send_msg(imb_client_ev_client(ev), "bob@example.com", "hi", false, NULL, NULL, NULL, 0);
 *     imb_client_ev_flush(ev);   // after calling the client yourself
 */
#ifndef IMB_CLIENT_EVENT_H
#define IMB_CLIENT_EVENT_H

#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "imb_client.h"

#ifdef __cplusplus
extern "C" {
#endif

struct imb_client_ev;

/* An adapter and its client on base. opts as for imb_client_new; on_event
 * (required) gets every event. TLS edges are verified against cafile (PEM;
 * NULL: the system's trust store). NULL with the reason in err. */
struct imb_client_ev *imb_client_ev_new(struct event_base *base, const struct imb_client_opts *opts,
                                        const char *cafile, char *err, size_t errlen);
/* Close the connection and free adapter and client (not from inside on_event:
 * stop the loop there, free after). */
void imb_client_ev_free(struct imb_client_ev *ev);

/* The client, for the send/state functions of imb_client.h. */
struct imb_client *imb_client_ev_client(struct imb_client_ev *ev);
/* Begin connecting (imb_client_start). */
void imb_client_ev_start(struct imb_client_ev *ev);
/* Write what the client has to send and re-arm its timer: call after calling
 * the client yourself outside on_event (in on_event it is done for you). */
void imb_client_ev_flush(struct imb_client_ev *ev);
/* Why the last connection failed or closed (a socket or TLS error, e.g.
 * "certificate verify failed"), "" if none. */
const char *imb_client_ev_last_error(const struct imb_client_ev *ev);
/* Bytes written to the connection but not yet sent (0 without one): an app
 * feeding the client faster than the link drains can pause at a threshold. */
size_t imb_client_ev_backlog(const struct imb_client_ev *ev);
/* Milliseconds of the monotonic clock the adapter gives the client. */
int64_t imb_client_ev_now(void);

#ifdef __cplusplus
}
#endif

#endif
