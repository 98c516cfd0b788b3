"""Just enough LDAP (RFC 4511) on the wire for the tests: encode a search, frame the
server's messages by BER length, and read the few fields the tests check."""


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


def describe(message):
    """(messageID, protocolOp tag, resultCode or None, responseName or None)."""
    _, start, _ = _read_tlv(message, 0)
    _, id_start, id_len = _read_tlv(message, start)
    message_id = int.from_bytes(message[id_start:id_start + id_len], "big")
    op_tag, op_start, op_len = _read_tlv(message, id_start + id_len)
    result_code = response_name = None
    if op_tag in (0x65, 0x78, 0x61):  # SearchResultDone, ExtendedResponse, BindResponse
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


NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
SEARCH_RESULT_ENTRY, SEARCH_RESULT_DONE, EXTENDED_RESPONSE = 0x64, 0x65, 0x78
