"""TLS records by hand, for handshakes that arrive in unusual shapes: a ClientHello
grown past one record by a padding extension, handshake messages cut into many tiny
records. The TLS itself is real (Python's ssl over memory BIOs); only the record
boundaries, and for the padded hello the padding, are ours."""
import socket
import ssl
import struct
import time

from helpers import BioClient

HANDSHAKE = 22
CHANGE_CIPHER_SPEC = 20
APPLICATION_DATA = 23
ALERT = 21
PADDING_EXTENSION = 21


def parse_records(data):
    """Splits bytes into complete records [(type, payload)] and returns the rest."""
    records, offset = [], 0
    while len(data) - offset >= 5:
        kind, _, length = struct.unpack_from("!BHH", data, offset)
        if len(data) - offset - 5 < length:
            break
        records.append((kind, data[offset + 5:offset + 5 + length]))
        offset += 5 + length
    return records, data[offset:]


def records(kind, payload, size, version=b"\x03\x03"):
    """`payload` cut into records of at most `size` bytes."""
    return b"".join(bytes([kind]) + version + struct.pack("!H", len(payload[i:i + size])) + payload[i:i + size]
                    for i in range(0, len(payload), size))


def client_hello(ctx):
    """A real ClientHello handshake message (without the record header) from `ctx`."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    found, rest = parse_records(outgoing.read())
    assert not rest and all(kind == HANDSHAKE for kind, _ in found)
    message = b"".join(payload for _, payload in found)
    assert message[0] == 1, "not a ClientHello"
    return message


def pad_client_hello(message, padding):
    """Inserts a padding extension (type 21) of `padding` zero bytes as the first
    extension, fixing the extension-list and handshake lengths. First, because a TLS 1.3
    pre_shared_key extension must stay last. `padding="max"` fills the extension list to
    its limit of 65,535 bytes: the largest ClientHello there can be, about 64 KiB."""
    body = message[4:]
    offset = 2 + 32  # legacy_version, random
    offset += 1 + body[offset]  # session id
    offset += 2 + struct.unpack_from("!H", body, offset)[0]  # cipher suites
    offset += 1 + body[offset]  # compression methods
    extensions_length = struct.unpack_from("!H", body, offset)[0]
    extensions = body[offset + 2:offset + 2 + extensions_length]
    position = 0
    while position < len(extensions):
        kind, length = struct.unpack_from("!HH", extensions, position)
        assert kind != PADDING_EXTENSION, "the hello already has a padding extension"
        position += 4 + length
    if padding == "max":
        padding = 0xFFFF - 4 - len(extensions)
    extensions = struct.pack("!HH", PADDING_EXTENSION, padding) + bytes(padding) + extensions
    body = body[:offset] + struct.pack("!H", len(extensions)) + extensions
    return bytes([1]) + len(body).to_bytes(3, "big") + body


def first_server_record(sock, timeout):
    """Reads until the first whole record from the server; returns (type, payload), or
    None when the server closes or stays silent for `timeout` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            found, _ = parse_records(data)
            if found:
                return found[0]
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except (socket.timeout, TimeoutError, ConnectionResetError):
        return None


def is_server_hello(record):
    return record is not None and record[0] == HANDSHAKE and record[1][:1] == b"\x02"


class RefragmentingClient(BioClient):
    """A real TLS client over memory BIOs whose plaintext handshake records (everything
    of type 22 before its ChangeCipherSpec or first encrypted record) are re-cut into
    records of `size` bytes. Record boundaries are not part of the transcript, so the
    handshake completes as usual. What follows is sent as the client made it."""

    def __init__(self, port, ctx, size, timeout=20):
        self.size = size
        self.plaintext = True
        self.pending = b""
        self.handshake_records = 0  # how many records carried the plaintext handshake
        super().__init__(port, timeout=timeout, ctx=ctx)

    def _flush(self):
        self.pending += self.outgoing.read()
        found, self.pending = parse_records(self.pending)
        out = b""
        for kind, payload in found:
            if self.plaintext and kind == HANDSHAKE:
                out += records(kind, payload, self.size)
                self.handshake_records += -(-len(payload) // self.size)
            else:
                if kind in (CHANGE_CIPHER_SPEC, APPLICATION_DATA):
                    self.plaintext = False
                out += records(kind, payload, 1 << 14)
        if out:
            # Tiny records go out in one send each batch: the server sees them in
            # whatever pieces TCP makes, as from a real client.
            self.sock.sendall(out)


def send_slowly(sock, data, pieces, pause=0.002):
    """Sends `data` in `pieces` TCP writes, so that it arrives over several wake-ups."""
    step = max(1, -(-len(data) // pieces))
    for i in range(0, len(data), step):
        sock.sendall(data[i:i + step])
        time.sleep(pause)
