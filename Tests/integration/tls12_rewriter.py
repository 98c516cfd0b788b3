"""A real TLS 1.2 client (Python ssl over memory BIOs) whose outgoing handshake messages
can be rewritten before they reach the socket.

In TLS 1.2 the client's second flight (Certificate, ClientKeyExchange,
CertificateVerify) travels in plaintext handshake records, before ChangeCipherSpec.
The client computes everything honestly; a rewrite function then damages one message,
as a broken or hostile client would, and the server's answer is read off the wire.
"""
import socket
import ssl
import struct

from helpers import client_context

HANDSHAKE, ALERT, CHANGE_CIPHER_SPEC = 22, 21, 20
CERTIFICATE, CLIENT_KEY_EXCHANGE, CERTIFICATE_VERIFY = 11, 16, 15

ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
    80: "internal_error", 100: "no_renegotiation", 116: "certificate_required",
}


def split_records(data):
    """(records, rest): complete TLS records as (type, version bytes, body), and the tail."""
    records = []
    while len(data) >= 5:
        length = struct.unpack(">H", data[3:5])[0]
        if len(data) < 5 + length:
            break
        records.append((data[0], data[1:3], data[5:5 + length]))
        data = data[5 + length:]
    return records, data


def split_handshakes(data):
    """Handshake messages as (type, body); the data must hold whole messages."""
    messages = []
    while data:
        kind, length = data[0], int.from_bytes(data[1:4], "big")
        messages.append((kind, data[4:4 + length]))
        data = data[4 + length:]
    return messages


def handshake_message(kind, body):
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def record(kind, version, body):
    return bytes([kind]) + version + struct.pack(">H", len(body)) + body


class RewritingClient:
    """Drives a TLS 1.2 handshake with a client certificate; `rewrite(kind, body)` is
    applied to each handshake message of the client's second flight and returns the
    body to send instead (or None to drop the message)."""

    def __init__(self, port, pki, name, rewrite, timeout=10):
        self.rewrite = rewrite
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = client_context(pki, name, tls="1.2")
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.flights = 0
        self.received = b""

    def _send_flight(self, data):
        """The first flight (ClientHello) goes as it is; in the second, handshake records
        before ChangeCipherSpec are reassembled, rewritten and sent as one record each."""
        self.flights += 1
        if self.flights != 2:
            self.sock.sendall(data)
            return
        records, rest = split_records(data)
        assert not rest, "a flight ends on a record boundary"
        out = b""
        plaintext_handshake = True
        for kind, version, body in records:
            if kind == CHANGE_CIPHER_SPEC:
                plaintext_handshake = False
            if kind == HANDSHAKE and plaintext_handshake:
                for message_kind, message_body in split_handshakes(body):
                    replaced = self.rewrite(message_kind, message_body)
                    if replaced is not None:
                        out += record(HANDSHAKE, version, handshake_message(message_kind, replaced))
            else:
                out += record(kind, version, body)
        self.sock.sendall(out)

    def server_alert(self):
        """Runs the handshake until the server answers the rewritten flight; returns
        the name of the alert it sent ("none" if it closed without one, "completed" if
        the handshake went through)."""
        try:
            while True:
                try:
                    self.tls.do_handshake()
                    data = self.outgoing.read()
                    if data:
                        self._send_flight(data)
                    return "completed"
                except ssl.SSLWantReadError:
                    data = self.outgoing.read()
                    if data:
                        self._send_flight(data)
                    if self.flights >= 2:
                        return self._read_alert()
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return "none"
                    self.incoming.write(chunk)
        finally:
            self.sock.close()

    def _read_alert(self):
        """After the damaged flight the server's next record is plaintext: it never got
        to ChangeCipherSpec. Reads records until an alert or the end."""
        data = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return "none"
            data += chunk
            records, data = split_records(data)
            for kind, _, body in records:
                if kind == ALERT and len(body) == 2:
                    return ALERT_NAMES.get(body[1], str(body[1]))
                if kind == CHANGE_CIPHER_SPEC:
                    return "completed"
