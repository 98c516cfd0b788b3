#!/usr/bin/env python3
"""Generates the test and demo PKI for mtls-proxy.

Python's `cryptography` (OpenSSL underneath) instead of certtool or the openssl CLI:
it sets every date exactly (expired and not-yet-valid certificates, CRLs that expire a
few seconds from now) without faketime, and builds large CRLs quickly.

    scripts/pki.py init DIR          root CA, intermediate CA, a stranger CA, a server
                                     certificate, clients of every kind, CRLs
    scripts/pki.py rsa-server DIR    an RSA server certificate (server-rsa.pem/.key) in an
                                     existing PKI
    scripts/pki.py crl DIR ISSUER OUT [--revoke NAME ...] [--next-update SECONDS]
                                     write a CRL of ISSUER (root|intermediate)

Tests import this file and call the same functions.
"""
import argparse
import datetime
import ipaddress
import os
import socket
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)

# name -> (issuer, options). Subjects are LDAP entry DNs so that a certificate maps to
# the directory entry of its user.
CLIENTS = {
    "alice": ("intermediate", {}),            # good, chain through the intermediate
    "bob": ("root", {}),                      # good, issued by the root
    "carol": ("intermediate", {}),            # good, used where a second user is needed
    "revoked-root": ("root", {}),             # revoked by the root's CRL
    "revoked-int": ("intermediate", {}),      # revoked by the intermediate's CRL
    "expired": ("intermediate", {"not_before": NOW - 30 * DAY, "not_after": NOW - DAY}),
    "notyet": ("intermediate", {"not_before": NOW + 10 * DAY, "not_after": NOW + 40 * DAY}),
    "serverauth": ("intermediate", {"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}),
    "stranger": ("stranger", {}),             # issued by a CA the proxy does not trust
    "selfsigned": (None, {}),
}
REVOKED = {"root": ["revoked-root"], "intermediate": ["revoked-int"]}


def subject_for(name):
    return x509.Name([
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "com"),
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "people"),
        x509.NameAttribute(NameOID.USER_ID, name),
    ])


def ca_name(label):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtls-proxy test"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{label} CA"),
    ])


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)


def write_pem(path, *objects):
    with open(path, "wb") as f:
        for obj in objects:
            f.write(obj.public_bytes(serialization.Encoding.PEM))


def load(dirpath, label):
    with open(os.path.join(dirpath, f"{label}.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(dirpath, f"{label}.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def make_cert(subject, key, issuer_cert, issuer_key, *, ca=False, path_len=None, eku=None, san=None,
              not_before=None, not_after=None, serial=None, key_encipherment=False, crl_url=None, ocsp_url=None):
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before or NOW - DAY)
               .not_valid_after(not_after or NOW + 365 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
            data_encipherment=False, key_agreement=not key_encipherment, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.CLIENT_AUTH]),
                                        critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_crl(issuer_cert, issuer_key, serials, *, next_update_seconds=7 * 86400, this_update=None, number=1,
             extensions=(), reasons=False, key_id_of=None):
    """A CRL revoking `serials`, signed by `issuer_key`. With `reasons`, every entry
    carries a reason code (keyCompromise), as OpenSSL's CA, EJBCA, Dogtag and
    Microsoft's CA write them. Its authority key identifier is that of `key_id_of` (a
    public key) when given, else that of the signing key."""
    next_update = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=next_update_seconds)
    # An expired CRL was issued before it expired.
    this_update = this_update or min(NOW - datetime.timedelta(minutes=5), next_update - DAY)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer_cert.subject)
               .last_update(this_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   key_id_of or issuer_key.public_key()), critical=False))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    revocation = x509.RevokedCertificateBuilder().revocation_date(this_update)
    if reasons:
        revocation = revocation.add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
    for serial in serials:
        builder = builder.add_revoked_certificate(revocation.serial_number(serial).build())
    return builder.sign(issuer_key, hashes.SHA256())


def serial_of(dirpath, name):
    with open(os.path.join(dirpath, f"{name}.pem"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


def write_crl(dirpath, issuer, out, revoke=(), next_update_seconds=7 * 86400, number=None, der=False,
              forged=False, extensions=(), reasons=False):
    """Writes a CRL of `issuer` revoking the named clients (or raw serials).

    forged=True: the issuer's name, signed by a key nobody trusts, whose own key
    identifier it carries (so a lookup by key identifier never even finds it).
    forged="impersonate": the same, but carrying the genuine issuer's name AND key
    identifier: only the signature check tells it from the real CRL."""
    cert, key = load(dirpath, f"{issuer}-ca")
    key_id_of = None
    if forged:
        if forged == "impersonate":
            key_id_of = key.public_key()
        key = new_key()  # same issuer name, a key nobody trusts
    serials = [s if isinstance(s, int) else serial_of(dirpath, s) for s in revoke]
    number = number if number is not None else int(datetime.datetime.now().timestamp() * 1000)
    crl = make_crl(cert, key, serials, next_update_seconds=next_update_seconds, number=number, extensions=extensions,
                   reasons=reasons, key_id_of=key_id_of)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    os.replace(tmp, out)  # atomic: a watcher never sees half a file
    return out


def server_names():
    """localhost and 127.0.0.1, plus this machine's own name: libldap checks the name it
    gets back from a reverse lookup of 127.0.0.1, which /etc/hosts may map to it."""
    names = ["localhost"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    return [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def issue_client(dirpath, name, serial=None):
    """A client certificate of the intermediate CA (optionally with a chosen serial)."""
    inter, inter_key = load(dirpath, "intermediate-ca")
    key = new_key()
    cert = make_cert(subject_for(name), key, inter, inter_key, serial=serial)
    write_pem(os.path.join(dirpath, f"{name}.pem"), cert)
    write_key(os.path.join(dirpath, f"{name}.key"), key)
    return cert


def reissue_server(dirpath, cert_path, key_path):
    """A new server certificate (new key, new serial) for `localhost`, written atomically
    to the given paths, key first."""
    inter, inter_key = load(dirpath, "intermediate-ca")
    key = new_key()
    cert = make_cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), key, inter, inter_key,
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH], san=server_names())
    write_key(key_path + ".new", key)
    os.replace(key_path + ".new", key_path)
    write_pem(cert_path + ".new", cert, inter)
    os.replace(cert_path + ".new", cert_path)
    return cert


def extra_server(dirpath, name, key_type="ecdsa", crl_url=None):
    """Another server certificate for localhost, issued by the intermediate CA: NAME.pem
    (with the intermediate) and NAME.key. An RSA-2048 one has the key usages of a usual
    RSA server certificate (digitalSignature and keyEncipherment): the latter allows
    static-RSA key exchange, so a client or a scan against it sees every TLS 1.2 suite
    the priority string lets through. `crl_url` adds a CRL distribution point, as real
    server certificates carry (scanners flag a certificate without one)."""
    inter, inter_key = load(dirpath, "intermediate-ca")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if key_type == "rsa" else new_key()
    cert = make_cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), key, inter, inter_key,
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH], san=server_names(), key_encipherment=key_type == "rsa",
                     crl_url=crl_url)
    write_pem(os.path.join(dirpath, f"{name}.pem"), cert, inter)
    write_key(os.path.join(dirpath, f"{name}.key"), key)
    return cert


def rsa_server(dirpath):
    """server-rsa.pem / server-rsa.key: an RSA server certificate (see extra_server)."""
    return extra_server(dirpath, "server-rsa", key_type="rsa")


def init(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    root_key = new_key()
    root = make_cert(ca_name("Root"), root_key, None, root_key, ca=True, not_after=NOW + 3650 * DAY)
    inter_key = new_key()
    inter = make_cert(ca_name("Intermediate"), inter_key, root, root_key, ca=True, path_len=0,
                      not_after=NOW + 1825 * DAY)
    stranger_key = new_key()
    stranger = make_cert(ca_name("Stranger"), stranger_key, None, stranger_key, ca=True)
    for label, cert, key in [("root-ca", root, root_key), ("intermediate-ca", inter, inter_key),
                             ("stranger-ca", stranger, stranger_key)]:
        write_pem(os.path.join(dirpath, f"{label}.pem"), cert)
        write_key(os.path.join(dirpath, f"{label}.key"), key)
    write_pem(os.path.join(dirpath, "ca-bundle.pem"), root, inter)

    server_key = new_key()
    server = make_cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), server_key, inter, inter_key,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        san=server_names())
    write_pem(os.path.join(dirpath, "server.pem"), server, inter)
    write_key(os.path.join(dirpath, "server.key"), server_key)

    issuers = {"root": (root, root_key), "intermediate": (inter, inter_key), "stranger": (stranger, stranger_key)}
    for name, (issuer, options) in CLIENTS.items():
        key = new_key()
        if issuer is None:
            cert = make_cert(subject_for(name), key, None, key, **options)
        else:
            cert = make_cert(subject_for(name), key, *issuers[issuer], **options)
        write_pem(os.path.join(dirpath, f"{name}.pem"), cert)
        write_key(os.path.join(dirpath, f"{name}.key"), key)

    crl_dir = os.path.join(dirpath, "crl")
    os.makedirs(crl_dir, exist_ok=True)
    for issuer, names in REVOKED.items():
        write_crl(dirpath, issuer, os.path.join(crl_dir, f"{issuer}.crl"), names, number=1)
    return dirpath


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="generate a whole PKI in DIR")
    p_init.add_argument("dir")
    p_rsa = sub.add_parser("rsa-server", help="add an RSA server certificate to the PKI in DIR")
    p_rsa.add_argument("dir")
    p_crl = sub.add_parser("crl", help="write a CRL")
    p_crl.add_argument("dir")
    p_crl.add_argument("issuer", choices=["root", "intermediate"])
    p_crl.add_argument("out")
    p_crl.add_argument("--revoke", nargs="*", default=[])
    p_crl.add_argument("--next-update", type=int, default=7 * 86400, help="seconds from now (negative: expired)")
    p_crl.add_argument("--der", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "init":
        init(args.dir)
        print(f"PKI written to {args.dir}")
    elif args.command == "rsa-server":
        rsa_server(args.dir)
        print(f"RSA server certificate written to {args.dir}/server-rsa.pem")
    else:
        write_crl(args.dir, args.issuer, args.out, args.revoke, args.next_update, der=args.der)
        print(f"CRL written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
