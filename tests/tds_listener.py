"""A fake SQL Server on 127.0.0.1: enough MS-TDS 7.4 for python-tds to log in, over real TLS.

`TdsServer` answers PRELOGIN with the ENCRYPTION byte it is given (`ENCRYPT_OFF`, login only;
`ENCRYPT_ON`; `ENCRYPT_NOT_SUP`; `ENCRYPT_REQ`), runs the TLS handshake wrapped in PRELOGIN packets
(an `ssl.SSLObject` over memory BIOs, server side, with a certificate of the test CA), then reads
TLS records on the bare socket as SQL Server does. It decodes the LOGIN7 packet (user name,
database, password un-obfuscated) and answers LOGINACK + ENVCHANGE + DONE, or the ERROR tokens it
is given + DONE. It answers `SELECT SUSER_SNAME(), 1 + 1` with the logged-in name (or the name it
is told), any query of `answers` with its rows, and anything else with an error.

Every connection is a `TdsConnection`: every raw byte received, in order what happened
(`events`), the LOGIN7 (and whether it came inside TLS), the batches, and how it ended. The
wire forms of a password (`wire_forms`: UTF-8, UCS-2 and LOGIN7's nibble-swapped, XOR 0xA5 UCS-2)
let a test prove none of them crossed the wire in the clear.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rotators.testing.tls import CertificateAuthority
from tests.listeners import Listener, read_exactly

ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3

# Packet types (MS-TDS 2.2.3.1.1) and tokens (2.2.7)
SQL_BATCH, REPLY, LOGIN7, PRELOGIN = 0x01, 0x04, 0x10, 0x12
_EOM = 0x01
_HEADER = struct.Struct(">BBHHBB")  # type, status, length, spid, packet id, window
_PACKET_SIZE = 4096  # python-tds reads packets into a buffer of this size until ENVCHANGE says else
_LOGINACK, _ENVCHANGE, _DONE, _ERROR, _COLMETADATA, _ROW = 0xAD, 0xE3, 0xFD, 0xAA, 0x81, 0xD1
_DONE_ERROR, _DONE_COUNT = 0x0002, 0x0010
_TDS74 = 0x74000004
_NVARCHAR, _INTN = 0xE7, 0x26
_COLLATION = bytes.fromhex("0904d00034")  # Latin1_General_CI_AS
TEST_QUERY = "SELECT SUSER_SNAME(), 1 + 1"

LOGIN_FAILED = (18456, "Login failed for user '{user}'.")
PASSWORD_EXPIRED = (18487, "Login failed for user '{user}'. Reason: The password of the account has expired.")
CANNOT_OPEN_DATABASE = (4060, 'Cannot open database "{database}" requested by the login. The login failed.')


# -- what a password looks like on the wire ----------------------------------------------------------------
def obfuscated(password: str) -> bytes:
    """LOGIN7's "encryption" of a password (MS-TDS 2.2.6.4): UCS-2, each byte's nibbles swapped
    and XORed with 0xA5."""
    return bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in password.encode("utf-16-le"))


def clarified(data: bytes) -> str:
    """The password of a LOGIN7 packet, un-obfuscated."""
    return bytes((((b ^ 0xA5) << 4) & 0xF0) | ((b ^ 0xA5) >> 4) for b in data).decode("utf-16-le")


def wire_forms(password: str) -> list[bytes]:
    """Every form in which a password could cross the wire in the clear."""
    return [password.encode(), password.encode("utf-16-le"), obfuscated(password)]


# -- certificates ------------------------------------------------------------------------------------------
def issue_cert(
    ca: CertificateAuthority, cert_path: Path, key_path: Path, *, common_name: str, sans: Sequence[str]
) -> None:
    """A server certificate whose CN and SANs are chosen apart (the CA's own helper puts the CN
    among the SANs): CN=localhost with only DNS:other.example is what pyOpenSSL's check of
    python-tds accepts for `localhost` and a strict one refuses."""
    ca_key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca.name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The server's side: TLS 1.2 and 1.3 offered, so that a test sees which one the client caps."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


# -- what one connection did -------------------------------------------------------------------------------
@dataclass
class Login7:
    user: str
    password: str = field(repr=False)
    database: str
    app: str
    server_name: str
    encrypted: bool  # arrived inside TLS records


@dataclass
class TdsConnection:
    raw: bytearray = field(default_factory=bytearray)  # every byte the client sent, as sent
    events: list[str] = field(default_factory=list)  # prelogin, handshake, login7, batch, close ...
    client_encryption: int | None = None  # the ENCRYPTION byte of the client's PRELOGIN
    tls_version: str | None = None
    handshake_error: str | None = None
    login: Login7 | None = None
    batches: list[str] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 5) -> TdsConnection:
        """Until the client hung up (or the server did): what it recorded is then complete."""
        assert self.finished.wait(timeout), "the connection did not end"
        return self


class _Closed(Exception):
    """The client hung up (or sent TLS close_notify)."""


class _Transport:
    """The client's bytes: raw from the socket, recorded, then through TLS once it is up."""

    def __init__(self, sock: socket.socket, record: TdsConnection) -> None:
        self.sock, self.record = sock, record
        self.tls: ssl.SSLObject | None = None
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.buffer = b""

    def raw(self, size: int) -> bytes:
        try:
            return read_exactly(self.sock, size, self.record.raw.extend)
        except OSError:
            raise _Closed from None

    def _more(self) -> None:
        if self.tls is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed
            self.record.raw.extend(chunk)
            self.buffer += chunk
            return
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise _Closed from None
                self.record.raw.extend(chunk)
                self.incoming.write(chunk)
                continue
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:  # the client's close_notify
                self.record.events.append("close_notify")
                raise _Closed
            self.buffer += data
            return

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def message(self, *, raw: bool = False) -> tuple[int, bytes]:
        """A TDS message (its packets up to end-of-message): its type and payload."""
        read = self.raw if raw else self.read
        kind, payload = None, b""
        while True:
            packet_type, status, length, *_ = _HEADER.unpack(read(_HEADER.size))
            kind = packet_type if kind is None else kind
            payload += read(length - _HEADER.size)
            if status & _EOM:
                return kind, payload


def _packets(kind: int, payload: bytes) -> bytes:
    chunk = _PACKET_SIZE - _HEADER.size
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    return b"".join(
        _HEADER.pack(kind, _EOM if n == len(pieces) - 1 else 0, len(piece) + _HEADER.size, 0, n + 1, 0)
        + piece
        for n, piece in enumerate(pieces)
    )


# -- tokens --------------------------------------------------------------------------------------------------
def _b_varchar(text: str) -> bytes:
    return bytes([len(text)]) + text.encode("utf-16-le")


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


def _done(status: int = 0, command: int = 0, rows: int = 0) -> bytes:
    return struct.pack("<BHHQ", _DONE, status, command, rows)


def _error(number: int, text: str, severity: int = 14) -> bytes:
    body = (
        struct.pack("<iBB", number, 1, severity)
        + _us_varchar(text)
        + _b_varchar("FAKESQL")
        + _b_varchar("")
        + struct.pack("<i", 1)
    )
    return struct.pack("<BH", _ERROR, len(body)) + body


def _loginack() -> bytes:
    body = struct.pack(">BI", 1, _TDS74) + _b_varchar("Microsoft SQL Server") + bytes([16, 0, 0x11, 0x94])
    return struct.pack("<BH", _LOGINACK, len(body)) + body


def _envchange(kind: int, new: str, old: str = "") -> bytes:
    body = bytes([kind]) + _b_varchar(new) + _b_varchar(old)
    return struct.pack("<BH", _ENVCHANGE, len(body)) + body


def _result(rows: Sequence[Sequence[str | int | None]]) -> bytes:
    """COLMETADATA (nvarchar(128) or int per column, from the first row) + ROWs + DONE."""
    columns = [str if isinstance(value, str) or value is None else int for value in rows[0]]
    meta = struct.pack("<BH", _COLMETADATA, len(columns))
    for kind in columns:
        meta += struct.pack("<IH", 0, 0x0001)  # user type, flags: nullable
        meta += bytes([_NVARCHAR]) + struct.pack("<H", 256) + _COLLATION if kind is str else bytes([_INTN, 4])
        meta += _b_varchar("")
    body = b""
    for row in rows:
        body += bytes([_ROW])
        for kind, value in zip(columns, row, strict=True):
            if kind is str:
                text = b"" if value is None else str(value).encode("utf-16-le")
                body += struct.pack("<H", 0xFFFF) if value is None else struct.pack("<H", len(text)) + text
            else:
                body += b"\x00" if value is None else struct.pack("<Bi", 4, int(value))
    return meta + body + _done(_DONE_COUNT, 0xC1, len(rows))


# -- the server ----------------------------------------------------------------------------------------------
Error = tuple[int, str]  # (number, text with {user} and {database})


class TdsServer(Listener):
    """The fake SQL Server. `errors`, when given, refuse every login with those ERROR tokens
    (SQL Server sends 4060 then 18456 for a database it cannot open); `session_user` is what the
    test query says (default: the name that logged in)."""

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        encryption: int = ENCRYPT_ON,
        errors: Sequence[Error] = (),
        session_user: str | None = None,
        answers: dict[str, Sequence[Sequence[str | int | None]]] | None = None,
        database: str = "master",
    ) -> None:
        self.context, self.encryption, self.errors = context, encryption, list(errors)
        self.session_user, self.answers, self.database = session_user, dict(answers or {}), database
        self.connections: list[TdsConnection] = []
        super().__init__()

    @property
    def last(self) -> TdsConnection:
        assert self.connections, "nobody connected"
        return self.connections[-1]

    def serve(self, client: socket.socket) -> None:
        record = TdsConnection()
        self.connections.append(record)
        client.settimeout(10)
        transport = _Transport(client, record)
        try:
            self._converse(transport, record)
        except _Closed:
            record.events.append("closed")
        except (ssl.SSLError, OSError) as exc:
            record.handshake_error = record.handshake_error or f"{type(exc).__name__}: {exc}"
            record.events.append("error")
        finally:
            client.close()
            record.finished.set()

    def _converse(self, transport: _Transport, record: TdsConnection) -> None:
        kind, payload = transport.message(raw=True)
        assert kind == PRELOGIN, f"expected PRELOGIN, got {kind:#x}"
        record.client_encryption = _prelogin_option(payload, 1)
        record.events.append("prelogin")
        transport.send(_packets(REPLY, self._prelogin_reply()))
        if self.encryption != ENCRYPT_NOT_SUP and record.client_encryption != ENCRYPT_NOT_SUP:
            self._handshake(transport, record)
        kind, payload = transport.message()
        if kind != LOGIN7:
            record.events.append(f"packet {kind:#x}")
            return
        record.login = _login7(payload, encrypted=transport.tls is not None)
        record.events.append("login7")
        if self.encryption == ENCRYPT_OFF and record.client_encryption == ENCRYPT_OFF:
            transport.tls = None  # login only: the rest in the clear
        if self.errors:
            names = {
                "user": record.login.user,
                "database": record.login.database,
                "password": record.login.password,
            }
            tokens = b"".join(_error(number, text.format(**names)) for number, text in self.errors)
            transport.send(_packets(REPLY, tokens + _done(_DONE_ERROR)))
            return
        database = record.login.database or self.database
        tokens = _loginack() + _envchange(1, database, "master") + _envchange(4, str(_PACKET_SIZE), "4096")
        transport.send(_packets(REPLY, tokens + _done()))
        while True:
            kind, payload = transport.message()
            if kind != SQL_BATCH:
                record.events.append(f"packet {kind:#x}")
                transport.send(_packets(REPLY, _error(16, "the fake takes SQL batches only", 16) + _done(2)))
                continue
            header_length = struct.unpack_from("<I", payload)[0]
            query = payload[header_length:].decode("utf-16-le")
            record.batches.append(query)
            record.events.append("batch")
            transport.send(_packets(REPLY, self._answer(query, record.login.user)))

    def _prelogin_reply(self) -> bytes:
        options = [(0, struct.pack(">IH", 0x10001194, 0)), (1, bytes([self.encryption])), (2, b"\x00"),
                   (3, b""), (4, b"\x00")]  # fmt: skip
        offset, head, body = 5 * len(options) + 1, b"", b""
        for token, value in options:
            head += struct.pack(">BHH", token, offset + len(body), len(value))
            body += value
        return head + b"\xff" + body

    def _handshake(self, transport: _Transport, record: TdsConnection) -> None:
        """TLS in PRELOGIN packets until the server's side completes, then on the bare socket."""
        assert self.context is not None, "give the fake a certificate to speak TLS"
        incoming, outgoing = transport.incoming, transport.outgoing
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            kind, payload = transport.message(raw=True)
            if kind != PRELOGIN:
                raise ssl.SSLError(f"a packet of type {kind:#x} during the handshake")
            incoming.write(payload)
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                record.handshake_error = f"{type(exc).__name__}: {exc}"
                raise
            if flight := outgoing.read():
                transport.send(_packets(PRELOGIN, flight))
            if done:
                break
        record.tls_version = tls.version()
        record.events.append("handshake")
        transport.tls = tls

    def _answer(self, query: str, user: str) -> bytes:
        if query == TEST_QUERY:
            return _result([(self.session_user if self.session_user is not None else user, 2)])
        if query in self.answers:
            return _result(self.answers[query])
        return _error(2812, f"The fake SQL Server does not answer {query[:40]!r}", 16) + _done(_DONE_ERROR)


def _prelogin_option(payload: bytes, token: int) -> int | None:
    position = 0
    while payload[position] != 0xFF:
        kind, offset, length = struct.unpack_from(">BHH", payload, position)
        if kind == token and length:
            return int(payload[offset])
        position += 5
    return None


def _login7(payload: bytes, *, encrypted: bool) -> Login7:
    """The fields of a LOGIN7 packet (MS-TDS 2.2.6.4) the tests look at."""

    def text(position: int, decode: Callable[[bytes], str] = lambda b: b.decode("utf-16-le")) -> str:
        offset, length = struct.unpack_from("<HH", payload, position)
        return decode(payload[offset : offset + 2 * length])

    return Login7(
        user=text(40),
        password=text(44, clarified),
        app=text(48),
        server_name=text(52),
        database=text(68),
        encrypted=encrypted,
    )
