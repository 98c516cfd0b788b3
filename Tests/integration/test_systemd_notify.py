"""The systemd notify protocol: the test plays systemd, binding the datagram socket that
NOTIFY_SOCKET names and reading what the real binary sends there."""
import contextlib
import ctypes
import os
import signal
import socket
import time

import pytest

from helpers import free_port, proxy_config, round_trip


def parse(datagram):
    return dict(line.split("=", 1) for line in datagram.decode().splitlines() if "=" in line)


class FakeSystemd:
    """A datagram socket the proxy writes to; `next` returns the next message with a
    given key, keeping every message seen on the way (the STATUS= refreshes in between)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.seen = []

    def next(self, key, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key} in {timeout}s; seen: {self.seen}")
            self.sock.settimeout(left)
            try:
                message = parse(self.sock.recv(4096))
            except socket.timeout:
                continue
            self.seen.append(message)
            if key in message:
                return message

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path)
    fake.env = {"NOTIFY_SOCKET": path}
    yield fake
    fake.close()


def start(start_proxy, pki, backend, env):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address), env=env)
    proxy.port = port
    return proxy


def test_ready_reload_stopping_in_order(start_proxy, pki, backend, systemd):
    proxy = start(start_proxy, pki, backend, systemd.env)
    ready = systemd.next("READY")
    assert ready["READY"] == "1" and ready["MAINPID"] == str(proxy.process.pid)
    assert "0 open connections" in ready["STATUS"]
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"

    before = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as the proxy's MONOTONIC_USEC
    proxy.signal(signal.SIGHUP)
    reloading = systemd.next("RELOADING")
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
    again = systemd.next("READY")
    assert again["READY"] == "1" and "last reload: ok (SIGHUP)" in again["STATUS"]
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"

    proxy.signal(signal.SIGTERM)
    assert systemd.next("STOPPING")["STOPPING"] == "1"
    assert proxy.process.wait(10) == 0
    kinds = [key for message in systemd.seen for key in ("READY", "RELOADING", "STOPPING") if key in message]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"]


def test_failed_reload_still_ends_with_ready(start_proxy, pki, backend, systemd, tmp_path):
    key = tmp_path / "server.key"
    key.write_bytes(open(os.path.join(pki, "server.key"), "rb").read())
    port = free_port()
    config = proxy_config(pki, port, backend.address).replace(f"{pki}/server.key", str(key))
    proxy = start_proxy(config, env=systemd.env)
    systemd.next("READY")
    key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    proxy.signal(signal.SIGHUP)
    systemd.next("RELOADING")
    assert "last reload: FAILED" in systemd.next("READY")["STATUS"]
    assert round_trip(port, pki, "alice") == b"ping\n"


def test_abstract_socket_name(start_proxy, pki, backend):
    name = f"mtls-proxy-test-{os.getpid()}-{free_port()}"
    fake = FakeSystemd("\0" + name)
    try:
        proxy = start(start_proxy, pki, backend, {"NOTIFY_SOCKET": "@" + name})
        assert fake.next("READY")["MAINPID"] == str(proxy.process.pid)
    finally:
        fake.close()


def test_watchdog_pings_repeatedly(start_proxy, pki, backend, systemd):
    proxy = start(start_proxy, pki, backend, dict(systemd.env, WATCHDOG_USEC="400000"))
    systemd.next("READY")
    for _ in range(4):
        assert systemd.next("WATCHDOG", timeout=5)["WATCHDOG"] == "1"
    assert "watchdog ping every 200ms" in proxy.log()


@contextlib.contextmanager
def frozen_threads(pid):
    """Stops every thread of `pid` but its main one (event loop 0, which sends the pings):
    the other event loops look stuck in a call. ptrace(PTRACE_SEIZE + PTRACE_INTERRUPT)
    stops one thread without the group stop a SIGSTOP would cause."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    seize, interrupt, detach, wall = 0x4206, 0x4207, 17, 0x40000000
    frozen = []
    try:
        for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid):
            if libc.ptrace(seize, tid, None, None) != 0:
                pytest.skip(f"ptrace not permitted here: {os.strerror(ctypes.get_errno())}")
            frozen.append(tid)
            assert libc.ptrace(interrupt, tid, None, None) == 0
            status = ctypes.c_int()
            assert libc.waitpid(tid, ctypes.byref(status), wall) == tid
        yield
    finally:
        for tid in frozen:
            libc.ptrace(detach, tid, None, None)


def drain(fake):
    fake.sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            fake.seen.append(parse(fake.sock.recv(4096)))


def test_stuck_event_loop_stops_the_pings(start_proxy, pki, backend, systemd):
    proxy = start(start_proxy, pki, backend, dict(systemd.env, WATCHDOG_USEC="400000"))
    systemd.next("READY")
    systemd.next("WATCHDOG", timeout=5)
    with frozen_threads(proxy.process.pid):
        # Loop 1's heartbeat goes stale (3 s): loop 0 keeps turning but stops pinging.
        proxy.wait_for_log("systemd watchdog ping withheld", timeout=15)
        drain(systemd)
        with pytest.raises(AssertionError, match="no WATCHDOG"):
            systemd.next("WATCHDOG", timeout=1.0)
    # Unstuck, the loop stamps its heartbeat again and the pings resume.
    assert systemd.next("WATCHDOG", timeout=5)["WATCHDOG"] == "1"


def test_watchdog_for_another_pid_is_not_ours(start_proxy, pki, backend, systemd):
    proxy = start(start_proxy, pki, backend, dict(systemd.env, WATCHDOG_USEC="400000", WATCHDOG_PID="1"))
    systemd.next("READY")
    assert "watchdog off" in proxy.log()
    # Five ping periods of silence: the variables were meant for another process.
    with pytest.raises(AssertionError, match="no WATCHDOG"):
        systemd.next("WATCHDOG", timeout=1.0)


def test_no_notify_socket_no_messages(start_proxy, pki, backend):
    proxy = start(start_proxy, pki, backend, None)
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert "systemd notified" not in proxy.log()
