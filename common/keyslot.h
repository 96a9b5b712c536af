/* keyslot.h - Redis Cluster's hash slot of a key or channel name: CRC16
 * (XMODEM) of the name, or of its hash tag (what lies between the first '{'
 * and the next '}', when that is not empty), modulo 16384. Keys that must be
 * touched together (one user's) share a tag, so they share a slot. */
#ifndef IMB_KEYSLOT_H
#define IMB_KEYSLOT_H

#include <stddef.h>

#define KEYSLOT_COUNT 16384

unsigned keyslot(const char *key, size_t len);

#endif
