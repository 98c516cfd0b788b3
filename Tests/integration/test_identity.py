"""Allow-lists after verification, and the client's address handed to slapd by the
PROXY protocol v2."""
import os
import re
import socket
import subprocess

import pytest

import slapd_fixture
from helpers import accepts_tcp, free_port, proxy_config, refusal, round_trip, wait_until


@pytest.mark.parametrize("setting,allowed,refused", [
    ({"allow_subject": "UID=alice,OU=people,DC=example,DC=com"}, "alice", "bob"),
    ({"allow_subject": "UID=*,OU=people,DC=example,DC=com"}, "bob", None),
    ({"allow_ou": "people"}, "carol", None),
    ({"allow_ou": "staff", "allow_subject": "UID=carol,OU=people,DC=example,DC=com"}, "carol", "alice"),
    ({"allow_cn": "nobody"}, None, "alice"),
])
def test_allow_lists(start_proxy, pki, backend, setting, allowed, refused):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, **setting))
    if allowed:
        assert round_trip(port, pki, allowed) == b"ping\n"
    if refused:
        accepted = backend.accepted
        error = refusal(port, pki, refused)
        assert "access denied" in error.lower().replace("_", " "), error
        proxy.wait_for_log(f"UID={refused},.*reason=not_allowed")
        assert backend.accepted == accepted


def test_slapd_sees_the_real_client_address_through_proxy_protocol(start_proxy, pki, tmp_path):
    directory = str(tmp_path / "slapd")
    slapd_fixture.setup(directory)
    slapd_port = free_port()
    log_path = tmp_path / "slapd.log"
    command = slapd_fixture.command(directory, slapd_port)
    command[command.index(f"ldap://127.0.0.1:{slapd_port}/")] = f"pldap://127.0.0.1:{slapd_port}/"
    command[command.index("-d") + 1] = "256"  # stats: connections and operations, on stderr
    with open(log_path, "wb") as log:
        slapd = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        # slapd on pldap:// wants a PROXY header before LDAP, so the ldapsearch readiness
        # check cannot be used: wait for its listening socket instead.
        wait_until(lambda: accepts_tcp(slapd_port), what=f"slapd to listen on {slapd_port}")
        port = free_port()
        proxy = start_proxy(proxy_config(pki, port, f"127.0.0.1:{slapd_port}", proxy_protocol="v2"))
        env = dict(os.environ, LDAPTLS_CACERT=f"{pki}/root-ca.pem", LDAPTLS_CERT=f"{pki}/alice.pem",
                   LDAPTLS_KEY=f"{pki}/alice.key")
        result = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", f"ldaps://localhost:{port}", "-b",
                                 "dc=example,dc=com", "(uid=alice)", "dn"], env=env, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr.decode()
        assert b"uid=alice" in result.stdout
        proxy.wait_for_log("UID=alice.*end=closed")
        client_port = re.search(r"client=127\.0\.0\.1:(\d+)", proxy.log_lines("UID=alice.*end=closed")[0]).group(1)
        # slapd logs the address from the PROXY header, not the proxy's own connection.
        wait_until(lambda: f"ACCEPT from IP=127.0.0.1:{client_port} " in log_path.read_text(errors="replace"),
                   what=f"slapd to log the client's port {client_port}:\n{log_path.read_text(errors='replace')}")
    finally:
        slapd.terminate()
        slapd.wait(10)
