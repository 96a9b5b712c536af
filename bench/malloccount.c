/* bench/malloccount.c - an LD_PRELOAD shim that counts a process's calls to
 * malloc, calloc, realloc and free (the "cost" section of make bench).
 *
 *   MALLOCCOUNT_DIR=/some/dir LD_PRELOAD=build/bench/malloccount.so prog ...
 *
 * Each process (and each child it forks) keeps its counters in a file of its
 * own, "<MALLOCCOUNT_DIR>/<pid>.cnt", mapped shared: the bench reads the file
 * whenever it likes (before and after a counted run), with no signal and no
 * thread in the process measured. Layout: eight little-endian uint64, in the
 * order of enum slot below; slot 0 is a magic number.
 *
 * Calls go on to the next definition (dlsym(RTLD_NEXT)): glibc's. dlsym may
 * itself allocate (its error buffer) before the real calloc is known: those
 * few bytes come from a static buffer and are never freed to libc.
 * posix_memalign, aligned_alloc and memalign are not counted (none of the
 * services' hot paths use them); free() of NULL is not counted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum slot { S_MAGIC, S_MALLOC, S_CALLOC, S_REALLOC, S_FREE, S_BYTES, S_PID, S_NSLOTS };
#define MAGIC 0x746e636f6c6c616dULL /* "malloccnt" */
#define FILE_SIZE 4096

static uint64_t fallback[S_NSLOTS]; /* until the file is mapped, or without one */
static uint64_t *counters = fallback;

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

/* For allocations made while dlsym looks the real functions up. */
static _Alignas(16) char boot[8192];
static size_t boot_used;
static int resolving;

static void *boot_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (boot_used + n > sizeof(boot))
        return NULL;
    void *p = boot + boot_used;
    boot_used += n;
    return p;
}

static int from_boot(const void *p)
{
    return (const char *)p >= boot && (const char *)p < boot + sizeof(boot);
}

static void resolve(void)
{
    if (real_free || resolving)
        return;
    resolving = 1;
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    resolving = 0;
}

static inline void count(enum slot s, uint64_t n)
{
    __atomic_fetch_add(&counters[s], n, __ATOMIC_RELAXED);
}

/* Map "<dir>/<pid>.cnt" and move the counts so far into it. */
static void map_file(void)
{
    const char *dir = getenv("MALLOCCOUNT_DIR");
    uint64_t *old = counters;
    counters = fallback;
    if (!dir || !*dir)
        return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%ld.cnt", dir, (long)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    void *m = MAP_FAILED;
    if (ftruncate(fd, FILE_SIZE) == 0)
        m = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return;
    uint64_t *c = m;
    /* A forked child starts from zero; the first process keeps what it
     * counted before the constructor ran. */
    if (old == fallback)
        for (int i = 1; i < S_NSLOTS; i++)
            c[i] = fallback[i];
    memset(fallback, 0, sizeof(fallback));
    c[S_PID] = (uint64_t)getpid();
    c[S_MAGIC] = MAGIC;
    counters = c;
}

static void after_fork_child(void)
{
    /* The parent's mapping is shared with the child: leave it alone and
     * count this process in a file of its own. */
    counters = fallback;
    memset(fallback, 0, sizeof(fallback));
    map_file();
}

__attribute__((constructor)) static void init(void)
{
    resolve();
    map_file();
    pthread_atfork(NULL, NULL, after_fork_child);
}

void *malloc(size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return boot_alloc(n);
    }
    count(S_MALLOC, 1);
    count(S_BYTES, n);
    return real_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    if (!real_calloc) {
        resolve();
        if (!real_calloc) {
            if (n && k > SIZE_MAX / n)
                return NULL;
            return boot_alloc(k * n); /* static: already zero */
        }
    }
    count(S_CALLOC, 1);
    count(S_BYTES, k * n);
    return real_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    if (from_boot(p)) {
        void *q = malloc(n);
        if (q)
            memcpy(q, p, n < 64 ? n : 64); /* boot blocks are tiny */
        return q;
    }
    if (!real_realloc) {
        resolve();
        if (!real_realloc)
            return NULL;
    }
    count(S_REALLOC, 1);
    count(S_BYTES, n);
    return real_realloc(p, n);
}

void free(void *p)
{
    if (!p || from_boot(p))
        return;
    if (!real_free)
        resolve();
    count(S_FREE, 1);
    real_free(p);
}
