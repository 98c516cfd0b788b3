"""Shared pieces of the tests of LDAP-aware listeners (`tls = starttls`, `client_auth =
sasl-external | certificate`): the authz slapd seen from the side (as its rootdn, bypassing
the proxy), the proxy's config, the OpenLDAP tools with a client certificate, and a raw
LDAP session (ldapwire) over LDAPS or StartTLS for what the tools cannot send."""
import os
import re
import socket
import ssl
import subprocess
import uuid

import ldapwire
import slapd_fixture
from helpers import client_context, proxy_config, wait_until

SUFFIX = slapd_fixture.SUFFIX


def user_dn(name):
    return f"uid={name},ou=people,{SUFFIX}"


ALICE, BOB, CAROL = user_dn("alice"), user_dn("bob"), user_dn("carol")


class AuthzDirectory:
    """The authz slapd: where it listens, the proxy's identity there, and its stats log."""

    def __init__(self, address, bind_dn, password_file, log):
        self.address, self.bind_dn, self.password_file, self.log_path = address, bind_dn, password_file, log

    def read(self, dn, attribute):
        """The values of `attribute` of `dn`, read directly from slapd as its rootdn."""
        result = subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", f"ldap://{self.address}", "-D",
             slapd_fixture.ROOT_DN, "-w", slapd_fixture.ROOT_PW, "-s", "base", "-b", dn, "(objectClass=*)",
             attribute], capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr.decode()
        prefix = f"{attribute.lower()}: "
        return [line[len(prefix):] for line in result.stdout.decode().splitlines() if line.lower().startswith(prefix)]

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def seen_since(self, start, session):
        """What slapd logged from offset `start` up to a marker search sent now through
        `session`: the proxy forwards a connection's requests in order, so whatever it
        forwarded before the marker is in the text returned."""
        marker = f"marker-{uuid.uuid4().hex[:12]}"
        session.search(marker, "uid")
        wait_until(lambda: marker in self.log()[start:], what=f"slapd to log the marker search {marker}")
        text = self.log()[start:]
        return text[:text.index(marker)]


def authz_config(pki, port, directory, client_auth="sasl-external", tls=None, password_file=None, **extra):
    """A listener with client_auth in front of the authz slapd, bound there as the proxy."""
    return proxy_config(pki, port, directory.address, tls=tls, client_auth=client_auth,
                        backend_bind_dn=directory.bind_dn,
                        backend_bind_password_file=password_file or directory.password_file, **extra)


def ldap_tool(tool, port, pki, name, *args, starttls=False, external=True, stdin=None):
    """Runs an OpenLDAP tool (ldapwhoami, ldapsearch, ldapmodify) through the proxy with
    `name`'s certificate: LDAPS, or ldap:// with -ZZ (StartTLS, which must succeed).
    external: bind with SASL EXTERNAL (-Y EXTERNAL); otherwise the args say how (-x...)."""
    env = dict(os.environ, LDAPTLS_CACERT=f"{pki}/root-ca.pem", LDAPTLS_REQCERT="demand")
    if name:
        env.update(LDAPTLS_CERT=f"{pki}/{name}.pem", LDAPTLS_KEY=f"{pki}/{name}.key")
    url = f"ldap://localhost:{port}" if starttls else f"ldaps://localhost:{port}"
    cmd = [tool, "-H", url, "-o", "nettimeout=10"] + (["-ZZ"] if starttls else [])
    cmd += (["-Y", "EXTERNAL", "-Q"] if external else []) + list(args)
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30, input=stdin)


def ldap_plain(tool, port, *args):
    """An OpenLDAP tool on plain ldap://, no TLS at all."""
    return subprocess.run([tool, "-H", f"ldap://127.0.0.1:{port}", "-o", "nettimeout=10", *args],
                          capture_output=True, timeout=30)


def modify_ldif(dn, attribute, value):
    return f"dn: {dn}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n".encode()


def output(result):
    return result.stdout.decode() + result.stderr.decode()


class Session:
    """A raw LDAP session with `name`'s certificate: "implicit" (LDAPS), "starttls" (the
    StartTLS request, then TLS on the same socket) or "plain" (no TLS; start_tls() later)."""

    def __init__(self, port, pki=None, name=None, mode="implicit", timeout=10):
        self.pki, self.name, self.buffer, self.next_id = pki, name, b"", 1
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "implicit":
            self._wrap()
        elif mode == "starttls":
            code = self.start_tls()
            assert code == 0, f"StartTLS answered {code}"

    def _wrap(self):
        self.sock = client_context(self.pki, self.name).wrap_socket(self.sock, server_hostname="localhost",
                                                                    suppress_ragged_eofs=False)

    def new_id(self):
        self.next_id += 1
        return self.next_id - 1

    def start_tls(self):
        """Sends the StartTLS request; on success, does the TLS handshake. Its resultCode."""
        response = self.request(ldapwire.extended(self.new_id(), ldapwire.START_TLS))[-1]
        code = ldapwire.describe(response)[2]
        if code == 0:
            assert self.buffer == b"", "bytes after the StartTLS response, before TLS"
            self._wrap()
        return code

    def receive(self):
        """One more chunk into the buffer; b"" at the end (close_notify or FIN)."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            data = b""
        self.buffer += data
        return data

    def request(self, message):
        """Sends one request; returns every message up to its final response (entries,
        references and the result), with the same messageID."""
        self.sock.sendall(message)
        return self.responses(ldapwire.describe(message)[0])

    def responses(self, message_id):
        found = []
        while True:
            messages, self.buffer = ldapwire.split_messages(self.buffer)
            for index, received in enumerate(messages):
                mid, op, _, name = ldapwire.describe(received)
                assert name != ldapwire.NOTICE_OF_DISCONNECTION, f"Notice of Disconnection: {received.hex()}"
                assert mid == message_id, f"a response to {mid} while waiting for {message_id}"
                found.append(received)
                if op in ldapwire.RESULT_OPS:
                    rest = b"".join(messages[index + 1:])
                    self.buffer = rest + self.buffer
                    return found
            assert self.receive(), f"connection closed while waiting for the response to {message_id}"

    def pipeline(self, requests):
        """Sends all `requests` in one write, without waiting; returns {messageID: its
        messages} once each has its final response (an LDAPResult or a notice ends it)."""
        self.sock.sendall(b"".join(requests))
        waiting = {ldapwire.describe(r)[0] for r in requests}
        answers = {mid: [] for mid in waiting}
        while waiting:
            messages, self.buffer = ldapwire.split_messages(self.buffer)
            for received in messages:
                mid, op, _, name = ldapwire.describe(received)
                assert name != ldapwire.NOTICE_OF_DISCONNECTION, f"Notice of Disconnection: {received.hex()}"
                answers[mid].append(received)
                if op in ldapwire.RESULT_OPS:
                    waiting.discard(mid)
            if waiting:
                try:
                    received = self.receive()
                except TimeoutError:
                    received = None
                answered = {mid: [ldapwire.describe(m) for m in got] for mid, got in answers.items()}
                assert received is not None, f"no response to {sorted(waiting)} in time; answered: {answered}"
                assert received, f"connection closed while {sorted(waiting)} had no response; answered: {answered}"
        return answers

    def result(self, message):
        """Sends one request; the resultCode of its response."""
        return ldapwire.describe(self.request(message)[-1])[2]

    def bind_external(self, authzid=""):
        """SASL EXTERNAL with `authzid` as its credentials (None: no credentials at all)."""
        return self.result(ldapwire.sasl_bind(self.new_id(), "EXTERNAL", authzid))

    def bind_simple(self, dn="", password=""):
        return self.result(ldapwire.simple_bind(self.new_id(), dn, password))

    def whoami(self):
        """Who am I?: the authzId ("dn:...", "" for anonymous); asserts success."""
        response = self.request(ldapwire.extended(self.new_id(), ldapwire.WHO_AM_I))[-1]
        assert ldapwire.describe(response)[2] == 0, response.hex()
        return ldapwire.extended_value(response) or ""

    def search(self, uid, attribute, controls=()):
        """(resultCode, values of `attribute` in the entry of `uid`, None if no entry)."""
        messages = self.request(ldapwire.search_equal(self.new_id(), "uid", uid, [attribute], controls=controls))
        values = None
        for received in messages[:-1]:
            if ldapwire.describe(received)[1] == ldapwire.SEARCH_RESULT_ENTRY:
                values = ldapwire.entry_attributes(received)[1].get(attribute.lower(), [])
        return ldapwire.describe(messages[-1])[2], values

    def modify(self, dn, attribute, value, controls=()):
        return self.result(ldapwire.modify_replace(self.new_id(), dn, attribute, value, controls))

    def read_until_close(self, timeout=10):
        """Reads to the end; returns the complete messages and the bytes left over."""
        self.sock.settimeout(timeout)
        while self.receive():
            pass
        return ldapwire.split_messages(self.buffer)

    def close(self):
        self.sock.close()


def whoami_dn(text):
    """ldapwhoami's output, normalised for comparison: slapd prints the DN as given."""
    return re.sub(r"\s+", "", text).lower()
