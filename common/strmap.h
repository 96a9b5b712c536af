/* strmap.h - a string-keyed hash map (chained, power-of-two buckets).
 * Keys are copied and owned by the map; values are borrowed pointers. */
#ifndef IMB_STRMAP_H
#define IMB_STRMAP_H

#include <stddef.h>

struct strmap_entry {
    struct strmap_entry *next; /* bucket chain */
    void *value;               /* borrowed: the map never frees it */
    unsigned hash;
    char key[];                /* NUL-terminated, owned */
};

struct strmap {
    struct strmap_entry **buckets;
    size_t nbuckets; /* power of two, or 0 before the first insert */
    size_t count;
};

void strmap_init(struct strmap *m);
/* Frees the map's own memory, not the values. */
void strmap_free(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Insert or replace; returns the previous value or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Remove; returns the removed value or NULL. */
void *strmap_del(struct strmap *m, const char *key);

/* Iteration: for (e = strmap_first(m, &it); e; e = strmap_next(m, &it)).
 * Deleting the current entry during iteration is allowed. */
struct strmap_iter {
    size_t bucket;
    struct strmap_entry *next;
};
struct strmap_entry *strmap_first(const struct strmap *m, struct strmap_iter *it);
struct strmap_entry *strmap_next(const struct strmap *m, struct strmap_iter *it);

#endif
