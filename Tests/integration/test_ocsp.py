"""ocsp: client certificates checked with their CA's OCSP responder (a real
`openssl ocsp`), answers verified, cached per process, one request per certificate."""
import os
import re
import shutil
import threading

import pytest
from cryptography.x509 import ocsp

import ocsp_fixture
import pki as pki_module
from helpers import free_port, http_get, proxy_config, refusal, round_trip, wait_until


@pytest.fixture(scope="module")
def opki(pki, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ocsp"))
    made = ocsp_fixture.OCSPPKI(pki, folder)
    shutil.copy(os.path.join(pki, "root-ca.pem"), folder)  # what the test clients trust
    return made


@pytest.fixture(scope="module")
def responder(opki):
    """The real responder the certificates name (AIA), signing with a delegated
    responder certificate."""
    r = ocsp_fixture.OpenSSLResponder(opki)
    yield r
    r.stop()


def start(start_proxy, opki, backend, health_port=None, **extra):
    port = free_port()
    extra.setdefault("ocsp", "leaf")
    proxy = start_proxy(proxy_config(opki.pki, port, backend.address, health_port=health_port, **extra))
    proxy.port = port
    return proxy


def refused_with(proxy, opki, name, alert, reason):
    error = refusal(proxy.port, opki.folder, name)
    assert alert in error.lower().replace("_", " "), error
    proxy.wait_for_log(f"reason={reason}")
    return error


def metric(port, name, **labels):
    _, body = http_get(port, "/metrics")
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_good_answer_from_the_aia_responder_passes(start_proxy, opki, responder, backend, tls):
    proxy = start(start_proxy, opki, backend)
    assert round_trip(proxy.port, opki.folder, "good", tls=tls) == b"ping\n"
    proxy.wait_for_log(r"connection closed.*ocsp=good")


def test_revoked_answer_refuses_with_certificate_revoked(start_proxy, opki, responder, backend):
    proxy = start(start_proxy, opki, backend)
    refused_with(proxy, opki, "revoked", "certificate revoked", "revoked")
    assert backend.accepted == 0
    assert "is revoked" in proxy.log()


def test_revoked_refuses_under_best_effort_too(start_proxy, opki, responder, backend):
    proxy = start(start_proxy, opki, backend, ocsp_policy="best-effort")
    refused_with(proxy, opki, "revoked", "certificate revoked", "revoked")


def test_unknown_answer_refuses_under_strict_and_passes_under_best_effort(start_proxy, opki, responder, backend):
    strict = start(start_proxy, opki, backend)
    refused_with(strict, opki, "unknown", "certificate unknown", "ocsp_unknown")
    lenient = start(start_proxy, opki, backend, ocsp_policy="best-effort")
    assert round_trip(lenient.port, opki.folder, "unknown") == b"ping\n"
    lenient.wait_for_log(r"connection closed.*ocsp=\"?ocsp_unknown, allowed \(best-effort\)")


def test_responder_down(start_proxy, opki, backend):
    dead = free_port()  # nothing listens there
    strict = start(start_proxy, opki, backend, ocsp_responder=f"http://127.0.0.1:{dead}/")
    refused_with(strict, opki, "good", "certificate unknown", "ocsp_unavailable")
    assert backend.accepted == 0
    lenient = start(start_proxy, opki, backend, ocsp_responder=f"http://127.0.0.1:{dead}/", ocsp_policy="best-effort")
    assert round_trip(lenient.port, opki.folder, "good") == b"ping\n"
    lenient.wait_for_log(r"ocsp=\"?ocsp_unavailable, allowed \(best-effort\)")


def test_responder_that_never_answers_meets_the_timeout(start_proxy, opki, backend):
    silent = ocsp_fixture.SilentServer()
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=silent.url, ocsp_timeout="500ms")
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log(r"no answer within 500ms")
        assert backend.accepted == 0
    finally:
        silent.stop()


def test_crls_and_ocsp_must_both_pass(start_proxy, opki, responder, backend, tmp_path):
    crl_dir = str(tmp_path / "crl")
    os.makedirs(crl_dir)
    shutil.copy(os.path.join(opki.pki, "crl", "root.crl"), crl_dir)
    pki_module.write_crl(opki.pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"),
                         ["revoked-int", opki.cert("crl-revoked").serial_number])
    front = ocsp_fixture.HTTPResponderFront(ocsp_fixture.forward_to(responder.url))
    try:
        proxy = start(start_proxy, opki, backend, crl_dir=crl_dir, ocsp_responder=front.url)
        # OCSP says good, the CRL says revoked: refused, before OCSP is even asked.
        refused_with(proxy, opki, "crl-revoked", "certificate revoked", "revoked")
        assert front.requests == 0
        # The CRL says nothing, OCSP says revoked: refused too.
        refused_with(proxy, opki, "revoked", "certificate revoked", "revoked")
        assert front.requests == 1
        assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
    finally:
        front.stop()


def test_ocsp_responder_overrides_the_certificates_own(start_proxy, opki, responder, backend):
    # A certificate whose AIA names a dead port: only ocsp_responder can answer for it.
    proxy = start(start_proxy, opki, backend, ocsp_responder=responder.url)
    assert round_trip(proxy.port, opki.folder, "elsewhere") == b"ping\n"


def test_answer_signed_by_the_issuer_itself_is_accepted(start_proxy, opki, backend):
    direct = ocsp_fixture.OpenSSLResponder(opki, port=free_port(), rsigner=opki.issuer,
                                           rkey=os.path.join(opki.pki, "intermediate-ca.key"))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=direct.url)
        assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
        refused_with(proxy, opki, "revoked", "certificate revoked", "revoked")
    finally:
        direct.stop()


def test_answer_signed_by_a_stranger_is_refused(start_proxy, opki, backend):
    forger = ocsp_fixture.OpenSSLResponder(opki, port=free_port(), rsigner=opki.stranger_ca, rkey=opki.stranger_key)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=forger.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("not signed by the issuer or its responder")
        # best-effort lets the client in, but never on the forger's word "revoked".
        lenient = start(start_proxy, opki, backend, ocsp_responder=forger.url, ocsp_policy="best-effort")
        assert round_trip(lenient.port, opki.folder, "revoked") == b"ping\n"
    finally:
        forger.stop()


def test_responder_certificate_without_the_ocsp_signing_purpose_is_refused(start_proxy, opki, backend):
    impostor = ocsp_fixture.OpenSSLResponder(opki, port=free_port(), rsigner=opki.not_responder)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=impostor.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("OCSPSigning|not signed by the issuer")
    finally:
        impostor.stop()


def made_front(opki, **answer):
    body = ocsp_fixture.made_answer(opki, signer_cert=opki.inter, signer_key=opki.inter_key, **answer)
    return ocsp_fixture.HTTPResponderFront(lambda _: (200, body))


def test_stale_answer_is_refused(start_proxy, opki, backend):
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    front = made_front(opki, about=opki.cert("good"), this_update=now - datetime.timedelta(days=2),
                       next_update=now - datetime.timedelta(hours=1))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("nextUpdate .* has passed")
    finally:
        front.stop()


def test_answer_from_the_future_is_refused(start_proxy, opki, backend):
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    front = made_front(opki, about=opki.cert("good"), this_update=now + datetime.timedelta(hours=1),
                       next_update=now + datetime.timedelta(hours=2))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("thisUpdate .* is in the future")
    finally:
        front.stop()


def test_answer_about_another_serial_is_refused(start_proxy, opki, backend):
    # A genuine, correctly signed "good" answer: but about another certificate.
    front = made_front(opki, about=opki.cert("unknown"))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        serial = f"{opki.cert('unknown').serial_number:x}"
        proxy.wait_for_log("the answer is about serial " + "0" * (len(serial) % 2) + serial)
    finally:
        front.stop()


def test_answer_about_the_serial_under_another_issuer_is_refused(start_proxy, opki, backend):
    """The right serial, signed by the right issuer, but the CertID names another
    issuer (its name and key hashes): not an answer about this certificate."""
    root, _ = pki_module.load(opki.pki, "root-ca")
    front = made_front(opki, about=opki.cert("good"), issuer=root)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("the answer is about serial")
    finally:
        front.stop()


def test_old_answer_without_next_update_is_stale(start_proxy, opki, backend):
    """An answer without nextUpdate (openssl ocsp without -nmin/-ndays) is good for
    ocsp_max_age after its thisUpdate: a `good` captured 400 days ago and replayed after
    the certificate was revoked does not pass."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    front = made_front(opki, about=opki.cert("revoked"), this_update=now - datetime.timedelta(days=400),
                       next_update=ocsp_fixture.NO_NEXT_UPDATE)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "revoked", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("thisUpdate .* is older than ocsp_max_age")
    finally:
        front.stop()


def test_recent_answer_without_next_update_passes(start_proxy, opki, backend):
    """The control: without nextUpdate, but made a minute ago."""
    front = made_front(opki, about=opki.cert("good"), next_update=ocsp_fixture.NO_NEXT_UPDATE)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
    finally:
        front.stop()


def test_verified_revoked_answer_outside_its_window_still_revokes(start_proxy, opki, backend):
    """A properly signed `revoked` about this certificate revokes whatever its dates:
    a revocation does not come undone by getting old (best-effort would let a stale
    answer pass)."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    front = made_front(opki, about=opki.cert("revoked"), status=ocsp.OCSPCertStatus.REVOKED,
                       this_update=now - datetime.timedelta(days=2), next_update=now - datetime.timedelta(hours=1))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url, ocsp_policy="best-effort")
        refused_with(proxy, opki, "revoked", "certificate revoked", "revoked")
        assert backend.accepted == 0
    finally:
        front.stop()


def test_made_answer_good_passes(start_proxy, opki, backend):
    """The control of the made-answer cases: the same server with a right answer passes."""
    front = made_front(opki, about=opki.cert("good"))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
    finally:
        front.stop()


def test_http_error_from_the_responder_refuses(start_proxy, opki, backend):
    front = ocsp_fixture.HTTPResponderFront(lambda _: (500, b"oops"))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url)
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("HTTP 500")
    finally:
        front.stop()


def test_endless_chunked_trailers_end_the_exchange(start_proxy, opki, backend):
    """A responder that never stops sending (trailer lines after the last chunk) meets
    the size limit and is done with at once: not read on until ocsp_timeout."""
    flood = ocsp_fixture.TrailerFlood()
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=f"http://127.0.0.1:{flood.port}/", ocsp_timeout="30s")
        refused_with(proxy, opki, "good", "certificate unknown", "ocsp_unavailable")
        proxy.wait_for_log("OCSP answer unusable.*chunked trailers over")
    finally:
        flood.stop()


def test_cached_answer_is_used_without_a_second_request(start_proxy, opki, responder, backend):
    front = ocsp_fixture.HTTPResponderFront(ocsp_fixture.forward_to(responder.url))
    health = free_port()
    try:
        proxy = start(start_proxy, opki, backend, health_port=health, ocsp_responder=front.url)
        for _ in range(4):
            assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
        assert front.requests == 1
        assert metric(health, "mtls_proxy_ocsp_requests_total") == 1
        assert metric(health, "mtls_proxy_ocsp_cache_hits_total") == 3
        assert metric(health, "mtls_proxy_ocsp_responses_total", status="good") == 1
        assert metric(health, "mtls_proxy_ocsp_request_duration_seconds_count") == 1
        proxy.wait_for_log(r"ocsp=\"?good \(cached\)", count=3)
    finally:
        front.stop()


def test_many_clients_of_one_certificate_make_one_request(start_proxy, opki, responder, backend):
    # The responder takes a moment, so that every client is waiting while it answers;
    # two workers, so that waiters on both event loops share the one request.
    front = ocsp_fixture.HTTPResponderFront(ocsp_fixture.forward_to(responder.url), delay=1.0)
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url, workers=2)
        results = []

        def one():
            results.append(round_trip(proxy.port, opki.folder, "good"))

        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [b"ping\n"] * 20
        assert front.requests == 1
    finally:
        front.stop()


def test_readyz_reports_the_responder_from_real_answers(start_proxy, opki, responder, backend):
    health = free_port()
    dead = free_port()
    proxy = start(start_proxy, opki, backend, health_port=health, ocsp_responder=f"http://127.0.0.1:{dead}/",
                  ocsp_policy="best-effort")
    wait_until(lambda: http_get(health, "/readyz")[0] == 200, what="ready")
    _, body = http_get(health, "/readyz")
    assert "no OCSP request made yet" in body
    assert round_trip(proxy.port, opki.folder, "good") == b"ping\n"
    status, body = http_get(health, "/readyz")
    assert re.search(r'"ldaps.ocsp":\{"state":"warn","detail":"http://127.0.0.1:%d/ ' % dead, body), body
    good_health = free_port()
    good = start(start_proxy, opki, backend, health_port=good_health, ocsp_responder=responder.url)
    assert round_trip(good.port, opki.folder, "good") == b"ping\n"
    status, body = http_get(good_health, "/readyz")
    assert status == 200, body
    assert re.search(r'"ldaps.ocsp":\{"state":"ok","detail":"%s answered \(good\)' % re.escape(responder.url), body), body


def test_config_rejects_a_responder_that_is_not_http(start_proxy, opki, backend):
    port = free_port()
    p = start_proxy(proxy_config(opki.pki, port, backend.address, ocsp="leaf", ocsp_responder="ftp://x/"), wait=False)
    assert p.process.wait(10) == 1
    assert re.search(r"\.conf:\d+: ocsp_responder must be an http://", p.log()), p.log()


@pytest.fixture(scope="module")
def chain(pki, tmp_path_factory):
    made = ocsp_fixture.ChainPKI(pki, str(tmp_path_factory.mktemp("ocsp-chain")))
    shutil.copy(os.path.join(pki, "root-ca.pem"), made.folder)
    responders = made.start()
    yield made
    for r in responders:
        r.stop()


def start_chain(start_proxy, chain, backend, mode, health_port):
    # No crl_dir: the intermediate is the client's, and only OCSP speaks about it here.
    port = free_port()
    proxy = start_proxy(proxy_config(chain.pki, port, backend.address, health_port=health_port, crl_dir=None, ocsp=mode))
    proxy.port = port
    return proxy


def test_chain_mode_asks_about_the_intermediate_too(start_proxy, chain, backend):
    health = free_port()
    proxy = start_chain(start_proxy, chain, backend, "chain", health)
    assert round_trip(proxy.port, chain.folder, "leaf") == b"ping\n"
    # One request to each responder: the leaf's (intermediate's responder), and the
    # intermediate's (the root's responder, named by the intermediate's own AIA).
    assert metric(health, "mtls_proxy_ocsp_requests_total") == 2
    assert metric(health, "mtls_proxy_ocsp_responses_total", status="good") == 2


def test_chain_mode_refuses_a_chain_through_a_revoked_intermediate(start_proxy, chain, backend):
    proxy = start_chain(start_proxy, chain, backend, "chain", None)
    error = refusal(proxy.port, chain.folder, "leaf-under-revoked")
    assert "certificate revoked" in error.lower().replace("_", " "), error
    proxy.wait_for_log("reason=revoked")
    assert backend.accepted == 0


def test_leaf_mode_asks_about_the_leaf_only(start_proxy, chain, backend):
    health = free_port()
    proxy = start_chain(start_proxy, chain, backend, "leaf", health)
    assert round_trip(proxy.port, chain.folder, "leaf") == b"ping\n"
    assert metric(health, "mtls_proxy_ocsp_requests_total") == 1


def test_open_connection_is_closed_when_a_fresh_answer_says_revoked(start_proxy, opki, responder, backend):
    """revoke_active: the answer expires (ocsp_max_age), the proxy asks again, the new
    answer says revoked: the connection ends with the Notice of Disconnection."""
    from cryptography.x509 import ocsp as ocsp_x509
    revoked_answer = ocsp_fixture.made_answer(opki, about=opki.cert("good"), signer_cert=opki.inter,
                                              signer_key=opki.inter_key, status=ocsp_x509.OCSPCertStatus.REVOKED)
    state = {"revoked": False}
    upstream = ocsp_fixture.forward_to(responder.url)
    front = ocsp_fixture.HTTPResponderFront(lambda body: (200, revoked_answer) if state["revoked"] else upstream(body))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url, ocsp_max_age="2s")
        from helpers import tls_connect
        live = tls_connect(proxy.port, opki.folder, "good")
        live.sendall(b"hi\n")
        assert live.recv(10) == b"hi\n"
        state["revoked"] = True
        proxy.wait_for_log(r"UID=ocsp-good,.*end=revoked.*fresh OCSP answer", timeout=10)
        live.settimeout(5)
        while live.recv(4096):  # to the close_notify; a timeout here means it stayed open
            pass
        live.close()
        assert front.requests >= 2
    finally:
        front.stop()


def test_open_connection_stays_while_fresh_answers_say_good(start_proxy, opki, responder, backend):
    front = ocsp_fixture.HTTPResponderFront(ocsp_fixture.forward_to(responder.url))
    try:
        proxy = start(start_proxy, opki, backend, ocsp_responder=front.url, ocsp_max_age="1s")
        from helpers import tls_connect
        live = tls_connect(proxy.port, opki.folder, "good")
        wait_until(lambda: front.requests >= 3, timeout=10, what="re-checks")
        live.sendall(b"still\n")
        assert live.recv(10) == b"still\n"
        live.close()
    finally:
        front.stop()


def test_what_ocsp_said_stays_in_the_line_when_the_directory_refuses(start_proxy, opki, responder, backend):
    """OCSP said good, then the directory (nothing listens there) refused: the refusal's
    line still says what OCSP found, as an admitted connection's does."""
    proxy = start(start_proxy, opki, backend, verify_cert_in_directory="yes",
                  directory_url=f"ldap://127.0.0.1:{free_port()}")
    refused_with(proxy, opki, "good", "access denied", "directory_unavailable")
    line = proxy.log_lines("reason=directory_unavailable")[0]
    assert "ocsp=good" in line, line
    assert backend.accepted == 0


def test_what_ocsp_said_stays_in_the_line_when_the_admission_is_cut_short(start_proxy, opki, responder, backend,
                                                                          crl_dir):
    """OCSP said good, the directory has not answered yet, and a new CRL (of this test's
    own folder) revokes the client: the refusal's line still says what OCSP found."""
    import ssl
    from helpers import tls_connect
    from test_directory import MuteDirectory
    mute = MuteDirectory()
    try:
        proxy = start(start_proxy, opki, backend, verify_cert_in_directory="yes", directory_url=mute.url,
                      directory_timeout="8s", crl_dir=crl_dir)
        client = tls_connect(proxy.port, opki.folder, "good")
        assert mute.asked.wait(10), "the directory check never started"
        pki_module.write_crl(opki.pki, "intermediate", os.path.join(crl_dir, "intermediate.crl"),
                             ["revoked-int", opki.cert("good").serial_number], number=2)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
            client.recv(10)
        client.close()
        proxy.wait_for_log("UID=ocsp-good,.*reason=revoked")
        line = proxy.log_lines("reason=revoked")[0]
        assert "ocsp=good" in line, line
        assert backend.accepted == 0
    finally:
        mute.stop()
