/* throttle.h - the failed-login throttle and the device token.
 *
 * Wrong passwords are counted in Redis, shared by every edge, per source
 * address ("<prefix>:lf:ip:{<addr>}", an IPv6 address by its /64) and per
 * account ("<prefix>:lf:u:{<jid>}"), each count living login_fail_window
 * seconds from its first failure. A login from an address or for an account
 * over its limit is refused (rate_limited) without reaching a bridge.
 *
 * A device that logged in before never meets those limits: every welcome
 * carries a device token (a random device id sealed under cred_key, bound
 * to the JID, good for device_token_days), and a login presenting a valid
 * token for its JID is judged only on that device's own count of failures
 * ("<prefix>:lf:d:{<device>}", same limit as an account). So a flood of wrong
 * passwords can lock out new devices of an account for a window, never the
 * phone that already has the right password.
 *
 * One key per command (no MGET across keys), ready for Redis Cluster. When
 * Redis does not answer, logins pass (fail open) and a line is logged. */
#ifndef IMB_THROTTLE_H
#define IMB_THROTTLE_H

#include <stdint.h>

struct edge;
struct conn;

enum throttle_verdict {
    THROTTLE_PASS,    /**< send the login to a bridge */
    THROTTLE_IP,      /**< too many failures from the source address */
    THROTTLE_ACCOUNT, /**< too many failures for the account */
    THROTTLE_DEVICE,  /**< too many failures with this device token */
    THROTTLE_VERDICTS
};

/* The verdict on the login numbered seq of connection dev for jid (look
 * the connection up again: it may be gone, or logging in anew). retry_s:
 * seconds until the count that refused it expires (0 on PASS). */
typedef void throttle_cb(struct edge *edge, const char *dev, uint8_t seq,
                         const char *jid, enum throttle_verdict v, long retry_s);

struct throttle *throttle_new(void);
void throttle_free(struct throttle *t);

/* Judge the login of c for jid (c in LOGGING_IN, numbered c->login_seq);
 * token: the device token the phone sent, or NULL. cb is called exactly
 * once, maybe before this returns (nothing to check). */
void throttle_check(struct edge *edge, struct conn *c, const char *jid,
                    const char *token, throttle_cb *cb);

/* The bridge answered auth_failed to c's login (c->user set): count it
 * against the address, the account and the device (fire and forget). */
void throttle_failed(struct edge *edge, struct conn *c);

/* c's login succeeded: its new device token (malloc'd; the same device id
 * when it logged in with a valid token), or NULL when tokens are off. */
char *throttle_token(struct edge *edge, struct conn *c);

/* c's login is over or c is gone: forget what the throttle held for it. */
void throttle_forget(struct edge *edge, const struct conn *c);

const char *throttle_reason(enum throttle_verdict v);

#endif
