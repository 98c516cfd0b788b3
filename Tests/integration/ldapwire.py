"""Just enough LDAP (RFC 4511) on the wire for the tests: encode the requests they send
(search, bind, extended, modify, unbind, with controls), frame the server's messages by
BER length, and read the few fields the tests check."""


def _length(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag, content):
    return bytes([tag]) + _length(len(content)) + content


def integer(value, tag=0x02):
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def octets(text, tag=0x04):
    return tlv(tag, text.encode() if isinstance(text, str) else text)


def search_request(message_id, base="dc=example,dc=com", attribute="objectClass", size_limit=0):
    """SearchRequest: subtree, filter (attribute=*) as a present filter, all attributes."""
    request = tlv(0x63, octets(base) + integer(2, 0x0a) + integer(0, 0x0a) + integer(size_limit)
                  + integer(0) + tlv(0x01, b"\x00") + octets(attribute, 0x87) + tlv(0x30, b""))
    return tlv(0x30, integer(message_id) + request)


def search_equal(message_id, attribute, value, attributes=(), base="dc=example,dc=com", controls=()):
    """SearchRequest: subtree, filter (attribute=value), the attributes named (or all)."""
    requested = tlv(0x30, b"".join(octets(a) for a in attributes))
    request = tlv(0x63, octets(base) + integer(2, 0x0a) + integer(0, 0x0a) + integer(0) + integer(0)
                  + tlv(0x01, b"\x00") + tlv(0xa3, octets(attribute) + octets(value)) + requested)
    return message(message_id, request, controls)


def message(message_id, operation, controls=()):
    """An LDAPMessage around an encoded protocolOp, with controls (see control())."""
    body = integer(message_id) + operation
    if controls:
        body += tlv(0xa0, b"".join(controls))
    return tlv(0x30, body)


def control(oid, value=None, critical=True):
    return tlv(0x30, octets(oid) + (tlv(0x01, b"\xff") if critical else b"")
               + (octets(value) if value is not None else b""))


def simple_bind(message_id, dn="", password="", controls=()):
    return message(message_id, tlv(0x60, integer(3) + octets(dn) + octets(password, 0x80)), controls)


def sasl_bind(message_id, mechanism, credentials=None, controls=()):
    """A SASL bind; for EXTERNAL the credentials are the authzId (None: absent)."""
    sasl = octets(mechanism) + (octets(credentials) if credentials is not None else b"")
    return message(message_id, tlv(0x60, integer(3) + octets("") + tlv(0xa3, sasl)), controls)


def extended(message_id, oid, value=None, controls=()):
    return message(message_id, tlv(0x77, octets(oid, 0x80) + (octets(value, 0x81) if value is not None else b"")),
                   controls)


def modify_replace(message_id, dn, attribute, value, controls=()):
    change = tlv(0x30, integer(2, 0x0a) + tlv(0x30, octets(attribute) + tlv(0x31, octets(value))))
    return message(message_id, tlv(0x66, octets(dn) + tlv(0x30, change)), controls)


def unbind(message_id):
    return message(message_id, tlv(0x42, b""))


def search_result_entry(message_id, dn, attribute, value):
    """SearchResultEntry with one attribute of one value."""
    attributes = tlv(0x30, tlv(0x30, octets(attribute) + tlv(0x31, octets(value))))
    return tlv(0x30, integer(message_id) + tlv(0x64, octets(dn) + attributes))


def split_messages(data):
    """Splits a byte stream into complete LDAPMessages; returns (messages, leftover)."""
    messages, offset = [], 0
    while offset + 2 <= len(data):
        assert data[offset] == 0x30, f"not an LDAPMessage at {offset}: {data[offset:offset + 8].hex()}"
        first = data[offset + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            count = first & 0x7F
            if offset + 2 + count > len(data):
                break
            header, length = 2 + count, int.from_bytes(data[offset + 2:offset + 2 + count], "big")
        if offset + header + length > len(data):
            break
        messages.append(data[offset:offset + header + length])
        offset += header + length
    return messages, data[offset:]


def _read_tlv(data, offset):
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, first
    count = first & 0x7F
    return tag, offset + 2 + count, int.from_bytes(data[offset + 2:offset + 2 + count], "big")


def check_message(message):
    """Asserts that `message` is one well-formed LDAPMessage: a SEQUENCE holding a
    messageID, one protocolOp and optional controls, each TLV ending exactly inside its
    parent. A message with other bytes spliced into it fails here even when the outer
    lengths happen to line up."""
    assert message[0] == 0x30, f"not a SEQUENCE: {message[:8].hex()}"
    _, start, length = _read_tlv(message, 0)
    assert start + length == len(message), "outer length does not match the message"
    children, offset = [], start
    while offset < len(message):
        tag, value_start, value_len = _read_tlv(message, offset)
        assert value_start + value_len <= len(message), f"element {tag:#x} runs past the message end"
        children.append(tag)
        _check_constructed(message, tag, value_start, value_start + value_len)
        offset = value_start + value_len
    assert offset == len(message)
    assert len(children) in (2, 3) and children[0] == 0x02 and 0x40 <= children[1] <= 0x7f, \
        f"not messageID, protocolOp[, controls]: {[hex(t) for t in children]}"
    assert len(children) == 2 or children[2] == 0xa0, "the third element is not controls"


def _check_constructed(data, tag, start, end):
    """Walks the TLVs inside a constructed element: they must tile it exactly."""
    if not tag & 0x20:
        return
    offset = start
    while offset < end:
        assert offset + 2 <= end, "truncated TLV inside a constructed element"
        inner_tag, value_start, value_len = _read_tlv(data, offset)
        assert value_start + value_len <= end, f"element {inner_tag:#x} runs past its parent"
        _check_constructed(data, inner_tag, value_start, value_start + value_len)
        offset = value_start + value_len


def assert_whole_messages_then_notice(data, code):
    """The byte stream a client received: whole LDAPMessages, the last of them a
    Notice of Disconnection with `code`, nothing after it. Returns the messages."""
    messages, leftover = split_messages(data)
    assert leftover == b"", f"a message was cut: {len(leftover)} bytes of one are left over"
    assert messages, "nothing was received"
    for index, message in enumerate(messages):
        check_message(message)
        if index < len(messages) - 1:
            assert describe(message)[3] != NOTICE_OF_DISCONNECTION, f"a notice at message {index}, before the end"
    assert describe(messages[-1]) == (0, EXTENDED_RESPONSE, code, NOTICE_OF_DISCONNECTION)
    return messages


def describe(message):
    """(messageID, protocolOp tag, resultCode or None, responseName or None)."""
    _, start, _ = _read_tlv(message, 0)
    _, id_start, id_len = _read_tlv(message, start)
    message_id = int.from_bytes(message[id_start:id_start + id_len], "big")
    op_tag, op_start, op_len = _read_tlv(message, id_start + id_len)
    result_code = response_name = None
    if op_tag in RESULT_OPS:
        _, code_start, code_len = _read_tlv(message, op_start)
        result_code = int.from_bytes(message[code_start:code_start + code_len], "big")
        offset = code_start + code_len
        end = op_start + op_len
        while offset < end:
            tag, value_start, value_len = _read_tlv(message, offset)
            if tag == 0x8A:
                response_name = message[value_start:value_start + value_len].decode()
            offset = value_start + value_len
    return message_id, op_tag, result_code, response_name


def _elements(data, start, end):
    """The TLVs that tile data[start:end]: (tag, value start, value length) each."""
    offset, found = start, []
    while offset < end:
        tag, value_start, value_len = _read_tlv(data, offset)
        found.append((tag, value_start, value_len))
        offset = value_start + value_len
    return found


def _operation(message):
    _, start, length = _read_tlv(message, 0)
    _, id_start, id_len = _read_tlv(message, start)
    return _read_tlv(message, id_start + id_len)


def extended_value(message):
    """The responseValue of an ExtendedResponse (Who am I?'s authzId), or None."""
    tag, start, length = _operation(message)
    assert tag == EXTENDED_RESPONSE, f"not an ExtendedResponse: {tag:#x}"
    for inner, value_start, value_len in _elements(message, start, start + length):
        if inner == 0x8B:
            return message[value_start:value_start + value_len].decode()
    return None


def entry_attributes(message):
    """A SearchResultEntry as (dn, {attribute type (lower case): [values]})."""
    tag, start, length = _operation(message)
    assert tag == SEARCH_RESULT_ENTRY, f"not a SearchResultEntry: {tag:#x}"
    (_, dn_start, dn_len), (_, attrs_start, attrs_len) = _elements(message, start, start + length)
    attributes = {}
    for _, a_start, a_len in _elements(message, attrs_start, attrs_start + attrs_len):
        (_, t_start, t_len), (_, v_start, v_len) = _elements(message, a_start, a_start + a_len)
        name = message[t_start:t_start + t_len].decode().lower()
        attributes[name] = [message[s:s + n].decode() for _, s, n in _elements(message, v_start, v_start + v_len)]
    return message[dn_start:dn_start + dn_len].decode(), attributes


NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
START_TLS = "1.3.6.1.4.1.1466.20037"
WHO_AM_I = "1.3.6.1.4.1.4203.1.11.3"
PROXIED_AUTHZ = "2.16.840.1.113730.3.4.18"      # RFC 4370
PROXIED_AUTHZ_V1 = "2.16.840.1.113730.3.4.12"   # its obsolete draft, still understood by slapd
BIND_RESPONSE, SEARCH_RESULT_ENTRY, SEARCH_RESULT_DONE = 0x61, 0x64, 0x65
MODIFY_RESPONSE, EXTENDED_RESPONSE, INTERMEDIATE_RESPONSE = 0x67, 0x78, 0x79
# The responses that are an LDAPResult (resultCode first): bind, search done, modify,
# add, delete, modify DN, compare, extended.
RESULT_OPS = (0x61, 0x65, 0x67, 0x69, 0x6b, 0x6d, 0x6f, 0x78)
