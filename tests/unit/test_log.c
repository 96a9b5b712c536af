/* test_log.c - common/log: the key=value text of a LOG call as the JSON line
 * of log_format = json (log_json_line). */
#include "log.h"
#include "unit.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The line of kv parsed back: NULL when it is not one JSON object. */
static json_t *line_of(const char *kv)
{
    char *s = log_json_line("2026-01-02T03:04:05.678Z", "INFO", "edge", "login_ok", kv);
    if (!s)
        return NULL;
    json_error_t e;
    json_t *o = json_loads(s, 0, &e);
    free(s);
    return json_is_object(o) ? o : NULL;
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

TEST(log_json_header_first)
{
    char *s = log_json_line("2026-01-02T03:04:05.678Z", "WARN", "xmppd/w1", "x", "a=1");
    CHECK_EQ_STR(s, "{\"ts\":\"2026-01-02T03:04:05.678Z\",\"level\":\"WARN\","
                    "\"proc\":\"xmppd/w1\",\"event\":\"x\",\"a\":\"1\"}");
    free(s);
}

TEST(log_json_plain_pairs)
{
    json_t *o = line_of("jid=alice@localhost dev=phone1 n=3");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "jid"), "alice@localhost");
    CHECK_EQ_STR(str(o, "dev"), "phone1");
    CHECK_EQ_STR(str(o, "n"), "3");
    CHECK_EQ_INT(json_object_size(o), 7);
    json_decref(o);
}

TEST(log_json_quoted)
{
    json_t *o = line_of("jid=a@b err=\"connection refused by peer\" n=1");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "err"), "connection refused by peer");
    CHECK_EQ_STR(str(o, "n"), "1");
    json_decref(o);
}

TEST(log_json_escapes)
{
    /* \" and \\ unescaped; a quote inside a value (as err="%s" writes it
     * unescaped) stays when it is not followed by the end or " key=". */
    json_t *o = line_of("a=\"say \\\"hi\\\" c:\\\\x\" b=\"file \"x y\": no\" "
                        "c=\"tab\there\"");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "a"), "say \"hi\" c:\\x");
    CHECK_EQ_STR(str(o, "b"), "file \"x y\": no");
    CHECK_EQ_STR(str(o, "c"), "tab\there");
    json_decref(o);
}

TEST(log_json_empty_values)
{
    json_t *o = line_of("a= b=\"\" c=x d=");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "a"), "");
    CHECK_EQ_STR(str(o, "b"), "");
    CHECK_EQ_STR(str(o, "c"), "x");
    CHECK_EQ_STR(str(o, "d"), "");
    json_decref(o);
    o = line_of("");
    if (!CHECK(o))
        return;
    CHECK_EQ_INT(json_object_size(o), 4);
    json_decref(o);
}

TEST(log_json_value_with_equals)
{
    json_t *o = line_of("rule=from=x@y,action=drop q=\"k=v w=z\" next=1");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "rule"), "from=x@y,action=drop");
    CHECK_EQ_STR(str(o, "q"), "k=v w=z");
    CHECK_EQ_STR(str(o, "next"), "1");
    json_decref(o);
}

TEST(log_json_spaces_free_text_reserved)
{
    /* An unquoted value with spaces runs to the next key; text before the
     * first key is "msg"; a key named like a header member gets '_'. */
    json_t *o = line_of("hello there reason=no exit in time level=9 event=e");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "msg"), "hello there");
    CHECK_EQ_STR(str(o, "reason"), "no exit in time");
    CHECK_EQ_STR(str(o, "_level"), "9");
    CHECK_EQ_STR(str(o, "level"), "INFO");
    CHECK_EQ_STR(str(o, "_event"), "e");
    CHECK_EQ_STR(str(o, "event"), "login_ok");
    json_decref(o);
}

TEST(log_json_cut_and_bad_bytes)
{
    /* A value cut by the line limit mid-quote; a newline; bytes that are not
     * UTF-8 (U+FFFD); well-formed UTF-8 kept. */
    json_t *o = line_of("a=\"never closed b=1 c=2");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "a"), "never closed b=1 c=2");
    json_decref(o);
    o = line_of("x=\"two\nlines\" y=\xff\xfe z=caf\xc3\xa9 w=\xed\xa0\x80");
    if (!CHECK(o))
        return;
    CHECK_EQ_STR(str(o, "x"), "two\nlines");
    CHECK_EQ_STR(str(o, "y"), "\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_EQ_STR(str(o, "z"), "caf\xc3\xa9");
    CHECK_EQ_STR(str(o, "w"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(o);
}

TEST(log_parse_format_names)
{
    CHECK_EQ_INT(log_parse_format("text"), LOG_FORMAT_TEXT);
    CHECK_EQ_INT(log_parse_format("JSON"), LOG_FORMAT_JSON);
    CHECK_EQ_INT(log_parse_format("xml"), -1);
}

int main(void)
{
    RUN(log_json_header_first);
    RUN(log_json_plain_pairs);
    RUN(log_json_quoted);
    RUN(log_json_escapes);
    RUN(log_json_empty_values);
    RUN(log_json_value_with_equals);
    RUN(log_json_spaces_free_text_reserved);
    RUN(log_json_cut_and_bad_bytes);
    RUN(log_parse_format_names);
    return unit_done();
}
