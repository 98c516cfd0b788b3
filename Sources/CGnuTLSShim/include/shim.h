// The C side of mtls-proxy: only what Swift cannot reach on its own.
//
// - Headers that Swift's Glibc module does not export (epoll, signalfd, timerfd,
//   eventfd) are included here so that their declarations become visible to Swift.
// - accept4 is a _GNU_SOURCE function, and the Glibc module is built without it.
// - gnutls_free is a mutable C global (a function pointer), which Swift 6 refuses to
//   touch as "not concurrency-safe"; a function wrapper calls it for us.
#ifndef MTLS_PROXY_SHIM_H
#define MTLS_PROXY_SHIM_H

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gnutls/abstract.h>
#include <gnutls/socket.h>
#include <gnutls/ocsp.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: one syscall instead of three.
int shim_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// Frees memory that GnuTLS allocated for us (gnutls_datum_t.data and friends).
void shim_gnutls_free(void *p);

/// Sets every signal in the process mask (used to block SIGHUP/TERM/INT before the
/// worker threads start, so that only the signalfd sees them).
int shim_block_signals(const int *signals, int count, sigset_t *out);

/// malloc_trim(0): returns freed heap memory to the system after a big CRL was parsed.
/// <malloc.h> is not part of Swift's Glibc module.
int shim_malloc_trim(void);

/// CPUs this process may run on (sched_getaffinity, CPU_COUNT: a GNU macro): what
/// `workers = auto` counts, so that taskset, systemd's CPUAffinity= or a container's
/// cpuset give one loop per allowed core, not per online one. 0 if unknown.
int shim_allowed_cpus(void);

#endif
