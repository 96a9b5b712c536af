/* test_filter.c - xmppd/filter: the rules file and message judging. */
#include "../../xmppd/filter.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct filter *parse(const char *text)
{
    char err[256] = "";
    struct filter *f = filter_parse(text, "rules", err, sizeof(err));
    if (!f)
        printf("    parse failed: %s\n", err);
    return f;
}

TEST(filter_parse_rules)
{
    struct filter *f = parse("# comment\n\nmax_length 10\nrate 3/60\nmask darn heck\n"
                             "mask drat\nreject spam\nblock Spammer@Example.com x@y\n");
    CHECK(f != NULL);
    CHECK_EQ_INT(filter_rule_count(f), 8);
    filter_free(f);
    f = parse("");
    CHECK(f != NULL);
    CHECK_EQ_INT(filter_rule_count(f), 0);
    filter_free(f);
}

TEST(filter_parse_errors_name_the_line)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"max_length\n", "rules:1: 'max_length' needs a value"},
        {"mask a\nmax_length ten\n", "rules:2: max_length must be"},
        {"max_length 0\n", "rules:1: max_length must be"},
        {"rate 5\n", "rules:1: rate must be N/S"},
        {"rate 5/0\n", "rules:1: rate must be N/S"},
        {"rate 5/60 7\n", "rules:1: 'rate' takes one value"},
        {"block ok@x jid@\n", "rules:1: 'jid@' is not a bare JID"},
        {"block a@b/res\n", "rules:1: 'a@b/res' is not a bare JID"},
        {"\n\nfrobnicate x\n", "rules:3: unknown rule 'frobnicate'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        struct filter *f = filter_parse(bad[i].text, "rules", err, sizeof(err));
        CHECK(f == NULL);
        if (!CHECK(strstr(err, bad[i].want) == err))
            printf("    got: %s\n    want: %s\n", err, bad[i].want);
        filter_free(f);
    }
}

static enum filter_reason judge(const struct filter *f, const char *peer,
                                const char *body, char *out, size_t n)
{
    char *masked = NULL;
    enum filter_reason r = filter_check(f, peer, body, &masked);
    snprintf(out, n, "%s", masked ? masked : body);
    free(masked);
    return r;
}

TEST(filter_check_verdicts)
{
    struct filter *f = parse("max_length 12\nmask darn heck\nreject spam\nblock spammer@example.com\n");
    char out[128];
    CHECK_EQ_INT(judge(f, "bob@x/y", "hello", out, sizeof(out)), FR_PASS);
    CHECK_EQ_INT(judge(NULL, "bob@x", "spam", out, sizeof(out)), FR_PASS); /* no rules */
    CHECK_EQ_INT(judge(f, "bob@x", "0123456789abc", out, sizeof(out)), FR_TOO_LONG);
    /* Characters, not bytes: 12 two-byte characters pass. */
    CHECK_EQ_INT(judge(f, "bob@x", "éééééééééééé", out, sizeof(out)), FR_PASS);
    CHECK_EQ_INT(judge(f, "bob@x", "buy SPAM", out, sizeof(out)), FR_BANNED);
    CHECK_EQ_INT(judge(f, "bob@x", "spammy", out, sizeof(out)), FR_PASS); /* whole words */
    CHECK_EQ_INT(judge(f, "Spammer@Example.COM/phone", "hi", out, sizeof(out)), FR_BLOCKED);
    CHECK_EQ_INT(judge(f, "bob@x", "darn, HECK", out, sizeof(out)), FR_MASKED);
    CHECK_EQ_STR(out, "****, ****");
    CHECK_EQ_INT(judge(f, "bob@x", "darns darn", out, sizeof(out)), FR_MASKED);
    CHECK_EQ_STR(out, "darns ****");
    filter_free(f);
    /* Masking counts characters of non-ASCII words too. */
    f = parse("mask ñoño\n");
    CHECK_EQ_INT(judge(f, "bob@x", "(ñoño!)", out, sizeof(out)), FR_MASKED);
    CHECK_EQ_STR(out, "(****!)");
    /* A word inside a longer UTF-8 word is not a whole word. */
    CHECK_EQ_INT(judge(f, "bob@x", "ñoñoé", out, sizeof(out)), FR_PASS);
    filter_free(f);
}

TEST(filter_rate_bucket)
{
    struct filter *f = parse("rate 3/60\n");
    double tokens = 0;
    int64_t last = 0;
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++)
        CHECK(filter_rate_ok(f, &tokens, &last, t));
    CHECK(!filter_rate_ok(f, &tokens, &last, t));
    CHECK(!filter_rate_ok(f, &tokens, &last, t + 19000)); /* 0.95 of one back */
    CHECK(filter_rate_ok(f, &tokens, &last, t + 21000));
    CHECK(!filter_rate_ok(f, &tokens, &last, t + 21000));
    /* A long pause refills to the burst, never above. */
    for (int i = 0; i < 3; i++)
        CHECK(filter_rate_ok(f, &tokens, &last, t + 3600000));
    CHECK(!filter_rate_ok(f, &tokens, &last, t + 3600000));
    filter_free(f);
    f = parse("mask x\n"); /* no rate rule: always */
    tokens = 0;
    last = 0;
    for (int i = 0; i < 100; i++)
        CHECK(filter_rate_ok(f, &tokens, &last, t));
    filter_free(f);
}

int main(void)
{
    RUN(filter_parse_rules);
    RUN(filter_parse_errors_name_the_line);
    RUN(filter_check_verdicts);
    RUN(filter_rate_bucket);
    return unit_done();
}
