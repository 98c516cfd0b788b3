"""The relay: half-close both ways, close_notify, bulk integrity, many clients."""
import hashlib
import os
import select
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import Backend, rss_kib, BioClient, free_port, proxy_config, round_trip, tls_connect


@pytest.fixture
def relay(start_proxy, pki):
    backends = []

    def make(mode):
        backend = Backend(mode)
        backends.append(backend)
        port = free_port()
        proxy = start_proxy(proxy_config(pki, port, backend.address))
        proxy.port, proxy.backend = port, backend
        return proxy
    yield make
    for backend in backends:  # before the proxies stop: no connection waits for a deaf backend
        backend.close()


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_client_half_close_reaches_backend_as_fin_and_reply_still_flows(relay, pki, tls):
    proxy = relay("digest")
    payload = os.urandom(300_000)
    client = BioClient(proxy.port, pki, "alice", tls=tls)
    client.send(payload)
    client.close_notify()
    # The backend answers only after it saw EOF: the answer proves the FIN got through,
    # and that the other direction still works after the client's half-close.
    reply = client.recv_until_close()  # ends with close_notify, not a bare FIN
    client.close()
    assert reply.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n"
    proxy.wait_for_log("end=closed")


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_backend_half_close_ends_with_close_notify_and_client_can_still_send(relay, pki, tls):
    proxy = relay("greet")
    client = BioClient(proxy.port, pki, "bob", tls=tls)
    greeting = client.recv_until_close()  # close_notify arrives after the greeting
    assert greeting == b"hello from the backend\n"
    payload = os.urandom(100_000)
    client.send(payload)
    client.close_notify()
    assert proxy.backend.eof_seen.wait(10)
    assert proxy.backend.received == (len(payload), hashlib.sha256(payload).hexdigest())
    client.close()


def test_50_megabytes_each_way(relay, pki):
    proxy = relay("echo")
    total = 50 * 1024 * 1024
    block = os.urandom(1 << 20)
    sent_digest, received_digest = hashlib.sha256(), hashlib.sha256()
    sock = tls_connect(proxy.port, pki, "alice")
    sock.setblocking(False)
    sent = received = 0
    chunk = None
    while received < total:
        want_write = sent < total
        readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 20)
        assert readable or writable or sock.pending(), f"stalled at sent={sent} received={received}"
        if want_write and (writable or readable):
            if chunk is None:
                offset = sent % len(block)
                chunk = block[offset:offset + 16384]
            try:
                n = sock.send(chunk)
                sent_digest.update(chunk[:n])
                sent += n
                chunk = None if n == len(chunk) else chunk[n:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        while True:
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            assert data, "proxy closed early"
            received_digest.update(data)
            received += len(data)
    sock.close()
    assert sent == received == total
    assert sent_digest.hexdigest() == received_digest.hexdigest()
    proxy.wait_for_log(f"bytes_in={total} bytes_out={total}")


def test_200_concurrent_clients_all_served(relay, pki):
    proxy = relay("echo")
    names = ["alice", "bob", "carol"]

    def one(i):
        payload = f"client {i} says hello\n".encode()
        return round_trip(proxy.port, pki, names[i % 3], payload) == payload

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    assert all(results), f"{results.count(False)} of 200 failed"
    assert proxy.backend.accepted == 200




def test_client_that_does_not_read_is_not_buffered_without_limit(relay, pki):
    # The client sends and never reads; the echo backend's replies pile up. The proxy
    # must stop reading (backpressure all the way to the client's socket) rather than
    # buffer: the client's sending stalls, and the proxy's memory stays flat.
    proxy = relay("echo")
    before = rss_kib(proxy.process.pid)
    sock = tls_connect(proxy.port, pki, "alice")
    sock.settimeout(2.0)
    block = os.urandom(65536)
    sent = 0
    try:
        while sent < 512 * 1024 * 1024:
            sock.sendall(block)
            sent += len(block)
    except (TimeoutError, ssl.SSLError, OSError):
        pass
    assert sent < 64 * 1024 * 1024, f"the proxy kept reading: {sent} bytes accepted"
    growth = rss_kib(proxy.process.pid) - before
    assert growth < 8 * 1024, f"proxy RSS grew by {growth} KiB while the client did not read"
    sock.close()


def test_client_sending_to_a_backend_that_does_not_read_is_held_back(relay, pki):
    # Neither the backend nor the client reads: what the client offers can only pile up
    # in the proxy, unless the proxy stops reading the client once its buffer towards
    # the backend is full. Then the client's sends stall with a few MiB in the kernels'
    # socket buffers, and the proxy's own memory stays where it was.
    proxy = relay("deaf")
    offered = 200 * 1024 * 1024
    before = rss_kib(proxy.process.pid)
    sock = tls_connect(proxy.port, pki, "alice")
    sock.settimeout(2.0)  # a stall this long means the proxy stopped reading
    block = os.urandom(65536)
    sent = 0
    try:
        while sent < offered:
            sock.sendall(block)
            sent += len(block)
    except (TimeoutError, ssl.SSLError, OSError):
        pass
    growth = rss_kib(proxy.process.pid) - before  # measured while the connection holds it
    sock.close()
    assert growth < 20 * 1024, f"proxy RSS grew by {growth} KiB while {sent >> 20} MiB were offered"
    assert sent < offered, "the proxy took all 200 MiB that nobody read"


def test_unix_socket_backend(start_proxy, pki, tmp_path):
    import socket as sock_module
    import threading
    path = str(tmp_path / "backend.sock")
    server = sock_module.socket(sock_module.AF_UNIX, sock_module.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def serve():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())
    threading.Thread(target=serve, daemon=True).start()
    port = free_port()
    start_proxy(proxy_config(pki, port, f"unix:{path}"))
    assert round_trip(port, pki, "alice", b"over a unix socket\n") == b"OVER A UNIX SOCKET\n"
    server.close()


def test_ipv6_listener(start_proxy, pki, backend):
    import socket as sock_module
    try:
        probe = sock_module.socket(sock_module.AF_INET6)
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    text = proxy_config(pki, port, backend.address).replace(f"listen = 127.0.0.1:{port}", f"listen = [::1]:{port}")
    start_proxy(text)
    raw = sock_module.create_connection(("::1", port), timeout=10)
    from helpers import client_context
    with client_context(pki, "alice").wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"six\n")
        assert tls.recv(10) == b"six\n"
