"""proxy_protocol_in: a balancer's PROXY header (v1 or v2) before the TLS bytes, accepted
only from trusted_proxies. Its client address is the one logged and passed on."""
import re
import socket
import struct

import pytest

from helpers import Backend, client_context, echo_back, proxy_config, free_port

SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def v1(source="192.0.2.10", port=40001):
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 636\r\n".encode()


def v2(source=bytes([198, 51, 100, 7]), port=40002, command=0x21):
    body = source + bytes([127, 0, 0, 1]) + struct.pack(">HH", port, 636)
    return SIGNATURE + bytes([command, 0x11]) + struct.pack(">H", len(body)) + body


def tls_after(port, pki, header, cork=False, name="alice"):
    """Connects, sends `header`, then does the TLS handshake on the same connection. With
    `cork`, the header and the ClientHello leave in one TCP segment."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if cork:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    raw.sendall(header)
    tls = client_context(pki, name).wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    if cork:
        # The ClientHello joins the header in the corked segment; uncorking sends both.
        tls.setblocking(False)
        try:
            tls.do_handshake()
        except ssl_want_read():
            pass
        tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        tls.setblocking(True)
        tls.settimeout(10)
    tls.do_handshake()
    return tls


def ssl_want_read():
    import ssl
    return ssl.SSLWantReadError


@pytest.fixture
def backend():
    b = Backend("echo")
    yield b
    b.close()


def start(start_proxy, pki, backend, mode="any", trusted="127.0.0.1/32", **extra):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, proxy_protocol_in=mode, trusted_proxies=trusted, **extra))
    proxy.port = port
    return proxy


@pytest.mark.parametrize("header, client", [(v1(), "192.0.2.10:40001"), (v2(), "198.51.100.7:40002")])
def test_the_header_names_the_client_in_the_log(start_proxy, pki, backend, header, client):
    proxy = start(start_proxy, pki, backend)
    with tls_after(proxy.port, pki, header) as s:
        assert echo_back(s, b"ping\n") == b"ping\n"
    proxy.wait_for_log("connection closed.*end=closed")
    line = proxy.log_lines("connection closed")[0]
    assert f"client={client}" in line, line
    assert re.search(r"via=127\.0\.0\.1:\d+", line), line


def test_header_and_client_hello_in_one_segment(start_proxy, pki, backend):
    proxy = start(start_proxy, pki, backend, mode="v1")
    with tls_after(proxy.port, pki, v1(port=40003), cork=True) as s:
        assert echo_back(s, b"one segment\n") == b"one segment\n"
    proxy.wait_for_log("client=192.0.2.10:40003.*end=closed")


def test_the_backend_gets_the_headers_client_in_proxy_v2(start_proxy, pki, backend):
    """With proxy_protocol = v2 on the way out, the PROXY header the proxy sends names the
    client of the incoming header (the echo backend sends it back to us)."""
    proxy = start(start_proxy, pki, backend, proxy_protocol="v2")
    with tls_after(proxy.port, pki, v2(port=40004)) as s:
        s.sendall(b"x")
        data = b""
        while len(data) < 16 or len(data) < 16 + struct.unpack(">H", data[14:16])[0] + 1:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    assert data[:12] == SIGNATURE and data[13] == 0x11
    assert data[16:20] == bytes([198, 51, 100, 7]) and struct.unpack(">H", data[24:26])[0] == 40004


def test_local_command_keeps_the_connections_own_address(start_proxy, pki, backend):
    """A v2 LOCAL header (a balancer's own health check) names no client."""
    proxy = start(start_proxy, pki, backend)
    with tls_after(proxy.port, pki, SIGNATURE + bytes([0x20, 0x00, 0, 0])) as s:
        assert echo_back(s, b"hi\n") == b"hi\n"
    proxy.wait_for_log("connection closed.*end=closed")
    assert re.search(r"client=127\.0\.0\.1:\d+", proxy.log_lines("connection closed")[0])


@pytest.mark.parametrize("garbage, why", [
    (b"\x16\x03\x01\x00\x05hello", "no PROXY header"),
    (b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n", "addresses are not TCP4"),
    (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n", "does not end in CRLF"),
    (b"PROXY " + b"A" * 120, "longer than 107"),
    (SIGNATURE + bytes([0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]), "need 12 bytes"),
])
def test_a_malformed_header_is_refused(start_proxy, pki, backend, garbage, why):
    proxy = start(start_proxy, pki, backend)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(garbage)
        try:
            assert raw.recv(100) == b""  # closed, nothing said
        except ConnectionResetError:
            pass
    proxy.wait_for_log("connection refused.*reason=bad_proxy_header")
    assert why in proxy.log_lines("reason=bad_proxy_header")[0]
    assert backend.accepted == 0


def test_a_version_the_listener_does_not_take_is_refused(start_proxy, pki, backend):
    proxy = start(start_proxy, pki, backend, mode="v2")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(v1())
        try:
            raw.recv(100)
        except ConnectionResetError:
            pass
    proxy.wait_for_log("reason=bad_proxy_header.*v2 expected")


def test_an_untrusted_address_is_refused(start_proxy, pki, backend):
    proxy = start(start_proxy, pki, backend, trusted="10.0.0.0/8, 2001:db8::/32")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(v1())
        try:
            assert raw.recv(100) == b""
        except ConnectionResetError:
            pass
    proxy.wait_for_log("connection refused.*reason=untrusted_proxy")
    assert backend.accepted == 0


def test_a_partial_header_is_a_handshake_timeout(start_proxy, pki, backend):
    proxy = start(start_proxy, pki, backend, handshake_timeout="1s")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(v1()[:20])
        proxy.wait_for_log("end=handshake_timeout", timeout=10)
    assert backend.accepted == 0


def test_proxy_protocol_in_needs_trusted_proxies(start_proxy, pki, tmp_path):
    from helpers import BINARY
    import subprocess
    config = tmp_path / "p.conf"
    config.write_text(proxy_config(pki, free_port(), "127.0.0.1:1", proxy_protocol_in="v2"))
    result = subprocess.run([BINARY, "--config", str(config)], capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"proxy_protocol_in needs trusted_proxies" in result.stdout + result.stderr


def test_a_header_then_starttls_names_the_client(start_proxy, pki, slapd):
    """On a StartTLS listener the PROXY header comes first, then the plain LDAP up to
    the StartTLS request, then TLS: the session is the header's client's."""
    from authzkit import Session
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, slapd, proxy_protocol_in="v1", trusted_proxies="127.0.0.1/32",
                                     tls="starttls"))
    session = Session(port, mode="plain")
    session.sock.sendall(v1(port=40005))
    session.pki, session.name = pki, "alice"
    assert session.start_tls() == 0
    assert session.search("carol", "cn") == (0, ["Carol Example"])
    session.close()
    proxy.wait_for_log("connection closed.*end=closed")
    line = proxy.log_lines("connection closed")[0]
    assert "client=192.0.2.10:40005" in line and re.search(r"via=127\.0\.0\.1:\d+", line), line


@pytest.mark.parametrize("then", ["close", "silence"])
def test_no_starttls_after_the_header_is_logged_as_the_headers_client(start_proxy, pki, backend, then):
    """The header has named the client before the StartTLS door: the door's refusal (the
    client went away) and the handshake timeout (it said nothing) are logged as that
    client's, via the balancer, like every later end."""
    proxy = start(start_proxy, pki, backend, tls="starttls", handshake_timeout="1s")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(v1(port=40006))
        if then == "silence":
            proxy.wait_for_log("end=handshake_timeout")
    pattern = "reason=starttls_required" if then == "close" else "end=handshake_timeout"
    proxy.wait_for_log(pattern)
    line = proxy.log_lines(pattern)[0]
    assert "client=192.0.2.10:40006" in line and re.search(r"via=127\.0\.0\.1:\d+", line), line
    assert backend.accepted == 0
