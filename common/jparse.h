/* jparse.h - untrusted JSON text into jansson values, lexed by yajl.
 *
 * Every frame from a phone and every envelope from Redis is parsed here.
 * jansson's own parser reads its input one character at a time through a
 * stream and a string buffer: for the stored chats an edge gets from Redis
 * that was 60 % of the edge's instructions. yajl lexes the same text about
 * six times faster and hands over each value; this module builds the very
 * jansson values json_loadb would (the rest of the code works on json_t
 * as before), with the same refusals as json_loadb(JSON_REJECT_DUPLICATES):
 *
 *   - anything yajl refuses: not JSON, a second value or other text after
 *     the first (yajl lets an unfinished string after the value pass, and
 *     takes \v and \f for whitespace: jparse does neither);
 *   - integers that do not fit in 64 bits, reals that overflow (converted
 *     here as jansson converts: yajl's own conversion refuses INT64_MIN);
 *   - a top-level value that is not an object or an array;
 *   - a key given twice in one object;
 *   - a string or key holding U+0000, or that is not valid UTF-8 once its
 *     escapes are decoded (jansson's own check: overlong forms, surrogates
 *     and code points above U+10FFFF are refused);
 *   - containers nested deeper than JPARSE_MAX_DEPTH (jansson allows 2048;
 *     no frame or envelope of ours nests more than 4, and every value
 *     freed is freed recursively).
 *
 * yajl decodes \u escapes of surrogates loosely (a lone high one becomes
 * '?', one is joined with any \u escape after it): a text holding an
 * escape of a high surrogate, which only clients that escape everything
 * beyond ASCII send, is parsed by jansson itself (same refusals, same
 * depth limit). One difference remains, on purpose: a NUL byte between
 * tokens is refused (jansson skips it). tests/unit/test_jparse.c compares
 * the two parsers on many thousand inputs. */
#ifndef IMB_JPARSE_H
#define IMB_JPARSE_H

#include <stddef.h>
#include <jansson.h>

#define JPARSE_MAX_DEPTH 64

/* Parse buf (len bytes, no NUL needed). Returns a new reference to an
 * object or an array, or NULL with an ASCII reason in err ("lexical error:
 * invalid char in json text at byte 12", "duplicate key 'to'"). */
json_t *jparse(const char *buf, size_t len, char *err, size_t errlen);

/* The allocator of yajl's own buffers (the parser, its lexer, the decoded
 * strings), like json_set_alloc_funcs for jansson's values: jpool_install
 * gives both the pool's functions. Without a call, malloc's. */
void jparse_set_alloc(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                      void (*free_fn)(void *));

#endif
