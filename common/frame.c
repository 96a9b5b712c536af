/* frame.c - length-prefixed framing for the phone link. */
#include "frame.h"

enum frame_status frame_parse(const uint8_t *buf, size_t len, size_t max_body,
                              const uint8_t **body, size_t *body_len)
{
    if (len < FRAME_HEADER)
        return FRAME_NEED_MORE;
    uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) |
                 ((uint32_t)buf[2] << 8) | (uint32_t)buf[3];
    *body_len = n;
    if (n > max_body)
        return FRAME_TOO_BIG;
    if (n < FRAME_MIN_BODY)
        return FRAME_TOO_SMALL;
    if (len - FRAME_HEADER < n)
        return FRAME_NEED_MORE;
    *body = buf + FRAME_HEADER;
    return FRAME_OK;
}

void frame_header(uint8_t out[FRAME_HEADER], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}
