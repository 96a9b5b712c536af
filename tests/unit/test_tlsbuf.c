/* test_tlsbuf.c - xmppd/tlsbuf: every SSL object the process creates,
 * libstrophe's included, releases its record buffers while idle. */
#include "unit.h"

#include <dlfcn.h>
#include <string.h>

#include <openssl/ssl.h>

TEST(tlsbuf_ssl_new_sets_release_buffers)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!CHECK(ctx != NULL))
        return;
    SSL *ssl = SSL_new(ctx);
    if (CHECK(ssl != NULL)) {
        CHECK(SSL_get_mode(ssl) & SSL_MODE_RELEASE_BUFFERS);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
}

TEST(tlsbuf_is_the_ssl_new_libraries_bind_to)
{
    /* What a shared library (libstrophe) gets when it looks SSL_new up:
     * the global definition, which must be ours, not libssl's. */
    void *global = dlsym(RTLD_DEFAULT, "SSL_new");
    void *libssl = dlsym(RTLD_NEXT, "SSL_new");
    SSL *(*ours)(SSL_CTX *) = SSL_new;
    void *ours_p;
    memcpy(&ours_p, &ours, sizeof(ours_p));
    CHECK(global != NULL);
    CHECK(global == ours_p);
    CHECK(libssl != NULL && libssl != ours_p);
}

int main(void)
{
    RUN(tlsbuf_ssl_new_sets_release_buffers);
    RUN(tlsbuf_is_the_ssl_new_libraries_bind_to);
    return unit_done();
}
