"""StartTLS (tls = starttls): a plain LDAP listener where the client upgrades with the
StartTLS extended operation (RFC 4511 section 4.14) and then gets the same verification
as LDAPS. Before TLS nothing but StartTLS is served (confidentialityRequired, 13), and
no byte reaches the backend before the upgraded session is verified (rules 1 and 8)."""
import os
import ssl

import pytest

import ldapwire
import pki as pki_module
import slapd_fixture
from authzkit import ALICE, Session, ldap_plain, ldap_tool, output
from helpers import Backend, free_port, proxy_config, wait_until

BOB_MAIL = ["bob@example.com"]


@pytest.fixture
def echo_backend():
    backend = Backend("echo")
    yield backend
    backend.close()


def plain_proxy(start_proxy, pki, backend_address, **extra):
    """tls = starttls with client_auth = none: after the upgrade, a byte relay."""
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend_address, tls="starttls", **extra))
    proxy.port = port
    return proxy


def test_ldapsearch_zz_with_external(authz_proxy, pki):
    proxy = authz_proxy("sasl-external", tls="starttls")
    result = ldap_tool("ldapsearch", proxy.port, pki, "alice", "-LLL", "-b", slapd_fixture.SUFFIX, "(uid=bob)",
                       "mail", starttls=True)
    assert result.returncode == 0, output(result)
    assert "mail: bob@example.com" in result.stdout.decode()
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice", starttls=True)
    assert result.returncode == 0, output(result)
    assert result.stdout.decode().strip() == f"dn:{ALICE}"
    proxy.wait_for_log("UID=alice,.*end=closed", count=2)
    assert all("tls=TLS1." in line for line in proxy.log_lines("UID=alice,.*end=closed"))


def test_ldapsearch_zz_without_client_auth(start_proxy, pki, slapd):
    # client_auth = none on a StartTLS listener: verified, then relayed as it is.
    proxy = plain_proxy(start_proxy, pki, slapd)
    result = ldap_tool("ldapsearch", proxy.port, pki, "carol", "-x", "-LLL", "-b", slapd_fixture.SUFFIX,
                       "(uid=carol)", "cn", starttls=True, external=False)
    assert result.returncode == 0, output(result)
    assert "cn: Carol Example" in result.stdout.decode()
    proxy.wait_for_log("UID=carol,.*end=closed")


@pytest.mark.parametrize("tool,args", [
    ("ldapsearch", ["-x", "-b", slapd_fixture.SUFFIX, "(uid=alice)"]),
    ("ldapwhoami", ["-x"]),
    ("ldapwhoami", ["-x", "-D", slapd_fixture.ROOT_DN, "-w", slapd_fixture.ROOT_PW]),
])
def test_plaintext_tools_get_confidentiality_required(start_proxy, pki, echo_backend, tool, args):
    proxy = plain_proxy(start_proxy, pki, echo_backend.address)
    result = ldap_plain(tool, proxy.port, *args)
    assert result.returncode == 13 and "Confidentiality required (13)" in output(result), output(result)
    assert b"uid=alice" not in result.stdout
    assert echo_backend.accepted == 0


def test_plaintext_requests_then_upgrade_on_the_same_connection(authz_proxy, authz_slapd, pki):
    proxy = authz_proxy("sasl-external", tls="starttls")
    start = len(authz_slapd.log())
    session = Session(proxy.port, mode="plain")
    responses = {
        "search": session.request(ldapwire.search_equal(session.new_id(), "uid", "bob", ["mail"])),
        "bind": session.request(ldapwire.simple_bind(session.new_id(), slapd_fixture.ROOT_DN, slapd_fixture.ROOT_PW)),
        "external": session.request(ldapwire.sasl_bind(session.new_id(), "EXTERNAL")),
        "whoami": session.request(ldapwire.extended(session.new_id(), ldapwire.WHO_AM_I)),
        "modify": session.request(ldapwire.modify_replace(session.new_id(), ALICE, "description", "plain")),
    }
    for what, messages in responses.items():
        # Only the result: no entry of the search, each the response type of its request.
        assert len(messages) == 1, (what, [m.hex() for m in messages])
        _, op, code, _ = ldapwire.describe(messages[0])
        assert code == 13, (what, messages[0].hex())
    assert [ldapwire.describe(m[0])[1] for m in responses.values()] == [0x65, 0x61, 0x61, 0x78, 0x67]

    session.pki, session.name = pki, "alice"
    assert session.start_tls() == 0
    assert session.bind_external() == 0
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    seen = authz_slapd.seen_since(start, session)
    # One backend connection, opened after the upgrade: the plaintext requests never
    # reached slapd, nor did the rootdn's password.
    assert seen.count("ACCEPT from") == 1, seen
    assert slapd_fixture.ROOT_DN not in seen and "description" not in seen, seen
    session.close()


def test_unbind_before_tls_closes(start_proxy, pki, echo_backend):
    proxy = plain_proxy(start_proxy, pki, echo_backend.address)
    session = Session(proxy.port, mode="plain")
    session.sock.sendall(ldapwire.unbind(1))
    messages, rest = session.read_until_close(timeout=5)
    assert messages == [] and rest == b""
    assert echo_backend.accepted == 0


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_starttls_inside_tls_is_an_operations_error(authz_proxy, pki, tls):
    proxy = authz_proxy("sasl-external", tls=tls)
    session = Session(proxy.port, pki, "alice", mode=tls)
    assert session.bind_external() == 0
    assert session.result(ldapwire.extended(session.new_id(), ldapwire.START_TLS)) == 1  # operationsError
    assert session.whoami() == f"dn:{ALICE}", "the session did not go on after the refused StartTLS"
    session.close()


@pytest.mark.parametrize("name,alert", [("revoked-int", "revoked"), ("revoked-root", "revoked"),
                                        ("stranger", "unknown ca"), (None, "certificate required")])
def test_refused_certificates_on_the_starttls_path(start_proxy, pki, echo_backend, name, alert):
    proxy = plain_proxy(start_proxy, pki, echo_backend.address)
    result = ldap_tool("ldapsearch", proxy.port, pki, name, "-x", "-b", slapd_fixture.SUFFIX, "(uid=alice)",
                       starttls=True, external=False)
    assert result.returncode != 0 and b"uid=alice" not in result.stdout, output(result)

    session = Session(proxy.port, pki, name, mode="plain")
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        session.start_tls()
        session.sock.sendall(ldapwire.extended(session.new_id(), ldapwire.WHO_AM_I))
        session.sock.recv(100)  # TLS 1.3: the server's verdict arrives after our Finished
    assert alert in str(refused.value).lower().replace("_", " "), str(refused.value)
    proxy.wait_for_log("connection refused", count=2)
    assert echo_backend.accepted == 0


def test_revoked_certificate_refused_with_client_auth(authz_proxy, pki):
    proxy = authz_proxy("sasl-external", tls="starttls")
    result = ldap_tool("ldapwhoami", proxy.port, pki, "revoked-int", starttls=True)
    assert result.returncode != 0 and b"dn:" not in result.stdout, output(result)
    proxy.wait_for_log("connection refused.*revoked")


def test_live_revocation_closes_a_starttls_session_with_the_notice(authz_proxy, pki, crl_dir):
    proxy = authz_proxy("sasl-external", tls="starttls", crl_dir=crl_dir)
    carol, alice = (Session(proxy.port, pki, n, mode="starttls") for n in ("carol", "alice"))
    for session in (carol, alice):
        assert session.bind_external() == 0
        assert session.search("bob", "mail") == (0, BOB_MAIL)
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int", "carol"],
                         number=2)
    carol.read_until_close(timeout=5)
    ldapwire.assert_whole_messages_then_notice(carol.buffer, 8)
    assert alice.search("bob", "mail") == (0, BOB_MAIL), "a session of another certificate was disturbed"
    proxy.wait_for_log("UID=carol,.*end=revoked")
    alice.close()


def test_request_sent_before_the_starttls_response(start_proxy, pki, echo_backend):
    # The client may not send anything after the StartTLS request until its response
    # (RFC 4511 section 4.14.1). Whatever the proxy does, the client gets whole LDAP
    # messages, never a TLS handshake on top of a pending request, and a search never
    # reaches the backend; the proxy then serves the next client.
    proxy = plain_proxy(start_proxy, pki, echo_backend.address)
    session = Session(proxy.port, mode="plain")
    session.sock.sendall(ldapwire.extended(1, ldapwire.START_TLS) + ldapwire.search_equal(2, "uid", "alice"))

    def closed_or_both_answered():
        if not session.receive():
            return True
        messages, _ = ldapwire.split_messages(session.buffer)
        return {1, 2} <= {ldapwire.describe(m)[0] for m in messages if ldapwire.describe(m)[2] is not None}
    wait_until(closed_or_both_answered, what="the end or both responses")
    messages, rest = ldapwire.split_messages(session.buffer)
    assert rest == b"", f"not LDAP: {rest[:32].hex()}"
    described = [ldapwire.describe(m) for m in messages]
    notice = (0, ldapwire.EXTENDED_RESPONSE, 2, ldapwire.NOTICE_OF_DISCONNECTION)
    starttls_refused = any(mid == 1 and code not in (0, None) for mid, _, code, _ in described)
    assert described and (described[-1] == notice or starttls_refused), described
    assert not any(mid == 1 and code == 0 for mid, _, code, _ in described), "StartTLS succeeded anyway"
    assert echo_backend.accepted == 0

    good = Session(proxy.port, pki, "alice", mode="starttls")
    search = ldapwire.search_equal(good.new_id(), "uid", "alice")
    good.sock.sendall(search)  # client_auth = none: relayed as it is, and echoed back
    while len(good.buffer) < len(search):
        assert good.receive(), "closed before the echo came back"
    assert good.buffer == search
    good.close()
    wait_until(lambda: echo_backend.accepted == 1, what="the next client's backend connection")
