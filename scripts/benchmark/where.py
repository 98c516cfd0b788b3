#!/usr/bin/env python3
"""Where a request/response operation's cost goes, for mtls-proxy binaries and HAProxy:
the two measurements behind docs/performance.md that the host's noise does not move.

  instructions  user-space instructions per operation under callgrind: two load runs of
                different lengths through the same proxy, the difference in instructions
                over the difference in operations (start-up and handshakes cancel out).
  profile       `perf record` of the proxy for 5 s of the request/response load: its CPU
                by library (kernel, TLS library, the proxy, libc, Swift runtime), in
                samples per 1,000 operations (sampled at 4 kHz).

  python3 scripts/benchmark/where.py instructions --binary .build/release/mtls-proxy \\
          [--binary /tmp/previous/mtls-proxy] [--haproxy]
  python3 scripts/benchmark/where.py profile --binary .build/release/mtls-proxy --haproxy

Run it through the same setup as scripts/bench (it reuses run.py's PKI, echo backend
and load generator: build them with `scripts/bench --quick` once, or `gcc -O2 -o
.build/loadgen scripts/benchmark/loadgen.c -lssl -lcrypto`). Needs valgrind
(instructions) or perf (profile). Binaries are copied with their DWARF stripped first:
valgrind 3.19 cannot read the DWARF 5 that Swift 6 writes, and the symbol table is
enough for function names."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".build", "loadgen")


def bench_for(workdir, seconds):
    class Args:
        pass
    args = Args()
    args.loadgen, args.out, args.seconds, args.reps = os.path.abspath(LOADGEN), os.path.join(workdir, "r.jsonl"), seconds, 1
    return run.Bench(args, workdir)


def proxy_config(bench, port):
    path = os.path.join(bench.workdir, f"where-{port}.conf")
    with open(path, "w") as f:
        f.write(f"workers = 1\nlog_level = warn\n[bench]\nlisten = 127.0.0.1:{port}\n"
                f"backend = 127.0.0.1:{bench.backend_port}\ncert = {bench.pki}/server.pem\n"
                f"key = {bench.pki}/server.key\nca_bundle = {bench.pki}/ca-bundle.pem\ncrl_dir = {bench.pki}/crl\n")
    return path


def haproxy_command(bench, workdir):
    """HAProxy's config as run.py writes it, started by us (under valgrind or not)."""
    proxy = run.start_haproxy(bench.pki, os.path.join(bench.pki, "crl"), bench.backend_port, workdir)
    proxy.stop()
    cfg = max((os.path.join(workdir, n) for n in os.listdir(workdir) if n.startswith("haproxy-") and n.endswith(".cfg")),
              key=os.path.getmtime)
    port = int(re.search(r"bind 127.0.0.1:(\d+)", open(cfg).read()).group(1))
    return ["haproxy", "-f", cfg, "-db"], port


def callgrind_total(path):
    for line in open(path):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def instructions(name, command_for, bench, workdir):
    points = []
    for seconds in (2, 6):
        command, port = command_for()
        out = os.path.join(workdir, "callgrind." + "".join(c if c.isalnum() else "_" for c in name) + f".{seconds}")
        log = open(out + ".log", "w")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"] + command,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                run.wait_port(port, timeout=120)
            except RuntimeError:
                raise RuntimeError(f"{name} did not start under valgrind: {open(out + '.log').read()[-2000:]}")
            result, _ = bench.run_loadgen("reqresp", port, seconds, 32)
        finally:
            proc.terminate()
            proc.wait()
        points.append((result.get("ops", 0), callgrind_total(out)))
    (ops1, ins1), (ops2, ins2) = points
    print(f"{name}: {(ins2 - ins1) / (ops2 - ops1):,.0f} user-space instructions per operation "
          f"({ops2 - ops1:,} operations apart)", flush=True)


def profile(name, start, bench, workdir):
    proxy = start()
    data = os.path.join(workdir, "perf." + "".join(c if c.isalnum() else "_" for c in name) + ".data")
    try:
        def record():
            time.sleep(1.5)
            subprocess.run(["perf", "record", "-F", "4000", "-o", data, "-p", str(proxy.pid), "--", "sleep", "5"],
                           capture_output=True, check=True)
        recorder = threading.Thread(target=record)
        recorder.start()
        result, _ = bench.run_loadgen("reqresp", proxy.port, 8, 32)
        recorder.join()
    finally:
        proxy.stop()
    ops_in_window = result["ops_per_s"] * 5
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "-n", "--stdio"],
                            capture_output=True, text=True, check=True).stdout
    rows = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)", line)
        if match:
            rows.append((match.group(3), float(match.group(1)), int(match.group(2))))
    total = sum(samples for _, _, samples in rows)
    print(f"{name}: {total * 1000 / ops_in_window:.0f} samples per 1,000 operations "
          f"({result['ops_per_s']:,} operations/s in the window)")
    for dso, share, samples in rows[:8]:
        print(f"    {share:5.1f} %  {samples * 1000 / ops_in_window:6.1f}  {dso}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["instructions", "profile"])
    parser.add_argument("--binary", action="append", default=[], help="an mtls-proxy binary (repeat for more)")
    parser.add_argument("--haproxy", action="store_true", help="HAProxy too")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mtls-where-")
    bench = bench_for(workdir, 6)
    try:
        for index, binary in enumerate(args.binary):
            name = f"mtls-proxy[{index}] {binary}"
            if args.what == "instructions":
                stripped = os.path.join(workdir, f"mtls-proxy-{index}")
                subprocess.run(["strip", "--strip-debug", "-o", stripped, binary], check=True)

                def command_for(stripped=stripped):
                    port = run.free_port()
                    return [stripped, "--config", proxy_config(bench, port)], port
                instructions(name, command_for, bench, workdir)
            else:
                profile(name, lambda binary=binary: run.start_mtls_proxy(
                    binary, bench.pki, os.path.join(bench.pki, "crl"), bench.backend_port, workdir), bench, workdir)
        if args.haproxy:
            if args.what == "instructions":
                instructions("haproxy", lambda: haproxy_command(bench, workdir), bench, workdir)
            else:
                profile("haproxy", lambda: run.start_haproxy(
                    bench.pki, os.path.join(bench.pki, "crl"), bench.backend_port, workdir), bench, workdir)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
