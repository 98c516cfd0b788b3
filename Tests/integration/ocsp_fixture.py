"""OCSP for the integration tests: a PKI whose client certificates name an OCSP responder
(AIA) on 127.0.0.1, a real `openssl ocsp` responder, and small Python HTTP servers in
front of it or instead of it (counting requests, answering slowly or never, serving
answers made to be wrong: stale, about another certificate).

Never probe `openssl ocsp` with a bare TCP connect: OpenSSL 3.0's responder spins and
stops answering after a connection that closes without a request. It is ready when a
real OCSP request gets an answer."""
import datetime
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

import pki as pki_module
from helpers import free_port, wait_until

UTC = datetime.timezone.utc


def _index_date(when):
    return when.strftime("%y%m%d%H%M%SZ")


class OCSPPKI:
    """Client certificates of the session PKI's intermediate CA that carry an OCSP URL
    (AIA) pointing at `port` on 127.0.0.1, the responder certificates, and the index
    file `openssl ocsp` reads. Names: good, revoked, unknown (not in the index), and
    more made with `client()`."""

    def __init__(self, pki, folder, port=None):
        self.pki = pki
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.inter, self.inter_key = pki_module.load(pki, "intermediate-ca")
        self.index = os.path.join(folder, "index.txt")
        self.entries = []
        # The delegated responder: issued by the intermediate for OCSPSigning.
        self.responder = self._responder("responder", [ExtendedKeyUsageOID.OCSP_SIGNING])
        # One the intermediate issued without the OCSPSigning purpose: not a responder.
        self.not_responder = self._responder("not-responder", [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.stranger_ca = os.path.join(pki, "stranger-ca.pem")
        self.stranger_key = os.path.join(pki, "stranger-ca.key")
        self.issuer = os.path.join(pki, "intermediate-ca.pem")
        for name in ("good", "revoked", "unknown"):
            self.client(name, status={"good": "V", "revoked": "R", "unknown": None}[name])
        # Good, but its AIA names a port where nothing listens. (openssl ocsp reads its
        # index once: every certificate it answers for is made before it starts.)
        self.client("elsewhere", status="V", ocsp_url=f"http://127.0.0.1:{free_port()}/")
        # Good for OCSP, but revoked by a CRL (CRLs and OCSP together: both must pass).
        self.client("crl-revoked", status="V")

    def path(self, name, ext="pem"):
        return os.path.join(self.folder, f"{name}.{ext}")

    def _responder(self, name, eku):
        key = pki_module.new_key()
        cert = pki_module.make_cert(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, f"OCSP {name}")]),
                                    key, self.inter, self.inter_key, eku=eku)
        pki_module.write_pem(self.path(name), cert)
        pki_module.write_key(self.path(name, "key"), key)
        return self.path(name)

    def client(self, name, status="V", ocsp_url=None):
        """A client certificate whose AIA names `ocsp_url` (default: this PKI's
        responder); status V (good) or R (revoked) goes into the index, None leaves it
        out (the responder then says unknown)."""
        key = pki_module.new_key()
        cert = pki_module.make_cert(pki_module.subject_for(f"ocsp-{name}"), key, self.inter, self.inter_key,
                                    ocsp_url=ocsp_url or self.url)
        # The client sends its chain: leaf and intermediate.
        pki_module.write_pem(self.path(name), cert, self.inter)
        pki_module.write_key(self.path(name, "key"), key)
        if status:
            now = datetime.datetime.now(UTC)
            revoked = _index_date(now - datetime.timedelta(hours=1)) if status == "R" else ""
            subject = "/DC=com/DC=example/OU=people/UID=ocsp-" + name
            serial = f"{cert.serial_number:X}"
            serial = "0" * (len(serial) % 2) + serial  # as OpenSSL prints serials: whole bytes
            self.entries.append(f"{status}\t{_index_date(cert.not_valid_after_utc)}\t{revoked}\t"
                                f"{serial}\tunknown\t{subject}\n")
            with open(self.index, "w") as f:
                f.writelines(self.entries)
            with open(self.index + ".attr", "w") as f:
                f.write("unique_subject = no\n")
        return cert

    def cert(self, name):
        with open(self.path(name), "rb") as f:
            return x509.load_pem_x509_certificate(f.read())


class OpenSSLResponder:
    """A real `openssl ocsp` responder on 127.0.0.1:port, signing with `rsigner`."""

    def __init__(self, opki, port=None, rsigner=None, rkey=None, ca=None, extra=(), ready_with="good"):
        self.port = port or opki.port
        self.url = f"http://127.0.0.1:{self.port}/"
        rsigner = rsigner or opki.responder
        rkey = rkey or rsigner[:-4] + ".key"
        self.log_path = os.path.join(opki.folder, f"responder-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["openssl", "ocsp", "-index", opki.index, "-port", str(self.port), "-rsigner", rsigner, "-rkey", rkey,
             "-CA", ca or opki.issuer, "-ignore_err", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.opki = opki
        wait_until(lambda: self.answers(opki.path(ready_with)), timeout=15, what=f"openssl ocsp on {self.port}")

    def answers(self, cert_path):
        """A real OCSP request (what readiness means for this responder)."""
        if self.process.poll() is not None:
            raise AssertionError(f"openssl ocsp exited: {open(self.log_path).read()}")
        result = subprocess.run(["openssl", "ocsp", "-issuer", self.opki.issuer, "-cert", cert_path, "-url", self.url,
                                 "-noverify", "-no_nonce", "-timeout", "2"], capture_output=True, timeout=10)
        return result.returncode == 0 and b"This Update" in result.stdout

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class HTTPResponderFront:
    """A Python HTTP server that counts the OCSP requests it gets and answers them by
    `handler(body) -> (status, bytes)`: forwarding to a real responder, serving an
    answer made in advance, delaying, failing."""

    def __init__(self, handler, delay=0.0):
        self.handler = handler
        self.delay = delay
        self.requests = 0
        self.lock = threading.Lock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with front.lock:
                    front.requests += 1
                if front.delay:
                    time.sleep(front.delay)
                status, answer = front.handler(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def forward_to(url):
    """A handler that passes the request to a real responder and returns its answer."""
    def handler(body):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/ocsp-request"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    return handler


def made_answer(opki, about, signer_cert, signer_key, status=ocsp.OCSPCertStatus.GOOD, this_update=None,
                next_update=None):
    """The DER of an OCSP answer about certificate `about`, made with Python's
    cryptography: any dates, any signer."""
    now = datetime.datetime.now(UTC)
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=about, issuer=opki.inter, algorithm=hashes.SHA1(), cert_status=status,
        this_update=this_update or now - datetime.timedelta(minutes=1),
        next_update=next_update or now + datetime.timedelta(hours=1),
        revocation_time=now - datetime.timedelta(hours=1) if status == ocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
    if signer_cert is not opki.inter:
        builder = builder.certificates([signer_cert])
    return builder.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class SilentServer:
    """Accepts connections and never answers (a responder hung past ocsp_timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.held = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self):
        self.closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class ChainPKI:
    """For `ocsp = chain`: an intermediate CA ("chain-int", issued by the session PKI's
    root, sent by the clients, not in ca_bundle) whose AIA names the root's responder,
    and leaves of it whose AIA names the intermediate's responder. Each responder is a
    real `openssl ocsp` with its own index and a delegated responder certificate of its
    own CA. `revoked_int` makes a second intermediate that the root's index revokes."""

    def __init__(self, pki, folder):
        self.pki = pki
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.root, self.root_key = pki_module.load(pki, "root-ca")
        self.root_port, self.int_port = free_port(), free_port()
        self.root_url = f"http://127.0.0.1:{self.root_port}/"
        self.int_url = f"http://127.0.0.1:{self.int_port}/"
        self.root_index, self.int_index = [], []
        self.intermediates = {}
        self.root_ca = os.path.join(pki, "root-ca.pem")
        for name, status in (("chain-int", "V"), ("chain-int-revoked", "R")):
            key = pki_module.new_key()
            cert = pki_module.make_cert(pki_module.ca_name(name), key, self.root, self.root_key, ca=True, path_len=0,
                                        ocsp_url=self.root_url)
            pki_module.write_pem(self.path(name), cert)
            pki_module.write_key(self.path(name, "key"), key)
            self.intermediates[name] = (cert, key)
            self.root_index.append(_index_line(status, cert, f"/O=mtls-proxy test/CN={name} CA"))
        self.root_responder = self._responder("root-responder", self.root, self.root_key)
        self.int_responder = self._responder("int-responder", *self.intermediates["chain-int"])
        self.leaf("leaf", "chain-int")
        self.leaf("leaf-under-revoked", "chain-int-revoked")
        self._write("root-index.txt", self.root_index)
        self._write("int-index.txt", self.int_index)

    def path(self, name, ext="pem"):
        return os.path.join(self.folder, f"{name}.{ext}")

    def _write(self, name, lines):
        with open(self.path(name, "")[:-1], "w") as f:
            f.writelines(lines)
        with open(self.path(name, "")[:-1] + ".attr", "w") as f:
            f.write("unique_subject = no\n")

    def _responder(self, name, issuer, issuer_key):
        key = pki_module.new_key()
        cert = pki_module.make_cert(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)]), key, issuer,
                                    issuer_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
        pki_module.write_pem(self.path(name), cert)
        pki_module.write_key(self.path(name, "key"), key)
        return self.path(name)

    def leaf(self, name, issuer_name):
        issuer, issuer_key = self.intermediates[issuer_name]
        key = pki_module.new_key()
        cert = pki_module.make_cert(pki_module.subject_for(name), key, issuer, issuer_key, ocsp_url=self.int_url)
        pki_module.write_pem(self.path(name), cert, issuer)
        pki_module.write_key(self.path(name, "key"), key)
        self.int_index.append(_index_line("V", cert, f"/UID={name}"))

    def start(self):
        """Both responders; returns them (stop each)."""
        root = _Responder(self.root_port, os.path.join(self.folder, "root-index.txt"), self.root_responder,
                          self.root_ca, self.folder, check=(self.root_ca, self.path("chain-int")))
        inner = _Responder(self.int_port, os.path.join(self.folder, "int-index.txt"), self.int_responder,
                           self.path("chain-int"), self.folder, check=(self.path("chain-int"), self.path("leaf")))
        return root, inner


def _index_line(status, cert, subject):
    now = datetime.datetime.now(UTC)
    revoked = _index_date(now - datetime.timedelta(hours=1)) if status == "R" else ""
    serial = f"{cert.serial_number:X}"
    serial = "0" * (len(serial) % 2) + serial
    return f"{status}\t{_index_date(cert.not_valid_after_utc)}\t{revoked}\t{serial}\tunknown\t{subject}\n"


class _Responder:
    """`openssl ocsp` with an index, a signer and the CA(s) it answers for; ready once a
    real request about `check` (issuer, certificate) is answered."""

    def __init__(self, port, index, rsigner, ca, folder, check):
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = os.path.join(folder, f"responder-{port}.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["openssl", "ocsp", "-index", index, "-port", str(port), "-rsigner", rsigner, "-rkey", rsigner[:-4] + ".key",
             "-CA", ca, "-ignore_err"], stdout=self.log, stderr=subprocess.STDOUT)

        def answers():
            if self.process.poll() is not None:
                raise AssertionError(f"openssl ocsp exited: {open(self.log_path).read()}")
            result = subprocess.run(["openssl", "ocsp", "-issuer", check[0], "-cert", check[1], "-url", self.url,
                                     "-noverify", "-no_nonce", "-timeout", "2"], capture_output=True, timeout=10)
            return result.returncode == 0 and b"This Update" in result.stdout
        wait_until(answers, timeout=15, what=f"openssl ocsp on {port}")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()
