/* outq.h - what the edge writes to plaintext sockets: frames gathered in
 * one shared arena during a loop turn, then written with one writev per
 * socket; only the bytes the kernel refused are copied to a buffer of the
 * socket's own, which lives until they are written.
 *
 *   char *p = outq_reserve(&arena, n, &room); // room >= n bytes at p
 *   ... write a frame of len <= room bytes at p ...
 *   outq_commit(&arena, &q, len);        // queued on q
 *   ... at the end of the turn, for each socket with frames:
 *   outq_flush(&arena, &q, fd);          // writev; the rest goes to q's own
 *   outq_arena_reset(&arena);            // once every queue is flushed
 *
 * No events: the caller arms EV_WRITE while outq_pending_own() is true and
 * calls outq_write_own() when the socket is writable. */
#ifndef IMB_OUTQ_H
#define IMB_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One per edge. Records are [struct outq_rec][bytes], 8-byte aligned;
 * offsets, not pointers, link them, since the buffer may move as it grows. */
struct outq_arena {
    char *buf;     /* malloc'd, or NULL before the first frame */
    size_t len;    /* bytes used this turn */
    size_t cap;    /* bytes allocated */
};

/* One per socket; all zero when nothing is queued. */
struct outq {
    uint32_t head, tail; /* arena offsets + 1 of the first and last record
                            queued this turn; 0: none */
    size_t queued;       /* bytes queued and not yet written: the records'
                            and own's */
    char *own;           /* bytes the kernel refused, malloc'd; NULL when
                            none are left: an idle socket owns no buffer */
    size_t own_off;      /* own[own_off, own_len) is still to be written */
    size_t own_len, own_cap;
};

/* Room for at least n bytes at the arena's end (the arena grows as
 * needed); *room gets how many there are. The pointer is good until the
 * next outq_reserve or outq_arena_reset. */
char *outq_reserve(struct outq_arena *a, size_t n, size_t *room);

/* Queue on q the len bytes just written at the pointer outq_reserve gave
 * (len <= its room). If q still owns refused bytes, these go after them in
 * its own buffer, so the order is kept. */
void outq_commit(struct outq_arena *a, struct outq *q, size_t len);

/* Bytes in q's records this turn (not its own buffer). */
bool outq_has_records(const struct outq *q);
/* q owns bytes the kernel refused: wait for EV_WRITE. */
bool outq_pending_own(const struct outq *q);

/* Write q's records of this turn with writev (one call per 64 records).
 * What the kernel does not take is copied into q's own buffer. Returns 0,
 * or -1 with errno set on a write error other than EAGAIN/EINTR (the
 * caller drops the queue). */
int outq_flush(struct outq_arena *a, struct outq *q, int fd);

/* Write q's own buffer (EV_WRITE came). Returns 0 (the own buffer may
 * still hold bytes: check outq_pending_own) or -1 with errno set on a
 * write error. The buffer is freed once empty. */
int outq_write_own(struct outq *q, int fd);

/* Forget everything queued on q and free its own buffer. */
void outq_drop(struct outq *q);

/* Every queue's records were flushed or dropped: reuse the arena. A
 * buffer that grew past a megabyte for a burst is given back. */
void outq_arena_reset(struct outq_arena *a);
void outq_arena_free(struct outq_arena *a);

#endif
