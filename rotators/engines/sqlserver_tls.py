"""TLS for python-tds from the standard library, in place of the driver's pyOpenSSL module.

TDS 7.x runs the TLS handshake inside PRELOGIN packets, then sends TLS records on the bare
socket. python-tds does this in `pytds.tls` with pyOpenSSL, whose host name check accepts a
certificate's CN when its SAN does not match. Here `ssl.SSLObject` over memory BIOs does the
same exchange, so a SQL Server login gets the `ssl.SSLContext` of every other engine
(`rotators.database.ssl_context`): OpenSSL checks the chain and the SAN during the handshake,
before the driver writes its login packet. No pyOpenSSL, no cryptography in the bundle.

`install()` points `pytds.tls` at this module (the seam the driver calls through, pinned in
pyproject to the minor version it was written against); `context_for_login` hands the driver the
login's context. A server that offers encryption for the login only, or none, is refused by the
driver itself once it is asked for encryption (ENCRYPT_ON), before the login packet.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

import pytds.tls
from pytds import tds_base

# What the driver is given as `cafile` while a context is handed over: it only tells it to encrypt.
CONTEXT_MARKER = "rotators:ssl-context"
_BUFFER = 65536
_context: ContextVar[ssl.SSLContext | None] = ContextVar("rotators_sqlserver_tls", default=None)


class TlsSocket:
    """The socket python-tds reads and writes once the handshake is done: TLS records on the
    bare transport, as `pytds.tls.EncryptedSocket` does with pyOpenSSL."""

    def __init__(self, transport: Any, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self._transport = transport
        self._tls, self._incoming, self._outgoing = tls, incoming, outgoing

    @property
    def tls_version(self) -> str | None:
        return self._tls.version()

    def gettimeout(self) -> float | None:
        timeout: float | None = self._transport.gettimeout()
        return timeout

    def settimeout(self, timeout: float | None) -> None:
        self._transport.settimeout(timeout)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._tls.write(bytes(data))
        self._flush()

    def recv(self, size: int, flags: int = 0) -> bytes:
        while True:
            try:
                return self._tls.read(size)
            except ssl.SSLWantReadError:
                self._flush()
                received = self._transport.recv(_BUFFER)
                if not received:
                    return b""
                self._incoming.write(received)
            except ssl.SSLZeroReturnError:
                return b""

    def recv_into(self, buffer: bytearray | memoryview, size: int = 0, flags: int = 0) -> int:
        data = self.recv(size or len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def shutdown(self, how: int = 0) -> None:
        """close_notify, best effort: the server may have gone already."""
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is written; the server's is not awaited
        except (ssl.SSLError, OSError):
            return
        with suppress(OSError):
            self._flush()

    def close(self) -> None:
        self.shutdown()
        self._transport.close()

    def _flush(self) -> None:
        if pending := self._outgoing.read():
            self._transport.sendall(pending)


def establish_channel(session: Any) -> None:
    """The TLS handshake in PRELOGIN packets (MS-TDS 2.2.6.5), then TLS on the bare socket.
    A certificate that fails the context's checks raises ssl.SSLCertVerificationError here,
    before anything of the login is written."""
    conn, writer, reader = session.conn, session._writer, session._reader
    context = conn._login.tls_ctx
    if not isinstance(context, ssl.SSLContext):
        raise tds_base.Error("No TLS context for this connection: connect through rotators.engines.sqlserver")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=conn._login.server_name)
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:
            break
        _send_prelogin(writer, outgoing.read())
        response = reader.begin_response()
        if response.type != tds_base.PacketType.PRELOGIN:
            raise tds_base.Error(
                f"Expected a PRELOGIN packet during the TLS handshake, got type {response.type}"
            )
        while not reader.stream_finished():
            incoming.write(reader.recv(4096))
    if pending := outgoing.read():  # a last flight of the handshake, where the version has one
        _send_prelogin(writer, pending)
    encrypted = TlsSocket(conn.sock, tls, incoming, outgoing)
    conn.sock = writer._transport = reader._transport = encrypted


def _send_prelogin(writer: Any, data: bytes) -> None:
    if data:
        writer.begin_packet(tds_base.PacketType.PRELOGIN)
        writer.write(data)
        writer.flush()


def _context_for_driver(cafile: str) -> ssl.SSLContext:
    """What `pytds.connect(cafile=...)` calls: the context `context_for_login` handed over."""
    context = _context.get()
    if cafile != CONTEXT_MARKER or context is None:
        raise tds_base.Error("TLS for python-tds is set by rotators.engines.sqlserver, not by a CA file")
    return context


@contextmanager
def context_for_login(context: ssl.SSLContext) -> Iterator[str]:
    """Hand `context` to the driver's next connect() in this thread; yields its `cafile` value.
    TDS 7.x carries TLS up to 1.2 in PRELOGIN (1.3 needs TDS 8, which the driver lacks)."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    token = _context.set(context)
    try:
        yield CONTEXT_MARKER
    finally:
        _context.reset(token)


def install() -> None:
    """Point the driver's TLS module at this one (idempotent)."""
    pytds.tls.OPENSSL_AVAILABLE = True  # the driver checks it before asking for a context
    pytds.tls.create_context = _context_for_driver
    pytds.tls.establish_channel = establish_channel
