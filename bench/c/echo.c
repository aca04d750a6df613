/*
 * echo.c - a trivial ONC RPC (RFC 5531) responder used as the baseline in
 * floatlock benchmarks.
 *
 * Every CALL message is answered with the smallest accepted reply, as the
 * NULL procedure would give it:
 *
 *     xid, REPLY(1), MSG_ACCEPTED(0), verf AUTH_NULL(0) length 0, SUCCESS(0)
 *
 * The program, version and procedure are not looked at.  UDP datagrams are
 * drained with recvmmsg() and answered with sendmmsg().  TCP uses record
 * marking (RFC 5531 section 11): a record may come in several fragments, and
 * calls may be pipelined; the body is streamed and discarded, only the xid and
 * message type are kept.  Several TCP connections are served by one thread
 * through epoll.  SIGTERM and SIGINT end the program cleanly (signalfd).
 *
 * usage: echo [-a ADDR] [-u UDP_PORT] [-t TCP_PORT] [-C CPU]
 *   ADDR defaults to 127.0.0.1 (numeric IPv4 or IPv6).  A transport is only
 *   served when its port is given; port 0 picks a free port.  Once listening
 *   the program prints "ready udp=PORT tcp=PORT" (0 for a transport not
 *   served) on stdout and flushes it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define UDP_BATCH 64
#define UDP_BUFSZ 65536
#define TCP_RDSZ 65536
#define TCP_OUT_CAP (1 << 20) /* stop reading a connection above this */
#define REPLY_WORDS 6

enum { TAG_SIGNAL = 1, TAG_UDP = 2, TAG_LISTEN = 3 };

struct conn {
    int fd;
    /* record-marking parser state */
    uint32_t frag_left;    /* bytes of the current fragment still to come */
    int in_frag;           /* 1 while inside a fragment body */
    int last_frag;         /* the current fragment ends the record */
    unsigned char hdr[4];  /* fragment header being collected */
    unsigned hdr_have;
    unsigned char head[8]; /* first 8 bytes of the record: xid, mtype */
    unsigned head_have;
    /* pending output */
    unsigned char *out;
    size_t out_len, out_off, out_cap;
    uint32_t events; /* epoll events currently asked for */
};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int resolve(const char *host, int socktype, int port,
                   struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints, *res = NULL;
    char pbuf[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    snprintf(pbuf, sizeof pbuf, "%d", port);
    int rc = getaddrinfo(host, pbuf, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "echo: bad address %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        die("getsockname");
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void epoll_add(int ep, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = tag;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl add");
}

static void fill_reply(unsigned char *p, const unsigned char *xid)
{
    memcpy(p, xid, 4);
    memset(p + 4, 0, (REPLY_WORDS - 1) * 4);
    p[7] = 1; /* REPLY; the remaining words are all zero */
}

/* ---- UDP ---------------------------------------------------------------- */

static unsigned char udp_in[UDP_BATCH][UDP_BUFSZ];
static unsigned char udp_out[UDP_BATCH][REPLY_WORDS * 4];

static void serve_udp(int fd)
{
    struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
    struct iovec iin[UDP_BATCH], iout[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];

    for (;;) {
        memset(in, 0, sizeof in);
        for (int i = 0; i < UDP_BATCH; i++) {
            iin[i].iov_base = udp_in[i];
            iin[i].iov_len = UDP_BUFSZ;
            in[i].msg_hdr.msg_iov = &iin[i];
            in[i].msg_hdr.msg_iovlen = 1;
            in[i].msg_hdr.msg_name = &peers[i];
            in[i].msg_hdr.msg_namelen = sizeof peers[i];
        }
        int n = recvmmsg(fd, in, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNREFUSED)
                perror("echo: recvmmsg");
            return;
        }
        int m = 0;
        memset(out, 0, sizeof out);
        for (int i = 0; i < n; i++) {
            const unsigned char *b = udp_in[i];
            if (in[i].msg_len < 8 || b[4] | b[5] | b[6] | b[7])
                continue; /* too short, or not a CALL */
            fill_reply(udp_out[m], b);
            iout[m].iov_base = udp_out[m];
            iout[m].iov_len = REPLY_WORDS * 4;
            out[m].msg_hdr.msg_iov = &iout[m];
            out[m].msg_hdr.msg_iovlen = 1;
            out[m].msg_hdr.msg_name = &peers[i];
            out[m].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            m++;
        }
        int off = 0;
        while (off < m) {
            int s = sendmmsg(fd, out + off, (unsigned)(m - off), 0);
            if (s <= 0) {
                if (s < 0 && errno == EINTR)
                    continue;
                break; /* drop the rest: the client retransmits */
            }
            off += s;
        }
        if (n < UDP_BATCH)
            return;
    }
}

/* ---- TCP ---------------------------------------------------------------- */

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

static void conn_queue_reply(struct conn *c)
{
    if (c->out_len + 4 + REPLY_WORDS * 4 > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_len + 4 + REPLY_WORDS * 4 > c->out_cap) {
            size_t ncap = c->out_cap ? c->out_cap * 2 : 4096;
            unsigned char *n = realloc(c->out, ncap);
            if (n == NULL)
                die("realloc");
            c->out = n;
            c->out_cap = ncap;
        }
    }
    unsigned char *p = c->out + c->out_len;
    uint32_t mark = htonl(0x80000000u | (REPLY_WORDS * 4));
    memcpy(p, &mark, 4);
    fill_reply(p + 4, c->head);
    c->out_len += 4 + REPLY_WORDS * 4;
}

/* Feed received bytes to the record-marking parser; queue a reply for each
 * complete CALL record. */
static void conn_parse(struct conn *c, const unsigned char *b, size_t n)
{
    while (n > 0) {
        if (!c->in_frag) {
            while (c->hdr_have < 4 && n > 0) {
                c->hdr[c->hdr_have++] = *b++;
                n--;
            }
            if (c->hdr_have < 4)
                return;
            uint32_t h;
            memcpy(&h, c->hdr, 4);
            h = ntohl(h);
            c->hdr_have = 0;
            c->last_frag = (h & 0x80000000u) != 0;
            c->frag_left = h & 0x7fffffffu;
            c->in_frag = 1;
        }
        size_t take = n < c->frag_left ? n : c->frag_left;
        for (size_t i = 0; i < take && c->head_have < 8; i++)
            c->head[c->head_have++] = b[i];
        b += take;
        n -= take;
        c->frag_left -= (uint32_t)take;
        if (c->frag_left == 0) {
            c->in_frag = 0;
            if (c->last_frag) {
                const unsigned char *h = c->head;
                if (c->head_have == 8 && !(h[4] | h[5] | h[6] | h[7]))
                    conn_queue_reply(c);
                c->head_have = 0;
            }
        }
    }
}

/* Write pending output; returns -1 when the connection is dead. */
static int conn_flush(int ep, struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    /* under backpressure stop reading until the peer drains replies */
    uint32_t want = c->out_len == 0 ? EPOLLIN
                    : c->out_len > TCP_OUT_CAP ? EPOLLOUT
                                               : EPOLLIN | EPOLLOUT;
    if (want != c->events) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = want;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->events = want;
    }
    return 0;
}

static void conn_event(int ep, struct conn *c, uint32_t events)
{
    static unsigned char buf[TCP_RDSZ];
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (int rounds = 0; rounds < 16 && c->out_len <= TCP_OUT_CAP; rounds++) {
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r == 0) {
                conn_flush(ep, c);
                conn_close(ep, c);
                return;
            }
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_close(ep, c);
                return;
            }
            conn_parse(c, buf, (size_t)r);
            if ((size_t)r < sizeof buf)
                break;
        }
    }
    if (conn_flush(ep, c) < 0)
        conn_close(ep, c);
}

static void accept_all(int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or out of descriptors: try later */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL)
            die("calloc");
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

/* ---- main --------------------------------------------------------------- */

static int open_socket(const char *host, int type, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (resolve(host, type, port, &ss, &sl) < 0)
        exit(2);
    int fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (type == SOCK_DGRAM) {
        int sz = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
        die("bind");
    if (type == SOCK_STREAM && listen(fd, 128) < 0)
        die("listen");
    return fd;
}

static int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "echo: bad port %s\n", s);
        exit(2);
    }
    return (int)v;
}

/* -C CPU: run on that CPU only (same-CPU client and server avoid a cross-CPU
 * wake-up, which costs tens of microseconds in some VMs). */
static void pin_cpu(const char *arg)
{
    char *end;
    long cpu = strtol(arg, &end, 10);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (*arg == '\0' || *end != '\0' || cpu < 0 || cpu >= CPU_SETSIZE) {
        fprintf(stderr, "bad CPU number %s\n", arg);
        exit(2);
    }
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
        perror("sched_setaffinity");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int udp_port = -1, tcp_port = -1, opt;

    while ((opt = getopt(argc, argv, "a:u:t:C:")) != -1) {
        switch (opt) {
        case 'a': host = optarg; break;
        case 'u': udp_port = parse_port(optarg); break;
        case 't': tcp_port = parse_port(optarg); break;
        case 'C': pin_cpu(optarg); break;
        default:
            fprintf(stderr, "usage: echo [-a ADDR] [-u UDP_PORT] [-t TCP_PORT] [-C CPU]\n");
            return 2;
        }
    }
    if (udp_port < 0 && tcp_port < 0) {
        fprintf(stderr, "echo: give -u and/or -t\n");
        return 2;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    epoll_add(ep, sfd, EPOLLIN, TAG_SIGNAL);

    int ufd = -1, lfd = -1;
    if (udp_port >= 0) {
        ufd = open_socket(host, SOCK_DGRAM, udp_port);
        epoll_add(ep, ufd, EPOLLIN, TAG_UDP);
        udp_port = bound_port(ufd);
    }
    if (tcp_port >= 0) {
        lfd = open_socket(host, SOCK_STREAM, tcp_port);
        epoll_add(ep, lfd, EPOLLIN, TAG_LISTEN);
        tcp_port = bound_port(lfd);
    }
    printf("ready udp=%d tcp=%d\n", udp_port < 0 ? 0 : udp_port, tcp_port < 0 ? 0 : tcp_port);
    fflush(stdout);

    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_SIGNAL) {
                /* connections are left to the kernel to close at exit */
                if (ufd >= 0)
                    close(ufd);
                if (lfd >= 0)
                    close(lfd);
                return 0;
            } else if (tag == TAG_UDP) {
                serve_udp(ufd);
            } else if (tag == TAG_LISTEN) {
                accept_all(ep, lfd);
            } else {
                conn_event(ep, (struct conn *)evs[i].data.ptr, evs[i].events);
            }
        }
    }
}
