"""Configuration: errors name the file and line and exit 1; --check; the flag-only form;
several listeners; an address in use exits 2."""
import os
import socket
import subprocess

import pytest

from helpers import BINARY, REPO, Backend, free_port, listener_config, proxy_config, round_trip


def run(args, timeout=20):
    return subprocess.run([BINARY] + args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_config(tmp_path, text):
    path = tmp_path / "proxy.conf"
    path.write_text(text)
    return str(path), run(["--config", str(path), "--check"])


def test_check_prints_summary(binary, pki, tmp_path):
    path, result = check_config(tmp_path, proxy_config(pki, free_port(), "127.0.0.1:389"))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "key matches" in out and "CN=localhost" in out
    assert "client CAs: 2" in out
    assert "CN=Intermediate CA,O=mtls-proxy test: 1 revoked" in out
    assert "configuration OK" in out


@pytest.mark.parametrize("text,expected", [
    ("wrokers = 2\n", ":1: unknown key 'wrokers'"),
    ("[a]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\nbogus = 1\n", ":4: unknown key 'bogus'"),
    ("[a]\nlisten = nonsense\n", ":2: expected HOST:PORT"),
    ("shutdown_grace = 10 seconds\n", ":1: '10 seconds' is not a duration"),
    ("[a]\nlisten = 127.0.0.1:1\n", ":1: [a]: missing required key 'backend'"),
    ("log_level = loud\n", "log_level must be one of error|warn|info|debug"),
    ("[a]\n[a]\n", ":2: listener [a] is defined twice"),
    ("just words\n", ":1: expected 'key = value'"),
])
def test_bad_config_exits_1_naming_file_and_line(binary, tmp_path, text, expected):
    path, result = check_config(tmp_path, text)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert path in err and expected in err, err


def test_missing_certificate_file(binary, pki, tmp_path):
    text = proxy_config(pki, free_port(), "127.0.0.1:389").replace(f"{pki}/server.pem", f"{pki}/nope.pem")
    path, result = check_config(tmp_path, text)
    assert result.returncode == 1
    assert f"{pki}/nope.pem: No such file or directory" in result.stderr.decode()


def test_key_not_matching_certificate(binary, pki, tmp_path):
    text = proxy_config(pki, free_port(), "127.0.0.1:389").replace(f"{pki}/server.key", f"{pki}/alice.key")
    path, result = check_config(tmp_path, text)
    assert result.returncode == 1
    assert f"{pki}/alice.key: private key does not match the certificate" in result.stderr.decode()


def test_ca_bundle_that_is_not_pem(binary, pki, tmp_path):
    bad = tmp_path / "bad-ca.pem"
    bad.write_text("garbage\n")
    text = proxy_config(pki, free_port(), "127.0.0.1:389").replace(f"{pki}/ca-bundle.pem", str(bad))
    path, result = check_config(tmp_path, text)
    assert result.returncode == 1
    assert f"{bad}: no usable CA certificate" in result.stderr.decode()


def test_missing_crl_dir(binary, pki, tmp_path):
    text = proxy_config(pki, free_port(), "127.0.0.1:389", crl_dir=str(tmp_path / "missing"))
    path, result = check_config(tmp_path, text)
    assert result.returncode == 1
    assert "cannot read the CRL folder" in result.stderr.decode()


def test_missing_config_file(binary, tmp_path):
    result = run(["--config", str(tmp_path / "absent.conf")])
    assert result.returncode == 1
    assert "absent.conf" in result.stderr.decode()


def test_relative_paths_are_relative_to_the_config_file(binary, pki, tmp_path):
    text = proxy_config(pki, free_port(), "127.0.0.1:389").replace(f"{pki}/", "")
    path = os.path.join(pki, "relative.conf")
    with open(path, "w") as f:
        f.write(text)
    result = run(["--config", path, "--check"])
    assert result.returncode == 0, result.stderr.decode()


def test_address_in_use_exits_2(binary, pki, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    path = tmp_path / "proxy.conf"
    path.write_text(proxy_config(pki, port, "127.0.0.1:389"))
    result = run(["--config", str(path)])
    busy.close()
    assert result.returncode == 2, result.stderr.decode()
    assert "Address already in use" in result.stderr.decode()


def test_flag_only_form_serves(start_proxy, pki, backend):
    port = free_port()
    start_proxy(args=["--listen", f"127.0.0.1:{port}", "--backend", backend.address, "--cert", f"{pki}/server.pem",
                      "--key", f"{pki}/server.key", "--ca-bundle", f"{pki}/ca-bundle.pem", "--crl-dir", f"{pki}/crl"])
    assert round_trip(port, pki, "alice") == b"ping\n"


def test_flag_only_form_names_missing_flags(binary):
    result = run(["--listen", "127.0.0.1:1"])
    assert result.returncode == 1
    assert "--backend" in result.stderr.decode()


def test_several_listeners_in_one_file(start_proxy, pki):
    first, second = Backend("echo"), Backend("echo")
    port1, port2 = free_port(), free_port()
    text = ("workers = 2\n" + listener_config(pki, port1, first.address, name="one")
            + listener_config(pki, port2, second.address, name="two"))
    proxy = start_proxy(text)
    assert round_trip(port1, pki, "alice") == b"ping\n"
    assert round_trip(port2, pki, "bob", b"second\n") == b"second\n"
    assert first.accepted == 1 and second.accepted == 1
    proxy.wait_for_log("listener=one.*end=closed")
    proxy.wait_for_log("listener=two.*end=closed")
    first.close()
    second.close()


def test_version(binary):
    result = run(["--version"])
    assert result.returncode == 0 and result.stdout.strip()


def test_example_config_is_valid(binary, pki, tmp_path):
    with open(os.path.join(REPO, "proxy.conf.example")) as f:
        text = f.read()
    for placeholder, real in [("/etc/mtls-proxy/server.pem", "server.pem"), ("/etc/mtls-proxy/server.key", "server.key"),
                              ("/etc/mtls-proxy/client-ca.pem", "ca-bundle.pem"), ("/etc/mtls-proxy/crl", "crl")]:
        text = text.replace(placeholder, f"{pki}/{real}")
    path, result = check_config(tmp_path, text)
    assert result.returncode == 0, result.stderr.decode()
