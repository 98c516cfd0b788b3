import os
import shutil
import subprocess
import sys

import pytest

from helpers import BINARY, REPO, Backend, Proxy, free_port, proxy_config

sys.path.insert(0, os.path.join(REPO, "scripts"))
import pki as pki_module  # noqa: E402
import slapd_fixture  # noqa: E402
from authzkit import AuthzDirectory, authz_config  # noqa: E402


@pytest.fixture(scope="session")
def binary():
    assert os.access(BINARY, os.X_OK), f"build the proxy first (swift build): {BINARY} is missing"
    return BINARY


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A fresh PKI for the whole run: certificates are never committed, so never stale."""
    return pki_module.init(str(tmp_path_factory.mktemp("pki")))


def running_slapd(directory, extra_entries=0, authz=False, log=None):
    """Sets up and runs a slapd on a free loopback port; yields its HOST:PORT. With a
    `log` path, slapd writes its stats (connections, binds, operations) there."""
    slapd_fixture.setup(directory, extra_entries=extra_entries, authz=authz)
    port = free_port()
    command = slapd_fixture.command(directory, port)
    output = subprocess.DEVNULL
    if log:
        command[command.index("-d") + 1] = "256"
        output = open(log, "wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        slapd_fixture.wait_ready(port)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if log:
            output.close()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    """A real slapd (mdb) with the users alice, bob and carol, on a free loopback port."""
    yield from running_slapd(str(tmp_path_factory.mktemp("slapd")))


@pytest.fixture(scope="session")
def big_slapd(tmp_path_factory):
    """A slapd with 20,000 extra entries (about 10 MB of search results): enough that
    a full search is still streaming while a test does something to the connection."""
    yield from running_slapd(str(tmp_path_factory.mktemp("slapd-big")), extra_entries=20000)


@pytest.fixture(scope="session")
def authz_slapd(tmp_path_factory):
    """A slapd set up as behind client_auth = sasl-external|certificate (slapd_fixture
    --authz): `authz-policy to`, the proxy's service entry with authzTo, own-entry ACLs.
    Yields an AuthzDirectory: its address, the proxy's bind DN and password file, and
    slapd's stats log (what slapd itself saw)."""
    folder = str(tmp_path_factory.mktemp("slapd-authz"))
    database, log = os.path.join(folder, "db"), os.path.join(folder, "slapd.log")
    for address in running_slapd(database, authz=True, log=log):
        yield AuthzDirectory(address, slapd_fixture.PROXY_DN, slapd_fixture.password_file(database), log)


@pytest.fixture
def backend():
    b = Backend("echo")
    yield b
    b.close()


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def start_proxy(binary, workdir):
    """Starts the real binary; stops every proxy it started at the end of the test."""
    started = []

    def start(config_text=None, args=None, wait=True, env=None):
        proxy = Proxy(workdir, config_text or "", args=args, wait=wait, env=env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start_proxy, pki, backend):
    """A proxy in front of an echo backend. No health endpoint: then the proxy makes no
    readiness probes, and every connection the backend counts was relayed."""
    port = free_port()
    p = start_proxy(proxy_config(pki, port, backend.address))
    p.port = port
    return p


@pytest.fixture
def crl_dir(pki, tmp_path):
    """A CRL folder of this test's own, freshly signed (CRL number 1), that it may rewrite."""
    target = tmp_path / "crl"
    target.mkdir()
    for issuer, names in pki_module.REVOKED.items():
        pki_module.write_crl(pki, issuer, str(target / f"{issuer}.crl"), names, number=1)
    return str(target)


@pytest.fixture
def crl_copy(pki, tmp_path):
    """A private copy of the CRL folder that a test may change."""
    target = tmp_path / "crl"
    shutil.copytree(os.path.join(pki, "crl"), target)
    return str(target)


@pytest.fixture
def authz_proxy(start_proxy, pki, authz_slapd):
    """Starts a proxy with client_auth (and tls=..., any other key) in front of the authz
    slapd, bound there as the proxy's service entry; returns it with .port set."""
    def start(client_auth="sasl-external", **extra):
        port = free_port()
        proxy = start_proxy(authz_config(pki, port, authz_slapd, client_auth=client_auth, **extra))
        proxy.port = port
        return proxy
    return start
