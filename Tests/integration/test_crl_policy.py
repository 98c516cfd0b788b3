"""CRLs: verified against the trusted CAs before use, freshness enforced by policy."""
import os
import subprocess

import pytest
from cryptography import x509

import pki as pki_module
from helpers import free_port, proxy_config, refusal, round_trip


def start(start_proxy, pki, backend, crl_dir, **extra):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=crl_dir, **extra))
    proxy.port = port
    return proxy


def write_expired_crls(pki, crl_dir):
    for issuer, names in pki_module.REVOKED.items():
        pki_module.write_crl(pki, issuer, os.path.join(crl_dir, f"{issuer}.crl"), names, next_update_seconds=-3600)


def test_expired_crl_under_strict_refuses(start_proxy, pki, backend, crl_copy):
    write_expired_crls(pki, crl_copy)
    proxy = start(start_proxy, pki, backend, crl_copy, crl_policy="strict")
    error = refusal(proxy.port, pki, "alice")
    assert "certificate unknown" in error.lower().replace("_", " "), error
    proxy.wait_for_log("reason=crl_expired")
    assert backend.accepted == 0


def test_expired_crl_under_best_effort_accepts_but_still_revokes(start_proxy, pki, backend, crl_copy):
    write_expired_crls(pki, crl_copy)
    proxy = start(start_proxy, pki, backend, crl_copy, crl_policy="best-effort")
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    # A stale CRL can only miss newer revocations: what it lists stays revoked.
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()


def test_strict_refuses_issuer_without_crl(start_proxy, pki, backend, crl_copy):
    os.remove(os.path.join(crl_copy, "intermediate.crl"))
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert "certificate unknown" in refusal(proxy.port, pki, "alice").lower().replace("_", " ")
    proxy.wait_for_log("reason=crl_missing")
    # bob's chain only needs the root's CRL, which is there.
    assert round_trip(proxy.port, pki, "bob") == b"ping\n"


def test_forged_crl_neither_revokes_nor_breaks(start_proxy, pki, backend, crl_copy):
    # Same issuer name as the intermediate, signed by another key, revoking alice.
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "zz-forged.crl"), ["alice"],
                         number=10**9, forged=True)
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()
    assert proxy.log_lines("zz-forged.crl.*does not verify|zz-forged.crl.*stranger")


def test_forged_crl_with_the_genuine_issuer_name_and_key_identifier_is_ignored(start_proxy, pki, backend, crl_copy):
    # The forgery copies the intermediate's name and key identifier, so it is filed
    # exactly where the genuine CRL is; a higher CRL number would make it win. Only its
    # signature gives it away. It revokes alice, and lists nobody else.
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "zz-forged.crl"), ["alice"],
                         number=10**9, forged="impersonate")
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()  # the genuine CRL still rules
    assert proxy.log_lines("zz-forged.crl: CRL 1 ignored: its signature does not verify")


def test_intermediate_revoked_by_the_roots_crl_refuses_the_clients_under_it(start_proxy, pki, backend, crl_copy):
    # The root's CRL revokes the intermediate CA itself; alice's own certificate is on
    # no CRL. Every certificate of the chain is checked, not only the client's.
    pki_module.write_crl(pki, "root", os.path.join(crl_copy, "root.crl"), ["revoked-root", "intermediate-ca"],
                         number=2)
    proxy = start(start_proxy, pki, backend, crl_copy)
    for tls in ["1.3", "1.2"]:
        error = refusal(proxy.port, pki, "alice", tls=tls)
        assert "certificate revoked" in error.lower().replace("_", " "), error
    proxy.wait_for_log("UID=alice,.*end=refused reason=revoked", count=2)
    assert backend.accepted == 0
    assert round_trip(proxy.port, pki, "bob") == b"ping\n"  # issued by the root itself


def test_der_crl_with_any_name(start_proxy, pki, backend, crl_copy):
    os.remove(os.path.join(crl_copy, "intermediate.crl"))
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "any-name.der"), ["revoked-int"], der=True)
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"


def test_garbage_in_the_crl_folder_at_start_exits_1_naming_the_file(binary, pki, crl_copy, tmp_path):
    with open(os.path.join(crl_copy, "notes.txt"), "w") as f:
        f.write("this is not a CRL\n")
    config = tmp_path / "proxy.conf"
    config.write_text(proxy_config(pki, free_port(), "127.0.0.1:1", crl_dir=crl_copy))
    result = subprocess.run([binary, "--config", str(config)], capture_output=True, timeout=20)
    assert result.returncode == 1
    assert f"{crl_copy}/notes.txt: not a CRL" in result.stderr.decode()


def test_garbage_added_while_running_is_skipped(start_proxy, pki, backend, crl_copy):
    proxy = start(start_proxy, pki, backend, crl_copy)
    with open(os.path.join(crl_copy, "notes.txt"), "w") as f:
        f.write("this is not a CRL\n")
    proxy.wait_for_log("notes.txt: not a CRL")
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"


def test_newer_crl_of_same_issuer_wins_whatever_the_file_order(start_proxy, pki, backend, crl_copy):
    # "a-..." sorts first and is newer (higher number): it un-revokes revoked-int.
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "a-newer.crl"), [], number=5)
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert round_trip(proxy.port, pki, "revoked-int") == b"ping\n"


def test_without_crl_dir_revocation_is_not_checked(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=None))
    proxy.port = port
    assert round_trip(port, pki, "revoked-int") == b"ping\n"


@pytest.mark.parametrize("extension,message", [
    (lambda: x509.DeltaCRLIndicator(1), "a delta CRL"),
    (lambda: x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier("http://crl.example.com/part1.crl")], relative_name=None,
        only_contains_user_certs=False, only_contains_ca_certs=False, only_some_reasons=None,
        indirect_crl=False, only_contains_attribute_certs=False), "an issuing distribution point"),
])
def test_delta_and_partitioned_crls_are_refused_loudly(start_proxy, pki, backend, crl_copy, extension, message):
    # The only CRL of the intermediate is one we cannot read correctly: strict refuses.
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "intermediate.crl"), ["revoked-int"],
                         extensions=[extension()])
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert proxy.log_lines(f"intermediate.crl: CRL 1 ignored: {message}")
    assert "certificate unknown" in refusal(proxy.port, pki, "alice").lower().replace("_", " ")
    proxy.wait_for_log("reason=crl_missing")


@pytest.mark.timeout(600)  # building and signing the CRL in Python takes up to a minute on a busy machine
def test_100000_entry_crl_refuses_its_serial_and_not_its_neighbours(start_proxy, pki, backend, crl_copy):
    base = 0x5EED << 100
    for name, serial in [("serial-base", base), ("serial-below", base - 1), ("serial-above", base + 1)]:
        pki_module.issue_client(pki, name, serial)
    # base, and 99,999 more around it that skip base - 1 and base + 1.
    others = [base + d for d in range(2, 50_002)] + [base - d for d in range(2, 50_001)]
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "intermediate.crl"), [base] + others)
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert "revoked" in refusal(proxy.port, pki, "serial-base").lower()
    assert round_trip(proxy.port, pki, "serial-below") == b"ping\n"
    assert round_trip(proxy.port, pki, "serial-above") == b"ping\n"
    check = subprocess.run([proxy.process.args[0], "--config", proxy.config_path, "--check"], capture_output=True)
    assert "CN=Intermediate CA,O=mtls-proxy test: 100000 revoked" in check.stdout.decode()


def test_crls_of_two_cas_with_the_same_name_are_told_apart(start_proxy, pki, backend, tmp_path):
    # A key rollover: a second "Intermediate CA" (same name, new key). Its client frank
    # happens to get the serial that the old key's CRL revokes: frank must not be refused.
    from cryptography.hazmat.primitives import serialization
    root, root_key = pki_module.load(pki, "root-ca")
    new_key = pki_module.new_key()
    old_inter, _ = pki_module.load(pki, "intermediate-ca")
    new_inter = pki_module.make_cert(old_inter.subject, new_key, root, root_key, ca=True, path_len=0)
    folder = tmp_path / "rollover"
    folder.mkdir()
    pki_module.write_pem(str(folder / "intermediate-ca.pem"), new_inter)
    pki_module.write_key(str(folder / "intermediate-ca.key"), new_key)
    revoked_serial = pki_module.serial_of(pki, "revoked-int")
    frank_key = pki_module.new_key()
    frank = pki_module.make_cert(pki_module.subject_for("frank"), frank_key, new_inter, new_key, serial=revoked_serial)
    pki_module.write_pem(str(folder / "frank.pem"), frank, new_inter)
    pki_module.write_key(str(folder / "frank.key"), frank_key)
    for name in ["root-ca.pem"]:
        (folder / name).write_bytes(open(os.path.join(pki, name), "rb").read())
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(open(os.path.join(pki, "ca-bundle.pem"), "rb").read()
                       + new_inter.public_bytes(serialization.Encoding.PEM))
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    pki_module.write_crl(pki, "root", str(crl_dir / "root.crl"), [])
    pki_module.write_crl(pki, "intermediate", str(crl_dir / "old-intermediate.crl"), ["revoked-int"], number=50)
    pki_module.write_crl(str(folder), "intermediate", str(crl_dir / "new-intermediate.crl"), [], number=1)
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, crl_dir=str(crl_dir))
                        .replace(f"{pki}/ca-bundle.pem", str(bundle)))
    assert "revoked" in refusal(port, pki, "revoked-int").lower()  # the old key's client: revoked
    assert round_trip(port, str(folder), "frank") == b"ping\n"     # same serial, other key: not
    assert round_trip(port, pki, "alice") == b"ping\n"
    assert not proxy.log_lines("CRL skipped"), "each CRL must verify against the CA of its own key"
