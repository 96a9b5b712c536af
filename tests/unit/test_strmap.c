/* test_strmap.c - common/strmap: the string-keyed hash map. */
#include "strmap.h"
#include "unit.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values are small integers disguised as pointers (never dereferenced). */
#define V(i) ((void *)(uintptr_t)(i))
#define I(p) ((long)(uintptr_t)(p))

TEST(strmap_empty)
{
    struct strmap m;
    strmap_init(&m);
    struct strmap_iter it;
    CHECK(strmap_get(&m, "x") == NULL);
    CHECK(strmap_del(&m, "x") == NULL);
    CHECK(strmap_first(&m, &it) == NULL);
    CHECK_EQ_INT(m.count, 0);
    strmap_free(&m);
    strmap_free(&m); /* twice is harmless: free leaves an empty map */
}

TEST(strmap_put_get_replace_del)
{
    struct strmap m;
    strmap_init(&m);
    CHECK(strmap_put(&m, "alice", V(1)) == NULL);
    CHECK(strmap_put(&m, "bob", V(2)) == NULL);
    CHECK(strmap_put(&m, "", V(3)) == NULL); /* the empty key is a key */
    CHECK_EQ_INT(m.count, 3);
    CHECK_EQ_INT(I(strmap_get(&m, "alice")), 1);
    CHECK_EQ_INT(I(strmap_get(&m, "bob")), 2);
    CHECK_EQ_INT(I(strmap_get(&m, "")), 3);
    CHECK(strmap_get(&m, "carol") == NULL);
    CHECK(strmap_get(&m, "alic") == NULL);
    CHECK(strmap_get(&m, "alicee") == NULL);
    CHECK(strmap_get(&m, "Alice") == NULL);

    /* Replace returns the old value and does not add an entry. */
    CHECK_EQ_INT(I(strmap_put(&m, "alice", V(10))), 1);
    CHECK_EQ_INT(I(strmap_get(&m, "alice")), 10);
    CHECK_EQ_INT(m.count, 3);

    CHECK_EQ_INT(I(strmap_del(&m, "alice")), 10);
    CHECK(strmap_get(&m, "alice") == NULL);
    CHECK(strmap_del(&m, "alice") == NULL);
    CHECK_EQ_INT(m.count, 2);
    CHECK_EQ_INT(I(strmap_get(&m, "bob")), 2);

    /* Re-inserting a deleted key works. */
    CHECK(strmap_put(&m, "alice", V(11)) == NULL);
    CHECK_EQ_INT(I(strmap_get(&m, "alice")), 11);
    CHECK_EQ_INT(m.count, 3);
    strmap_free(&m);
    CHECK_EQ_INT(m.count, 0);
    CHECK(strmap_get(&m, "bob") == NULL);
}

TEST(strmap_copies_keys)
{
    struct strmap m;
    strmap_init(&m);
    char key[32] = "alice@localhost";
    strmap_put(&m, key, V(1));
    strcpy(key, "mallory@evil");
    CHECK_EQ_INT(I(strmap_get(&m, "alice@localhost")), 1);
    CHECK(strmap_get(&m, "mallory@evil") == NULL);
    struct strmap_iter it;
    struct strmap_entry *e = strmap_first(&m, &it);
    CHECK(e && strcmp(e->key, "alice@localhost") == 0);
    strmap_free(&m);
}

#define MANY 50000

static void key_of(char *buf, size_t n, int i)
{
    snprintf(buf, n, "user%d@localhost", i);
}

TEST(strmap_growth)
{
    struct strmap m;
    strmap_init(&m);
    char k[64];
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        CHECK(strmap_put(&m, k, V(i + 1)) == NULL);
    }
    CHECK_EQ_INT(m.count, MANY);
    CHECK(m.nbuckets >= MANY / 2);                 /* it did grow */
    CHECK((m.nbuckets & (m.nbuckets - 1)) == 0);   /* a power of two */
    int wrong = 0;
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        wrong += I(strmap_get(&m, k)) != i + 1;
    }
    CHECK_EQ_INT(wrong, 0);

    /* Delete the even keys; the odd ones are untouched. */
    for (int i = 0; i < MANY; i += 2) {
        key_of(k, sizeof(k), i);
        wrong += I(strmap_del(&m, k)) != i + 1;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(m.count, MANY / 2);
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        void *v = strmap_get(&m, k);
        wrong += (i % 2) ? I(v) != i + 1 : v != NULL;
    }
    CHECK_EQ_INT(wrong, 0);
    strmap_free(&m);
}

/* Iterate m and count each key's visits in seen[] (keys from key_of). */
static size_t visit_all(const struct strmap *m, int *seen, int n)
{
    struct strmap_iter it;
    size_t visits = 0;
    for (struct strmap_entry *e = strmap_first(m, &it); e;
         e = strmap_next(m, &it)) {
        int i = -1;
        if (sscanf(e->key, "user%d@", &i) == 1 && i >= 0 && i < n)
            seen[i]++;
        visits++;
        CHECK_EQ_INT(I(e->value), i + 1);
    }
    return visits;
}

TEST(strmap_iterate_each_once)
{
    struct strmap m;
    strmap_init(&m);
    int *seen = calloc(MANY, sizeof(int));
    char k[64];
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        strmap_put(&m, k, V(i + 1));
    }
    CHECK_EQ_INT(visit_all(&m, seen, MANY), MANY);
    int bad = 0;
    for (int i = 0; i < MANY; i++)
        bad += seen[i] != 1;
    CHECK_EQ_INT(bad, 0);

    /* A single entry, and a map emptied again by deletes. */
    struct strmap one;
    strmap_init(&one);
    strmap_put(&one, "user7@x", V(8));
    memset(seen, 0, MANY * sizeof(int));
    CHECK_EQ_INT(visit_all(&one, seen, MANY), 1);
    CHECK_EQ_INT(seen[7], 1);
    strmap_del(&one, "user7@x");
    CHECK_EQ_INT(visit_all(&one, seen, MANY), 0);
    strmap_free(&one);
    strmap_free(&m);
    free(seen);
}

TEST(strmap_delete_during_iteration)
{
    struct strmap m;
    strmap_init(&m);
    char k[64];
    int n = 10000;
    for (int i = 0; i < n; i++) {
        key_of(k, sizeof(k), i);
        strmap_put(&m, k, V(i + 1));
    }
    /* Delete every third entry as it is visited. */
    int *seen = calloc((size_t)n, sizeof(int));
    struct strmap_iter it;
    size_t visits = 0;
    for (struct strmap_entry *e = strmap_first(&m, &it); e;
         e = strmap_next(&m, &it)) {
        int i = (int)I(e->value) - 1;
        if (i >= 0 && i < n)
            seen[i]++;
        visits++;
        if (i % 3 == 0)
            CHECK_EQ_INT(I(strmap_del(&m, e->key)), i + 1); /* e is gone now */
    }
    CHECK_EQ_INT(visits, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        bad += seen[i] != 1;
        key_of(k, sizeof(k), i);
        void *v = strmap_get(&m, k);
        bad += (i % 3 == 0) ? v != NULL : I(v) != i + 1;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(m.count, n - (n + 2) / 3);

    /* Delete everything during one pass: the map ends empty. */
    visits = 0;
    for (struct strmap_entry *e = strmap_first(&m, &it); e;
         e = strmap_next(&m, &it)) {
        visits++;
        strmap_del(&m, e->key);
    }
    CHECK_EQ_INT(visits, n - (n + 2) / 3);
    CHECK_EQ_INT(m.count, 0);
    CHECK(strmap_first(&m, &it) == NULL);
    strmap_free(&m);
    free(seen);
}

TEST(strmap_inline_values)
{
    struct strmap m;
    strmap_init(&m);
    struct rec { const char *key; long n; double d; } *r;
    const char *key = NULL;
    char jid[64];
    snprintf(jid, sizeof(jid), "alice@localhost");
    r = strmap_put_inline(&m, jid, sizeof(*r), &key);
    if (!CHECK(r != NULL))
        return;
    CHECK_EQ_STR(key, "alice@localhost");
    CHECK(key != jid);                      /* the map's copy */
    CHECK(r->n == 0 && r->key == NULL);      /* zeroed */
    CHECK((uintptr_t)r % _Alignof(max_align_t) == 0);
    r->key = key;
    r->n = 42;
    CHECK(strmap_get(&m, "alice@localhost") == r);
    /* Present already: refused, the first one kept. */
    const char *k2 = NULL;
    CHECK(strmap_put_inline(&m, "alice@localhost", sizeof(*r), &k2) == NULL);
    CHECK(((struct rec *)strmap_get(&m, "alice@localhost"))->n == 42);
    /* Many, with keys of every length, survive growth. */
    for (int i = 0; i < 500; i++) {
        char k[80];
        snprintf(k, sizeof(k), "%.*s%d", i % 60, "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu", i);
        struct rec *x = strmap_put_inline(&m, k, sizeof(*x), &key);
        if (!x)
            continue;
        x->key = key;
        x->n = i;
    }
    int ok = 0;
    for (int i = 0; i < 500; i++) {
        char k[80];
        snprintf(k, sizeof(k), "%.*s%d", i % 60, "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu", i);
        struct rec *x = strmap_get(&m, k);
        ok += x && x->n == i && strcmp(x->key, k) == 0;
    }
    CHECK_EQ_INT(ok, 500);
    /* Deleting by the entry's own key frees entry, key and value at once
     * (ASan and valgrind would see a double free or a leak). */
    CHECK(strmap_del(&m, r->key) == r);
    CHECK(strmap_get(&m, "alice@localhost") == NULL);
    strmap_free(&m);
}

TEST(strmap_intern_keeps_one_copy)
{
    struct strmap m;
    strmap_init(&m);
    char a[32], b[32];
    snprintf(a, sizeof(a), "worker-7");
    snprintf(b, sizeof(b), "worker-7");
    const char *x = strmap_intern(&m, a), *y = strmap_intern(&m, b);
    CHECK(x == y);
    CHECK(x != a && x != b);
    CHECK_EQ_STR(x, "worker-7");
    CHECK(strmap_intern(&m, "worker-8") != x);
    CHECK_EQ_INT(m.count, 2);
    strmap_free(&m);
}

int main(void)
{
    RUN(strmap_empty);
    RUN(strmap_put_get_replace_del);
    RUN(strmap_copies_keys);
    RUN(strmap_growth);
    RUN(strmap_iterate_each_once);
    RUN(strmap_delete_during_iteration);
    RUN(strmap_inline_values);
    RUN(strmap_intern_keeps_one_copy);
    return unit_done();
}
