/* keys.c - the names of one user's (one address's, one device's) Redis keys,
 * with Redis Cluster's hash tag (see keys.h). */
#include "keys.h"
#include "bus.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

bool keys_format(char *out, size_t n, const char *prefix, const char *kind,
                 const char *id)
{
    if (n == 0)
        return false;
    if (!util_cat(out, n, prefix, ":", kind, ":{", (char *)NULL))
        goto fail;
    size_t k = strlen(out);
    for (const char *p = id; *p; p++) {
        const char *esc = *p == '{' ? "%7B" : *p == '}' ? "%7D" : *p == '%' ? "%25" : NULL;
        size_t len = esc ? 3 : 1;
        if (k + len + 2 > n) /* and '}' and NUL */
            goto fail;
        memcpy(out + k, esc ? esc : p, len);
        k += len;
    }
    out[k++] = '}';
    out[k] = '\0';
    return true;
fail:
    out[0] = '\0';
    return false;
}

bool keys_user(const struct bus *bus, char *out, size_t n, const char *kind,
               const char *id)
{
    return keys_format(out, n, bus_prefix(bus), kind, id);
}

/* CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster hashes. */
static unsigned crc16(const char *s, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

unsigned keys_slot(const char *key, size_t len)
{
    /* The tag: between the first '{' and the first '}' after it, if not
     * empty; else the whole key. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        if (close && close > key + from)
            return crc16(key + from, (size_t)(close - key - from)) & 16383;
    }
    return crc16(key, len) & 16383;
}
