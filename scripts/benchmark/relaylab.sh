#!/usr/bin/env bash
# The plaintext relay lab (relaylab.c): PAIRS runs of the epoll relay and the io_uring
# relay, interleaved, each 5 s of 32-connection request/response; relay on CPU 0, client
# and echo backend on CPU 1, as in scripts/bench. Prints ops per relay CPU-second.
#   scripts/benchmark/relaylab.sh [PAIRS]        (default 5; needs gcc and liburing-dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:-5}
mkdir -p .build
gcc -O2 -o .build/relaylab scripts/benchmark/relaylab.c -luring
lab=.build/relaylab
one() {
    local mode=$1 base=$((20000 + RANDOM % 20000))
    taskset -c 1 $lab echo $base & local echo_pid=$!
    sleep 0.2
    taskset -c 0 $lab proxy-$mode $((base + 1)) $base 32 > .build/relaylab.$mode.out & local relay_pid=$!
    sleep 0.2
    taskset -c 1 $lab client $((base + 1)) 32 5 > /dev/null
    kill -TERM $relay_pid; wait $relay_pid
    kill -9 $echo_pid; wait $echo_pid 2>/dev/null || true
    cat .build/relaylab.$mode.out
}
for _ in $(seq "$pairs"); do one epoll; one uring; done
