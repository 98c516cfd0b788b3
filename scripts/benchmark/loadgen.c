/*
 * loadgen: the benchmark's client and backend, on OpenSSL (a TLS stack other than the
 * proxy's GnuTLS), so that the proxies are measured by a client path independent of
 * the one under test.
 *
 *   loadgen backend PORT
 *       echo server on 127.0.0.1:PORT (epoll, one thread), runs until killed
 *   loadgen full|resume HOST PORT CA CERT KEY SECONDS PROCESSES
 *       connect, mTLS handshake (resume: with the previous session's ticket), one
 *       LDAP-sized request and its echo, close; in PROCESSES processes for SECONDS
 *   loadgen reqresp HOST PORT CA CERT KEY SECONDS CONNECTIONS
 *       request/response on CONNECTIONS persistent connections; latency histogram
 *   loadgen bulk HOST PORT CA CERT KEY MEGABYTES
 *       one connection sends MEGABYTES while reading the echo back
 *   loadgen idle HOST PORT CA CERT KEY COUNT SECONDS
 *       opens COUNT connections (one round trip each), prints "holding", holds them
 *       for SECONDS, closes
 *   loadgen probe HOST PORT CA CERT|- KEY|-
 *       one round trip; exit 0 when it succeeds (the acceptance pass)
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

/* One connection: handshake (resuming *session if set), one request, its echo, close.
 * Returns 1 on success; *reused says whether the session was resumed. Replaces
 * *session with the newest one the server gave. */
static int one_round_trip(SSL_CTX *ctx, const char *host, int port, SSL_SESSION **session, int *reused) {
    int fd = tcp_connect(host, port);
    if (fd < 0) return 0;
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
        ok = got == sizeof request && memcmp(reply, request, sizeof request) == 0;
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

static int handshakes(int argc, char **argv, int resume) {
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
            if (resume) one_round_trip(ctx, host, port, &session, NULL); /* the first ticket */
            while (now() < deadline) {
                int was_reused = 0;
                double started = now();
                if (one_round_trip(ctx, host, port, resume ? &session : NULL, &was_reused)) {
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
           resume ? "resume" : "full", done, failed, reused, seconds, p99 * 1e3, worst * 1e3);
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

static int probe(int argc, char **argv) {
    if (argc != 7) return 64;
    SSL_CTX *ctx = client_ctx(argv[4], argv[5], argv[6]);
    return one_round_trip(ctx, argv[2], atoi(argv[3]), NULL, NULL) ? 0 : 1;
}

/* The backend: an epoll echo server. */
static int backend(int argc, char **argv) {
    if (argc != 3) return 64;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 4096) != 0) die("backend bind");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
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
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buffer, sizeof buffer);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd);
                continue;
            }
            /* Echo; a full socket blocks briefly, which is the backpressure we want. */
            ssize_t off = 0;
            int flags = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
            while (off < r) {
                ssize_t w = write(fd, buffer + off, (size_t)(r - off));
                if (w <= 0) break;
                off += w;
            }
            fcntl(fd, F_SETFL, flags);
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (argc < 2) goto usage;
    if (!strcmp(argv[1], "backend")) return backend(argc, argv);
    if (!strcmp(argv[1], "full")) return handshakes(argc, argv, 0);
    if (!strcmp(argv[1], "resume")) return handshakes(argc, argv, 1);
    if (!strcmp(argv[1], "reqresp")) return reqresp(argc, argv);
    if (!strcmp(argv[1], "bulk")) return bulk(argc, argv);
    if (!strcmp(argv[1], "idle")) return idle(argc, argv);
    if (!strcmp(argv[1], "probe")) return probe(argc, argv);
usage:
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 64;
}
