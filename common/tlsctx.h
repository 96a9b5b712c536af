/* tlsctx.h - OpenSSL contexts for the phone link: the edge's server side and
 * the phone client's verifying client side. One SSL_CTX per process, shared
 * by every connection. */
#ifndef IMB_TLSCTX_H
#define IMB_TLSCTX_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* A server context from PEM files (the certificate file may hold the
 * chain). TLS 1.2 at least; buffers are released on idle connections.
 * NULL with a reason in err. */
SSL_CTX *tlsctx_server(const char *cert_file, const char *key_file, char *err,
                       size_t errlen);

/* A client context that verifies the peer against cafile (or the system
 * store when cafile is NULL or ""). */
SSL_CTX *tlsctx_client(const char *cafile, char *err, size_t errlen);

/* A client SSL object for host: SNI and name (or IP address) checking. */
SSL *tlsctx_client_ssl(SSL_CTX *ctx, const char *host);

#endif
