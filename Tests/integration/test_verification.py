"""Who gets in: every refusal names its reason in the TLS alert and in the log, and no
refused client ever causes a backend connection (README: Who is refused, and how it
shows)."""
import subprocess

import pytest

from helpers import converse, refusal, round_trip

REFUSALS = [
    # client certificate, what the client must report, reason in the log
    ("revoked-root", "certificate revoked", "revoked"),
    ("revoked-int", "certificate revoked", "revoked"),
    ("stranger", "unknown ca", "unknown_ca"),
    ("selfsigned", "unknown ca", "unknown_ca"),
    ("expired", "certificate expired", "expired"),
    ("notyet", "bad certificate", "not_yet_valid"),
    ("serverauth", "bad certificate", "wrong_purpose"),
]


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
@pytest.mark.parametrize("name", ["alice", "bob"])
def test_good_certificate_reaches_backend(proxy, pki, backend, name, tls):
    assert round_trip(proxy.port, pki, name, b"hello through the proxy", tls=tls) == b"hello through the proxy"
    assert backend.accepted == 1


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
@pytest.mark.parametrize("name,alert,reason", REFUSALS)
def test_refused_with_alert_and_no_backend_connection(proxy, pki, backend, name, alert, reason, tls):
    error = refusal(proxy.port, pki, name, tls=tls)
    assert alert in error.lower().replace("_", " "), error
    proxy.wait_for_log(f"end=refused reason={reason}")
    line = proxy.log_lines(f"reason={reason}")[0]
    assert f"UID={name}," in line and "serial=" in line and "issuer=" in line
    assert backend.accepted == 0


@pytest.mark.parametrize("tls,alert", [("1.3", "certificate required"), ("1.2", "handshake failure")])
def test_no_certificate_refused(proxy, pki, backend, tls, alert):
    error = refusal(proxy.port, pki, None, tls=tls)
    assert alert in error.lower().replace("_", " "), error
    proxy.wait_for_log("reason=no_certificate")
    assert backend.accepted == 0


def test_gnutls_cli_reports_revocation(proxy, pki, backend):
    result = subprocess.run(
        ["gnutls-cli", "--port", str(proxy.port), "--x509cafile", f"{pki}/root-ca.pem",
         "--x509certfile", f"{pki}/revoked-int.pem", "--x509keyfile", f"{pki}/revoked-int.key", "localhost"],
        input=b"hello\n", capture_output=True, timeout=20)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert "revoked" in output.lower(), output
    assert backend.accepted == 0


def test_gnutls_cli_good_certificate_gets_echo(proxy, pki, backend):
    # gnutls-cli sends close_notify at end of input; the echo comes back before the
    # backend's close, which the proxy forwards as close_notify.
    result = subprocess.run(
        ["gnutls-cli", "--port", str(proxy.port), "--x509cafile", f"{pki}/root-ca.pem",
         "--x509certfile", f"{pki}/alice.pem", "--x509keyfile", f"{pki}/alice.key", "localhost"],
        input=b"hello from gnutls-cli\n", capture_output=True, timeout=20)
    assert b"hello from gnutls-cli" in result.stdout, result.stderr.decode(errors="replace")
    assert backend.accepted == 1


@pytest.mark.parametrize("tls_flag", ["-tls1_3", "-tls1_2"])
def test_openssl_s_client_reports_unknown_ca(proxy, pki, backend, tls_flag):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost",
         "-CAfile", f"{pki}/root-ca.pem", "-cert", f"{pki}/stranger.pem", "-key", f"{pki}/stranger.key",
         tls_flag, "-quiet"],
        input=b"hello\n", capture_output=True, timeout=20)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert "unknown ca" in output.lower(), output
    assert backend.accepted == 0


def test_openssl_s_client_good_certificate(proxy, pki, backend):
    output = converse(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost",
         "-CAfile", f"{pki}/root-ca.pem", "-cert", f"{pki}/bob.pem", "-key", f"{pki}/bob.key",
         "-verify_return_error", "-quiet"],
        b"hello from openssl\n", b"hello from openssl")
    assert b"hello from openssl" in output, output.decode(errors="replace")
    assert backend.accepted == 1


def test_tls_1_1_is_refused(proxy, pki, backend):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0",
         "-cert", f"{pki}/alice.pem", "-key", f"{pki}/alice.key"],
        input=b"", capture_output=True, timeout=20)
    output = (result.stdout + result.stderr).decode(errors="replace").lower()
    assert result.returncode != 0
    assert "protocol version" in output or "no protocols available" in output or "unsupported protocol" in output, output
    assert backend.accepted == 0


def test_ca_names_are_sent_in_certificate_request(proxy, pki):
    # Without GNUTLS_TL_USE_IN_TLS the request would list no acceptable CA names.
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost",
         "-CAfile", f"{pki}/root-ca.pem", "-cert", f"{pki}/alice.pem", "-key", f"{pki}/alice.key", "-tls1_2"],
        input=b"", capture_output=True, timeout=20)
    output = result.stdout.decode(errors="replace")
    assert "Acceptable client certificate CA names" in output
    assert "CN = Root CA" in output and "CN = Intermediate CA" in output
