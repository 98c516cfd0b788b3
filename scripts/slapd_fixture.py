#!/usr/bin/env python3
"""A throw-away slapd on loopback, for the demo and the tests.

    scripts/slapd_fixture.py [--authz] DIR PORT
                                         set up DIR (config, mdb database, a few users)
                                         and run slapd in the foreground on 127.0.0.1:PORT

The entries are dc=example,dc=com with ou=people and the users alice, bob and carol,
whose DNs are the subjects of the client certificates that scripts/pki.py makes.

Without --authz everyone may read everything (the proxy only relays bytes). With --authz
the directory is set up as a deployment behind `client_auth = sasl-external|certificate`
would be: `authz-policy to`, a service entry for the proxy (PROXY_DN, its password in
DIR/proxy.password) whose authzTo lets it act for the users under ou=people only, and
ACLs that let a user write only their own entry and hide `mail` from anonymous.
"""
import os
import shutil
import subprocess
import sys
import time

SUFFIX = "dc=example,dc=com"
ROOT_DN = "cn=admin,dc=example,dc=com"
ROOT_PW = "secret"
USERS = ["alice", "bob", "carol"]
# The proxy's own identity on its backend connections (--authz only).
PROXY_DN = "cn=mtls-proxy,ou=services,dc=example,dc=com"
PROXY_PW = "proxy-secret"
PROXY_AUTHZ_TO = "dn.regex:^uid=[^,]+,ou=people,dc=example,dc=com$"
# A user with a password of its own (--authz only): a client's named simple bind that
# the proxy passes on to slapd under client_auth = sasl-external.
PASSWORD_USER, PASSWORD_USER_PW = "carol", "carol-secret"

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
sizelimit unlimited
database mdb
maxsize 268435456
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/data
{access}
"""

# Everyone reads everything: a transparent proxy's backend.
OPEN_ACCESS = "access to * by * read"

# As a deployment would have it (slapd.access(5)): the first matching "to" wins, and in it
# the first matching "by". authzTo is what lets the proxy act for someone, so nobody may
# write it, and nobody but the proxy itself may read it (slapd's own authz check reads it
# with "auth" access). A user writes description and mail of their own entry only; mail
# is for authenticated users, so an anonymous request sees less than alice does.
AUTHZ_ACCESS = """\
access to attrs=userPassword
    by self =w
    by anonymous auth
    by * none
access to attrs=authzTo
    by dn.exact="{proxy}" read
    by * auth
access to dn.subtree="ou=people,{suffix}" attrs=description,mail
    by self write
    by dn.exact="{proxy}" read
    by users read
    by * none
access to *
    by dn.exact="{proxy}" read
    by users read
    by anonymous read
"""

# Proxied authorization: the proxy's entry names whom it may act for (authzTo).
AUTHZ_POLICY = "authz-policy to\n"


def authz_ldif():
    """The service entry of the proxy."""
    return (f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n"
            f"dn: {PROXY_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
            f"cn: mtls-proxy\nuserPassword: {PROXY_PW}\nauthzTo: {PROXY_AUTHZ_TO}\n")


def base_ldif(users=USERS, extra=0, passwords=None):
    passwords = passwords or {}
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
    ]
    for user in users:
        entries.append(
            f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {user}\n"
            f"cn: {user.capitalize()} Example\nsn: Example\nmail: {user}@example.com\n"
            + (f"userPassword: {passwords[user]}\n" if user in passwords else ""))
    for i in range(extra):
        entries.append(
            f"dn: uid=user{i:05d},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i:05d}\n"
            f"cn: User {i}\nsn: Number{i}\ndescription: {'x' * 200}\n")
    return "\n".join(entries)


def setup(directory, extra_entries=0, authz=False):
    """Writes slapd.conf and loads the entries with slapadd (before slapd starts).
    With authz, also DIR/proxy.password (see the top of this file)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "data"))
    conf = os.path.join(directory, "slapd.conf")
    access = AUTHZ_ACCESS.format(proxy=PROXY_DN, suffix=SUFFIX) if authz else OPEN_ACCESS
    with open(conf, "w") as f:
        f.write((AUTHZ_POLICY if authz else "")
                + SLAPD_CONF.format(dir=directory, suffix=SUFFIX, rootdn=ROOT_DN, rootpw=ROOT_PW, access=access))
    ldif = os.path.join(directory, "base.ldif")
    with open(ldif, "w") as f:
        if authz:
            f.write(base_ldif(extra=extra_entries, passwords={PASSWORD_USER: PASSWORD_USER_PW}) + "\n" + authz_ldif())
        else:
            f.write(base_ldif(extra=extra_entries))
    subprocess.run(["slapadd", "-q", "-f", conf, "-l", ldif], check=True, capture_output=True)
    if authz:
        with open(password_file(directory), "w") as f:
            f.write(PROXY_PW + "\n")
        os.chmod(password_file(directory), 0o600)
    return conf


def password_file(directory):
    """Where setup(authz=True) writes the proxy's backend bind password."""
    return os.path.join(directory, "proxy.password")


def command(directory, port):
    # -d 0: stay in the foreground (so the caller owns the process) with no debug output.
    return ["slapd", "-f", os.path.join(directory, "slapd.conf"), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"]


def wait_ready(port, timeout=15.0):
    """Polls with ldapsearch until slapd answers (a readiness check, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["ldapsearch", "-x", "-H", f"ldap://127.0.0.1:{port}", "-b", SUFFIX, "-s", "base", "dn"],
            capture_output=True)
        if result.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"slapd on port {port} did not answer within {timeout}s")


if __name__ == "__main__":
    args = sys.argv[1:]
    authz = args[:1] == ["--authz"]
    if authz:
        args = args[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    directory, port = os.path.abspath(args[0]), args[1]
    setup(directory, authz=authz)
    os.execvp("slapd", command(directory, port))
