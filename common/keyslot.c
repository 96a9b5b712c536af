/* keyslot.c - the hash slot of a key (Redis Cluster specification, "Keys
 * distribution model"). */
#include "keyslot.h"

#include <stdint.h>

/* CRC16-CCITT as XMODEM computes it: polynomial 0x1021, initial 0, no
 * reflection. Bitwise: a name is hashed once per command, and names are
 * short. */
static uint16_t crc16(const char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned keyslot(const char *key, size_t len)
{
    size_t open = 0;
    while (open < len && key[open] != '{')
        open++;
    if (open < len) {
        size_t close = open + 1;
        while (close < len && key[close] != '}')
            close++;
        if (close < len && close > open + 1)
            return crc16(key + open + 1, close - open - 1) & (KEYSLOT_COUNT - 1);
    }
    return crc16(key, len) & (KEYSLOT_COUNT - 1);
}
