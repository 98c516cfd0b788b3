#ifndef _GNU_SOURCE
#error "Package.swift defines _GNU_SOURCE for this target: accept4 needs it"
#endif
#include "shim.h"
#include <signal.h>
#include <malloc.h>
#include <sched.h>

int shim_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

void shim_gnutls_free(void *p) {
    gnutls_free(p);
}

int shim_block_signals(const int *signals, int count, sigset_t *out) {
    sigemptyset(out);
    for (int i = 0; i < count; i++) {
        sigaddset(out, signals[i]);
    }
    return pthread_sigmask(SIG_BLOCK, out, NULL);
}

int shim_malloc_trim(void) {
    return malloc_trim(0);
}

int shim_allowed_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return 0;
    }
    return CPU_COUNT(&set);
}
