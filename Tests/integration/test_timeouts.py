"""Bad input harms nobody else: garbage, HTTP and silent clients are cut off, and
max_connections holds."""
import socket
import time

import pytest

from helpers import free_port, proxy_config, round_trip, tls_connect, wait_until


@pytest.fixture
def strict_proxy(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, handshake_timeout="1500ms", max_connections=3))
    proxy.port = port
    return proxy


def closed_within(sock, seconds):
    """True when the proxy closes (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


def test_silent_client_is_cut_off_while_others_are_served(strict_proxy, pki, backend):
    silent = socket.create_connection(("127.0.0.1", strict_proxy.port))
    started = time.monotonic()
    assert round_trip(strict_proxy.port, pki, "alice") == b"ping\n"
    assert closed_within(silent, 10)
    assert time.monotonic() - started >= 1.0
    strict_proxy.wait_for_log("end=handshake_timeout")
    assert backend.accepted == 1  # alice only


def test_client_stalled_mid_handshake_does_not_stall_the_loop(strict_proxy, pki):
    # A TLS record header that promises more than is sent: GnuTLS must not wait for it.
    stalled = socket.create_connection(("127.0.0.1", strict_proxy.port))
    stalled.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + b"\x01\x00")
    for _ in range(5):
        started = time.monotonic()
        assert round_trip(strict_proxy.port, pki, "bob") == b"ping\n"
        assert time.monotonic() - started < 1.0
    assert closed_within(stalled, 10)
    strict_proxy.wait_for_log("end=handshake_timeout")


@pytest.mark.parametrize("junk", [
    b"\x00\xff" * 300,
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00",  # a plaintext LDAP bind
])
def test_garbage_is_refused_and_harms_nobody(strict_proxy, pki, backend, junk):
    sock = socket.create_connection(("127.0.0.1", strict_proxy.port))
    sock.sendall(junk)
    assert round_trip(strict_proxy.port, pki, "carol") == b"ping\n"
    assert closed_within(sock, 10)
    strict_proxy.wait_for_log("reason=handshake_failed|reason=handshake_timeout")
    assert backend.accepted == 1  # carol only


def test_max_connections_refuses_the_next_one(strict_proxy, pki):
    held = [tls_connect(strict_proxy.port, pki, name) for name in ["alice", "bob", "carol"]]
    for sock in held:
        sock.sendall(b"x")
        assert sock.recv(10) == b"x"
    extra = socket.create_connection(("127.0.0.1", strict_proxy.port))
    assert closed_within(extra, 5)
    strict_proxy.wait_for_log("end=over_limit")
    held.pop().close()
    wait_until(lambda: round_trip_ok(strict_proxy.port, pki), timeout=5, what="a free slot")
    for sock in held:
        sock.close()


def round_trip_ok(port, pki):
    try:
        return round_trip(port, pki, "alice") == b"ping\n"
    except OSError:
        return False


def test_idle_timeout_closes_quiet_connection(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, idle_timeout="1s"))
    sock = tls_connect(port, pki, "alice")
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    sock.settimeout(10)
    assert sock.recv(10) == b""  # close_notify, then EOF
    proxy.wait_for_log("end=idle_timeout")
