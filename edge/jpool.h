/* jpool.h - the edge's allocator for jansson: freed small blocks are kept
 * on free lists by size class and handed out again, so the JSON values of
 * every frame and envelope stop costing a malloc and a free each.
 *
 * Each block is an ordinary malloc'd one (the first time), so what jansson
 * hands out may still be given to free(), and valgrind's leak check still
 * sees a json_t that is never freed; what it no longer sees is a use after
 * free of a block back on a list. Builds with AddressSanitizer do not
 * install the pool (jpool_install does nothing). Needs glibc's
 * malloc_usable_size. */
#ifndef IMB_JPOOL_H
#define IMB_JPOOL_H

#include <stddef.h>
#include <stdint.h>

/* Make jansson allocate through the pool: call once, before any json_t
 * exists, in a process that uses jansson from one thread only. */
void jpool_install(void);

/* The pool's own functions (jpool_install hands them to jansson). */
void *jpool_malloc(size_t n);
void jpool_free(void *p);

/* Free the blocks kept on the lists (at exit, so a leak check is clean). */
void jpool_trim(void);

struct jpool_stats {
    uint64_t mallocs;   /* blocks asked of malloc */
    uint64_t reused;    /* blocks handed out again from a list */
    size_t kept_bytes;  /* bytes on the lists now */
};
void jpool_stats(struct jpool_stats *out);

#endif
