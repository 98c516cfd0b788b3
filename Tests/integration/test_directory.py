"""verify_cert_in_directory: the presented certificate must be a userCertificate;binary
value of the user's own entry in a real slapd."""
import base64
import os
import re
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography import x509

import pki as pki_module
import slapd_fixture
from helpers import free_port, http_get, proxy_config, refusal, round_trip, tls_connect

ADMIN = ["-x", "-D", slapd_fixture.ROOT_DN, "-w", slapd_fixture.ROOT_PW]


def der(pki, name):
    with open(os.path.join(pki, f"{name}.pem"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)


def ldapmodify(url, ldif, add=False):
    result = subprocess.run(["ldapmodify" if not add else "ldapadd", "-H", url] + ADMIN, input=ldif.encode(),
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()


def put_certificate(url, dn, certificate_der):
    ldapmodify(url, f"dn: {dn}\nchangetype: modify\nreplace: userCertificate;binary\n"
                    f"userCertificate;binary:: {base64.b64encode(certificate_der).decode()}\n")


@pytest.fixture(scope="module")
def directory(tmp_path_factory, pki):
    """A slapd whose entries hold certificates: alice her own, carol bob's, bob none;
    dave has a certificate but no entry; "*" is a user whose UID is a metacharacter."""
    folder = str(tmp_path_factory.mktemp("directory"))
    slapd_fixture.setup(folder)
    port = free_port()
    process = subprocess.Popen(slapd_fixture.command(folder, port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"ldap://127.0.0.1:{port}"
    try:
        slapd_fixture.wait_ready(port)
        pki_module.issue_client(pki, "dave")
        pki_module.issue_client(pki, "*")
        put_certificate(url, "uid=alice,ou=people,dc=example,dc=com", der(pki, "alice"))
        put_certificate(url, "uid=carol,ou=people,dc=example,dc=com", der(pki, "bob"))
        # For cert_map = search: a second entry that names alice in its description and
        # holds her certificate, while uid=alice's own entry is found first by the filter.
        # And an entry holding the "*" user's certificate, reachable only by a wildcard.
        ldapmodify(url, f"""dn: cn=alice-service,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
cn: alice-service
sn: service
description: alice
userCertificate;binary:: {base64.b64encode(der(pki, "alice")).decode()}

dn: cn=bob-service,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
cn: bob-service
sn: service
description: bob
userCertificate;binary:: {base64.b64encode(der(pki, "bob")).decode()}

dn: uid=other,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: other
cn: other
sn: other
userCertificate;binary:: {base64.b64encode(der(pki, "*")).decode()}
""", add=True)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def directory_proxy(start_proxy, pki, backend, directory_url, health=None, **extra):
    port = free_port()
    settings = dict(verify_cert_in_directory="yes", directory_url=directory_url)
    settings.update(extra)
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health, **settings))
    proxy.port = port
    return proxy


def test_certificate_in_own_entry_is_served_others_are_refused(start_proxy, pki, backend, directory):
    proxy = directory_proxy(start_proxy, pki, backend, directory)
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    for name, why in [("bob", "no entry, or no certificate"), ("carol", "other certificates"), ("dave", "no entry")]:
        accepted = backend.accepted
        error = refusal(proxy.port, pki, name)
        assert "access denied" in error.lower().replace("_", " "), error
        proxy.wait_for_log(f"UID={re.escape(name)},.*reason=not_in_directory.*{why}")
        assert backend.accepted == accepted


def test_search_mapping_takes_the_candidate_that_holds_the_certificate(start_proxy, pki, backend, directory):
    # bob has two candidates: uid=bob (no certificate) and cn=bob-service (his certificate).
    proxy = directory_proxy(start_proxy, pki, backend, directory, cert_map="search",
                            cert_map_base="ou=people,dc=example,dc=com",
                            cert_map_filter="(|(uid={uid})(description={uid}))")
    assert round_trip(proxy.port, pki, "bob") == b"ping\n"
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert "access denied" in refusal(proxy.port, pki, "dave").lower().replace("_", " ")  # no candidate


def test_simple_bind_for_the_check(start_proxy, pki, backend, directory, tmp_path):
    password = tmp_path / "directory.password"
    password.write_text(slapd_fixture.ROOT_PW + "\n")
    proxy = directory_proxy(start_proxy, pki, backend, directory, directory_bind_dn=slapd_fixture.ROOT_DN,
                            directory_bind_password_file=str(password))
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    password.write_text("wrong\n")
    wrong = directory_proxy(start_proxy, pki, backend, directory, directory_bind_dn=slapd_fixture.ROOT_DN,
                            directory_bind_password_file=str(password))
    assert "access denied" in refusal(wrong.port, pki, "alice").lower().replace("_", " ")
    wrong.wait_for_log("reason=directory_unavailable.*bind as cn=admin")


def test_filter_metacharacters_cannot_widen_the_search(start_proxy, pki, backend, directory):
    # The "*" user's certificate sits in uid=other's entry. Unescaped, (uid=*) would find
    # it and let the client in; escaped, the filter asks for a uid that is literally "*".
    proxy = directory_proxy(start_proxy, pki, backend, directory, cert_map="search",
                            cert_map_base="ou=people,dc=example,dc=com", cert_map_filter="(uid={uid})")
    assert "access denied" in refusal(proxy.port, pki, "*").lower().replace("_", " ")
    proxy.wait_for_log("reason=not_in_directory")


def test_reissued_certificate_replaces_the_old_one_of_the_same_subject(start_proxy, pki, backend, directory):
    # grace's certificate is re-issued (same subject, new key and serial) and only the
    # new one is put in her entry: the old one must stop working. A check that matched
    # the entry by subject, not by the certificate's bytes, would let both in.
    pki_module.issue_client(pki, "grace")
    for ext in ["pem", "key"]:
        os.replace(os.path.join(pki, f"grace.{ext}"), os.path.join(pki, f"grace-old.{ext}"))
    pki_module.issue_client(pki, "grace")
    ldapmodify(directory, f"""dn: uid=grace,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: grace
cn: grace
sn: grace
userCertificate;binary:: {base64.b64encode(der(pki, "grace")).decode()}
""", add=True)
    proxy = directory_proxy(start_proxy, pki, backend, directory)
    accepted = backend.accepted
    error = refusal(proxy.port, pki, "grace-old")
    assert "access denied" in error.lower().replace("_", " "), error
    proxy.wait_for_log("UID=grace,.*reason=not_in_directory.*the entry holds other certificates")
    assert backend.accepted == accepted
    assert round_trip(proxy.port, pki, "grace") == b"ping\n"


def test_directory_down_rejects_and_readyz_fails(start_proxy, pki, backend):
    health = free_port()
    proxy = directory_proxy(start_proxy, pki, backend, f"ldap://127.0.0.1:{free_port()}", health=health,
                            directory_timeout="500ms")
    error = refusal(proxy.port, pki, "alice")
    assert "access denied" in error.lower().replace("_", " "), error
    proxy.wait_for_log("reason=directory_unavailable")
    status, body = http_get(health, "/readyz")
    assert status == 503 and '"ldaps.directory":{"state":"fail"' in body


def test_directory_down_with_allow_serves(start_proxy, pki, backend):
    proxy = directory_proxy(start_proxy, pki, backend, f"ldap://127.0.0.1:{free_port()}", directory_unavailable="allow",
                            directory_timeout="500ms")
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    proxy.wait_for_log("directory unavailable, allowing")


def test_cache_hit_avoids_a_directory_round_trip(start_proxy, pki, backend, directory):
    health = free_port()
    proxy = directory_proxy(start_proxy, pki, backend, directory, health=health, workers=None)

    def counter(name):
        text = http_get(health, "/metrics")[1]
        return sum(float(v) for v in re.findall(rf'^mtls_proxy_{name}_total{{listener="ldaps"}} (\S+)$', text, re.M))
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    requests = counter("directory_requests")
    assert requests >= 1
    for _ in range(6):  # whichever worker takes them, each has cached alice after its first
        assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert counter("directory_requests") <= requests + 1
    assert counter("directory_cache_hits") >= 5


def test_removing_the_certificate_closes_the_live_connection(start_proxy, pki, backend, directory):
    pki_module.issue_client(pki, "erin")
    ldapmodify(directory, f"""dn: uid=erin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: erin
cn: erin
sn: erin
userCertificate;binary:: {base64.b64encode(der(pki, "erin")).decode()}
""", add=True)
    proxy = directory_proxy(start_proxy, pki, backend, directory, directory_cache_ttl="1s")
    live = tls_connect(proxy.port, pki, "erin")
    live.sendall(b"x")
    assert live.recv(1) == b"x"
    # The exact ldapmodify an operator runs to revoke a user:
    ldapmodify(directory, "dn: uid=erin,ou=people,dc=example,dc=com\nchangetype: modify\n"
                          "delete: userCertificate;binary\n")
    live.settimeout(10)
    received = b""
    while True:
        chunk = live.recv(4096)
        if not chunk:
            break
        received += chunk
    # the echo backend is not LDAP: the proxy closes at once, without a notice
    proxy.wait_for_log("UID=erin.*end=revoked.*no longer in the directory")
    assert "access denied" in refusal(proxy.port, pki, "erin").lower().replace("_", " ")


def test_directory_over_ldapi(start_proxy, pki, backend, tmp_path):
    # A second slapd that also listens on a unix socket, holding alice's certificate.
    folder = str(tmp_path / "slapd")
    slapd_fixture.setup(folder)
    socket_path = str(tmp_path / "ldapi")
    port = free_port()
    command = slapd_fixture.command(folder, port)
    index = command.index("-h") + 1
    encoded = socket_path.replace("/", "%2F")
    command[index] = f"ldap://127.0.0.1:{port}/ ldapi://{encoded}"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        slapd_fixture.wait_ready(port)
        put_certificate(f"ldap://127.0.0.1:{port}", "uid=alice,ou=people,dc=example,dc=com", der(pki, "alice"))
        proxy = directory_proxy(start_proxy, pki, backend, f"ldapi://{encoded}")
        assert round_trip(proxy.port, pki, "alice") == b"ping\n"
        assert "access denied" in refusal(proxy.port, pki, "bob").lower().replace("_", " ")
    finally:
        process.terminate()
        process.wait(10)


class MuteDirectory:
    """Takes the directory's searches and never answers; `asked` is set once one came."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "ldap://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.asked = threading.Event()
        self.held = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            while conn.recv(65536):
                self.asked.set()
        except OSError:
            pass

    def stop(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_revoked_while_its_directory_check_is_pending_is_refused_with_certificate_revoked(start_proxy, pki, backend,
                                                                                          crl_dir):
    """A new CRL revokes a client whose directory check has not been answered yet: it is
    refused as a new handshake would be, with the certificate_revoked alert, and nothing
    reaches the backend."""
    import ssl
    mute = MuteDirectory()
    try:
        pki_module.issue_client(pki, "fay")
        proxy = directory_proxy(start_proxy, pki, backend, mute.url, directory_timeout="8s", crl_dir=crl_dir)
        client = tls_connect(proxy.port, pki, "fay")
        assert mute.asked.wait(10), "the directory check never started"
        pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int", "fay"],
                             number=2)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
            client.recv(10)
        client.close()
        proxy.wait_for_log("UID=fay,.*end=refused reason=revoked")
        assert backend.accepted == 0
    finally:
        mute.stop()
