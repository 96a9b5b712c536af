/* imcat.c - the phone client CLI: speaks phone protocol v1 to imb-edge, either
 * as a chat prompt for humans or, with --json, as one JSON frame per line in
 * each direction for scripts and integration tests. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "frame.h"
#include "log.h"
#include "proto.h"
#include "schema.h"
#include "tlsctx.h"
#include "util.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "7222"
/* What the spec promises until the welcome announces the real limit. */
#define DEFAULT_MAX_FRAME 16384
#define DEFAULT_HB_S 30
/* A welcome claiming more than a day between heartbeats is not a real server. */
#define MAX_HB_S 86400
#define CONNECT_TIMEOUT_MS 10000
/* The edge itself says bye after its 10 s login_timeout; this only catches a
 * server that accepted the TCP connection and then went mute. */
#define LOGIN_TIMEOUT_MS 15000
#define BYE_WAIT_MS 2000
/* Stop reading stdin while this much is queued for a server that does not
 * read, so a big script cannot grow our memory without bound. */
#define OUT_HIGH (256 * 1024)
#define OUT_LOW (64 * 1024)
#define STDIN_CHUNK 65536
/* No legal frame is longer than this, so neither is a useful stdin line. */
#define STDIN_LINE_MAX FRAME_MAX_LIMIT
#define DEV_MAX 64
/* How many rooms (a user may be in 100), contacts' last messages and
 * unanswered requests imcat remembers: the server (untrusted) can only make
 * it forget, not grow. */
#define MRU_MAX 128
/* A join of a JID that is no room may go unanswered (docs/PROTOCOL.md
 * 10.6): after this long, say so. */
#define JOIN_TIMEOUT_MS 30000
/* Page size of /history when none is given: a screenful. */
#define HISTORY_DEFAULT 20

enum exit_code { EXIT_OK = 0, EXIT_LOGIN = 1, EXIT_USAGE = 2, EXIT_LINK = 3 };

enum phase {
    PH_CONNECTING, /* trying the resolved addresses in turn */
    PH_LOGIN,      /* login sent, waiting for welcome */
    PH_READY,      /* logged in: stdin flows, heartbeats run */
    PH_LOGOUT,     /* logout sent, waiting up to BYE_WAIT_MS for bye */
    PH_DONE,       /* exit code decided, the loop is stopping */
};

struct options {
    const char *host;
    const char *port;
    const char *user;
    const char *dev;
    const char *to;
    char *password; /* our own copy, wiped on exit */
    bool json;
    bool quiet;
    bool tls;           /* TLS to the edge, peer verified */
    const char *cafile; /* CA to verify the edge with; NULL: system store */
};

/* What a request with an id asked for, so its answer can say so. */
enum req_kind {
    REQ_NONE,
    REQ_ROSTER,
    REQ_ROSTER_SET,    /* a: the contact */
    REQ_ROSTER_REMOVE, /* a: the contact */
    REQ_JOIN,          /* a: the room, b: the nick */
    REQ_LEAVE,         /* a: the room */
    REQ_SUBJECT,       /* a: the room */
    REQ_HISTORY,       /* a: the contact or room, n: page size, room: which */
};

struct entry {
    char *key;
    enum req_kind kind;
    char *a;
    char *b;
    long n;
    long count; /* REQ_HISTORY: messages received so far; REQ_ROSTER: parts */
    bool room;
    int64_t due; /* monotonic ms after which an unanswered request failed; 0: none */
};

/* A small table, most recently touched first; the oldest entry goes when a
 * new one does not fit. */
struct mru {
    struct entry e[MRU_MAX];
    size_t n;
    bool icase; /* keys are bare JIDs: compare them ignoring ASCII case */
};

struct imcat {
    struct options opt;
    struct event_base *base;
    SSL_CTX *ssl_ctx;   /* with --tls */
    struct bufferevent *bev;
    struct addrinfo *addrs;
    struct addrinfo *addr_next;
    char addr_text[80];
    bool in_connect_call;

    struct event *timer;
    struct event *retry_ev;
    struct event *sigint_ev;
    struct event *sigterm_ev;

    struct event *stdin_ev;
    struct evbuffer *stdin_buf;
    bool stdin_pollable;
    bool stdin_on;
    bool stdin_eof;
    bool stdin_discarding;
    unsigned long stdin_lineno;
    bool stdout_dead;

    enum phase phase;
    int exit_code;
    int64_t deadline; /* connect, login or bye-wait deadline (monotonic ms) */
    int64_t last_sent;
    int64_t last_recv;
    int64_t hb_ms;
    size_t max_out;

    char *to;
    bool to_room; /* the current recipient is a room: lines go with group:true */
    char id_prefix[9];
    unsigned long id_seq;

    struct mru rooms;   /* key room JID, a our nick, b its subject */
    struct mru last_in; /* key a contact's bare JID, a the full JID of its last message, b its id */
    struct mru pending; /* key a request's id */
    /* Where /more continues: the last /history and the page before it. */
    char *more_target;
    bool more_room;
    long more_max;
    char *more_before;
};

static void pump_stdin(struct imcat *c);
static void begin_logout(struct imcat *c);

/* ---- small helpers ------------------------------------------------------ */

static void finish(struct imcat *c, int code)
{
    if (c->phase == PH_DONE)
        return;
    c->phase = PH_DONE;
    c->exit_code = code;
    event_base_loopbreak(c->base);
}

/* Copy server text for a log or status line: control characters and quotes
 * become '?' (and spaces too unless allowed) so a value can neither fake extra
 * key=value fields nor send escape sequences to a terminal. Truncates. */
static const char *clean_text(const char *in, char *out, size_t n, bool allow_space)
{
    size_t i = 0;
    for (; in && in[i] && i + 1 < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        bool bad = ch < 0x20 || ch == 0x7f || ch == '"' || (ch == ' ' && !allow_space);
        out[i] = bad ? '?' : (char)ch;
    }
    out[i] = '\0';
    return out;
}

static void protocol_error(struct imcat *c, const char *what)
{
    char buf[256];
    LOG(ERROR, "protocol_error", "addr=%s error=\"%s\"", c->addr_text,
        clean_text(what, buf, sizeof(buf), true));
    finish(c, EXIT_LINK);
}

static int64_t dead_ms(const struct imcat *c)
{
    return 2 * c->hb_ms + 5000;
}

/* jansson refuses to build strings that are not UTF-8; ask it rather than
 * carry a second validator. */
static bool is_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

static bool valid_dev(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > DEV_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* A JID goes into JSON as-is; only reject what can never be one, the server
 * does the real checking. */
static bool plausible_jid(const char *s)
{
    if (!*s || !is_utf8(s))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

static void next_msg_id(struct imcat *c, char *out, size_t n)
{
    snprintf(out, n, "%s-m%lu", c->id_prefix, ++c->id_seq);
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

/* The bare part of a JID ("a@b/c" -> "a@b"), allocated. */
static char *bare_of(const char *jid)
{
    return xstrndup(jid, strcspn(jid, "/"));
}

/* ---- remembered state: rooms, last messages, unanswered requests -------- */

static bool mru_same(const struct mru *m, const char *x, const char *y)
{
    return (m->icase ? strcasecmp(x, y) : strcmp(x, y)) == 0;
}

static struct entry *mru_get(struct mru *m, const char *key)
{
    for (size_t i = 0; key && i < m->n; i++)
        if (mru_same(m, m->e[i].key, key))
            return &m->e[i];
    return NULL;
}

static void entry_free(struct entry *e)
{
    free(e->key);
    free(e->a);
    free(e->b);
    memset(e, 0, sizeof(*e));
}

/* The entry for key, created empty if new, moved to the front. The pointer
 * is only good until the table changes again. */
static struct entry *mru_touch(struct mru *m, const char *key)
{
    size_t i = 0;
    while (i < m->n && !mru_same(m, m->e[i].key, key))
        i++;
    struct entry e;
    if (i < m->n) {
        e = m->e[i];
    } else {
        if (m->n == MRU_MAX)
            entry_free(&m->e[--i]);
        else
            m->n++;
        e = (struct entry){.key = xstrdup(key)};
    }
    memmove(&m->e[1], &m->e[0], i * sizeof(m->e[0]));
    m->e[0] = e;
    return &m->e[0];
}

static void mru_del(struct mru *m, const char *key)
{
    struct entry *e = mru_get(m, key);
    if (!e)
        return;
    size_t i = (size_t)(e - m->e);
    entry_free(e);
    memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof(m->e[0]));
    m->n--;
    memset(&m->e[m->n], 0, sizeof(m->e[0]));
}

static void mru_clear(struct mru *m)
{
    for (size_t i = 0; i < m->n; i++)
        entry_free(&m->e[i]);
    m->n = 0;
}

static void expire_requests(struct imcat *c, int64_t now);

/* Is jid a room: the current one, or one we know we are in? */
static bool is_room(struct imcat *c, const char *jid)
{
    return (c->to_room && c->to && strcasecmp(c->to, jid) == 0) || mru_get(&c->rooms, jid);
}

/* ---- output ------------------------------------------------------------- */

/* Once stdout is gone (e.g. `imcat --json | head -1`) nobody sees what we
 * receive, so log out cleanly rather than die on SIGPIPE mid-session. */
static void stdout_gone(struct imcat *c)
{
    if (c->stdout_dead)
        return;
    c->stdout_dead = true;
    LOG(WARN, "stdout_closed", "error=\"%s\"", strerror(errno));
    /* Before the welcome, on_welcome sees the flag and logs out at once. */
    if (c->phase == PH_READY)
        begin_logout(c);
}

static void flush_stdout(struct imcat *c)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        stdout_gone(c);
}

/* Server text ends up on a terminal: neutralise control characters (C0, DEL
 * and the UTF-8 encoded C1 range) so a message cannot move the cursor, change
 * colours or retitle the window, and the bidirectional overrides and isolates
 * (U+202A..U+202E, U+2066..U+2069) so a name cannot make the rest of the line
 * read backwards. Newlines and tabs stay for multi-line text, unless the text
 * is one field of a one-line event: then they become spaces. */
static void put_clean(FILE *f, const char *s, size_t n, bool one_line)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        unsigned char c1 = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        unsigned char c2 = i + 2 < n ? (unsigned char)s[i + 2] : 0;
        if (ch == '\n' || ch == '\t' || (ch == '\r' && one_line)) {
            fputc(one_line ? ' ' : ch, f);
        } else if (ch < 0x20 || ch == 0x7f) {
            fputc('?', f);
        } else if (ch == 0xc2 && c1 >= 0x80 && c1 <= 0x9f) {
            fputc('?', f);
            i++;
        } else if (ch == 0xe2 && ((c1 == 0x80 && c2 >= 0xaa && c2 <= 0xae) ||
                                  (c1 == 0x81 && c2 >= 0xa6 && c2 <= 0xa9))) {
            fputc('?', f);
            i += 2;
        } else {
            fputc(ch, f);
        }
    }
}

static void put_clean_json(FILE *f, json_t *str)
{
    put_clean(f, json_string_value(str), json_string_length(str), false);
}

/* One field of an event line on stdout: cleaned, on one line; "?" when the
 * server left it out or sent something else than a string. */
static void out_json(json_t *str)
{
    if (json_is_string(str))
        put_clean(stdout, json_string_value(str), json_string_length(str), true);
    else
        fputc('?', stdout);
}

static void out_field(json_t *root, const char *key)
{
    out_json(json_object_get(root, key));
}

static void out_str(const char *s)
{
    put_clean(stdout, s, strlen(s), true);
}

static const char *str_field(json_t *root, const char *key)
{
    return json_string_value(json_object_get(root, key));
}

/* Status lines for humans go to stderr so stdout stays the conversation. */
__attribute__((format(printf, 2, 3)))
static void status(const struct imcat *c, const char *fmt, ...)
{
    if (c->opt.json || c->opt.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("* ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void print_chat_help(FILE *f)
{
    fputs("Type a line to send it to the current recipient, a contact or a room.\n"
          "Commands (JID: a contact such as bob@example.com; ROOM: a room's JID):\n"
          " chat\n"
          "  /to JID                  talk to JID (no JID: show the current recipient)\n"
          "  /room ROOM               talk in ROOM: lines go to everyone there\n"
          "  /read                    tell the current contact you read their last message\n"
          "  /typing [STATE]          tell the current contact you are typing; STATE:\n"
          "                           composing (default), paused, active, inactive, gone\n"
          "  /history [JID|ROOM] [N]  the last N (1..100, default 20) archived messages\n"
          "                           with JID or in ROOM (default: the current recipient)\n"
          "  /more                    the page before, after /history\n"
          " presence and contacts\n"
          "  /presence online|away|busy|offline [TEXT]\n"
          "                           what contacts see of you, with a status TEXT\n"
          "  /bg, /fg                 app in the background (no live presence, typing or\n"
          "                           occupant events), in front again\n"
          "  /roster                  list your contacts\n"
          "  /add JID [NAME]          add a contact, or rename one\n"
          "  /remove JID              remove a contact\n"
          "  /sub JID                 ask to see JID's presence\n"
          "  /unsub JID               stop seeing JID's presence\n"
          "  /allow JID               let JID see your presence (answers a request)\n"
          "  /deny JID                refuse JID's request, or stop JID seeing it\n"
          " rooms\n"
          "  /join ROOM [NICK [PASSWORD]]\n"
          "                           join ROOM (NICK: one word, default your user name)\n"
          "                           and talk there\n"
          "  /leave [ROOM]            leave ROOM (default: the current room)\n"
          "  /subject [TEXT]          set the current room's subject (no TEXT: show it)\n"
          "  /invite JID [REASON]     invite JID to the current room\n"
          " other\n"
          "  /raw JSON                send a raw protocol frame\n"
          "  /quit                    log out and exit (end of input does the same)\n"
          "  /help                    this text\n"
          "  //text                   send a line that starts with '/'\n",
          f);
}

/* Requests that may go unanswered (a join of a JID that is no room): tell
 * the user once their time is up, and forget them. */
static void expire_requests(struct imcat *c, int64_t now)
{
    for (size_t i = 0; i < c->pending.n;) {
        struct entry *e = &c->pending.e[i];
        if (!e->due || e->due > now) {
            i++;
            continue;
        }
        if (!c->stdout_dead) {
            fputs("! no answer to joining ", stdout);
            out_str(e->a ? e->a : "?");
            printf(" within %d s: is it a room?\n", JOIN_TIMEOUT_MS / 1000);
            flush_stdout(c);
        }
        char *key = xstrdup(e->key);
        mru_del(&c->pending, key);
        free(key);
    }
}

/* ---- sending ------------------------------------------------------------ */

/* Encode and queue one frame. A frame above the server's announced limit would
 * make the edge answer too_big and close, so it is refused here instead. */
static int send_frame(struct imcat *c, json_t *frame, bool secret)
{
    if (!c->bev)
        return -1;
    char *body = json_dumps(frame, JSON_COMPACT);
    if (!body) {
        fprintf(stderr, "imcat: cannot encode frame; not sent\n");
        return -1;
    }
    size_t n = strlen(body);
    if (n > c->max_out) {
        fprintf(stderr, "imcat: frame of %zu bytes is above the server's limit of %zu; not sent\n",
                n, c->max_out);
        free(body);
        return -1;
    }
    uint8_t hdr[FRAME_HEADER];
    frame_header(hdr, (uint32_t)n);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, hdr, sizeof(hdr));
    evbuffer_add(out, body, n);
    const char *t = json_string_value(json_object_get(frame, "t"));
    LOG(DEBUG, "frame_out", "t=%s len=%zu", t ? t : "-", n);
    if (secret)
        explicit_bzero(body, n);
    free(body);
    c->last_sent = util_mono_ms();
    return 0;
}

static int send_simple(struct imcat *c, const char *type)
{
    json_t *f = json_object();
    json_object_set_new(f, "t", json_string(type));
    int r = send_frame(c, f, false);
    json_decref(f);
    return r;
}

static bool output_full(const struct imcat *c)
{
    return c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) >= OUT_HIGH;
}

/* ---- timer: connect/login deadlines, heartbeats, dead link, bye wait ---- */

/* One timer serves every deadline. Sends and receives only push deadlines
 * later, so they never need to re-arm it: when it fires early it just checks
 * the clocks and re-arms for whatever is due next. */
static void arm_timer(struct imcat *c)
{
    int64_t due;
    switch (c->phase) {
    case PH_CONNECTING:
    case PH_LOGIN:
    case PH_LOGOUT:
        due = c->deadline;
        break;
    case PH_READY: {
        int64_t hb_due = c->last_sent + c->hb_ms;
        int64_t dead_due = c->last_recv + dead_ms(c);
        due = hb_due < dead_due ? hb_due : dead_due;
        for (size_t i = 0; i < c->pending.n; i++)
            if (c->pending.e[i].due && c->pending.e[i].due < due)
                due = c->pending.e[i].due;
        break;
    }
    default:
        evtimer_del(c->timer);
        return;
    }
    int64_t wait = due - util_mono_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000), .tv_usec = (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imcat *c = arg;
    int64_t now = util_mono_ms();
    switch (c->phase) {
    case PH_CONNECTING:
        if (now >= c->deadline) {
            LOG(WARN, "connect_failed", "addr=%s error=timeout", c->addr_text);
            event_active(c->retry_ev, EV_TIMEOUT, 0);
            return;
        }
        break;
    case PH_LOGIN:
        if (now >= c->deadline) {
            LOG(ERROR, "connection_lost", "addr=%s error=\"no answer to login within %d s\"",
                c->addr_text, LOGIN_TIMEOUT_MS / 1000);
            finish(c, EXIT_LINK);
            return;
        }
        break;
    case PH_READY:
        if (now - c->last_recv >= dead_ms(c)) {
            LOG(ERROR, "connection_lost", "addr=%s error=\"no frame from server for %lld s\"",
                c->addr_text, (long long)(dead_ms(c) / 1000));
            finish(c, EXIT_LINK);
            return;
        }
        expire_requests(c, now);
        if (now - c->last_sent >= c->hb_ms) {
            send_simple(c, "hb");
            /* Even if the send was refused, wait a full period before trying
             * again instead of spinning on a zero timeout. */
            c->last_sent = now;
        }
        break;
    case PH_LOGOUT:
        if (now >= c->deadline) {
            LOG(WARN, "no_bye", "addr=%s waited_ms=%d", c->addr_text, BYE_WAIT_MS);
            finish(c, EXIT_OK);
            return;
        }
        break;
    case PH_DONE:
        return;
    }
    arm_timer(c);
}

/* ---- session transitions ------------------------------------------------ */

static void enter_logout(struct imcat *c)
{
    c->stdin_on = false;
    event_del(c->stdin_ev);
    c->phase = PH_LOGOUT;
    c->deadline = util_mono_ms() + BYE_WAIT_MS;
    arm_timer(c);
}

static void begin_logout(struct imcat *c)
{
    if (c->phase != PH_READY)
        return;
    send_simple(c, "logout");
    enter_logout(c);
}

static void send_login(struct imcat *c)
{
    json_t *f = json_object();
    json_object_set_new(f, "t", json_string("login"));
    json_object_set_new(f, "v", json_integer(1));
    json_object_set_new(f, "jid", json_string(c->opt.user));
    json_object_set_new(f, "pass", json_string(c->opt.password));
    if (c->opt.dev)
        json_object_set_new(f, "dev", json_string(c->opt.dev));
    send_frame(c, f, true);
    json_decref(f);
}

/* ---- stdin -------------------------------------------------------------- */

static void send_json_text(struct imcat *c, const char *text, size_t len)
{
    if (is_blank(text, len))
        return;
    json_error_t err;
    json_t *f = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!f) {
        fprintf(stderr, "imcat: line %lu: invalid JSON at column %d: %s; not sent\n",
                c->stdin_lineno, err.column, err.text);
        return;
    }
    if (!json_is_object(f)) {
        fprintf(stderr, "imcat: line %lu: a frame must be a JSON object; not sent\n",
                c->stdin_lineno);
        json_decref(f);
        return;
    }
    const char *t = json_string_value(json_object_get(f, "t"));
    if (t && strcmp(t, "msg") == 0 && !json_object_get(f, "id")) {
        char id[32];
        next_msg_id(c, id, sizeof(id));
        json_object_set_new(f, "id", json_string(id));
    }
    /* A script may log out by itself; then treat it like our own logout so
     * the bye that follows ends the run with status 0. */
    if (send_frame(c, f, false) == 0 && t && strcmp(t, "logout") == 0)
        enter_logout(c);
    json_decref(f);
}

static void send_chat(struct imcat *c, const char *text, size_t len)
{
    if (!c->to) {
        fprintf(stderr, "imcat: no recipient yet; set one with /to JID or /room ROOM\n");
        return;
    }
    json_t *body = json_stringn(text, len);
    if (!body) {
        fprintf(stderr, "imcat: line %lu is not valid UTF-8; not sent\n", c->stdin_lineno);
        return;
    }
    char id[32];
    next_msg_id(c, id, sizeof(id));
    json_t *f = json_object();
    json_object_set_new(f, "t", json_string("msg"));
    json_object_set_new(f, "id", json_string(id));
    json_object_set_new(f, "to", json_string(c->to));
    json_object_set_new(f, "body", body);
    if (c->to_room)
        json_object_set_new(f, "group", json_true());
    send_frame(c, f, false);
    json_decref(f);
}

/* ---- commands ----------------------------------------------------------- */

/* Cut the first word off *p (in place): returns it, or NULL when nothing is
 * left; *p then points at the rest, leading blanks skipped. */
static char *cut_word(char **p)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s) {
        *p = s;
        return NULL;
    }
    char *w = s;
    while (*s && *s != ' ' && *s != '\t')
        s++;
    if (*s)
        *s++ = '\0';
    while (*s == ' ' || *s == '\t')
        s++;
    *p = s;
    return w;
}

static json_t *request_new(const char *type)
{
    json_t *f = json_object();
    json_object_set_new(f, "t", json_string(type));
    return f;
}

/* Send a request frame (taken over). With a kind it gets an id, and what it
 * asked is remembered until its answer comes. It is checked against the
 * protocol's own schema first, so a bad argument is named here instead of
 * coming back as a bad_frame error. */
static bool send_request(struct imcat *c, const char *cmd, json_t *f, enum req_kind kind,
                         const char *a, const char *b, long n, bool room)
{
    char id[32] = "";
    if (kind != REQ_NONE) {
        snprintf(id, sizeof(id), "%s-q%lu", c->id_prefix, ++c->id_seq);
        json_object_set_new(f, "id", json_string(id));
    }
    char err[200];
    const struct proto_frame *pf = proto_request(json_string_value(json_object_get(f, "t")));
    if (pf && !proto_check(pf, f, err, sizeof(err))) {
        fprintf(stderr, "imcat: %s: %s; not sent\n", cmd, err);
        json_decref(f);
        return false;
    }
    int r = send_frame(c, f, json_object_get(f, "pass") != NULL);
    json_decref(f);
    if (r != 0)
        return false;
    if (kind != REQ_NONE) {
        struct entry *e = mru_touch(&c->pending, id);
        e->kind = kind;
        set_str(&e->a, a);
        set_str(&e->b, b);
        e->n = n;
        e->count = 0;
        e->room = room;
        e->due = kind == REQ_JOIN ? util_mono_ms() + JOIN_TIMEOUT_MS : 0;
        if (e->due)
            arm_timer(c);
    }
    return true;
}

static bool no_more_args(const char *rest, const char *usage_text)
{
    if (!*rest)
        return true;
    fprintf(stderr, "imcat: usage: %s\n", usage_text);
    return false;
}

/* The JID argument of a command, or NULL after saying what is wrong. */
static char *jid_arg(char **args, const char *usage_text, bool room)
{
    char *jid = cut_word(args);
    if (!jid) {
        fprintf(stderr, "imcat: usage: %s\n", usage_text);
        return NULL;
    }
    if (!plausible_jid(jid)) {
        fprintf(stderr, "imcat: not a JID: %s\n", jid);
        return NULL;
    }
    if (strchr(jid, '/')) {
        fprintf(stderr, "imcat: give the bare JID, without /resource: %s\n", jid);
        return NULL;
    }
    if (room && !strchr(jid, '@')) {
        fprintf(stderr, "imcat: not a room JID (name@service): %s\n", jid);
        return NULL;
    }
    return jid;
}

static const char *current_contact(struct imcat *c, const char *cmd)
{
    if (!c->to)
        fprintf(stderr, "imcat: %s: no recipient yet; set one with /to JID\n", cmd);
    else if (c->to_room)
        fprintf(stderr, "imcat: %s is for a contact, and %s is a room\n", cmd, c->to);
    else
        return c->to;
    return NULL;
}

static const char *current_room(struct imcat *c, const char *cmd)
{
    if (c->to && c->to_room)
        return c->to;
    fprintf(stderr, "imcat: %s: no current room; pick one with /room ROOM\n", cmd);
    return NULL;
}

static void set_recipient(struct imcat *c, const char *jid, bool room)
{
    set_str(&c->to, jid);
    c->to_room = room;
    status(c, room ? "now talking in room %s" : "now talking to %s", jid);
}

static void cmd_to(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    if (!*args) {
        fprintf(stderr, "imcat: current recipient: %s%s\n", c->to ? c->to : "(none)",
                c->to && c->to_room ? " (room)" : "");
        return;
    }
    if (!plausible_jid(args)) {
        fprintf(stderr, "imcat: not a JID: %s\n", args);
        return;
    }
    /* Lines to a room we are in only make sense as group messages. */
    set_recipient(c, args, mru_get(&c->rooms, args) != NULL);
}

static void cmd_room(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *room = jid_arg(&args, "/room ROOM", true);
    if (room && no_more_args(args, "/room ROOM"))
        set_recipient(c, room, true);
}

static void cmd_presence(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *usage_text = "/presence " PROTO_SHOWS " [TEXT]";
    const char *show = cut_word(&args);
    if (!show || !schema_choice_ok(PROTO_SHOWS, show, strlen(show))) {
        fprintf(stderr, "imcat: usage: %s\n", usage_text);
        return;
    }
    json_t *f = request_new("presence");
    json_object_set_new(f, "show", json_string(show));
    if (*args)
        json_object_set_new(f, "status", json_string(args));
    if (send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false))
        status(c, "contacts now see you %s%s%s", show, *args ? ": " : "", args);
}

static void cmd_state(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    bool active = strcmp(cmd, "/fg") == 0;
    if (!no_more_args(args, cmd))
        return;
    json_t *f = request_new("state");
    json_object_set_new(f, "active", json_boolean(active));
    if (send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false))
        status(c, "%s", active ? "in front again" :
                                 "in the background: no live presence, typing or occupant events");
}

static void cmd_roster(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    if (no_more_args(args, "/roster"))
        send_request(c, cmd, request_new("roster"), REQ_ROSTER, NULL, NULL, 0, false);
}

static void cmd_add(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *jid = jid_arg(&args, "/add JID [NAME]", false);
    if (!jid)
        return;
    json_t *f = request_new("roster_set");
    json_object_set_new(f, "jid", json_string(jid));
    if (*args)
        json_object_set_new(f, "name", json_string(args));
    send_request(c, cmd, f, REQ_ROSTER_SET, jid, NULL, 0, false);
}

static void cmd_remove(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *jid = jid_arg(&args, "/remove JID", false);
    if (!jid || !no_more_args(args, "/remove JID"))
        return;
    json_t *f = request_new("roster_remove");
    json_object_set_new(f, "jid", json_string(jid));
    send_request(c, cmd, f, REQ_ROSTER_REMOVE, jid, NULL, 0, false);
}

/* /sub, /unsub, /allow, /deny: extra is the subscription type. */
static void cmd_sub(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    char usage_text[32];
    snprintf(usage_text, sizeof(usage_text), "%s JID", cmd);
    const char *jid = jid_arg(&args, usage_text, false);
    if (!jid || !no_more_args(args, usage_text))
        return;
    json_t *f = request_new("sub");
    json_object_set_new(f, "to", json_string(jid));
    json_object_set_new(f, "type", json_string(extra));
    if (!send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false))
        return;
    if (strcmp(extra, "subscribe") == 0)
        status(c, "asked %s to let you see their presence", jid);
    else if (strcmp(extra, "unsubscribe") == 0)
        status(c, "you stop seeing %s's presence", jid);
    else if (strcmp(extra, "subscribed") == 0)
        status(c, "%s may see your presence", jid);
    else
        status(c, "%s may not see your presence", jid);
}

static void cmd_join(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *room = jid_arg(&args, "/join ROOM [NICK [PASSWORD]]", true);
    if (!room)
        return;
    char *nick = cut_word(&args);
    char *own = NULL;
    if (!nick)
        nick = own = xstrndup(c->opt.user, strcspn(c->opt.user, "@"));
    json_t *f = request_new("join");
    json_object_set_new(f, "room", json_string(room));
    json_object_set_new(f, "nick", json_string(nick));
    if (*args)
        json_object_set_new(f, "pass", json_string(args));
    if (send_request(c, cmd, f, REQ_JOIN, room, nick, 0, true))
        status(c, "joining %s as %s", room, nick);
    free(own);
}

static void cmd_leave(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *room;
    if (*args) {
        room = jid_arg(&args, "/leave [ROOM]", true);
        if (!room || !no_more_args(args, "/leave [ROOM]"))
            return;
    } else if (!(room = current_room(c, cmd))) {
        return;
    }
    json_t *f = request_new("leave");
    json_object_set_new(f, "room", json_string(room));
    send_request(c, cmd, f, REQ_LEAVE, room, NULL, 0, true);
}

static void cmd_subject(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *room = current_room(c, cmd);
    if (!room)
        return;
    if (!*args) {
        struct entry *r = mru_get(&c->rooms, room);
        if (c->stdout_dead)
            return;
        fputs("* ", stdout);
        out_str(room);
        fputs(": ", stdout);
        if (r && r->b && *r->b) {
            fputs("subject \"", stdout);
            out_str(r->b);
            fputs("\"\n", stdout);
        } else {
            fputs("no subject known\n", stdout);
        }
        flush_stdout(c);
        return;
    }
    json_t *f = request_new("subject");
    json_object_set_new(f, "room", json_string(room));
    json_object_set_new(f, "subject", json_string(args));
    send_request(c, cmd, f, REQ_SUBJECT, room, NULL, 0, true);
}

static void cmd_invite(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *room = current_room(c, cmd);
    if (!room)
        return;
    const char *jid = jid_arg(&args, "/invite JID [REASON]", false);
    if (!jid)
        return;
    json_t *f = request_new("invite");
    json_object_set_new(f, "room", json_string(room));
    json_object_set_new(f, "to", json_string(jid));
    if (*args)
        json_object_set_new(f, "reason", json_string(args));
    if (send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false))
        status(c, "invited %s to %s", jid, room);
}

static bool parse_count(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > PROTO_HISTORY_MAX)
        return false;
    *out = v;
    return true;
}

static void send_history(struct imcat *c, const char *cmd, const char *target, bool room,
                         long max, const char *before)
{
    json_t *f = request_new("history");
    json_object_set_new(f, room ? "room" : "with", json_string(target));
    json_object_set_new(f, "max", json_integer(max));
    if (before)
        json_object_set_new(f, "before", json_string(before));
    send_request(c, cmd, f, REQ_HISTORY, target, NULL, max, room);
}

static void cmd_history(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    static const char usage_text[] = "/history [JID|ROOM] [N]";
    const char *w1 = cut_word(&args);
    const char *w2 = cut_word(&args);
    const char *target = w1;
    const char *count = w2;
    long max = HISTORY_DEFAULT;
    if (*args) {
        fprintf(stderr, "imcat: usage: %s\n", usage_text);
        return;
    }
    if (w1 && !w2 && w1[strspn(w1, "0123456789")] == '\0') {
        target = NULL;
        count = w1;
    }
    if (count && !parse_count(count, &max)) {
        fprintf(stderr, "imcat: %s: N must be a number from 1 to %d\n", cmd, PROTO_HISTORY_MAX);
        return;
    }
    if (!target) {
        if (!c->to) {
            fprintf(stderr, "imcat: %s: no recipient yet; name a JID or ROOM\n", cmd);
            return;
        }
        target = c->to;
    } else if (!plausible_jid(target) || strchr(target, '/')) {
        fprintf(stderr, "imcat: not a bare JID: %s\n", target);
        return;
    }
    send_history(c, cmd, target, is_room(c, target), max, NULL);
}

static void cmd_more(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    if (!no_more_args(args, "/more"))
        return;
    if (!c->more_target)
        fprintf(stderr, "imcat: /more continues a /history; there was none yet\n");
    else if (!c->more_before)
        fprintf(stderr, "imcat: nothing older in the history of %s\n", c->more_target);
    else
        send_history(c, cmd, c->more_target, c->more_room, c->more_max, c->more_before);
}

static void cmd_read(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    const char *to = current_contact(c, cmd);
    if (!to || !no_more_args(args, "/read"))
        return;
    char *bare = bare_of(to);
    struct entry *m = mru_get(&c->last_in, bare);
    if (!m) {
        fprintf(stderr, "imcat: no message from %s yet\n", bare);
    } else if (!m->b) {
        fprintf(stderr, "imcat: the last message from %s has no id: cannot mark it read\n", bare);
    } else {
        json_t *f = request_new("read");
        json_object_set_new(f, "to", json_string(m->a));
        json_object_set_new(f, "id", json_string(m->b));
        if (send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false))
            status(c, "told %s you read their last message", bare);
    }
    free(bare);
}

static void cmd_typing(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    static const char usage_text[] = "/typing [" PROTO_CHAT_STATES "]";
    const char *to = current_contact(c, cmd);
    if (!to)
        return;
    const char *state = cut_word(&args);
    if (!state)
        state = "composing";
    if (!schema_choice_ok(PROTO_CHAT_STATES, state, strlen(state)) || *args) {
        fprintf(stderr, "imcat: usage: %s\n", usage_text);
        return;
    }
    json_t *f = request_new("typing");
    json_object_set_new(f, "to", json_string(to));
    json_object_set_new(f, "state", json_string(state));
    send_request(c, cmd, f, REQ_NONE, NULL, NULL, 0, false);
}

static void cmd_raw(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    send_json_text(c, args, strlen(args));
}

static void cmd_quit(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    begin_logout(c);
}

static void cmd_help(struct imcat *c, const char *cmd, char *args, const char *extra)
{
    print_chat_help(stderr);
}

static const struct command {
    const char *name;
    void (*fn)(struct imcat *c, const char *cmd, char *args, const char *extra);
    const char *extra;
} commands[] = {
    {"/to", cmd_to, NULL},
    {"/room", cmd_room, NULL},
    {"/read", cmd_read, NULL},
    {"/typing", cmd_typing, NULL},
    {"/history", cmd_history, NULL},
    {"/more", cmd_more, NULL},
    {"/presence", cmd_presence, NULL},
    {"/bg", cmd_state, NULL},
    {"/fg", cmd_state, NULL},
    {"/roster", cmd_roster, NULL},
    {"/add", cmd_add, NULL},
    {"/remove", cmd_remove, NULL},
    {"/sub", cmd_sub, "subscribe"},
    {"/unsub", cmd_sub, "unsubscribe"},
    {"/allow", cmd_sub, "subscribed"},
    {"/deny", cmd_sub, "unsubscribed"},
    {"/join", cmd_join, NULL},
    {"/leave", cmd_leave, NULL},
    {"/subject", cmd_subject, NULL},
    {"/invite", cmd_invite, NULL},
    {"/raw", cmd_raw, NULL},
    {"/quit", cmd_quit, NULL},
    {"/help", cmd_help, NULL},
};

static void run_command(struct imcat *c, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    size_t cmd_len = sp ? (size_t)(sp - line) : len;
    const char *arg = sp ? sp : line + len;
    while (*arg == ' ')
        arg++;
    size_t arg_len = (size_t)(line + len - arg);
    while (arg_len > 0 && (arg[arg_len - 1] == ' ' || arg[arg_len - 1] == '\t'))
        arg_len--;

    const struct command *cmd = NULL;
    for (size_t i = 0; i < ARRAY_LEN(commands) && !cmd; i++)
        if (strlen(commands[i].name) == cmd_len && memcmp(line, commands[i].name, cmd_len) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "imcat: unknown command %.*s (try /help)\n", (int)cmd_len, line);
        return;
    }
    char *args = xstrndup(arg, arg_len);
    if (!is_utf8(args))
        fprintf(stderr, "imcat: line %lu is not valid UTF-8; not sent\n", c->stdin_lineno);
    else
        cmd->fn(c, cmd->name, args, cmd->extra);
    free(args);
}

static void handle_line(struct imcat *c, char *line, size_t len)
{
    c->stdin_lineno++;
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (c->opt.json) {
        send_json_text(c, line, len);
        return;
    }
    if (len == 0)
        return;
    if (memchr(line, '\0', len)) {
        fprintf(stderr, "imcat: line %lu contains a NUL byte; not sent\n", c->stdin_lineno);
        return;
    }
    if (line[0] == '/' && !(len > 1 && line[1] == '/')) {
        run_command(c, line, len);
        return;
    }
    if (line[0] == '/') {
        line++;
        len--;
    }
    send_chat(c, line, len);
}

static void stdin_take(struct imcat *c, const char *p, size_t n)
{
    if (c->stdin_discarding) {
        const char *nl = memchr(p, '\n', n);
        if (!nl)
            return;
        c->stdin_discarding = false;
        n -= (size_t)(nl + 1 - p);
        p = nl + 1;
    }
    evbuffer_add(c->stdin_buf, p, n);
    if (evbuffer_get_length(c->stdin_buf) > STDIN_LINE_MAX &&
        evbuffer_search_eol(c->stdin_buf, NULL, NULL, EVBUFFER_EOL_LF).pos < 0) {
        c->stdin_lineno++;
        fprintf(stderr, "imcat: line %lu is longer than %u bytes; dropped\n", c->stdin_lineno,
                (unsigned)STDIN_LINE_MAX);
        evbuffer_drain(c->stdin_buf, evbuffer_get_length(c->stdin_buf));
        c->stdin_discarding = true;
    }
}

/* Works through buffered lines while sending is allowed, then asks for more
 * input, pauses (output backlog), or logs out (end of input). */
static void pump_stdin(struct imcat *c)
{
    if (!c->stdin_on)
        return;
    while (c->phase == PH_READY && !output_full(c)) {
        size_t len;
        char *line = evbuffer_readln(c->stdin_buf, &len, EVBUFFER_EOL_LF);
        if (!line)
            break;
        handle_line(c, line, len);
        free(line);
    }
    if (c->phase != PH_READY || output_full(c)) {
        /* write_cb calls us again once the backlog drains. */
        event_del(c->stdin_ev);
        return;
    }
    if (c->stdin_eof) {
        event_del(c->stdin_ev);
        size_t rest = evbuffer_get_length(c->stdin_buf);
        if (rest > 0) {
            char *line = xmalloc(rest + 1);
            evbuffer_remove(c->stdin_buf, line, rest);
            line[rest] = '\0';
            handle_line(c, line, rest);
            free(line);
        }
        begin_logout(c);
        return;
    }
    if (c->stdin_pollable) {
        event_add(c->stdin_ev, NULL);
    } else {
        /* Files and /dev/null cannot be polled (epoll refuses them) but never
         * block either: read the next chunk on the next loop turn so the
         * socket gets its share. */
        struct timeval now = {0, 0};
        event_add(c->stdin_ev, &now);
    }
}

/* One read() per wake-up: after poll said readable it cannot block, so stdin
 * needs no O_NONBLOCK, which would leak into the terminal shared with the
 * shell. */
static void stdin_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imcat *c = arg;
    char buf[STDIN_CHUNK];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
        pump_stdin(c);
        return;
    }
    if (n < 0)
        LOG(WARN, "stdin_error", "error=\"%s\"", strerror(errno));
    if (n <= 0)
        c->stdin_eof = true;
    else
        stdin_take(c, buf, (size_t)n);
    pump_stdin(c);
}

static void start_stdin(struct imcat *c)
{
    c->stdin_on = true;
    pump_stdin(c);
}

/* ---- receiving ---------------------------------------------------------- */

static void on_welcome(struct imcat *c, json_t *root)
{
    if (c->phase != PH_LOGIN) {
        LOG(WARN, "unexpected_frame", "t=welcome");
        return;
    }
    json_int_t hb = DEFAULT_HB_S;
    json_int_t max = DEFAULT_MAX_FRAME;
    json_t *v = json_object_get(root, "v");
    if (v && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        protocol_error(c, "welcome has an unsupported \"v\"");
        return;
    }
    if ((v = json_object_get(root, "hb"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MAX_HB_S) {
            protocol_error(c, "welcome has an invalid \"hb\"");
            return;
        }
        hb = json_integer_value(v);
    }
    if ((v = json_object_get(root, "max"))) {
        if (!json_is_integer(v) || json_integer_value(v) < FRAME_MIN_BODY ||
            json_integer_value(v) > FRAME_MAX_LIMIT) {
            protocol_error(c, "welcome has an invalid \"max\"");
            return;
        }
        max = json_integer_value(v);
    }
    json_t *jid = json_object_get(root, "jid");
    c->hb_ms = (int64_t)hb * 1000;
    c->max_out = (size_t)max;
    c->last_sent = c->last_recv = util_mono_ms();
    c->phase = PH_READY;
    LOG(INFO, "logged_in", "addr=%s hb=%lld max=%lld", c->addr_text, (long long)hb, (long long)max);
    if (!c->opt.json && !c->opt.quiet) {
        fputs("* logged in as ", stderr);
        if (json_is_string(jid))
            put_clean(stderr, json_string_value(jid), json_string_length(jid), true);
        else
            fputs(c->opt.user, stderr);
        if (c->to)
            fprintf(stderr, ", talking to %s", c->to);
        fputs("; type a line to send it, /help for the commands\n", stderr);
    }
    arm_timer(c);
    if (c->stdout_dead)
        begin_logout(c);
    else
        start_stdin(c);
}

/* What a remembered request asked, for the line that tells its answer. */
static void out_request(const struct entry *req)
{
    switch (req->kind) {
    case REQ_ROSTER: fputs("roster", stdout); return;
    case REQ_ROSTER_SET: fputs("adding ", stdout); break;
    case REQ_ROSTER_REMOVE: fputs("removing ", stdout); break;
    case REQ_JOIN: fputs("joining ", stdout); break;
    case REQ_LEAVE: fputs("leaving ", stdout); break;
    case REQ_SUBJECT: fputs("subject of ", stdout); break;
    case REQ_HISTORY: fputs(req->room ? "history of " : "history with ", stdout); break;
    case REQ_NONE: return;
    }
    out_str(req->a ? req->a : "?");
}

static void on_error(struct imcat *c, json_t *root)
{
    json_t *code = json_object_get(root, "code");
    json_t *msg = json_object_get(root, "msg");
    json_t *id = json_object_get(root, "id");
    json_t *reason = json_object_get(root, "reason");
    if (!c->opt.json) {
        struct entry *req = json_is_string(id) ? mru_get(&c->pending, json_string_value(id)) : NULL;
        if (!c->stdout_dead) {
            fputs("! error ", stdout);
            if (json_is_string(code))
                out_json(code);
            else
                fputs("(no code)", stdout);
            if (json_is_string(reason)) {
                fputs(" (", stdout);
                out_json(reason);
                fputc(')', stdout);
            }
            fputs(": ", stdout);
            if (json_is_string(msg))
                out_json(msg);
            if (req) {
                fputs(" (", stdout);
                out_request(req);
                fputc(')', stdout);
            } else if (json_is_string(id)) {
                fputs(" (id ", stdout);
                out_json(id);
                fputc(')', stdout);
            }
            fputc('\n', stdout);
            flush_stdout(c);
        }
        if (req)
            mru_del(&c->pending, json_string_value(id));
    }
    if (c->phase == PH_LOGIN) {
        char buf[64];
        LOG(ERROR, "login_failed", "addr=%s code=%s", c->addr_text,
            json_is_string(code) ? clean_text(json_string_value(code), buf, sizeof(buf), false) : "-");
        finish(c, EXIT_LOGIN);
    }
}

static void on_bye(struct imcat *c, json_t *root)
{
    json_t *reason = json_object_get(root, "reason");
    char buf[64];
    const char *why =
        json_is_string(reason) ? clean_text(json_string_value(reason), buf, sizeof(buf), false) : "-";
    if (c->phase == PH_LOGOUT) {
        status(c, "logged out");
        finish(c, EXIT_OK);
        return;
    }
    status(c, "server ended the session: %s", why);
    LOG(ERROR, "session_ended", "addr=%s reason=%s", c->addr_text, why);
    finish(c, c->phase == PH_LOGIN ? EXIT_LOGIN : EXIT_LINK);
}

/* "HH:MM:SS" for a timestamp (ms since the epoch) of today, with the date
 * before it for another day or when asked; now when there is no usable one. */
static void format_ts(json_t *ts, bool with_date, char *out, size_t n)
{
    time_t now = time(NULL);
    time_t secs = now;
    /* Only trust a timestamp that fits a double-precision JS number. */
    if (json_is_integer(ts) && json_integer_value(ts) > 0 &&
        json_integer_value(ts) < ((json_int_t)1 << 53))
        secs = (time_t)(json_integer_value(ts) / 1000);
    struct tm tm, today;
    snprintf(out, n, "??:??:??");
    if (!localtime_r(&secs, &tm))
        return;
    if (!with_date && localtime_r(&now, &today) &&
        (tm.tm_year != today.tm_year || tm.tm_yday != today.tm_yday))
        with_date = true;
    if (strftime(out, n, with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm) == 0)
        snprintf(out, n, "??:??:??");
}

/* Who said a message: "(room) nick" in a room, else the sender's JID. */
static void out_sender(json_t *from, json_t *room)
{
    if (!json_is_string(room)) {
        out_json(from);
        return;
    }
    fputc('(', stdout);
    out_json(room);
    fputs(") ", stdout);
    const char *f = json_string_value(from);
    size_t rl = json_string_length(room);
    if (f && strncasecmp(f, json_string_value(room), rl) == 0 && f[rl] == '/')
        out_str(f + rl + 1);
    else
        out_json(from);
}

static void on_msg(struct imcat *c, json_t *root)
{
    json_t *from = json_object_get(root, "from");
    json_t *body = json_object_get(root, "body");
    json_t *room = json_object_get(root, "room");
    json_t *filtered = json_object_get(root, "filtered");
    bool sent = json_is_true(json_object_get(root, "sent"));
    if (!json_is_string(from) || !json_is_string(body)) {
        LOG(WARN, "bad_msg", "error=\"msg frame without string from/body\"");
        return;
    }
    /* With several phones, the copy of what we sent comes back to us too:
     * it is already on the screen. */
    const char *id = str_field(root, "id");
    size_t plen = strlen(c->id_prefix);
    if (sent && id && strncmp(id, c->id_prefix, plen) == 0 && id[plen] == '-' && id[plen + 1] == 'm')
        return;
    if (json_is_string(room)) {
        mru_touch(&c->rooms, json_string_value(room));
    } else if (!sent) {
        /* For /read: a contact's last message, by its bare JID. */
        char *bare = bare_of(json_string_value(from));
        struct entry *e = mru_touch(&c->last_in, bare);
        set_str(&e->a, json_string_value(from));
        set_str(&e->b, id);
        free(bare);
    }
    if (c->stdout_dead)
        return;
    char when[32];
    format_ts(json_object_get(root, "ts"), false, when, sizeof(when));
    printf("[%s] ", when);
    if (sent && !json_is_string(room)) {
        /* Sent by the user from another phone or XMPP client. */
        fputs("me -> ", stdout);
        out_field(root, "to");
    } else {
        out_sender(from, room);
    }
    fputs(": ", stdout);
    put_clean_json(stdout, body);
    if (json_is_string(filtered)) {
        if (strcmp(json_string_value(filtered), "masked") == 0) {
            fputs(" (words masked by the filter)", stdout);
        } else {
            fputs(" (filtered: ", stdout);
            out_json(filtered);
            fputc(')', stdout);
        }
    }
    if (json_is_true(json_object_get(root, "truncated")))
        fputs(" [cut: too long for the phone link]", stdout);
    fputc('\n', stdout);
    flush_stdout(c);
}

static void on_ack(struct imcat *c, json_t *root)
{
    json_t *id = json_object_get(root, "id");
    if (!json_is_string(id)) {
        LOG(WARN, "bad_ack", "error=\"ack frame without string id\"");
        return;
    }
    if (c->stdout_dead)
        return;
    fputs("(delivered to server: ", stdout);
    out_json(id);
    fputs(")\n", stdout);
    flush_stdout(c);
}

static void on_sync(struct imcat *c, json_t *root)
{
    json_t *missed = json_object_get(root, "missed");
    if (c->stdout_dead)
        return;
    if (json_is_integer(missed) && json_integer_value(missed) > 0) {
        printf("! %lld messages could not be replayed: they were kept too long or too many\n",
               (long long)json_integer_value(missed));
        flush_stdout(c);
    }
    if (json_is_true(json_object_get(root, "reset"))) {
        fputs("! the server lost its place in your messages: some may be lost\n", stdout);
        flush_stdout(c);
    }
}

/* The rest are one line each, "* " first: events and answers of section 10. */

static bool event_begin(struct imcat *c)
{
    if (c->stdout_dead)
        return false;
    fputs("* ", stdout);
    return true;
}

static void event_end(struct imcat *c)
{
    fputc('\n', stdout);
    flush_stdout(c);
}

static void on_presence(struct imcat *c, json_t *root)
{
    if (!event_begin(c))
        return;
    out_field(root, "from");
    fputs(" is ", stdout);
    out_field(root, "show");
    json_t *st = json_object_get(root, "status");
    if (json_is_string(st) && json_string_length(st) > 0) {
        fputs(": ", stdout);
        out_json(st);
    }
    event_end(c);
}

static void on_typing(struct imcat *c, json_t *root)
{
    static const struct { const char *state, *says; } words[] = {
        {"composing", "is typing"},     {"paused", "stopped typing"},
        {"active", "is in the chat"},   {"inactive", "is not looking at the chat"},
        {"gone", "left the chat"},
    };
    if (!event_begin(c))
        return;
    const char *state = str_field(root, "state");
    out_field(root, "from");
    const char *says = NULL;
    for (size_t i = 0; state && i < ARRAY_LEN(words) && !says; i++)
        if (strcmp(state, words[i].state) == 0)
            says = words[i].says;
    if (says) {
        printf(" %s", says);
    } else {
        fputs(" typing state ", stdout);
        out_field(root, "state");
    }
    if (json_is_string(json_object_get(root, "room"))) {
        fputs(" in ", stdout);
        out_field(root, "room");
    }
    event_end(c);
}

static void on_receipt(struct imcat *c, json_t *root)
{
    const char *state = str_field(root, "state");
    if (c->stdout_dead)
        return;
    /* Beside "(delivered to server: ID)": the next two stages of a message. */
    if (state && strcmp(state, "delivered") == 0) {
        fputs("(delivered to ", stdout);
    } else if (state && strcmp(state, "read") == 0) {
        fputs("(read by ", stdout);
    } else {
        fputc('(', stdout);
        out_field(root, "state");
        fputs(" by ", stdout);
    }
    out_field(root, "from");
    fputs(": ", stdout);
    out_field(root, "id");
    fputs(")\n", stdout);
    flush_stdout(c);
}

/* "bob@example.com (Bob, group Friends): you see each other's presence" */
static void out_contact(json_t *item)
{
    static const struct { const char *sub, *says; } words[] = {
        {"none", "no presence shared"},
        {"to", "you see their presence"},
        {"from", "they see your presence"},
        {"both", "you see each other's presence"},
    };
    out_field(item, "jid");
    json_t *name = json_object_get(item, "name");
    json_t *group = json_object_get(item, "group");
    bool has_name = json_is_string(name) && json_string_length(name) > 0;
    bool has_group = json_is_string(group) && json_string_length(group) > 0;
    if (has_name || has_group) {
        fputs(" (", stdout);
        if (has_name)
            out_json(name);
        if (has_group) {
            fputs(has_name ? ", group " : "group ", stdout);
            out_json(group);
        }
        fputc(')', stdout);
    }
    const char *sub = str_field(item, "sub");
    if (sub && strcmp(sub, "remove") == 0) {
        fputs(" removed", stdout);
        return;
    }
    const char *says = NULL;
    for (size_t i = 0; sub && i < ARRAY_LEN(words) && !says; i++)
        if (strcmp(sub, words[i].sub) == 0)
            says = words[i].says;
    fputs(": ", stdout);
    if (says) {
        fputs(says, stdout);
    } else {
        fputs("subscription ", stdout);
        out_field(item, "sub");
    }
    if (json_is_string(json_object_get(item, "ask")))
        fputs(", your request to see theirs is pending", stdout);
}

/* The answer to /roster: a count, then one contact per line. */
static void on_roster(struct imcat *c, json_t *root)
{
    const char *id = str_field(root, "id");
    /* A long roster comes in parts: all but the last say "more". */
    bool more = json_is_true(json_object_get(root, "more"));
    struct entry *req = id ? mru_get(&c->pending, id) : NULL;
    bool first = !req || req->count == 0;
    if (req && more)
        req->count++;
    else if (id)
        mru_del(&c->pending, id);
    json_t *items = json_object_get(root, "items");
    size_t n = 0, i;
    json_t *item;
    json_array_foreach(items, i, item)
        n += json_is_object(item);
    if (!event_begin(c))
        return;
    if (!first)
        printf("roster (continued): %zu more", n);
    else if (n == 0)
        fputs("roster: no contacts", stdout);
    else
        printf("roster: %zu contact%s%s", n, n == 1 ? "" : "s", more ? ", more follow" : "");
    fputc('\n', stdout);
    json_array_foreach(items, i, item) {
        if (!json_is_object(item))
            continue;
        fputs("    ", stdout);
        out_contact(item);
        fputc('\n', stdout);
    }
    flush_stdout(c);
}

static void on_roster_push(struct imcat *c, json_t *root)
{
    if (!event_begin(c))
        return;
    fputs("contact ", stdout);
    out_contact(root);
    event_end(c);
}

static void on_sub(struct imcat *c, json_t *root)
{
    const char *type = str_field(root, "type");
    if (!event_begin(c))
        return;
    out_field(root, "from");
    if (type && strcmp(type, "subscribe") == 0) {
        fputs(" asks to see your presence: /allow ", stdout);
        out_field(root, "from");
        fputs(" or /deny ", stdout);
        out_field(root, "from");
    } else if (type && strcmp(type, "subscribed") == 0) {
        fputs(" lets you see their presence", stdout);
    } else if (type && strcmp(type, "unsubscribe") == 0) {
        fputs(" no longer follows your presence", stdout);
    } else if (type && strcmp(type, "unsubscribed") == 0) {
        fputs(" does not let you see their presence", stdout);
    } else {
        fputs(" sent a subscription ", stdout);
        out_field(root, "type");
    }
    event_end(c);
}

static void on_occupant(struct imcat *c, json_t *root)
{
    const char *room = str_field(root, "room");
    const char *show = str_field(root, "show");
    const char *nick = str_field(root, "nick");
    bool me = json_is_true(json_object_get(root, "me"));
    bool gone = show && strcmp(show, "offline") == 0;
    if (me && room) {
        if (gone) {
            mru_del(&c->rooms, room);
        } else {
            struct entry *r = mru_touch(&c->rooms, room);
            set_str(&r->a, nick);
        }
    }
    if (!event_begin(c))
        return;
    out_field(root, "room");
    fputs(": ", stdout);
    if (me) {
        fputs(gone ? "you (" : "you are here as ", stdout);
        out_field(root, "nick");
        if (gone)
            fputs(") left", stdout);
    } else {
        out_field(root, "nick");
        if (json_is_string(json_object_get(root, "jid"))) {
            fputs(" (", stdout);
            out_field(root, "jid");
            fputc(')', stdout);
        }
        fputs(gone ? " left" : " is here", stdout);
    }
    if (!gone && show && strcmp(show, "online") != 0) {
        fputs(", ", stdout);
        out_str(show);
    }
    json_t *role = json_object_get(root, "role");
    json_t *aff = json_object_get(root, "affiliation");
    bool has_role = !gone && json_is_string(role) && strcmp(json_string_value(role), "none") != 0;
    bool has_aff = !gone && json_is_string(aff) && strcmp(json_string_value(aff), "none") != 0;
    if (has_role || has_aff) {
        fputs(" [", stdout);
        if (has_role)
            out_json(role);
        if (has_aff) {
            fputs(has_role ? ", " : "", stdout);
            out_json(aff);
        }
        fputc(']', stdout);
    }
    event_end(c);
}

static void on_subject(struct imcat *c, json_t *root)
{
    const char *room = str_field(root, "room");
    const char *subject = str_field(root, "subject");
    if (room) {
        struct entry *r = mru_touch(&c->rooms, room);
        set_str(&r->b, subject);
    }
    if (!event_begin(c))
        return;
    out_field(root, "room");
    if (subject && *subject) {
        fputs(": subject \"", stdout);
        out_str(subject);
        fputc('"', stdout);
    } else {
        fputs(": no subject", stdout);
    }
    if (json_is_string(json_object_get(root, "by"))) {
        fputs(" (set by ", stdout);
        out_field(root, "by");
        fputc(')', stdout);
    }
    event_end(c);
}

static void on_invite(struct imcat *c, json_t *root)
{
    json_t *reason = json_object_get(root, "reason");
    json_t *pass = json_object_get(root, "pass");
    if (!event_begin(c))
        return;
    out_field(root, "from");
    fputs(" invites you to ", stdout);
    out_field(root, "room");
    if (json_is_string(reason) && json_string_length(reason) > 0) {
        fputs(": ", stdout);
        out_json(reason);
    }
    fputs("; to accept: /join ", stdout);
    out_field(root, "room");
    if (json_is_string(pass)) {
        fputs(" NICK ", stdout);
        out_json(pass);
    }
    event_end(c);
}

static void on_ok(struct imcat *c, json_t *root)
{
    const char *id = str_field(root, "id");
    struct entry *req = id ? mru_get(&c->pending, id) : NULL;
    if (!req) {
        if (c->stdout_dead)
            return;
        fputs("(ok: ", stdout);
        out_field(root, "id");
        fputs(")\n", stdout);
        flush_stdout(c);
        return;
    }
    enum req_kind kind = req->kind;
    char *what = req->a ? xstrdup(req->a) : NULL;
    char *nick = xstrdup(str_field(root, "nick") ? str_field(root, "nick") : req->b ? req->b : "?");
    mru_del(&c->pending, id);
    bool cleared = false;
    if (kind == REQ_JOIN && what) {
        struct entry *r = mru_touch(&c->rooms, what);
        set_str(&r->a, nick);
        set_str(&c->to, what);
        c->to_room = true;
    } else if (kind == REQ_LEAVE && what) {
        mru_del(&c->rooms, what);
        if (c->to && c->to_room && strcasecmp(c->to, what) == 0) {
            free(c->to);
            c->to = NULL;
            c->to_room = false;
            cleared = true;
        }
    }
    if (event_begin(c)) {
        switch (kind) {
        case REQ_ROSTER_SET: fputs("contact ", stdout); break;
        case REQ_ROSTER_REMOVE: fputs("removed contact ", stdout); break;
        case REQ_JOIN: fputs("joined ", stdout); break;
        case REQ_LEAVE: fputs("left ", stdout); break;
        case REQ_SUBJECT: fputs("changed the subject of ", stdout); break;
        default: fputs("ok: ", stdout); break;
        }
        out_str(what ? what : "?");
        if (kind == REQ_ROSTER_SET)
            fputs(" saved", stdout);
        if (kind == REQ_JOIN) {
            fputs(" as ", stdout);
            out_str(nick);
            fputs("; lines now go there", stdout);
        }
        if (cleared)
            fputs("; no recipient now", stdout);
        event_end(c);
    }
    free(what);
    free(nick);
}

/* One archived message, with its date: it is history, not news. */
static void on_hist(struct imcat *c, json_t *root)
{
    const char *id = str_field(root, "id");
    struct entry *req = id ? mru_get(&c->pending, id) : NULL;
    if (req)
        req->count++;
    json_t *from = json_object_get(root, "from");
    json_t *body = json_object_get(root, "body");
    if (c->stdout_dead)
        return;
    char when[32];
    format_ts(json_object_get(root, "ts"), true, when, sizeof(when));
    printf("[%s] ", when);
    out_sender(from, json_object_get(root, "room"));
    fputs(": ", stdout);
    if (json_is_string(body))
        put_clean_json(stdout, body);
    if (json_is_true(json_object_get(root, "truncated")))
        fputs(" [cut: too long for the phone link]", stdout);
    fputc('\n', stdout);
    flush_stdout(c);
}

/* The end of a history page; remembers where /more goes on. */
static void on_history(struct imcat *c, json_t *root)
{
    const char *id = str_field(root, "id");
    struct entry *req = id ? mru_get(&c->pending, id) : NULL;
    bool complete = json_is_true(json_object_get(root, "complete"));
    const char *first = str_field(root, "first");
    bool more = !complete && first;
    long count = -1;
    if (req) {
        count = req->count;
        set_str(&c->more_target, req->a);
        c->more_room = req->room;
        c->more_max = req->n;
        set_str(&c->more_before, more ? first : NULL);
    } else if (json_is_integer(json_object_get(root, "count"))) {
        count = (long)json_integer_value(json_object_get(root, "count"));
    }
    if (event_begin(c)) {
        fputs("end of history", stdout);
        if (req) {
            fputs(req->room ? " of " : " with ", stdout);
            out_str(req->a ? req->a : "?");
        }
        if (count >= 0)
            printf(": %ld message%s", count, count == 1 ? "" : "s");
        fputs(more ? "; /more for older ones" : "; nothing older", stdout);
        event_end(c);
    }
    if (req)
        mru_del(&c->pending, id);
}

static void print_json_frame(struct imcat *c, json_t *root)
{
    if (c->stdout_dead)
        return;
    /* Re-encoding (rather than echoing the bytes) guarantees one line per
     * frame even if the server pretty-printed. */
    char *s = json_dumps(root, JSON_COMPACT);
    if (!s)
        return;
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    flush_stdout(c);
}

/* How interactive mode shows each frame of the protocol but welcome, error,
 * bye and hb. */
static const struct {
    const char *t;
    void (*fn)(struct imcat *c, json_t *root);
} printers[] = {
    {"msg", on_msg},           {"ack", on_ack},
    {"sync", on_sync},         {"presence", on_presence},
    {"typing", on_typing},     {"receipt", on_receipt},
    {"roster", on_roster},     {"roster_push", on_roster_push},
    {"sub", on_sub},           {"occupant", on_occupant},
    {"subject", on_subject},   {"invite", on_invite},
    {"ok", on_ok},             {"hist", on_hist},
    {"history", on_history},
};

static void handle_frame(struct imcat *c, const char *body, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        char why[200];
        snprintf(why, sizeof(why), "invalid JSON from server: %s", err.text);
        protocol_error(c, why);
        return;
    }
    const char *t = json_string_value(json_object_get(root, "t"));
    if (!json_is_object(root) || !t) {
        protocol_error(c, "frame is not an object with a string \"t\"");
        json_decref(root);
        return;
    }
    c->last_recv = util_mono_ms();
    char t_buf[64];
    LOG(DEBUG, "frame_in", "t=%s len=%zu", clean_text(t, t_buf, sizeof(t_buf), false), len);
    if (c->opt.json)
        print_json_frame(c, root);

    if (strcmp(t, "welcome") == 0) {
        on_welcome(c, root);
    } else if (strcmp(t, "error") == 0) {
        on_error(c, root);
    } else if (strcmp(t, "bye") == 0) {
        on_bye(c, root);
    } else if (c->opt.json || strcmp(t, "hb") == 0) {
        /* already printed as JSON, or nothing to show */
    } else {
        size_t i = 0;
        while (i < ARRAY_LEN(printers) && strcmp(t, printers[i].t) != 0)
            i++;
        if (i < ARRAY_LEN(printers))
            printers[i].fn(c, root);
        else
            LOG(WARN, "unknown_frame", "t=%s", clean_text(t, t_buf, sizeof(t_buf), false));
    }

    /* Messages and stored events count as stored once printed: ack their seq
     * (acks are cumulative) so the server stops keeping them for a replay.
     * Not when nobody could read them: then they come again next time. A
     * sync has a seq too, but it only says where the stream stands. */
    json_t *seq = json_object_get(root, "seq");
    if (strcmp(t, "sync") != 0 && json_is_integer(seq) && json_integer_value(seq) > 0 &&
        (c->phase == PH_READY || c->phase == PH_LOGOUT) && !c->stdout_dead) {
        json_t *ack = json_pack("{s:s, s:I}", "t", "ack", "seq", json_integer_value(seq));
        send_frame(c, ack, false);
        json_decref(ack);
    }
    json_decref(root);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct imcat *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (c->phase != PH_DONE && c->phase != PH_CONNECTING) {
        size_t avail = evbuffer_get_length(in);
        if (avail < FRAME_HEADER)
            return;
        uint8_t hdr[FRAME_HEADER];
        const uint8_t *body;
        size_t body_len;
        evbuffer_copyout(in, hdr, sizeof(hdr));
        /* Judge the announced length from the header alone, before buffering
         * up to a megabyte of a frame that is going to be refused anyway. */
        enum frame_status st = frame_parse(hdr, sizeof(hdr), FRAME_MAX_LIMIT, &body, &body_len);
        if (st == FRAME_TOO_BIG || st == FRAME_TOO_SMALL) {
            char why[80];
            snprintf(why, sizeof(why), "frame length %zu out of range", body_len);
            protocol_error(c, why);
            return;
        }
        if (avail - FRAME_HEADER < body_len)
            return;
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(FRAME_HEADER + body_len));
        if (!p || frame_parse(p, FRAME_HEADER + body_len, FRAME_MAX_LIMIT, &body, &body_len) != FRAME_OK) {
            protocol_error(c, "cannot parse frame");
            return;
        }
        handle_frame(c, (const char *)body, body_len);
        evbuffer_drain(in, FRAME_HEADER + body_len);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    /* The output backlog fell below OUT_LOW: resume stdin if it was paused. */
    pump_stdin(arg);
}

/* ---- connection --------------------------------------------------------- */

/* The one place that decides what the link is made of: plain TCP, or TLS
 * with the edge's certificate checked against --host. Everything above only
 * talks to a bufferevent. */
static struct bufferevent *link_new(struct imcat *c)
{
    if (!c->ssl_ctx)
        return bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = tlsctx_client_ssl(c->ssl_ctx, c->opt.host);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static void addr_to_text(const struct addrinfo *ai, char *out, size_t n)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, n, "?");
        return;
    }
    snprintf(out, n, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

static void event_cb(struct bufferevent *bev, short what, void *arg);

/* Try the resolved addresses in order: "localhost" often yields ::1 first
 * while the edge listens on 127.0.0.1 only. */
static void connect_next(struct imcat *c)
{
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    while (c->addr_next) {
        struct addrinfo *ai = c->addr_next;
        c->addr_next = ai->ai_next;
        addr_to_text(ai, c->addr_text, sizeof(c->addr_text));
        c->bev = link_new(c);
        if (!c->bev) {
            LOG(ERROR, "connect_failed", "addr=%s error=\"cannot create bufferevent\"", c->addr_text);
            finish(c, EXIT_LINK);
            return;
        }
        bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
        c->deadline = util_mono_ms() + CONNECT_TIMEOUT_MS;
        /* libevent may report an immediate failure through event_cb as well
         * as through the return value; only the return value counts here. */
        c->in_connect_call = true;
        int r = bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen);
        c->in_connect_call = false;
        if (r == 0) {
            arm_timer(c);
            return;
        }
        LOG(WARN, "connect_failed", "addr=%s error=\"%s\"", c->addr_text, strerror(errno));
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    LOG(ERROR, "connect_failed", "host=%s port=%s error=\"no address accepted the connection\"",
        c->opt.host, c->opt.port);
    finish(c, EXIT_LINK);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imcat *c = arg;
    if (c->phase == PH_CONNECTING)
        connect_next(c);
}

static void on_connected(struct imcat *c)
{
    int one = 1;
    /* Frames are small and a heartbeat stuck behind Nagle eats into the
     * server's idle budget. */
    (void)setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    LOG(INFO, "connected", "addr=%s", c->addr_text);
    c->phase = PH_LOGIN;
    c->deadline = util_mono_ms() + LOGIN_TIMEOUT_MS;
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    send_login(c);
    arm_timer(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct imcat *c = arg;
    if (bev != c->bev || c->in_connect_call || c->phase == PH_DONE)
        return;
    if (c->phase == PH_CONNECTING) {
        if (what & BEV_EVENT_CONNECTED) {
            on_connected(c);
            return;
        }
        LOG(WARN, "connect_failed", "addr=%s error=\"%s\"", c->addr_text,
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        /* Not from inside the bufferevent's own callback: free it and move
         * on from a fresh loop turn. */
        event_active(c->retry_ev, EV_TIMEOUT, 0);
        return;
    }
    /* Our logout was sent: a close without bye still ends the run cleanly. */
    if (c->phase == PH_LOGOUT) {
        finish(c, EXIT_OK);
        return;
    }
    const char *why = (what & BEV_EVENT_EOF) ? "server closed the connection"
                                              : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    LOG(ERROR, "connection_lost", "addr=%s error=\"%s\"", c->addr_text, why);
    finish(c, EXIT_LINK);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct imcat *c = arg;
    if (c->phase == PH_READY) {
        status(c, "logging out");
        begin_logout(c);
    } else if (c->phase == PH_LOGOUT) {
        finish(c, EXIT_OK); /* a second ^C: do not wait for bye */
    } else {
        LOG(WARN, "interrupted", "signal=%d", (int)sig);
        finish(c, EXIT_LOGIN);
    }
}

/* ---- command line ------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: imcat --host HOST --port PORT --user JID [--password PASS]\n"
          "             [--dev NAME] [--to JID] [--json] [--quiet] [--log-level LEVEL]\n"
          "             [--tls] [--cafile FILE]\n"
          "\n"
          "Phone protocol v1 client for imb-edge.\n"
          "\n"
          "  --host HOST        edge address (default " DEFAULT_HOST ")\n"
          "  --port PORT        edge port (default " DEFAULT_PORT ")\n"
          "  --user JID         account to log in as, e.g. alice@localhost\n"
          "  --password PASS    password; default $IMCAT_PASSWORD, which unlike argv\n"
          "                     is not visible to other users in ps\n"
          "  --dev NAME         device label: 1..64 of [A-Za-z0-9._-]\n"
          "  --to JID           initial recipient (interactive mode)\n"
          "  --json             scripting mode: each stdin line is a JSON frame sent\n"
          "                     as-is (\"msg\" without \"id\" gets one); each received\n"
          "                     frame is printed as one JSON line. End of input logs out.\n"
          "  --quiet            no help or status lines\n"
          "  --tls              TLS to the edge; its certificate must match HOST\n"
          "  --cafile FILE      CA certificate(s) to verify the edge (implies --tls;\n"
          "                     default: the system's trusted CAs)\n"
          "  --log-level LEVEL  debug|info|warn|error for stderr diagnostics (default warn)\n"
          "  --help             this text\n"
          "\n"
          "Interactive mode reads chat lines from stdin:\n",
          f);
    print_chat_help(f);
    fputs("\n"
          "Exit status: 0 ok, 1 login failed, 2 usage, 3 connection lost or protocol error.\n",
          f);
}

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("imcat: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'imcat --help'.\n", stderr);
    return EXIT_USAGE;
}

/* Returns -1 when the options are fine, else the exit status to leave with. */
static int parse_args(struct options *o, int argc, char **argv)
{
    enum { OPT_HOST = 256, OPT_PORT, OPT_USER, OPT_PASSWORD, OPT_DEV, OPT_TO, OPT_JSON,
           OPT_QUIET, OPT_LOG_LEVEL, OPT_TLS, OPT_CAFILE };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"user", required_argument, NULL, OPT_USER},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"dev", required_argument, NULL, OPT_DEV},
        {"to", required_argument, NULL, OPT_TO},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cafile", required_argument, NULL, OPT_CAFILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    o->host = DEFAULT_HOST;
    o->port = DEFAULT_PORT;
    log_min_level = LOG_WARN;
    opterr = 0; /* we word our own errors */
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_HOST: o->host = optarg; break;
        case OPT_PORT: o->port = optarg; break;
        case OPT_USER: o->user = optarg; break;
        case OPT_PASSWORD:
            free(o->password);
            o->password = xstrdup(optarg);
            /* Blank the argv copy so it stops showing in ps / /proc/PID/cmdline. */
            memset(optarg, 0, strlen(optarg));
            break;
        case OPT_DEV: o->dev = optarg; break;
        case OPT_TO: o->to = optarg; break;
        case OPT_JSON: o->json = true; break;
        case OPT_QUIET: o->quiet = true; break;
        case OPT_TLS: o->tls = true; break;
        case OPT_CAFILE: o->cafile = optarg; o->tls = true; break;
        case OPT_LOG_LEVEL: {
            int l = log_parse_level(optarg);
            if (l < 0)
                return usage_error("unknown log level: %s", optarg);
            log_min_level = (enum log_level)l;
            break;
        }
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case ':':
            return usage_error("option needs a value: %s", argv[optind - 1]);
        default:
            return usage_error("unknown option: %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument: %s", argv[optind]);
    if (!o->user)
        return usage_error("%s", "--user JID is required");
    if (!plausible_jid(o->user))
        return usage_error("not a JID: %s", o->user);
    if (!o->password) {
        const char *env = getenv("IMCAT_PASSWORD");
        if (!env)
            return usage_error("%s", "a password is required: --password or $IMCAT_PASSWORD");
        o->password = xstrdup(env);
    }
    if (!is_utf8(o->password))
        return usage_error("%s", "the password is not valid UTF-8");
    if (o->dev && !valid_dev(o->dev))
        return usage_error("bad --dev (1..64 of [A-Za-z0-9._-]): %s", o->dev);
    if (o->to && !plausible_jid(o->to))
        return usage_error("not a JID: %s", o->to);
    if (!*o->host)
        return usage_error("%s", "--host is empty");
    char *end;
    errno = 0;
    long port = strtol(o->port, &end, 10);
    if (errno || end == o->port || *end || port < 1 || port > 65535)
        return usage_error("bad --port: %s", o->port);
    return -1;
}

/* If we were started with fd 0, 1 or 2 closed, our socket could land on one of
 * them and be read as stdin or written as stdout: park /dev/null there. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (nfd >= 0 && nfd != fd) {
            dup2(nfd, fd);
            close(nfd);
        }
    }
}

static bool stdin_is_pollable(void)
{
    struct stat st;
    if (fstat(STDIN_FILENO, &st) != 0)
        return false;
    return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(STDIN_FILENO);
}

int main(int argc, char **argv)
{
    static struct imcat c; /* static: zeroed, and outlives every callback */
    ensure_std_fds();
    log_set_name("imcat");
    int rc = parse_args(&c.opt, argc, argv);
    if (rc >= 0) {
        if (c.opt.password)
            explicit_bzero(c.opt.password, strlen(c.opt.password));
        free(c.opt.password);
        return rc;
    }
    /* Writes to a closed socket or stdout must come back as EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    tzset();
    util_random_hex(c.id_prefix, 4);
    c.max_out = DEFAULT_MAX_FRAME;
    c.hb_ms = (int64_t)DEFAULT_HB_S * 1000;
    c.to = c.opt.to ? xstrdup(c.opt.to) : NULL;
    c.rooms.icase = true;
    c.last_in.icase = true;
    c.phase = PH_CONNECTING;
    c.exit_code = EXIT_LINK;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    int gai = getaddrinfo(c.opt.host, c.opt.port, &hints, &c.addrs);
    if (gai != 0) {
        LOG(ERROR, "resolve_failed", "host=%s error=\"%s\"", c.opt.host, gai_strerror(gai));
        goto out;
    }

    c.base = event_base_new();
    if (!c.base) {
        LOG(ERROR, "internal", "error=\"cannot create event base\"");
        goto out;
    }
    if (c.opt.tls) {
        char err[300];
        c.ssl_ctx = tlsctx_client(c.opt.cafile, err, sizeof(err));
        if (!c.ssl_ctx) {
            LOG(ERROR, "tls_setup_failed", "error=\"%s\"", err);
            c.exit_code = EXIT_USAGE;
            goto out;
        }
    }
    c.stdin_pollable = stdin_is_pollable();
    c.stdin_buf = evbuffer_new();
    c.timer = evtimer_new(c.base, timer_cb, &c);
    c.retry_ev = event_new(c.base, -1, 0, retry_cb, &c);
    c.stdin_ev = c.stdin_pollable
                     ? event_new(c.base, STDIN_FILENO, EV_READ | EV_PERSIST, stdin_cb, &c)
                     : event_new(c.base, -1, 0, stdin_cb, &c);
    c.sigint_ev = evsignal_new(c.base, SIGINT, signal_cb, &c);
    c.sigterm_ev = evsignal_new(c.base, SIGTERM, signal_cb, &c);
    if (!c.stdin_buf || !c.timer || !c.retry_ev || !c.stdin_ev || !c.sigint_ev || !c.sigterm_ev) {
        LOG(ERROR, "internal", "error=\"cannot create events\"");
        goto out;
    }
    evsignal_add(c.sigint_ev, NULL);
    evsignal_add(c.sigterm_ev, NULL);

    c.addr_next = c.addrs;
    connect_next(&c);
    if (c.phase != PH_DONE) {
        event_base_dispatch(c.base);
        if (c.phase != PH_DONE) {
            LOG(ERROR, "internal", "error=\"event loop ended early\"");
            c.exit_code = EXIT_LINK;
        }
    }

out:
    rc = c.exit_code;
    if (c.bev)
        bufferevent_free(c.bev);
    if (c.ssl_ctx)
        SSL_CTX_free(c.ssl_ctx);
    if (c.timer)
        event_free(c.timer);
    if (c.retry_ev)
        event_free(c.retry_ev);
    if (c.stdin_ev)
        event_free(c.stdin_ev);
    if (c.sigint_ev)
        event_free(c.sigint_ev);
    if (c.sigterm_ev)
        event_free(c.sigterm_ev);
    if (c.stdin_buf)
        evbuffer_free(c.stdin_buf);
    if (c.base)
        event_base_free(c.base);
    if (c.addrs)
        freeaddrinfo(c.addrs);
    free(c.to);
    mru_clear(&c.rooms);
    mru_clear(&c.last_in);
    mru_clear(&c.pending);
    free(c.more_target);
    free(c.more_before);
    explicit_bzero(c.opt.password, strlen(c.opt.password));
    free(c.opt.password);
    libevent_global_shutdown();
    fflush(stdout);
    return rc;
}
