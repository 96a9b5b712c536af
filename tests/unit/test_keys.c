/* test_keys.c - the names of a user's Redis keys (common/keys.c): every
 * kind of one user carries the same hash tag, so one Redis Cluster slot,
 * whatever the JID holds; the slot function agrees with Redis's. */
#include "keys.h"
#include "unit.h"

#include <string.h>

static unsigned slot(const char *key)
{
    return keys_slot(key, strlen(key));
}

TEST(keys_carry_the_jid_as_hash_tag)
{
    char k[KEYS_MAX];
    CHECK(keys_format(k, sizeof(k), "imb", KEYS_SEQ, "alice@localhost"));
    CHECK_EQ_STR(k, "imb:seq:{alice@localhost}");
    CHECK(keys_format(k, sizeof(k), "imb", KEYS_LF_USER, "alice@localhost"));
    CHECK_EQ_STR(k, "imb:lf:u:{alice@localhost}");
    /* Braces and '%' in a JID are escaped: the tag stays the whole JID. */
    CHECK(keys_format(k, sizeof(k), "imb", KEYS_INBOX, "}a{%b@x"));
    CHECK_EQ_STR(k, "imb:inbox:{%7Da%7B%25b@x}");
    /* Too small: false and "". */
    CHECK(!keys_format(k, 20, "imb", KEYS_INBOX, "alice@localhost"));
    CHECK_EQ_STR(k, "");
    CHECK(!keys_format(k, 27, "imb", KEYS_INBOX, "alice@localhost")); /* NUL */
    CHECK(keys_format(k, 28, "imb", KEYS_INBOX, "alice@localhost"));
    /* The longest JID, all braces, fits. */
    char jid[1024];
    memset(jid, '}', 1023);
    jid[1023] = '\0';
    char prefix[101];
    memset(prefix, 'p', 100);
    prefix[100] = '\0';
    CHECK(keys_format(k, sizeof(k), prefix, KEYS_CURSOR, jid));
}

TEST(one_user_one_slot)
{
    static const char *const kinds[] = {KEYS_LEASE, KEYS_FENCE, KEYS_SEQ, KEYS_INBOX,
                                        KEYS_CURSOR, KEYS_ACKED, KEYS_PRES, KEYS_ROOMS,
                                        KEYS_LF_USER};
    static const char *const jids[] = {"alice@localhost", "}x@y", "a}b@x", "{}@x", "%@x"};
    for (size_t j = 0; j < sizeof(jids) / sizeof(*jids); j++) {
        char first[KEYS_MAX], k[KEYS_MAX];
        keys_format(first, sizeof(first), "imb", kinds[0], jids[j]);
        for (size_t i = 1; i < sizeof(kinds) / sizeof(*kinds); i++) {
            keys_format(k, sizeof(k), "imb", kinds[i], jids[j]);
            if (!CHECK_EQ_INT(slot(k), slot(first)))
                unit_check(false, __FILE__, __LINE__, k);
        }
    }
}

TEST(slot_as_redis_computes_it)
{
    /* CLUSTER KEYSLOT on a redis-server 7 (cluster-enabled). */
    CHECK_EQ_INT(slot("foo"), 12182);
    CHECK_EQ_INT(slot("bar"), 5061);
    CHECK_EQ_INT(slot("{foo}.x"), 12182);
    CHECK_EQ_INT(slot("{}foo"), slot("{}foo"));
    CHECK(slot("{}foo") != slot("foo")); /* an empty tag: the whole key */
    CHECK_EQ_INT(slot("a{foo}{bar}"), 12182);
    CHECK_EQ_INT(slot("imb:seq:{alice@localhost}"), slot("alice@localhost"));
}

int main(void)
{
    RUN(keys_carry_the_jid_as_hash_tag);
    RUN(one_user_one_slot);
    RUN(slot_as_redis_computes_it);
    return unit_done();
}
