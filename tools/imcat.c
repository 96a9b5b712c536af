/* imcat.c - the phone client CLI: speaks phone protocol v1 to imb-edge through
 * the client library (client/imb_client.h: framing, login, heartbeats, acks,
 * resend, resume across the --host list with backoff), either as a chat
 * prompt for humans (line editing with libedit on a terminal) or, with
 * --json, as one JSON frame per line in each direction for scripts and
 * integration tests. This file owns the command line, the chat commands, how
 * each frame is shown, and when the run ends. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "imb_client_event.h"

#include "frame.h"
#include "log.h"
#include "proto.h"
#include "schema.h"
#include "util.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "7222"
/* --host may be given this many times: the edges reconnects go round. */
#define MAX_HOSTS 8
/* Reconnect backoff: a random delay up to min(cap, base * 2^attempt). */
#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 30000
/* Stop reading stdin while this much is queued for a server that does not
 * read, so a big script cannot grow our memory without bound; look again
 * this often. */
#define OUT_HIGH (256 * 1024)
#define BACKLOG_POLL_MS 20
#define STDIN_CHUNK 65536
/* No legal frame is longer than this, so neither is a useful stdin line. */
#define STDIN_LINE_MAX FRAME_MAX_LIMIT
#define DEV_MAX 64
/* How many rooms (a user may be in 100), contacts' last messages,
 * unanswered requests and messages waiting for their status imcat
 * remembers: the server (untrusted) can only make it forget, not grow. */
#define MRU_MAX 128
/* A join of a JID that is no room may go unanswered (docs/PROTOCOL.md
 * 10.6): after this long, say so. */
#define JOIN_TIMEOUT_MS 30000
/* The server's ack of a message is shown this long after it came, unless
 * a receipt for the message comes first: a bounce (error undeliverable)
 * follows the ack within this time, and then only the error is shown. */
#define ACK_HOLD_MS 1500
/* Page size of /history when none is given: a screenful. */
#define HISTORY_DEFAULT 20

enum exit_code { EXIT_OK = 0, EXIT_LOGIN = 1, EXIT_USAGE = 2, EXIT_LINK = 3 };

enum phase {
    PH_CONNECTING, /* no session: connecting, logging in, or waiting to retry */
    PH_READY,      /* logged in: stdin flows */
    PH_LOGOUT,     /* logout sent, waiting for bye (the library bounds the wait) */
    PH_DONE,       /* exit code decided, the loop is stopping */
};

struct options {
    const char *hosts[MAX_HOSTS]; /* --host, each HOST or HOST:PORT; n_hosts of them */
    size_t n_hosts;
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
    REQ_MSG,           /* a message of ours: n 1 once its ack was shown, due: when to show a held ack */
};

struct entry {
    char *key;
    enum req_kind kind;
    char *a;
    char *b;
    long n;
    long count; /* REQ_HISTORY: messages received so far; REQ_ROSTER: parts */
    bool room;
    int64_t due; /* monotonic ms after which an unanswered request failed (REQ_MSG: its held ack shows); 0: none */
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
    struct imb_edge edges[MAX_HOSTS]; /* from --host/--port; strings in edge_buf */
    char edge_buf[MAX_HOSTS][2][256];
    size_t n_edges;
    struct imb_client_ev *cev; /* the library on our event base; owns the connection */
    struct imb_client *cl;     /* its client */

    struct event *timer;      /* held acks and unanswered joins */
    struct event *backlog_ev; /* looks again at a full output backlog */
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
    /* Interactive on a terminal: libedit reads the lines; output printed
     * while the prompt shows clears its line first and redraws it after. */
    bool tty;
    bool prompt_hidden;
    char prompt[80];

    enum phase phase;
    int exit_code;
    bool ever_logged_in;   /* a welcome came: from then on a lost link is retried */
    bool logout_asked;     /* our logout (end of input, /quit, a signal) */
    unsigned failures;     /* connection attempts failed before the first welcome */
    char login_error[32];  /* the code of an error answering our login, "" if none */
    unsigned connects;     /* welcomes so far */
    uint64_t resume_seq;   /* the position the current login resumes from */
    long replayed;         /* stored frames shown between this welcome and its sync */
    bool in_resume;        /* after a reconnect's welcome, before its sync */
    char edge_text[300];   /* host:port of the current attempt */

    char *to;
    bool to_room; /* the current recipient is a room: lines go with group:true */
    char id_prefix[9];
    unsigned long id_seq;

    struct mru rooms;   /* key room JID, a our nick, b its subject */
    struct mru last_in; /* key a contact's bare JID, a the full JID of its last message, b its id */
    struct mru pending; /* key a request's or a message's id */
    /* Where /more continues: the last /history and the page before it. */
    char *more_target;
    bool more_room;
    long more_max;
    char *more_before;
};

static void pump_stdin(struct imcat *c);
static void begin_logout(struct imcat *c);
static void arm_timer(struct imcat *c);
static void tty_hide(struct imcat *c);
static void tty_show(struct imcat *c);

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
        if (!e->due || e->due > now || e->kind == REQ_MSG) {
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

/* Hand one frame (not a msg, login, ack or logout) to the library, which
 * refuses it while there is no session or when it is above the server's
 * limit. */
static int send_frame(struct imcat *c, json_t *frame, bool secret)
{
    char err[128] = "";
    int r = imb_client_send(c->cl, frame, err, sizeof(err));
    if (r != 0) {
        const char *t = json_string_value(json_object_get(frame, "t"));
        fprintf(stderr, "imcat: %s: %s%s; not sent\n", t ? t : "frame", err,
                c->phase == PH_READY ? "" : " (reconnecting: try again once logged in)");
        return -1;
    }
    const char *t = json_string_value(json_object_get(frame, "t"));
    LOG(DEBUG, "frame_out", "t=%s", t ? t : "-");
    imb_client_ev_flush(c->cev);
    return 0;
}

/* A chat message: into the library's outbox, which sends it now or after
 * the next welcome, and again after a reconnect until it is acknowledged. */
static int send_msg(struct imcat *c, const char *id, const char *to, const char *body, bool group)
{
    char err[128] = "";
    if (imb_client_send_msg(c->cl, to, body, group, id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "imcat: message %s: %s; not sent\n", id, err);
        return -1;
    }
    if (!c->opt.json) {
        struct entry *e = mru_touch(&c->pending, id);
        e->kind = REQ_MSG;
        e->n = 0;
        e->due = 0;
    }
    LOG(DEBUG, "msg_out", "id=%s", id);
    imb_client_ev_flush(c->cev);
    return 0;
}

static bool output_full(const struct imcat *c)
{
    return imb_client_ev_backlog(c->cev) >= OUT_HIGH;
}

/* ---- message statuses --------------------------------------------------- */

/* "(delivered to server: ID)", once per message. */
static void show_ack(struct imcat *c, struct entry *m)
{
    m->n = 1;
    m->due = 0;
    if (c->stdout_dead)
        return;
    fputs("(delivered to server: ", stdout);
    out_str(m->key);
    fputs(")\n", stdout);
    flush_stdout(c);
}

/* Every held ack, now (a receipt proves delivery; the run ends). */
static void show_held_acks(struct imcat *c, int64_t upto)
{
    for (size_t i = c->pending.n; i-- > 0;) {
        struct entry *e = &c->pending.e[i];
        if (e->kind == REQ_MSG && e->due && e->due <= upto)
            show_ack(c, e);
    }
}

/* ---- timer: held acks, unanswered joins --------------------------------- */

static void arm_timer(struct imcat *c)
{
    int64_t due = INT64_MAX;
    for (size_t i = 0; i < c->pending.n; i++)
        if (c->pending.e[i].due && c->pending.e[i].due < due)
            due = c->pending.e[i].due;
    if (due == INT64_MAX) {
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
    tty_hide(c);
    show_held_acks(c, now);
    expire_requests(c, now);
    tty_show(c);
    arm_timer(c);
}

/* ---- session transitions ------------------------------------------------ */

static void begin_logout(struct imcat *c)
{
    if (c->phase == PH_LOGOUT || c->phase == PH_DONE)
        return;
    c->logout_asked = true;
    c->stdin_on = false;
    event_del(c->stdin_ev);
    c->phase = PH_LOGOUT;
    /* Logged in: logout, bye, then a final DISCONNECT. Else the library
     * stops at once (a final DISCONNECT too). */
    imb_client_logout(c->cl, imb_client_ev_now());
    imb_client_ev_flush(c->cev);
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
    if (t && strcmp(t, "msg") == 0) {
        /* Through the outbox: resent with its id after a reconnect. */
        const char *to = json_string_value(json_object_get(f, "to"));
        const char *body = json_string_value(json_object_get(f, "body"));
        json_t *id = json_object_get(f, "id");
        json_t *group = json_object_get(f, "group");
        char idbuf[32];
        if (!to || !body || (id && !json_is_string(id)) || (group && !json_is_boolean(group))) {
            fprintf(stderr, "imcat: line %lu: a msg needs string \"to\" and \"body\" (and a string "
                    "\"id\", a boolean \"group\"); not sent\n", c->stdin_lineno);
        } else {
            if (!id)
                next_msg_id(c, idbuf, sizeof(idbuf));
            send_msg(c, id ? json_string_value(id) : idbuf, to, body, json_is_true(group));
        }
    } else if (t && strcmp(t, "logout") == 0) {
        /* A script may log out by itself: like our own logout, the bye
         * that follows ends the run with status 0. */
        begin_logout(c);
    } else if (t && strcmp(t, "ack") == 0) {
        /* imcat acknowledges what it printed by itself; a script's ack can
         * only say it stored up to there. */
        json_t *seq = json_object_get(f, "seq");
        if (json_is_integer(seq) && json_integer_value(seq) > 0)
            imb_client_ack(c->cl, (uint64_t)json_integer_value(seq));
        imb_client_ev_flush(c->cev);
    } else if (t && strcmp(t, "login") == 0) {
        fprintf(stderr, "imcat: line %lu: imcat logs in by itself; not sent\n", c->stdin_lineno);
    } else {
        send_frame(c, f, false);
    }
    json_decref(f);
}

static void send_chat(struct imcat *c, const char *text, size_t len)
{
    if (!c->to) {
        fprintf(stderr, "imcat: no recipient yet; set one with /to JID or /room ROOM\n");
        return;
    }
    char *body = xstrndup(text, len);
    if (!is_utf8(body)) {
        fprintf(stderr, "imcat: line %lu is not valid UTF-8; not sent\n", c->stdin_lineno);
        free(body);
        return;
    }
    char id[32];
    next_msg_id(c, id, sizeof(id));
    send_msg(c, id, c->to, body, c->to_room);
    free(body);
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

/* ---- the terminal: prompt and line editing (libedit) -------------------- */

static struct imcat *tty_owner; /* libedit's line callback has no argument */

static void tty_set_prompt(struct imcat *c)
{
    if (!c->tty)
        return;
    const char *state = c->phase == PH_READY ? "" : "(offline) ";
    if (c->to)
        snprintf(c->prompt, sizeof(c->prompt), "%s%.60s> ", state, c->to);
    else
        snprintf(c->prompt, sizeof(c->prompt), "%s> ", state);
    rl_set_prompt(c->prompt);
}

/* Before printing while the prompt shows: clear its line. */
static void tty_hide(struct imcat *c)
{
    if (!c->tty || c->prompt_hidden || !c->stdin_on)
        return;
    fputs("\r\033[K", stdout);
    fflush(stdout);
    c->prompt_hidden = true;
}

/* After printing: the prompt and the line being edited again. */
static void tty_show(struct imcat *c)
{
    if (!c->tty || !c->prompt_hidden)
        return;
    c->prompt_hidden = false;
    if (!c->stdin_on)
        return;
    tty_set_prompt(c);
    rl_forced_update_display();
}

/* A finished line from libedit (NULL: end of input, ^D). */
static void tty_line(char *line)
{
    struct imcat *c = tty_owner;
    /* The prompt is not on the screen now (the line was entered): what
     * the line prints needs no clearing. */
    c->prompt_hidden = true;
    if (!line) {
        c->stdin_eof = true;
        fputc('\n', stdout);
    } else {
        if (*line)
            add_history(line);
        stdin_take(c, line, strlen(line));
        stdin_take(c, "\n", 1);
        free(line);
    }
    pump_stdin(c);
    c->prompt_hidden = false;
    if (c->stdin_on && !c->stdin_eof) {
        /* libedit leaves the entered line in its buffer, and the terminal
         * in cooked mode, until the next key: installing the handler again
         * starts a fresh line now (raw mode, an empty buffer, the prompt). */
        tty_set_prompt(c);
        rl_callback_handler_install(c->prompt, tty_line);
    }
}

/* Works through buffered lines while sending is allowed, then asks for more
 * input, pauses (no session, or an output backlog), or logs out (end of
 * input). */
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
        if (!c->stdin_on)
            return; /* /quit */
    }
    if (c->phase == PH_READY && output_full(c)) {
        /* Look again soon: the link drains by itself. */
        if (!c->tty)
            event_del(c->stdin_ev);
        struct timeval tv = {0, BACKLOG_POLL_MS * 1000};
        event_add(c->backlog_ev, &tv);
        return;
    }
    if (c->phase != PH_READY) {
        /* Lines wait until the session is back (on_logged_in pumps). A
         * terminal stays readable: the user may go on typing. */
        if (!c->tty)
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

static void backlog_cb(evutil_socket_t fd, short what, void *arg)
{
    pump_stdin(arg);
}

/* One read() per wake-up: after poll said readable it cannot block, so stdin
 * needs no O_NONBLOCK, which would leak into the terminal shared with the
 * shell. On a terminal libedit reads (one character per call). */
static void stdin_cb(evutil_socket_t fd, short what, void *arg)
{
    struct imcat *c = arg;
    if (c->tty) {
        rl_callback_read_char();
        return;
    }
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
    if (!c->stdin_on && c->tty) {
        tty_owner = c;
        tty_set_prompt(c);
        rl_callback_handler_install(c->prompt, tty_line);
        event_add(c->stdin_ev, NULL);
    }
    c->stdin_on = true;
    pump_stdin(c);
}

/* ---- receiving ---------------------------------------------------------- */

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
    case REQ_NONE:
    case REQ_MSG: return;
    }
    out_str(req->a ? req->a : "?");
}

static void on_error(struct imcat *c, json_t *root)
{
    json_t *code = json_object_get(root, "code");
    json_t *msg = json_object_get(root, "msg");
    json_t *id = json_object_get(root, "id");
    json_t *reason = json_object_get(root, "reason");
    if (c->phase == PH_CONNECTING && !json_is_string(id)) {
        /* The answer to our login. */
        snprintf(c->login_error, sizeof(c->login_error), "%s",
                 json_is_string(code) ? json_string_value(code) : "-");
    }
    if (c->opt.json)
        return;
    struct entry *req = json_is_string(id) ? mru_get(&c->pending, json_string_value(id)) : NULL;
    bool was_acked = req && req->kind == REQ_MSG && req->n == 1;
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
        if (req && req->kind != REQ_MSG) {
            fputs(" (", stdout);
            out_request(req);
            fputc(')', stdout);
        } else if (json_is_string(id)) {
            fputs(" (id ", stdout);
            out_json(id);
            fputc(')', stdout);
        }
        if (was_acked)
            fputs(" [after the server had accepted it]", stdout);
        fputc('\n', stdout);
        flush_stdout(c);
    }
    if (req)
        mru_del(&c->pending, json_string_value(id));
}

static void on_bye(struct imcat *c, json_t *root)
{
    json_t *reason = json_object_get(root, "reason");
    char buf[64];
    const char *why =
        json_is_string(reason) ? clean_text(json_string_value(reason), buf, sizeof(buf), false) : "-";
    if (c->logout_asked && strcmp(why, "logout") == 0) {
        status(c, "logged out");
        return;
    }
    LOG(WARN, "session_ended", "edge=%s reason=%s", c->edge_text, why);
    if (strcmp(why, "logout") == 0 || strcmp(why, "too_many_failures") == 0)
        status(c, "server ended the session: %s", why);
    else
        status(c, "server ended the session: %s; reconnecting", why);
}

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

/* The server has the message: shown after ACK_HOLD_MS (a bounce within that
 * time shows instead), or at once when a receipt for it comes. */
static void on_ack(struct imcat *c, json_t *root)
{
    json_t *id = json_object_get(root, "id");
    if (!json_is_string(id))
        return;
    struct entry *m = mru_get(&c->pending, json_string_value(id));
    if (!m || m->kind != REQ_MSG) {
        /* Not one we remember (the table forgot it): show it as it is. */
        struct entry tmp = {.key = (char *)json_string_value(id), .kind = REQ_MSG};
        show_ack(c, &tmp);
        return;
    }
    if (m->n == 1)
        return; /* already shown (a receipt came first) */
    m->due = util_mono_ms() + ACK_HOLD_MS;
    arm_timer(c);
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
    /* The recipient has it, so the server had it: its ack first, now (also
     * when the ack itself comes later, after a resend). */
    const char *id = str_field(root, "id");
    struct entry *m = id ? mru_get(&c->pending, id) : NULL;
    if (m && m->kind == REQ_MSG && m->n == 0)
        show_ack(c, m);
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

/* ---- the library's events ------------------------------------------------ */

static void on_logged_in(struct imcat *c, const struct imb_event *e)
{
    c->connects++;
    c->phase = PH_READY;
    c->login_error[0] = '\0';
    LOG(INFO, "logged_in", "edge=%s hb=%u max=%u", c->edge_text, e->hb_s, e->max);
    if (!c->ever_logged_in) {
        c->ever_logged_in = true;
        if (!c->opt.json && !c->opt.quiet) {
            tty_hide(c);
            fputs("* logged in as ", stderr);
            put_clean(stderr, e->jid, strlen(e->jid), true);
            if (c->to)
                fprintf(stderr, ", talking to %s", c->to);
            fputs("; type a line to send it, /help for the commands\n", stderr);
        }
    } else {
        c->in_resume = true;
        c->replayed = 0;
    }
    if (c->stdout_dead)
        begin_logout(c);
    else
        start_stdin(c);
}

/* A reconnect's sync: say where the stream picked up again. */
static void on_resumed(struct imcat *c, const struct imb_event *e)
{
    if (!c->in_resume)
        return;
    c->in_resume = false;
    LOG(INFO, "resumed", "edge=%s seq=%llu replayed=%ld server_seq=%llu reset=%d", c->edge_text,
        (unsigned long long)c->resume_seq, c->replayed, (unsigned long long)e->seq, e->reset);
    size_t outbox = imb_client_outbox_len(c->cl);
    status(c, "reconnected to %s, resumed at seq %llu (%ld replayed, %zu sent again)", c->edge_text,
           (unsigned long long)c->resume_seq, c->replayed, outbox);
}

static void on_disconnect(struct imcat *c, const struct imb_event *e)
{
    const char *detail = imb_client_ev_last_error(c->cev);
    char why[300];
    if (*detail)
        snprintf(why, sizeof(why), "%s", detail);
    else
        snprintf(why, sizeof(why), "%s", e->reason);
    bool was_ready = c->phase == PH_READY;
    if (e->final) {
        if (strcmp(e->reason, "logout") == 0 && c->logout_asked) {
            show_held_acks(c, INT64_MAX);
            finish(c, EXIT_OK);
            return;
        }
        LOG(ERROR, "session_ended", "edge=%s reason=%s", c->edge_text, e->reason);
        if (!c->opt.json && !c->opt.quiet)
            fprintf(stderr, "imcat: %s: %s\n", c->ever_logged_in ? "session ended" : "login failed",
                    e->reason);
        finish(c, c->ever_logged_in && strcmp(e->reason, "logout") != 0 ? EXIT_LINK : EXIT_LOGIN);
        return;
    }
    if (c->phase == PH_LOGOUT) {
        /* The link went while logging out: nothing left to wait for. */
        finish(c, EXIT_OK);
        return;
    }
    c->phase = PH_CONNECTING;
    c->in_resume = false;
    if (!c->ever_logged_in) {
        /* Before any session: an error answering the login ends the run
         * (exit 1); a connection that fails on every --host ends it too
         * (exit 3), and one that cannot get better (a certificate that
         * does not verify, an edge speaking TLS) at once. */
        if (c->login_error[0]) {
            LOG(ERROR, "login_failed", "edge=%s code=%s", c->edge_text, c->login_error);
            finish(c, EXIT_LOGIN);
            return;
        }
        c->failures++;
        bool hopeless = strstr(why, "certificate verify failed") || strstr(why, "speak TLS");
        LOG(ERROR, "connect_failed", "edge=%s error=\"%s\"", c->edge_text, why);
        fprintf(stderr, "imcat: cannot connect to %s: %s%s\n", c->edge_text, why,
                strstr(why, "seems to speak TLS") ? " (use --tls, or --cafile FILE)" : "");
        if (hopeless || c->failures >= c->n_edges)
            finish(c, EXIT_LINK);
        return;
    }
    LOG(WARN, "connection_lost", "edge=%s error=\"%s\" retry_ms=%llu next=%s:%s", c->edge_text, why,
        (unsigned long long)e->retry_ms, e->host, e->port);
    if (was_ready || !c->opt.quiet)
        status(c, "connection to %s lost (%s); reconnecting to %s:%s in %.1f s", c->edge_text, why,
               e->host, e->port, (double)e->retry_ms / 1000.0);
}

/* How interactive mode shows each frame of the protocol but welcome, error,
 * bye, ack and hb. */
static void show_frame(struct imcat *c, const char *t, json_t *root)
{
    size_t i = 0;
    while (i < ARRAY_LEN(printers) && strcmp(t, printers[i].t) != 0)
        i++;
    if (i < ARRAY_LEN(printers)) {
        printers[i].fn(c, root);
    } else {
        char t_buf[64];
        LOG(WARN, "unknown_frame", "t=%s", clean_text(t, t_buf, sizeof(t_buf), false));
    }
}

static void on_client_event(void *arg, const struct imb_event *e)
{
    struct imcat *c = arg;
    if (c->phase == PH_DONE)
        return;
    tty_hide(c);
    if (e->frame && c->opt.json)
        print_json_frame(c, e->frame);
    switch (e->type) {
    case IMB_EV_CONNECT:
        snprintf(c->edge_text, sizeof(c->edge_text), "%s:%s", e->host, e->port);
        c->resume_seq = imb_client_seq(c->cl);
        LOG(INFO, "connecting", "edge=%s tls=%d attempt=%u", c->edge_text, e->tls, e->attempt);
        break;
    case IMB_EV_DISCONNECT:
        on_disconnect(c, e);
        break;
    case IMB_EV_LOGGED_IN:
        on_logged_in(c, e);
        break;
    case IMB_EV_SYNC:
        if (!c->opt.json)
            on_sync(c, e->frame);
        on_resumed(c, e);
        break;
    case IMB_EV_ERROR:
        on_error(c, e->frame);
        break;
    case IMB_EV_BYE:
        on_bye(c, e->frame);
        break;
    case IMB_EV_ACK:
        if (!c->opt.json)
            on_ack(c, e->frame);
        break;
    case IMB_EV_PROTOCOL: {
        char buf[256];
        LOG(ERROR, "protocol_error", "edge=%s error=\"%s\"", c->edge_text,
            clean_text(e->msg, buf, sizeof(buf), true));
        break;
    }
    default: /* MSG, RECEIPT, PRESENCE, TYPING, OK, FRAME */
        if (!c->opt.json && e->t && strcmp(e->t, "hb") != 0)
            show_frame(c, e->t, e->frame);
        break;
    }
    /* Messages and stored events count as stored once printed: ack their
     * seq (the library sends it, cumulative). Not when nobody could read
     * them: then they come again next time. A sync's seq only says where
     * the stream stands. */
    if (e->seq > 0 && e->type != IMB_EV_SYNC && !c->stdout_dead) {
        imb_client_ack(c->cl, e->seq);
        if (c->in_resume)
            c->replayed++;
    }
    tty_show(c);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct imcat *c = arg;
    if (c->phase == PH_LOGOUT) {
        finish(c, EXIT_OK); /* a second ^C: do not wait for bye */
        return;
    }
    tty_hide(c);
    if (c->phase == PH_READY) {
        status(c, "logging out");
        begin_logout(c);
    } else {
        LOG(WARN, "interrupted", "signal=%d", (int)sig);
        finish(c, c->ever_logged_in ? EXIT_OK : EXIT_LOGIN);
    }
    tty_show(c);
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
          "  --host HOST        edge address (default " DEFAULT_HOST "); HOST:PORT for\n"
          "                     another port. Give it again for more edges: a lost\n"
          "                     connection is retried on the next, with backoff\n"
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
          "A lost connection (an edge restarting, a dead link) is retried with backoff\n"
          "and the session resumed: nothing is lost or shown twice.\n"
          "\n"
          "Exit status: 0 ok, 1 login failed, 2 usage, 3 no edge could be reached (or\n"
          "the session ended by the server).\n",
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
    o->port = DEFAULT_PORT;
    log_min_level = LOG_WARN;
    opterr = 0; /* we word our own errors */
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_HOST:
            if (o->n_hosts == MAX_HOSTS)
                return usage_error("at most %d --host", MAX_HOSTS);
            o->hosts[o->n_hosts++] = optarg;
            break;
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
    if (o->n_hosts == 0)
        o->hosts[o->n_hosts++] = DEFAULT_HOST;
    for (size_t i = 0; i < o->n_hosts; i++)
        if (!*o->hosts[i])
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

/* --host values to edges: "HOST", "HOST:PORT", "[V6]" or "[V6]:PORT"; the
 * port defaults to --port. false after saying what is wrong. */
static bool make_edges(struct imcat *c)
{
    for (size_t i = 0; i < c->opt.n_hosts; i++) {
        const char *h = c->opt.hosts[i];
        char *host = c->edge_buf[i][0], *port = c->edge_buf[i][1];
        const char *colon = NULL;
        size_t hl;
        if (h[0] == '[') {
            const char *rb = strchr(h, ']');
            if (!rb || (rb[1] && rb[1] != ':')) {
                usage_error("bad --host: %s", h);
                return false;
            }
            h++;
            hl = (size_t)(rb - h);
            colon = rb[1] ? rb + 1 : NULL;
        } else {
            colon = strchr(h, ':');
            if (colon && strchr(colon + 1, ':'))
                colon = NULL; /* a bare IPv6 address */
            hl = colon ? (size_t)(colon - h) : strlen(h);
        }
        const char *p = colon ? colon + 1 : c->opt.port;
        char *end;
        errno = 0;
        long pn = strtol(p, &end, 10);
        if (hl == 0 || hl >= sizeof(c->edge_buf[i][0]) || errno || end == p || *end || pn < 1 ||
            pn > 65535) {
            usage_error("bad --host: %s", c->opt.hosts[i]);
            return false;
        }
        memcpy(host, h, hl);
        host[hl] = '\0';
        snprintf(port, sizeof(c->edge_buf[i][1]), "%ld", pn);
        c->edges[i] = (struct imb_edge){.host = host, .port = port, .tls = c->opt.tls};
    }
    c->n_edges = c->opt.n_hosts;
    return true;
}

int main(int argc, char **argv)
{
    static struct imcat c; /* static: zeroed, and outlives every callback */
    ensure_std_fds();
    log_set_name("imcat");
    int rc = parse_args(&c.opt, argc, argv);
    if (rc < 0 && !make_edges(&c))
        rc = EXIT_USAGE;
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
    c.to = c.opt.to ? xstrdup(c.opt.to) : NULL;
    c.rooms.icase = true;
    c.last_in.icase = true;
    c.phase = PH_CONNECTING;
    c.exit_code = EXIT_LINK;
    if (c.opt.cafile && access(c.opt.cafile, R_OK) != 0) {
        LOG(ERROR, "tls_setup_failed", "error=\"cannot read %s: %s\"", c.opt.cafile, strerror(errno));
        c.exit_code = EXIT_USAGE;
        goto out;
    }

    c.base = event_base_new();
    if (!c.base) {
        LOG(ERROR, "internal", "error=\"cannot create event base\"");
        goto out;
    }
    char idp[24];
    snprintf(idp, sizeof(idp), "%s-r", c.id_prefix);
    struct imb_client_opts o = {
        .jid = c.opt.user,
        .pass = c.opt.password,
        .dev = c.opt.dev,
        .edges = c.edges,
        .n_edges = c.n_edges,
        .backoff_base_ms = BACKOFF_BASE_MS,
        .backoff_cap_ms = BACKOFF_CAP_MS,
        .manual_ack = true,
        .id_prefix = idp,
        .hb_events = c.opt.json,
        .on_event = on_client_event,
        .arg = &c,
    };
    char err[200];
    c.cev = imb_client_ev_new(c.base, &o, c.opt.cafile, err, sizeof(err));
    if (!c.cev) {
        LOG(ERROR, "internal", "error=\"%s\"", err);
        goto out;
    }
    c.cl = imb_client_ev_client(c.cev);
    c.stdin_pollable = stdin_is_pollable();
    c.tty = !c.opt.json && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    c.stdin_buf = evbuffer_new();
    c.timer = evtimer_new(c.base, timer_cb, &c);
    c.backlog_ev = evtimer_new(c.base, backlog_cb, &c);
    c.stdin_ev = c.stdin_pollable
                     ? event_new(c.base, STDIN_FILENO, EV_READ | EV_PERSIST, stdin_cb, &c)
                     : event_new(c.base, -1, 0, stdin_cb, &c);
    c.sigint_ev = evsignal_new(c.base, SIGINT, signal_cb, &c);
    c.sigterm_ev = evsignal_new(c.base, SIGTERM, signal_cb, &c);
    if (!c.stdin_buf || !c.timer || !c.backlog_ev || !c.stdin_ev || !c.sigint_ev || !c.sigterm_ev) {
        LOG(ERROR, "internal", "error=\"cannot create events\"");
        goto out;
    }
    evsignal_add(c.sigint_ev, NULL);
    evsignal_add(c.sigterm_ev, NULL);

    imb_client_ev_start(c.cev);
    if (c.phase != PH_DONE) {
        event_base_dispatch(c.base);
        if (c.phase != PH_DONE) {
            LOG(ERROR, "internal", "error=\"event loop ended early\"");
            c.exit_code = EXIT_LINK;
        }
    }

out:
    rc = c.exit_code;
    if (c.tty && c.stdin_on)
        rl_callback_handler_remove();
    if (c.cev)
        imb_client_ev_free(c.cev);
    if (c.timer)
        event_free(c.timer);
    if (c.backlog_ev)
        event_free(c.backlog_ev);
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
