/* tlsbuf.c - idle TLS links to the XMPP server give their buffers back.
 *
 * An OpenSSL connection keeps a read and a write record buffer of about
 * 16 KiB each for as long as it lives: 33 KB of the ~78 KB an XMPP session
 * over TLS cost, although a session is idle almost all the time. OpenSSL
 * frees them between records with SSL_MODE_RELEASE_BUFFERS, but libstrophe
 * 0.12 creates its SSL objects itself and has no hook to set a mode on them.
 *
 * So xmppd defines SSL_new itself. libstrophe's call resolves to this one
 * (the executable comes first in symbol lookup), which calls OpenSSL's own
 * and sets the mode on the new object. Nothing else changes: the mode only
 * decides when OpenSSL allocates the buffers. */
#include <dlfcn.h>
#include <stddef.h>

#include <openssl/ssl.h>

typedef SSL *ssl_new_fn(SSL_CTX *ctx);

SSL *SSL_new(SSL_CTX *ctx)
{
    static ssl_new_fn *openssl_new;
    if (!openssl_new) {
        /* (POSIX's way to turn dlsym's void * into a function pointer.) */
        *(void **)&openssl_new = dlsym(RTLD_NEXT, "SSL_new");
        if (!openssl_new)
            return NULL;
    }
    SSL *ssl = openssl_new(ctx);
    if (ssl)
        SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    return ssl;
}
