"""Live revocation: a CRL dropped into the folder bites within 2 seconds, on new
handshakes and on open connections, which get an LDAP Notice of Disconnection between
two complete messages. Reloads never let anyone through who should not be."""
import os
import re
import signal
import socket
import ssl
import subprocess
import threading

import pytest

import ldapwire
import pki as pki_module
from helpers import free_port, proxy_config, refusal, round_trip, tls_connect, wait_until


class LdapClient:
    """An LDAP client over the proxy's TLS, speaking just enough LDAP to search."""

    def __init__(self, port, pki, name):
        self.sock = tls_connect(port, pki, name)
        self.buffer = b""
        self.next_id = 1

    def _receive(self):
        data = self.sock.recv(65536)  # b"" only after close_notify (ragged EOFs raise)
        self.buffer += data
        return data

    def search_ok(self, attribute="uid"):
        message_id = self.next_id
        self.next_id += 1
        self.sock.sendall(ldapwire.search_request(message_id, attribute=attribute))
        while True:
            messages, self.buffer = ldapwire.split_messages(self.buffer)
            for message in messages:
                mid, op, code, _ = ldapwire.describe(message)
                if op == ldapwire.SEARCH_RESULT_DONE and mid == message_id:
                    return code == 0
            assert self._receive(), "connection closed during a search"

    def read_until_close(self, timeout):
        """Reads everything to the end: returns the complete messages and what is left."""
        self.sock.settimeout(timeout)
        while self._receive():
            pass
        return ldapwire.split_messages(self.buffer)

    def close(self):
        self.sock.close()


def assert_ends_with_notice(client, code=8):
    """Everything the client received is whole LDAP messages, and the Notice of
    Disconnection is the last of them: it came between two messages, not inside one."""
    return ldapwire.assert_whole_messages_then_notice(client.buffer, code)


def revoke(pki, crl_dir, *names, number=2):
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"),
                         ["revoked-int", *names], number=number)


@pytest.fixture
def ldap_proxy(start_proxy, pki, slapd, crl_dir):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, slapd, crl_dir=crl_dir))
    proxy.port = port
    return proxy


def test_revocation_closes_live_connections_of_that_certificate_only(ldap_proxy, pki, crl_dir):
    carol1, carol2, alice = (LdapClient(ldap_proxy.port, pki, n) for n in ["carol", "carol", "alice"])
    assert carol1.search_ok() and carol2.search_ok() and alice.search_ok()

    revoke(pki, crl_dir, "carol")
    # Rule 4: within 2 s. The read deadline is that bound plus scheduling slack.
    for client in (carol1, carol2):
        client.read_until_close(timeout=3)
        assert_ends_with_notice(client, code=8)
    assert alice.search_ok(), "a connection of another certificate was disturbed"
    assert "revoked" in refusal(ldap_proxy.port, pki, "carol").lower()
    ldap_proxy.wait_for_log("end=revoked", count=2)
    assert len(ldap_proxy.log_lines("UID=carol.*end=revoked.*Notice of Disconnection sent")) == 2
    alice.close()


def test_ldapsearch_reports_the_notice(ldap_proxy, pki, crl_dir):
    env = dict(os.environ, LDAPTLS_CACERT=f"{pki}/root-ca.pem", LDAPTLS_CERT=f"{pki}/carol.pem",
               LDAPTLS_KEY=f"{pki}/carol.key")
    # Paged results with a prompt keep ldapsearch's connection open between pages.
    process = subprocess.Popen(
        ["stdbuf", "-o0", "ldapsearch", "-x", "-H", f"ldaps://localhost:{ldap_proxy.port}", "-b",
         "dc=example,dc=com", "-E", "pr=1/prompt", "(objectClass=*)", "dn"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""
    while b"Press [size] Enter" not in output:
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, output.decode()
        output += chunk
    revoke(pki, crl_dir, "carol")
    ldap_proxy.wait_for_log("end=revoked")
    process.stdin.write(b"\n")
    process.stdin.flush()
    rest = process.communicate(timeout=20)[0].decode()
    assert "Strong(er) authentication required (8)" in rest, rest
    assert "client certificate revoked" in rest
    assert process.returncode == 8


def test_streaming_search_is_cut_between_messages(start_proxy, pki, big_slapd, crl_dir):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, big_slapd, crl_dir=crl_dir))
    client = LdapClient(port, pki, "carol")
    client.sock.sendall(ldapwire.search_request(1, attribute="objectClass"))
    client._receive()  # the stream has started; now stop reading while the CRL lands
    revoke(pki, crl_dir, "carol")
    proxy.wait_for_log("reloaded")
    # Reading again lets the proxy finish the message in flight, then send the notice.
    client.read_until_close(timeout=10)
    messages = assert_ends_with_notice(client, code=8)
    entries = sum(1 for m in messages if ldapwire.describe(m)[1] == ldapwire.SEARCH_RESULT_ENTRY)
    assert 0 < entries < 20000, f"{entries} entries: the search was not cut mid-stream"
    assert all(ldapwire.describe(m)[0] == 1 for m in messages[:-1])


class StallingLdapBackend:
    """An LDAP server that answers the first request with one whole SearchResultEntry
    and the first half of a second one, then sends nothing more: a message in flight
    that never ends, for as long as the test wants."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        second = ldapwire.search_result_entry(1, "uid=user2,ou=people,dc=example,dc=com", "description", "x" * 300)
        self.sent = ldapwire.search_result_entry(1, "uid=user1,ou=people,dc=example,dc=com", "description", "y" * 300) \
            + second[:len(second) // 2]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)  # the search request
            conn.sendall(self.sent)
            self.stop.wait(60)

    def close(self):
        self.stop.set()
        self.sock.close()


def test_notice_never_lands_inside_a_message_that_does_not_end(start_proxy, pki, crl_dir):
    # carol is revoked while half a message is in flight and its rest never comes. The
    # proxy may only wait (1 s) for the boundary, then close without a notice: a notice
    # spliced into the message would hand the client a corrupt LDAP stream.
    backend = StallingLdapBackend()
    try:
        port = free_port()
        proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
        client = LdapClient(port, pki, "carol")
        client.sock.sendall(ldapwire.search_request(1))
        while len(client.buffer) < len(backend.sent):
            assert client._receive(), "closed before the half message arrived"
        revoke(pki, crl_dir, "carol")
        client.read_until_close(timeout=10)
        assert client.buffer == backend.sent, \
            f"the proxy added {len(client.buffer) - len(backend.sent)} bytes inside the unfinished message"
        proxy.wait_for_log("UID=carol,.*end=revoked.*no LDAP message boundary within 1s, closed without notice")
    finally:
        backend.close()


def test_newer_crl_without_the_serial_lets_it_back_in(ldap_proxy, pki, crl_dir):
    revoke(pki, crl_dir, "carol", number=2)
    wait_until(lambda: "revoked" in refusal(ldap_proxy.port, pki, "carol").lower(), what="carol refused")
    revoke(pki, crl_dir, number=3)  # removeFromCRL: carol is no longer listed

    def carol_searches():
        try:
            return LdapClient(ldap_proxy.port, pki, "carol").search_ok()
        except (OSError, ssl.SSLError):
            return False
    wait_until(carol_searches, what="carol back in", timeout=5)


def test_crl_written_in_two_steps_never_lets_a_revoked_certificate_through(start_proxy, pki, backend, crl_dir):
    # best-effort: a missing CRL would let revoked-int in, so only keeping the CRL that
    # was loaded from the half-written file holds the line.
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir, crl_policy="best-effort"))
    path = os.path.join(crl_dir, "intermediate.crl")
    with open(path, "rb") as f:
        content = f.read()
    open(path, "wb").close()  # step one: truncate
    proxy.wait_for_log("keeping the CRL of CN=Intermediate CA")  # a reload saw the empty file
    for _ in range(5):
        assert "revoked" in refusal(port, pki, "revoked-int").lower()
    with open(path, "wb") as f:  # step two: write
        f.write(content)
    proxy.wait_for_log("reloaded", count=2)
    assert "revoked" in refusal(port, pki, "revoked-int").lower()
    assert round_trip(port, pki, "alice") == b"ping\n"


def move_away(crl_dir):
    os.rename(crl_dir, crl_dir + ".away")


def replace_by_a_file(crl_dir):
    move_away(crl_dir)
    with open(crl_dir, "w") as f:
        f.write("not a folder\n")


@pytest.mark.parametrize("policy", ["strict", "best-effort"])
@pytest.mark.parametrize("spoil", [move_away, replace_by_a_file], ids=["moved_away", "replaced_by_a_file"])
def test_crl_folder_that_cannot_be_read_keeps_the_crls_loaded_before(start_proxy, pki, backend, crl_dir, spoil,
                                                                      policy):
    # (As root, chmod 000 does not stop reads: the folder is moved away or replaced.)
    # A reload that read an empty folder would un-revoke everyone under best-effort and
    # refuse everyone under strict: the reload must fail and keep the state it had.
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir, crl_policy=policy))
    assert "revoked" in refusal(port, pki, "revoked-int").lower()
    spoil(crl_dir)
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_log(r"reload failed|\breloaded\b")  # the reload ran, whatever came of it
    for name in ["revoked-int", "revoked-root"]:
        error = refusal(port, pki, name)
        assert "certificate revoked" in error.lower().replace("_", " "), error
    assert round_trip(port, pki, "alice") == b"ping\n"
    assert round_trip(port, pki, "bob") == b"ping\n"
    assert proxy.log_lines(f"reload failed, keeping the previous state.*{re.escape(crl_dir)}: cannot read the CRL folder")
    assert not proxy.log_lines(r"\breloaded\b"), "a reload went through without the CRL folder"


def test_revoking_the_intermediate_closes_the_live_connections_under_it(start_proxy, pki, backend, crl_dir):
    # The root's new CRL revokes the intermediate CA: alice's connection (her chain runs
    # through it) is closed, bob's (issued by the root) is not.
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    alice, bob = tls_connect(port, pki, "alice"), tls_connect(port, pki, "bob")
    for client in (alice, bob):
        client.sendall(b"hi\n")
        assert client.recv(10) == b"hi\n"
    pki_module.write_crl(pki, "root", os.path.join(crl_dir, "root.crl"), ["revoked-root", "intermediate-ca"], number=2)
    proxy.wait_for_log("UID=alice,.*end=revoked")
    alice.settimeout(5)
    while alice.recv(4096):  # to the close_notify; a timeout here means it stayed open
        pass
    bob.sendall(b"still\n")
    assert bob.recv(10) == b"still\n"
    assert "certificate revoked" in refusal(port, pki, "carol").lower().replace("_", " ")
    alice.close()
    bob.close()


def test_forged_crl_at_run_time_changes_nothing(start_proxy, pki, backend, crl_dir):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    live = tls_connect(port, pki, "alice")
    # The genuine issuer's name and key identifier: only the signature gives it away.
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "zz-forged.crl"), ["alice"],
                         number=10**9, forged="impersonate")
    proxy.wait_for_log(r"\breloaded\b")  # the folder with the forgery was read
    live.sendall(b"still here\n")
    assert live.recv(100) == b"still here\n"
    assert round_trip(port, pki, "alice") == b"ping\n"
    assert "revoked" in refusal(port, pki, "revoked-int").lower()
    assert proxy.log_lines("zz-forged.crl: CRL 1 ignored: its signature does not verify")
    live.close()


def test_500_handshakes_while_the_crl_folder_is_rewritten_50_times(start_proxy, pki, backend, crl_dir):
    # Handshakes run without pause; each rewrite waits until the previous one has been
    # reloaded and some handshakes went through since, so that every one of the 50
    # reloads happens while handshakes are in flight. (Pacing by handshakes alone let
    # a fast run finish all 50 writes inside one debounce window: a single reload.)
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    results, stop = [], threading.Event()

    def handshakes():
        i = 0
        while not stop.is_set() or i < 500:
            try:
                results.append(round_trip(port, pki, ["alice", "bob"][i % 2], b"x") == b"x")
            except (OSError, ssl.SSLError) as e:
                results.append(repr(e))
            i += 1

    worker = threading.Thread(target=handshakes)
    worker.start()
    try:
        for rewrite in range(50):
            done = len(results)
            wait_until(lambda: len(results) >= done + 3, timeout=30, what="handshakes between two reloads")
            issuer = ["root", "intermediate"][rewrite % 2]
            pki_module.write_crl(pki, issuer, os.path.join(crl_dir, f"{issuer}.crl"),
                                 pki_module.REVOKED[issuer], number=100 + rewrite)
            proxy.wait_for_log('reloaded .*reason="files changed', count=rewrite + 1)
    finally:
        stop.set()
        worker.join(120)
    failures = [r for r in results if r is not True]
    assert len(results) >= 500 and not failures, failures[:5]
    assert "revoked" in refusal(port, pki, "revoked-int").lower()


def test_crl_that_expires_while_running_flips_strict_to_refusal(start_proxy, pki, backend, crl_dir):
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int"],
                         next_update_seconds=3)
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir))
    assert round_trip(port, pki, "alice") == b"ping\n"
    wait_until(lambda: "certificate unknown" in refusal(port, pki, "alice").lower().replace("_", " "),
               timeout=15, interval=0.2, what="alice refused once the CRL is stale")
    proxy.wait_for_log("reason=crl_expired")
    proxy.wait_for_log("CRL is past its nextUpdate")
    assert round_trip(port, pki, "bob") == b"ping\n"  # the root's CRL is still current


def test_kubernetes_style_folder_swap(start_proxy, pki, backend, tmp_path):
    # Files are links into ..data, a link to a timestamped folder that is swapped whole.
    crl_dir = tmp_path / "mounted"
    crl_dir.mkdir()

    def publish(version, revoked_int):
        folder = crl_dir / f"..{version}"
        folder.mkdir()
        pki_module.write_crl(pki, "root", str(folder / "root.crl"), pki_module.REVOKED["root"], number=version)
        pki_module.write_crl(pki, "intermediate", str(folder / "intermediate.crl"), revoked_int, number=version)
        os.symlink(folder.name, crl_dir / "..data_tmp")
        os.rename(crl_dir / "..data_tmp", crl_dir / "..data")

    publish(1, ["revoked-int"])
    for name in ["root.crl", "intermediate.crl"]:
        os.symlink(f"..data/{name}", crl_dir / name)
    port = free_port()
    start_proxy(proxy_config(pki, port, backend.address, crl_dir=str(crl_dir)))
    assert round_trip(port, pki, "carol") == b"ping\n"
    publish(2, ["revoked-int", "carol"])
    wait_until(lambda: "revoked" in refusal(port, pki, "carol").lower(), timeout=5, what="carol refused")
    assert round_trip(port, pki, "alice") == b"ping\n"


def test_server_certificate_file_change_reloads_without_sighup(start_proxy, pki, backend, tmp_path):
    import shutil

    from cryptography import x509
    for name in ["server.pem", "server.key"]:
        shutil.copy(os.path.join(pki, name), tmp_path / name)
    port = free_port()
    text = proxy_config(pki, port, backend.address).replace(f"{pki}/server.pem", str(tmp_path / "server.pem")) \
        .replace(f"{pki}/server.key", str(tmp_path / "server.key"))
    start_proxy(text)
    # Key first, then certificate, each replaced atomically: between the two a reload
    # may fail (mismatch) and keep the old pair; the final state must be the new pair.
    cert = pki_module.reissue_server(pki, str(tmp_path / "server.pem"), str(tmp_path / "server.key"))

    def serial():
        with tls_connect(port, pki, "alice") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number
    wait_until(lambda: serial() == cert.serial_number, timeout=5, what="new certificate served")


def test_shutdown_grace_end_sends_notice_unavailable(start_proxy, pki, slapd):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, slapd, globals_={"shutdown_grace": "1s"}))
    client = LdapClient(port, pki, "alice")
    assert client.search_ok()
    proxy.signal(signal.SIGTERM)
    client.read_until_close(timeout=10)
    assert_ends_with_notice(client, code=52)
    assert proxy.process.wait(10) == 0
