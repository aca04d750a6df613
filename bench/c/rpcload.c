/*
 * rpcload.c - ONC RPC (RFC 5531) load generator for floatlock benchmarks.
 *
 * One thread, one socket (UDP) or one connection (TCP with record marking),
 * N calls kept in flight.  Each in-flight "slot" walks its own message
 * sequence: it sends message 0, waits for the reply, sends message 1, ... and
 * wraps around.  By default every slot has a one-message sequence holding an
 * RPC NULL call (AUTH_NULL, or AUTH_SYS with -a) to PROG/VERS/PROC; with -f a
 * file of pre-encoded call messages is used instead (slot i uses sequence
 * i mod K).  The xid (first 4 bytes) of every message is overwritten: its low
 * 10 bits are the slot number, so replies are matched without a lookup.
 *
 * Latency is measured per call with CLOCK_MONOTONIC from the first
 * transmission to the reply (a log-linear histogram, < 1% bucket error).
 * UDP calls unanswered after the timeout are retransmitted with the same xid
 * and counted in "timeouts"; on TCP a call slower than the timeout is only
 * counted.  A reply is an error unless it is MSG_ACCEPTED with SUCCESS.
 *
 * The run is bounded: at most MAX_SECONDS of warm-up, at most MAX_SECONDS of
 * measurement (also in call-count mode) and DRAIN_SECONDS to let slots finish
 * the sequence they are in (so that, e.g., a LOCK is followed by its UNLOCK);
 * calls finishing those sequences are not measured.
 *
 * Sequence file (all integers unsigned 32-bit big-endian):
 *     K, then K times: { M, then M times: { LEN, LEN bytes of call message } }
 *
 * Output: one JSON object on one line on stdout.  Exit status 0 on success,
 * 1 on a runtime failure (e.g. TCP connection lost), 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 1024 /* slot number lives in the low 10 bits of the xid */
#define SLOT_BITS 10
#define MAX_SECONDS 60.0
#define DRAIN_SECONDS 5.0
#define MAX_CALLS 100000000LL
#define MAX_SEQS 65536u
#define MAX_SEQ_LEN 4096u
#define MAX_MSG_UDP 65000u        /* a call must fit one datagram */
#define MAX_MSG_TCP (2u << 20)     /* a 1 MiB NFS WRITE and its headers */
#define UDP_BATCH 64
#define UDP_RBUF 65536
#define TCP_RBUF (256 * 1024)
#define REPLY_HEAD 512 /* bytes of a TCP reply record kept for parsing */
#define SCAN_NS 20000000ULL /* timeout scan every 20 ms */

/* ---- histogram ---------------------------------------------------------- */

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define NBUCKETS (64u * SUB)

static uint64_t hist[NBUCKETS];

static unsigned bucket_of(uint64_t v)
{
    if (v < 2 * SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (unsigned)(v >> shift) - SUB;
}

/* midpoint of a bucket, in ns */
static double bucket_value(unsigned idx)
{
    if (idx < 2 * SUB)
        return (double)idx;
    unsigned shift = idx / SUB - 1;
    uint64_t lo = ((uint64_t)(idx % SUB) + SUB) << shift;
    return (double)lo + (double)((1ULL << shift) - 1) / 2.0;
}

static double percentile_us(uint64_t count, double p, uint64_t max_ns)
{
    if (count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(p * (double)count);
    if ((double)rank < p * (double)count)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t cum = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        cum += hist[i];
        if (cum >= rank) {
            double v = bucket_value(i);
            if (v > (double)max_ns)
                v = (double)max_ns;
            return v / 1000.0;
        }
    }
    return (double)max_ns / 1000.0;
}

/* ---- messages and slots ------------------------------------------------- */

struct msg {
    unsigned char *data;
    uint32_t len;
};

struct seq {
    struct msg *msgs;
    uint32_t n;
};

struct slot {
    uint32_t seqi, pos;   /* sequence, index of the message in flight/next */
    uint32_t xid, gen;
    unsigned char xidbuf[4];
    uint64_t first_ns;    /* first transmission of the call in flight */
    uint64_t sent_ns;     /* last transmission */
    int outstanding;      /* a call is in flight */
    int need_send;        /* UDP: the call could not be sent yet */
    int extra;            /* the call in flight is not measured */
    int timed_out;        /* the call in flight was already counted late */
};

static struct seq *seqs;
static uint32_t nseqs;
static struct slot slots[MAX_INFLIGHT];
static unsigned inflight = 1;
static uint32_t xid_base;

enum phase { WARMUP, MEASURE, DRAIN, DONE };

static struct {
    enum phase phase;
    int calls_mode;
    long long want_calls;      /* calls mode: measured calls wanted */
    long long warmup_calls;    /* warm-up by calls (0: by time) */
    double warmup_s, duration_s;
    uint64_t t0, measure_start, measure_end, drain_end, hard_end;
    long long replies;         /* all matched replies */
    long long measured;        /* measured calls */
    long long sequences;       /* measured completed sequences */
    long long timeouts, errors, stale;
    unsigned outstanding;
    uint64_t timeout_ns;
    uint64_t max_ns;
} st;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void put32(unsigned char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

static void start_measuring(uint64_t now)
{
    st.phase = MEASURE;
    st.measure_start = now;
    st.measure_end = now;
}

static void start_draining(uint64_t now)
{
    if (st.phase == MEASURE && !st.calls_mode)
        st.measure_end = now;
    st.phase = DRAIN;
    st.drain_end = now + (uint64_t)(DRAIN_SECONDS * 1e9);
    /* a call of a one-message sequence leaves nothing to finish: stop waiting for it */
    for (unsigned i = 0; i < inflight; i++) {
        struct slot *s = &slots[i];
        if (s->outstanding && seqs[s->seqi].n == 1) {
            s->outstanding = 0; /* a late reply is counted as stale */
            st.outstanding--;
        }
    }
}

/* Time-driven phase changes. */
static void tick(uint64_t now)
{
    if (st.phase == WARMUP && st.warmup_calls == 0 &&
        now >= st.t0 + (uint64_t)(st.warmup_s * 1e9))
        start_measuring(now);
    if (st.phase == MEASURE) {
        uint64_t limit = st.measure_start + (uint64_t)(st.duration_s * 1e9);
        if (now >= limit)
            start_draining(now);
    }
    if (st.phase == DRAIN && (st.outstanding == 0 || now >= st.drain_end))
        st.phase = DONE;
    if (now >= st.hard_end)
        st.phase = DONE;
}

/* Decide whether slot s sends its next call; sets s->extra.  Returns 1 to send. */
static int may_issue(struct slot *s)
{
    switch (st.phase) {
    case WARMUP:
        s->extra = 0;
        return 1;
    case MEASURE:
        if (!st.calls_mode || st.measured + (long long)st.outstanding < st.want_calls) {
            s->extra = 0;
            return 1;
        }
        /* budget used up: only finish the sequence */
        __attribute__((fallthrough));
    case DRAIN:
        s->extra = 1;
        return s->pos != 0;
    default:
        return 0;
    }
}

static void prepare_call(struct slot *s)
{
    s->xid = ((xid_base + s->gen++) << SLOT_BITS) | (uint32_t)(s - slots);
    put32(s->xidbuf, s->xid);
    s->outstanding = 1;
    s->timed_out = 0;
    st.outstanding++;
}

/* Returns 1 if the reply is MSG_ACCEPTED / SUCCESS. */
static int reply_ok(const unsigned char *b, size_t n)
{
    if (n < 12 || get32(b + 4) != 1 /* REPLY */ || get32(b + 8) != 0 /* MSG_ACCEPTED */)
        return 0;
    if (n < 20)
        return 0;
    uint32_t vlen = get32(b + 16);
    if (vlen > 400)
        return 0;
    size_t off = 20 + ((vlen + 3u) & ~3u);
    if (n < off + 4)
        return 0;
    return get32(b + off) == 0; /* SUCCESS */
}

/* Handle one reply.  Returns the slot whose next call should be sent, or NULL. */
static struct slot *on_reply(const unsigned char *b, size_t n, uint64_t now)
{
    if (n < 4) {
        st.stale++;
        return NULL;
    }
    uint32_t xid = get32(b);
    unsigned idx = xid & (MAX_INFLIGHT - 1);
    if (idx >= inflight || !slots[idx].outstanding || slots[idx].xid != xid) {
        st.stale++; /* a duplicate reply to a retransmission, or junk */
        return NULL;
    }
    struct slot *s = &slots[idx];
    s->outstanding = 0; /* need_send stays: a queued retransmission now sends the next call */
    st.outstanding--;
    st.replies++;
    int ok = reply_ok(b, n);
    struct seq *q = &seqs[s->seqi];
    int seq_end = s->pos + 1 == q->n;
    if (st.phase == MEASURE && !s->extra &&
        (!st.calls_mode || st.measured < st.want_calls)) {
        uint64_t lat = now > s->first_ns ? now - s->first_ns : 0;
        hist[bucket_of(lat)]++;
        if (lat > st.max_ns)
            st.max_ns = lat;
        st.measured++;
        if (!ok)
            st.errors++;
        if (seq_end)
            st.sequences++;
        st.measure_end = now;
    }
    s->pos = seq_end ? 0 : s->pos + 1;
    if (st.phase == WARMUP && st.warmup_calls > 0 && st.replies >= st.warmup_calls)
        start_measuring(now);
    if (st.phase == MEASURE && st.calls_mode && st.measured >= st.want_calls)
        start_draining(now);
    if (st.phase == DRAIN && st.outstanding == 0 && !may_issue(s)) {
        st.phase = DONE;
        return NULL;
    }
    return may_issue(s) ? s : NULL;
}

/* ---- UDP ---------------------------------------------------------------- */

static int udp_fd;
static struct slot *udp_queue[MAX_INFLIGHT];
static unsigned udp_nqueue;

static void udp_flush(uint64_t now)
{
    struct mmsghdr mm[UDP_BATCH];
    struct iovec iov[UDP_BATCH][2];
    unsigned done = 0;
    while (done < udp_nqueue) {
        unsigned n = udp_nqueue - done;
        if (n > UDP_BATCH)
            n = UDP_BATCH;
        memset(mm, 0, sizeof(mm[0]) * n);
        for (unsigned i = 0; i < n; i++) {
            struct slot *s = udp_queue[done + i];
            struct msg *m = &seqs[s->seqi].msgs[s->pos];
            iov[i][0].iov_base = s->xidbuf;
            iov[i][0].iov_len = 4;
            iov[i][1].iov_base = m->data + 4;
            iov[i][1].iov_len = m->len - 4;
            mm[i].msg_hdr.msg_iov = iov[i];
            mm[i].msg_hdr.msg_iovlen = 2;
        }
        int r = sendmmsg(udp_fd, mm, n, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNREFUSED) /* ICMP from an earlier datagram */
                continue;
            break; /* EAGAIN/ENOBUFS: keep the rest queued */
        }
        for (int i = 0; i < r; i++) {
            struct slot *s = udp_queue[done + (unsigned)i];
            s->need_send = 0;
            s->sent_ns = now;
            if (s->first_ns == 0)
                s->first_ns = now;
        }
        done += (unsigned)r;
    }
    memmove(udp_queue, udp_queue + done, (udp_nqueue - done) * sizeof udp_queue[0]);
    udp_nqueue -= done;
}

static void udp_enqueue(struct slot *s, int fresh)
{
    if (fresh) {
        prepare_call(s);
        s->first_ns = 0;
    }
    if (!s->need_send) {
        s->need_send = 1;
        udp_queue[udp_nqueue++] = s;
    }
}

static void udp_scan(uint64_t now)
{
    for (unsigned i = 0; i < inflight; i++) {
        struct slot *s = &slots[i];
        if (s->outstanding && !s->need_send && now - s->sent_ns >= st.timeout_ns) {
            st.timeouts++;
            udp_enqueue(s, 0);
        }
    }
}

static unsigned char udp_rbuf[UDP_BATCH][UDP_RBUF];

static int run_udp(void)
{
    uint64_t now = now_ns();
    uint64_t next_scan = now + SCAN_NS;
    for (unsigned i = 0; i < inflight; i++)
        if (may_issue(&slots[i]))
            udp_enqueue(&slots[i], 1);
    udp_flush(now);

    struct mmsghdr mm[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    while (st.phase != DONE) {
        now = now_ns();
        tick(now);
        if (st.phase == DONE)
            break;
        if (now >= next_scan) {
            udp_scan(now);
            next_scan = now + SCAN_NS;
        }
        if (udp_nqueue)
            udp_flush(now);
        struct pollfd pfd = {.fd = udp_fd, .events = POLLIN};
        int timeout = udp_nqueue ? 1 : (int)(SCAN_NS / 1000000ULL);
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno != EINTR) {
            perror("rpcload: poll");
            return 1;
        }
        if (pr <= 0)
            continue;
        for (;;) {
            memset(mm, 0, sizeof mm);
            for (unsigned i = 0; i < UDP_BATCH; i++) {
                iov[i].iov_base = udp_rbuf[i];
                iov[i].iov_len = UDP_RBUF;
                mm[i].msg_hdr.msg_iov = &iov[i];
                mm[i].msg_hdr.msg_iovlen = 1;
            }
            int n = recvmmsg(udp_fd, mm, UDP_BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break; /* EAGAIN, or ECONNREFUSED (nobody there yet): retransmit later */
            now = now_ns();
            for (int i = 0; i < n && st.phase != DONE; i++) {
                struct slot *s = on_reply(udp_rbuf[i], mm[i].msg_len, now);
                if (s != NULL)
                    udp_enqueue(s, 1);
            }
            udp_flush(now);
            if (n < UDP_BATCH || st.phase == DONE)
                break;
        }
    }
    return 0;
}

/* ---- TCP ---------------------------------------------------------------- */

static int tcp_fd;
static unsigned char *tcp_out;
static size_t tcp_out_len, tcp_out_off, tcp_out_cap;

static void tcp_enqueue(struct slot *s, uint64_t now)
{
    prepare_call(s);
    struct msg *m = &seqs[s->seqi].msgs[s->pos];
    if (tcp_out_len + 4 + m->len > tcp_out_cap && tcp_out_off > 0) {
        memmove(tcp_out, tcp_out + tcp_out_off, tcp_out_len - tcp_out_off);
        tcp_out_len -= tcp_out_off;
        tcp_out_off = 0;
    }
    if (tcp_out_len + 4 + m->len > tcp_out_cap) {
        /* cannot happen: the buffer holds one call per slot */
        fprintf(stderr, "rpcload: output buffer overflow\n");
        exit(1);
    }
    unsigned char *p = tcp_out + tcp_out_len;
    put32(p, 0x80000000u | m->len);
    memcpy(p + 4, s->xidbuf, 4);
    memcpy(p + 8, m->data + 4, m->len - 4);
    tcp_out_len += 4 + m->len;
    s->first_ns = s->sent_ns = now;
}

static int tcp_flush(void)
{
    while (tcp_out_off < tcp_out_len) {
        ssize_t w = send(tcp_fd, tcp_out + tcp_out_off, tcp_out_len - tcp_out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            perror("rpcload: send");
            return -1;
        }
        tcp_out_off += (size_t)w;
    }
    if (tcp_out_off == tcp_out_len) {
        tcp_out_off = tcp_out_len = 0;
    } else if (tcp_out_off > tcp_out_cap / 2) {
        memmove(tcp_out, tcp_out + tcp_out_off, tcp_out_len - tcp_out_off);
        tcp_out_len -= tcp_out_off;
        tcp_out_off = 0;
    }
    return 0;
}

static void tcp_scan(uint64_t now)
{
    for (unsigned i = 0; i < inflight; i++) {
        struct slot *s = &slots[i];
        if (s->outstanding && !s->timed_out && now - s->first_ns >= st.timeout_ns) {
            s->timed_out = 1;
            st.timeouts++;
        }
    }
}

/* record-marking reassembly state */
static struct {
    int in_frag, last;
    uint32_t left;
    unsigned char hdr[4];
    unsigned hdr_have;
    unsigned char head[REPLY_HEAD];
    size_t have;
} rm;

static void tcp_parse(const unsigned char *b, size_t n, uint64_t now)
{
    while (n > 0 && st.phase != DONE) {
        if (!rm.in_frag) {
            while (rm.hdr_have < 4 && n > 0) {
                rm.hdr[rm.hdr_have++] = *b++;
                n--;
            }
            if (rm.hdr_have < 4)
                return;
            uint32_t h = get32(rm.hdr);
            rm.hdr_have = 0;
            rm.last = (h & 0x80000000u) != 0;
            rm.left = h & 0x7fffffffu;
            rm.in_frag = 1;
        }
        size_t take = n < rm.left ? n : rm.left;
        if (rm.have < REPLY_HEAD) {
            size_t c = REPLY_HEAD - rm.have < take ? REPLY_HEAD - rm.have : take;
            memcpy(rm.head + rm.have, b, c);
            rm.have += c;
        }
        b += take;
        n -= take;
        rm.left -= (uint32_t)take;
        if (rm.left == 0) {
            rm.in_frag = 0;
            if (rm.last) {
                struct slot *s = on_reply(rm.head, rm.have, now);
                rm.have = 0;
                if (s != NULL)
                    tcp_enqueue(s, now);
            }
        }
    }
}

static int run_tcp(void)
{
    static unsigned char rbuf[TCP_RBUF];
    uint64_t now = now_ns();
    uint64_t next_scan = now + SCAN_NS;
    for (unsigned i = 0; i < inflight; i++)
        if (may_issue(&slots[i]))
            tcp_enqueue(&slots[i], now);
    if (tcp_flush() < 0)
        return 1;
    while (st.phase != DONE) {
        now = now_ns();
        tick(now);
        if (st.phase == DONE)
            break;
        if (now >= next_scan) {
            tcp_scan(now);
            next_scan = now + SCAN_NS;
        }
        struct pollfd pfd = {.fd = tcp_fd, .events = POLLIN};
        if (tcp_out_len > tcp_out_off)
            pfd.events |= POLLOUT;
        int pr = poll(&pfd, 1, (int)(SCAN_NS / 1000000ULL));
        if (pr < 0 && errno != EINTR) {
            perror("rpcload: poll");
            return 1;
        }
        if (pr <= 0)
            continue;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(tcp_fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
            if (r == 0) {
                fprintf(stderr, "rpcload: connection closed by server\n");
                return 1;
            }
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                perror("rpcload: recv");
                return 1;
            }
            if (r > 0)
                tcp_parse(rbuf, (size_t)r, now_ns());
        }
        if (tcp_flush() < 0)
            return 1;
    }
    return 0;
}

/* ---- setup -------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: rpcload -p PORT [-h HOST] [-P udp|tcp] [-n INFLIGHT]\n"
            "               [-d SECONDS | -c CALLS] [-w WARMUP_SECONDS | -W WARMUP_CALLS]\n"
            "               [-r PROG] [-v VERS] [-x PROC] [-a] [-f SEQFILE] [-T TIMEOUT_MS]\n"
            "               [-C CPU]\n"
            "  -d at most %.0f s, -w at most %.0f s, -c/-W at most %lld calls; -n 1..%d\n"
            "  -a uses AUTH_SYS credentials instead of AUTH_NULL (default NULL calls)\n"
            "  -f: K sequences of M length-prefixed call messages, slot i uses sequence i mod K\n",
            MAX_SECONDS, MAX_SECONDS, MAX_CALLS, MAX_INFLIGHT);
    exit(2);
}

static long long parse_int(const char *s, long long lo, long long hi, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "rpcload: %s must be an integer in [%lld, %lld]\n", what, lo, hi);
        exit(2);
    }
    return v;
}

static double parse_seconds(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0.0) || v > MAX_SECONDS) {
        fprintf(stderr, "rpcload: %s must be in [0, %.0f] seconds\n", what, MAX_SECONDS);
        exit(2);
    }
    return v;
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL) {
        perror("rpcload: calloc");
        exit(1);
    }
    return p;
}

static void null_call_sequence(uint32_t prog, uint32_t vers, uint32_t proc, int auth_sys)
{
    unsigned char buf[128];
    size_t n = 0;
    uint32_t words[] = {0, 0 /* CALL */, 2 /* RPC version */, prog, vers, proc};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++, n += 4)
        put32(buf + n, words[i]);
    if (auth_sys) {
        static const char name[] = "rpcload";
        const uint32_t namelen = sizeof name - 1;
        const uint32_t padded = (namelen + 3) & ~3u;
        put32(buf + n, 1); /* AUTH_SYS */
        put32(buf + n + 4, 4 + 4 + padded + 4 + 4 + 4);
        n += 8;
        put32(buf + n, (uint32_t)time(NULL)); /* stamp */
        put32(buf + n + 4, namelen);
        n += 8;
        memset(buf + n, 0, padded);
        memcpy(buf + n, name, namelen);
        n += padded;
        put32(buf + n, (uint32_t)getuid());
        put32(buf + n + 4, (uint32_t)getgid());
        put32(buf + n + 8, 0); /* no supplementary groups */
        n += 12;
    } else {
        put32(buf + n, 0);
        put32(buf + n + 4, 0);
        n += 8;
    }
    put32(buf + n, 0); /* verifier AUTH_NULL */
    put32(buf + n + 4, 0);
    n += 8;
    nseqs = 1;
    seqs = xmalloc(sizeof *seqs);
    seqs[0].n = 1;
    seqs[0].msgs = xmalloc(sizeof(struct msg));
    seqs[0].msgs[0].data = xmalloc(n);
    memcpy(seqs[0].msgs[0].data, buf, n);
    seqs[0].msgs[0].len = (uint32_t)n;
}

static int read32(FILE *f, uint32_t *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4)
        return -1;
    *v = get32(b);
    return 0;
}

static void load_sequences(const char *path, uint32_t max_msg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    if (read32(f, &nseqs) < 0 || nseqs == 0 || nseqs > MAX_SEQS)
        goto bad;
    seqs = xmalloc(sizeof *seqs * nseqs);
    for (uint32_t i = 0; i < nseqs; i++) {
        struct seq *q = &seqs[i];
        if (read32(f, &q->n) < 0 || q->n == 0 || q->n > MAX_SEQ_LEN)
            goto bad;
        q->msgs = xmalloc(sizeof *q->msgs * q->n);
        for (uint32_t j = 0; j < q->n; j++) {
            struct msg *m = &q->msgs[j];
            if (read32(f, &m->len) < 0 || m->len < 8 || m->len > max_msg)
                goto bad;
            m->data = xmalloc(m->len);
            if (fread(m->data, 1, m->len, f) != m->len)
                goto bad;
        }
    }
    if (fgetc(f) != EOF)
        goto bad;
    fclose(f);
    return;
bad:
    fprintf(stderr, "rpcload: %s: malformed sequence file (counts, or a message of 8..%u "
                    "bytes, or trailing data)\n", path, max_msg);
    exit(2);
}

static int connect_to(const char *host, int port, int type)
{
    struct addrinfo hints, *res = NULL;
    char pbuf[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = type;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    snprintf(pbuf, sizeof pbuf, "%d", port);
    int rc = getaddrinfo(host, pbuf, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "rpcload: bad address %s: %s\n", host, gai_strerror(rc));
        exit(2);
    }
    int fd = socket(res->ai_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("rpcload: socket");
        exit(1);
    }
    int sz = 4 << 20, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (type == SOCK_STREAM)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        fprintf(stderr, "rpcload: connect %s port %d: %s\n", host, port, strerror(errno));
        exit(1);
    }
    freeaddrinfo(res);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
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
    const char *host = "127.0.0.1", *proto = "udp", *seqfile = NULL;
    int port = -1, auth_sys = 0, opt;
    uint32_t prog = 100003, vers = 3, proc = 0;
    long long timeout_ms = 1000;
    int have_d = 0, have_w = 0;

    st.duration_s = 2.0;
    while ((opt = getopt(argc, argv, "h:p:P:n:d:c:w:W:r:v:x:af:T:C:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = (int)parse_int(optarg, 1, 65535, "port"); break;
        case 'P': proto = optarg; break;
        case 'n': inflight = (unsigned)parse_int(optarg, 1, MAX_INFLIGHT, "inflight"); break;
        case 'd': st.duration_s = parse_seconds(optarg, "duration"); have_d = 1; break;
        case 'c':
            st.want_calls = parse_int(optarg, 1, MAX_CALLS, "calls");
            st.calls_mode = 1;
            break;
        case 'w': st.warmup_s = parse_seconds(optarg, "warm-up"); have_w = 1; break;
        case 'W': st.warmup_calls = parse_int(optarg, 1, MAX_CALLS, "warm-up calls"); break;
        case 'r': prog = (uint32_t)parse_int(optarg, 0, 0xffffffffLL, "prog"); break;
        case 'v': vers = (uint32_t)parse_int(optarg, 0, 0xffffffffLL, "vers"); break;
        case 'x': proc = (uint32_t)parse_int(optarg, 0, 0xffffffffLL, "proc"); break;
        case 'a': auth_sys = 1; break;
        case 'f': seqfile = optarg; break;
        case 'T': timeout_ms = parse_int(optarg, 1, 60000, "timeout_ms"); break;
        case 'C': pin_cpu(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || port < 0)
        usage();
    if (have_d && st.calls_mode) {
        fprintf(stderr, "rpcload: give -d or -c, not both\n");
        return 2;
    }
    if (have_w && st.warmup_calls) {
        fprintf(stderr, "rpcload: give -w or -W, not both\n");
        return 2;
    }
    int udp = strcmp(proto, "udp") == 0;
    if (!udp && strcmp(proto, "tcp") != 0)
        usage();
    if (st.calls_mode)
        st.duration_s = MAX_SECONDS; /* a call-count run is still bounded in time */
    st.timeout_ns = (uint64_t)timeout_ms * 1000000ULL;

    if (seqfile)
        load_sequences(seqfile, udp ? MAX_MSG_UDP : MAX_MSG_TCP);
    else
        null_call_sequence(prog, vers, proc, auth_sys);
    uint32_t maxlen = 0;
    for (uint32_t i = 0; i < nseqs; i++)
        for (uint32_t j = 0; j < seqs[i].n; j++)
            if (seqs[i].msgs[j].len > maxlen)
                maxlen = seqs[i].msgs[j].len;
    for (unsigned i = 0; i < inflight; i++)
        slots[i].seqi = i % nseqs;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    xid_base = (uint32_t)(ts.tv_nsec ^ (ts.tv_sec << 12) ^ ((uint32_t)getpid() << 7));

    int rc;
    if (udp) {
        udp_fd = connect_to(host, port, SOCK_DGRAM);
    } else {
        tcp_fd = connect_to(host, port, SOCK_STREAM);
        tcp_out_cap = (size_t)inflight * (maxlen + 4u);
        tcp_out = xmalloc(tcp_out_cap);
    }
    st.t0 = now_ns();
    st.hard_end = st.t0 + (uint64_t)((2 * MAX_SECONDS + DRAIN_SECONDS) * 1e9);
    st.phase = WARMUP;
    if (st.warmup_calls == 0 && st.warmup_s == 0.0)
        start_measuring(st.t0);
    rc = udp ? run_udp() : run_tcp();
    if (rc != 0)
        return rc;
    if (st.phase != DONE || st.measure_end == 0) /* not reached: loops end in DONE */
        return 1;

    double secs = (double)(st.measure_end - st.measure_start) / 1e9;
    double cps = secs > 0 ? (double)st.measured / secs : 0.0;
    double sps = secs > 0 ? (double)st.sequences / secs : 0.0;
    uint64_t cnt = (uint64_t)st.measured;
    printf("{\"calls\":%lld,\"seconds\":%.6f,\"calls_per_s\":%.1f,\"sequences\":%lld,"
           "\"sequences_per_s\":%.1f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"p999_us\":%.2f,\"max_us\":%.2f,\"timeouts\":%lld,\"errors\":%lld,"
           "\"stale\":%lld,\"inflight\":%u}\n",
           st.measured, secs, cps, st.sequences, sps, percentile_us(cnt, 0.50, st.max_ns),
           percentile_us(cnt, 0.90, st.max_ns), percentile_us(cnt, 0.99, st.max_ns),
           percentile_us(cnt, 0.999, st.max_ns), (double)st.max_ns / 1000.0, st.timeouts,
           st.errors, st.stale, inflight);
    fflush(stdout);
    return 0;
}
