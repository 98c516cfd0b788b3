"""Signals: SIGTERM drains and exits 0, a second one exits at once; SIGHUP reloads, and
a reload that fails keeps what was loaded."""
import json
import os
import shutil
import signal
import socket

import pytest
from cryptography import x509

import pki as pki_module
from helpers import free_port, http_get, proxy_config, refusal, round_trip, tls_connect, wait_until


def refused_to_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_live_connection_then_exits_0(start_proxy, pki, backend):
    port, health = free_port(), free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health))
    live = tls_connect(port, pki, "alice")
    live.sendall(b"before\n")
    assert live.recv(100) == b"before\n"
    proxy.signal(signal.SIGTERM)
    proxy.wait_for_log("stopping")
    wait_until(lambda: refused_to_connect(port), what="listener closed")
    status, body = http_get(health, "/readyz")
    assert status == 503 and json.loads(body)["status"] == "draining"
    live.sendall(b"during the drain\n")
    assert live.recv(100) == b"during the drain\n"
    assert proxy.process.poll() is None
    live.close()
    assert proxy.process.wait(10) == 0
    assert "mtls-proxy stopped" in proxy.log()


def test_shutdown_grace_ends_the_rest(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, globals_={"shutdown_grace": "1s"}))
    live = tls_connect(port, pki, "bob")
    live.sendall(b"x")
    assert live.recv(1) == b"x"
    proxy.signal(signal.SIGTERM)
    assert proxy.process.wait(10) == 0
    live.settimeout(5)
    assert live.recv(10) == b""  # close_notify from the proxy
    assert proxy.log_lines("end=shutdown")


def test_second_sigterm_exits_at_once(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, globals_={"shutdown_grace": "1h"}))
    live = tls_connect(port, pki, "bob")
    live.sendall(b"x")
    assert live.recv(1) == b"x"
    proxy.signal(signal.SIGTERM)
    proxy.wait_for_log("stopping")
    proxy.signal(signal.SIGTERM)
    assert proxy.process.wait(5) == 0
    live.close()


@pytest.fixture
def own_files(pki, tmp_path):
    """Copies of the server certificate and key and the CRLs that a test may replace."""
    for name in ["server.pem", "server.key"]:
        shutil.copy(os.path.join(pki, name), tmp_path / name)
    shutil.copytree(os.path.join(pki, "crl"), tmp_path / "crl")
    return tmp_path


def reload_config(pki, port, backend, files):
    return proxy_config(pki, port, backend.address, crl_dir=files / "crl").replace(
        f"{pki}/server.pem", str(files / "server.pem")).replace(f"{pki}/server.key", str(files / "server.key"))


def served_serial(port, pki):
    with tls_connect(port, pki, "alice") as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_sighup_with_corrupt_key_keeps_serving(start_proxy, pki, backend, own_files):
    port = free_port()
    proxy = start_proxy(reload_config(pki, port, backend, own_files))
    (own_files / "server.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_log("reload failed, keeping the previous state")
    assert round_trip(port, pki, "alice") == b"ping\n"
    assert proxy.process.poll() is None


def test_sighup_serves_new_certificate(start_proxy, pki, backend, own_files):
    port = free_port()
    proxy = start_proxy(reload_config(pki, port, backend, own_files))
    old = served_serial(port, pki)
    cert = pki_module.reissue_server(pki, str(own_files / "server.pem"), str(own_files / "server.key"))
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_log("reloaded")
    assert served_serial(port, pki) == cert.serial_number != old


def test_sighup_loads_a_new_crl(start_proxy, pki, backend, own_files):
    port = free_port()
    proxy = start_proxy(reload_config(pki, port, backend, own_files))
    assert round_trip(port, pki, "carol") == b"ping\n"
    pki_module.write_crl(pki, "intermediate", str(own_files / "crl" / "intermediate.crl"), ["revoked-int", "carol"])
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_log("reloaded")
    assert "revoked" in refusal(port, pki, "carol").lower()
    assert round_trip(port, pki, "alice") == b"ping\n"


def test_json_log_line_per_connection(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, globals_={"log_format": "json"}))
    assert round_trip(port, pki, "alice") == b"ping\n"
    assert "revoked" in refusal(port, pki, "revoked-int").lower()
    proxy.wait_for_log('"end":"refused"')
    lines = [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]
    closed = next(line for line in lines if line.get("end") == "closed")
    assert closed["subject"] == "UID=alice,OU=people,DC=example,DC=com"
    assert closed["tls"] == "TLS1.3" and closed["bytes_in"] == 5 and closed["bytes_out"] == 5
    for key in ["time", "level", "msg", "listener", "client", "issuer", "serial", "cipher", "duration_ms"]:
        assert key in closed, key
    refused = next(line for line in lines if line.get("end") == "refused")
    assert refused["reason"] == "revoked" and refused["level"] == "warn"


def test_drops_privileges_after_binding(start_proxy, pki, backend):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, globals_={"user": "nobody", "group": "nogroup"}))
    with open(f"/proc/{proxy.process.pid}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))}
    assert ids["Uid"] == ["65534"] * 4 and ids["Gid"] == ["65534"] * 4
    assert round_trip(port, pki, "alice") == b"ping\n"
