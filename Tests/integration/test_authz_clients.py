"""The client matrix: real LDAP clients log in with their certificate (SASL EXTERNAL)
through the proxy, over LDAPS and over StartTLS, and search as that user. Each proves
whom slapd saw with Who am I? and with bob's mail, which anonymous may not read.

    OpenLDAP tools   ldapwhoami / ldapsearch -Y EXTERNAL (-ZZ)
    python-ldap      sasl_external_bind_s (start_tls_s)
    ldap3            SASL EXTERNAL with a client certificate in ldap3.Tls (start_tls())
    Java JNDI        Context.SECURITY_AUTHENTICATION = "EXTERNAL" (StartTlsRequest,
                     negotiate(), then EXTERNAL)"""
import os
import shutil
import ssl
import subprocess

import ldap
import ldap3
import pytest

import slapd_fixture
from authzkit import ALICE, ldap_tool, output
from test_jndi import PASSWORD, java_stores, run  # noqa: F401 (java_stores is a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSPORTS = ["ldaps", "starttls"]
MODES = ["sasl-external", "certificate"]
BOB_MAIL = "bob@example.com"


@pytest.fixture
def proxy_for(authz_proxy):
    def start(mode, transport):
        return authz_proxy(mode, tls="starttls" if transport == "starttls" else "implicit")
    return start


def openldap(port, pki, transport):
    starttls = transport == "starttls"
    who = ldap_tool("ldapwhoami", port, pki, "alice", starttls=starttls)
    assert who.returncode == 0, output(who)
    search = ldap_tool("ldapsearch", port, pki, "alice", "-LLL", "-b", slapd_fixture.SUFFIX, "(uid=bob)", "mail",
                       starttls=starttls)
    assert search.returncode == 0, output(search)
    mails = [line[len("mail: "):] for line in search.stdout.decode().splitlines() if line.startswith("mail: ")]
    return who.stdout.decode().strip(), mails


def python_ldap(port, pki, transport):
    scheme = "ldap" if transport == "starttls" else "ldaps"
    conn = ldap.initialize(f"{scheme}://localhost:{port}")
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
    conn.set_option(ldap.OPT_TIMEOUT, 10)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, f"{pki}/root-ca.pem")
    conn.set_option(ldap.OPT_X_TLS_CERTFILE, f"{pki}/alice.pem")
    conn.set_option(ldap.OPT_X_TLS_KEYFILE, f"{pki}/alice.key")
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    try:
        if transport == "starttls":
            conn.start_tls_s()
        conn.sasl_external_bind_s()
        who = conn.whoami_s()
        entries = conn.search_s(slapd_fixture.SUFFIX, ldap.SCOPE_SUBTREE, "(uid=bob)", ["mail"])
        return who, [v.decode() for _, attrs in entries for v in attrs.get("mail", [])]
    finally:
        conn.unbind_s()


def ldap3_client(port, pki, transport):
    tls = ldap3.Tls(local_private_key_file=f"{pki}/alice.key", local_certificate_file=f"{pki}/alice.pem",
                    ca_certs_file=f"{pki}/root-ca.pem", validate=ssl.CERT_REQUIRED)
    server = ldap3.Server("localhost", port=port, use_ssl=transport == "ldaps", tls=tls, get_info=ldap3.NONE,
                          connect_timeout=10)
    # sasl_credentials="": an empty authzId; without it ldap3 sends no credentials at all
    # and stops at the server's empty challenge (saslBindInProgress), slapd's included.
    conn = ldap3.Connection(server, authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL, sasl_credentials="",
                            receive_timeout=10, raise_exceptions=True)
    try:
        conn.open()
        if transport == "starttls":
            assert conn.start_tls(), conn.result
        assert conn.bind(), conn.result
        who = conn.extend.standard.who_am_i()
        conn.search(slapd_fixture.SUFFIX, "(uid=bob)", attributes=["mail"])
        return who, [str(v) for entry in conn.entries for v in entry.mail.values]
    finally:
        conn.unbind()


@pytest.fixture(scope="session")
def jndi_external_classes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("jndi-external-classes"))
    run(["javac", "-d", out, os.path.join(HERE, "java", "JndiExternal.java")])
    return out


def jndi(port, pki, transport, classes, stores):
    keystore, truststore = stores
    scheme = "ldap" if transport == "starttls" else "ldaps"
    result = subprocess.run(
        ["java", f"-Djavax.net.ssl.keyStore={keystore}", f"-Djavax.net.ssl.keyStorePassword={PASSWORD}",
         "-Djavax.net.ssl.keyStoreType=PKCS12", f"-Djavax.net.ssl.trustStore={truststore}",
         f"-Djavax.net.ssl.trustStorePassword={PASSWORD}", "-Djavax.net.ssl.trustStoreType=PKCS12",
         "-cp", classes, "JndiExternal", f"{scheme}://localhost:{port}", transport],
        capture_output=True, timeout=120)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    who = [line[len("whoami: "):] for line in out.splitlines() if line.startswith("whoami: ")]
    mails = [line[len("mail: "):] for line in out.splitlines() if line.startswith("mail: ")]
    return who[0] if who else None, mails


def check(proxy, who, mails):
    assert who == f"dn:{ALICE}", who
    assert mails == [BOB_MAIL], mails
    proxy.wait_for_log("UID=alice,.*end=closed")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_openldap_tools(proxy_for, pki, mode, transport):
    proxy = proxy_for(mode, transport)
    check(proxy, *openldap(proxy.port, pki, transport))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_python_ldap(proxy_for, pki, mode, transport):
    proxy = proxy_for(mode, transport)
    check(proxy, *python_ldap(proxy.port, pki, transport))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ldap3(proxy_for, pki, mode, transport):
    proxy = proxy_for(mode, transport)
    check(proxy, *ldap3_client(proxy.port, pki, transport))


@pytest.mark.skipif(shutil.which("javac") is None, reason="no JDK (scripts/install-deps installs it)")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_jndi(proxy_for, pki, mode, transport, jndi_external_classes, java_stores):  # noqa: F811
    proxy = proxy_for(mode, transport)
    check(proxy, *jndi(proxy.port, pki, transport, jndi_external_classes, java_stores))
