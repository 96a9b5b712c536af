/* util.h - allocation that aborts on OOM, clocks and small helpers shared by every module. */
#ifndef IMB_UTIL_H
#define IMB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocation wrappers: they never return NULL (the process aborts on OOM, as
 * Redis' zmalloc does); a chat relay that cannot allocate cannot do anything
 * useful either, and checking every call site would hide the real logic. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Milliseconds on CLOCK_MONOTONIC: for timeouts and latency. */
int64_t util_mono_ms(void);
/* Milliseconds since the Unix epoch: for timestamps that cross processes. */
int64_t util_wall_ms(void);

/* Fill buf with n bytes from the kernel's CSPRNG. Aborts if it cannot. */
void util_random(void *buf, size_t n);
/* A random lowercase hex id of 2*nbytes characters into out (size >= 2*nbytes+1). */
void util_random_hex(char *out, size_t nbytes);

/* The event loop every process runs: libevent's default, with epoll's
 * changelist, so that the changes of one loop turn to a socket's events are
 * one epoll_ctl at the turn's end (hiredis's adapter deletes and adds its
 * event for every change; the bus writes its commands within the turn, so
 * most of those changes cancel out). libevent retries a change as an add
 * when the socket was closed and its number reused within the turn; no
 * process here dup()s a socket, the changelist's one caveat. */
struct event_base;
struct event_base *util_event_base(void);

/* The strings up to a NULL, joined into out (size n > 0): false when they
 * did not fit (out then holds as much as fits), as snprintf("%s%s...")
 * would say, without printf's machinery (keys and channel names are made
 * for every message). */
bool util_cat(char *out, size_t n, ...);

/* v in decimal into out (at least UTIL_I64_MAX bytes), NUL-terminated:
 * its length. */
#define UTIL_I64_MAX 21
size_t util_i64(char *out, int64_t v);

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
