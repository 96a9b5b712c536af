/* tlsfloor_gnutls.c - what GnuTLS holds for one idle TLS connection, the
 * same measure as tlsfloor.c makes of OpenSSL: is another TLS library in
 * Debian a way to a smaller idle TLS phone? N server sessions (Debian's
 * default priorities, the given key and certificate) each finish a
 * handshake with a client over a Unix socket pair and exchange a byte each
 * way, the clients are freed, and the heap the servers still hold
 * (mallinfo2 "uordblks") is divided by N.
 *
 *   make build/bench/tlsfloor-gnutls   (needs libgnutls28-dev; not part of
 *                                       `make bench`)
 *   tlsfloor-gnutls CERT KEY [N]   ->  one JSON line */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

static size_t heap_in_use(void)
{
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static gnutls_session_t session(unsigned flags, gnutls_certificate_credentials_t cred,
                                int fd)
{
    gnutls_session_t s;
    if (gnutls_init(&s, flags | GNUTLS_NONBLOCK) < 0)
        return NULL;
    gnutls_set_default_priority(s);
    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_transport_set_int(s, fd);
    return s;
}

/* A server session that finished its handshake with a (freed) client. */
static gnutls_session_t idle_server(gnutls_certificate_credentials_t sc,
                                    gnutls_certificate_credentials_t cc, int *fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return NULL;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    gnutls_session_t s = session(GNUTLS_SERVER, sc, sv[0]);
    gnutls_session_t c = session(GNUTLS_CLIENT, cc, sv[1]);
    int a = -1, b = -1;
    for (int round = 0; round < 100 && (a != 0 || b != 0); round++) {
        if (a != 0)
            a = gnutls_handshake(c);
        if (b != 0)
            b = gnutls_handshake(s);
        if ((a < 0 && gnutls_error_is_fatal(a)) || (b < 0 && gnutls_error_is_fatal(b)))
            break;
    }
    char buf[64];
    gnutls_record_send(s, "x", 1);
    gnutls_record_recv(c, buf, sizeof(buf));
    gnutls_record_send(c, "y", 1);
    gnutls_record_recv(s, buf, sizeof(buf));
    gnutls_deinit(c);
    close(sv[1]);
    if (a != 0 || b != 0) {
        gnutls_deinit(s);
        close(sv[0]);
        return NULL;
    }
    *fd = sv[0];
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tlsfloor-gnutls CERT KEY [N]\n");
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    gnutls_certificate_credentials_t sc, cc;
    if (gnutls_global_init() < 0 || gnutls_certificate_allocate_credentials(&sc) < 0 ||
        gnutls_certificate_allocate_credentials(&cc) < 0 ||
        gnutls_certificate_set_x509_key_file(sc, argv[1], argv[2], GNUTLS_X509_FMT_PEM) < 0) {
        fprintf(stderr, "tlsfloor-gnutls: cannot load %s / %s\n", argv[1], argv[2]);
        return 1;
    }
    gnutls_session_t *srv = calloc((size_t)n, sizeof(*srv));
    int *fds = calloc((size_t)n, sizeof(*fds));
    int fd;
    gnutls_session_t warm = idle_server(sc, cc, &fd); /* (first-use allocations) */
    if (!warm || !srv || !fds) {
        fprintf(stderr, "tlsfloor-gnutls: handshake failed\n");
        return 1;
    }
    gnutls_deinit(warm);
    close(fd);
    size_t before = heap_in_use();
    for (int i = 0; i < n; i++)
        if (!(srv[i] = idle_server(sc, cc, &fds[i]))) {
            fprintf(stderr, "tlsfloor-gnutls: handshake %d failed\n", i);
            return 1;
        }
    size_t after = heap_in_use();
    printf("{\"library\":\"GnuTLS %s\",\"n\":%d,\"bytes_per_conn\":%.0f}\n",
           gnutls_check_version(NULL), n, (double)(after - before) / n);
    for (int i = 0; i < n; i++) {
        gnutls_deinit(srv[i]);
        close(fds[i]);
    }
    free(srv);
    free(fds);
    gnutls_certificate_free_credentials(sc);
    gnutls_certificate_free_credentials(cc);
    gnutls_global_deinit();
    return 0;
}
