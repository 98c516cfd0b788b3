"""What a client must never achieve through an LDAP-aware listener, whatever its bytes:
a request that runs at slapd as the proxy's own identity, or a proxied authorization
control of its own that slapd reads. Each case was found by a second reader against the
real binary and slapd (liblber reads some encodings differently from a decoder that
stops at the envelope); each must end with a protocolError notice before slapd sees it."""
import socket

import ldapwire
import slapd_fixture
from authzkit import BOB, Session
from ldapwire import control, integer, message, octets, tlv

PROXIED_AUTHZ = "2.16.840.1.113730.3.4.18"


def search_op(filter_bytes, attributes, tail=b""):
    return tlv(0x63, octets("dc=example,dc=com") + integer(2, 0x0a) + integer(0, 0x0a) + integer(0) + integer(0)
               + tlv(0x01, b"\x00") + filter_bytes + tlv(0x30, b"".join(octets(a) for a in attributes)) + tail)


def modify_op(dn, attribute, value, tail=b""):
    change = tlv(0x30, integer(2, 0x0a) + tlv(0x30, octets(attribute) + tlv(0x31, octets(value))))
    return tlv(0x66, octets(dn) + tlv(0x30, change) + tail)


SMUGGLED = {
    # An element after the last field of the operation: slapd takes it for the controls.
    "whoami-trailing-octets": message(7, tlv(0x77, octets(ldapwire.WHO_AM_I, 0x80) + octets("x"))),
    "search-trailing-octets": message(7, search_op(tlv(0xa3, octets("uid") + octets("bob")), ["mail"], octets("x"))),
    # A third element in an equality filter: slapd reads it as the attribute list.
    "filter-third-element": message(7, search_op(tlv(0xa3, octets("uid") + octets("bob") + tlv(0x30, octets("mail"))), ["cn"])),
    # A control list hidden at the end of the operation, naming bob.
    "modify-hidden-controls": message(7, modify_op(BOB, "description", "smuggled",
                                                   tlv(0xa0, control(PROXIED_AUTHZ, f"dn:{BOB}")))),
    # slapd ends the OID at the NUL: the proxied authorization control under another name.
    "control-oid-with-nul": ldapwire.extended(7, ldapwire.WHO_AM_I, controls=[
        tlv(0x30, octets(PROXIED_AUTHZ + "\x00") + tlv(0x01, b"\xff") + octets(f"dn:{BOB}"))]),
    # A control inside another control's tail: slapd reads it as the next control.
    "control-inside-a-control": ldapwire.extended(7, ldapwire.WHO_AM_I, controls=[
        tlv(0x30, octets("1.2.3.4") + control(PROXIED_AUTHZ, f"dn:{BOB}"))]),
}


def test_smuggled_elements_end_the_session_before_slapd_sees_them(authz_proxy, authz_slapd, pki):
    for mode in ("sasl-external", "certificate"):
        proxy = authz_proxy(mode)
        for name, request in SMUGGLED.items():
            before = authz_slapd.read(BOB, "description")
            session = Session(proxy.port, pki, "alice")
            session.sock.sendall(request)
            messages, leftover = session.read_until_close()
            assert leftover == b"", f"{mode}/{name}: a cut message"
            assert messages, f"{mode}/{name}: no answer at all"
            assert ldapwire.describe(messages[-1]) == (0, ldapwire.EXTENDED_RESPONSE, 2, ldapwire.NOTICE_OF_DISCONNECTION), \
                f"{mode}/{name}: {[ldapwire.describe(m) for m in messages]}"
            assert len(messages) == 1, f"{mode}/{name}: slapd answered before the notice"
            assert authz_slapd.read(BOB, "description") == before, f"{mode}/{name}: bob's entry changed"
            session.close()
        proxy.wait_for_log(r"reason=protocol_error", count=len(SMUGGLED))


def test_nothing_may_follow_a_bind_passed_on_before_its_response(authz_proxy, authz_slapd, pki):
    """slapd holds a request back while it waits to write to the connection, and an
    abandon then drops a held-back bind: the backend stayed bound as the proxy while the
    proxy sent no control any more. RFC 4511 §4.2.1: nothing may follow a BindRequest
    until its response; the proxy ends such a session."""
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    bind = ldapwire.simple_bind(2, slapd_fixture.ROOT_DN, "wrong password")
    abandon = message(3, tlv(0x50, b"\x02"))
    session.sock.sendall(bind + abandon)
    messages, _ = session.read_until_close()
    assert ldapwire.describe(messages[-1])[2:] == (2, ldapwire.NOTICE_OF_DISCONNECTION), [ldapwire.describe(m) for m in messages]
    proxy.wait_for_log(r"reason=protocol_error .*while the bind with messageID 2 was in progress")
    # After the bind's response, requests go on as usual (the backend judged the bind).
    session = Session(proxy.port, pki, "alice")
    assert session.bind_simple(slapd_fixture.ROOT_DN, "wrong password") == 49
    assert session.whoami() == ""


def test_an_unverified_starttls_connection_holds_little(authz_proxy, pki):
    """Before TLS nobody is verified: a request header that promises megabytes ends the
    connection at once, instead of the proxy reading them into memory."""
    proxy = authz_proxy("sasl-external", tls="starttls")
    size = 4 * 1024 * 1024 - 16
    plain = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    plain.sendall(b"\x30\x84" + size.to_bytes(4, "big") + b"\x02\x01\x05\x63\x84" + (size - 9).to_bytes(4, "big"))
    received = b""
    while chunk := plain.recv(4096):
        received += chunk
    messages, leftover = ldapwire.split_messages(received)
    assert leftover == b"" and len(messages) == 1
    assert ldapwire.describe(messages[0]) == (0, ldapwire.EXTENDED_RESPONSE, 2, ldapwire.NOTICE_OF_DISCONNECTION)
    proxy.wait_for_log(rf"reason=protocol_error detail=\"a request of {size + 6} bytes before TLS")


def test_an_authzid_whose_commas_are_escaped_names_another_entry(authz_proxy, pki):
    proxy = authz_proxy("sasl-external")
    session = Session(proxy.port, pki, "alice")
    assert session.bind_external(r"dn:uid=alice\,ou=people\,dc=example\,dc=com") == 50
    assert session.whoami() == ""
    assert session.bind_external("DN:UID=Alice,OU=People,DC=Example,DC=Com") == 0, "dn: and the DN compare without case"
