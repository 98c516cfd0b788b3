#!/usr/bin/env python3
"""The benchmark: mtls-proxy, HAProxy and stunnel side by side, same certificates, CRLs
and workloads, results per proxy CPU-second. Run it through scripts/bench, which
installs and builds what it needs.

Each proxy runs pinned to CPU 0 with one worker thread; the load generator (OpenSSL,
scripts/bench/loadgen.c) and the echo backend run on CPU 1. A proxy's CPU time comes
from /proc/PID/stat (all its threads) before and after each run, so a client that
cannot saturate the proxy does not hide the proxy's cost. Before every measured
variant an acceptance pass checks that the proxy accepts a good certificate and refuses
no certificate, a revoked one and an untrusted one.
"""
import argparse
import json
import os
import platform
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
    def __init__(self, name, command, port, workdir):
        self.name, self.port = name, port
        self.log = open(os.path.join(workdir, f"{name}-{port}.log"), "wb")
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


def start_mtls_proxy(binary, pki, crl_dir, backend_port, workdir):
    port = free_port()
    config = os.path.join(workdir, f"mtls-{port}.conf")
    with open(config, "w") as f:
        f.write(f"""workers = 1
log_level = warn
[bench]
listen = 127.0.0.1:{port}
backend = 127.0.0.1:{backend_port}
cert = {pki}/server.pem
key = {pki}/server.key
ca_bundle = {pki}/ca-bundle.pem
crl_dir = {crl_dir}
max_connections = 20000
""")
    return Proxy("mtls-proxy", [binary, "--config", config], port, workdir)


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

    def client(self, name):
        return [f"{self.pki}/root-ca.pem", f"{self.pki}/{name}.pem", f"{self.pki}/{name}.key"]

    def run_loadgen(self, mode, port, *extra, name="alice"):
        out = subprocess.run(["taskset", "-c", LOAD_CPU, self.loadgen, mode, "127.0.0.1", str(port)]
                             + self.client(name) + [str(e) for e in extra],
                             capture_output=True, text=True, timeout=300)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
        return json.loads(line), out.returncode

    def acceptance(self, proxy):
        def probe(name):
            args = [f"{self.pki}/root-ca.pem", "-", "-"] if name is None else self.client(name)
            return subprocess.run(["taskset", "-c", LOAD_CPU, self.loadgen, "probe", "127.0.0.1", str(proxy.port)]
                                  + args, capture_output=True, timeout=30).returncode == 0
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
        self.acceptance(proxy)
        seconds = self.args.seconds
        values = []
        for rep in range(self.args.reps):
            before = cpu_seconds(proxy.pid)
            if workload in ("full", "resume"):
                result, _ = self.run_loadgen(workload, proxy.port, seconds, self.args.processes)
                cpu = cpu_seconds(proxy.pid) - before
                value = result.get("handshakes", 0) / cpu if cpu else 0
                extra = {"handshakes": result.get("handshakes"), "resumed": result.get("resumed"),
                         "failed": result.get("failed"), "p99_ms": result.get("p99_ms"), "max_ms": result.get("max_ms")}
            elif workload == "reqresp":
                result, _ = self.run_loadgen("reqresp", proxy.port, seconds, 32)
                cpu = cpu_seconds(proxy.pid) - before
                value = result.get("ops", 0) / cpu if cpu else 0
                extra = {k: result.get(k) for k in ("ops_per_s", "p50_us", "p99_us", "p999_us")}
            elif workload == "bulk":
                result, _ = self.run_loadgen("bulk", proxy.port, self.args.bulk_mb)
                cpu = cpu_seconds(proxy.pid) - before
                value = result.get("received", 0) / 1e6 / cpu if cpu else 0
                extra = {"mb_per_s_wall": result.get("mb_per_s_each_way")}
            else:
                raise ValueError(workload)
            row = dict(proxy=proxy.name, workload=workload, variant=variant, rep=rep, cpu_seconds=round(cpu, 3),
                       per_cpu_second=round(value, 1), **extra)
            self.record(row)
            values.append(row)
        return values

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
        self.backend.terminate()
        self.backend.wait()
        self.raw.close()


def median(rows, key="per_cpu_second"):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--processes", type=int, default=4, help="client processes for handshake workloads")
    parser.add_argument("--bulk-mb", type=int, default=300)
    parser.add_argument("--idle", type=int, default=9000)
    parser.add_argument("--crl-sizes", default="1,1000,10000,100000")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench-results.jsonl"))
    parser.add_argument("--only", default="mtls-proxy,haproxy,stunnel")
    parser.add_argument("--crl-only", action="store_true", help="only the CRL-size rows")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="mtls-bench-")
    bench = Bench(args, workdir)
    summary = {}
    starters = {
        "mtls-proxy": lambda crl: start_mtls_proxy(args.binary, bench.pki, crl, bench.backend_port, workdir),
        "haproxy": lambda crl: start_haproxy(bench.pki, crl, bench.backend_port, workdir),
        "stunnel": lambda crl: start_stunnel(bench.pki, crl, bench.backend_port, workdir),
    }
    names = [n for n in ["mtls-proxy", "haproxy", "stunnel"] if n in args.only.split(",")]
    try:
        for name in ([] if args.crl_only else names):
            proxy = starters[name](os.path.join(bench.pki, "crl"))
            try:
                for workload in ["full", "resume", "reqresp", "bulk"]:
                    rows = bench.measure(proxy, workload)
                    summary[(name, workload)] = rows
                    print(f"{name:10} {workload:8} {median(rows):10.1f} per CPU-second", file=sys.stderr)
                summary[(name, "idle")] = bench.measure_idle(proxy)
            finally:
                proxy.stop()

        crl_rows = crl_scaling(bench, starters, names, workdir) if args.crl_sizes else {}
    finally:
        bench.close()
    print_table(summary, crl_rows, names, args)


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
        for name in [n for n in names if n != "stunnel"]:
            started = time.monotonic()
            proxy = starters[name](crl_dir)
            load_seconds = time.monotonic() - started
            try:
                measured = bench.measure(proxy, "full", variant=f"crl-{size}")
                rows[(name, size)] = dict(per_cpu_second=median(measured), rss_kib=rss_kib(proxy.pid),
                                          start_seconds=round(load_seconds, 3))
                bench.record(dict(proxy=name, workload="crl-load", variant=f"crl-{size}", rss_kib=rss_kib(proxy.pid),
                                  start_seconds=round(load_seconds, 3)))
                print(f"{name:10} crl={size:<7} {rows[(name, size)]['per_cpu_second']:10.1f} per CPU-second",
                      file=sys.stderr)
            finally:
                proxy.stop()
    largest = max(int(s) for s in bench.args.crl_sizes.split(","))
    if "mtls-proxy" in names:
        rows["reload"] = reload_under_load(bench, starters, workdir, largest)
    return rows


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


def print_table(summary, crl_rows, names, args):
    def fmt(value, unit=""):
        return "n/a" if value is None else (f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.2f}{unit}")

    def ratio(a, b):
        return None if not a or not b else a / b

    print(f"\n### mtls-proxy vs HAProxy vs stunnel ({platform.node()}, {os.cpu_count()} cores, "
          f"{platform.platform()}, medians of {args.reps})\n")
    print("| figure | " + " | ".join(names) + " | mtls-proxy / HAProxy | target |")
    print("|---|" + "---:|" * len(names) + "---:|---|")
    rows = [
        ("full mTLS handshakes per CPU-second", "full", "per_cpu_second", ">= 2.5x"),
        ("resumed handshakes per CPU-second", "resume", "per_cpu_second", ">= 2x"),
        ("request/response ops per CPU-second (32 conns)", "reqresp", "per_cpu_second", ">= 1x"),
        ("request/response ops/s (wall)", "reqresp", "ops_per_s", ">= 1x"),
        ("request/response p99 µs", "reqresp", "p99_us", "<= HAProxy"),
        ("bulk MB per CPU-second, each way", "bulk", "per_cpu_second", ">= 1.5x"),
    ]
    for label, workload, key, target in rows:
        values = [median(summary.get((n, workload), []), key) for n in names]
        mine = values[0] if names[0] == "mtls-proxy" else None
        hap = values[names.index("haproxy")] if "haproxy" in names else None
        print(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {fmt(ratio(mine, hap))} | {target} |")
    idle = [summary.get((n, "idle")) for n in names]
    print("| memory per idle connection, bytes | " + " | ".join(fmt(r and r["bytes_per_connection"]) for r in idle)
          + " | | <= 16 KiB |")
    print("| CPU while idle connections are held | " + " | ".join(
        "n/a" if not r else f"{r['idle_cpu_fraction'] * 100:.2f}% ({r['holding']} conns)" for r in idle) + " | | ~0 |")
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
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
