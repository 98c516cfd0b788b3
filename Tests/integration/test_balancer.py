"""Two instances behind a real HAProxy in TCP mode (send-proxy-v2, health checks on
/readyz), in front of a slapd on a pldap:// listener: the client's own address at every
hop, tickets shared between instances, and a rolling restart under a steady stream of
short LDAP clients in which no operation fails."""
import base64
import os
import re
import signal
import socket
import ssl
import subprocess
import threading

import pytest

import slapd_fixture
from helpers import Proxy, accepts_tcp, client_context, free_port, proxy_config, wait_until
from ldapwire import EXTENDED_RESPONSE, NOTICE_OF_DISCONNECTION, describe, search_request, split_messages

pytestmark = pytest.mark.skipif(subprocess.run(["which", "haproxy"], capture_output=True).returncode != 0,
                                reason="haproxy is not installed (scripts/install-deps installs it)")


@pytest.fixture
def slapd_pldap(tmp_path):
    """slapd reading a PROXY header on its LDAP port, logging connections (stats)."""
    directory = str(tmp_path / "slapd")
    slapd_fixture.setup(directory)
    port = free_port()
    log_path = tmp_path / "slapd.log"
    command = slapd_fixture.command(directory, port)
    command[command.index(f"ldap://127.0.0.1:{port}/")] = f"pldap://127.0.0.1:{port}/"
    command[command.index("-d") + 1] = "256"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: accepts_tcp(port), what=f"slapd on {port}")
    yield port, log_path
    process.terminate()
    process.wait(10)


class Cluster:
    def __init__(self, workdir, pki, slapd_port, ticket_key):
        self.workdir, self.pki = workdir, pki
        self.ports = [free_port(), free_port()]
        self.health = [free_port(), free_port()]
        self.configs = [
            proxy_config(pki, self.ports[i], f"127.0.0.1:{slapd_port}", health_port=self.health[i],
                         globals_={"shutdown_grace": "3s", "drain_delay": "1s"}, workers=1,
                         proxy_protocol="v2", proxy_protocol_in="v2", trusted_proxies="127.0.0.1",
                         ticket_key_file=ticket_key)
            for i in range(2)]
        self.proxies = [Proxy(workdir, config) for config in self.configs]
        self.front = free_port()
        cfg = os.path.join(workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend ldaps
    bind 127.0.0.1:{self.front}
    default_backend proxies
backend proxies
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2
    server p0 127.0.0.1:{self.ports[0]} send-proxy-v2 check port {self.health[0]}
    server p1 127.0.0.1:{self.ports[1]} send-proxy-v2 check port {self.health[1]}
""")
        self.haproxy_log = open(os.path.join(workdir, "haproxy.log"), "wb")
        self.haproxy = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=self.haproxy_log, stderr=subprocess.STDOUT)
        wait_until(lambda: accepts_tcp(self.front), what="haproxy to listen")
        # Both instances in rotation: each has served a connection through HAProxy.
        wait_until(lambda: self.both_serve(), timeout=20, what="both instances to serve through haproxy")

    def both_serve(self):
        search(self.front, self.pki)
        return all(p.log_lines("connection closed") for p in self.proxies)

    def restart(self, index):
        old = self.proxies[index]
        old.signal(signal.SIGTERM)
        old.process.wait(30)
        assert old.process.returncode == 0, old.log()
        self.proxies[index] = Proxy(self.workdir, self.configs[index])
        # Back in rotation: HAProxy's checks saw /readyz and sent it a client.
        wait_until(lambda: self.proxies[index].log_lines("connection closed"), timeout=20,
                   what=f"instance {index} to serve again")
        return old

    def stop(self):
        self.haproxy.terminate()
        self.haproxy.wait(10)
        self.haproxy_log.close()
        for proxy in self.proxies:
            proxy.stop()


def search(port, pki, name="alice", source_port=None, session=None, ctx=None):
    """One LDAP client: TLS through the balancer, a search for alice's entry, unbind."""
    raw = socket.socket()
    if source_port:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        raw.bind(("127.0.0.1", source_port))
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    ctx = ctx or client_context(pki, name)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
        s.sendall(search_request(1, attribute="uid"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before the search was done: {data[:64]!r}")
            data += chunk
            messages, _ = split_messages(data)
            done = [m for m in messages if describe(m)[1] == 0x65]
            if done:
                assert describe(done[0])[2] == 0, describe(done[0])
                break
        s.sendall(bytes([0x30, 0x05, 0x02, 0x01, 0x02, 0x42, 0x00]))  # unbind
        # slapd closes after the unbind, and the proxy ends the session with close_notify:
        # read to that end, so that the connection closes in order (no reset).
        while s.recv(65536):
            pass
        return s.session, s.session_reused


@pytest.fixture
def cluster(tmp_path, pki, slapd_pldap):
    key = tmp_path / "ticket.key"
    key.write_text(base64.b64encode(os.urandom(64)).decode() + "\n")
    c = Cluster(str(tmp_path), pki, slapd_pldap[0], str(key))
    c.slapd_log = slapd_pldap[1]
    yield c
    c.stop()


def test_the_clients_own_address_reaches_each_instance_and_slapd(cluster, pki):
    for _ in range(2):  # round robin: one to each instance
        source = free_port()
        search(cluster.front, pki, source_port=source)
        wait_until(lambda: any(p.log_lines(f"client=127.0.0.1:{source} .*end=closed") for p in cluster.proxies),
                   what=f"an instance to log client port {source}")
        line = [l for p in cluster.proxies for l in p.log_lines(f"client=127.0.0.1:{source} ")][0]
        assert re.search(r"via=127\.0\.0\.1:\d+", line), line
        wait_until(lambda: f"IP=127.0.0.1:{source} " in cluster.slapd_log.read_text(errors="replace"),
                   what=f"slapd to log the client's port {source}")
    assert all(p.log_lines("connection closed.*via=") for p in cluster.proxies), "both instances served"


def test_a_ticket_from_one_instance_resumes_on_the_other(cluster, pki):
    ctx = client_context(pki, "bob")
    session, _ = search(cluster.front, pki, ctx=ctx)
    resumed = [search(cluster.front, pki, ctx=ctx, session=session)[1] for _ in range(2)]
    assert all(resumed), resumed
    # Round robin sent the two resumptions to different instances: both resumed.
    wait_until(lambda: all(p.log_lines("UID=bob.*resumed=yes.*end=closed") for p in cluster.proxies),
               what="a resumed bob on each instance")


def test_rolling_restart_loses_no_operation(cluster, pki):
    results = {"ok": 0, "failed": []}
    stop = threading.Event()
    lock = threading.Lock()
    ctx = client_context(pki, "alice")

    def client():
        while not stop.is_set():
            try:
                search(cluster.front, pki, ctx=ctx)
                with lock:
                    results["ok"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    results["failed"].append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: results["ok"] >= 20, what="the client stream to run")
        # A long session held open on one instance across its SIGTERM: it must get the
        # Notice of Disconnection after shutdown_grace, whole, at a message boundary.
        long_raw = socket.create_connection(("127.0.0.1", cluster.front), timeout=20)
        held = client_context(pki, "carol").wrap_socket(long_raw, server_hostname="localhost")
        held.sendall(search_request(1, attribute="uid"))
        data = b""
        while not any(describe(m)[1] == 0x65 for m in split_messages(data)[0]):
            chunk = held.recv(65536)
            assert chunk, "the held session closed before its search was answered"
            data += chunk
        for index in (0, 1):
            before = results["ok"]
            old = cluster.restart(index)
            assert "stopping" in old.log()
            wait_until(lambda: results["ok"] >= before + 20, timeout=30, what="clients to go on after the restart")
        try:
            while True:
                chunk = held.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError):
            pass
        messages, _ = split_messages(data)
        assert describe(messages[-1])[1:] == (EXTENDED_RESPONSE, 52, NOTICE_OF_DISCONNECTION), [describe(m) for m in messages]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"rolling restart: {results['ok']} operations, {len(results['failed'])} failed")
    assert results["failed"] == [], f"{len(results['failed'])} of {results['ok'] + len(results['failed'])} failed: {results['failed'][:5]}"
    assert results["ok"] >= 60
