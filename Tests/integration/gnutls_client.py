"""A GnuTLS client session driven through ctypes, for what the command-line clients
cannot do: ask to renegotiate, hear the refusal, and keep using the session.
(gnutls-cli retries the handshake after every warning alert, forever; openssl s_client
gives up on the connection.)"""
import ctypes
import socket
import struct

_lib = ctypes.CDLL("libgnutls.so.30")
_p = ctypes.c_void_p
_lib.gnutls_init.argtypes = [ctypes.POINTER(_p), ctypes.c_uint]
_lib.gnutls_priority_set_direct.argtypes = [_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
_lib.gnutls_certificate_allocate_credentials.argtypes = [ctypes.POINTER(_p)]
_lib.gnutls_certificate_set_x509_key_file.argtypes = [_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
_lib.gnutls_credentials_set.argtypes = [_p, ctypes.c_int, _p]
_lib.gnutls_transport_set_int2.argtypes = [_p, ctypes.c_int, ctypes.c_int]
_lib.gnutls_handshake.argtypes = [_p]
_lib.gnutls_record_send.argtypes = [_p, ctypes.c_char_p, ctypes.c_size_t]
_lib.gnutls_record_send.restype = ctypes.c_ssize_t
_lib.gnutls_record_recv.argtypes = [_p, ctypes.c_char_p, ctypes.c_size_t]
_lib.gnutls_record_recv.restype = ctypes.c_ssize_t
_lib.gnutls_alert_get.argtypes = [_p]
_lib.gnutls_strerror.argtypes = [ctypes.c_int]
_lib.gnutls_strerror.restype = ctypes.c_char_p
_lib.gnutls_deinit.argtypes = [_p]
_lib.gnutls_certificate_free_credentials.argtypes = [_p]

GNUTLS_CLIENT, GNUTLS_CRD_CERTIFICATE, GNUTLS_X509_FMT_PEM = 2, 1, 1
GNUTLS_E_WARNING_ALERT_RECEIVED = -16


class GnuTLSError(Exception):
    pass


class GnuTLSClient:
    """A TLS 1.2 session with a client certificate over a blocking socket (with a
    receive timeout, so a silent server fails the test instead of hanging it)."""

    def __init__(self, port, pki, name, priority="NORMAL:-VERS-ALL:+VERS-TLS1.2", timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(True)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", timeout, 0))
        self.session, self.cred = _p(), _p()
        self._check(_lib.gnutls_init(ctypes.byref(self.session), GNUTLS_CLIENT))
        self._check(_lib.gnutls_priority_set_direct(self.session, priority.encode(), None))
        self._check(_lib.gnutls_certificate_allocate_credentials(ctypes.byref(self.cred)))
        self._check(_lib.gnutls_certificate_set_x509_key_file(
            self.cred, f"{pki}/{name}.pem".encode(), f"{pki}/{name}.key".encode(), GNUTLS_X509_FMT_PEM))
        self._check(_lib.gnutls_credentials_set(self.session, GNUTLS_CRD_CERTIFICATE, self.cred))
        _lib.gnutls_transport_set_int2(self.session, self.sock.fileno(), self.sock.fileno())
        self._check(_lib.gnutls_handshake(self.session))

    @staticmethod
    def _check(rc):
        if rc < 0:
            raise GnuTLSError(_lib.gnutls_strerror(rc).decode())
        return rc

    def handshake_again(self):
        """Asks for a renegotiation. Returns (rc, the alert number GnuTLS last got)."""
        rc = _lib.gnutls_handshake(self.session)
        return rc, _lib.gnutls_alert_get(self.session)

    def echo(self, data):
        self._check(_lib.gnutls_record_send(self.session, data, len(data)))
        buffer = ctypes.create_string_buffer(65536)
        received = b""
        while len(received) < len(data):
            n = self._check(_lib.gnutls_record_recv(self.session, buffer, len(buffer)))
            if n == 0:
                break
            received += buffer.raw[:n]
        return received

    def close(self):
        _lib.gnutls_deinit(self.session)
        _lib.gnutls_certificate_free_credentials(self.cred)
        self.sock.close()
