/* test_outq.c - edge/outq: the per-turn output arena and what a socket
 * keeps of the bytes the kernel refused, over real socketpairs. */
#include "../../edge/outq.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("socketpair");
        exit(1);
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
}

static void queue(struct outq_arena *a, struct outq *q, const char *s, size_t n)
{
    size_t room;
    char *p = outq_reserve(a, n, &room);
    memcpy(p, s, n);
    outq_commit(a, q, n);
}

/* Read what is there (non-blocking) into buf; returns the byte count. */
static size_t drain(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

TEST(outq_two_sockets_interleaved)
{
    /* Frames of two sockets interleaved in one arena: each gets its own,
     * in order, and nothing is left pending. */
    int s1[2], s2[2];
    pair(s1);
    pair(s2);
    struct outq_arena a = {0};
    struct outq q1 = {0}, q2 = {0};
    queue(&a, &q1, "one", 3);
    queue(&a, &q2, "ABC", 3);
    queue(&a, &q1, "two", 3);
    queue(&a, &q2, "DEFGH", 5);
    queue(&a, &q1, "three", 5);
    CHECK_EQ_INT(q1.queued, 11);
    CHECK(outq_has_records(&q1));
    CHECK_EQ_INT(outq_flush(&a, &q1, s1[0]), 0);
    CHECK_EQ_INT(outq_flush(&a, &q2, s2[0]), 0);
    CHECK(!outq_has_records(&q1) && !outq_pending_own(&q1) && q1.queued == 0);
    CHECK(!outq_pending_own(&q2) && q2.queued == 0);
    char buf[64];
    size_t n = drain(s1[1], buf, sizeof(buf));
    CHECK_EQ_INT(n, 11);
    CHECK(memcmp(buf, "onetwothree", 11) == 0);
    n = drain(s2[1], buf, sizeof(buf));
    CHECK_EQ_INT(n, 8);
    CHECK(memcmp(buf, "ABCDEFGH", 8) == 0);
    outq_arena_reset(&a);
    CHECK_EQ_INT(a.len, 0);
    outq_arena_free(&a);
    close(s1[0]), close(s1[1]), close(s2[0]), close(s2[1]);
}

TEST(outq_refused_bytes_kept_in_order)
{
    /* A peer that does not read: the kernel takes part, the rest is kept;
     * frames queued meanwhile go after it; once the peer reads, everything
     * arrives in order and the socket's own buffer is freed. */
    int sv[2];
    pair(sv);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    struct outq_arena a = {0};
    struct outq q = {0};
    enum { FRAME = 1000, FRAMES = 600 };
    char frame[FRAME];
    for (int i = 0; i < FRAMES; i++) {
        memset(frame, 'a' + i % 26, sizeof(frame));
        queue(&a, &q, frame, sizeof(frame));
    }
    CHECK_EQ_INT(outq_flush(&a, &q, sv[0]), 0);
    outq_arena_reset(&a);
    CHECK(outq_pending_own(&q));
    CHECK(q.queued > 0 && q.queued < (size_t)FRAME * FRAMES);
    /* Queued while bytes are refused: behind them. */
    queue(&a, &q, "END", 3);
    CHECK(!outq_has_records(&q));
    outq_arena_reset(&a);

    size_t total = (size_t)FRAME * FRAMES + 3, got = 0;
    char *all = malloc(total);
    for (int spins = 0; got < total && spins < 100000; spins++) {
        got += drain(sv[1], all + got, total - got);
        CHECK_EQ_INT(outq_write_own(&q, sv[0]), 0);
    }
    got += drain(sv[1], all + got, total - got);
    CHECK_EQ_INT(got, total);
    CHECK(!outq_pending_own(&q) && q.queued == 0 && q.own == NULL);
    bool ordered = true;
    for (int i = 0; i < FRAMES && ordered; i++)
        for (int j = 0; j < FRAME; j++)
            if (all[(size_t)i * FRAME + (size_t)j] != 'a' + i % 26) {
                ordered = false;
                break;
            }
    CHECK(ordered);
    CHECK(memcmp(all + total - 3, "END", 3) == 0);
    free(all);
    outq_arena_free(&a);
    close(sv[0]), close(sv[1]);
}

TEST(outq_write_error_and_drop)
{
    /* A closed peer: flush reports the error; drop forgets everything. */
    int sv[2];
    pair(sv);
    close(sv[1]);
    struct outq_arena a = {0};
    struct outq q = {0};
    queue(&a, &q, "lost", 4);
    int rc = outq_flush(&a, &q, sv[0]);
    CHECK_EQ_INT(rc, -1);
    CHECK(errno == EPIPE || errno == ECONNRESET);
    outq_drop(&q);
    CHECK(q.queued == 0 && q.own == NULL && !outq_has_records(&q));
    outq_arena_free(&a);
    close(sv[0]);
}

TEST(outq_arena_grows_and_is_given_back)
{
    /* A burst bigger than the arena's megabyte keep: the records survive
     * the arena's growth (offsets, not pointers), and the reset frees it. */
    int sv[2];
    pair(sv);
    int big = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    struct outq_arena a = {0};
    struct outq q = {0};
    static char chunk[100000];
    for (int i = 0; i < 15; i++) {
        memset(chunk, 'A' + i, sizeof(chunk));
        queue(&a, &q, chunk, sizeof(chunk));
    }
    CHECK(a.cap > (1u << 20));
    CHECK_EQ_INT(outq_flush(&a, &q, sv[0]), 0);
    outq_arena_reset(&a);
    CHECK(a.buf == NULL && a.cap == 0);
    size_t total = sizeof(chunk) * 15, got = 0;
    char *all = malloc(total);
    for (int spins = 0; got < total && spins < 100000; spins++) {
        got += drain(sv[1], all + got, total - got);
        outq_write_own(&q, sv[0]);
    }
    CHECK_EQ_INT(got, total);
    CHECK(all[0] == 'A' && all[total - 1] == 'A' + 14 &&
          all[sizeof(chunk) * 7] == 'A' + 7);
    free(all);
    outq_drop(&q);
    close(sv[0]), close(sv[1]);
}

int main(void)
{
    /* Writes to a closed peer must fail with EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    RUN(outq_two_sockets_interleaved);
    RUN(outq_refused_bytes_kept_in_order);
    RUN(outq_write_error_and_drop);
    RUN(outq_arena_grows_and_is_given_back);
    return unit_done();
}
