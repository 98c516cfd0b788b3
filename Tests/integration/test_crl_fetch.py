"""crl_fetch: CRLs downloaded from the distribution points the certificates name (a
Python http.server on 127.0.0.1), verified like any other, written into crl_dir."""
import http.server
import os
import shutil
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pki as pki_module
from helpers import free_port, proxy_config, refusal, round_trip, tls_connect, wait_until


class CRLServer:
    """Serves `files[path]` (bytes) with an ETag; `mode` = "ok", "fail" (HTTP 500). It
    counts GETs and the 304s it answered."""

    def __init__(self):
        self.files = {}
        self.mode = "ok"
        self.delay = 0.0
        self.gets = 0
        self.not_modified = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                server.gets += 1
                time.sleep(server.delay)
                body = server.files.get(self.path)
                if server.mode == "fail" or body is None:
                    self.send_response(500 if server.mode == "fail" else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{hash(body) & 0xffffffff:x}"'
                if self.headers.get("If-None-Match") == etag:
                    server.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def crl_bytes(pki, revoke=(), next_update_seconds=7 * 86400, forged=False):
    out = os.path.join(pki, f"cdp-{time.monotonic_ns()}.crl")
    pki_module.write_crl(pki, "intermediate", out, list(revoke), next_update_seconds=next_update_seconds, der=True,
                         forged=forged)
    with open(out, "rb") as f:
        data = f.read()
    os.remove(out)
    return data


@pytest.fixture
def cdp(pki, tmp_path):
    """A CRL server, a crl_dir holding only the root's CRL, and clients of the
    intermediate whose distribution point names the server's /intermediate.crl."""
    server = CRLServer()
    folder = str(tmp_path / "cdp-pki")
    os.makedirs(folder)
    for name in ("root-ca.pem",):
        shutil.copy(os.path.join(pki, name), folder)
    inter, inter_key = pki_module.load(pki, "intermediate-ca")
    serials = {}
    for name in ("good", "revoked", "later"):
        key = pki_module.new_key()
        cert = pki_module.make_cert(pki_module.subject_for(f"cdp-{name}"), key, inter, inter_key,
                                    crl_url=server.url("/intermediate.crl"))
        pki_module.write_pem(os.path.join(folder, f"{name}.pem"), cert, inter)
        pki_module.write_key(os.path.join(folder, f"{name}.key"), key)
        serials[name] = cert.serial_number
    crl_dir = str(tmp_path / "crl")
    os.makedirs(crl_dir)
    shutil.copy(os.path.join(pki, "crl", "root.crl"), crl_dir)
    server.files["/intermediate.crl"] = crl_bytes(pki, [serials["revoked"]])
    yield dict(server=server, folder=folder, crl_dir=crl_dir, serials=serials, pki=pki)
    server.stop()


def start(start_proxy, cdp, backend, **extra):
    port = free_port()
    proxy = start_proxy(proxy_config(cdp["pki"], port, backend.address, crl_dir=cdp["crl_dir"], crl_fetch="yes", **extra))
    proxy.port = port
    return proxy


def fetched_files(cdp):
    return [n for n in os.listdir(cdp["crl_dir"]) if n.startswith("fetched-")]


def test_first_client_waits_for_the_download_and_passes(start_proxy, cdp, backend):
    proxy = start(start_proxy, cdp, backend)
    assert fetched_files(cdp) == []  # nothing names the URL yet: no client has come
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"
    assert len(fetched_files(cdp)) == 1
    proxy.wait_for_log("CRL fetched")
    # The downloaded CRL revokes: the revoked client is refused.
    error = refusal(proxy.port, cdp["folder"], "revoked")
    assert "certificate revoked" in error.lower().replace("_", " "), error


def test_a_revoked_first_client_is_refused_after_the_download(start_proxy, cdp, backend):
    proxy = start(start_proxy, cdp, backend)
    error = refusal(proxy.port, cdp["folder"], "revoked")
    assert "certificate revoked" in error.lower().replace("_", " "), error
    assert backend.accepted == 0


def test_a_slow_server_makes_the_first_client_wait_a_bounded_time(start_proxy, cdp, backend):
    cdp["server"].delay = 7.0  # past the 5 s a client may wait, within the 10 s download timeout
    proxy = start(start_proxy, cdp, backend)
    error = refusal(proxy.port, cdp["folder"], "good")
    assert "certificate unknown" in error.lower().replace("_", " "), error
    proxy.wait_for_log("reason=crl_missing.*no current CRL after waiting for its download")
    # The download went on: once it is in, clients pass.
    proxy.wait_for_log("CRL fetched", timeout=15)
    proxy.wait_for_log("reloaded")
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"


def test_a_crl_signed_by_a_stranger_is_not_written(start_proxy, cdp, backend):
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [], forged="impersonate")
    proxy = start(start_proxy, cdp, backend)
    # strict: no CRL of the intermediate, and the download gives none that counts.
    error = refusal(proxy.port, cdp["folder"], "good")
    assert "certificate unknown" in error.lower().replace("_", " "), error
    proxy.wait_for_log("CRL download failed.*not signed by the trusted CA it names")
    assert fetched_files(cdp) == []


def test_a_stranger_crl_at_the_url_later_keeps_the_genuine_one(start_proxy, cdp, backend):
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [cdp["serials"]["revoked"]], next_update_seconds=12)
    proxy = start(start_proxy, cdp, backend)
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"
    stored = open(os.path.join(cdp["crl_dir"], fetched_files(cdp)[0]), "rb").read()
    # Same issuer name and key identifier, signed by a key nobody trusts, revoking nobody.
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [], forged="impersonate")
    proxy.wait_for_log("CRL download failed.*not signed by the trusted CA it names", timeout=15)
    assert open(os.path.join(cdp["crl_dir"], fetched_files(cdp)[0]), "rb").read() == stored
    assert "revoked" in refusal(proxy.port, cdp["folder"], "revoked").lower()
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"


def test_updated_crl_at_the_url_bites_before_the_old_next_update(start_proxy, cdp, backend):
    # The first CRL is due in 12 s: fetched again after half of that, at most.
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [cdp["serials"]["revoked"]], next_update_seconds=12)
    proxy = start(start_proxy, cdp, backend)
    live = tls_connect(proxy.port, cdp["folder"], "later")
    live.sendall(b"hi\n")
    assert live.recv(10) == b"hi\n"
    cdp["server"].files["/intermediate.crl"] = crl_bytes(
        cdp["pki"], [cdp["serials"]["revoked"], cdp["serials"]["later"]], next_update_seconds=3600)
    # The open connection goes (revoke_active), like for any new CRL in crl_dir...
    proxy.wait_for_log(r"UID=cdp-later,.*end=revoked", timeout=11)
    live.settimeout(5)
    while live.recv(4096):  # to the close_notify; a timeout here means it stayed open
        pass
    live.close()
    # ...and new handshakes are refused.
    assert "revoked" in refusal(proxy.port, cdp["folder"], "later").lower()


def test_server_down_keeps_the_crl_and_a_restart_uses_the_stored_file(start_proxy, cdp, backend):
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [cdp["serials"]["revoked"]], next_update_seconds=12)
    proxy = start(start_proxy, cdp, backend)
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"
    cdp["server"].mode = "fail"
    proxy.wait_for_log("CRL download failed, keeping what crl_dir holds.*HTTP 500", timeout=15)
    assert len(fetched_files(cdp)) == 1
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"
    assert "revoked" in refusal(proxy.port, cdp["folder"], "revoked").lower()
    proxy.stop()
    cdp["server"].stop()
    again = start(start_proxy, cdp, backend)
    assert round_trip(again.port, cdp["folder"], "good") == b"ping\n"
    assert "revoked" in refusal(again.port, cdp["folder"], "revoked").lower()


def test_conditional_get_answers_not_modified(start_proxy, cdp, backend):
    cdp["server"].files["/intermediate.crl"] = crl_bytes(cdp["pki"], [cdp["serials"]["revoked"]], next_update_seconds=12)
    proxy = start(start_proxy, cdp, backend)
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"
    wait_until(lambda: cdp["server"].not_modified >= 1, timeout=12, what="a conditional GET answered 304")
    assert round_trip(proxy.port, cdp["folder"], "good") == b"ping\n"


def test_the_bundle_cas_distribution_points_are_fetched_at_start(start_proxy, pki, backend, tmp_path):
    """A CA of ca_bundle names its issuer's CRL: an intermediate whose distribution point
    serves the root's CRL. With an empty crl_dir, the root's CRL arrives without any
    client, and root-issued clients are judged by it."""
    server = CRLServer()
    try:
        folder = str(tmp_path / "bundle")
        os.makedirs(folder)
        for name in ("server.pem", "server.key", "root-ca.pem"):
            shutil.copy(os.path.join(pki, name), folder)
        root, root_key = pki_module.load(pki, "root-ca")
        key = pki_module.new_key()
        named = pki_module.make_cert(pki_module.ca_name("Distribution"), key, root, root_key, ca=True, path_len=0,
                                     crl_url=server.url("/root.crl"))
        with open(os.path.join(folder, "ca-bundle.pem"), "wb") as f:
            for cert in (root, named):
                f.write(cert.public_bytes(serialization.Encoding.PEM))
        out = os.path.join(folder, "root.crl")
        pki_module.write_crl(pki, "root", out, pki_module.REVOKED["root"], der=True)
        server.files["/root.crl"] = open(out, "rb").read()
        os.remove(out)
        crl_dir = str(tmp_path / "crl")
        os.makedirs(crl_dir)
        port = free_port()
        proxy = start_proxy(proxy_config(folder, port, backend.address, crl_dir=crl_dir, crl_fetch="yes"))
        proxy.wait_for_log("CRL fetched.*root.crl")
        proxy.wait_for_log("reloaded")
        assert round_trip(port, pki, "bob") == b"ping\n"
        assert "revoked" in refusal(port, pki, "revoked-root").lower()
    finally:
        server.stop()
