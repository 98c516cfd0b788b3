"""The common enterprise layout: `ca_bundle` holds only the root, each client sends its
issuing CA in the handshake, and that CA's CRL sits in `crl_dir`. Its CRL must count
exactly like the CRL of a bundled CA: both policies, live revocation, forgeries."""
import datetime
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import pki as pki_module
from helpers import Backend, free_port, http_get, listener_config, refusal, round_trip, wait_until
from test_live_revocation import LdapClient, assert_ends_with_notice

CLIENTS = ["alice", "carol", "revoked-int", "bob", "revoked-root"]


@pytest.fixture
def chains(pki, tmp_path):
    """A folder where each client certificate file holds the leaf and, for clients of the
    intermediate, the intermediate after it: what such clients send. The bundle is the root."""
    target = tmp_path / "chains"
    target.mkdir()
    with open(os.path.join(pki, "intermediate-ca.pem"), "rb") as f:
        intermediate = f.read()
    for name in CLIENTS:
        with open(os.path.join(pki, f"{name}.pem"), "rb") as f:
            leaf = f.read()
        issuer = pki_module.CLIENTS[name][0]
        (target / f"{name}.pem").write_bytes(leaf + (intermediate if issuer == "intermediate" else b""))
        shutil.copy(os.path.join(pki, f"{name}.key"), target / f"{name}.key")
    shutil.copy(os.path.join(pki, "root-ca.pem"), target / "root-ca.pem")
    return str(target)


def root_only_config(pki, port, backend, crl_dir, health_port=None, **extra):
    config = listener_config(pki, port, backend, crl_dir=crl_dir, **extra).replace(
        f"ca_bundle = {pki}/ca-bundle.pem", f"ca_bundle = {pki}/root-ca.pem")
    head = "workers = 2\n" + (f"health_listen = 127.0.0.1:{health_port}\n" if health_port else "")
    return head + config


@pytest.mark.parametrize("policy", ["best-effort", "strict"])
def test_the_client_cas_crl_revokes_and_good_clients_pass(start_proxy, pki, chains, crl_dir, policy):
    backend = Backend("echo")
    try:
        port = free_port()
        proxy = start_proxy(root_only_config(pki, port, backend.address, crl_dir, crl_policy=policy))
        proxy.wait_for_log("CRL held.*Intermediate CA")
        error = refusal(port, chains, "revoked-int")
        assert "certificate revoked" in error.lower().replace("_", " "), error
        assert backend.accepted == 0, "no byte of a revoked client may reach the backend"
        proxy.wait_for_log("reason=revoked")
        assert round_trip(port, chains, "alice") == b"ping\n"
        assert round_trip(port, chains, "bob") == b"ping\n"
        assert "revoked" in refusal(port, chains, "revoked-root").lower()
        assert proxy.log_lines("CRL in force.*Intermediate CA")
        assert not proxy.log_lines("stranger")
    finally:
        backend.close()


def test_strict_refuses_a_client_ca_without_a_crl_and_readyz_names_it(start_proxy, pki, chains, crl_dir):
    os.remove(os.path.join(crl_dir, "intermediate.crl"))
    backend = Backend("echo")
    try:
        port, health = free_port(), free_port()
        proxy = start_proxy(root_only_config(pki, port, backend.address, crl_dir, health_port=health, crl_policy="strict"))
        assert "certificate unknown" in refusal(port, chains, "alice").lower().replace("_", " ")
        proxy.wait_for_log("reason=crl_missing")
        # The CA is known now (the chain verified), and it has no CRL: /readyz says so.
        status, body = http_get(health, "/readyz")
        assert status == 503 and "Intermediate CA" in body, body
        assert round_trip(port, chains, "bob") == b"ping\n"
        # Its CRL arrives: alice passes, and the verified CA's CRL counts at once.
        pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int"])
        wait_until(lambda: http_get(health, "/readyz")[0] == 200, timeout=5, what="/readyz 200 after the CRL arrived")
        assert round_trip(port, chains, "alice") == b"ping\n"
        assert "revoked" in refusal(port, chains, "revoked-int").lower()
    finally:
        backend.close()


def test_a_new_crl_of_a_client_ca_closes_live_connections(start_proxy, pki, chains, crl_dir, slapd):
    port = free_port()
    proxy = start_proxy(root_only_config(pki, port, slapd, crl_dir, crl_policy="strict"))
    carol, alice = LdapClient(port, chains, "carol"), LdapClient(port, chains, "alice")
    assert carol.search_ok() and alice.search_ok()
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"), ["revoked-int", "carol"],
                         number=2)
    carol.read_until_close(timeout=3)  # within the 2 s of a new CRL, plus slack
    assert_ends_with_notice(carol)
    assert alice.search_ok(), "a certificate the new CRL does not name keeps its connection"
    assert "revoked" in refusal(port, chains, "carol").lower()
    proxy.wait_for_log("end=revoked")
    alice.close()


def forged_crl_with_genuine_name_and_key_id(pki, out, revoke):
    """Signed by a key nobody trusts, but naming the intermediate and its key identifier."""
    genuine, genuine_key = pki_module.load(pki, "intermediate-ca")
    forger = pki_module.new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(genuine.subject)
               .last_update(now - datetime.timedelta(minutes=5))
               .next_update(now + datetime.timedelta(days=7))
               .add_extension(x509.CRLNumber(10**9), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(genuine_key.public_key()),
                              critical=False))
    for name in revoke:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(pki_module.serial_of(pki, name)).revocation_date(now).build())
    with open(out, "wb") as f:
        f.write(builder.sign(forger, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def test_a_forged_crl_of_a_client_ca_is_dropped_when_the_ca_arrives(start_proxy, pki, chains, crl_dir):
    forged_crl_with_genuine_name_and_key_id(pki, os.path.join(crl_dir, "zz-forged.crl"), ["alice"])
    backend = Backend("echo")
    try:
        port = free_port()
        proxy = start_proxy(root_only_config(pki, port, backend.address, crl_dir, crl_policy="strict"))
        assert round_trip(port, chains, "alice") == b"ping\n", "a forged CRL must not revoke anyone"
        assert "revoked" in refusal(port, chains, "revoked-int").lower(), "the genuine CRL still counts"
        proxy.wait_for_log("zz-forged.crl ignored: its signature does not verify")
    finally:
        backend.close()


def test_a_look_alike_ca_from_a_client_cannot_make_a_forged_crl_count(start_proxy, pki, chains, crl_dir):
    """A forged CRL of the intermediate (its name and key identifier, another key F,
    revoking nobody, a higher CRL number) lies in the folder. A client presents a CA of
    the intermediate's name and key identifier with key F that does not chain to the root.
    That CA must not become a signer: otherwise the forgery would supersede the genuine
    CRL and un-revoke revoked-int."""
    genuine, genuine_key = pki_module.load(pki, "intermediate-ca")
    root, _ = pki_module.load(pki, "root-ca")
    forger = pki_module.new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    genuine_ski = genuine.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    look_alike = (x509.CertificateBuilder()
                  .subject_name(genuine.subject).issuer_name(root.subject).public_key(forger.public_key())
                  .serial_number(x509.random_serial_number())
                  .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                  .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                  .add_extension(genuine_ski, critical=False)
                  .sign(forger, hashes.SHA256()))  # not signed by the root
    leaf_key = pki_module.new_key()
    leaf = pki_module.make_cert(pki_module.subject_for("mallory"), leaf_key, look_alike, forger)
    pki_module.write_pem(os.path.join(chains, "mallory.pem"), leaf, look_alike)
    pki_module.write_key(os.path.join(chains, "mallory.key"), leaf_key)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(genuine.subject)
               .last_update(now - datetime.timedelta(minutes=1)).next_update(now + datetime.timedelta(days=7))
               .add_extension(x509.CRLNumber(10**9), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(genuine_key.public_key()), critical=False))
    with open(os.path.join(crl_dir, "zz-forged.crl"), "wb") as f:
        f.write(builder.sign(forger, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    backend = Backend("echo")
    try:
        port = free_port()
        proxy = start_proxy(root_only_config(pki, port, backend.address, crl_dir, crl_policy="best-effort"))
        # The look-alike's signature does not verify under the root: bad_certificate.
        assert "bad certificate" in refusal(port, chains, "mallory").lower().replace("_", " ")
        error = refusal(port, chains, "revoked-int")
        assert "certificate revoked" in error.lower().replace("_", " "), error
        assert backend.accepted == 0
    finally:
        backend.close()
