/* strmap.c - string-keyed hash map: FNV-1a, chaining, doubles at load 1. */
#include "strmap.h"
#include "util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void strmap_init(struct strmap *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

void strmap_free(struct strmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct strmap_entry *e = m->buckets[i];
        while (e) {
            struct strmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    strmap_init(m);
}

static struct strmap_entry **find(const struct strmap *m, const char *key,
                                  unsigned h)
{
    if (m->nbuckets == 0)
        return NULL;
    struct strmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0)
            return pp;
    return pp;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_entry **pp = find(m, key, hash_str(key));
    return pp && *pp ? (*pp)->value : NULL;
}

static void grow(struct strmap *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    struct strmap_entry **b = xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct strmap_entry *e = m->buckets[i];
        while (e) {
            struct strmap_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

/* A new entry for an absent key (hash h), with extra bytes of value
 * storage after the key, aligned for any type (zeroed). */
static struct strmap_entry *add(struct strmap *m, const char *key, unsigned h,
                                size_t extra, void **storage)
{
    if (m->count >= m->nbuckets)
        grow(m);
    size_t klen = strlen(key);
    size_t align = _Alignof(max_align_t);
    size_t off = (sizeof(struct strmap_entry) + klen + 1 + align - 1) / align * align;
    struct strmap_entry *e = xmalloc(extra ? off + extra : sizeof(*e) + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = NULL;
    if (extra) {
        *storage = (char *)e + off;
        memset(*storage, 0, extra);
    }
    size_t b = h & (m->nbuckets - 1);
    e->next = m->buckets[b];
    m->buckets[b] = e;
    m->count++;
    return e;
}

void *strmap_put(struct strmap *m, const char *key, void *value)
{
    unsigned h = hash_str(key);
    struct strmap_entry **pp = find(m, key, h);
    if (pp && *pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        return old;
    }
    add(m, key, h, 0, NULL)->value = value;
    return NULL;
}

void *strmap_put_inline(struct strmap *m, const char *key, size_t size,
                        const char **stored_key)
{
    unsigned h = hash_str(key);
    struct strmap_entry **pp = find(m, key, h);
    if (pp && *pp)
        return NULL;
    void *storage = NULL;
    struct strmap_entry *e = add(m, key, h, size ? size : 1, &storage);
    e->value = storage;
    *stored_key = e->key;
    return storage;
}

const char *strmap_intern(struct strmap *m, const char *key)
{
    unsigned h = hash_str(key);
    struct strmap_entry **pp = find(m, key, h);
    if (pp && *pp)
        return (*pp)->key;
    return add(m, key, h, 0, NULL)->key;
}

void *strmap_del(struct strmap *m, const char *key)
{
    struct strmap_entry **pp = find(m, key, hash_str(key));
    if (!pp || !*pp)
        return NULL;
    struct strmap_entry *e = *pp;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

static struct strmap_entry *advance(const struct strmap *m,
                                    struct strmap_iter *it)
{
    while (!it->next && it->bucket < m->nbuckets)
        it->next = m->buckets[it->bucket++];
    struct strmap_entry *e = it->next;
    if (e)
        it->next = e->next;
    return e;
}

struct strmap_entry *strmap_first(const struct strmap *m, struct strmap_iter *it)
{
    it->bucket = 0;
    it->next = NULL;
    return advance(m, it);
}

struct strmap_entry *strmap_next(const struct strmap *m, struct strmap_iter *it)
{
    return advance(m, it);
}
