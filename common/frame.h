/* frame.h - the phone link's framing: a 4-byte big-endian length, then that
 * many bytes of UTF-8 JSON. Pure: no I/O, shared by edge and the phone client. */
#ifndef IMB_FRAME_H
#define IMB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4
/* The smallest legal body is "{}". */
#define FRAME_MIN_BODY 2
/* Hard ceiling for any configured maximum (1 MiB). */
#define FRAME_MAX_LIMIT (1u << 20)

enum frame_status {
    FRAME_OK,        /**< a whole frame is in the buffer */
    FRAME_NEED_MORE, /**< header or body incomplete: read more */
    FRAME_TOO_BIG,   /**< header announces a body above the limit */
    FRAME_TOO_SMALL, /**< header announces a body below FRAME_MIN_BODY */
};

/* Look at the start of buf (len bytes). On FRAME_OK, *body points into buf at
 * the frame's body and *body_len is its length; the frame occupies
 * FRAME_HEADER + *body_len bytes. On FRAME_TOO_BIG/TOO_SMALL, *body_len holds
 * the announced length. max_body is the largest body accepted. */
enum frame_status frame_parse(const uint8_t *buf, size_t len, size_t max_body,
                              const uint8_t **body, size_t *body_len);

/* Write the 4-byte header for a body of len bytes. */
void frame_header(uint8_t out[FRAME_HEADER], uint32_t len);

#endif
