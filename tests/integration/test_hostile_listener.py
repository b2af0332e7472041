"""An impostor on the database's address never gets the master password (nor, in single-user
rotation, the AWSCURRENT one), whatever the app or pending secret says about TLS.

The impostor is a few lines of protocol of our own on 127.0.0.1: it passes the application
user's logins through to the real server (as a man in the middle would, so the rotation gets as
far as the master's login) and, to anyone else, refuses TLS or shows a certificate of its own CA,
then asks for the password the way that gives it away: PostgreSQL's cleartext (3) or md5 (5)
request, MySQL's mysql_clear_password, dialog, or an RSA key of its own for sha256_password and
caching_sha2_password. It records every byte a client sends it (after TLS), and decrypts what
was encrypted with its key.
"""

from __future__ import annotations

import json
import re
import select
import socket
import ssl
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rotators.errors import DatabaseUnavailableError, LoginError, RotationError, TargetMismatchError
from rotators.secrets import AWSCURRENT, AWSPENDING
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.tls import CertificateAuthority
from tests.engines import MYSQL, POSTGRESQL, Database, Login
from tests.listeners import Listener, read_exactly

HOST = "127.0.0.1"
PG_SSL_REQUEST, PG_GSS_REQUEST = 80877103, 80877104
CLIENT_SSL = 0x0800
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


@dataclass
class Impostor(Listener):
    """Listens on a random port; one thread per connection. `relay` holds the user names passed
    through to `upstream`; `tls` is the impostor's own server context (None: it refuses TLS)."""

    asks: ClassVar[dict[str, str]]  # by test id: each way it asks for the password, for `ask`
    cleartext: ClassVar[str]  # the `ask` that has the password sent as typed
    refused: ClassVar[str]  # what the rotator says when it answers no such request

    upstream: tuple[str, int]
    relay: set[str]
    ask: str
    tls: ssl.SSLContext | None = None
    received: bytearray = field(default_factory=bytearray)
    users: list[str | None] = field(default_factory=list)  # per connection: the user it named
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        Listener.__init__(self)

    def serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        self.users.append(None)
        index = len(self.users) - 1
        try:
            self.session(client, index)
        except (OSError, ssl.SSLError, ValueError, struct.error):
            pass  # the client gave up: that is the point
        finally:
            client.close()

    def session(self, client: socket.socket, index: int) -> None:
        raise NotImplementedError

    def recv(self, sock: socket.socket, size: int) -> bytes:
        """Exactly `size` bytes from a client, recorded."""
        return read_exactly(sock, size, self.record)

    def record(self, data: bytes) -> None:
        with self._lock:
            self.received += data

    def drain(self, client: socket.socket) -> None:
        """Whatever else the client sends, until it hangs up or falls silent."""
        client.settimeout(3)
        while chunk := client.recv(65536):
            self.record(chunk)

    def pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Relay both ways, recording what the client sends, until either side hangs up."""
        peers = {client: upstream, upstream: client}
        while True:
            ready: list[socket.socket] = [s for s in peers if isinstance(s, ssl.SSLSocket) and s.pending()]
            if not ready:
                ready, _, _ = select.select(list(peers), [], [], 10)
                if not ready:
                    return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is client:
                    self.record(data)
                peers[sock].sendall(data)


class PostgresImpostor(Impostor):
    """Answers SSLRequest with N (or S and its own certificate), then asks for `ask`: "3"
    (AuthenticationCleartextPassword) or "5" (AuthenticationMD5Password)."""

    asks: ClassVar[dict[str, str]] = {"cleartext": "3", "md5": "5"}
    cleartext = "3"
    refused = "never in clear"  # libpq's require_auth: SCRAM only

    def session(self, client: socket.socket, index: int) -> None:
        while True:
            (length,) = struct.unpack("!i", self.recv(client, 4))
            body = self.recv(client, length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code == PG_SSL_REQUEST and self.tls is not None:
                client.sendall(b"S")
                client = self.tls.wrap_socket(client, server_side=True)
            elif code in (PG_SSL_REQUEST, PG_GSS_REQUEST):
                client.sendall(b"N")
            else:
                break
        words = body[4:].split(b"\0")
        params = dict(zip(words[0::2], words[1::2], strict=False))
        user = params[b"user"].decode()
        self.users[index] = user
        if user in self.relay:  # the real server, in plaintext: pg_hba's `host` lines allow it
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(struct.pack("!i", length) + body)
                self.pump(client, upstream)
            return
        if self.ask == "5":
            client.sendall(b"R" + struct.pack("!ii", 12, 5) + b"salt")
        else:
            client.sendall(b"R" + struct.pack("!ii", 8, 3))
        self.drain(client)


class MySQLImpostor(Impostor):
    """Shows the real server's greeting (its SSL capability removed, unless the impostor has a
    certificate), then, to a user it does not relay, switches to the `ask` plugin: one that has
    the password sent as typed, or encrypted with the impostor's own RSA key."""

    asks: ClassVar[dict[str, str]] = {
        plugin: plugin
        for plugin in ("mysql_clear_password", "dialog", "sha256_password", "caching_sha2_password")
    }
    cleartext = "mysql_clear_password"
    refused = "without TLS"

    salt = b"0123456789abcdefghij"

    def session(self, client: socket.socket, index: int) -> None:
        with socket.create_connection(self.upstream) as plain:
            plain.settimeout(5)
            upstream: socket.socket = plain
            _, greeting = read_packet(upstream)
            at = greeting.index(b"\0", 1) + 1 + 4 + 8 + 1  # version, thread id, salt, filler
            (caps,) = struct.unpack_from("<H", greeting, at)
            caps = caps | CLIENT_SSL if self.tls is not None else caps & ~CLIENT_SSL
            greeting = greeting[:at] + struct.pack("<H", caps) + greeting[at + 2 :]
            write_packet(client, 0, greeting)
            seq, response = self.read(client)
            if self.tls is not None and len(response) == 32:  # SSLRequest: TLS on both sides
                write_packet(upstream, seq, response)
                client = self.tls.wrap_socket(client, server_side=True)
                upstream = _client_tls().wrap_socket(upstream)
                seq, response = self.read(client)
            user = response[32:].split(b"\0")[0].decode()
            self.users[index] = user
            if user in self.relay:
                write_packet(upstream, seq, response)
                self.pump(client, upstream)
                return
        write_packet(client, seq + 1, b"\xfe" + self.ask.encode() + b"\0" + self.switch_data())
        while True:
            seq, payload = self.read(client)
            answer = self.answer(payload)
            if answer is not None:
                write_packet(client, seq + 1, answer)

    def read(self, sock: socket.socket) -> tuple[int, bytes]:
        header = self.recv(sock, 4)
        length = int.from_bytes(header[:3], "little")
        return header[3], self.recv(sock, length)

    def switch_data(self) -> bytes:
        if self.ask == "dialog":
            return b"\x05Password: "  # flag: a password, the last question
        if self.ask in ("sha256_password", "caching_sha2_password"):
            return self.salt + b"\0"
        return b""

    def answer(self, payload: bytes) -> bytes | None:
        """The RSA methods: full authentication asked for, our key handed out, the answer read."""
        if self.ask == "caching_sha2_password" and len(payload) == 32:
            return b"\x01\x04"  # the scramble "missed the cache": perform full authentication
        if payload in (b"\x01", b"\x02"):  # a request for the server's public key
            return b"\x01" + RSA_PEM
        if len(payload) == RSA_KEY.key_size // 8:
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
            clear = RSA_KEY.decrypt(payload, oaep)
            self.record(bytes(c ^ self.salt[i % len(self.salt)] for i, c in enumerate(clear)))
        return None


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 4:
        header += sock.recv(4 - len(header)) or b"!" * 4
    length, data = int.from_bytes(header[:3], "little"), b""
    while len(data) < length:
        data += sock.recv(length - len(data))
    return header[3], data


def write_packet(sock: socket.socket, seq: int, payload: bytes) -> None:
    sock.sendall(len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload)


def _client_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def impostor_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 from a CA of the impostor's own: `require` takes it."""
    directory = tmp_path_factory.mktemp("impostor")
    ca = CertificateAuthority.create(directory / "ca")
    cert, key = directory / "server.crt", directory / "server.key"
    ca.issue_server_cert(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


IMPOSTORS: dict[str, type[Impostor]] = {POSTGRESQL.name: PostgresImpostor, MYSQL.name: MySQLImpostor}
EACH_ENGINE = [pytest.param(engine, id=engine.name) for engine in (POSTGRESQL, MYSQL)]
EACH_ASK = [
    pytest.param(engine, ask, id=f"{engine.name}-{name}")
    for engine in (POSTGRESQL, MYSQL)
    for name, ask in IMPOSTORS[engine.name].asks.items()
]
APP_TLS = pytest.mark.parametrize(
    "app_tls",
    [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}],
    ids=["ssl-false", "disable", "require"],
)

ImpostorFactory = Callable[..., Impostor]


@pytest.fixture
def impostor(db: Database) -> Iterator[ImpostorFactory]:
    """Impostors of `db`'s engine in front of its server: `make(relay, ask, tls=None)`."""
    made: list[Impostor] = []

    def make(relay: set[str], ask: str, tls: ssl.SSLContext | None = None) -> Impostor:
        made.append(IMPOSTORS[db.engine.name]((db.server.host, db.server.port), relay, ask, tls))
        return made[-1]

    yield make
    for one in made:
        one.close()


def fails_and_moves_nothing(
    db: Database,
    arn: str,
    listener: Impostor,
    error: type[RotationError],
    match: str,
    *passwords: str,
) -> None:
    """createSecret, then setSecret fails, and first of all: none of `passwords`, AWSCURRENT's
    or AWSPENDING's reached the impostor or the error. Then: the error is typed, no label moved."""
    token = db.sm.start_rotation(arn)
    current = db.sm.value(arn, AWSCURRENT)
    db.invoke(arn, token, "createSecret")
    labels, pending = db.sm.stages(arn), db.sm.value(arn, AWSPENDING)
    with pytest.raises(RotationError) as caught:
        db.invoke(arn, token, "setSecret")
    for password in (*passwords, current["password"], pending["password"]):
        assert password.encode() not in listener.received, "a password reached the impostor"
        assert password not in str(caught.value)
    assert isinstance(caught.value, error), caught.value
    assert re.search(match, str(caught.value))
    assert db.sm.stages(arn) == labels
    assert db.sm.value(arn, AWSCURRENT) == current


@dataclass
class Pair:
    """An application user (the impostor relays its logins) and a master, both real."""

    app: Login
    master: Login


@pytest.fixture
def pair(db: Database) -> Pair:
    return Pair(db.add_user(), db.add_master())


def alternating(
    db: Database, pair: Pair, listener: Impostor, app_tls: dict[str, Any], **master_tls: Any
) -> str:
    """The app's secret and its master's, both naming the impostor: the app's ARN."""
    master_arn = db.store(pair.master, host=HOST, port=listener.port, **master_tls)
    return db.store(pair.app, host=HOST, port=listener.port, masterarn=master_arn, **app_tls)


@pytest.mark.parametrize("engine", EACH_ENGINE)
@APP_TLS
def test_the_master_keeps_its_own_tls_whatever_the_app_secret_says(
    db: Database, pair: Pair, impostor: ImpostorFactory, impostor_tls: ssl.SSLContext, app_tls: dict[str, Any]
) -> None:
    tls = impostor_tls if app_tls.get("sslmode") == "require" else None
    listener = impostor({pair.app.username}, IMPOSTORS[db.engine.name].cleartext, tls)
    arn = alternating(db, pair, listener, app_tls)

    fails_and_moves_nothing(
        db, arn, listener, DatabaseUnavailableError, "Cannot connect", pair.master.password
    )

    assert listener.users == [pair.app.username, None], "AWSCURRENT was relayed, the master stopped at TLS"


@pytest.mark.parametrize(("engine", "ask"), EACH_ASK)
def test_the_master_without_tls_answers_no_request_that_gives_the_password_away(
    db: Database, pair: Pair, impostor: ImpostorFactory, ask: str
) -> None:
    """The master secret itself says "ssl": false: the impostor asks the master for the clear
    password or an md5 hash (libpq's require_auth answers only SCRAM), or switches it to a MySQL
    plugin that sends the password as typed or encrypted with the impostor's own RSA key."""
    listener = impostor({pair.app.username}, ask)
    arn = alternating(db, pair, listener, {"ssl": False}, ssl=False)

    fails_and_moves_nothing(db, arn, listener, LoginError, listener.refused, pair.master.password)

    assert listener.users == [pair.app.username, pair.master.username], "the impostor got to ask the master"


@pytest.mark.parametrize("engine", EACH_ENGINE)
def test_a_single_user_pending_without_tls_sends_nothing(db: Database, impostor: ImpostorFactory) -> None:
    """A staged AWSPENDING with "ssl": false would have AWSCURRENT's password travel in clear."""
    listener = impostor(set(), IMPOSTORS[db.engine.name].cleartext)
    arn = db.store(db.add_user(), host=HOST, port=listener.port)
    token = db.sm.start_rotation(arn)
    pending = {**db.sm.value(arn, AWSCURRENT), "ssl": False, "password": "Pending-" + uuid.uuid4().hex}
    db.sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(pending), VersionStages=[AWSPENDING]
    )
    db.fails(arn, token, "setSecret", TargetMismatchError, "weaker TLS")
    assert listener.users == [] and not listener.received, "nothing reached the listener"


@pytest.mark.parametrize(("engine", "ask"), EACH_ASK)
def test_a_single_user_without_tls_answers_no_request_that_gives_the_password_away(
    db: Database, impostor: ImpostorFactory, ask: str
) -> None:
    login = db.add_user()
    listener = impostor(set(), ask)
    arn = db.store(login, host=HOST, port=listener.port, ssl=False)

    fails_and_moves_nothing(db, arn, listener, LoginError, listener.refused)

    assert listener.users == [login.username]


def test_the_impostor_would_have_caught_a_password(mariadb: MariaDBServer, pg: PostgresServer) -> None:
    """The proof can fail: drivers left to their defaults hand the impostor the password by each
    method the tests above ask for."""
    import psycopg
    import pymysql

    password = "Caught-" + uuid.uuid4().hex
    for ask in PostgresImpostor.asks.values():
        with PostgresImpostor((pg.host, pg.port), set(), ask) as listener:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(
                    host=HOST,
                    port=listener.port,
                    user="m",
                    password=password,
                    sslmode="disable",
                    connect_timeout=3,
                )
            expected = password.encode() if ask == "3" else b"md5"
            assert expected in listener.received
    for ask in MySQLImpostor.asks.values():
        with MySQLImpostor((mariadb.host, mariadb.port), set(), ask) as listener:
            with pytest.raises(pymysql.MySQLError):
                pymysql.connect(
                    host=HOST, port=listener.port, user="m", password=password, ssl_disabled=True,
                    connect_timeout=3, read_timeout=1,
                )  # fmt: skip
            assert password.encode() in listener.received, ask
