/* util.h - allocation that aborts on OOM, clocks and small helpers shared by every module. */
#ifndef IMB_UTIL_H
#define IMB_UTIL_H

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

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
