#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (Tests/fuzz/corpus/TARGET/).

    Tests/fuzz/make-seeds.py

The LDAP seeds are real traffic: a throw-away slapd (scripts/slapd_fixture.py) and
ldapsearch/ldapmodify talking to it through a recording relay on loopback. The others
are written out here. Run it again only to change the seeds; their names are stable.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import slapd_fixture  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A loopback relay in front of slapd that keeps both directions of one connection."""

    def __init__(self, backend_port):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.backend_port = backend_port

    def record(self, command):
        streams = {"client": bytearray(), "server": bytearray()}

        def pump(source, sink, key):
            while data := source.recv(65536):
                streams[key] += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

        def serve():
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.backend_port))
            threads = [threading.Thread(target=pump, args=(client, server, "client")),
                       threading.Thread(target=pump, args=(server, client, "server"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            client.close()
            server.close()

        thread = threading.Thread(target=serve)
        thread.start()
        # ldapsearch exits non-zero on noSuchObject and sizeLimitExceeded: the bytes are what we want
        subprocess.run(command, capture_output=True, timeout=30)
        thread.join(timeout=30)
        return bytes(streams["client"]), bytes(streams["server"])


def ldap_seeds():
    work = tempfile.mkdtemp(prefix="mtls-fuzz-seeds-")
    port = free_port()
    slapd_fixture.setup(work)
    slapd = subprocess.Popen(slapd_fixture.command(work, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        slapd_fixture.wait_ready(port)
        recorder = Recorder(port)
        url = f"ldap://127.0.0.1:{recorder.port}"
        cert = os.path.join(work, "alice.der")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", os.path.join(work, "alice.key"), "-subj", "/CN=alice", "-days", "1",
                        "-outform", "DER", "-out", cert], check=True, capture_output=True)
        ldif = os.path.join(work, "modify.ldif")
        with open(ldif, "w") as f:
            f.write(f"dn: uid=alice,ou=people,dc=example,dc=com\nchangetype: modify\n"
                    f"add: userCertificate;binary\nuserCertificate;binary:< file://{cert}\n")
        base = slapd_fixture.SUFFIX
        runs = {
            "modify-cert": ["ldapmodify", "-x", "-H", url, "-D", slapd_fixture.ROOT_DN, "-w", slapd_fixture.ROOT_PW,
                            "-f", ldif],
            "search-cert": ["ldapsearch", "-x", "-H", url, "-D", slapd_fixture.ROOT_DN, "-w", slapd_fixture.ROOT_PW,
                            "-b", base, "(uid=alice)", "userCertificate;binary"],
            "search-people": ["ldapsearch", "-x", "-H", url, "-b", "ou=people," + base, "(objectClass=inetOrgPerson)"],
            "search-missing": ["ldapsearch", "-x", "-H", url, "-b", "ou=nobody," + base, "-s", "base"],
            "search-sizelimit": ["ldapsearch", "-x", "-H", url, "-b", base, "-z", "1", "(uid=*)", "dn"],
            # What clients send to a message-aware listener: a Who am I?, a forged proxied
            # authorization control, a paged search.
            "whoami": ["ldapwhoami", "-x", "-H", url],
            "forged-authz": ["ldapsearch", "-x", "-H", url, "-e", "!authzid=dn:uid=bob,ou=people," + base, "-b", base, "-s", "base"],
            "paged": ["ldapsearch", "-x", "-H", url, "-E", "pr=2/noprompt", "-b", base, "(uid=*)", "dn"],
        }
        for name, command in runs.items():
            client, server = recorder.record(command)
            assert server, f"{name}: slapd sent nothing"
            write("ldap-decode", f"slapd-{name}", server)
            write("ldap-framer", f"slapd-{name}", server)
            write("ldap-framer", f"ldapsearch-{name}", client)
            write("ldap-request", f"client-{name}", client)
    finally:
        slapd.terminate()
        slapd.wait()
        shutil.rmtree(work, ignore_errors=True)


def other_seeds():
    with open(os.path.join(REPO, "proxy.conf.example")) as f:
        write("config", "proxy.conf.example", f.read())
    write("config", "minimal", "[ldaps]\nlisten = 127.0.0.1:636\nbackend = 127.0.0.1:389\ncert = server.pem\n"
                               "key = server.key\nca_bundle = ca.pem\n")
    write("config", "two-listeners",
          "workers = 2\nlog_format = json\nhealth_listen = [::1]:9090\nshutdown_grace = 500ms\n\n"
          "[a]\nlisten = [::]:636\nbackend = unix:/run/slapd/ldapi\ncert = /c.pem\nkey = /k.pem\nca_bundle = ca.pem\n"
          "crl_dir = crl  # comment\ncrl_policy = best-effort\nallow_subject = UID=alice,OU=people;CN=b*\n"
          "allow_cn = alice, bob\nproxy_protocol = v2\nticket_key_file = tk\n\n"
          "[b]\nlisten = 0.0.0.0:1636\nbackend = ldap.example.com:389\ncert = c\nkey = k\nca_bundle = ca\n"
          "idle_timeout = 0\nmax_connections = 5\n")
    write("config", "directory",
          "[ldaps]\nlisten = 127.0.0.1:636\nbackend = 127.0.0.1:389\ncert = s.pem\nkey = s.key\nca_bundle = ca.pem\n"
          "verify_cert_in_directory = yes\ncert_map = search\ncert_map_base = ou=people,dc=example,dc=com\n"
          "cert_map_filter = (&(objectClass=inetOrgPerson)(uid={uid}))\n"
          "directory_url = ldapi://%2Frun%2Fslapd%2Fldapi\ndirectory_bind_dn = cn=proxy,dc=example,dc=com\n"
          "directory_bind_password_file = pw\ndirectory_timeout = 2s\ndirectory_cache_ttl = 1m\n"
          "directory_unavailable = allow\n")

    write("http-head", "curl-healthz", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:9090\r\nUser-Agent: curl/7.88.1\r\n"
                                       "Accept: */*\r\n\r\n")
    write("http-head", "readyz-query", "GET /readyz?verbose=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    write("http-head", "head-metrics", "HEAD /metrics HTTP/1.0\r\n\r\n")
    write("http-head", "post-body", "POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    write("http-head", "partial", "GET /healthz HTTP/1.1\r\nHost: x\r\n")
    # What openssl ocsp and Python's http.server answer (the OCSP body shortened).
    write("http-reply", "openssl-ocsp", b"HTTP/1.0 200 OK\r\nContent-type: application/ocsp-response\r\n"
                                        b"Content-Length: 5\r\n\r\n0\x82\x01\x00\n")
    write("http-reply", "chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")
    write("http-reply", "not-modified", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
    write("http-reply", "close-framed", "HTTP/1.0 500 Internal Server Error\r\nServer: x\r\n\r\noops")
    write("http-reply", "url", "http://[::1]:8080/ocsp?x=1")

    for name, text in {
        "uid": "(uid=alice)",
        "and-template": "(&(objectClass=inetOrgPerson)(uid=alice))",
        "or-not-substrings": "(|(cn=Al*ce*Ex*)(!(mail=*))(cn=*x))",
        "ordering-approx": "(&(uidNumber>=1000)(uidNumber<=2000)(cn~=alice))",
        "escapes": "(userCertificate;binary=\\30\\82\\01\\2a)",
        "empty-and": "(&)",
    }.items():
        write("ldap-filter", name, text)

    v4 = bytes([127, 0, 0, 1])
    write("proxy-v2", "ipv4-tls13-cn", bytes([0x33]) + v4 + (51234).to_bytes(2, "big") + v4 + (636).to_bytes(2, "big")
          + bytes([6]) + b"TLS1.3" + b"alice")
    v6 = bytes(15) + b"\x01"
    write("proxy-v2", "ipv6-tls12", bytes([0x17]) + v6 + (40000).to_bytes(2, "big") + v6 + (636).to_bytes(2, "big")
          + bytes([6]) + b"TLS1.2")
    write("proxy-v2", "mixed-long-cn", bytes([0x2b]) + v4 + b"\x01\x02" + v6 + b"\x02\x7c" + "Ünïcode ".encode() * 12)
    write("proxy-v2", "no-address", bytes([0x30, 7]) + b"TLS1.3" + b"bob")

    # Inbound PROXY headers as balancers send them, some with the TLS bytes after them.
    write("proxy-header", "v1-tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 636\r\n\x16\x03\x01")
    write("proxy-header", "v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 636\r\n")
    write("proxy-header", "v1-unknown", b"PROXY UNKNOWN\r\n")
    signature = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
    body = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + (51234).to_bytes(2, "big") + (636).to_bytes(2, "big") \
        + bytes([0x20, 0, 5, 7, 0, 0, 0, 0])
    write("proxy-header", "v2-tcp4", signature + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body + b"\x16\x03\x01")
    write("proxy-header", "v2-local", signature + bytes([0x20, 0x00, 0, 0]))
    body6 = bytes(range(32)) + (1).to_bytes(2, "big") + (2).to_bytes(2, "big")
    write("proxy-header", "v2-tcp6", signature + bytes([0x21, 0x21]) + len(body6).to_bytes(2, "big") + body6)


def crl_seeds():
    """CRLs as `openssl ca -gencrl` writes them (scripts/realpki.py): reason codes on
    every entry, with and without an authority key identifier, DER and PEM, one PEM file
    holding two CRLs, and one with openssl's -text dump before its PEM block."""
    import realpki
    work = tempfile.mkdtemp(prefix="crl-seeds-")
    try:
        root = realpki.CA(os.path.join(work, "root"), "Seed Root", "p384")
        inter = realpki.CA(os.path.join(work, "int"), "Seed Int", "p384", parent=root)
        for name in ["a", "b", "c"]:
            cert, _ = inter.issue(os.path.join(work, "clients"), name)
            inter.revoke(cert, reason="keyCompromise" if name != "b" else "superseded")
        root.revoke(inter.cert, reason="cACompromise")
        crls = {"int": inter.gencrl(os.path.join(work, "int.crl")),
                "int-no-aki": inter.gencrl(os.path.join(work, "int-noaki.crl"), aki=False),
                "root": root.gencrl(os.path.join(work, "root.crl")),
                "root-empty": root.gencrl(os.path.join(work, "root-empty.crl"), empty=True)}
        for name, path in crls.items():
            der = subprocess.run(["openssl", "crl", "-in", path, "-outform", "DER"], check=True,
                                 capture_output=True).stdout
            write("crl", f"openssl-{name}-der", der)
        with open(crls["int"], "rb") as f:
            pem = f.read()
        with open(crls["root"], "rb") as f:
            write("crl", "openssl-two-in-one-pem", pem + f.read())
        text = subprocess.run(["openssl", "crl", "-in", crls["int-no-aki"], "-text"], check=True,
                              capture_output=True).stdout
        write("crl", "openssl-text-and-pem", text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    other_seeds()
    crl_seeds()
    ldap_seeds()
