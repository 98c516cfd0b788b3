"""Real LDAP through the proxy: ldapsearch with a client certificate against slapd."""
import os
import subprocess

import pytest

from helpers import free_port, proxy_config


def ldapsearch(port, pki, name, *args, host="localhost"):
    env = dict(os.environ, LDAPTLS_CACERT=f"{pki}/root-ca.pem", LDAPTLS_REQCERT="demand")
    if name:
        env.update(LDAPTLS_CERT=f"{pki}/{name}.pem", LDAPTLS_KEY=f"{pki}/{name}.key")
    return subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-o", "nettimeout=10", "-H", f"ldaps://{host}:{port}",
         "-b", "dc=example,dc=com", *args],
        env=env, capture_output=True, timeout=30)


@pytest.fixture
def ldap_proxy(start_proxy, pki, slapd):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, slapd))
    proxy.port = port
    return proxy


@pytest.mark.parametrize("name", ["alice", "bob"])  # via the intermediate, and issued by the root
def test_search_returns_entries(ldap_proxy, pki, name):
    result = ldapsearch(ldap_proxy.port, pki, name, "(objectClass=inetOrgPerson)", "mail")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    for user in ["alice", "bob", "carol"]:
        assert f"dn: uid={user},ou=people,dc=example,dc=com" in out
        assert f"mail: {user}@example.com" in out
    ldap_proxy.wait_for_log("end=closed")
    line = ldap_proxy.log_lines("connection closed")[-1]
    assert f"UID={name}" in line and "tls=TLS1.3" in line and "bytes_out=" in line


def test_search_by_ip_address(ldap_proxy, pki):
    result = ldapsearch(ldap_proxy.port, pki, "carol", "(uid=carol)", "cn", host="127.0.0.1")
    assert result.returncode == 0, result.stderr.decode()
    assert "cn: Carol Example" in result.stdout.decode()


@pytest.mark.parametrize("name", ["revoked-int", "revoked-root", "stranger", None])
def test_refused_clients_get_no_answer(ldap_proxy, pki, name):
    result = ldapsearch(ldap_proxy.port, pki, name, "(uid=alice)")
    assert result.returncode != 0
    assert b"uid=alice" not in result.stdout
    ldap_proxy.wait_for_log("connection refused")
