// Plaintext relay lab: the system-call layer of a request/response relay alone, without
// TLS or any proxy logic, to see what the kernel's loopback TCP costs per request and
// whether io_uring (one system call for a batch of sends and receives) lowers it against
// edge-triggered epoll. Not part of the product; docs/performance.md cites its results.
// Run it with scripts/benchmark/relaylab.sh (needs liburing-dev):
//   relaylab echo PORT                         echo backend
//   relaylab client PORT CONNS SECONDS          CONNS connections, 45-byte request/response, prints ops
//   relaylab proxy-epoll LISTEN BACKEND CONNS   relay with edge-triggered epoll (a short read is drained)
//   relaylab proxy-uring LISTEN BACKEND CONNS   relay with io_uring (a receive armed on every socket)
// The relay prints its CPU seconds (getrusage) and operations at SIGTERM.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (void *)&a, sizeof a) || listen(fd, 512)) { perror("listen"); exit(1); }
    return fd;
}
static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}
static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
static double cpu(void) {
    struct rusage u; getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void echo(int port) {
    int l = listen_on(port), ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &e);
    char buf[65536];
    for (;;) {
        struct epoll_event ev[64];
        int n = epoll_wait(ep, ev, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == l) { int c = accept(l, 0, 0), one = 1; setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event ce = {.events = EPOLLIN, .data.fd = c}; epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce); continue; }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) { close(fd); continue; }
            send(fd, buf, r, MSG_NOSIGNAL);
        }
    }
}

static void client(int port, int conns, double seconds) {
    int ep = epoll_create1(0); int fds[1024];
    char req[45]; memset(req, 'q', sizeof req);
    for (int i = 0; i < conns; i++) { fds[i] = connect_to(port); struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e); send(fds[i], req, 45, 0); }
    int got[1024] = {0}; long ops = 0;
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[4096];
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > seconds) break;
        struct epoll_event ev[64];
        int n = epoll_wait(ep, ev, 64, 100);
        for (int i = 0; i < n; i++) {
            int k = ev[i].data.u32;
            ssize_t r = recv(fds[k], buf, sizeof buf, 0);
            if (r <= 0) { fprintf(stderr, "client: conn closed\n"); exit(1); }
            got[k] += r;
            while (got[k] >= 45) { got[k] -= 45; ops++; send(fds[k], req, 45, 0); }
        }
    }
    printf("%ld\n", ops);
}

// --- the proxy, epoll -----------------------------------------------------------------

struct pair { int fd[2]; };  // 0 = client, 1 = backend

static long ops;
static void proxy_epoll(int lport, int bport, int conns) {
    int l = listen_on(lport), ep = epoll_create1(0);
    struct pair *p = calloc(conns, sizeof *p);
    for (int i = 0; i < conns; i++) {
        p[i].fd[0] = accept(l, 0, 0); p[i].fd[1] = connect_to(bport);
        int one = 1; setsockopt(p[i].fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (int s = 0; s < 2; s++) { nonblock(p[i].fd[s]);
            struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.u64 = (uint64_t)i << 1 | s};
            epoll_ctl(ep, EPOLL_CTL_ADD, p[i].fd[s], &e); }
    }
    double c0 = cpu(); char buf[65536];
    while (!stop) {
        struct epoll_event ev[256];
        int n = epoll_wait(ep, ev, 256, 100);
        for (int i = 0; i < n; i++) {
            int k = ev[i].data.u64 >> 1, s = ev[i].data.u64 & 1;
            if (!(ev[i].events & EPOLLIN)) continue;
            ssize_t r = recv(p[k].fd[s], buf, sizeof buf, 0);  // a short read: drained
            if (r <= 0) continue;
            send(p[k].fd[!s], buf, r, MSG_NOSIGNAL);
            if (s == 1) ops++;
        }
    }
    printf("epoll: cpu %.3f s, %ld ops, %.0f ops per cpu-s\n", cpu() - c0, ops, ops / (cpu() - c0));
}

// --- the proxy, io_uring ---------------------------------------------------------------

static void proxy_uring(int lport, int bport, int conns) {
    int l = listen_on(lport);
    struct pair *p = calloc(conns, sizeof *p);
    for (int i = 0; i < conns; i++) {
        p[i].fd[0] = accept(l, 0, 0); p[i].fd[1] = connect_to(bport);
        int one = 1; setsockopt(p[i].fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct io_uring ring;
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(1024, &ring, &params) < 0) {
        params.flags = 0;
        if (io_uring_queue_init_params(1024, &ring, &params) < 0) { perror("io_uring"); exit(1); }
        fprintf(stderr, "uring: without DEFER_TASKRUN\n");
    }
    char (*bufs)[2][16384] = malloc(sizeof *bufs * conns);
    // user_data: conn << 2 | side << 1 | is_send
    for (int i = 0; i < conns; i++) for (int s = 0; s < 2; s++) {
        struct io_uring_sqe *q = io_uring_get_sqe(&ring);
        io_uring_prep_recv(q, p[i].fd[s], bufs[i][s], sizeof bufs[i][s], 0);
        io_uring_sqe_set_data64(q, (uint64_t)i << 2 | s << 1);
    }
    io_uring_submit(&ring);
    double c0 = cpu();
    while (!stop) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
        int rc = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR) { fprintf(stderr, "wait %d\n", rc); break; }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t d = cqe->user_data; int k = d >> 2, s = (d >> 1) & 1, is_send = d & 1;
            if (is_send) continue;  // 45 bytes always fit: no partial sends here
            if (cqe->res <= 0) continue;
            struct io_uring_sqe *q = io_uring_get_sqe(&ring);
            io_uring_prep_send(q, p[k].fd[!s], bufs[k][s], cqe->res, MSG_NOSIGNAL);
            io_uring_sqe_set_data64(q, (uint64_t)k << 2 | s << 1 | 1);
            q->flags |= IOSQE_IO_LINK;  // the buffer is reused by the next recv only after the send
            q = io_uring_get_sqe(&ring);
            io_uring_prep_recv(q, p[k].fd[s], bufs[k][s], sizeof bufs[k][s], 0);
            io_uring_sqe_set_data64(q, (uint64_t)k << 2 | s << 1);
            if (s == 1) ops++;
        }
        io_uring_cq_advance(&ring, seen);
    }
    printf("uring: cpu %.3f s, %ld ops, %.0f ops per cpu-s\n", cpu() - c0, ops, ops / (cpu() - c0));
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term); signal(SIGPIPE, SIG_IGN);
    if (!strcmp(argv[1], "echo")) echo(atoi(argv[2]));
    else if (!strcmp(argv[1], "client")) client(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    else if (!strcmp(argv[1], "proxy-epoll")) proxy_epoll(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    else if (!strcmp(argv[1], "proxy-uring")) proxy_uring(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    return 0;
}
