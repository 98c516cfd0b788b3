"""The default TLS policy: forward secrecy only (no static-RSA key exchange), the
server's cipher order wins, and client-initiated renegotiation is refused."""
import os
import select
import socket
import ssl
import subprocess
import time

import pytest

from gnutls_client import GNUTLS_E_WARNING_ALERT_RECEIVED, GnuTLSClient
from helpers import free_port, proxy_config, round_trip

import pki as pki_module


@pytest.fixture(scope="module")
def rsa_pki(pki):
    """The session PKI plus an RSA server certificate allowing key encipherment, so that
    static-RSA suites are possible at all and only the priority string can forbid them."""
    if not os.path.exists(os.path.join(pki, "server-rsa.pem")):
        pki_module.rsa_server(pki)
    return pki


@pytest.fixture
def rsa_proxy(start_proxy, rsa_pki, backend):
    port = free_port()
    config = (proxy_config(rsa_pki, port, backend.address)
              .replace(f"{rsa_pki}/server.pem", f"{rsa_pki}/server-rsa.pem")
              .replace(f"{rsa_pki}/server.key", f"{rsa_pki}/server-rsa.key"))
    proxy = start_proxy(config)
    proxy.port = port
    return proxy


def s_client(port, pki, *args, stdin=b"hello\n"):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", f"{pki}/root-ca.pem", "-cert", f"{pki}/alice.pem", "-key", f"{pki}/alice.key", *args],
        input=stdin, capture_output=True, timeout=20)
    return (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-GCM-SHA384"])
def test_static_rsa_key_exchange_is_refused(rsa_proxy, rsa_pki, backend, cipher):
    output = s_client(rsa_proxy.port, rsa_pki, "-tls1_2", "-cipher", cipher)
    assert "handshake failure" in output.lower(), output
    assert f"Cipher is {cipher}" not in output
    rsa_proxy.wait_for_log("end=refused reason=handshake_failed")
    assert backend.accepted == 0


def test_rsa_certificate_serves_ecdhe(rsa_proxy, rsa_pki, backend):
    """The same proxy does serve TLS 1.2 with forward secrecy: the refusal above is
    about the key exchange, not the certificate."""
    output = s_client(rsa_proxy.port, rsa_pki, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in output, output
    assert round_trip(rsa_proxy.port, rsa_pki, "alice", tls="1.2") == b"ping\n"


def test_server_cipher_order_wins_tls12(proxy, pki):
    """The client ranks AES-256 and ChaCha20 above AES-128; the server ranks AES-128-GCM
    first, and its order wins."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "root-ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, "alice.pem"), os.path.join(pki, "alice.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_server_cipher_order_wins_tls13(proxy, pki):
    output = s_client(proxy.port, pki, "-tls1_3", "-ciphersuites",
                      "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
    assert "Cipher is TLS_AES_128_GCM_SHA256" in output, output


def test_client_renegotiation_is_refused_and_the_session_goes_on(proxy, pki, backend):
    """A GnuTLS client asks to renegotiate; the proxy answers no_renegotiation (a
    warning), never a second handshake, and the session carries on."""
    client = GnuTLSClient(proxy.port, pki, "alice")
    try:
        assert client.echo(b"before") == b"before"
        assert client.handshake_again() == (GNUTLS_E_WARNING_ALERT_RECEIVED, 100)  # no_renegotiation
        assert client.echo(b"after the refusal") == b"after the refusal"
        assert client.handshake_again() == (GNUTLS_E_WARNING_ALERT_RECEIVED, 100)
        assert client.echo(b"and again") == b"and again"
    finally:
        client.close()
    proxy.wait_for_log("end=closed")
    assert backend.accepted == 1


def test_openssl_renegotiation_is_refused(proxy, pki, backend):
    """openssl s_client's `R`: the proxy refuses; OpenSSL gives up on the connection,
    and the proxy keeps serving others."""
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost", "-tls1_2",
         "-CAfile", f"{pki}/root-ca.pem", "-cert", f"{pki}/alice.pem", "-key", f"{pki}/alice.key"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""

    def read_until(marker, timeout=10):
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    return
                output += chunk
    try:
        process.stdin.write(b"before\n")
        process.stdin.flush()
        read_until(b"before\n")  # the echo: the session works
        process.stdin.write(b"R\n")
        process.stdin.flush()
        read_until(b"no renegotiation")
        try:
            process.stdin.write(b"after\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # OpenSSL gave up on the connection after the refusal
        process.wait(10)
        output += process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode(errors="replace")
    assert "no renegotiation" in text, text
    assert "after\n" not in text.split("RENEGOTIATING", 1)[1]
    assert round_trip(proxy.port, pki, "bob", tls="1.2") == b"ping\n"
