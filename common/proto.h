/* proto.h - the catalogue of phone protocol frames that travel between a
 * phone and the bridge worker holding its XMPP session (docs/PROTOCOL.md,
 * "Chat features"): requests a phone sends (presence, roster, rooms,
 * history...) and events a worker sends to phones (contacts' presence,
 * typing, receipts...). One schema per frame, checked three times: by the
 * edge on a phone's frame, by the worker on the request envelope that
 * carries it, and by the edge on the event envelope before it writes the
 * frame to a phone. Pure: no I/O. */
#ifndef IMB_PROTO_H
#define IMB_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "schema.h"

#define PROTO_MAXF 8

struct proto_frame {
    const char *t;                   /* the frame's "t" */
    struct field fields[PROTO_MAXF]; /* besides "t" */
};

/* The request frame named t (client -> worker), or NULL. */
const struct proto_frame *proto_request(const char *t);
/* The event frame named t (worker -> client), or NULL. */
const struct proto_frame *proto_event(const char *t);

/* Check a frame against its schema; false with the reason in err. */
bool proto_check(const struct proto_frame *pf, const json_t *frame, char *err,
                 size_t errlen);

/* Normalise the JIDs (and room nicknames) of a checked frame in place, as
 * the XMPP server would prepare them (jid.h); false with the field named in
 * err if one cannot be prepared. */
bool proto_prep(const struct proto_frame *pf, json_t *frame, char *err,
                size_t errlen);

/* Validate obj as a request (or event): its "t" names a catalogue entry and
 * its fields pass. Returns the entry or NULL with the reason in err. */
const struct proto_frame *proto_check_request(const json_t *obj, char *err,
                                              size_t errlen);
const struct proto_frame *proto_check_event(const json_t *obj, char *err,
                                            size_t errlen);

/* Presence "show" values phones use, and the chat states of typing. */
#define PROTO_SHOWS "online|away|busy|offline"
#define PROTO_CHAT_STATES "composing|paused|active|inactive|gone"
#define PROTO_SUB_TYPES "subscribe|subscribed|unsubscribe|unsubscribed"

/* Largest history page a phone may ask for. */
#define PROTO_HISTORY_MAX 100

#endif
