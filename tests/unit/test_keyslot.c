/* test_keyslot.c - common/keyslot: the slot of a name, as Redis Cluster
 * computes it. Expected values are what `CLUSTER KEYSLOT` answers on
 * redis-server 7.0 (the integration suite checks more against a live
 * cluster). */
#include "keyslot.h"
#include "unit.h"

#include <string.h>

static unsigned slot(const char *s)
{
    return keyslot(s, strlen(s));
}

TEST(keyslot_plain_names)
{
    CHECK_EQ_INT(slot("123456789"), 12739); /* CRC16/XMODEM check value 0x31c3 */
    CHECK_EQ_INT(slot("foo"), 12182);
    CHECK_EQ_INT(slot("bar"), 5061);
    CHECK_EQ_INT(slot("somekey"), 11058);
    CHECK_EQ_INT(slot("imb:e:0123abcd"), 2349);
}

TEST(keyslot_hash_tags)
{
    /* One user's keys share the tag, so the slot. */
    CHECK_EQ_INT(slot("{user1000}.following"), 3443);
    CHECK_EQ_INT(slot("{user1000}.followers"), 3443);
    CHECK_EQ_INT(slot("imb:inbox:{alice@example.com}"), 350);
    CHECK_EQ_INT(slot("imb:seq:{alice@example.com}"), 350);
    /* The first '{' and the next '}'; an empty tag hashes the whole name. */
    CHECK_EQ_INT(slot("foo{}{bar}"), 8363);
    CHECK_EQ_INT(slot("foo{{bar}}zap"), 4015);
    CHECK_EQ_INT(slot("foo{bar}{zap}"), 5061);
    CHECK_EQ_INT(slot("{}"), 15257);
    /* Bytes, not characters: a UTF-8 JID. */
    CHECK_EQ_INT(slot("imb:seq:{\xc3\xbc@x}"), 4533);
    /* An unclosed tag is no tag. */
    CHECK_EQ_INT(slot("{foo"), keyslot("{foo", 4));
    CHECK(slot("{foo") != slot("foo"));
}

int main(void)
{
    RUN(keyslot_plain_names);
    RUN(keyslot_hash_tags);
    return unit_done();
}
