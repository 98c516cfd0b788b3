#!/usr/bin/env python3
"""The benchmark: mtls-proxy, HAProxy and stunnel side by side, same certificates, CRLs
and workloads, results per proxy CPU-second. Run it through scripts/bench, which
installs and builds what it needs.

Each proxy runs pinned to CPU 0 with one worker thread (`--workers` changes
mtls-proxy's); the load generator (OpenSSL, scripts/benchmark/loadgen.c) and the
backends run on CPU 1: an echo server, and for mtls-proxy's message-aware listeners
(client_auth = certificate, tls = starttls) a minimal LDAP server that answers every
bind with success and every other request with 45 bytes, so that the same client
counts the same answers through both. A proxy's CPU time comes from /proc/PID/stat (all its threads)
before and after each run, so a client that cannot saturate the proxy does not hide the
proxy's cost. Before every measured variant an acceptance pass checks that the proxy
accepts a good certificate and refuses no certificate, a revoked one and an untrusted one
(through StartTLS on a StartTLS listener; on the LDAP backend, the good client's answer
must also show whether the request came with the proxy's proxied authorization control).

All proxies of a run are started together and the repetitions are interleaved: rep 1
measures each proxy once, then rep 2 again, each rep in a rotated order, so that a
burst of load from elsewhere on the machine falls on all of them alike. `--baseline
PATH` adds a second mtls-proxy binary (say, the previous commit's release build) as
one more column of the same run.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import pki as pki_module  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PROXY_CPU, LOAD_CPU = "0", "1"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, all threads


def context_switches(pid):
    """Voluntary and involuntary context switches over the threads alive now: a
    voluntary one is a wait that blocked (epoll_wait with nothing ready), an involuntary
    one a preemption (another task wanted the core)."""
    voluntary = involuntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return voluntary, involuntary


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, timeout=15):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Proxy:
    def __init__(self, name, command, port, workdir, starttls=False, mark=None):
        self.name, self.port = name, port
        # starttls: the listener speaks plain LDAP until StartTLS. mark: what the LDAP
        # backend's answer to the acceptance probe must say of the request it got
        # (A: with a proxied authorization control, P: as the client sent it).
        self.starttls, self.mark = starttls, mark
        slug = "".join(c if c.isalnum() or c == "-" else "_" for c in name)
        self.log = open(os.path.join(workdir, f"{slug}-{port}.log"), "wb")
        self.process = subprocess.Popen(["taskset", "-c", PROXY_CPU] + command, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_port(port)
        self.pid = self.process.pid

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def start_mtls_proxy(binary, pki, crl_dir, backend_port, workdir, workers="1", name="mtls-proxy", extra="", tls="implicit",
                     client_auth="none", mark=None):
    """`tls` and `client_auth` as in the config: anything but implicit/none makes the
    listener message-aware (its backend must then speak LDAP: `loadgen backend PORT ldap`);
    `extra` is more listener keys (the ocsp rows)."""
    port = free_port()
    config = os.path.join(workdir, f"mtls-{port}.conf")
    login = ""  # only the keys a mode needs: a --baseline binary may predate them
    if client_auth != "none":
        # Any password: the benchmark's LDAP backend accepts every bind.
        password = os.path.join(workdir, "backend-bind.password")
        with open(password, "w") as f:
            f.write("bench\n")
        login = (f"client_auth = {client_auth}\nbackend_bind_dn = cn=proxy,dc=example,dc=com\n"
                 f"backend_bind_password_file = {password}\n")
    with open(config, "w") as f:
        f.write(f"""workers = {workers}
log_level = warn
[bench]
listen = 127.0.0.1:{port}
backend = 127.0.0.1:{backend_port}
cert = {pki}/server.pem
key = {pki}/server.key
ca_bundle = {pki}/ca-bundle.pem
crl_dir = {crl_dir}
max_connections = 20000
{extra}""" + (f"tls = {tls}\n" if tls != "implicit" else "") + login)
    return Proxy(name, [binary, "--config", config], port, workdir, starttls=tls == "starttls", mark=mark)


def crl_bundle(crl_dir, workdir):
    """HAProxy and stunnel take the CRLs as one PEM file."""
    path = os.path.join(workdir, f"crls-{os.path.basename(crl_dir)}.pem")
    with open(path, "wb") as out:
        for name in sorted(os.listdir(crl_dir)):
            with open(os.path.join(crl_dir, name), "rb") as f:
                out.write(f.read())
    return path


def start_haproxy(pki, crl_dir, backend_port, workdir):
    port = free_port()
    combined = os.path.join(workdir, "haproxy-server.pem")
    with open(combined, "wb") as out:
        for name in ["server.pem", "server.key"]:
            with open(os.path.join(pki, name), "rb") as f:
                out.write(f.read())
    config = os.path.join(workdir, f"haproxy-{port}.cfg")
    # maxconn: the sandbox's hard limit of 20,000 descriptors per process bounds it.
    with open(config, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 9500
defaults
    mode tcp
    timeout connect 5s
    timeout client 30m
    timeout server 30m
frontend bench
    bind 127.0.0.1:{port} ssl crt {combined} ca-file {pki}/ca-bundle.pem verify required crl-file {crl_bundle(crl_dir, workdir)} ssl-min-ver TLSv1.2
    default_backend echo
backend echo
    server echo 127.0.0.1:{backend_port}
""")
    return Proxy("haproxy", ["haproxy", "-f", config, "-db"], port, workdir)


def start_stunnel(pki, crl_dir, backend_port, workdir):
    port = free_port()
    config = os.path.join(workdir, f"stunnel-{port}.conf")
    with open(config, "w") as f:
        f.write(f"""foreground = yes
pid =
debug = 3
[bench]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{backend_port}
cert = {pki}/server.pem
key = {pki}/server.key
CAfile = {pki}/ca-bundle.pem
CRLfile = {crl_bundle(crl_dir, workdir)}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
""")
    return Proxy("stunnel", ["stunnel4", config], port, workdir)


class Bench:
    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        self.loadgen = args.loadgen
        self.pki = pki_module.init(os.path.join(workdir, "pki"))
        self.results = []
        self.raw = open(args.out, "w")
        self.backend_port = free_port()
        self.backend = subprocess.Popen(["taskset", "-c", LOAD_CPU, self.loadgen, "backend", str(self.backend_port)])
        wait_port(self.backend_port)
        # The message-aware listeners need a backend that speaks LDAP (binds, responses
        # with the request's messageID); their transparent comparison uses it too.
        self.ldap_backend_port = free_port()
        self.ldap_backend = subprocess.Popen(["taskset", "-c", LOAD_CPU, self.loadgen, "backend",
                                              str(self.ldap_backend_port), "ldap"])
        wait_port(self.ldap_backend_port)

    def client(self, name):
        return [f"{self.pki}/root-ca.pem", f"{self.pki}/{name}.pem", f"{self.pki}/{name}.key"]

    def run_loadgen(self, mode, port, *extra, name="alice"):
        out = subprocess.run(["taskset", "-c", LOAD_CPU, self.loadgen, mode, "127.0.0.1", str(port)]
                             + self.client(name) + [str(e) for e in extra],
                             capture_output=True, text=True, timeout=300)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
        result = json.loads(line)
        if out.returncode != 0 and out.stderr.strip():
            result["error"] = out.stderr.strip().splitlines()[-1]
        return result, out.returncode

    def acceptance(self, proxy):
        mode = "probe-starttls" if proxy.starttls else "probe"

        def probe(name):
            args = [f"{self.pki}/root-ca.pem", "-", "-"] if name is None else self.client(name)
            # The good client's answer must also show the request as the mode makes it
            # (with the control under client_auth = certificate, untouched otherwise).
            mark = [proxy.mark] if proxy.mark and name == "alice" else []
            return subprocess.run(["taskset", "-c", LOAD_CPU, self.loadgen, mode, "127.0.0.1", str(proxy.port)]
                                  + args + mark, capture_output=True, timeout=30).returncode == 0
        verdicts = {"good": probe("alice"), "no cert": not probe(None), "revoked": not probe("revoked-int"),
                    "untrusted": not probe("stranger")}
        failed = [k for k, ok in verdicts.items() if not ok]
        if failed:
            raise SystemExit(f"acceptance pass failed for {proxy.name}: {failed} (log: {proxy.log.name})")

    def record(self, row):
        row.update(time=time.time())
        self.raw.write(json.dumps(row) + "\n")
        self.raw.flush()
        self.results.append(row)

    def measure(self, proxy, workload, variant="default"):
        """All reps of one proxy in a row (the CRL rows, where one proxy runs at a time)."""
        self.acceptance(proxy)
        return [self.measure_rep(proxy, workload, rep, variant) for rep in range(self.args.reps)]

    def check_backends(self):
        """A backend that died would make every later figure of a run zero: stop there."""
        for name, backend in (("echo", self.backend), ("ldap", self.ldap_backend)):
            if backend.poll() is not None:
                raise SystemExit(f"the {name} backend ended (exit status {backend.returncode})")

    def measure_rep(self, proxy, workload, rep, variant="default"):
        self.check_backends()
        seconds = self.args.seconds
        before = cpu_seconds(proxy.pid)
        switches_before = context_switches(proxy.pid)
        if workload in ("full", "resume", "starttls"):
            result, _ = self.run_loadgen(workload, proxy.port, seconds, self.args.processes)
            cpu = cpu_seconds(proxy.pid) - before
            value = result.get("handshakes", 0) / cpu if cpu else 0
            extra = {"handshakes": result.get("handshakes"), "resumed": result.get("resumed"),
                     "failed": result.get("failed"), "p99_ms": result.get("p99_ms"), "max_ms": result.get("max_ms")}
        elif workload == "reqresp":
            result, _ = self.run_loadgen("reqresp", proxy.port, seconds, 32)
            cpu = cpu_seconds(proxy.pid) - before
            ops = result.get("ops", 0)
            value = ops / cpu if cpu else 0
            extra = {k: result.get(k) for k in ("ops", "ops_per_s", "p50_us", "p99_us", "p999_us")}
            voluntary, involuntary = (a - b for a, b in zip(context_switches(proxy.pid), switches_before))
            extra.update(blocking_waits_per_op=round(voluntary / ops, 3) if ops else None,
                         preemptions_per_op=round(involuntary / ops, 4) if ops else None)
        elif workload == "bulk":
            result, _ = self.run_loadgen("bulk", proxy.port, self.args.bulk_mb)
            cpu = cpu_seconds(proxy.pid) - before
            value = result.get("received", 0) / 1e6 / cpu if cpu else 0
            extra = {"mb_per_s_wall": result.get("mb_per_s_each_way")}
        else:
            raise ValueError(workload)
        row = dict(proxy=proxy.name, workload=workload, variant=variant, rep=rep, cpu_seconds=round(cpu, 3),
                   per_cpu_second=round(value, 1), hog=self.args.hog, **extra)
        if result.get("error"):
            row["error"] = result["error"]
            print(f"{proxy.name} {workload} rep {rep}: the load generator failed: {result['error']}", file=sys.stderr)
        self.record(row)
        return row

    def traced_reqresp(self, proxy):
        """One more request/response run, with the proxy's system calls counted by perf
        on kernel tracepoints. Unlike strace, perf does not stop the proxy at each call,
        so the batching it sees (events per epoll_wait) is the real one; the counting
        still costs a little, which is why this run is not among the measured reps."""
        counters = [("syscalls", "raw_syscalls:sys_enter", None)]
        for call in ["epoll_wait", "epoll_pwait"]:
            counters.append(("epoll_wait", f"syscalls:sys_enter_{call}", None))
            counters.append(("epoll_wait_empty", f"syscalls:sys_exit_{call}", "ret == 0"))
        for call in ["recvfrom", "read", "recvmsg"]:
            counters.append(("reads", f"syscalls:sys_enter_{call}", None))
            counters.append(("reads_eagain", f"syscalls:sys_exit_{call}", "ret == -11"))
        for call in ["sendto", "sendmsg", "write", "writev"]:
            counters.append(("writes", f"syscalls:sys_enter_{call}", None))
        counters.append(("epoll_ctl", "syscalls:sys_enter_epoll_ctl", None))
        counters.append(("context_switches", "context-switches", None))
        command = ["taskset", "-c", LOAD_CPU, "perf", "stat", "-x,", "--per-thread", "-p", str(proxy.pid)]
        for _, event, condition in counters:
            command += ["-e", event] + (["--filter", condition] if condition else [])
        batches = os.path.join(self.workdir, f"epoll-{proxy.pid}.data")
        record = ["taskset", "-c", LOAD_CPU, "perf", "record", "-q", "-o", batches, "-p", str(proxy.pid),
                  "-e", "syscalls:sys_exit_epoll_wait", "-e", "syscalls:sys_exit_epoll_pwait"]
        stat = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        recorder = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches to every thread
        result, _ = self.run_loadgen("reqresp", proxy.port, self.args.seconds, 32)
        for process in (stat, recorder):
            process.send_signal(2)
        report = stat.communicate(timeout=60)[1]
        recorder.wait(60)
        ops = result.get("ops", 0)
        totals, threads = {}, {}
        # perf prints the counters in the order given, the filtered ones under the bare
        # event name: pair them up by position within each thread.
        order = [label for label, _, _ in counters]
        seen = {}
        for line in report.splitlines():
            fields = line.split(",")
            if len(fields) < 4 or not fields[1].strip().isdigit():
                continue
            thread = fields[0].strip()
            position = seen.get(thread, 0)
            seen[thread] = position + 1
            if position >= len(order):
                continue
            label, count = order[position], int(fields[1])
            totals[label] = totals.get(label, 0) + count
            threads.setdefault(thread, {})
            threads[thread][label] = threads[thread].get(label, 0) + count
        sizes = epoll_batch_sizes(batches)
        per_op = {k: round(v / ops, 3) for k, v in totals.items()} if ops else {}
        row = dict(proxy=proxy.name, workload="reqresp", variant="traced", ops=ops, hog=self.args.hog,
                   p50_us=result.get("p50_us"), p99_us=result.get("p99_us"), p999_us=result.get("p999_us"),
                   per_op=per_op, totals=totals,
                   events_per_epoll_wait=round(statistics.mean(sizes), 2) if sizes else None,
                   epoll_batch_histogram=batch_histogram(sizes),
                   threads={("main " if t.endswith(f"-{proxy.pid}") else "") + t: v for t, v in threads.items()})
        self.record(row)
        return row

    def measure_idle(self, proxy):
        self.acceptance(proxy)
        count = self.args.idle
        before = rss_kib(proxy.pid)
        hold = subprocess.Popen(["taskset", "-c", LOAD_CPU, self.loadgen, "idle", "127.0.0.1", str(proxy.port)]
                                + self.client("alice") + [str(count), "12"], stdout=subprocess.PIPE, text=True)
        line = hold.stdout.readline()
        holding = json.loads(line).get("holding", 0) if line.strip() else 0
        time.sleep(1)  # let the last connections settle before sampling; this is a measurement, not a test
        cpu0 = cpu_seconds(proxy.pid)
        time.sleep(5)
        idle_cpu = (cpu_seconds(proxy.pid) - cpu0) / 5
        after = rss_kib(proxy.pid)
        hold.wait(60)
        per_conn = (after - before) * 1024 / holding if holding else 0
        row = dict(proxy=proxy.name, workload="idle", variant="default", holding=holding,
                   rss_before_kib=before, rss_after_kib=after, bytes_per_connection=round(per_conn),
                   idle_cpu_fraction=round(idle_cpu, 4))
        self.record(row)
        return row

    def close(self):
        for backend in (self.backend, self.ldap_backend):
            backend.terminate()
            backend.wait()
        self.raw.close()


def epoll_batch_sizes(path):
    """How many events each epoll_wait returned, from a perf record of its exit."""
    try:
        out = subprocess.run(["perf", "script", "-i", path, "-F", "trace"], capture_output=True, text=True,
                             timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    sizes = []
    for line in out.splitlines():
        value = line.strip().rsplit(" ", 1)[-1]
        try:
            sizes.append(int(value, 16) if value.startswith("0x") else int(value))
        except ValueError:
            continue
    return [s for s in sizes if s >= 0]


def batch_histogram(sizes):
    if not sizes:
        return {}
    buckets = {"0": 0, "1": 0, "2": 0, "3-4": 0, "5-8": 0, "9+": 0}
    for s in sizes:
        key = "0" if s == 0 else "1" if s == 1 else "2" if s == 2 else "3-4" if s <= 4 else "5-8" if s <= 8 else "9+"
        buckets[key] += 1
    return {k: round(v / len(sizes), 3) for k, v in buckets.items()}


def median(rows, key="per_cpu_second"):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


WORKLOADS = ["full", "resume", "reqresp", "bulk", "idle", "crl", "ocsp", "reqresp-auth", "full-auth", "starttls"]
BASELINE = "mtls-proxy (baseline)"
# mtls-proxy's message-aware listeners, each on the LDAP backend, and the transparent
# listener they are compared with on that same backend.
TRANSPARENT = "mtls-proxy (transparent, LDAP backend)"
CERTIFICATE = "mtls-proxy (client_auth = certificate)"
STARTTLS = "mtls-proxy (tls = starttls)"
AUTH_WORKLOADS = ["reqresp-auth", "full-auth", "starttls"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--baseline", help="a second mtls-proxy binary, measured in the same run as one more column")
    parser.add_argument("--workers", default="1", help="mtls-proxy's `workers` (a number or auto); default 1")
    parser.add_argument("--baseline-workers",
                        help="`workers` of the baseline (default: --workers); with --baseline set to the same binary, "
                             "this compares two worker counts in one run")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, from " + ",".join(WORKLOADS) + " (crl: the CRL-size rows; "
                             "ocsp: ocsp = leaf with a warm cache against CRLs only, and the cold-cache first connection; "
                             "reqresp-auth and full-auth: reqresp and full through client_auth = certificate, "
                             "starttls: full handshakes through tls = starttls, each interleaved with mtls-proxy's "
                             "transparent listener on the same LDAP backend; mtls-proxy only)")
    parser.add_argument("--quick", action="store_true",
                        help="a short look: 1 rep of 3 s, 100 MB bulk, 2,000 idle connections, CRLs of 1 and 100,000")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--processes", type=int, default=4, help="client processes for handshake workloads")
    parser.add_argument("--bulk-mb", type=int)
    parser.add_argument("--idle", type=int)
    parser.add_argument("--crl-sizes")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench-results.jsonl"))
    parser.add_argument("--only", default="mtls-proxy,haproxy,stunnel")
    parser.add_argument("--crl-only", action="store_true", help="only the CRL-size rows (= --workloads crl)")
    parser.add_argument("--hog", action="store_true",
                        help="a busy loop on the proxies' CPU during the whole run: a loaded machine")
    parser.add_argument("--syscalls", action="store_true",
                        help="after the reqresp reps, one more run per proxy with its system calls counted by perf")
    args = parser.parse_args(argv)
    quick = dict(reps=1, seconds=3, bulk_mb=100, idle=2000, crl_sizes="1,100000")
    full = dict(reps=3, seconds=5, bulk_mb=300, idle=9000, crl_sizes="1,1000,10000,100000")
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workloads = ["crl"] if args.crl_only else [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if not args.crl_sizes:
        args.workloads = [w for w in args.workloads if w != "crl"]
    return args


def main():
    args = parse_args()
    workdir = tempfile.mkdtemp(prefix="mtls-bench-")
    bench = Bench(args, workdir)
    summary = {}
    starters = {
        "mtls-proxy": lambda crl: start_mtls_proxy(args.binary, bench.pki, crl, bench.backend_port, workdir,
                                                   workers=args.workers),
        BASELINE: lambda crl: start_mtls_proxy(args.baseline, bench.pki, crl, bench.backend_port, workdir,
                                               workers=args.baseline_workers or args.workers, name=BASELINE),
        "haproxy": lambda crl: start_haproxy(bench.pki, crl, bench.backend_port, workdir),
        "stunnel": lambda crl: start_stunnel(bench.pki, crl, bench.backend_port, workdir),
    }
    only = args.only.split(",")
    names = [n for n in ["mtls-proxy", BASELINE, "haproxy", "stunnel"]
             if n in only or (n == BASELINE and args.baseline)]
    hog = None
    if args.hog:
        # nice 0, like the proxies: the scheduler shares the core between them evenly.
        hog = subprocess.Popen(["taskset", "-c", PROXY_CPU, "sh", "-c", "while :; do :; done"])
    crl_rows = {}
    try:
        measured = [w for w in ["full", "resume", "reqresp", "bulk"] if w in args.workloads]
        if measured or "idle" in args.workloads:
            proxies = {}
            try:
                for name in names:
                    proxies[name] = starters[name](os.path.join(bench.pki, "crl"))
                for workload in measured:
                    rows = interleaved(bench, [proxies[n] for n in names], workload)
                    for name in names:
                        summary[(name, workload)] = rows[name]
                        print(f"{name:22} {workload:8} {median(rows[name]):10.1f} per CPU-second", file=sys.stderr)
                    if workload == "reqresp" and args.syscalls:
                        for name in names:
                            summary[(name, "traced")] = bench.traced_reqresp(proxies[name])
                if "idle" in args.workloads:
                    for name in names:
                        summary[(name, "idle")] = bench.measure_idle(proxies[name])
            finally:
                for proxy in proxies.values():
                    proxy.stop()
        auth = [w for w in AUTH_WORKLOADS if w in args.workloads]
        if auth and "mtls-proxy" not in only:
            print(f"{', '.join(auth)}: mtls-proxy only, not in --only: skipped", file=sys.stderr)
        elif auth:
            summary.update(message_aware(bench, args, workdir, auth))
        if "crl" in args.workloads:
            crl_rows = crl_scaling(bench, starters, names, workdir)
        if "ocsp" in args.workloads:
            crl_rows["ocsp"] = ocsp_rows(bench, workdir)
    finally:
        if hog:
            hog.kill()
            hog.wait()
        bench.close()
    print_table(summary, crl_rows, names, args)


def interleaved(bench, proxies, workload, variant="default"):
    """Every rep measures each proxy once, in an order rotated by one per rep: noise from
    elsewhere on the machine lands on all of them, and none is always first."""
    rows = interleaved_runs(bench, [(proxy, workload) for proxy in proxies], variant)
    return {proxy.name: rows[(proxy.name, workload)] for proxy in proxies}


def interleaved_runs(bench, runs, variant="default"):
    """As `interleaved`, over (proxy, workload) pairs: rows by (proxy name, workload)."""
    for proxy in {id(p): p for p, _ in runs}.values():
        bench.acceptance(proxy)
    rows = {(proxy.name, workload): [] for proxy, workload in runs}
    for rep in range(bench.args.reps):
        shift = rep % len(runs)
        for proxy, workload in runs[shift:] + runs[:shift]:
            rows[(proxy.name, workload)].append(bench.measure_rep(proxy, workload, rep, variant))
    return rows


def message_aware(bench, args, workdir, workloads):
    """mtls-proxy's message-aware listeners next to its transparent one, all on the LDAP
    backend and measured interleaved, so that each ratio compares like with like:
    request/response and full handshakes under client_auth = certificate (every request
    decoded and given a proxied authorization control; every connection's backend first
    bound as the proxy), and full handshakes through StartTLS next to LDAPS ones."""
    crl = os.path.join(bench.pki, "crl")

    def start(name, **mode):
        return start_mtls_proxy(args.binary, bench.pki, crl, bench.ldap_backend_port, workdir, workers=args.workers,
                                name=name, **mode)
    proxies = {}
    summary = {}
    try:
        proxies[TRANSPARENT] = start(TRANSPARENT, mark="P")
        if "reqresp-auth" in workloads or "full-auth" in workloads:
            proxies[CERTIFICATE] = start(CERTIFICATE, client_auth="certificate", mark="A")
        if "starttls" in workloads:
            proxies[STARTTLS] = start(STARTTLS, tls="starttls", mark="P")
        groups = []
        if "reqresp-auth" in workloads:
            groups.append([(proxies[TRANSPARENT], "reqresp"), (proxies[CERTIFICATE], "reqresp")])
        handshakes = [(proxies[TRANSPARENT], "full")]
        if "full-auth" in workloads:
            handshakes.append((proxies[CERTIFICATE], "full"))
        if "starttls" in workloads:
            handshakes.append((proxies[STARTTLS], "starttls"))
        if len(handshakes) > 1:
            groups.append(handshakes)
        for runs in groups:
            rows = interleaved_runs(bench, runs, variant="ldap-backend")
            summary.update(rows)
            for (name, workload), measured in rows.items():
                print(f"{name:40} {workload:8} {median(measured):10.1f} per CPU-second", file=sys.stderr)
    finally:
        for proxy in proxies.values():
            proxy.stop()
    return summary


def crl_scaling(bench, starters, names, workdir):
    """Revocation at scale: handshakes per CPU-second with an intermediate CRL of N
    entries (alice is not among them; revoked-int is), plus CRL load time and RSS. Every
    entry carries a reason code, as real CAs write them (GnuTLS's own CRL decoder is
    quadratic in such entries; ours is not)."""
    rows = {}
    for size in [int(s) for s in bench.args.crl_sizes.split(",")]:
        crl_dir = os.path.join(workdir, f"crl-{size}")
        os.makedirs(crl_dir, exist_ok=True)
        pki_module.write_crl(bench.pki, "root", os.path.join(crl_dir, "root.crl"), pki_module.REVOKED["root"])
        serials = list(range(10**6, 10**6 + size - 1))
        pki_module.write_crl(bench.pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"),
                             ["revoked-int"] + serials, reasons=True)
        proxies, load_seconds = [], {}
        try:
            for name in [n for n in names if n != "stunnel"]:
                started = time.monotonic()
                proxies.append(starters[name](crl_dir))
                load_seconds[name] = time.monotonic() - started
            measured = interleaved(bench, proxies, "full", variant=f"crl-{size}")
            for proxy in proxies:
                name = proxy.name
                rows[(name, size)] = dict(per_cpu_second=median(measured[name]), rss_kib=rss_kib(proxy.pid),
                                          start_seconds=round(load_seconds[name], 3))
                bench.record(dict(proxy=name, workload="crl-load", variant=f"crl-{size}", rss_kib=rss_kib(proxy.pid),
                                  start_seconds=round(load_seconds[name], 3)))
                print(f"{name:22} crl={size:<7} {rows[(name, size)]['per_cpu_second']:10.1f} per CPU-second",
                      file=sys.stderr)
        finally:
            for proxy in proxies:
                proxy.stop()
    largest = max(int(s) for s in bench.args.crl_sizes.split(","))
    if "mtls-proxy" in names:
        rows["reload"] = reload_under_load(bench, starters, workdir, largest)
    return rows


def ocsp_rows(bench, workdir, cold_certs=20):
    """ocsp = leaf with a warm cache next to CRLs only: full handshakes per CPU-second,
    interleaved reps (the issue's target: at least 90 %). Then the cold-cache latency: a
    client certificate the proxy has not seen yet (its first handshake waits for the
    local `openssl ocsp` responder), against the same certificate's second handshake."""
    import datetime
    import ssl
    index = os.path.join(workdir, "ocsp-index.txt")
    names = ["alice"] + [f"cold{i}" for i in range(cold_certs)]
    for name in names[1:]:
        pki_module.issue_client(bench.pki, name)
    with open(index, "w") as f:
        for name in names:
            serial = f"{pki_module.serial_of(bench.pki, name):X}"
            f.write(f"V\t{(datetime.datetime.utcnow() + datetime.timedelta(days=300)).strftime('%y%m%d%H%M%SZ')}\t\t"
                    f"{'0' * (len(serial) % 2) + serial}\tunknown\t/UID={name}\n")
    with open(index + ".attr", "w") as f:
        f.write("unique_subject = no\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    issuer = f"{bench.pki}/intermediate-ca.pem"
    responder = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "openssl", "ocsp", "-index", index, "-port", str(port), "-rsigner", issuer,
         "-rkey", f"{bench.pki}/intermediate-ca.key", "-CA", issuer, "-ignore_err", "-nmin", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies = []
    try:
        # Ready = a real request answered (never a bare connect: it makes openssl ocsp spin).
        deadline = time.monotonic() + 15
        while subprocess.run(["openssl", "ocsp", "-issuer", issuer, "-cert", f"{bench.pki}/alice.pem", "-url", url,
                              "-noverify", "-no_nonce"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("openssl ocsp did not answer")
            time.sleep(0.1)
        crl_only = start_mtls_proxy(bench.args.binary, bench.pki, os.path.join(bench.pki, "crl"), bench.backend_port,
                                    workdir, workers=bench.args.workers, name="crl-only")
        with_ocsp = start_mtls_proxy(bench.args.binary, bench.pki, os.path.join(bench.pki, "crl"), bench.backend_port,
                                     workdir, workers=bench.args.workers, name="crl+ocsp-warm",
                                     extra=f"ocsp = leaf\nocsp_responder = {url}\n")
        proxies = [crl_only, with_ocsp]
        measured = interleaved(bench, proxies, "full", variant="ocsp")
        ratio = paired_ratio(measured["crl+ocsp-warm"], measured["crl-only"], "per_cpu_second")

        def first_echo_ms(name):
            c = ssl.create_default_context(cafile=f"{bench.pki}/root-ca.pem")
            c.load_cert_chain(f"{bench.pki}/{name}.pem", f"{bench.pki}/{name}.key")
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", with_ocsp.port)) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with c.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"x")
                    tls.recv(1)
            return (time.perf_counter() - started) * 1000
        cold, warm = [], []
        for name in names[1:]:
            cold.append(first_echo_ms(name))
            warm.append(first_echo_ms(name))
        row = dict(crl_only=median(measured["crl-only"]), ocsp_warm=median(measured["crl+ocsp-warm"]), ratio=ratio,
                   cold_ms=statistics.median(cold), warm_ms=statistics.median(warm), certs=len(cold))
        bench.record(dict(proxy="mtls-proxy", workload="ocsp", variant="leaf", **row))
        print(f"ocsp warm/crl-only {fmt(ratio)}; first handshake {row['cold_ms']:.2f} ms cold, {row['warm_ms']:.2f} ms warm",
              file=sys.stderr)
        return row
    finally:
        for proxy in proxies:
            proxy.stop()
        responder.terminate()
        responder.wait(10)


def reload_under_load(bench, starters, workdir, size):
    """p99 handshake latency while the largest CRL is rewritten (and so reloaded) in a
    loop, next to the same figure without reloads."""
    import threading
    crl_dir = os.path.join(workdir, f"crl-{size}")
    path = os.path.join(crl_dir, "intermediate.crl")
    with open(path, "rb") as f:
        content = f.read()
    proxy = starters["mtls-proxy"](crl_dir)
    try:
        quiet = bench.measure(proxy, "full", variant=f"crl-{size}-steady")
        stop, reloads = threading.Event(), [0]

        def rewrite():
            while not stop.is_set():
                tmp = path + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(content)
                os.replace(tmp, path)  # a new inode: the watcher reloads the whole folder
                reloads[0] += 1
                stop.wait(0.5)
        writer = threading.Thread(target=rewrite)
        writer.start()
        try:
            busy = bench.measure(proxy, "full", variant=f"crl-{size}-reloading")
        finally:
            stop.set()
            writer.join()
        with open(proxy.log.name, "rb") as f:
            reloaded = f.read().count(b"reloaded")
    finally:
        proxy.stop()
    return dict(size=size, steady_p99=median(quiet, "p99_ms"), steady_max=median(quiet, "max_ms"),
                reloading_p99=median(busy, "p99_ms"), reloading_max=median(busy, "max_ms"),
                rewrites=reloads[0], reloads_logged=reloaded,
                steady_rate=median(quiet), reloading_rate=median(busy))


TRACED_ROWS = [
    ("system calls", "syscalls"),
    ("epoll_wait calls", "epoll_wait"),
    ("epoll_wait that returned nothing (timeout)", "epoll_wait_empty"),
    ("reads (recv/read)", "reads"),
    ("reads that said EAGAIN", "reads_eagain"),
    ("writes (send/sendmsg/write)", "writes"),
    ("epoll_ctl calls", "epoll_ctl"),
    ("context switches", "context_switches"),
]


def print_traced(names, traced):
    """Per request, from the perf-counted run (scripts/benchmark/run.py --syscalls)."""
    print("\n| per request (one extra run, system calls counted by perf) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, key in TRACED_ROWS:
        print(f"| {label} | " + " | ".join("n/a" if not t else f"{t['per_op'].get(key, 0):.2f}" for t in traced) + " |")
    print("| events per epoll_wait (mean) | " + " | ".join(
        "n/a" if not t or t["events_per_epoll_wait"] is None else f"{t['events_per_epoll_wait']:.2f}" for t in traced) + " |")
    print("| p50 / p99 / p99.9 µs of this run | " + " | ".join(
        "n/a" if not t else f"{t['p50_us']:.0f} / {t['p99_us']:.0f} / {t['p999_us']:.0f}" for t in traced) + " |")


def fmt(value, unit=""):
    return "n/a" if value is None else (f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.2f}{unit}")


def paired_ratio(mine, theirs, key):
    """The median of the per-rep ratios: reps are interleaved, so rep k of both ran in
    the same stretch of time and their ratio cancels most of the machine's drift."""
    pairs = [(a.get(key), b.get(key)) for a, b in zip(mine, theirs)]
    ratios = [a / b for a, b in pairs if a and b]
    return statistics.median(ratios) if ratios else None


def cell(rows, key, spread):
    """The median, with the range over the reps when there are several."""
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "n/a"
    if not spread or len(values) < 2:
        return fmt(statistics.median(values))
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def print_table(summary, crl_rows, names, args):
    if any(k[0] in names for k in summary):
        print_main_table(summary, names, args)
    ocsp = crl_rows.pop("ocsp", None)
    if any(k[0] in (TRANSPARENT, CERTIFICATE, STARTTLS) for k in summary):
        print_message_aware_table(summary, args)
    print_crl_tables(crl_rows, names)
    if ocsp:
        print(f"\n### ocsp = leaf (local openssl ocsp responder, medians of {args.reps})\n")
        print("| figure | value | target |\n|---|---:|---|")
        print(f"| full handshakes per CPU-second, CRLs only | {fmt(ocsp['crl_only'])} | |")
        print(f"| full handshakes per CPU-second, CRLs and ocsp = leaf, warm cache | {fmt(ocsp['ocsp_warm'])} | |")
        print(f"| warm / CRLs only (paired reps) | {fmt(ocsp['ratio'])} | >= 0.90 |")
        print(f"| first connection of a new certificate (handshake + one echo), ms: cold cache | {ocsp['cold_ms']:.2f} | |")
        print(f"| the same certificate again, warm cache, ms | {ocsp['warm_ms']:.2f} | |")
    print(f"\nraw results: {args.out}")


def print_main_table(summary, names, args):
    spread = args.reps > 1
    conditions = [f"workers = {args.workers}"] + (["a CPU hog on the proxies' core"] if args.hog else [])
    if args.baseline_workers and BASELINE in names:
        conditions[0] += f" (baseline: {args.baseline_workers})"
    print(f"\n### mtls-proxy vs HAProxy vs stunnel ({platform.node()}, {os.cpu_count()} cores, "
          f"{platform.platform()}, {', '.join(conditions)}, medians of {args.reps}"
          + (", range in brackets" if spread else "") + ")\n")
    comparisons = [("mtls-proxy / HAProxy", "haproxy")] + ([("mtls-proxy / baseline", BASELINE)] if BASELINE in names else [])
    print("| figure | " + " | ".join(names) + " | " + " | ".join(c for c, _ in comparisons) + " | target |")
    print("|---|" + "---:|" * (len(names) + len(comparisons)) + "---|")
    rows = [
        ("full mTLS handshakes per CPU-second", "full", "per_cpu_second", ">= 2.5x"),
        ("resumed handshakes per CPU-second", "resume", "per_cpu_second", ">= 2x"),
        ("request/response ops per CPU-second (32 conns)", "reqresp", "per_cpu_second", ">= 1.2x"),
        ("request/response ops/s (wall)", "reqresp", "ops_per_s", ">= 1x"),
        ("request/response p50 µs", "reqresp", "p50_us", "kept"),
        ("request/response p99 µs", "reqresp", "p99_us", "<= HAProxy"),
        ("request/response p99.9 µs", "reqresp", "p999_us", "<= HAProxy"),
        ("request/response blocking waits per request", "reqresp", "blocking_waits_per_op", ""),
        ("request/response preemptions per request", "reqresp", "preemptions_per_op", ""),
        ("bulk MB per CPU-second, each way", "bulk", "per_cpu_second", ">= 1.5x"),
    ]
    for label, workload, key, target in rows:
        if not any(summary.get((n, workload)) for n in names):
            continue
        mine = summary.get(("mtls-proxy", workload), [])
        ratios = [fmt(paired_ratio(mine, summary.get((other, workload), []), key)) for _, other in comparisons]
        print(f"| {label} | " + " | ".join(cell(summary.get((n, workload), []), key, spread) for n in names)
              + " | " + " | ".join(ratios) + f" | {target} |")
    idle = [summary.get((n, "idle")) for n in names]
    blanks = " |" * len(comparisons)
    if any(idle):
        print("| memory per idle connection, bytes | " + " | ".join(fmt(r and r["bytes_per_connection"]) for r in idle)
              + f" |{blanks} <= 16 KiB |")
        print("| CPU while idle connections are held | " + " | ".join(
            "n/a" if not r else f"{r['idle_cpu_fraction'] * 100:.2f}% ({r['holding']} conns)" for r in idle)
            + f" |{blanks} ~0 |")
    traced = [summary.get((n, "traced")) for n in names]
    if any(traced):
        print_traced(names, traced)


def print_message_aware_table(summary, args):
    """The message-aware listeners against the transparent one on the same LDAP backend;
    ratios are the medians of the per-rep ratios, as in the main table."""
    spread = args.reps > 1
    print(f"\n### mtls-proxy's message-aware listeners vs its transparent one (same LDAP backend, "
          f"workers = {args.workers}, medians of {args.reps}" + (", range in brackets" if spread else "") + ")\n")
    print("| figure | transparent | message-aware | ratio | target |")
    print("|---|---:|---:|---:|---|")
    transparent = lambda workload: summary.get((TRANSPARENT, workload), [])
    rows = [
        ("request/response ops per CPU-second, client_auth = certificate (vs transparent, same backend)",
         "reqresp", CERTIFICATE, "reqresp", "per_cpu_second", ">= 0.85x"),
        ("request/response ops/s (wall), client_auth = certificate", "reqresp", CERTIFICATE, "reqresp", "ops_per_s", ""),
        ("request/response p50 µs, client_auth = certificate", "reqresp", CERTIFICATE, "reqresp", "p50_us", ""),
        ("request/response p99 µs, client_auth = certificate", "reqresp", CERTIFICATE, "reqresp", "p99_us", ""),
        ("request/response p99.9 µs, client_auth = certificate", "reqresp", CERTIFICATE, "reqresp", "p999_us", ""),
        ("full mTLS handshakes per CPU-second, client_auth = certificate (vs transparent, same backend)",
         "full", CERTIFICATE, "full", "per_cpu_second", "unchanged (~1x)"),
        ("full StartTLS handshakes per CPU-second, tls = starttls (vs LDAPS full, same backend)",
         "full", STARTTLS, "starttls", "per_cpu_second", ""),
        ("full StartTLS handshakes p99 ms (vs LDAPS full)", "full", STARTTLS, "starttls", "p99_ms", ""),
    ]
    for label, base, name, workload, key, target in rows:
        mine = summary.get((name, workload))
        if not mine:
            continue
        print(f"| {label} | {cell(transparent(base), key, spread)} | {cell(mine, key, spread)} | "
              f"{fmt(paired_ratio(mine, transparent(base), key))}x | {target} |")
    starttls = summary.get((STARTTLS, "starttls"))
    haproxy = summary.get(("haproxy", "full"))
    if starttls and haproxy:
        # Not interleaved with each other (another part of the run, the echo backend):
        # the ratio of the medians.
        print(f"| full StartTLS handshakes per CPU-second (vs HAProxy's LDAPS full, main table) | "
              f"{cell(haproxy, 'per_cpu_second', spread)} | {cell(starttls, 'per_cpu_second', spread)} | "
              f"{fmt(median(starttls) / median(haproxy))}x | |")


def print_crl_tables(crl_rows, names):
    if crl_rows:
        print("\n| CRL entries (intermediate) | " + " | ".join(
            f"{n} handshakes/CPU-s | {n} RSS | {n} start s" for n in names if n != "stunnel") + " |")
        print("|---:|" + "---:|---:|---:|" * len([n for n in names if n != "stunnel"]))
        for size in sorted({s for (_, s) in [k for k in crl_rows if k != "reload"]}):
            cells = []
            for n in [n for n in names if n != "stunnel"]:
                r = crl_rows.get((n, size))
                cells += ["n/a"] * 3 if not r else [fmt(r["per_cpu_second"]), f"{r['rss_kib'] / 1024:.1f} MiB",
                                                     f"{r['start_seconds']:.2f}"]
            print(f"| {size:,} | " + " | ".join(cells) + " |")
    reload = crl_rows.get("reload") if crl_rows else None
    if reload:
        print(f"\n| mtls-proxy, {reload['size']:,}-entry CRL | handshakes/CPU-s | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        print(f"| steady | {fmt(reload['steady_rate'])} | {reload['steady_p99']:.1f} | {reload['steady_max']:.1f} |")
        print(f"| CRL rewritten every 0.5 s ({reload['rewrites']} rewrites) | {fmt(reload['reloading_rate'])} | "
              f"{reload['reloading_p99']:.1f} | {reload['reloading_max']:.1f} |")


if __name__ == "__main__":
    main()
