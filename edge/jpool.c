/* jpool.c - size-class free lists under jansson (jpool.h). */
#include "jpool.h"
#include "util.h"

#include <malloc.h>
#include <stdlib.h>

#include <jansson.h>

/* Requests of up to CLASS_MAX bytes are rounded up to CLASS_STEP; larger
 * ones go straight to malloc and free. No header: a block is a plain
 * malloc'd one, filed by malloc_usable_size when freed, so a string jansson
 * returns (json_dumps) may still be given to free() by its caller. */
#define CLASS_STEP 16
#define CLASS_MAX 512
#define CLASSES (CLASS_MAX / CLASS_STEP + 1) /* [0] unused */
/* Bytes kept on all the lists at most: past it a freed block is freed. */
#define KEEP_MAX (4u << 20)

/* A kept block's first bytes hold the link to the next. */
struct kept {
    struct kept *next;
};

static struct kept *lists[CLASSES]; /* [c]: blocks of >= c * CLASS_STEP bytes */
static struct jpool_stats stats;

void *jpool_malloc(size_t n)
{
    size_t cls = n == 0 ? 1 : (n + CLASS_STEP - 1) / CLASS_STEP;
    if (cls < CLASSES && lists[cls]) {
        struct kept *k = lists[cls];
        lists[cls] = k->next;
        stats.kept_bytes -= cls * CLASS_STEP;
        stats.reused++;
        return k;
    }
    stats.mallocs++;
    return xmalloc(cls < CLASSES ? cls * CLASS_STEP : n);
}

void jpool_free(void *p)
{
    if (!p)
        return;
    size_t cls = malloc_usable_size(p) / CLASS_STEP;
    if (cls == 0 || cls >= CLASSES || stats.kept_bytes + cls * CLASS_STEP > KEEP_MAX) {
        free(p);
        return;
    }
    struct kept *k = p;
    k->next = lists[cls];
    lists[cls] = k;
    stats.kept_bytes += cls * CLASS_STEP;
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

void jpool_install(void)
{
#ifndef JPOOL_OFF
    json_set_alloc_funcs(jpool_malloc, jpool_free);
#endif
}
