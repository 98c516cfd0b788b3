#!/usr/bin/env python3
"""PKIs made the way real certificate authorities make them: with the openssl CLI.

scripts/pki.py (Python `cryptography`) writes the PKI the proxy was developed against.
This file writes the other kind, so that the proxy is also tested on inputs its code
was not written around: `openssl req` for keys and requests, `openssl ca` with an
ordinary CA folder (index.txt, serial, crlnumber, an openssl.cnf with crl_extensions
and authorityKeyIdentifier, as the OpenSSL docs and most CA how-tos set it up) for
certificates, `openssl ca -revoke -crl_reason` for revocations and `openssl ca -gencrl`
for CRLs (so every CRL entry carries a reason code, as real CRLs do).

Key types: rsa2048, rsa-pss (an RSASSA-PSS key: PSS signatures, OpenSSL's default salt
length), rsa2048-pss-sig (an ordinary RSA key signing with `-sigopt rsa_padding_mode:pss`,
OpenSSL's default salt length: the maximum), rsa2048-pss-sig-digest-salt (the same with
the salt as long as the digest), p384, ed25519.

    scripts/realpki.py demo OUTDIR
        root CA, intermediate CA, a good and a revoked client, both CRLs
    scripts/realpki.py bigcrl OUTDIR [--entries 100001] [--key-type p384]
        a CA whose CRL (from `openssl ca -gencrl`) lists N serials, each with a reason
        code; client-revoked.pem is one of them, client-good.pem is not. Prints how
        long each step took.

Tests import this file (Tests/integration/test_pki_matrix.py) and use the CA class.
"""
import argparse
import datetime
import os
import secrets
import shutil
import subprocess
import sys
import time

KEY_TYPES = {
    "rsa2048": (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], []),
    "rsa-pss": (["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"], []),
    # OpenSSL's default PSS salt length when signing is the maximum (222 bytes here).
    "rsa2048-pss-sig": (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                        ["-sigopt", "rsa_padding_mode:pss"]),
    "rsa2048-pss-sig-digest-salt": (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                                    ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]),
    "p384": (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], []),
    "ed25519": (["-algorithm", "ED25519"], []),
}

# A typical CA configuration (after the OpenSSL `ca` manual and the usual how-tos).
# `unique_subject = no`: a cross-signed or re-issued CA has the subject of another.
CONFIG = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir               = {dir}
database          = $dir/index.txt
serial            = $dir/serial
crlnumber         = $dir/crlnumber
new_certs_dir     = $dir/newcerts
certificate       = $dir/ca.pem
private_key       = $dir/ca.key
default_md        = {md}
default_days      = 365
default_crl_days  = 7
preserve          = no
email_in_dn       = no
unique_subject    = no
copy_extensions   = none
policy            = policy_loose
x509_extensions   = usr_cert
{crl_extensions_line}

[ policy_loose ]
countryName             = optional
organizationName        = optional
organizationalUnitName  = optional
commonName              = supplied
domainComponent         = optional
userId                  = optional

[ req ]
distinguished_name = req_dn
prompt             = no
string_mask        = utf8only

[ req_dn ]
CN = unused

[ usr_cert ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer

[ v3_root ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always, issuer

[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always, issuer

[ v3_ca_pathlen0 ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always, issuer

[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""


def openssl(*args, cwd=None):
    result = subprocess.run(["openssl", *args], capture_output=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr.decode(errors='replace')}")
    return result.stdout


def new_key(path, key_type):
    keygen, _ = KEY_TYPES[key_type]
    openssl("genpkey", *keygen, "-out", path)
    os.chmod(path, 0o600)
    return path


def subject_string(subject):
    """("O", "x"), ("CN", "y") -> "/O=x/CN=y" for -subj."""
    return "".join(f"/{k}={v}" for k, v in subject)


def serial_of(cert_path):
    """The certificate's serial as an int."""
    out = openssl("x509", "-in", cert_path, "-noout", "-serial").decode()
    return int(out.strip().split("=", 1)[1], 16)


def der_hex(serial):
    """The serial as the proxy logs it: its DER content bytes in lower-case hex, without
    the leading zero byte DER adds to a number whose top bit is set."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex()


class CA:
    """One certificate authority: a folder laid out for `openssl ca`.

    A root signs itself (`openssl req -x509`); a subordinate CA's request is signed by
    its parent with `openssl ca -extensions v3_ca`."""

    def __init__(self, folder, name, key_type="p384", parent=None, pathlen0=False, key_of=None):
        self.folder = os.path.abspath(folder)
        self.name = name
        self.key_type = key_type
        self.subject = [("O", "realpki"), ("CN", name)]
        os.makedirs(os.path.join(self.folder, "newcerts"), exist_ok=True)
        with open(self.path("index.txt"), "w"):
            pass
        with open(self.path("index.txt.attr"), "w") as f:
            f.write("unique_subject = no\n")
        with open(self.path("serial"), "w") as f:
            # A random 64-bit start, as `openssl ca -create_serial` does; top bit clear.
            f.write(f"{secrets.randbits(63) | (1 << 62):016X}\n")
        with open(self.path("crlnumber"), "w") as f:
            f.write("1000\n")
        self.write_config()
        self.key = self.path("ca.key")
        self.cert = self.path("ca.pem")
        if key_of is not None:
            # Same subject and key as another CA (a cross-signed CA shares both).
            shutil.copy(key_of.key, self.key)
            self.subject = key_of.subject
            self.name = key_of.name
        else:
            new_key(self.key, key_type)
        if parent is None:
            openssl("req", "-config", self.config, "-new", "-x509", "-key", self.key,
                    "-subj", subject_string(self.subject), "-days", "3650", "-extensions", "v3_root",
                    *self.sigopts, "-out", self.cert)
        else:
            csr = self.path("ca.csr")
            openssl("req", "-config", self.config, "-new", "-key", self.key,
                    "-subj", subject_string(self.subject), *self.sigopts, "-out", csr)
            parent.sign(csr, self.cert, extensions="v3_ca_pathlen0" if pathlen0 else "v3_ca", days=1825)
        self.serial = serial_of(self.cert)

    @property
    def sigopts(self):
        return KEY_TYPES[self.key_type][1]

    def path(self, name):
        return os.path.join(self.folder, name)

    def write_config(self, crl_aki=True, name="openssl.cnf"):
        # Ed25519 has no separate digest; `openssl ca` then needs default_md = default.
        md = "default" if self.key_type == "ed25519" else "sha256"
        text = CONFIG.format(dir=self.folder, md=md,
                             crl_extensions_line="crl_extensions    = crl_ext" if crl_aki else "")
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        if name == "openssl.cnf":
            self.config = path
        return path

    def sign(self, csr, out, extensions="usr_cert", days=365):
        openssl("ca", "-batch", "-config", self.config, "-notext", "-preserveDN", "-extensions", extensions,
                "-days", str(days), *self.sigopts, "-in", csr, "-out", out)
        return out

    def issue(self, folder, name, key_type=None):
        """A client certificate (clientAuth) and its key: (cert path, key path)."""
        key_type = key_type or self.key_type
        os.makedirs(folder, exist_ok=True)
        key = new_key(os.path.join(folder, f"{name}.key"), key_type)
        csr = os.path.join(folder, f"{name}.csr")
        openssl("req", "-config", self.config, "-new", "-key", key,
                "-subj", subject_string([("O", "realpki"), ("OU", "people"), ("CN", name)]), "-out", csr)
        cert = self.sign(csr, os.path.join(folder, f"{name}.pem"))
        return cert, key

    def cross_sign(self, other, out):
        """A certificate for `other` (its subject and key) signed by this CA."""
        csr = out + ".csr"
        openssl("req", "-config", other.config, "-new", "-key", other.key,
                "-subj", subject_string(other.subject), *other.sigopts, "-out", csr)
        return self.sign(csr, out, extensions="v3_ca", days=1825)

    def revoke(self, cert, reason="keyCompromise"):
        openssl("ca", "-config", self.config, "-revoke", cert, "-crl_reason", reason)

    def gencrl(self, out, aki=True, empty=False):
        """`openssl ca -gencrl`: a CRL of every revocation in index.txt, or (empty) of none,
        as the CA would publish before revoking anything."""
        config = self.config if aki else self.write_config(crl_aki=False, name="openssl-noaki.cnf")
        if empty:
            scratch = self.path("empty-db")
            os.makedirs(scratch, exist_ok=True)
            open(os.path.join(scratch, "index.txt"), "w").close()
            with open(config) as f:
                text = f.read().replace("$dir/index.txt", f"{scratch}/index.txt")
            config = os.path.join(scratch, "openssl.cnf")
            with open(config, "w") as f:
                f.write(text)
        openssl("ca", "-config", config, "-gencrl", *self.sigopts, "-out", out)
        return out


def write_pem(out, *paths):
    """Concatenates PEM files (a bundle, a chain, a CRL file holding several CRLs)."""
    with open(out, "wb") as f:
        for path in paths:
            with open(path, "rb") as part:
                data = part.read()
            f.write(data if data.endswith(b"\n") else data + b"\n")
    return out


def index_time(moment):
    return moment.strftime("%y%m%d%H%M%SZ")


def big_crl(outdir, entries=100_001, key_type="p384"):
    """A CA whose `openssl ca -gencrl` CRL revokes `entries` serials, each with the
    reason keyCompromise: index.txt lines are written directly (issuing 100,000
    certificates one by one would take hours), then the CRL is made as a CA makes it.
    Returns the step timings in seconds."""
    timings = {}
    start = time.monotonic()
    os.makedirs(outdir, exist_ok=True)
    ca = CA(os.path.join(outdir, "ca"), "Big CRL CA", key_type)
    good, good_key = ca.issue(outdir, "client-good")
    revoked, revoked_key = ca.issue(outdir, "client-revoked")
    timings["CA and two clients"] = time.monotonic() - start

    start = time.monotonic()
    revoked_serial = serial_of(revoked)
    good_serial = serial_of(good)
    now = datetime.datetime.now(datetime.timezone.utc)
    expiry = index_time(now + datetime.timedelta(days=365))
    revoked_at = index_time(now - datetime.timedelta(hours=1))
    with open(ca.path("index.txt")) as f:
        issued = [line for line in f.read().splitlines() if line]
    lines = []
    for line in issued:
        fields = line.split("\t")
        if int(fields[3], 16) == revoked_serial:
            fields[0], fields[2] = "R", f"{revoked_at},keyCompromise"
        lines.append("\t".join(fields))
    # The other entries: serials from a base far from the CA's own counter.
    base = secrets.randbits(100) | (1 << 110)
    for n in range(entries - 1):
        serial = base + n
        assert serial not in (good_serial, revoked_serial)
        lines.append(f"R\t{expiry}\t{revoked_at},keyCompromise\t{serial:X}\tunknown\t/CN=user{n}")
    with open(ca.path("index.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    timings["index.txt"] = time.monotonic() - start

    start = time.monotonic()
    crl = ca.gencrl(os.path.join(outdir, "ca.crl"))
    timings["openssl ca -gencrl"] = time.monotonic() - start
    shutil.copy(ca.cert, os.path.join(outdir, "ca.pem"))
    shutil.copy(ca.key, os.path.join(outdir, "ca.key"))
    return {"ca": ca, "crl": crl, "good": (good, good_key), "revoked": (revoked, revoked_key), "timings": timings}


def demo(outdir):
    root = CA(os.path.join(outdir, "root"), "Root CA", "p384")
    inter = CA(os.path.join(outdir, "intermediate"), "Intermediate CA", "p384", parent=root, pathlen0=True)
    inter.issue(outdir, "good")
    revoked, _ = inter.issue(outdir, "revoked")
    inter.revoke(revoked)
    root.gencrl(os.path.join(outdir, "root.crl"))
    inter.gencrl(os.path.join(outdir, "intermediate.crl"))
    write_pem(os.path.join(outdir, "root-bundle.pem"), root.cert)
    write_pem(os.path.join(outdir, "chain.pem"), inter.cert)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="root, intermediate, a good and a revoked client, CRLs")
    p_demo.add_argument("outdir")
    p_big = sub.add_parser("bigcrl", help="a CA with a CRL of N entries from openssl ca -gencrl")
    p_big.add_argument("outdir")
    p_big.add_argument("--entries", type=int, default=100_001)
    p_big.add_argument("--key-type", choices=sorted(KEY_TYPES), default="p384")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.outdir)
        print(f"PKI written to {args.outdir}")
        return
    total = time.monotonic()
    result = big_crl(args.outdir, args.entries, args.key_type)
    for step, seconds in result["timings"].items():
        print(f"{step}: {seconds:.2f} s")
    print(f"total: {time.monotonic() - total:.2f} s")
    print(f"{args.outdir}/ca.pem, ca.key, ca.crl ({os.path.getsize(result['crl'])} bytes, {args.entries} entries)")
    print(f"{args.outdir}/client-revoked.pem (serial {serial_of(result['revoked'][0]):X}, in the CRL), "
          f"client-good.pem (serial {serial_of(result['good'][0]):X}, not in it)")


if __name__ == "__main__":
    main(sys.argv[1:])
