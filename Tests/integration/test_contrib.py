"""The deployment files in contrib/: the systemd unit and the Kubernetes manifests.

They are checked with the tools an operator would trust (systemd-analyze,
kubernetes-validate), against each other, and against the real binary: the unit's
command line and the ConfigMap's proxy.conf must be accepted by it, and what the proxy
calls while it serves, reloads and stops must pass the unit's system call filter and
MemoryDenyWriteExecute."""
import base64
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from helpers import BINARY, REPO, free_port, http_get, proxy_config, round_trip, wait_until

UNIT = os.path.join(REPO, "contrib", "systemd", "mtls-proxy.service")
K8S = os.path.join(REPO, "contrib", "kubernetes")
# The newest Kubernetes schema kubernetes-validate 1.37 ships.
K8S_VERSION = "1.37.0"
MAX_EXPOSURE = 2.0


def tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is missing: run scripts/install-deps"
    return path


def systemd_version():
    out = subprocess.run([tool("systemd-analyze"), "--version"], capture_output=True, text=True).stdout
    return int(re.search(r"systemd (\d+)", out).group(1))


def unit_warnings(stderr):
    """systemd's complaints about the unit file, minus the one a systemd older than 253
    must make: it does not know Type=notify-reload yet (and then treats the unit as
    Type=simple, which the unit's comment explains)."""
    lines = [line for line in stderr.splitlines() if "mtls-proxy.service" in line]
    if systemd_version() < 253:
        lines = [line for line in lines if "Failed to parse service type, ignoring: notify-reload" not in line]
    return lines


def unit_settings(path=UNIT):
    """The [Service] section as {key: [values]} (keys may repeat)."""
    settings, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]":
                key, _, value = line.partition("=")
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(duration):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", duration.strip())
    assert match, f"not a duration: {duration}"
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# ---- systemd ------------------------------------------------------------------------

def test_systemd_unit_exposure_is_at_most_2():
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=true", "--no-pager", UNIT],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert unit_warnings(result.stderr) == []
    match = re.search(r"Overall exposure level for mtls-proxy\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify works without a running systemd; it insists that the
    ExecStart binary exists, so the copy it checks points at the one under test."""
    copy = tmp_path / "mtls-proxy.service"
    text = open(UNIT).read()
    assert "ExecStart=/usr/local/bin/mtls-proxy " in text
    copy.write_text(text.replace("ExecStart=/usr/local/bin/mtls-proxy ", f"ExecStart={BINARY} "))
    result = subprocess.run([tool("systemd-analyze"), "verify", "--man=no", str(copy)],
                            capture_output=True, text=True)
    assert unit_warnings(result.stderr) == [], result.stderr
    assert result.returncode == 0, result.stderr


def test_systemd_unit_command_line_and_limits_fit_the_proxy(pki, backend, tmp_path):
    """ExecStart's arguments are ones the binary takes (run with --check on a config of
    the test PKI); TimeoutStopSec leaves room for shutdown_grace's default, and
    LimitNOFILE for max_connections' default at two descriptors a connection."""
    settings = unit_settings()
    argv = shlex.split(settings["ExecStart"][0])
    assert argv[0] == "/usr/local/bin/mtls-proxy"
    assert "/etc/mtls-proxy/proxy.conf" in argv
    config = tmp_path / "proxy.conf"
    config.write_text(proxy_config(pki, free_port(), backend.address))
    args = [str(config) if arg == "/etc/mtls-proxy/proxy.conf" else arg for arg in argv[1:]]
    check = subprocess.run([BINARY, *args, "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration OK" in check.stdout

    assert settings["Type"] == ["notify-reload"]
    assert seconds(settings["WatchdogSec"][0]) > 0
    assert seconds(settings["TimeoutStopSec"][0]) > 30
    assert int(settings["LimitNOFILE"][0]) >= 2 * 10000 + 100
    # Reading the config folder is enough: inotify watches need no write access.
    assert settings["ReadOnlyPaths"] == ["/etc/mtls-proxy"]


def allowed_calls(groups_and_calls):
    """The system call names a SystemCallFilter= allow-list admits, groups expanded."""
    out = subprocess.run([tool("systemd-analyze"), "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())

    def expand(name):
        names = set()
        for member in groups[name]:
            names |= expand(member) if member.startswith("@") else {member}
        return names
    allowed = set()
    for entry in groups_and_calls.split():
        allowed |= expand(entry) if entry.startswith("@") else {entry}
    return allowed


PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def kernel_has_mdwe():
    return ctypes.CDLL(None, use_errno=True).prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0


def deny_write_execute():
    """In the child before exec: the kernel's own memory-deny-write-execute (Linux 6.3+),
    inherited across exec, which refuses what systemd's MemoryDenyWriteExecute= does:
    a writable and executable mapping, or making a mapping executable later."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        os._exit(99)


def test_syscalls_pass_the_units_filter_and_memory_deny_write_execute(pki, backend, tmp_path):
    """The real proxy under strace: starts, serves a client, answers /readyz, follows a
    new CRL, reloads on SIGHUP and stops on SIGTERM. Every system call it makes must be
    allowed by the unit's SystemCallFilter= (@system-service), and no mapping may be writable and
    executable, nor made executable later (MemoryDenyWriteExecute=): seen in the trace,
    and enforced by the kernel where it can (PR_SET_MDWE)."""
    (filter_,) = unit_settings()["SystemCallFilter"]
    assert not filter_.startswith("~"), "an allow-list"
    assert unit_settings()["MemoryDenyWriteExecute"] == ["yes"]
    shutil.copytree(os.path.join(pki, "crl"), tmp_path / "crl")
    key = tmp_path / "ticket.key"
    key.write_bytes(base64.b64encode(os.urandom(64)))
    port, health = free_port(), free_port()
    config = tmp_path / "proxy.conf"
    config.write_text(proxy_config(pki, port, backend.address, health_port=health,
                                   crl_dir=tmp_path / "crl", ticket_key_file=key))
    trace, log_path = tmp_path / "strace.txt", tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        tracer = subprocess.Popen([tool("strace"), "-f", "-qq", "-o", str(trace), BINARY, "--config", str(config)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  preexec_fn=deny_write_execute if kernel_has_mdwe() else None)
    try:
        def log_has(text):
            assert tracer.poll() is None, log_path.read_text()
            return text in log_path.read_text()
        wait_until(lambda: log_has("mtls-proxy started"), 30, what="the proxy under strace to start")
        children = open(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read().split()
        assert len(children) == 1
        proxy_pid = int(children[0])
        assert round_trip(port, pki, "alice") == b"ping\n"
        assert http_get(health, "/readyz")[0] == 200
        shutil.copy(tmp_path / "crl" / os.listdir(tmp_path / "crl")[0], tmp_path / "crl" / "again.crl")
        os.kill(proxy_pid, signal.SIGHUP)
        wait_until(lambda: log_has("reloaded"), 30, what="the reload")
        os.kill(proxy_pid, signal.SIGTERM)
        assert tracer.wait(60) == 0, log_path.read_text()
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()

    calls, wx_maps = set(), []
    for line in trace.read_text().splitlines():
        match = re.match(r"\d+ +([a-z_0-9]+)\(", line)
        if not match:
            continue
        calls.add(match.group(1))
        if match.group(1) in ("mmap", "mprotect", "pkey_mprotect") and "PROT_EXEC" in line:
            if "PROT_WRITE" in line or match.group(1) != "mmap":
                wx_maps.append(line)
    assert {"epoll_create1", "eventfd2", "signalfd4", "inotify_add_watch", "accept4", "sched_getaffinity"} <= calls
    assert calls - allowed_calls(filter_) == set()
    assert wx_maps == []


# ---- Kubernetes ---------------------------------------------------------------------

def manifests():
    return sorted(f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml")


def documents(name):
    with open(os.path.join(K8S, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def resource(kind):
    found = [doc for name in manifests() for doc in documents(name) if doc["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def shipped_proxy_conf():
    return next(
        doc for name in manifests() for doc in documents(name)
        if doc["kind"] == "ConfigMap" and "proxy.conf" in doc.get("data", {}))["data"]["proxy.conf"]


def conf_value(text, key):
    values = re.findall(rf"^\s*{key}\s*=\s*(\S+)", text, re.M)
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


@pytest.mark.parametrize("name", manifests())
def test_kubernetes_manifest_is_valid(name):
    """Strict: an unknown or misplaced field is an error, not a warning."""
    # As a module: pip may put the kubernetes-validate script outside PATH.
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, os.path.join(K8S, name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource", result.stdout + result.stderr)
    assert len(passed) == len(documents(name)), result.stdout + result.stderr


def test_kustomization_lists_every_manifest():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    assert sorted(kustomization["resources"]) == manifests()


def test_kubernetes_deployment_matches_the_config():
    """Ports, probes, mounts and the grace period agree with the shipped proxy.conf."""
    conf = shipped_proxy_conf()
    deployment, service, pdb = resource("Deployment"), resource("Service"), resource("PodDisruptionBudget")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert conf_value(conf, "listen") == f"0.0.0.0:{ports['ldaps']}"
    assert ports["ldaps"] > 1024, "the proxy runs as non-root in the pod"
    assert conf_value(conf, "health_listen") == f"0.0.0.0:{ports['health']}"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert deployment["spec"]["replicas"] == 2
    drain = re.search(r"^\s*drain_delay\s*=\s*(\S+)", conf, re.M)
    assert spec["terminationGracePeriodSeconds"] > seconds(conf_value(conf, "shutdown_grace")) + (
        seconds(drain.group(1)) if drain else 0)

    pod_security, security = spec["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 65532
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}

    # Every file the config names lives under a mounted volume, and the CRL folder is
    # a whole-folder mount (a subPath mount would never see the kubelet's updates).
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["args"][:1] == ["--config"] and os.path.dirname(container["args"][1]) in mounts
    for path in re.findall(r"=\s*(/etc/mtls-proxy/\S+)", conf):
        assert any(path == m or path.startswith(m + "/") for m in mounts), path
    crl_mount = mounts[conf_value(conf, "crl_dir")]
    assert "subPath" not in crl_mount
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "configMap" in volumes[crl_mount["name"]]

    assert service["spec"]["ports"] == [{"name": "ldaps", "protocol": "TCP", "port": 636, "targetPort": "ldaps"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_kubernetes_secrets_are_placeholders():
    """No key material in the repository: every Secret value is a marked placeholder."""
    secrets = [doc for name in manifests() for doc in documents(name) if doc["kind"] == "Secret"]
    assert len(secrets) == 3
    for secret in secrets:
        assert "data" not in secret
        for value in secret["stringData"].values():
            assert "REPLACE-ME" in value and "-----END" not in value


def test_kubernetes_config_is_accepted_by_the_proxy(pki, backend, start_proxy, tmp_path):
    """The ConfigMap's proxy.conf with the Secret and ConfigMap files swapped for the
    test PKI's (and loopback addresses): --check accepts it, and a proxy started on it
    is ready and serves a client."""
    key = tmp_path / "ticket.key"
    key.write_bytes(base64.b64encode(os.urandom(64)))
    port, health = free_port(), free_port()
    conf = shipped_proxy_conf()
    replacements = {
        "/etc/mtls-proxy/tls/tls.crt": f"{pki}/server.pem",
        "/etc/mtls-proxy/tls/tls.key": f"{pki}/server.key",
        "/etc/mtls-proxy/client-ca/ca.pem": f"{pki}/ca-bundle.pem",
        "/etc/mtls-proxy/ticket/ticket.key": str(key),
        "/etc/mtls-proxy/crl": f"{pki}/crl",
        f"listen = {conf_value(conf, 'listen')}": f"listen = 127.0.0.1:{port}",
        f"health_listen = {conf_value(conf, 'health_listen')}": f"health_listen = 127.0.0.1:{health}",
        f"backend = {conf_value(conf, 'backend')}": f"backend = {backend.address}",
    }
    for old, new in replacements.items():
        assert old in conf, old
        conf = conf.replace(old, new)
    settings = "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
    assert "/etc/mtls-proxy" not in settings and "0.0.0.0" not in settings, conf
    path = tmp_path / "proxy.conf"
    path.write_text(conf)
    check = subprocess.run([BINARY, "--config", str(path), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration OK" in check.stdout

    start_proxy(conf)
    wait_until(lambda: http_get(health, "/readyz")[0] == 200, what="/readyz 200")
    assert round_trip(port, pki, "alice") == b"ping\n"


# ---- HAProxy ------------------------------------------------------------------------

def test_readme_haproxy_snippet_is_valid(pki, backend, tmp_path):
    """README's balancer snippet is a configuration HAProxy accepts, health-checks
    /readyz, and sends a PROXY header if and only if this build's proxy reads one."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    match = re.search(r"\n((?:    frontend ldaps\n)(?:(?:    .*)?\n)*?)\n(?!    )", readme)
    assert match, "no HAProxy snippet (an indented block from `frontend ldaps`) in README.md"
    snippet = textwrap.dedent(match.group(1))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(snippet)
    result = subprocess.run([tool("haproxy"), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mode tcp" in snippet and "option httpchk GET /readyz" in snippet
    servers = re.findall(r"^\s*server .*$", snippet, re.M)
    assert servers and all(re.search(r"\bcheck port \d+", s) for s in servers), servers

    config = tmp_path / "proxy.conf"
    config.write_text(proxy_config(pki, free_port(), backend.address, proxy_protocol_in="v2",
                                   trusted_proxies="127.0.0.1/32"))
    check = subprocess.run([BINARY, "--config", str(config), "--check"], capture_output=True, text=True)
    if check.returncode == 0:
        assert all("send-proxy-v2" in s for s in servers), servers
        assert re.search(r"^\s*proxy_protocol_in = v2$", readme, re.M), "README: the instances' side"
    else:
        assert "proxy_protocol_in" in check.stdout + check.stderr, check.stdout + check.stderr
        assert not any("send-proxy" in s for s in servers), "this build reads no PROXY header"
