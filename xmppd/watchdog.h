/* watchdog.h - a thread that unfreezes a worker stuck inside libstrophe.
 *
 * libstrophe's TLS handshake loops without an overall timeout: a server
 * that stalls after <proceed/> would freeze the worker's only thread, and
 * with it every other session of the worker. The watchdog watches how long
 * the current libstrophe pass has run; past the limit it shuts down the
 * sockets of sessions still connecting, which makes the handshake fail and
 * the pass return. Only shutdown(2) crosses threads; nothing else is shared
 * but atomics. */
#ifndef IMB_WATCHDOG_H
#define IMB_WATCHDOG_H

#include <stdbool.h>
#include <stdint.h>

/* Start the thread; stall_ms is how long one pass may take. */
bool watchdog_start(int64_t stall_ms);
void watchdog_stop(void);
/* Around each xmpp_run_once. */
void watchdog_enter(void);
void watchdog_leave(void);
/* Sockets of sessions that are connecting (TCP, TLS, SASL): fair game. */
void watchdog_track(int fd);
void watchdog_untrack(int fd);

#endif
