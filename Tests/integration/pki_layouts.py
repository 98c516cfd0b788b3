"""The PKI layouts of the matrix (test_pki_matrix.py), made with the openssl CLI
(scripts/realpki.py), and OpenSSL's own verdict on each client of each layout.

A layout is what the proxy is given (a CA bundle, a CRL folder) plus clients, each
with the certificate list it sends in the handshake, in the order it sends it.
"""
import itertools
import os
import re
import subprocess

import realpki
from realpki import CA, write_pem

# Every key type of scripts/realpki.py, for root, intermediate, leaf and CRL signatures.
KEY_TYPES = ["rsa2048", "rsa-pss", "rsa2048-pss-sig", "rsa2048-pss-sig-digest-salt", "p384", "ed25519"]


class Client:
    def __init__(self, name, leaf, key, sent):
        self.name = name
        self.leaf = leaf
        self.key = key
        self.sent = list(sent)  # CA certificates after the leaf, in handshake order
        self.serial_hex = realpki.der_hex(realpki.serial_of(leaf))
        self.chain_file = None


class Layout:
    """A CA bundle and a CRL folder as given to the proxy, and the clients that connect.

    `cas_without_crl`: CAs of the layout that publish no CRL in the folder; for the
    best-effort oracle each gets an empty CRL (see `oracle`). `partial_chain`: the
    bundle holds no self-signed root, so OpenSSL must be told to accept an intermediate
    as the anchor (what GnuTLS does with every CA in its trust list)."""

    def __init__(self, name, folder, bundle, crls, cas_without_crl=(), partial_chain=False):
        self.name = name
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.bundle = write_pem(os.path.join(folder, "bundle.pem"), *bundle)
        self.crl_dir = os.path.join(folder, "crl")
        os.makedirs(self.crl_dir, exist_ok=True)
        self.crl_files = []
        for file_name, parts in crls.items():
            path = write_pem(os.path.join(self.crl_dir, file_name), *parts)
            self.crl_files.append(path)
        self.cas_without_crl = list(cas_without_crl)
        self.partial_chain = partial_chain
        self.clients = {}
        self._empty_crls = None

    def add(self, name, leaf_and_key, sent):
        leaf, key = leaf_and_key
        client = Client(name, leaf, key, sent)
        client.chain_file = write_pem(os.path.join(self.folder, f"{name}.chain.pem"), leaf, *sent)
        self.clients[name] = client
        return client

    def empty_crls(self):
        if self._empty_crls is None:
            self._empty_crls = [ca.gencrl(os.path.join(self.folder, f"empty-{i}.crl"), empty=True)
                                for i, ca in enumerate(self.cas_without_crl)]
        return self._empty_crls


# What `openssl verify` says, as a verdict of the proxy: error number -> verdict.
OPENSSL_ERRORS = {
    23: "revoked",        # X509_V_ERR_CERT_REVOKED
    3: "crl_missing",     # X509_V_ERR_UNABLE_TO_GET_CRL
    2: "unknown_ca",      # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    20: "unknown_ca",     # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",     # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    19: "unknown_ca",     # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    18: "unknown_ca",     # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
}


def oracle(layout, client, policy):
    """OpenSSL's verdict: (verdict, what openssl printed).

    strict: `openssl verify -crl_check_all` with the CA bundle, the certificates the
    client sends as -untrusted, and every CRL file of the folder: every certificate of
    the chain (the anchor excepted) must have a CRL from its issuer, and must not be on
    it, exactly what `crl_policy = strict` promises.

    best-effort: OpenSSL has no "tolerate a missing CRL" switch. Its equivalent is to
    give it, for each CA that publishes no CRL in the folder, an empty CRL of that CA
    (freshly signed, revoking nothing): a missing CRL revokes nothing, a present one is
    enforced. Where every CA has its CRL in the folder both policies get the same oracle.

    A bundle without a root (`partial_chain`): `-partial_chain -crl_check`. With
    -crl_check_all OpenSSL also wants a CRL of the anchor's own issuer, which RFC 5280
    path validation never asks for: a trust anchor is not checked for revocation. With
    the intermediate as the anchor the leaf is the only certificate below it, and that
    is what -crl_check checks.

    The order of the certificates the client sends: RFC 8446 4.4.2 asks a server to
    handle "arbitrary orderings", but OpenSSL's path builder takes the first issuer
    candidate among -untrusted and does not backtrack: with an intermediate and its
    cross-signed twin it misses the valid path when the wrong twin comes first. So the
    oracle is OpenSSL's verdict for each ordering of what the client sent; where some
    orderings find a path and others do not, the verdict of those that find one (they
    must agree, else the case is ambiguous and fails).
    """
    verdicts = {}
    for n, ordering in enumerate(itertools.permutations(client.sent)):
        untrusted = write_pem(os.path.join(layout.folder, f"{client.name}.untrusted-{n}.pem"), *ordering)
        verdict, output = _openssl_verify(layout, client, policy, untrusted if ordering else None)
        verdicts.setdefault(verdict, output)
    if len(verdicts) == 1:
        return next(iter(verdicts.items()))
    found_path = {v: o for v, o in verdicts.items() if v != "unknown_ca"}
    if len(found_path) == 1:
        return next(iter(found_path.items()))
    return "ambiguous", "\n".join(f"{v}: {o}" for v, o in verdicts.items())


def _openssl_verify(layout, client, policy, untrusted):
    cmd = ["openssl", "verify", "-CAfile", layout.bundle]
    cmd += ["-partial_chain", "-crl_check"] if layout.partial_chain else ["-crl_check_all"]
    if untrusted:
        cmd += ["-untrusted", untrusted]
    crls = list(layout.crl_files)
    if policy == "best-effort":
        crls += layout.empty_crls()
    for crl in crls:
        cmd += ["-CRLfile", crl]
    cmd.append(client.leaf)
    result = subprocess.run(cmd, capture_output=True, timeout=30)
    output = (result.stdout + result.stderr).decode(errors="replace")
    if result.returncode == 0 and output.strip().endswith(": OK"):
        return "accept", output
    found = re.search(r"error (\d+) at (\d+) depth lookup", output)
    code = int(found.group(1)) if found else None
    return OPENSSL_ERRORS.get(code, f"openssl error {code}"), output


def build(base):
    """Every layout of the matrix under `base`: {name: Layout}. About 90 openssl calls."""
    layouts = {}

    def add(layout):
        layouts[layout.name] = layout
        return layout

    # A certificate no chain here needs: what a client with a messy PEM file sends too.
    unrelated = CA(os.path.join(base, "unrelated"), "Unrelated CA", "p384")

    # --- Two levels: root R; intermediates I (good) and J (revoked by R, cACompromise).
    two = os.path.join(base, "two")
    root = CA(os.path.join(two, "root"), "Root CA", "p384")
    inter = CA(os.path.join(two, "int"), "Intermediate CA", "p384", parent=root, pathlen0=True)
    bad_inter = CA(os.path.join(two, "int-j"), "Intermediate J CA", "p384", parent=root, pathlen0=True)
    good = inter.issue(two, "good")
    revoked = inter.issue(two, "revoked")
    under_j = bad_inter.issue(two, "under-revoked-int")
    inter.revoke(revoked[0], "keyCompromise")
    root.revoke(bad_inter.cert, "cACompromise")
    root_crl = root.gencrl(os.path.join(two, "root.crl"))
    inter_crl = inter.gencrl(os.path.join(two, "int.crl"))
    inter_crl_noaki = inter.gencrl(os.path.join(two, "int-noaki.crl"), aki=False)
    j_crl = bad_inter.gencrl(os.path.join(two, "int-j.crl"))
    crls = {"root.crl": [root_crl], "int.crl": [inter_crl], "int-j.crl": [j_crl]}

    def two_level_clients(layout, sent_int=True):
        layout.add("good", good, [inter.cert] if sent_int else [])
        layout.add("leaf-revoked", revoked, [inter.cert] if sent_int else [])
        layout.add("int-revoked", under_j, [bad_inter.cert] if sent_int else [])
        return layout

    # (a) the common enterprise layout: only the root in the bundle, the client sends
    # its intermediate, the intermediate's CRL in the folder.
    two_level_clients(add(Layout("root-only", os.path.join(two, "root-only"), [root.cert], crls)))
    # ... and the intermediate publishes no CRL at all.
    lone = add(Layout("root-only-no-int-crl", os.path.join(two, "root-only-no-int-crl"), [root.cert],
                      {"root.crl": [root_crl]}, cas_without_crl=[inter]))
    lone.add("good", good, [inter.cert])
    # (b) the intermediates in the bundle too; the client sends the leaf alone, or with
    # its intermediate.
    full = [root.cert, inter.cert, bad_inter.cert]
    two_level_clients(add(Layout("int-in-bundle", os.path.join(two, "int-in-bundle"), full, crls)), sent_int=False)
    sends = add(Layout("int-in-bundle-sent", os.path.join(two, "int-in-bundle-sent"), full, crls))
    two_level_clients(sends)
    # (b') the intermediate alone in the bundle: it is the anchor.
    only = add(Layout("int-only-bundle", os.path.join(two, "int-only-bundle"), [inter.cert],
                      {"int.crl": [inter_crl]}, partial_chain=True))
    only.add("good", good, [])
    only.add("leaf-revoked", revoked, [])
    # (f) a CRL without an authority key identifier, with the intermediate in the
    # bundle (so only the missing identifier differs) and with the root alone.
    noaki = {"root.crl": [root_crl], "int.crl": [inter_crl_noaki], "int-j.crl": [j_crl]}
    for name, bundle in [("no-aki", full), ("no-aki-root-only", [root.cert])]:
        layout = add(Layout(name, os.path.join(two, name), bundle, noaki))
        layout.add("good", good, [inter.cert])
        layout.add("leaf-revoked", revoked, [inter.cert])
    # (g) one PEM file holding the CRLs of all three CAs.
    one_file = {"all-crls.pem": [root_crl, inter_crl, j_crl]}
    for name, bundle in [("one-crl-file", full), ("one-crl-file-root-only", [root.cert])]:
        two_level_clients(add(Layout(name, os.path.join(two, name), bundle, one_file)))
    # (h) an unrelated extra certificate in what the client sends.
    extra = add(Layout("extra-cert", os.path.join(two, "extra-cert"), [root.cert], crls))
    extra.add("good-extra-last", good, [inter.cert, unrelated.cert])
    extra.add("good-extra-first", good, [unrelated.cert, inter.cert])
    extra.add("leaf-revoked-extra", revoked, [unrelated.cert, inter.cert])
    extra_full = add(Layout("extra-cert-int-in-bundle", os.path.join(two, "extra-cert-int-in-bundle"), full, crls))
    extra_full.add("good-extra-first", good, [unrelated.cert, inter.cert])
    extra_full.add("leaf-revoked-extra", revoked, [unrelated.cert, inter.cert])

    # --- (c) Three levels: root R3 -> A (int1) -> B (int2) -> leaves. B2 is an int2
    # that A revoked; A2 is an int1 that R3 revoked (B3 below it is not revoked itself).
    three = os.path.join(base, "three")
    r3 = CA(os.path.join(three, "root"), "Root3 CA", "p384")
    a = CA(os.path.join(three, "a"), "Int1 A CA", "p384", parent=r3)
    a2 = CA(os.path.join(three, "a2"), "Int1 A2 CA", "p384", parent=r3)
    b = CA(os.path.join(three, "b"), "Int2 B CA", "p384", parent=a, pathlen0=True)
    b2 = CA(os.path.join(three, "b2"), "Int2 B2 CA", "p384", parent=a, pathlen0=True)
    b3 = CA(os.path.join(three, "b3"), "Int2 B3 CA", "p384", parent=a2, pathlen0=True)
    good3 = b.issue(three, "good")
    revoked3 = b.issue(three, "revoked")
    under_b2 = b2.issue(three, "under-b2")
    under_b3 = b3.issue(three, "under-b3")
    b.revoke(revoked3[0], "keyCompromise")
    a.revoke(b2.cert, "cACompromise")
    r3.revoke(a2.cert, "cACompromise")
    crls3 = {f"{ca.name.split()[0].lower()}-{i}.crl": [ca.gencrl(os.path.join(three, f"{i}.crl"))]
             for i, ca in enumerate([r3, a, a2, b, b2, b3])}
    deep = add(Layout("three-level", os.path.join(three, "three-level"), [r3.cert], crls3))
    deep.add("good", good3, [b.cert, a.cert])
    deep.add("leaf-revoked", revoked3, [b.cert, a.cert])
    deep.add("int2-revoked", under_b2, [b2.cert, a.cert])
    deep.add("int1-revoked", under_b3, [b3.cert, a2.cert])
    # (h) the same chains out of order, and with an unrelated certificate in between.
    mixed = add(Layout("three-level-out-of-order", os.path.join(three, "out-of-order"), [r3.cert], crls3))
    mixed.add("good-reversed", good3, [a.cert, b.cert])
    mixed.add("leaf-revoked-reversed", revoked3, [a.cert, b.cert])
    mixed.add("int2-revoked-reversed", under_b2, [a.cert, b2.cert])
    mixed.add("good-extra-between", good3, [b.cert, unrelated.cert, a.cert])
    mixed.add("leaf-revoked-extra-between", revoked3, [a.cert, unrelated.cert, b.cert])
    full3 = [r3.cert, a.cert, a2.cert, b.cert, b2.cert, b3.cert]
    mixed_full = add(Layout("three-level-out-of-order-all-in-bundle", os.path.join(three, "ooo-all"), full3, crls3))
    mixed_full.add("good-reversed", good3, [a.cert, b.cert])
    mixed_full.add("leaf-revoked-reversed", revoked3, [a.cert, b.cert])

    # --- (d) Cross-signing: intermediate X (one key, one subject) has a certificate
    # from root P and one from root Q. The client sends both: two valid paths.
    cross = os.path.join(base, "cross")
    p = CA(os.path.join(cross, "p"), "Root P CA", "p384")
    q = CA(os.path.join(cross, "q"), "Root Q CA", "p384")
    x = CA(os.path.join(cross, "x"), "Cross X CA", "p384", parent=p)
    x_by_q = q.cross_sign(x, os.path.join(cross, "x-by-q.pem"))
    good_x = x.issue(cross, "good")
    revoked_x = x.issue(cross, "revoked")
    x.revoke(revoked_x[0], "keyCompromise")
    crls_x = {"p.crl": [p.gencrl(os.path.join(cross, "p.crl"))], "q.crl": [q.gencrl(os.path.join(cross, "q.crl"))],
              "x.crl": [x.gencrl(os.path.join(cross, "x.crl"))]}
    for name, bundle in [("cross-bundle-p", [p.cert]), ("cross-bundle-q", [q.cert])]:
        layout = add(Layout(name, os.path.join(cross, name), bundle, crls_x))
        layout.add("good-p-first", good_x, [x.cert, x_by_q])
        layout.add("good-q-first", good_x, [x_by_q, x.cert])
        layout.add("leaf-revoked-p-first", revoked_x, [x.cert, x_by_q])
        layout.add("leaf-revoked-q-first", revoked_x, [x_by_q, x.cert])
    wrong = add(Layout("cross-bundle-q-path-p-only", os.path.join(cross, "q-path-p"), [q.cert], crls_x))
    wrong.add("good", good_x, [x.cert])
    # Both the intermediate of the cross and the ones it cross-certifies in the bundle.
    both = add(Layout("cross-int-in-bundle", os.path.join(cross, "int-in-bundle"), [q.cert, x_by_q], crls_x))
    both.add("good", good_x, [])
    both.add("leaf-revoked", revoked_x, [])

    # --- (e) Key types: root, intermediate and leaf all of one type; the intermediate's
    # CRL signed with it. With the intermediate in the bundle (only the key type is new)
    # and with the root alone.
    for key_type in KEY_TYPES:
        folder = os.path.join(base, key_type)
        kroot = CA(os.path.join(folder, "root"), f"{key_type} Root CA", key_type)
        kint = CA(os.path.join(folder, "int"), f"{key_type} Intermediate CA", key_type, parent=kroot, pathlen0=True)
        kgood = kint.issue(folder, "good")
        krevoked = kint.issue(folder, "revoked")
        kint.revoke(krevoked[0], "keyCompromise")
        kcrls = {"root.crl": [kroot.gencrl(os.path.join(folder, "root.crl"))],
                 "int.crl": [kint.gencrl(os.path.join(folder, "int.crl"))]}
        for suffix, bundle in [("int-in-bundle", [kroot.cert, kint.cert]), ("root-only", [kroot.cert])]:
            layout = add(Layout(f"{key_type}-{suffix}", os.path.join(folder, suffix), bundle, kcrls))
            layout.add("good", kgood, [kint.cert])
            layout.add("leaf-revoked", krevoked, [kint.cert])
    return layouts
