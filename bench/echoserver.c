/* bench/echoserver.c - the floor for idle connections: a trivial libevent
 * echo server (evconnlistener + one bufferevent per socket, as imb-edge
 * uses), so RSS delta / N is what holding a socket costs in user space with
 * the same library and nothing else.
 *
 *   echoserver [--listen 127.0.0.1] [--port 0]
 * prints "listening port=P" on stderr once bound; SIGTERM/SIGINT stop it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static unsigned long conns;

static void on_read(struct bufferevent *bev, void *arg)
{
    bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        conns--;
        bufferevent_free(bev);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct event_base *base = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    conns++;
    bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            addr = argv[i + 1];
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
    }
    if (strncmp(addr, "127.", 4) != 0) {
        fprintf(stderr, "echoserver: loopback only\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, addr, &sin.sin_addr);
    struct evconnlistener *l = evconnlistener_new_bind(
        base, on_accept, base, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
        (struct sockaddr *)&sin, sizeof(sin));
    if (!l) {
        fprintf(stderr, "echoserver: bind: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t bl = sizeof(bound);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl);
    fprintf(stderr, "listening port=%d\n", ntohs(bound.sin_port));
    struct event *s1 = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *s2 = evsignal_new(base, SIGINT, on_signal, base);
    event_add(s1, NULL);
    event_add(s2, NULL);
    event_base_dispatch(base);
    fprintf(stderr, "echoserver: exit conns=%lu\n", conns);
    event_free(s1);
    event_free(s2);
    evconnlistener_free(l);
    event_base_free(base);
    return 0;
}
