"""A malformed handshake message gets the alert GnuTLS maps its error to, as gnutls-serv
(the same GnuTLS) sends it; certificate verdicts and "no certificate" keep their own.

The client is a real TLS 1.2 handshake (Python ssl) whose second flight, still in
plaintext records, is damaged on its way to the socket (tls12_rewriter)."""
import os
import socket
import subprocess

import pytest

from helpers import free_port, wait_until
from tls12_rewriter import CERTIFICATE, CERTIFICATE_VERIFY, CLIENT_KEY_EXCHANGE, RewritingClient


def only(kind, change):
    return lambda k, body: change(body) if k == kind else body


MALFORMED = {
    # The Certificate message with no body at all: not even the list's 3-byte length.
    "certificate_empty_body": only(CERTIFICATE, lambda b: b""),
    # The list's length says more than the message holds.
    "certificate_list_length_too_long": only(CERTIFICATE, lambda b: (len(b) + 7).to_bytes(3, "big") + b[3:]),
    # The first certificate's length runs past the end of the list.
    "certificate_entry_length_too_long": only(
        CERTIFICATE, lambda b: b[:3] + (int.from_bytes(b[3:6], "big") + 7).to_bytes(3, "big") + b[6:]),
    # CertificateVerify cut short: nothing left, only the algorithm, half the signature.
    "certificate_verify_empty": only(CERTIFICATE_VERIFY, lambda b: b""),
    "certificate_verify_algorithm_only": only(CERTIFICATE_VERIFY, lambda b: b[:2]),
    "certificate_verify_half": only(CERTIFICATE_VERIFY, lambda b: b[:len(b) // 2]),
    "client_key_exchange_truncated": only(CLIENT_KEY_EXCHANGE, lambda b: b[:5]),
}


@pytest.fixture(scope="module")
def gnutls_serv(pki, tmp_path_factory):
    """gnutls-serv with the same certificates and GnuTLS: what it sends is the oracle."""
    port = free_port()
    log = open(os.path.join(tmp_path_factory.mktemp("gnutls-serv"), "log"), "wb")
    process = subprocess.Popen(
        ["gnutls-serv", "--port", str(port), "--require-client-cert", "--echo",
         "--x509cafile", f"{pki}/ca-bundle.pem", "--x509certfile", f"{pki}/server.pem",
         "--x509keyfile", f"{pki}/server.key"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(listening, what="gnutls-serv listening")
    yield port
    process.terminate()
    process.wait(10)
    log.close()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_message_gets_decode_error(proxy, pki, backend, gnutls_serv, case):
    oracle = RewritingClient(gnutls_serv, pki, "alice", MALFORMED[case]).server_alert()
    assert oracle == "decode_error", f"gnutls-serv now sends {oracle}: update the expectation"
    assert RewritingClient(proxy.port, pki, "alice", MALFORMED[case]).server_alert() == "decode_error"
    proxy.wait_for_log("end=refused reason=handshake_failed")
    assert backend.accepted == 0


def test_bad_certificate_verify_signature_gets_decrypt_error(proxy, pki, backend, gnutls_serv):
    flip = only(CERTIFICATE_VERIFY, lambda b: b[:-3] + bytes(x ^ 0xFF for x in b[-3:]))
    assert RewritingClient(gnutls_serv, pki, "alice", flip).server_alert() == "decrypt_error"
    assert RewritingClient(proxy.port, pki, "alice", flip).server_alert() == "decrypt_error"
    proxy.wait_for_log("end=refused reason=handshake_failed")
    assert backend.accepted == 0


def test_well_formed_empty_certificate_list_is_no_certificate(proxy, pki, backend):
    """Zero certificates in a well-formed message is how a TLS 1.2 client says it has
    none: handshake_failure (RFC 5246 7.4.6), where gnutls-serv would send decode_error."""
    empty_list = only(CERTIFICATE, lambda b: b"\x00\x00\x00")
    assert RewritingClient(proxy.port, pki, "alice", empty_list).server_alert() == "handshake_failure"
    proxy.wait_for_log("end=refused reason=no_certificate")
    assert backend.accepted == 0


def test_untouched_handshake_goes_through(proxy, pki, backend):
    """The rewriter itself breaks nothing: with no change the handshake completes."""
    assert RewritingClient(proxy.port, pki, "alice", lambda k, body: body).server_alert() == "completed"


@pytest.mark.parametrize("name,alert", [("revoked-int", "certificate_revoked"), ("stranger", "unknown_ca")])
def test_certificate_verdicts_keep_their_alerts(proxy, pki, backend, name, alert):
    """Through the same client, a well-formed flight with a refused certificate still
    gets the precise alert of the verdict."""
    assert RewritingClient(proxy.port, pki, name, lambda k, body: body).server_alert() == alert
    assert backend.accepted == 0
