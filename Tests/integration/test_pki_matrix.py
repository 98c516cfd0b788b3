"""The PKI matrix: PKIs made by the openssl CLI the way CAs make them (scripts/realpki.py),
in the layouts administrators use, each through the real binary with a real TLS client
sending the chain under test. OpenSSL is the oracle: for every case `openssl verify
-crl_check_all` (pki_layouts.oracle says how each policy maps to it) decides at test
time whether the client must get in, and if not with which alert; the proxy must agree.

Each case first checks that OpenSSL's verdict is the one the case was built for (a
revoked leaf is revoked...), so that a PKI generator gone wrong cannot make the matrix
pass vacuously, then that the proxy reaches the same verdict: an echo round trip
through the backend, or the matching alert, the matching `reason=` on the log line of
that certificate's serial, and no backend connection.
"""
import os
import re
import socket
import ssl
import subprocess

import pytest

import pki_layouts
import realpki
from helpers import Backend, Proxy, echo_back, free_port, proxy_config, wait_until

BOTH = ("strict", "best-effort")
STRICT = ("strict",)

# layout -> (policies, [clients]). Both policies wherever a CRL may fail to be used (its
# signer reaches the proxy only in the client's chain, an unusual signature algorithm):
# under strict that refuses good clients, under best-effort it lets revoked ones in.
MATRIX = {
    # (a) root-only bundle, the client sends its intermediate
    "root-only": (BOTH, ["good", "leaf-revoked", "int-revoked"]),
    "root-only-no-int-crl": (BOTH, ["good"]),
    # (b) intermediates in the bundle; the client sends the leaf alone, or with them
    "int-in-bundle": (STRICT, ["good", "leaf-revoked", "int-revoked"]),
    "int-in-bundle-sent": (STRICT, ["good", "leaf-revoked", "int-revoked"]),
    "int-only-bundle": (BOTH, ["good", "leaf-revoked"]),
    # (c) three levels, root-only bundle, the client sends int2 + int1
    "three-level": (BOTH, ["good", "leaf-revoked", "int2-revoked", "int1-revoked"]),
    # (d) an intermediate cross-signed by a second root: two paths
    "cross-bundle-p": (BOTH, ["good-p-first", "good-q-first", "leaf-revoked-p-first", "leaf-revoked-q-first"]),
    "cross-bundle-q": (BOTH, ["good-p-first", "good-q-first", "leaf-revoked-p-first", "leaf-revoked-q-first"]),
    "cross-bundle-q-path-p-only": (STRICT, ["good"]),
    "cross-int-in-bundle": (STRICT, ["good", "leaf-revoked"]),
    # (e) key types of CA and leaf, and of the CRL's signature
    **{f"{key_type}-{bundle}": (BOTH, ["good", "leaf-revoked"])
       for key_type in pki_layouts.KEY_TYPES
       for bundle in ["int-in-bundle", "root-only"]},
    # (f) a CRL without an authority key identifier
    "no-aki": (STRICT, ["good", "leaf-revoked"]),
    "no-aki-root-only": (BOTH, ["good", "leaf-revoked"]),
    # (g) one PEM file holding several CRLs
    "one-crl-file": (STRICT, ["good", "leaf-revoked", "int-revoked"]),
    "one-crl-file-root-only": (BOTH, ["good", "leaf-revoked", "int-revoked"]),
    # (h) chains out of order, with an unrelated extra certificate
    "extra-cert": (BOTH, ["good-extra-last", "good-extra-first", "leaf-revoked-extra"]),
    "extra-cert-int-in-bundle": (STRICT, ["good-extra-first", "leaf-revoked-extra"]),
    "three-level-out-of-order": (BOTH, ["good-reversed", "leaf-revoked-reversed", "int2-revoked-reversed",
                                        "good-extra-between", "leaf-revoked-extra-between"]),
    "three-level-out-of-order-all-in-bundle": (STRICT, ["good-reversed", "leaf-revoked-reversed"]),
}

# An ordinary RSA key signing with RSA-PSS at OpenSSL's default salt length (the
# maximum, not the digest length): GnuTLS 3.7.9 rejects such certificate signatures
# (`certtool --verify` too), so the proxy refuses these chains with bad_certificate where
# OpenSSL accepts them. The same key signing with the digest's salt length works.
UNSUPPORTED_LAYOUTS = {"rsa2048-pss-sig-int-in-bundle", "rsa2048-pss-sig-root-only"}

CASES = [(layout, client, policy) for layout, (policies, clients) in MATRIX.items()
         for policy in policies for client in clients]


def intent(layout, client, policy):
    """What the case was built to be; OpenSSL must say the same (checks the generator)."""
    if layout == "root-only-no-int-crl":
        return "crl_missing" if policy == "strict" else "accept"
    if layout == "cross-bundle-q-path-p-only":
        return "unknown_ca"  # the only path sent leads to root P, which is not trusted
    return "revoked" if "revoked" in client else "accept"


# What the TLS client reports for each refusal (Python's ssl error text).
ALERTS = {"revoked": "certificate revoked", "unknown_ca": "unknown ca", "crl_missing": "certificate unknown"}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return pki_layouts.build(str(tmp_path_factory.mktemp("matrix")))


@pytest.fixture(scope="module")
def proxies(binary, pki, tmp_path_factory):
    """One proxy (and echo backend) per layout and policy, started on first use."""
    workdir = str(tmp_path_factory.mktemp("matrix-proxies"))
    started = {}

    def get(layout, policy):
        key = (layout.name, policy)
        if key not in started:
            backend = Backend("echo")
            port = free_port()
            config = proxy_config(pki, port, backend.address, crl_dir=layout.crl_dir, crl_policy=policy)
            config = config.replace(f"ca_bundle = {pki}/ca-bundle.pem", f"ca_bundle = {layout.bundle}")
            proxy = Proxy(workdir, config)
            proxy.port = port
            started[key] = (proxy, backend)
        return started[key]

    yield get
    for proxy, backend in started.values():
        proxy.stop()
        backend.close()


def connect(port, pki, client, tls=None):
    """A TLS connection that sends the client's chain file as it is: Python's ssl
    (OpenSSL) sends the certificates of load_cert_chain's file in file order. The
    server's certificate is the session PKI's (conftest `pki`): not under test here."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "root-ca.pem"))
    ctx.load_cert_chain(client.chain_file, client.key)
    if tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def attempt(port, pki, client, payload, tls=None):
    """Sends `payload` and reads it back: ("echo", data) or ("error", the SSL error)."""
    try:
        with connect(port, pki, client, tls) as s:
            return "echo", echo_back(s, payload)
    except ssl.SSLError as e:
        return "error", str(e)
    except OSError as e:
        return "error", f"os error: {e}"


def log_line(proxy, client, seen):
    """The proxy's line for this connection: the first line for the client's serial
    after the `seen` earlier ones (it is written when the connection ends)."""
    try:
        return wait_until(lambda: proxy.log_lines(f"serial={client.serial_hex}")[seen:], timeout=5,
                          what="log line")[0]
    except AssertionError:
        return f"(no log line with serial={client.serial_hex})"


def report(case, verdict, outcome, line):
    """With PKI_MATRIX_REPORT=FILE, appends "case, OpenSSL's verdict, the proxy's" to
    FILE: the matrix as a table (run it before and after a change to compare)."""
    path = os.environ.get("PKI_MATRIX_REPORT")
    if not path:
        return
    reason = re.search(r" reason=(\S+)", line)
    proxy = "accept" if outcome == "echo" else reason.group(1) if reason else "refused (no reason logged)"
    with open(path, "a") as f:
        f.write(f"{case}\t{verdict}\t{proxy}\n")


def crl_warnings(proxy):
    return "\n".join([line for line in proxy.log_lines("CRL") if " connection " not in line][:8])


@pytest.mark.parametrize("layout_name,client_name,policy", CASES,
                         ids=[f"{layout}-{client}-{policy}" for layout, client, policy in CASES])
def test_proxy_agrees_with_openssl(matrix, proxies, pki, layout_name, client_name, policy):
    check(matrix, proxies, pki, layout_name, client_name, policy)


# The client signs the handshake with its key: TLS 1.2 has its own signature schemes.
TLS12_CASES = [(f"{key_type}-int-in-bundle", client) for key_type in pki_layouts.KEY_TYPES
               for client in ["good", "leaf-revoked"]]


@pytest.mark.parametrize("layout_name,client_name", TLS12_CASES,
                         ids=[f"{layout}-{client}-strict-tls12" for layout, client in TLS12_CASES])
def test_proxy_agrees_with_openssl_over_tls12(matrix, proxies, pki, layout_name, client_name):
    check(matrix, proxies, pki, layout_name, client_name, "strict", tls="1.2")


def check(matrix, proxies, pki, layout_name, client_name, policy, tls=None):
    layout = matrix[layout_name]
    client = layout.clients[client_name]
    verdict, said = pki_layouts.oracle(layout, client, policy)
    assert verdict == intent(layout_name, client_name, policy), f"the PKI is not what the case means:\n{said}"

    proxy, backend = proxies(layout, policy)
    before = backend.accepted
    seen = len(proxy.log_lines(f"serial={client.serial_hex}"))
    payload = f"hello from {client_name}\n".encode()
    outcome, detail = attempt(proxy.port, pki, client, payload, tls)
    line = log_line(proxy, client, seen)
    report(f"{layout_name}-{client_name}-{policy}" + (f"-tls{tls}" if tls else ""), verdict, outcome, line)
    context = f"openssl: {said.strip()}\nproxy: {line}\nproxy CRL log:\n{crl_warnings(proxy)}"
    if layout_name in UNSUPPORTED_LAYOUTS:
        # Not supported, and documented: GnuTLS refuses these certificates' signatures.
        # The proxy must fail closed, never let one through.
        assert outcome == "error" and "bad certificate" in detail.lower().replace("_", " "), f"{detail}\n{context}"
        assert " reason=bad_certificate" in line, context
        assert backend.accepted == before
        return
    if verdict == "accept":
        assert (outcome, detail) == ("echo", payload), f"refused, OpenSSL accepts: {detail}\n{context}"
        return
    assert outcome == "error", f"accepted (bytes reached the backend), OpenSSL says {verdict}\n{context}"
    assert ALERTS[verdict] in detail.lower().replace("_", " "), \
        f"wrong alert, OpenSSL says {verdict}: {detail}\n{context}"
    assert f" reason={verdict}" in line, f"wrong reason, OpenSSL says {verdict}\n{context}"
    assert backend.accepted == before


def test_crl_of_many_entries_each_with_a_reason_code(proxies, pki, tmp_path):
    """`scripts/realpki.py bigcrl`'s CRL (index.txt written directly, then `openssl ca
    -gencrl`: every entry carries a reason code, as real CAs write them), small enough
    for a test: its revoked client is refused, its good one gets in, as OpenSSL says."""
    made = realpki.big_crl(str(tmp_path / "big"), entries=3001)
    layout = pki_layouts.Layout("bigcrl", str(tmp_path / "layout"), [made["ca"].cert], {"ca.crl": [made["crl"]]})
    layout.add("good", made["good"], [])
    layout.add("revoked", made["revoked"], [])
    text = subprocess.run(["openssl", "crl", "-in", made["crl"], "-noout", "-text"], capture_output=True).stdout
    assert text.count(b"Key Compromise") == 3001
    proxy, backend = proxies(layout, "strict")
    for name, expected in [("good", "accept"), ("revoked", "revoked")]:
        client = layout.clients[name]
        assert pki_layouts.oracle(layout, client, "strict")[0] == expected
        outcome, detail = attempt(proxy.port, pki, client, b"ping\n")
        if expected == "accept":
            assert (outcome, detail) == ("echo", b"ping\n")
        else:
            assert outcome == "error" and "certificate revoked" in detail.lower().replace("_", " "), detail
