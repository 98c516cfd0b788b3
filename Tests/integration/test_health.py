"""The health endpoint: /healthz, /readyz, /metrics, and what any other request gets."""
import json
import os
import socket

import pytest

from helpers import Backend, free_port, http_get, proxy_config, refusal, round_trip, wait_until


@pytest.fixture
def health_proxy(start_proxy, pki):
    backend = Backend("echo")
    port, health = free_port(), free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health))
    proxy.port, proxy.health, proxy.backend = port, health, backend
    yield proxy
    backend.close()


def readyz(proxy):
    status, body = http_get(proxy.health, "/readyz")
    return status, json.loads(body)


def test_healthz(health_proxy):
    assert http_get(health_proxy.health, "/healthz") == (200, "ok\n")


def test_readyz_names_each_check(health_proxy):
    status, body = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(readyz(health_proxy)),
                              what="ready")
    assert body["status"] == "ready"
    for check in ["ldaps.listener", "ldaps.certificate", "ldaps.crl", "ldaps.backend"]:
        assert body["checks"][check]["state"] == "ok", body


def test_readyz_fails_when_backend_is_down(health_proxy):
    wait_until(lambda: readyz(health_proxy)[0] == 200, what="ready")
    health_proxy.backend.close()
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(health_proxy)),
                              what="not ready", timeout=15)
    assert body["checks"]["ldaps.backend"]["state"] == "fail"
    health_proxy.wait_for_log("backend does not answer")


def test_metrics_count_outcomes_and_reasons(health_proxy, pki):
    assert round_trip(health_proxy.port, pki, "alice") == b"ping\n"
    assert "revoked" in refusal(health_proxy.port, pki, "revoked-int")
    health_proxy.wait_for_log("end=refused")
    health_proxy.wait_for_log("end=closed")
    status, text = http_get(health_proxy.health, "/metrics")
    assert status == 200
    assert 'mtls_proxy_connections_total{listener="ldaps",outcome="closed"} 1' in text
    assert 'mtls_proxy_connections_total{listener="ldaps",outcome="refused"} 1' in text
    assert 'mtls_proxy_handshake_failures_total{listener="ldaps",reason="revoked"} 1' in text
    assert 'mtls_proxy_bytes_total{listener="ldaps",direction="client_to_backend"} 5' in text
    assert "mtls_proxy_handshake_duration_seconds_bucket" in text
    assert 'mtls_proxy_certificate_not_after_seconds{listener="ldaps"}' in text
    assert "mtls_proxy_crl_next_update_seconds" in text
    assert "mtls_proxy_last_reload_success 1" in text
    assert 'mtls_proxy_active_connections{listener="ldaps"} 0' in text


@pytest.mark.parametrize("path", ["/", "/status", "/readyz/x"])
def test_unknown_path_is_404(health_proxy, path):
    assert http_get(health_proxy.health, path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_405(health_proxy, method):
    assert http_get(health_proxy.health, "/healthz", method=method)[0] == 405


def test_head_has_no_body(health_proxy):
    status, body = http_get(health_proxy.health, "/healthz", method="HEAD")
    assert (status, body) == (200, "")


def test_oversized_request_is_refused(health_proxy):
    raw = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    assert http_get(health_proxy.health, "/healthz", raw=raw)[0] == 431


def test_garbage_request_is_400(health_proxy):
    assert http_get(health_proxy.health, "/", raw=b"hello there\r\n\r\n")[0] == 400


def test_silent_health_client_times_out_without_blocking_others(health_proxy):
    silent = socket.create_connection(("127.0.0.1", health_proxy.health))
    assert http_get(health_proxy.health, "/healthz")[0] == 200
    silent.settimeout(15)
    data = silent.recv(4096)
    assert data.startswith(b"HTTP/1.1 408")
    silent.close()


def test_bytes_of_a_live_connection_show_before_it_closes(health_proxy, pki):
    from helpers import tls_connect
    live = tls_connect(health_proxy.port, pki, "alice")
    live.sendall(b"x" * 1000)
    received = b""
    while len(received) < 1000:
        received += live.recv(4096)

    def counted():
        text = http_get(health_proxy.health, "/metrics")[1]
        return 'mtls_proxy_bytes_total{listener="ldaps",direction="client_to_backend"} 1000' in text \
            and 'mtls_proxy_bytes_total{listener="ldaps",direction="backend_to_client"} 1000' in text
    wait_until(counted, what="live byte counts")
    live.close()


def test_readyz_warns_ahead_of_a_crl_next_update(start_proxy, pki):
    # The CRLs of the test PKI are due in 7 days; warned 8 days (192h) ahead, /readyz
    # still answers 200 but shows the CRL check as "warn", and the log warns once.
    backend = Backend("echo")
    port, health = free_port(), free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health, crl_warn_before="192h"))
    status, body = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(http_get(health, "/readyz")),
                              what="ready")
    assert json.loads(body)["checks"]["ldaps.crl"]["state"] == "warn"
    proxy.wait_for_log("CRL nextUpdate is near")
    backend.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two allowed CPUs")
def test_workers_auto_counts_the_cpus_the_process_may_use(start_proxy, pki):
    """`workers = auto` under taskset (or systemd's CPUAffinity=, a container's cpuset)
    starts one loop per allowed core: two loops time-sharing one core cost more than they
    bring. /readyz says how many workers bound each listener."""
    backend = Backend("echo")
    allowed = os.sched_getaffinity(0)
    try:
        counts = {}
        for cpus in [{min(allowed)}, allowed]:
            os.sched_setaffinity(0, cpus)  # the proxy inherits it
            port, health = free_port(), free_port()
            config = proxy_config(pki, port, backend.address, health_port=health, workers=None)
            proxy = start_proxy(config)
            proxy.health = health
            os.sched_setaffinity(0, allowed)
            body = wait_until(lambda: (lambda r: r[1] if r[0] == 200 else None)(readyz(proxy)), what="ready")
            counts[len(cpus)] = body["checks"]["ldaps.listener"]["detail"]
            proxy.stop()
        assert counts[1].endswith("bound by 1 of 1 workers"), counts
        assert counts[len(allowed)].endswith(f"bound by {len(allowed)} of {len(allowed)} workers"), counts
    finally:
        os.sched_setaffinity(0, allowed)
        backend.close()
