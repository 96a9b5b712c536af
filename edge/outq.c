/* outq.c - per-turn output arena and per-socket refused bytes (outq.h). */
#include "outq.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* A record's header in the arena; its bytes follow. */
struct outq_rec {
    uint32_t next; /* offset + 1 of the next record of the same queue, 0: last */
    uint32_t len;  /* bytes that follow */
};

#define REC_ALIGN 8
#define IOV_BATCH 64
/* An arena that grew past this for a burst is freed at its reset. */
#define ARENA_KEEP (1u << 20)

static size_t rec_off(const struct outq_arena *a)
{
    return (a->len + REC_ALIGN - 1) & ~(size_t)(REC_ALIGN - 1);
}

static struct outq_rec *rec_at(const struct outq_arena *a, uint32_t off1)
{
    return (struct outq_rec *)(void *)(a->buf + off1 - 1);
}

char *outq_reserve(struct outq_arena *a, size_t n, size_t *room)
{
    size_t need = rec_off(a) + sizeof(struct outq_rec) + n;
    if (need > UINT32_MAX - 1)
        abort(); /* a turn's output past 4 GiB: max_output bounds it long before */
    if (need > a->cap) {
        size_t cap = a->cap ? a->cap : 16384;
        while (cap < need)
            cap *= 2;
        a->buf = xrealloc(a->buf, cap);
        a->cap = cap;
    }
    *room = a->cap - rec_off(a) - sizeof(struct outq_rec);
    return a->buf + rec_off(a) + sizeof(struct outq_rec);
}

/* Append len bytes to q's own buffer. */
static void own_append(struct outq *q, const char *p, size_t len)
{
    if (q->own_off > 0 && q->own_len + len > q->own_cap) {
        memmove(q->own, q->own + q->own_off, q->own_len - q->own_off);
        q->own_len -= q->own_off;
        q->own_off = 0;
    }
    if (q->own_len + len > q->own_cap) {
        size_t cap = q->own_cap ? q->own_cap : 4096;
        while (cap < q->own_len + len)
            cap *= 2;
        q->own = xrealloc(q->own, cap);
        q->own_cap = cap;
    }
    memcpy(q->own + q->own_len, p, len);
    q->own_len += len;
}

bool outq_pending_own(const struct outq *q)
{
    return q->own != NULL;
}

bool outq_has_records(const struct outq *q)
{
    return q->head != 0;
}

void outq_commit(struct outq_arena *a, struct outq *q, size_t len)
{
    size_t off = rec_off(a);
    char *bytes = a->buf + off + sizeof(struct outq_rec);
    q->queued += len;
    if (outq_pending_own(q)) {
        /* Behind bytes the kernel refused: after them, in order. */
        own_append(q, bytes, len);
        return;
    }
    struct outq_rec *r = (struct outq_rec *)(void *)(a->buf + off);
    r->next = 0;
    r->len = (uint32_t)len;
    uint32_t off1 = (uint32_t)off + 1;
    if (q->tail)
        rec_at(a, q->tail)->next = off1;
    else
        q->head = off1;
    q->tail = off1;
    a->len = off + sizeof(struct outq_rec) + len;
}

/* Copy into q's own buffer the records from off1 on, skipping the first
 * skip bytes (already written). */
static void keep_rest(struct outq_arena *a, struct outq *q, uint32_t off1, size_t skip)
{
    for (; off1; off1 = rec_at(a, off1)->next) {
        struct outq_rec *r = rec_at(a, off1);
        if (skip >= r->len) {
            skip -= r->len;
            continue;
        }
        own_append(q, (const char *)(r + 1) + skip, r->len - skip);
        skip = 0;
    }
}

int outq_flush(struct outq_arena *a, struct outq *q, int fd)
{
    uint32_t off1 = q->head;
    q->head = q->tail = 0;
    while (off1) {
        struct iovec iov[IOV_BATCH];
        int n = 0;
        size_t want = 0;
        uint32_t next = off1;
        for (; next && n < IOV_BATCH; next = rec_at(a, next)->next) {
            struct outq_rec *r = rec_at(a, next);
            iov[n].iov_base = r + 1;
            iov[n].iov_len = r->len;
            want += r->len;
            n++;
        }
        ssize_t w = n == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len) : writev(fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        size_t done = w < 0 ? 0 : (size_t)w;
        q->queued -= done;
        if (done < want) {
            keep_rest(a, q, off1, done);
            return 0;
        }
        off1 = next;
    }
    return 0;
}

int outq_write_own(struct outq *q, int fd)
{
    while (q->own && q->own_off < q->own_len) {
        ssize_t w = write(fd, q->own + q->own_off, q->own_len - q->own_off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        q->own_off += (size_t)w;
        q->queued -= (size_t)w;
    }
    if (q->own && q->own_off == q->own_len) {
        free(q->own);
        q->own = NULL;
        q->own_off = q->own_len = q->own_cap = 0;
    }
    return 0;
}

void outq_drop(struct outq *q)
{
    free(q->own);
    memset(q, 0, sizeof(*q));
}

void outq_arena_reset(struct outq_arena *a)
{
    a->len = 0;
    if (a->cap > ARENA_KEEP)
        outq_arena_free(a);
}

void outq_arena_free(struct outq_arena *a)
{
    free(a->buf);
    a->buf = NULL;
    a->len = a->cap = 0;
}
