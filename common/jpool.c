/* jpool.c - size-class free lists under jansson and libstrophe (jpool.h). */
#include "jpool.h"
#include "jparse.h"
#include "util.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Classes follow glibc's own chunk sizes, so a pooled block costs exactly
 * what the same malloc would: a request of n bytes gets a chunk whose
 * usable size is 24, 40, 56, ... (16 k + 8) bytes. Class c holds blocks
 * with at least 16 c + 8 usable bytes; requests of up to CLASS_MAX bytes
 * are served from the lists, larger ones go straight to malloc and free.
 * No header: a block is a plain malloc'd one, filed by malloc_usable_size
 * when freed, so a string jansson or libstrophe returns may still be given
 * to free() by its caller, and free() may be handed to the pool. */
#define CLASS_STEP 16
#define CLASS_MAX 520
#define CLASSES ((CLASS_MAX - 8) / CLASS_STEP + 1) /* [0]: 8 usable, unused */
/* Bytes kept on all the lists at most: past it a freed block is freed. */
#define KEEP_MAX (4u << 20)

/* A kept block's first bytes hold the link to the next. */
struct kept {
    struct kept *next;
};

static struct kept *lists[CLASSES]; /* [c]: blocks of >= 16 c + 8 bytes */
static struct jpool_stats stats;

/* The class whose blocks fit n bytes: glibc's usable size for n. */
static size_t class_for(size_t n)
{
    return n <= 24 ? 1 : (n - 8 + CLASS_STEP - 1) / CLASS_STEP;
}

static size_t class_bytes(size_t cls)
{
    return cls * CLASS_STEP + 8;
}

void *jpool_malloc(size_t n)
{
    size_t cls = class_for(n);
    if (cls < CLASSES && lists[cls]) {
        struct kept *k = lists[cls];
        lists[cls] = k->next;
        stats.kept_bytes -= class_bytes(cls);
        stats.reused++;
        return k;
    }
    stats.mallocs++;
    /* The class's size: with glibc the same chunk as malloc(n), and with an
     * allocator that gives exactly what is asked (ASan's, valgrind's) a
     * block that still goes back to its class. */
    return xmalloc(cls < CLASSES ? class_bytes(cls) : n);
}

static bool secret; /* jpool_secret */

void jpool_secret(bool on)
{
    secret = on;
}

void jpool_free(void *p)
{
    if (!p)
        return;
    size_t usable = malloc_usable_size(p);
    if (secret)
        explicit_bzero(p, usable);
    size_t cls = usable < 8 ? 0 : (usable - 8) / CLASS_STEP;
    if (cls == 0 || cls >= CLASSES || stats.kept_bytes + class_bytes(cls) > KEEP_MAX) {
        free(p);
        return;
    }
    struct kept *k = p;
    k->next = lists[cls];
    lists[cls] = k;
    stats.kept_bytes += class_bytes(cls);
}

void *jpool_realloc(void *p, size_t n)
{
    if (!p)
        return jpool_malloc(n);
    size_t usable = malloc_usable_size(p);
    if (n <= usable)
        return p;
    /* No list involved; but realloc would leave the old copy of a secret
     * (yajl grows its buffer of decoded strings) as it was. */
    if (!secret && (usable > CLASS_MAX || n > CLASS_MAX))
        return xrealloc(p, n);
    void *q = jpool_malloc(n);
    memcpy(q, p, usable);
    jpool_free(p);
    return q;
}

void jpool_trim(void)
{
    for (size_t i = 0; i < CLASSES; i++) {
        while (lists[i]) {
            struct kept *k = lists[i];
            lists[i] = k->next;
            free(k);
        }
    }
    stats.kept_bytes = 0;
}

void jpool_stats(struct jpool_stats *out)
{
    *out = stats;
}

#if defined(__SANITIZE_ADDRESS__)
#define JPOOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JPOOL_OFF 1
#endif
#endif

bool jpool_on(void)
{
#ifdef JPOOL_OFF
    return false;
#else
    return true;
#endif
}

void jpool_install(void)
{
    if (jpool_on()) {
        json_set_alloc_funcs(jpool_malloc, jpool_free);
        jparse_set_alloc(jpool_malloc, jpool_realloc, jpool_free);
    }
}
