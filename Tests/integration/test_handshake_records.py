"""Handshakes in every record shape: a ClientHello of one record, of two (a padding
extension past 16 KiB), of 64 KiB, of hundreds of tiny records; client flights cut the
same ways, and a 64 KiB client certificate. Each must be answered at once, not when
handshake_timeout runs out."""
import os
import socket

import pytest
from cryptography import x509

import pki as pki_module
from helpers import client_context, free_port, http_get, proxy_config, round_trip, tls_connect, wait_until
from tlsrecords import (HANDSHAKE, RefragmentingClient, client_hello, first_server_record, is_server_hello,
                        pad_client_hello, records)

# Far above what any test here waits: a stalled handshake shows as no answer within
# ANSWER_WITHIN, never as a handshake_timeout that happens to come first.
HANDSHAKE_TIMEOUT = "60s"
ANSWER_WITHIN = 10


@pytest.fixture
def patient_proxy(start_proxy, pki, backend):
    port, health_port = free_port(), free_port()
    # No session tickets: a ticket carries the client's chain, and one for a 64 KiB
    # certificate is more than OpenSSL clients accept (a separate matter).
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health_port,
                                     handshake_timeout=HANDSHAKE_TIMEOUT, session_tickets="no"))
    proxy.port, proxy.health_port = port, health_port
    return proxy


def active_connections(health_port):
    for line in http_get(health_port, "/metrics")[1].splitlines():
        if line.startswith('mtls_proxy_active_connections{listener="ldaps"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no mtls_proxy_active_connections in /metrics")


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
@pytest.mark.parametrize("padding,record_size", [
    (0, 16384),        # an ordinary hello, one record
    (15000, 16384),    # just under one record
    (20000, 16384),    # two records
    ("max", 16384),    # the largest hello there is, 64 KiB: five records
    (0, 1),            # an ordinary hello in hundreds of 1-byte records
    (0, 5),
    (3000, 7),         # about 500 records of 7 bytes
], ids=["1-record", "15000-1-record", "20000-2-records", "64KiB-5-records", "1-byte-records",
        "5-byte-records", "7-byte-records"])
def test_client_hello_is_answered_whatever_its_records(patient_proxy, pki, tls, padding, record_size):
    hello = client_hello(client_context(pki, "alice", tls))
    if padding:
        hello = pad_client_hello(hello, padding)
    wire = records(HANDSHAKE, hello, record_size, version=b"\x03\x01")
    # All at once, after the proxy has accepted the connections and is waiting: the
    # records then arrive together, and the proxy finds them all in one read. Four
    # connections in case the kernel splits a write and one piece brings its own event.
    socks = [socket.create_connection(("127.0.0.1", patient_proxy.port)) for _ in range(4)]
    try:
        wait_until(lambda: active_connections(patient_proxy.health_port) == 4, what="the proxy accepted")
        for sock in socks:
            sock.sendall(wire)
        answers = [first_server_record(sock, ANSWER_WITHIN) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    for answer in answers:
        assert is_server_hello(answer), f"no ServerHello within {ANSWER_WITHIN}s for a {len(hello)}-byte " \
                                        f"hello in {len(wire) // (record_size + 5) + 1} records: {answer!r:.80}"


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
@pytest.mark.parametrize("size", [16384, 1, 5, 100])
def test_handshake_completes_with_client_flights_in_tiny_records(patient_proxy, pki, backend, tls, size):
    # In TLS 1.2 the second flight (Certificate, ClientKeyExchange, CertificateVerify)
    # is plaintext, so it is cut up too; in TLS 1.3 only the hello is.
    client = RefragmentingClient(patient_proxy.port, client_context(pki, "alice", tls), size)
    try:
        if size < 100:
            assert client.handshake_records >= 40  # the cutting did happen
        client.send(b"ping\n")
        assert client.recv() == b"ping\n"
    finally:
        client.close()
    patient_proxy.wait_for_log("end=closed")


@pytest.fixture(scope="module")
def big_client(pki, tmp_path_factory):
    """A client certificate of about 70 KB (a subjectAltName of 1,100 DNS names), issued
    by the intermediate CA: its Certificate message alone is past 64 KiB."""
    inter, inter_key = pki_module.load(pki, "intermediate-ca")
    key = pki_module.new_key()
    names = [x509.DNSName(f"host{i:05d}-{'x' * 40}.example.com") for i in range(1100)]
    cert = pki_module.make_cert(pki_module.subject_for("bigcert"), key, inter, inter_key, san=names)
    folder = str(tmp_path_factory.mktemp("bigcert"))
    pki_module.write_pem(os.path.join(folder, "bigcert.pem"), cert)
    pki_module.write_key(os.path.join(folder, "bigcert.key"), key)
    size = len(cert.public_bytes(pki_module.serialization.Encoding.DER))
    assert size > 65536
    return folder


def big_context(pki, folder, tls):
    ctx = client_context(pki, None, tls)
    ctx.load_cert_chain(os.path.join(folder, "bigcert.pem"), os.path.join(folder, "bigcert.key"))
    return ctx


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_64_KiB_client_certificate(patient_proxy, pki, backend, big_client, tls):
    raw = socket.create_connection(("127.0.0.1", patient_proxy.port), timeout=ANSWER_WITHIN)
    with big_context(pki, big_client, tls).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"ping\n")
        assert sock.recv(10) == b"ping\n"
    patient_proxy.wait_for_log("subject=\"UID=bigcert")


@pytest.mark.parametrize("size", [7, 1000])
def test_64_KiB_client_flight_in_small_records(patient_proxy, pki, backend, big_client, size):
    # TLS 1.2: the 70 KB Certificate message is plaintext, cut into 10,000 or 70 records.
    client = RefragmentingClient(patient_proxy.port, big_context(pki, big_client, "1.2"), size)
    try:
        client.send(b"ping\n")
        assert client.recv() == b"ping\n"
    finally:
        client.close()


def test_others_are_served_while_a_big_hello_is_processed(patient_proxy, pki):
    # The fix must not starve other connections or spin: a slow dribble of a 64 KiB
    # hello in 1-byte records keeps arriving while ordinary clients come and go.
    hello = pad_client_hello(client_hello(client_context(pki, "alice", "1.3")), 8000)
    wire = records(HANDSHAKE, hello, 1, version=b"\x03\x01")
    with socket.create_connection(("127.0.0.1", patient_proxy.port)) as sock:
        half = len(wire) // 2
        sock.sendall(wire[:half])
        assert round_trip(patient_proxy.port, pki, "bob") == b"ping\n"
        sock.sendall(wire[half:])
        assert is_server_hello(first_server_record(sock, ANSWER_WITHIN))
    with tls_connect(patient_proxy.port, pki, "carol") as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
