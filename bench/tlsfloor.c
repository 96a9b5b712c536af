/* tlsfloor.c - what OpenSSL itself holds for one idle TLS connection.
 *
 * The edge's idle TLS phone costs what OpenSSL keeps per connection plus
 * the edge's own few hundred bytes. This program measures the first part
 * alone, with no event loop and no network: N server-side SSL objects
 * (the edge's settings: TLS 1.2+, SSL_MODE_RELEASE_BUFFERS, a P-256 or RSA
 * key from the given files) each finish a handshake with a client over a
 * Unix socket pair (a socket BIO, as the edge's), the clients are freed,
 * and the heap the servers still hold is divided by N (glibc's mallinfo2 "uordblks": bytes in use, which
 * RSS can only exceed).
 *
 *   tlsfloor CERT KEY [N]   ->  one JSON line
 *
 * Variants measured in the same run: as the edge sets it up; without
 * session tickets (SSL_OP_NO_TICKET: nothing to resume, smaller session);
 * and after SSL_free_buffers(). */
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static size_t heap_in_use(void)
{
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static bool want_io(SSL *ssl, int ret)
{
    int e = SSL_get_error(ssl, ret);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* Moves bytes both ways until both ends finished the handshake. */
static int handshake(SSL *srv, SSL *cli)
{
    for (int round = 0; round < 64; round++) {
        int a = SSL_do_handshake(cli), b = SSL_do_handshake(srv);
        if (a == 1 && b == 1) {
            /* TLS 1.3 tickets arrive after the handshake: let the client
             * read them, as a phone does with its first read. */
            char buf[64];
            SSL_read(cli, buf, sizeof(buf));
            return 0;
        }
        if (a != 1 && !want_io(cli, a))
            return -1;
        if (b != 1 && !want_io(srv, b))
            return -1;
    }
    return -1;
}

/* Heap bytes per idle server connection for one variant. */
static double per_conn(SSL_CTX *sctx, SSL_CTX *cctx, int n, int free_bufs)
{
    SSL **srv = calloc((size_t)n, sizeof(*srv));
    if (!srv)
        return -1;
    size_t before = heap_in_use();
    int ok = 0;
    for (int i = 0; i < n; i++) {
        SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
        int fds[2];
        if (!s || !c
            || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds)) {
            SSL_free(s);
            SSL_free(c);
            break;
        }
        SSL_set_fd(s, fds[0]);
        SSL_set_fd(c, fds[1]);
        SSL_set_accept_state(s);
        SSL_set_connect_state(c);
        if (handshake(s, c) == 0) {
            if (free_bufs)
                SSL_free_buffers(s);
            srv[ok++] = s;
        } else {
            SSL_free(s);
        }
        SSL_free(c);
        close(fds[1]);
    }
    size_t after = heap_in_use();
    for (int i = 0; i < ok; i++) {
        close(SSL_get_fd(srv[i]));
        SSL_free(srv[i]);
    }
    free(srv);
    if (ok < n) {
        fprintf(stderr, "tlsfloor: %d of %d handshakes done\n", ok, n);
        ERR_print_errors_fp(stderr);
        return -1;
    }
    return (double)(after - before) / n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tlsfloor CERT KEY [N]\n");
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx
        || SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1
        || SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);

    per_conn(sctx, cctx, 50, 0); /* warm up OpenSSL's lazy globals */
    double as_edge = per_conn(sctx, cctx, n, 0);
    double freed = per_conn(sctx, cctx, n, 1);
    SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
    double no_ticket = per_conn(sctx, cctx, n, 1);
    printf("{\"n\":%d,\"openssl\":\"%s\",\"bytes_per_conn\":%.0f,"
           "\"bytes_per_conn_buffers_freed\":%.0f,"
           "\"bytes_per_conn_no_ticket\":%.0f}\n",
           n, OpenSSL_version(OPENSSL_VERSION), as_edge, freed, no_ticket);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return as_edge < 0 || freed < 0 || no_ticket < 0;
}
