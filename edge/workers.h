/* workers.h - the edge's view of live bridge workers, read from the Redis
 * hash "<prefix>:workers" (field: worker id, value: "<expires_ms> <sessions>
 * <capacity>", written by every xmppd worker), refreshed every second. Used
 * to pick a worker for a login: the least loaded, counting each pick at once. */
#ifndef IMB_WORKERS_H
#define IMB_WORKERS_H

#include <stdbool.h>
#include <stddef.h>

struct bus;
struct event_base;
struct workers;

/* on_refresh(arg) runs after each successful read of the list. */
struct workers *workers_new(struct event_base *base, struct bus *bus,
                            void (*on_refresh)(void *arg), void *arg);
/* Is this worker alive: listed, or missing from the list (Redis restarted
 * empty) but within its last heartbeat's promise? */
bool workers_alive(const struct workers *w, const char *id);
void workers_free(struct workers *w);
/* Pick a live worker not in exclude[0..nexclude); NULL if none. The pointer
 * stays valid until the next refresh. Counts the login against its load. */
const char *workers_pick(struct workers *w, const char *const *exclude,
                         size_t nexclude);
size_t workers_count(const struct workers *w);
/* Re-read the list now (a login found it empty: an edge that just started,
 * or a bridge that just registered); done(arg) runs once it is in. */
void workers_refresh(struct workers *w, void (*done)(void *arg), void *arg);

#endif
