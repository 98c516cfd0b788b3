"""TLS session tickets: resumed sessions are re-checked against the current CRLs."""
import base64
import os
import socket

import pytest

import pki as pki_module
from helpers import client_context, free_port, proxy_config


_contexts = {}


def connect(port, pki, name, session=None, tls="1.3"):
    # A session resumes only through the context that made it.
    ctx = _contexts.setdefault((pki, name, tls), client_context(pki, name, tls))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session, suppress_ragged_eofs=False)


def session_of(port, pki, name, tls="1.3"):
    """A full handshake and one round trip (TLS 1.3 tickets arrive after the handshake)."""
    with connect(port, pki, name, tls=tls) as s:
        s.sendall(b"first\n")
        assert s.recv(100) == b"first\n"
        return s.session


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_resumed_session_is_served_and_logged(start_proxy, pki, backend, crl_dir, tls):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    session = session_of(port, pki, "alice", tls)
    with connect(port, pki, "alice", session=session, tls=tls) as s:
        s.sendall(b"again\n")
        assert s.recv(100) == b"again\n"
        assert s.session_reused
    proxy.wait_for_log("UID=alice.*resumed=yes.*end=closed")


def test_session_revoked_after_its_ticket_cannot_resume(start_proxy, pki, backend, crl_dir):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    session = session_of(port, pki, "carol")
    accepted_before = backend.accepted
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int", "carol"],
                         number=2)
    proxy.wait_for_log("reloaded")
    with pytest.raises(Exception) as refused:
        with connect(port, pki, "carol", session=session) as s:
            s.sendall(b"x")
            s.recv(10)
    assert "revoked" in str(refused.value).lower()
    proxy.wait_for_log("UID=carol.*resumed=yes.*reason=revoked")
    assert backend.accepted == accepted_before


def test_tickets_can_be_turned_off(start_proxy, pki, backend):
    port = free_port()
    start_proxy(proxy_config(pki, port, backend.address, session_tickets="no"))
    session = session_of(port, pki, "alice")
    with connect(port, pki, "alice", session=session) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert not s.session_reused


def test_shared_ticket_key_file_resumes_across_instances(start_proxy, pki, tmp_path):
    from helpers import Backend
    key = tmp_path / "ticket.key"
    key.write_text(base64.b64encode(os.urandom(64)).decode() + "\n")
    first_backend, second_backend = Backend("echo"), Backend("echo")
    first, second = free_port(), free_port()
    start_proxy(proxy_config(pki, first, first_backend.address, ticket_key_file=str(key)))
    start_proxy(proxy_config(pki, second, second_backend.address, ticket_key_file=str(key)))
    session = session_of(first, pki, "bob")
    with connect(second, pki, "bob", session=session) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert s.session_reused


def test_bad_ticket_key_file_is_a_config_error(binary, pki, tmp_path):
    import subprocess
    key = tmp_path / "short.key"
    key.write_text("dG9vIHNob3J0\n")
    config = tmp_path / "proxy.conf"
    config.write_text(proxy_config(pki, free_port(), "127.0.0.1:1", ticket_key_file=str(key)))
    result = subprocess.run([binary, "--config", str(config), "--check"], capture_output=True)
    assert result.returncode == 1
    assert f"{key}: a ticket key is 64 bytes" in result.stderr.decode()


def test_a_new_key_in_the_ticket_key_file_is_picked_up(start_proxy, pki, backend, tmp_path):
    """Rotating the key: write a new one into ticket_key_file (on every instance). It is
    reloaded like a certificate; tickets issued under the old key then get a full
    handshake (the connection still works), and new tickets resume."""
    key = tmp_path / "ticket.key"
    key.write_text(base64.b64encode(os.urandom(64)).decode() + "\n")
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, ticket_key_file=str(key)))
    old = session_of(port, pki, "alice")
    fresh = tmp_path / "ticket.key.new"
    fresh.write_text(base64.b64encode(os.urandom(64)).decode() + "\n")
    os.replace(fresh, key)
    proxy.wait_for_log("reloaded")
    with connect(port, pki, "alice", session=old) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert not s.session_reused, "a ticket of the old key must not resume"
    new = session_of(port, pki, "alice")
    with connect(port, pki, "alice", session=new) as s:
        s.sendall(b"y")
        assert s.recv(1) == b"y"
        assert s.session_reused


def test_a_reload_keeps_the_random_ticket_key(start_proxy, pki, backend):
    """Without ticket_key_file the key is random per process: a reload (a new CRL, a
    SIGHUP) must not throw away every ticket in flight."""
    import signal
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address))
    session = session_of(port, pki, "alice")
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_log("reloaded")
    with connect(port, pki, "alice", session=session) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert s.session_reused
