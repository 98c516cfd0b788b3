"""The certificate is the login (client_auth = sasl-external | certificate, over LDAPS):
the proxy answers SASL EXTERNAL itself and slapd sees every request with a proxied
authorization control (RFC 4370) for the certificate's entry. slapd (authz_slapd) is set
up as a deployment would be: `authz-policy to`, authzTo on the proxy's entry, users
write only their own entry, anonymous may not read mail. What each request ran as is
read from what slapd did (ACLs, Who am I?), and values are read back directly from slapd."""
import re
import uuid

import ldap
import pytest

import ldapwire
from authzkit import ALICE, BOB, CAROL, Session, ldap_tool, modify_ldif, output
import slapd_fixture

MODES = ["sasl-external", "certificate"]
BOB_MAIL = ["bob@example.com"]


def token():
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("mode", MODES)
def test_ldapwhoami_external_prints_the_certificates_entry(authz_proxy, pki, mode):
    proxy = authz_proxy(mode)
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice")
    assert result.returncode == 0, output(result)
    assert result.stdout.decode().strip() == f"dn:{ALICE}"
    proxy.wait_for_log("UID=alice,.*end=closed")
    line = proxy.log_lines("UID=alice,.*end=closed")[-1]
    # The DN as the certificate spells it (log values with commas are quoted, as subject=).
    assert re.search(rf' authz="?dn:{ALICE}\b', line, re.IGNORECASE), line


def test_bob_issued_by_the_root_is_bob(authz_proxy, pki):
    proxy = authz_proxy("sasl-external")
    result = ldap_tool("ldapwhoami", proxy.port, pki, "bob")
    assert result.returncode == 0, output(result)
    assert result.stdout.decode().strip() == f"dn:{BOB}"


@pytest.mark.parametrize("mode", MODES)
def test_alice_writes_her_own_entry_and_not_bobs(authz_proxy, authz_slapd, pki, mode):
    proxy = authz_proxy(mode)
    value = token()
    result = ldap_tool("ldapmodify", proxy.port, pki, "alice", stdin=modify_ldif(ALICE, "description", value))
    assert result.returncode == 0, output(result)
    assert authz_slapd.read(ALICE, "description") == [value]

    before = authz_slapd.read(BOB, "description")
    result = ldap_tool("ldapmodify", proxy.port, pki, "alice", stdin=modify_ldif(BOB, "description", value))
    assert result.returncode == 50 and "Insufficient access (50)" in output(result), output(result)
    assert authz_slapd.read(BOB, "description") == before


def test_before_the_bind_a_request_runs_as_anonymous(authz_proxy, authz_slapd, pki):
    # sasl-external: until EXTERNAL, the empty proxied identity (anonymous), never the
    # proxy's own identity (which may read mail and authzTo).
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    assert session.search("bob", "mail") == (0, []), "anonymous saw mail (or not bob's entry)"
    assert session.search("mtls-proxy", "authzTo")[1] in (None, []), "ran as the proxy's own identity"
    assert session.whoami() == ""
    value = token()
    # slapd's answer to an anonymous write: "modifications require authentication".
    assert session.modify(ALICE, "description", value) == 8
    assert authz_slapd.read(ALICE, "description") != [value]

    assert session.bind_external() == 0
    assert session.whoami() == f"dn:{ALICE}"
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    assert session.modify(ALICE, "description", value) == 0
    assert authz_slapd.read(ALICE, "description") == [value]
    session.close()


def test_tools_anonymous_then_external(authz_proxy, pki):
    proxy = authz_proxy("sasl-external")
    anonymous = ldap_tool("ldapsearch", proxy.port, pki, "alice", "-x", "-LLL", "-b", slapd_fixture.SUFFIX,
                          "(uid=bob)", "mail", external=False)
    assert anonymous.returncode == 0, output(anonymous)
    assert f"dn: {BOB}" in anonymous.stdout.decode() and "mail:" not in anonymous.stdout.decode()
    external = ldap_tool("ldapsearch", proxy.port, pki, "alice", "-LLL", "-b", slapd_fixture.SUFFIX, "(uid=bob)",
                         "mail")
    assert external.returncode == 0, output(external)
    assert "mail: bob@example.com" in external.stdout.decode()


def test_certificate_mode_runs_as_the_certificate_from_the_first_request(authz_proxy, authz_slapd, pki):
    proxy = authz_proxy("certificate")
    session = Session(proxy.port, pki, "alice")
    assert session.search("bob", "mail") == (0, BOB_MAIL)  # the very first request, no bind
    assert session.whoami() == f"dn:{ALICE}"
    value = token()
    assert session.modify(ALICE, "description", value) == 0
    assert authz_slapd.read(ALICE, "description") == [value]
    session.close()


@pytest.mark.parametrize("mode", MODES)
def test_anonymous_simple_bind_makes_the_session_anonymous(authz_proxy, pki, mode):
    # Rule 9: after an anonymous simple bind (answered by the proxy) requests carry the
    # empty proxied identity, in both modes: the client asked for anonymous explicitly
    # (RFC 4513 section 5.1.1).
    proxy = authz_proxy(mode)
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice", "-x", external=False)
    assert result.returncode == 0, output(result)
    assert result.stdout.decode().strip() == "anonymous"

    session = Session(proxy.port, pki, "alice")
    assert session.bind_external() == 0
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    assert session.bind_simple() == 0
    assert session.whoami() == ""
    assert session.search("bob", "mail") == (0, [])
    session.close()


FORGED = [
    pytest.param(ldapwire.PROXIED_AUTHZ, f"dn:{BOB}".encode(), True, id="rfc4370-critical"),
    pytest.param(ldapwire.PROXIED_AUTHZ, f"dn:{BOB}".encode(), False, id="rfc4370-noncritical"),
    pytest.param(ldapwire.PROXIED_AUTHZ, b"", True, id="rfc4370-anonymous"),
    pytest.param(ldapwire.PROXIED_AUTHZ_V1, ldapwire.tlv(0x30, ldapwire.octets(BOB)), True, id="v1-critical"),
    pytest.param(ldapwire.PROXIED_AUTHZ_V1, ldapwire.tlv(0x30, ldapwire.octets(BOB)), False, id="v1-noncritical"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("oid,value,critical", FORGED)
def test_forged_proxied_authorization_is_refused_and_never_forwarded(authz_proxy, authz_slapd, pki, mode, oid, value,
                                                                     critical):
    proxy = authz_proxy(mode)
    session = Session(proxy.port, pki, "alice")
    assert session.bind_external() == 0
    start = len(authz_slapd.log())
    before = authz_slapd.read(BOB, "description")
    forged = [ldapwire.control(oid, value, critical)]
    assert session.modify(BOB, "description", token(), forged) == 53
    assert session.search("bob", "mail", forged) == (53, None)
    assert session.result(ldapwire.extended(session.new_id(), ldapwire.WHO_AM_I, controls=forged)) == 53
    assert session.whoami() == f"dn:{ALICE}", "the session is still alice's"
    seen = authz_slapd.seen_since(start, session)
    assert authz_slapd.read(BOB, "description") == before
    assert f'MOD dn="{BOB}"' not in seen and "(uid=bob)" not in seen, f"slapd saw the forged requests:\n{seen}"
    session.close()


def test_ldapsearch_with_a_forged_authzid_gets_unwilling_to_perform(authz_proxy, pki):
    proxy = authz_proxy("sasl-external")
    result = ldap_tool("ldapsearch", proxy.port, pki, "alice", "-LLL", "-e", f"!authzid=dn:{BOB}", "-b",
                       slapd_fixture.SUFFIX, "(uid=bob)", "mail")
    assert result.returncode == 53 and "Server is unwilling to perform (53)" in output(result), output(result)
    assert "mail:" not in result.stdout.decode()


def python_ldap(port, pki, name):
    conn = ldap.initialize(f"ldaps://localhost:{port}")
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
    conn.set_option(ldap.OPT_TIMEOUT, 10)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, f"{pki}/root-ca.pem")
    conn.set_option(ldap.OPT_X_TLS_CERTFILE, f"{pki}/{name}.pem")
    conn.set_option(ldap.OPT_X_TLS_KEYFILE, f"{pki}/{name}.key")
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    return conn


def test_python_ldap_v1_control_gets_unwilling_to_perform(authz_proxy, authz_slapd, pki):
    proxy = authz_proxy("sasl-external")
    conn = python_ldap(proxy.port, pki, "alice")
    conn.sasl_external_bind_s()
    before = authz_slapd.read(BOB, "description")
    control = ldap.controls.LDAPControl(ldapwire.PROXIED_AUTHZ_V1, True, ldapwire.tlv(0x30, ldapwire.octets(BOB)))
    with pytest.raises(ldap.UNWILLING_TO_PERFORM):
        conn.modify_ext_s(BOB, [(ldap.MOD_REPLACE, "description", [token().encode()])], serverctrls=[control])
    assert authz_slapd.read(BOB, "description") == before
    conn.unbind_s()


def test_certificate_mode_refuses_other_binds(authz_proxy, pki):
    proxy = authz_proxy("certificate")
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice", "-x", "-D", CAROL, "-w",
                       slapd_fixture.PASSWORD_USER_PW, external=False)
    assert result.returncode == 48 and "Inappropriate authentication (48)" in output(result), output(result)

    session = Session(proxy.port, pki, "alice")
    assert session.bind_simple(CAROL, slapd_fixture.PASSWORD_USER_PW) == 48
    assert session.whoami() == "", "a failed bind leaves the session anonymous"
    assert session.bind_external() == 0
    assert session.result(ldapwire.sasl_bind(session.new_id(), "DIGEST-MD5")) == 48
    assert session.whoami() == ""
    session.close()


def test_sasl_external_passes_named_binds_to_slapd(authz_proxy, authz_slapd, pki):
    proxy = authz_proxy("sasl-external")
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice", "-x", "-D", slapd_fixture.ROOT_DN, "-w",
                       slapd_fixture.ROOT_PW, external=False)
    assert result.returncode == 0, output(result)
    assert result.stdout.decode().strip() == f"dn:{slapd_fixture.ROOT_DN}"

    session = Session(proxy.port, pki, "alice")
    assert session.bind_simple(CAROL, slapd_fixture.PASSWORD_USER_PW) == 0
    assert session.whoami() == f"dn:{CAROL}"
    value = token()
    assert session.modify(CAROL, "description", value) == 0  # as carol, judged by slapd
    assert session.modify(ALICE, "description", value) == 50
    assert authz_slapd.read(CAROL, "description") == [value]
    assert authz_slapd.read(ALICE, "description") != [value]

    assert session.bind_external() == 0  # alice again: the proxy re-binds as itself first
    assert session.whoami() == f"dn:{ALICE}"
    assert session.modify(ALICE, "description", value) == 0
    assert authz_slapd.read(ALICE, "description") == [value]

    assert session.bind_simple(CAROL, "wrong password") == 49  # slapd's verdict
    assert session.whoami() == ""
    assert session.search("bob", "mail") == (0, [])
    assert session.bind_external() == 0
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    session.close()


def test_sasl_external_passes_other_mechanisms_to_slapd(authz_proxy, pki):
    # slapd answers DIGEST-MD5 with its challenge (saslBindInProgress, 14): only slapd can.
    # EXTERNAL in the middle of that exchange ends it (RFC 4513 section 5.2.1.2) and the
    # session is alice's, on a backend connection bound as the proxy again.
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    assert session.result(ldapwire.sasl_bind(session.new_id(), "DIGEST-MD5")) == 14
    assert session.bind_external() == 0
    assert session.whoami() == f"dn:{ALICE}"
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    session.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("authzid", [f"dn:{BOB}", "u:alice", "dn:uid=alice,ou=people,dc=example,dc=org", "dn:"])
def test_external_naming_another_identity_fails_and_leaves_anonymous(authz_proxy, pki, mode, authzid):
    proxy = authz_proxy(mode)
    session = Session(proxy.port, pki, "alice")
    assert session.bind_external() == 0
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    code = session.bind_external(authzid)
    assert code not in (0, 14), f"EXTERNAL as {authzid!r} answered {code}"
    assert session.whoami() == ""
    assert session.search("bob", "mail") == (0, [])
    session.close()


def test_ldapwhoami_external_as_bob_fails(authz_proxy, pki):
    proxy = authz_proxy("sasl-external")
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice", "-X", f"dn:{BOB}")
    assert result.returncode not in (0, 14), output(result)
    assert f"dn:{BOB}" not in result.stdout.decode()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("authzid", [f"dn:{ALICE}", "dn:UID=Alice,OU=People,DC=Example,DC=COM",
                                     "dn:UID=Alice, ou=People, dc=example, dc=com"])
def test_external_naming_the_same_entry_succeeds(authz_proxy, pki, mode, authzid):
    proxy = authz_proxy(mode)
    session = Session(proxy.port, pki, "alice")
    assert session.bind_external(authzid) == 0
    assert session.whoami() == f"dn:{ALICE}"
    assert session.search("bob", "mail") == (0, BOB_MAIL)
    session.close()


def test_other_controls_still_reach_slapd(authz_proxy, pki):
    # The proxy adds its control next to the client's: a paged search (RFC 2696) pages.
    proxy = authz_proxy("sasl-external")
    result = ldap_tool("ldapsearch", proxy.port, pki, "alice", "-LLL", "-E", "pr=1/noprompt", "-b",
                       slapd_fixture.SUFFIX, "(objectClass=inetOrgPerson)", "mail")
    assert result.returncode == 0, output(result)
    out = result.stdout.decode()
    assert all(f"mail: {u}@example.com" in out for u in ("alice", "bob", "carol")), out
    assert out.count("pagedresults:") >= 3, out


@pytest.mark.parametrize("cert_map_filter,entry", [
    ("(uid={uid})", ALICE),
    # contrived, to tell the search from the subject: alice's certificate finds bob's entry
    ("(|(uid=nobody-{uid})(uid=bob))", BOB),
])
def test_cert_map_search_decides_the_identity(authz_proxy, pki, cert_map_filter, entry):
    # Rule 9: the identity is the entry cert_map finds; only with verify_cert_in_directory
    # (off here) must that entry also hold the certificate (none of these entries do).
    proxy = authz_proxy("sasl-external", cert_map="search", cert_map_base="ou=people,dc=example,dc=com",
                        cert_map_filter=cert_map_filter)
    result = ldap_tool("ldapwhoami", proxy.port, pki, "alice")
    assert result.returncode == 0, output(result) + proxy.log()
    assert result.stdout.decode().strip() == f"dn:{entry}"


def search_mail(answers, mid):
    """(resultCode, bob's mail values) from a pipeline's answers to search `mid`."""
    values = None
    for message in answers[mid][:-1]:
        values = ldapwire.entry_attributes(message)[1].get("mail", [])
    return ldapwire.describe(answers[mid][-1])[2], values


def whoami_of(answers, mid):
    assert ldapwire.describe(answers[mid][-1])[2] == 0
    return ldapwire.extended_value(answers[mid][-1]) or ""


def test_pipelined_requests_run_as_the_identity_of_their_place(authz_proxy, pki):
    # Requests written in one go, binds answered by the proxy among them: each request
    # runs as the identity the binds before it set, never as one after it. (Only binds the
    # proxy answers: behind a bind passed on to slapd, slapd abandons what is still
    # outstanding, without a response, as RFC 4511 section 4.2.1 lets it; so does the
    # proxy then, being transparent.)
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    search = lambda mid: ldapwire.search_equal(mid, "uid", "bob", ["mail"])  # noqa: E731
    answers = session.pipeline([
        search(1), ldapwire.extended(2, ldapwire.WHO_AM_I),
        ldapwire.sasl_bind(3, "EXTERNAL", ""), search(4), ldapwire.extended(5, ldapwire.WHO_AM_I),
        ldapwire.simple_bind(6), search(7), ldapwire.extended(8, ldapwire.WHO_AM_I),
        ldapwire.sasl_bind(9, "EXTERNAL", ""), search(10),
    ])
    assert [ldapwire.describe(answers[m][-1])[2] for m in (3, 6, 9)] == [0, 0, 0]
    assert search_mail(answers, 1) == (0, [])
    assert whoami_of(answers, 2) == ""
    assert search_mail(answers, 4) == (0, BOB_MAIL)
    assert whoami_of(answers, 5) == f"dn:{ALICE}"
    assert search_mail(answers, 7) == (0, [])
    assert whoami_of(answers, 8) == ""
    assert search_mail(answers, 10) == (0, BOB_MAIL)
    session.close()


@pytest.mark.parametrize("mode", MODES)
def test_compare_and_delete_carry_the_identity(authz_proxy, authz_slapd, pki, mode):
    # Every request but unbind and abandon gets the control: a compare of bob's mail is
    # true for alice and refused to anonymous (who may not read mail); alice may not
    # delete bob.
    proxy = authz_proxy(mode)
    compare = [BOB, "mail:bob@example.com"]
    as_alice = ldap_tool("ldapcompare", proxy.port, pki, "alice", *compare)
    assert as_alice.returncode == 6 and "TRUE" in as_alice.stdout.decode(), output(as_alice)
    anonymous = ldap_tool("ldapcompare", proxy.port, pki, "alice", "-x", *compare, external=False)
    assert anonymous.returncode not in (5, 6), output(anonymous)
    delete = ldap_tool("ldapdelete", proxy.port, pki, "alice", BOB)
    assert delete.returncode == 50, output(delete)
    assert authz_slapd.read(BOB, "uid") == ["bob"]
