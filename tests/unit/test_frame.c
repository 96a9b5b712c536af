/* test_frame.c - common/frame: the phone link's length-prefixed framing. */
#include "frame.h"
#include "unit.h"

#include <stdint.h>
#include <string.h>

#define MAX 16384

/* buf = header(announced) + body (body_len bytes); returns the total length. */
static size_t build(uint8_t *buf, uint32_t announced, const char *body,
                    size_t body_len)
{
    frame_header(buf, announced);
    memcpy(buf + FRAME_HEADER, body, body_len);
    return FRAME_HEADER + body_len;
}

TEST(frame_complete)
{
    uint8_t buf[64];
    const char *json = "{\"t\":\"hb\"}";
    size_t n = build(buf, (uint32_t)strlen(json), json, strlen(json));
    const uint8_t *body = NULL;
    size_t body_len = 0;
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_OK);
    CHECK_EQ_INT(body_len, strlen(json));
    CHECK(body == buf + FRAME_HEADER);
    CHECK(body && memcmp(body, json, body_len) == 0);
}

TEST(frame_two_back_to_back)
{
    /* Bytes of the next frame after the first do not change the first. */
    uint8_t buf[64];
    size_t n = build(buf, 2, "{}", 2);
    n += build(buf + n, 7, "{\"a\":1}", 7);
    const uint8_t *body;
    size_t body_len;
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_OK);
    CHECK_EQ_INT(body_len, 2);
    size_t used = FRAME_HEADER + body_len;
    CHECK_EQ_INT(frame_parse(buf + used, n - used, MAX, &body, &body_len),
                 FRAME_OK);
    CHECK_EQ_INT(body_len, 7);
    CHECK(memcmp(body, "{\"a\":1}", 7) == 0);
}

TEST(frame_partial_header)
{
    uint8_t buf[16];
    build(buf, 2, "{}", 2);
    const uint8_t *body;
    size_t body_len;
    for (size_t len = 0; len < FRAME_HEADER; len++)
        CHECK_EQ_INT(frame_parse(buf, len, MAX, &body, &body_len),
                     FRAME_NEED_MORE);
}

TEST(frame_partial_body)
{
    uint8_t buf[64];
    const char *json = "{\"t\":\"msg\"}";
    size_t n = build(buf, (uint32_t)strlen(json), json, strlen(json));
    const uint8_t *body;
    size_t body_len;
    for (size_t len = FRAME_HEADER; len < n; len++)
        CHECK_EQ_INT(frame_parse(buf, len, MAX, &body, &body_len),
                     FRAME_NEED_MORE);
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_OK);
}

TEST(frame_exactly_max)
{
    static uint8_t buf[FRAME_HEADER + 100];
    char body_text[100];
    memset(body_text, ' ', sizeof(body_text));
    size_t n = build(buf, 100, body_text, 100);
    const uint8_t *body;
    size_t body_len;
    CHECK_EQ_INT(frame_parse(buf, n, 100, &body, &body_len), FRAME_OK);
    CHECK_EQ_INT(body_len, 100);
    /* Still waiting for the body when only part of it is there. */
    CHECK_EQ_INT(frame_parse(buf, n - 1, 100, &body, &body_len),
                 FRAME_NEED_MORE);
}

TEST(frame_max_plus_one)
{
    uint8_t buf[FRAME_HEADER];
    frame_header(buf, 101);
    const uint8_t *body;
    size_t body_len = 0;
    /* Refused from the header alone: no need to wait for 101 bytes. */
    CHECK_EQ_INT(frame_parse(buf, sizeof(buf), 100, &body, &body_len),
                 FRAME_TOO_BIG);
    CHECK_EQ_INT(body_len, 101);
}

TEST(frame_too_small)
{
    uint8_t buf[16];
    const uint8_t *body;
    size_t body_len = 99;
    size_t n = build(buf, 0, "", 0);
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_TOO_SMALL);
    CHECK_EQ_INT(body_len, 0);
    n = build(buf, 1, "x", 1);
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_TOO_SMALL);
    CHECK_EQ_INT(body_len, 1);
    /* Too small is known from the header, before any body byte arrives. */
    CHECK_EQ_INT(frame_parse(buf, FRAME_HEADER, MAX, &body, &body_len),
                 FRAME_TOO_SMALL);
    /* The smallest legal body. */
    n = build(buf, FRAME_MIN_BODY, "{}", 2);
    CHECK_EQ_INT(frame_parse(buf, n, MAX, &body, &body_len), FRAME_OK);
    CHECK_EQ_INT(body_len, FRAME_MIN_BODY);
}

TEST(frame_huge_length)
{
    uint8_t buf[FRAME_HEADER] = {0xFF, 0xFF, 0xFF, 0xFF};
    const uint8_t *body;
    size_t body_len = 0;
    CHECK_EQ_INT(frame_parse(buf, sizeof(buf), MAX, &body, &body_len),
                 FRAME_TOO_BIG);
    CHECK_EQ_INT(body_len, 0xFFFFFFFFu);
    CHECK_EQ_INT(frame_parse(buf, sizeof(buf), FRAME_MAX_LIMIT, &body,
                             &body_len),
                 FRAME_TOO_BIG);
    /* 0x80000000: the sign bit must not make it look small. */
    uint8_t neg[FRAME_HEADER + 2] = {0x80, 0, 0, 0, '{', '}'};
    CHECK_EQ_INT(frame_parse(neg, sizeof(neg), MAX, &body, &body_len),
                 FRAME_TOO_BIG);
    CHECK_EQ_INT(body_len, 0x80000000u);
}

TEST(frame_header_round_trip)
{
    uint8_t h[FRAME_HEADER];
    frame_header(h, 0x01020304u);
    CHECK(h[0] == 0x01 && h[1] == 0x02 && h[2] == 0x03 && h[3] == 0x04);
    frame_header(h, 300);
    CHECK(h[0] == 0 && h[1] == 0 && h[2] == 1 && h[3] == 44);

    static const uint32_t values[] = {0, 1, 2, 255, 256, 16384, 65535, 65536,
                                      FRAME_MAX_LIMIT, 0x7FFFFFFFu,
                                      0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        frame_header(h, values[i]);
        uint32_t back = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                        ((uint32_t)h[2] << 8) | h[3];
        CHECK_EQ_INT(back, values[i]);
        /* frame_parse reads the same length back (max 0: always too big,
         * or too small, and either way it reports the announced length). */
        const uint8_t *body;
        size_t body_len = 12345;
        enum frame_status st = frame_parse(h, sizeof(h), 0, &body, &body_len);
        CHECK(st == FRAME_TOO_BIG || st == FRAME_TOO_SMALL);
        CHECK_EQ_INT(body_len, values[i]);
    }
}

int main(void)
{
    RUN(frame_complete);
    RUN(frame_two_back_to_back);
    RUN(frame_partial_header);
    RUN(frame_partial_body);
    RUN(frame_exactly_max);
    RUN(frame_max_plus_one);
    RUN(frame_too_small);
    RUN(frame_huge_length);
    RUN(frame_header_round_trip);
    return unit_done();
}
