"""Shared pieces of the integration tests: the real binary, real backends, real clients."""
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("MTLS_PROXY_BIN", os.path.join(REPO, ".build", "debug", "mtls-proxy"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts_tcp(port):
    """Whether something listens on 127.0.0.1:port (for servers with no other readiness signal)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_digest(conn):
    """Reads to EOF; returns (byte count, SHA-256 hex) of what arrived."""
    digest, total = hashlib.sha256(), 0
    while True:
        data = conn.recv(65536)
        if not data:
            return total, digest.hexdigest()
        digest.update(data)
        total += len(data)


class Backend:
    """A TCP server on loopback that counts the connections it accepts.

    mode "echo": sends back what it reads, and shuts down its write side at EOF.
    mode "digest": reads to EOF, then answers the SHA-256 and byte count of what it read.
    mode "greet": sends a line, half-closes, then reads to EOF and keeps the digest.
    mode "deaf": never reads (its receive buffer fills up), until close().
    """

    def __init__(self, mode="echo"):
        self.mode = mode
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.closed = False
        self.eof_seen = threading.Event()
        self.received = None
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.mode == "echo":
                while True:
                    data = conn.recv(65536)
                    if not data:
                        self.eof_seen.set()
                        break
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            elif self.mode == "greet":
                # Speaks first and half-closes at once, then reads what the client sends.
                conn.sendall(b"hello from the backend\n")
                conn.shutdown(socket.SHUT_WR)
                self.received = read_digest(conn)
                self.eof_seen.set()
            elif self.mode == "deaf":
                self.stopped.wait()
                return
            elif self.mode == "digest":
                total, digest = read_digest(conn)
                self.eof_seen.set()
                conn.sendall(f"{total} {digest}\n".encode())
                conn.shutdown(socket.SHUT_WR)
            # keep the socket open until the peer closes, so that closes are theirs
            while conn.recv(65536):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.closed = True
        self.stopped.set()
        self.sock.close()


def client_context(pki, name, tls=None):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "root-ca.pem"))
    if name is not None:
        ctx.load_cert_chain(os.path.join(pki, f"{name}.pem"), os.path.join(pki, f"{name}.key"))
    if tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def tls_connect(port, pki, name, tls=None, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_context(pki, name, tls).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def echo_back(sock, payload):
    """Sends `payload` and reads until as many bytes came back, or EOF."""
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def round_trip(port, pki, name, payload=b"ping\n", tls=None):
    with tls_connect(port, pki, name, tls) as s:
        return echo_back(s, payload)


def refusal(port, pki, name, tls=None):
    """Connects and reads; returns the SSL error text the client reports.

    TLS 1.3 clients finish their side of the handshake before the server's verdict
    arrives, so the alert shows on the first read, not in the handshake."""
    try:
        with tls_connect(port, pki, name, tls) as s:
            s.sendall(b"hello")
            data = s.recv(100)
            return f"no alert: read {data!r}"
    except ssl.SSLError as e:
        return str(e)
    except OSError as e:
        return f"os error: {e}"


class Proxy:
    """The real mtls-proxy binary with a config file, its log in a file."""

    def __init__(self, workdir, config_text, args=None, wait=True, env=None):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, f"proxy-{free_port()}.conf")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = self.config_path + ".log"
        self.log_file = open(self.log_path, "wb")
        cmd = [BINARY] + (args if args is not None else ["--config", self.config_path])
        # `env` adds variables (NOTIFY_SOCKET...) to the test's own environment; the
        # systemd ones of the test run itself (under a service manager) stay out.
        environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        environment.update(env or {})
        self.process = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=environment)
        if wait:
            self.wait_for_log("mtls-proxy started", timeout=15)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_for_log(self, pattern, timeout=10.0, count=1):
        def found():
            if self.process.poll() is not None and len(re.findall(pattern, self.log())) < count:
                raise AssertionError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            return len(re.findall(pattern, self.log())) >= count
        wait_until(found, timeout, what=f"log line /{pattern}/ x{count}:\n{self.log()}")

    def log_lines(self, pattern):
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def signal(self, sig):
        self.process.send_signal(sig)

    def stop(self, timeout=15):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


def listener_config(pki, port, backend, name="ldaps", **extra):
    lines = [
        f"[{name}]",
        f"listen = 127.0.0.1:{port}",
        f"backend = {backend}",
        f"cert = {pki}/server.pem",
        f"key = {pki}/server.key",
        f"ca_bundle = {pki}/ca-bundle.pem",
    ]
    if "crl_dir" not in extra:
        extra["crl_dir"] = f"{pki}/crl"
    for key, value in extra.items():
        if value is not None:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def proxy_config(pki, port, backend, health_port=None, globals_=None, workers=2, **extra):
    head = [f"workers = {workers}"] if workers else []
    if health_port:
        head.append(f"health_listen = 127.0.0.1:{health_port}")
    for key, value in (globals_ or {}).items():
        head.append(f"{key} = {value}")
    return "\n".join(head) + "\n" + listener_config(pki, port, backend, **extra)


def http_get(port, path, method="GET", raw=None, timeout=10):
    """A minimal HTTP/1.1 client: returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw if raw is not None else f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, body.decode(errors="replace")


def converse(cmd, send, expect, timeout=20):
    """Runs an interactive client (openssl s_client, gnutls-cli), writes `send`, and
    reads its output until `expect` shows up. Returns everything it printed."""
    import select
    process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""
    try:
        process.stdin.write(send)
        process.stdin.flush()
        deadline = time.monotonic() + timeout
        while expect not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    finally:
        process.kill()
        process.wait()
    return output


class BioClient:
    """A TLS client over memory BIOs, for what ssl.SSLSocket cannot do: send
    close_notify and keep reading (a TLS half-close)."""

    def __init__(self, port, pki=None, name=None, tls=None, timeout=20, ctx=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = ctx or client_context(pki, name, tls)
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self._run(self.tls.do_handshake)

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _run(self, operation):
        while True:
            try:
                result = operation()
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()

    def send(self, data):
        self._run(lambda: self.tls.write(data))

    def recv(self):
        """Returns b"" once the server sent close_notify; raises SSLEOFError on a bare FIN."""
        try:
            return self._run(lambda: self.tls.read(65536))
        except ssl.SSLZeroReturnError:
            return b""

    def recv_until_close(self):
        data = b""
        while True:
            chunk = self.recv()
            if not chunk:
                return data
            data += chunk

    def close_notify(self):
        """Sends close_notify without waiting for the server's: our half-close."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def close(self):
        self.sock.close()


def rss_kib(pid):
    """The resident memory of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
