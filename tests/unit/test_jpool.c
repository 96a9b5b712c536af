/* test_jpool.c - common/jpool: jansson's values and libstrophe's stanzas
 * from size-class free lists. */
#include "jpool.h"
#include "unit.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

TEST(jpool_reuses_freed_blocks)
{
    struct jpool_stats a, b;
    jpool_stats(&a);
    /* 24 bytes: what glibc gives a request of up to 24, and what an
     * allocator that gives exactly the request (ASan's, valgrind's) gives
     * a request of 24; a freed block is filed by what it holds. */
    void *p = jpool_malloc(24);
    memset(p, 1, 24);
    jpool_free(p);
    void *q = jpool_malloc(20); /* the same class: the same block */
    CHECK(q == p);
    memset(q, 2, 20);
    jpool_stats(&b);
    CHECK_EQ_INT(b.reused - a.reused, 1);
    jpool_free(q);
    /* A bigger request is not served from a smaller class. */
    void *r = jpool_malloc(200);
    CHECK(r != p);
    memset(r, 3, 200);
    jpool_free(r);
    /* Past the classes: plain malloc and free, never kept. */
    jpool_stats(&a);
    void *big = jpool_malloc(100000);
    memset(big, 4, 100000);
    jpool_free(big);
    jpool_stats(&b);
    CHECK_EQ_INT(b.kept_bytes, a.kept_bytes);
    jpool_free(NULL);
    jpool_trim();
    jpool_stats(&b);
    CHECK_EQ_INT(b.kept_bytes, 0);
}

TEST(jpool_under_jansson)
{
    /* Installed (does nothing under ASan): decoding and encoding the same
     * frame again asks malloc for nothing new but the string json_dumps
     * returns, which may still be given to free(). */
    jpool_install();
    const char *frame = "{\"t\":\"msg\",\"id\":\"m1\",\"to\":\"bob@localhost\",\"body\":\"hi there\"}";
    json_t *o = json_loads(frame, 0, NULL);
    CHECK(o != NULL);
    free(json_dumps(o, JSON_COMPACT));
    json_decref(o);
    struct jpool_stats a, b;
    jpool_stats(&a);
    o = json_loads(frame, 0, NULL);
    CHECK(o && json_is_object(o));
    CHECK_EQ_STR(json_string_value(json_object_get(o, "body")), "hi there");
    char *s = json_dumps(o, JSON_COMPACT);
    CHECK(s != NULL);
    free(s);
    json_decref(o);
    jpool_stats(&b);
#if !defined(__SANITIZE_ADDRESS__)
    /* (The string given to free() does not come back to the lists.) */
    CHECK(b.mallocs - a.mallocs <= 1);
    CHECK(b.reused > a.reused);
#endif
    jpool_trim();
}

TEST(jpool_blocks_cost_what_malloc_would)
{
    /* Fresh from malloc: the very size a plain malloc gives. Reused: a
     * block from the list of that size, never a smaller one. */
    jpool_trim();
    /* (glibc's chunk geometry: 24 usable bytes for 1 asked; ASan's and
     * valgrind's allocators give exactly what is asked, and the pool then
     * asks for its class's size.) */
    void *probe = malloc(1);
    bool glibc = malloc_usable_size(probe) == 24;
    free(probe);
    int fresh_bigger = 0, reused_short = 0;
    for (size_t n = 0; n <= 600; n++) {
        void *a = malloc(n ? n : 1);
        void *b = jpool_malloc(n);
        if (malloc_usable_size(b) > malloc_usable_size(a))
            fresh_bigger++;
        free(a);
        jpool_free(b);
        void *c = jpool_malloc(n);
        if (malloc_usable_size(c) < n)
            reused_short++;
        memset(c, 5, n);
        jpool_free(c);
    }
    if (glibc)
        CHECK_EQ_INT(fresh_bigger, 0);
    CHECK_EQ_INT(reused_short, 0);
    jpool_trim();
}

TEST(jpool_realloc_keeps_the_bytes)
{
    char *p = jpool_realloc(NULL, 24);
    memcpy(p, "0123456789", 10);
    char *q = jpool_realloc(p, 20); /* fits the block it has: the same */
    CHECK(q == p);
    char *r = jpool_realloc(q, 300); /* another class */
    CHECK(memcmp(r, "0123456789", 10) == 0);
    char *big = jpool_realloc(r, 5000); /* past the classes */
    CHECK(memcmp(big, "0123456789", 10) == 0);
    char *back = jpool_realloc(big, 20); /* never shrinks: the same */
    CHECK(back == big);
    jpool_free(back);
    jpool_trim();
}

TEST(jpool_realloc_wipes_a_secret)
{
    /* While a secret is decoded (jpool_secret: a login's password), a block
     * that grows past the classes (yajl's buffer of decoded strings, for a
     * long escaped password) is copied and the old one wiped and kept,
     * never handed to realloc, which would leave the old copy as it was in
     * freed memory. */
    jpool_trim();
    char *p = jpool_malloc(300);
    memset(p, 'S', 300);
    jpool_secret(true);
    char *q = jpool_realloc(p, 5000);
    jpool_secret(false);
    CHECK(q != p);
    CHECK(q[0] == 'S' && q[299] == 'S');
    /* The old block is back on its class's list, wiped past the link the
     * list keeps in its first bytes: the next request of the class gets it. */
    char *r = jpool_malloc(300);
    CHECK(r == p);
    size_t nonzero = 0;
    for (size_t i = sizeof(void *); i < 300; i++)
        nonzero += r[i] != 0;
    CHECK_EQ_INT(nonzero, 0);
    jpool_free(q);
    jpool_free(r);
    jpool_trim();
}

int main(void)
{
    RUN(jpool_reuses_freed_blocks);
    RUN(jpool_under_jansson);
    RUN(jpool_blocks_cost_what_malloc_would);
    RUN(jpool_realloc_keeps_the_bytes);
    RUN(jpool_realloc_wipes_a_secret);
    return unit_done();
}
