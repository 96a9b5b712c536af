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

/* Insert an absent key with size bytes of zeroed value storage in the
 * entry's own allocation (aligned for any type): the storage becomes the
 * value and is returned; *stored_key gets the map's copy of the key, which
 * lives as long as the entry. One allocation holds entry, key and value,
 * so strmap_del and strmap_free free the storage: never free() it. Returns
 * NULL if the key is present. */
void *strmap_put_inline(struct strmap *m, const char *key, size_t size,
                        const char **stored_key);

/* The map's copy of key, added (value NULL) if absent: a string kept once
 * however often it is interned, until strmap_free. */
const char *strmap_intern(struct strmap *m, const char *key);

/* Iteration: for (e = strmap_first(m, &it); e; e = strmap_next(m, &it)).
 * Deleting the current entry during iteration is allowed. */
struct strmap_iter {
    size_t bucket;
    struct strmap_entry *next;
};
struct strmap_entry *strmap_first(const struct strmap *m, struct strmap_iter *it);
struct strmap_entry *strmap_next(const struct strmap *m, struct strmap_iter *it);

#endif
