/*
 * loadgen: the benchmark's client and backend, on OpenSSL (a TLS stack other than the
 * proxy's GnuTLS), so that the proxies are measured by a client path independent of
 * the one under test.
 *
 *   loadgen backend PORT [ldap]
 *       echo server on 127.0.0.1:PORT (epoll, one thread), runs until killed; with
 *       `ldap`, an LDAP server instead (see ldap_answer): a BindRequest gets a
 *       BindResponse success, any other request a 45-byte response with its messageID
 *   loadgen full|resume|starttls HOST PORT CA CERT KEY SECONDS PROCESSES
 *       connect, mTLS handshake (resume: with the previous session's ticket; starttls:
 *       after the StartTLS extended request and its success response in plain LDAP),
 *       one LDAP-sized request and its 45-byte answer, close; in PROCESSES processes
 *       for SECONDS
 *   loadgen reqresp HOST PORT CA CERT KEY SECONDS CONNECTIONS
 *       request/response on CONNECTIONS persistent connections; latency histogram
 *   loadgen bulk HOST PORT CA CERT KEY MEGABYTES
 *       one connection sends MEGABYTES while reading the echo back
 *   loadgen idle HOST PORT CA CERT KEY COUNT SECONDS
 *       opens COUNT connections (one round trip each), prints "holding", holds them
 *       for SECONDS, closes
 *   loadgen probe|probe-starttls HOST PORT CA CERT|- KEY|- [MARK]
 *       one round trip (probe-starttls: through StartTLS); exit 0 when it succeeds (the
 *       acceptance pass); with MARK (a letter), the answer must come from an ldap
 *       backend and carry that mark: A = the request bore a proxied authorization
 *       control, P = it bore no control
 *
 * Every mode prints one JSON line. Every loop is bounded by a count or a deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A SearchRequest for the root DSE, 45 bytes, as ldapsearch sends it. */
static const unsigned char request[] = {
    0x30, 0x2b, 0x02, 0x01, 0x02, 0x63, 0x26, 0x04, 0x00, 0x0a, 0x01, 0x00, 0x0a, 0x01, 0x00, 0x02,
    0x01, 0x00, 0x02, 0x01, 0x00, 0x01, 0x01, 0x00, 0x87, 0x0b, 0x6f, 0x62, 0x6a, 0x65, 0x63, 0x74,
    0x43, 0x6c, 0x61, 0x73, 0x73, 0x30, 0x06, 0x04, 0x01, 0x2a, 0x04, 0x01, 0x2b};

/* The StartTLS extended request (RFC 4511 §4.14.1), messageID 1, 31 bytes. */
static const unsigned char starttls_request[] = {
    0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16, '1', '.', '3', '.', '6', '.', '1', '.', '4', '.',
    '1', '.', '1', '4', '6', '6', '.', '2', '0', '0', '3', '7'};

/* The answer to `request` is 45 bytes whose envelope is the request's (SEQUENCE of 43,
 * messageID 2): the echo backend sends the request back, the ldap backend a
 * SearchResultDone of the same size. */
static int answer_ok(const unsigned char *reply) {
    return reply[0] == 0x30 && reply[1] == 0x2b && reply[2] == 0x02 && reply[3] == 0x01 && reply[4] == 0x02;
}

/* The ldap backend's mark in its SearchResultDone (first diagnosticMessage byte), 0 for
 * an echo. */
static unsigned char answer_mark(const unsigned char *reply) { return reply[5] == 0x65 ? reply[14] : 0; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int tcp_connect(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static SSL_CTX *client_ctx(const char *ca, const char *cert, const char *key) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_load_verify_locations(ctx, ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (strcmp(cert, "-") != 0 && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("client certificate");
    if (strcmp(key, "-") != 0 && SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("client key");
    /* Session caching on the client side so that tickets can be reused (resume mode). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return ctx;
}

/* Reads one whole LDAPMessage from a blocking socket into buf; its length, or -1. */
static int read_ldap_message(int fd, unsigned char *buf, size_t cap) {
    size_t got = 0, need = 2, total = 0;
    while (got < need) {
        ssize_t n = recv(fd, buf + got, need - got, 0);
        if (n <= 0) return -1;
        got += (size_t)n;
        if (total == 0 && got >= 2) {
            if (buf[0] != 0x30) return -1;
            size_t header = 2, length = buf[1];
            if (length & 0x80) {
                size_t octets = length & 0x7f;
                if (octets < 1 || octets > 3) return -1;
                header += octets;
                if (got < header) {
                    need = header;
                    continue;
                }
                length = 0;
                for (size_t i = 0; i < octets; i++) length = length << 8 | buf[2 + i];
            }
            total = header + length;
            if (total > cap) return -1;
            need = total;
        }
    }
    return (int)total;
}

/* StartTLS in plain LDAP on fd: the extended request, then its response, which must be
 * an ExtendedResponse with resultCode success (0). Returns 1 when TLS may start. */
static int start_tls(int fd) {
    if (send(fd, starttls_request, sizeof starttls_request, MSG_NOSIGNAL) != (ssize_t)sizeof starttls_request) return 0;
    unsigned char response[512];
    int n = read_ldap_message(fd, response, sizeof response);
    if (n < 0) return 0;
    /* SEQUENCE { messageID INTEGER, [APPLICATION 24] { resultCode ENUMERATED, ... } } */
    size_t at = response[1] & 0x80 ? 2 + (response[1] & 0x7f) : 2;
    if (at + 2 > (size_t)n || response[at] != 0x02) return 0;
    at += 2 + response[at + 1];
    if (at + 2 > (size_t)n || response[at] != 0x78) return 0;
    at += response[at + 1] & 0x80 ? 2 + (response[at + 1] & 0x7f) : 2;
    return at + 3 <= (size_t)n && response[at] == 0x0a && response[at + 1] == 0x01 && response[at + 2] == 0;
}

/* One connection: (StartTLS,) handshake (resuming *session if set), one request, its
 * answer, close. Returns 1 on success; *reused says whether the session was resumed,
 * *mark the ldap backend's mark on the answer. Replaces *session with the newest one
 * the server gave. */
static int one_round_trip(SSL_CTX *ctx, const char *host, int port, SSL_SESSION **session, int *reused, int starttls,
                          unsigned char *mark) {
    int fd = tcp_connect(host, port);
    if (fd < 0) return 0;
    /* Every wait is bounded: a proxy that stops answering fails the round trip. */
    struct timeval limit = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    if (starttls && !start_tls(fd)) {
        close(fd);
        return 0;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (session && *session) SSL_set_session(ssl, *session);
    int ok = 0;
    unsigned char reply[sizeof request];
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, request, sizeof request) == (int)sizeof request) {
        size_t got = 0;
        while (got < sizeof request) {
            int n = SSL_read(ssl, reply + got, (int)(sizeof request - got));
            if (n <= 0) break;
            got += (size_t)n;
        }
        ok = got == sizeof request && answer_ok(reply);
        if (ok && mark) *mark = answer_mark(reply);
        if (reused) *reused = SSL_session_reused(ssl);
        if (ok && session) {
            SSL_SESSION *fresh = SSL_get1_session(ssl);
            if (fresh) {
                if (*session) SSL_SESSION_free(*session);
                *session = fresh;
            }
        }
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    return ok;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum handshake_mode { FULL, RESUME, STARTTLS };
static const char *const handshake_mode_names[] = {"full", "resume", "starttls"};

static int handshakes(int argc, char **argv, enum handshake_mode mode) {
    int resume = mode == RESUME;
    if (argc != 9) return 64;
    const char *host = argv[2];
    int port = atoi(argv[3]);
    double seconds = atof(argv[7]);
    int processes = atoi(argv[8]);
    int pipes[256][2];
    if (processes < 1 || processes > 256) return 64;
    for (int p = 0; p < processes; p++) {
        if (pipe(pipes[p]) != 0) die("pipe");
        if (fork() == 0) {
            SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
            SSL_SESSION *session = NULL;
            long done = 0, failed = 0, reused = 0;
            size_t capacity = 1 << 20, samples = 0;
            double *latency = malloc(capacity * sizeof *latency);
            double deadline = now() + seconds;
            if (resume) one_round_trip(ctx, host, port, &session, NULL, 0, NULL); /* the first ticket */
            while (now() < deadline) {
                int was_reused = 0;
                double started = now();
                if (one_round_trip(ctx, host, port, resume ? &session : NULL, &was_reused, mode == STARTTLS, NULL)) {
                    done++;
                    reused += was_reused;
                    if (samples < capacity) latency[samples++] = now() - started;
                } else {
                    failed++;
                }
            }
            qsort(latency, samples, sizeof *latency, cmp_double);
            double p99 = samples ? latency[(size_t)(0.99 * (samples - 1))] : 0;
            double worst = samples ? latency[samples - 1] : 0;
            char line[160];
            int n = snprintf(line, sizeof line, "%ld %ld %ld %.6f %.6f\n", done, failed, reused, p99, worst);
            if (write(pipes[p][1], line, (size_t)n) < 0) _exit(1);
            _exit(0);
        }
        close(pipes[p][1]);
    }
    long done = 0, failed = 0, reused = 0;
    double p99 = 0, worst = 0; /* the worst process's p99: conservative */
    for (int p = 0; p < processes; p++) {
        char line[160] = {0};
        if (read(pipes[p][0], line, sizeof line - 1) > 0) {
            long d, f, r;
            double q, w;
            if (sscanf(line, "%ld %ld %ld %lf %lf", &d, &f, &r, &q, &w) == 5) {
                done += d;
                failed += f;
                reused += r;
                if (q > p99) p99 = q;
                if (w > worst) worst = w;
            }
        }
        wait(NULL);
    }
    printf("{\"mode\":\"%s\",\"handshakes\":%ld,\"failed\":%ld,\"resumed\":%ld,\"seconds\":%.3f,"
           "\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
           handshake_mode_names[mode], done, failed, reused, seconds, p99 * 1e3, worst * 1e3);
    return failed > done / 100 ? 1 : 0;
}

struct rr_conn {
    SSL *ssl;
    int fd;
    size_t got;
    double sent_at;
};

static int reqresp(int argc, char **argv) {
    if (argc != 9) return 64;
    const char *host = argv[2];
    int port = atoi(argv[3]);
    double seconds = atof(argv[7]);
    int count = atoi(argv[8]);
    SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
    struct rr_conn *conns = calloc((size_t)count, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < count; i++) {
        conns[i].fd = tcp_connect(host, port);
        if (conns[i].fd < 0) die("connect");
        conns[i].ssl = SSL_new(ctx);
        SSL_set_fd(conns[i].ssl, conns[i].fd);
        SSL_set_tlsext_host_name(conns[i].ssl, "localhost");
        if (SSL_connect(conns[i].ssl) != 1) die("handshake");
        fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    size_t capacity = 1 << 22, samples = 0;
    double *latency = malloc(capacity * sizeof *latency);
    double start = now(), deadline = start + seconds;
    for (int i = 0; i < count; i++) {
        conns[i].sent_at = now();
        SSL_write(conns[i].ssl, request, sizeof request);
    }
    struct epoll_event events[256];
    unsigned char buffer[4096];
    while (now() < deadline) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct rr_conn *c = &conns[events[e].data.u32];
            for (;;) {
                int r = SSL_read(c->ssl, buffer, sizeof buffer);
                if (r <= 0) {
                    int err = SSL_get_error(c->ssl, r);
                    if (err == SSL_ERROR_WANT_READ) break;
                    die("connection lost during reqresp");
                }
                c->got += (size_t)r;
                while (c->got >= sizeof request) {
                    c->got -= sizeof request;
                    double t = now();
                    if (samples < capacity) latency[samples++] = t - c->sent_at;
                    c->sent_at = t;
                    SSL_write(c->ssl, request, sizeof request);
                }
            }
        }
    }
    double elapsed = now() - start;
    qsort(latency, samples, sizeof *latency, cmp_double);
#define PCT(p) (samples ? latency[(size_t)((p) * (samples - 1))] * 1e6 : 0)
    printf("{\"mode\":\"reqresp\",\"connections\":%d,\"ops\":%zu,\"seconds\":%.3f,\"ops_per_s\":%.0f,"
           "\"p50_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f}\n",
           count, samples, elapsed, samples / elapsed, PCT(0.5), PCT(0.99), PCT(0.999));
    return 0;
}

static int bulk(int argc, char **argv) {
    if (argc != 8) return 64;
    long total = atol(argv[7]) * 1024 * 1024;
    SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
    int fd = tcp_connect(argv[2], atoi(argv[3]));
    if (fd < 0) die("connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (SSL_connect(ssl) != 1) die("handshake");
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static unsigned char out[16384], in[65536];
    for (size_t i = 0; i < sizeof out; i++) out[i] = (unsigned char)(i * 131 + 7);
    long sent = 0, received = 0;
    double start = now(), deadline = start + 120;
    while (received < total && now() < deadline) {
        int progress = 0;
        if (sent < total) {
            long want = total - sent < (long)sizeof out ? total - sent : (long)sizeof out;
            int w = SSL_write(ssl, out, (int)want);
            if (w > 0) {
                sent += w;
                progress = 1;
            }
        }
        for (;;) {
            int r = SSL_read(ssl, in, sizeof in);
            if (r <= 0) break;
            received += r;
            progress = 1;
        }
        if (!progress) {
            struct epoll_event ev;
            int ep = epoll_create1(0);
            struct epoll_event want = {.events = EPOLLIN | (sent < total ? EPOLLOUT : 0)};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &want);
            epoll_wait(ep, &ev, 1, 100);
            close(ep);
        }
    }
    double elapsed = now() - start;
    printf("{\"mode\":\"bulk\",\"bytes_each_way\":%ld,\"received\":%ld,\"seconds\":%.3f,\"mb_per_s_each_way\":%.1f}\n",
           total, received, elapsed, received / elapsed / 1e6);
    return received == total ? 0 : 1;
}

static int idle(int argc, char **argv) {
    if (argc != 9) return 64;
    int count = atoi(argv[7]);
    double seconds = atof(argv[8]);
    SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
    SSL **held = calloc((size_t)count, sizeof *held);
    int opened = 0;
    unsigned char reply[sizeof request];
    for (int i = 0; i < count; i++) {
        int fd = tcp_connect(argv[2], atoi(argv[3]));
        if (fd < 0) break;
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        if (SSL_connect(ssl) != 1 || SSL_write(ssl, request, sizeof request) != (int)sizeof request) {
            SSL_free(ssl);
            close(fd);
            break;
        }
        size_t got = 0;
        while (got < sizeof request) {
            int n = SSL_read(ssl, reply + got, (int)(sizeof request - got));
            if (n <= 0) break;
            got += (size_t)n;
        }
        held[opened++] = ssl;
    }
    printf("{\"mode\":\"idle\",\"holding\":%d}\n", opened);
    fflush(stdout);
    struct timespec pause = {.tv_sec = (time_t)seconds, .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&pause, NULL);
    for (int i = 0; i < opened; i++) {
        close(SSL_get_fd(held[i]));
        SSL_free(held[i]);
    }
    return opened == count ? 0 : 1;
}

static int probe(int argc, char **argv, int starttls) {
    if (argc != 7 && argc != 8) return 64;
    SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
    unsigned char mark = 0;
    if (!one_round_trip(ctx, argv[2], atoi(argv[3]), NULL, NULL, starttls, &mark)) return 1;
    if (argc == 8 && mark != (unsigned char)argv[7][0]) {
        fprintf(stderr, "loadgen: the answer's mark is '%c', not '%c'\n", mark ? mark : '-', argv[7][0]);
        return 3;
    }
    return 0;
}

/* Writes all of buf to a non-blocking socket, blocking briefly when it is full: the
 * backpressure we want. Returns 0 when the peer is gone. */
static int write_all(int fd, const unsigned char *buf, size_t len) {
    size_t off = 0;
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    fcntl(fd, F_SETFL, flags);
    return off == len;
}

/* The ldap backend's part of a connection: the bytes of a message not yet whole. */
struct ldap_conn {
    unsigned char *buf;
    size_t len, cap;
};

#define LDAP_MAX_MESSAGE (1 << 20)

/* The length of the BER element at buf (header + content; one-byte tag, definite
 * length), 0 when more bytes are needed, -1 when it cannot be one of ours. */
static long ber_length(const unsigned char *buf, size_t len) {
    if (len < 2) return 0;
    size_t header = 2, length = buf[1];
    if (length & 0x80) {
        size_t octets = length & 0x7f;
        if (octets < 1 || octets > 4) return -1;
        header += octets;
        if (len < header) return 0;
        length = 0;
        for (size_t i = 0; i < octets; i++) length = length << 8 | buf[2 + i];
    }
    if (header + length > LDAP_MAX_MESSAGE) return -1;
    return (long)(header + length);
}

/* The length of the LDAPMessage (a SEQUENCE) at buf, as ber_length. */
static long ldap_message_length(const unsigned char *buf, size_t len) {
    if (len >= 1 && buf[0] != 0x30) return -1;
    return ber_length(buf, len);
}

static const char proxied_authz_oid[] = "2.16.840.1.113730.3.4.18";

/* The answer to one whole LDAPMessage, appended to out (at most 64 bytes). Returns the
 * number of bytes appended, 0 for a request without a response (abandon), -1 to close
 * (unbind, or not a request this server can read). A BindRequest gets a BindResponse
 * success, whatever it names: the proxy's own bind included. Any other request gets
 * exactly 45 bytes: the LDAPResult of its response type (a SearchResultDone for a
 * search), success, padded with a diagnosticMessage whose first byte marks what came:
 * 'A' the request bore a proxied authorization control, 'C' other controls only, 'P' none. */
static int ldap_answer(const unsigned char *msg, size_t len, unsigned char *out) {
    size_t at = msg[1] & 0x80 ? 2 + (msg[1] & 0x7f) : 2;
    if (at + 2 > len || msg[at] != 0x02) return -1;
    size_t id_len = msg[at + 1];
    if (id_len < 1 || id_len > 4 || at + 2 + id_len >= len) return -1;
    const unsigned char *id = msg + at;  /* the messageID's whole encoding, copied as it came */
    size_t op_at = at + 2 + id_len;
    unsigned char op = msg[op_at];
    if ((op & 0xc0) != 0x40) return -1;  /* APPLICATION class */
    unsigned number = op & 0x1f;
    if (number == 2) return -1;          /* unbind: the client is done */
    if (number == 16) return 0;          /* abandon: no response */
    size_t n = 0;
    if (number == 0) {
        /* BindResponse ::= [APPLICATION 1] { resultCode 0, matchedDN "", diagnosticMessage "" } */
        out[n++] = 0x30;
        out[n++] = (unsigned char)(2 + id_len + 9);
        memcpy(out + n, id, 2 + id_len);
        n += 2 + id_len;
        static const unsigned char result[] = {0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00};
        memcpy(out + n, result, sizeof result);
        return (int)(n + sizeof result);
    }
    unsigned response = number == 3 ? 5 : number == 23 ? 24 : number + 1;
    size_t diagnostic = 45 - 13 - id_len;  /* so that the whole message is 45 bytes */
    out[n++] = 0x30;
    out[n++] = 43;
    memcpy(out + n, id, 2 + id_len);
    n += 2 + id_len;
    out[n++] = (unsigned char)(0x60 | response);
    out[n++] = (unsigned char)(9 + diagnostic - 2);
    static const unsigned char result[] = {0x0a, 0x01, 0x00, 0x04, 0x00};
    memcpy(out + n, result, sizeof result);
    n += sizeof result;
    out[n++] = 0x04;
    out[n++] = (unsigned char)diagnostic;
    /* After the operation, controls [0] or nothing. */
    long op_length = ber_length(msg + op_at, len - op_at);
    int controls = op_length > 0 && op_at + (size_t)op_length < len && msg[op_at + (size_t)op_length] == 0xa0;
    unsigned char mark = 'P';
    if (controls) mark = memmem(msg, len, proxied_authz_oid, sizeof proxied_authz_oid - 1) ? 'A' : 'C';
    out[n++] = mark;
    memset(out + n, '-', diagnostic - 1);
    n += diagnostic - 1;
    return (int)n;
}

/* Takes what was read on one connection of the ldap backend: whole messages are
 * answered (all answers of one read in one write), a partial one is kept for the next
 * read. Returns 0 when the connection must close. */
static int ldap_serve(int fd, struct ldap_conn *c, const unsigned char *data, size_t len) {
    static unsigned char out[65536];
    size_t out_len = 0;
    /* The messages of this read are taken where they lie; only a partial one at the end
     * (or one begun in an earlier read) is copied into the connection's buffer. */
    const unsigned char *p = data;
    size_t left = len;
    while (left > 0 || c->len > 0) {
        const unsigned char *msg;
        long length;
        if (c->len > 0) {
            /* Complete the kept message from this read's bytes. */
            if (c->len < 6) {
                size_t take = left < 6 - c->len ? left : 6 - c->len;
                memcpy(c->buf + c->len, p, take);
                c->len += take, p += take, left -= take;
            }
            length = ldap_message_length(c->buf, c->len);
            if (length < 0) return 0;
            if (length == 0) break;  /* still no whole header, and nothing left */
            if ((size_t)length > c->cap) {
                c->buf = realloc(c->buf, (size_t)length);
                if (!c->buf) die("realloc");
                c->cap = (size_t)length;
            }
            size_t take = (size_t)length - c->len < left ? (size_t)length - c->len : left;
            memcpy(c->buf + c->len, p, take);
            c->len += take, p += take, left -= take;
            if (c->len < (size_t)length) break;
            msg = c->buf;
            c->len = 0;
        } else {
            length = ldap_message_length(p, left);
            if (length < 0) return 0;
            if (length == 0 || (size_t)length > left) {
                size_t keep = left;
                if (keep > c->cap) {
                    c->buf = realloc(c->buf, keep < 64 ? 64 : keep);
                    if (!c->buf) die("realloc");
                    c->cap = keep < 64 ? 64 : keep;
                }
                memcpy(c->buf, p, keep);
                c->len = keep;
                left = 0;
                break;
            }
            msg = p;
            p += length, left -= (size_t)length;
        }
        if (out_len + 64 > sizeof out) {
            if (!write_all(fd, out, out_len)) return 0;
            out_len = 0;
        }
        int n = ldap_answer(msg, (size_t)length, out + out_len);
        if (n < 0) {
            write_all(fd, out, out_len);
            return 0;
        }
        out_len += (size_t)n;
    }
    return out_len == 0 || write_all(fd, out, out_len);
}

/* The backend: an epoll echo server, or with `ldap` an LDAP server (ldap_answer). */
static int backend(int argc, char **argv) {
    if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "ldap"))) return 64;
    int ldap = argc == 4;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 4096) != 0) die("backend bind");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    /* The ldap backend's connections, by descriptor (below the descriptor limit). */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    size_t max_fds = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1 << 20) ? (1 << 20) : rl.rlim_cur;
    struct ldap_conn *conns = ldap ? calloc(max_fds, sizeof *conns) : NULL;
    static unsigned char buffer[65536];
    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(ep, events, 512, -1);
        for (int e = 0; e < n; e++) {
            int fd = events[e].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (conns && (size_t)c >= max_fds) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buffer, sizeof buffer);
            int keep = r > 0;
            if (r < 0 && errno == EAGAIN) continue;
            if (keep) keep = conns ? ldap_serve(fd, &conns[fd], buffer, (size_t)r) : write_all(fd, buffer, (size_t)r);
            if (!keep) {
                if (conns) conns[fd].len = 0;  /* the buffer stays, for the next connection on this descriptor */
                close(fd);
            }
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (argc < 2) goto usage;
    if (!strcmp(argv[1], "backend")) return backend(argc, argv);
    if (!strcmp(argv[1], "full")) return handshakes(argc, argv, FULL);
    if (!strcmp(argv[1], "resume")) return handshakes(argc, argv, RESUME);
    if (!strcmp(argv[1], "starttls")) return handshakes(argc, argv, STARTTLS);
    if (!strcmp(argv[1], "reqresp")) return reqresp(argc, argv);
    if (!strcmp(argv[1], "bulk")) return bulk(argc, argv);
    if (!strcmp(argv[1], "idle")) return idle(argc, argv);
    if (!strcmp(argv[1], "probe")) return probe(argc, argv, 0);
    if (!strcmp(argv[1], "probe-starttls")) return probe(argc, argv, 1);
usage:
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 64;
}
