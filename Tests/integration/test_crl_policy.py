"""CRLs: verified against the trusted CAs before use, freshness enforced by policy."""
import os

import pytest

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


def test_der_crl_and_garbage_file(start_proxy, pki, backend, crl_copy):
    os.remove(os.path.join(crl_copy, "intermediate.crl"))
    pki_module.write_crl(pki, "intermediate", os.path.join(crl_copy, "any-name.der"), ["revoked-int"], der=True)
    with open(os.path.join(crl_copy, "notes.txt"), "w") as f:
        f.write("this is not a CRL\n")
    proxy = start(start_proxy, pki, backend, crl_copy)
    assert "revoked" in refusal(proxy.port, pki, "revoked-int").lower()
    assert round_trip(proxy.port, pki, "alice") == b"ping\n"
    assert proxy.log_lines("notes.txt: not a CRL")


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
