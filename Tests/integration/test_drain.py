"""drain_delay: after SIGTERM /readyz turns 503 at once while the listeners keep
accepting, so that a balancer's health check sees the drain before the port goes away;
then the listeners close and open connections finish as with drain_delay = 0."""
import json
import signal
import socket

from helpers import echo_back, free_port, http_get, proxy_config, tls_connect, wait_until


def refused_to_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # The listener closed with this connection in its queue: ask again, the next
        # attempt is refused.
        return False


def readyz(health):
    status, body = http_get(health, "/readyz")
    return status, json.loads(body)["status"]


def test_listeners_accept_during_drain_delay_then_close(start_proxy, pki, backend):
    port, health = free_port(), free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, health_port=health,
                                     globals_={"drain_delay": "2s"}))
    wait_until(lambda: readyz(health) == (200, "ready"), what="/readyz ready")
    before = tls_connect(port, pki, "alice")
    assert echo_back(before, b"before\n") == b"before\n"

    proxy.signal(signal.SIGTERM)
    wait_until(lambda: readyz(health) == (503, "draining"), what="/readyz draining")
    # A balancer that has not seen the 503 yet still sends: the new client is served.
    during = tls_connect(port, pki, "bob")
    # (Served means accepted before the close: a closed listener's queue is reset.)
    assert echo_back(during, b"during the delay\n") == b"during the delay\n"

    wait_until(lambda: refused_to_connect(port), what="listeners closed after drain_delay")
    log = proxy.log()
    assert log.index("draining: /readyz reports 503") < log.index("stopping: listeners closed")
    # Open connections, including the one accepted during the delay, carry on.
    assert echo_back(during, b"after the close\n") == b"after the close\n"
    assert echo_back(before, b"still here\n") == b"still here\n"
    assert proxy.process.poll() is None
    during.close()
    before.close()
    assert proxy.process.wait(10) == 0
    assert "mtls-proxy stopped" in proxy.log()


def test_drain_delay_zero_closes_listeners_at_once(start_proxy, pki, backend):
    port = free_port()
    proxy = start_proxy(proxy_config(pki, port, backend.address, globals_={"drain_delay": "0s"}))
    proxy.signal(signal.SIGTERM)
    wait_until(lambda: refused_to_connect(port), what="listeners closed")
    assert not proxy.log_lines("draining:")
    assert proxy.process.wait(10) == 0
