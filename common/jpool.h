/* jpool.h - the services' allocator for jansson (edge, xmppd) and
 * libstrophe (xmppd): freed small blocks are kept on free lists by size
 * class and handed out again, so the JSON values of every frame and
 * envelope, and the stanza trees of every XMPP message, stop costing a
 * malloc and a free each. A block costs what the same malloc would (the
 * classes are glibc's chunk sizes).
 *
 * Each block is an ordinary malloc'd one (the first time), so what jansson
 * hands out may still be given to free(), and valgrind's leak check still
 * sees a json_t that is never freed; what it no longer sees is a use after
 * free of a block back on a list. Builds with AddressSanitizer do not
 * install the pool (jpool_install does nothing). Needs glibc's
 * malloc_usable_size. */
#ifndef IMB_JPOOL_H
#define IMB_JPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Make jansson allocate through the pool: call once, before any json_t
 * exists, in a process that uses jansson from one thread only. */
void jpool_install(void);

/* Whether the pool is used (false in AddressSanitizer builds, where a
 * block's reuse would hide a use after free): a library given the pool's
 * functions by hand (libstrophe's xmpp_mem_t) gets them only then. */
bool jpool_on(void);

/* The pool's own functions (jpool_install hands them to jansson). realloc
 * keeps the block when it already has room. */
void *jpool_malloc(size_t n);
void jpool_free(void *p);
void *jpool_realloc(void *p, size_t n);

/* While on, every block freed through the pool is overwritten first: the
 * edge turns it on around a frame that may carry a password, whose text
 * jansson copies into blocks it then frees (its parser's buffers, the
 * string values). (Without the pool, in AddressSanitizer builds, jansson
 * frees with free() and nothing is overwritten.) */
void jpool_secret(bool on);

/* Free the blocks kept on the lists (at exit, so a leak check is clean). */
void jpool_trim(void);

struct jpool_stats {
    uint64_t mallocs;   /* blocks asked of malloc */
    uint64_t reused;    /* blocks handed out again from a list */
    size_t kept_bytes;  /* bytes on the lists now */
};
void jpool_stats(struct jpool_stats *out);

#endif
