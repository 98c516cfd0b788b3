#!/usr/bin/env python3
"""A throw-away slapd on loopback, for the demo and the tests.

    scripts/slapd_fixture.py DIR PORT    set up DIR (config, mdb database, a few users)
                                         and run slapd in the foreground on 127.0.0.1:PORT

The entries are dc=example,dc=com with ou=people and the users alice, bob and carol,
whose DNs are the subjects of the client certificates that scripts/pki.py makes.
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
access to * by * read
"""


def base_ldif(users=USERS, extra=0):
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
    ]
    for user in users:
        entries.append(
            f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {user}\n"
            f"cn: {user.capitalize()} Example\nsn: Example\nmail: {user}@example.com\n")
    for i in range(extra):
        entries.append(
            f"dn: uid=user{i:05d},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i:05d}\n"
            f"cn: User {i}\nsn: Number{i}\ndescription: {'x' * 200}\n")
    return "\n".join(entries)


def setup(directory, extra_entries=0):
    """Writes slapd.conf and loads the entries with slapadd (before slapd starts)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "data"))
    conf = os.path.join(directory, "slapd.conf")
    with open(conf, "w") as f:
        f.write(SLAPD_CONF.format(dir=directory, suffix=SUFFIX, rootdn=ROOT_DN, rootpw=ROOT_PW))
    ldif = os.path.join(directory, "base.ldif")
    with open(ldif, "w") as f:
        f.write(base_ldif(extra=extra_entries))
    subprocess.run(["slapadd", "-q", "-f", conf, "-l", ldif], check=True, capture_output=True)
    return conf


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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    directory, port = os.path.abspath(sys.argv[1]), sys.argv[2]
    setup(directory)
    os.execvp("slapd", command(directory, port))
