"""Bad input and a bad backend on the message-aware path (client_auth != none): a request
over max_request_size, malformed BER, a backend that refuses the proxy's own bind. The
client gets a Notice of Disconnection (protocolError, or unavailable for the backend),
nothing of the bad request reaches slapd, and the proxy serves the next client."""
import os

import pytest

import ldapwire
import slapd_fixture
from authzkit import ALICE, CAROL, Session, authz_config, ldap_tool, output
from helpers import free_port, http_get, wait_until

NOTICE_PROTOCOL_ERROR, NOTICE_UNAVAILABLE = 2, 52


def still_serves(proxy, pki, mode="implicit"):
    session = Session(proxy.port, pki, "alice", mode=mode)
    assert session.bind_external() == 0
    assert session.whoami() == f"dn:{ALICE}"
    session.close()


def ends_with_notice(session, code):
    session.read_until_close(timeout=5)
    return ldapwire.assert_whole_messages_then_notice(session.buffer, code)


def test_request_over_max_request_size(authz_proxy, authz_slapd, pki):
    proxy = authz_proxy("sasl-external", max_request_size="16KiB")
    session = Session(proxy.port, pki, "alice")
    assert session.bind_external() == 0
    small = "s" * 15000  # a request under the limit goes through
    assert session.modify(ALICE, "description", small) == 0
    assert authz_slapd.read(ALICE, "description") == [small]
    session.sock.sendall(ldapwire.modify_replace(session.new_id(), ALICE, "description", "b" * 17000))
    ends_with_notice(session, NOTICE_PROTOCOL_ERROR)
    assert authz_slapd.read(ALICE, "description") == [small]
    proxy.wait_for_log("UID=alice,.*end=")
    still_serves(proxy, pki)


def test_announced_length_over_the_default_limit_ends_at_once(authz_proxy, pki):
    # A header claiming 5 MiB (the default limit is 4 MiB): the proxy need not wait for
    # the body to know, so the notice comes while the client sent only 16 bytes.
    proxy = authz_proxy("certificate")
    session = Session(proxy.port, pki, "alice")
    session.sock.sendall(b"\x30\x84" + (5 * 1024 * 1024).to_bytes(4, "big") + b"\x02\x01\x05\x63\x84\x00\x50\x00")
    ends_with_notice(session, NOTICE_PROTOCOL_ERROR)
    still_serves(proxy, pki)


MALFORMED = [
    pytest.param(b"\x30\x03\x04\x01\x01", id="messageID-not-an-integer"),
    pytest.param(b"\x31\x05\x02\x01\x01\x42\x00", id="not-a-sequence"),
    pytest.param(b"\x30\x05\x02\x07\x01\x42\x00", id="inner-length-past-the-message"),
    pytest.param(b"\x30\x80\x02\x01\x01\x42\x00\x00\x00", id="indefinite-length"),
    pytest.param(b"\x30\x03\x02\x01\x01", id="no-protocolOp"),
    pytest.param(b"\x30\x08\x02\x01\x01\x60\x03\x02\x01\x03", id="bind-without-name"),
]


@pytest.mark.parametrize("mode", ["implicit", "starttls-before-tls"])
@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_ber_ends_with_protocol_error(authz_proxy, authz_slapd, pki, mode, data):
    tls = "starttls" if mode.startswith("starttls") else None
    proxy = authz_proxy("sasl-external", tls=tls)
    start = len(authz_slapd.log())
    session = Session(proxy.port, pki, "alice", mode="plain" if tls else "implicit")
    session.sock.sendall(data)
    ends_with_notice(session, NOTICE_PROTOCOL_ERROR)
    still_serves(proxy, pki, mode="starttls" if tls else "implicit")
    if tls:  # nothing reaches slapd before TLS (the one connection is still_serves')
        proxy.wait_for_log("UID=alice,.*end=")
        assert authz_slapd.log()[start:].count("ACCEPT from") <= 1


@pytest.mark.parametrize("mode", ["sasl-external", "certificate"])
def test_backend_bind_failure_sends_the_notice(start_proxy, pki, authz_slapd, tmp_path, mode):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the proxy's password\n")
    port = free_port()
    proxy = start_proxy(authz_config(pki, port, authz_slapd, client_auth=mode, password_file=str(wrong)))
    session = Session(port, pki, "alice")
    try:  # the notice may come before this request: a write to a closed connection is fine
        session.sock.sendall(ldapwire.extended(1, ldapwire.WHO_AM_I))
    except OSError:
        pass
    messages = ends_with_notice(session, NOTICE_UNAVAILABLE)
    assert not any(ldapwire.describe(m)[0] == 1 for m in messages), "Who am I? was answered"
    proxy.wait_for_log("UID=alice,.*reason=backend_bind_failed")

    result = ldap_tool("ldapwhoami", port, pki, "alice")
    assert result.returncode != 0 and b"dn:" not in result.stdout, output(result)


@pytest.mark.parametrize("missing", ["backend_bind_dn", "backend_bind_password_file"])
def test_client_auth_needs_the_backend_identity(start_proxy, pki, authz_slapd, missing):
    text = authz_config(pki, free_port(), authz_slapd, client_auth="sasl-external")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(missing)) + "\n"
    proxy = start_proxy(text, wait=False)
    assert proxy.process.wait(15) == 1
    assert missing in proxy.log(), proxy.log()


def test_unreadable_password_file_is_a_config_error(start_proxy, pki, authz_slapd, tmp_path):
    proxy = start_proxy(authz_config(pki, free_port(), authz_slapd, password_file=str(tmp_path / "absent")),
                        wait=False)
    assert proxy.process.wait(15) == 1
    assert os.path.join(str(tmp_path), "absent") in proxy.log(), proxy.log()


def test_readyz_checks_the_backend_bind(start_proxy, pki, authz_slapd, tmp_path):
    # The issue: "with the health endpoint on, /readyz checks that bind". A proxy whose
    # every client would get the notice is not ready; the same proxy with the right
    # password is.
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the proxy's password\n")
    statuses = {}
    for label, password_file in (("wrong", str(wrong)), ("right", authz_slapd.password_file)):
        health = free_port()
        start_proxy(authz_config(pki, free_port(), authz_slapd, password_file=password_file, health_port=health))
        # The first probe runs at start: until it has answered, the backend is "not probed yet".
        statuses[label] = wait_until(lambda: (lambda r: r if "not probed yet" not in r[1] else None)(http_get(health, "/readyz")),
                                     what="/readyz after the first backend probe")
    assert statuses["right"][0] == 200, statuses["right"]
    assert statuses["wrong"][0] == 503, statuses["wrong"]


@pytest.mark.parametrize("second", ["external", "anonymous", "named"])
def test_a_bind_behind_a_bind_passed_on_is_a_protocol_error(authz_proxy, pki, second):
    # A client may send nothing behind a bind before its response (RFC 4511 section
    # 4.2.1). Behind a bind passed on to slapd, another bind would have the proxy rebind
    # the backend connection while slapd still judges the first: slapd would abandon that
    # one silently and the client wait for ever. The proxy ends the session instead.
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    then = {"external": ldapwire.sasl_bind(2, "EXTERNAL", ""), "anonymous": ldapwire.simple_bind(2),
            "named": ldapwire.simple_bind(2, slapd_fixture.ROOT_DN, slapd_fixture.ROOT_PW)}[second]
    session.sock.sendall(ldapwire.simple_bind(1, CAROL, slapd_fixture.PASSWORD_USER_PW) + then)
    messages = ends_with_notice(session, NOTICE_PROTOCOL_ERROR)
    assert all(ldapwire.describe(m)[0] != 2 for m in messages), "the second bind was answered"
    proxy.wait_for_log("UID=alice,.*reason=protocol_error")
    still_serves(proxy, pki)
