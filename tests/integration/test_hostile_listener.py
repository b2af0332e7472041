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
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rotators.engines import mysql, postgresql
from rotators.errors import DatabaseUnavailableError, LoginError, RotationError, TargetMismatchError
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Admin, MariaDBAdmin, invoke, mysql_secret, pg_secret
from tests.listeners import Listener

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
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ValueError("closed")
            data += chunk
            self.record(chunk)
        return data

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
    certificate), then, to a user it does not relay, switches to the `ask` plugin."""

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


ImpostorFactory = Callable[..., Impostor]


@pytest.fixture
def impostor() -> Iterator[ImpostorFactory]:
    made: list[Impostor] = []

    def make(kind: type[Impostor], *args: Any, **kwargs: Any) -> Impostor:
        made.append(kind(*args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def fails_and_moves_nothing(
    sm: LocalSecretsManager,
    handler: Callable[..., Any],
    arn: str,
    listener: Impostor,
    error: type[RotationError],
    match: str,
    *passwords: str,
) -> None:
    """createSecret, then setSecret fails, and first of all: none of `passwords`, AWSCURRENT's
    or AWSPENDING's reached the impostor or the error. Then: the error is typed, no label moved."""
    token = sm.start_rotation(arn)
    current = sm.value(arn, "AWSCURRENT")
    invoke(handler, arn, token, "createSecret")
    labels, pending = sm.stages(arn), sm.value(arn, "AWSPENDING")
    with pytest.raises(RotationError) as caught:
        invoke(handler, arn, token, "setSecret")
    for password in (*passwords, current["password"], pending["password"]):
        assert password.encode() not in listener.received, "a password reached the impostor"
        assert password not in str(caught.value)
    assert isinstance(caught.value, error), caught.value
    assert re.search(match, str(caught.value))
    assert sm.stages(arn) == labels
    assert sm.value(arn, "AWSCURRENT") == current


@dataclass
class Pair:
    """An application user (the impostor relays its logins) and a master, both real."""

    app: str
    app_password: str
    master: str
    master_password: str


# -- PostgreSQL ----------------------------------------------------------------------------------
@pytest.fixture
def pg_pair(admin: Admin, role_name: str, new_password: Callable[[], str]) -> Pair:
    pair = Pair(role_name, new_password(), f"master_{role_name}", new_password())
    admin.create_role(pair.app, pair.app_password)
    admin.create_role(pair.master, pair.master_password, "CREATEROLE")
    return pair


def pg_alternating(
    sm: LocalSecretsManager,
    pg: PostgresServer,
    pair: Pair,
    port: int,
    app_tls: dict[str, Any],
    **master_tls: Any,
) -> str:
    master = pg_secret(pg, pair.master, pair.master_password, host=HOST, port=port, **master_tls)
    master_arn = sm.create_secret(f"{pair.master}-{uuid.uuid4().hex[:6]}", master)
    app = pg_secret(pg, pair.app, pair.app_password, host=HOST, port=port, masterarn=master_arn, **app_tls)
    return sm.create_secret(pair.app, app)


@pytest.mark.parametrize(
    "app_tls",
    [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}],
    ids=["ssl-false", "disable", "require"],
)
def test_postgresql_master_keeps_its_own_tls_whatever_the_app_secret_says(
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    pg_pair: Pair,
    impostor: ImpostorFactory,
    impostor_tls: ssl.SSLContext,
    app_tls: dict[str, Any],
) -> None:
    tls = impostor_tls if app_tls.get("sslmode") == "require" else None
    listener = impostor(PostgresImpostor, (pg.host, pg.port), {pg_pair.app}, "3", tls)
    arn = pg_alternating(local_sm, pg, pg_pair, listener.port, app_tls)

    fails_and_moves_nothing(
        local_sm,
        postgresql.handler,
        arn,
        listener,
        DatabaseUnavailableError,
        "Cannot connect",
        pg_pair.master_password,
    )

    assert listener.users == [pg_pair.app, None], "AWSCURRENT was relayed, the master stopped at TLS"


@pytest.mark.parametrize("ask", ["3", "5"], ids=["cleartext", "md5"])
def test_postgresql_master_without_tls_answers_only_scram(
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    pg_pair: Pair,
    impostor: ImpostorFactory,
    ask: str,
) -> None:
    """The master secret itself says "ssl": false: the impostor asks the master for the clear
    password, or an md5 hash without TLS, and libpq's require_auth answers neither."""
    listener = impostor(PostgresImpostor, (pg.host, pg.port), {pg_pair.app}, ask)
    arn = pg_alternating(local_sm, pg, pg_pair, listener.port, {"ssl": False}, ssl=False)

    fails_and_moves_nothing(
        local_sm, postgresql.handler, arn, listener, LoginError, "never in clear", pg_pair.master_password
    )

    assert listener.users == [pg_pair.app, pg_pair.master], "the impostor got to ask the master"


def test_postgresql_single_user_pending_without_tls_sends_nothing(
    local_sm: LocalSecretsManager, pg: PostgresServer, pg_pair: Pair, impostor: ImpostorFactory
) -> None:
    """A staged AWSPENDING with "ssl": false would have AWSCURRENT's password travel in clear."""
    listener = impostor(PostgresImpostor, (pg.host, pg.port), set(), "3")
    arn = local_sm.create_secret(
        pg_pair.app, pg_secret(pg, pg_pair.app, pg_pair.app_password, host=HOST, port=listener.port)
    )
    token = local_sm.start_rotation(arn)
    pending = {**local_sm.value(arn, "AWSCURRENT"), "ssl": False, "password": "Pending-" + uuid.uuid4().hex}
    local_sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(pending), VersionStages=["AWSPENDING"]
    )
    labels = local_sm.stages(arn)
    with pytest.raises(TargetMismatchError, match="weaker TLS"):
        invoke(postgresql.handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels
    assert listener.users == [] and not listener.received, "nothing reached the listener"


@pytest.mark.parametrize("ask", ["3", "5"], ids=["cleartext", "md5"])
def test_postgresql_single_user_without_tls_answers_only_scram(
    local_sm: LocalSecretsManager, pg: PostgresServer, pg_pair: Pair, impostor: ImpostorFactory, ask: str
) -> None:
    listener = impostor(PostgresImpostor, (pg.host, pg.port), set(), ask)
    secret = pg_secret(pg, pg_pair.app, pg_pair.app_password, host=HOST, port=listener.port, ssl=False)
    arn = local_sm.create_secret(pg_pair.app, secret)

    fails_and_moves_nothing(local_sm, postgresql.handler, arn, listener, LoginError, "never in clear")

    assert listener.users == [pg_pair.app]


# -- MySQL / MariaDB ------------------------------------------------------------------------------
@pytest.fixture
def my_pair(mariadb_admin: MariaDBAdmin, role_name: str, new_password: Callable[[], str]) -> Pair:
    pair = Pair(role_name, new_password(), f"master_{role_name}", new_password())
    mariadb_admin.create_user(pair.app, pair.app_password)
    mariadb_admin.create_user(pair.master, pair.master_password)
    mariadb_admin.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (pair.master, HOST))
    return pair


def my_alternating(
    sm: LocalSecretsManager,
    server: MariaDBServer,
    pair: Pair,
    port: int,
    app_tls: dict[str, Any],
    **master_tls: Any,
) -> str:
    master = mysql_secret(server, pair.master, pair.master_password, host=HOST, port=port, **master_tls)
    master_arn = sm.create_secret(f"{pair.master}-{uuid.uuid4().hex[:6]}", master)
    app = mysql_secret(
        server, pair.app, pair.app_password, host=HOST, port=port, masterarn=master_arn, **app_tls
    )
    return sm.create_secret(pair.app, app)


ATTACKS = ["mysql_clear_password", "dialog", "sha256_password", "caching_sha2_password"]


@pytest.mark.parametrize(
    "app_tls",
    [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}],
    ids=["ssl-false", "disable", "require"],
)
def test_mysql_master_keeps_its_own_tls_whatever_the_app_secret_says(
    mysql_sm: LocalSecretsManager,
    mariadb: MariaDBServer,
    my_pair: Pair,
    impostor: ImpostorFactory,
    impostor_tls: ssl.SSLContext,
    app_tls: dict[str, Any],
) -> None:
    tls = impostor_tls if app_tls.get("sslmode") == "require" else None
    upstream = (mariadb.host, mariadb.port)
    listener = impostor(MySQLImpostor, upstream, {my_pair.app}, "mysql_clear_password", tls)
    arn = my_alternating(mysql_sm, mariadb, my_pair, listener.port, app_tls)

    fails_and_moves_nothing(
        mysql_sm,
        mysql.handler,
        arn,
        listener,
        DatabaseUnavailableError,
        "Cannot connect",
        my_pair.master_password,
    )

    assert listener.users == [my_pair.app, None], "AWSCURRENT was relayed, the master stopped at TLS"


@pytest.mark.parametrize("ask", ATTACKS)
def test_mysql_master_without_tls_refuses_methods_that_give_the_password_away(
    mysql_sm: LocalSecretsManager,
    mariadb: MariaDBServer,
    my_pair: Pair,
    impostor: ImpostorFactory,
    ask: str,
) -> None:
    """The master secret itself says "ssl": false: the impostor switches the master to a plugin
    that sends the password as typed, or encrypted with the impostor's own RSA key."""
    listener = impostor(MySQLImpostor, (mariadb.host, mariadb.port), {my_pair.app}, ask)
    arn = my_alternating(mysql_sm, mariadb, my_pair, listener.port, {"ssl": False}, ssl=False)

    fails_and_moves_nothing(
        mysql_sm, mysql.handler, arn, listener, LoginError, "without TLS", my_pair.master_password
    )

    assert listener.users == [my_pair.app, my_pair.master], "the impostor got to ask the master"


def test_mysql_single_user_pending_without_tls_sends_nothing(
    mysql_sm: LocalSecretsManager, mariadb: MariaDBServer, my_pair: Pair, impostor: ImpostorFactory
) -> None:
    listener = impostor(MySQLImpostor, (mariadb.host, mariadb.port), set(), "mysql_clear_password")
    arn = mysql_sm.create_secret(
        my_pair.app, mysql_secret(mariadb, my_pair.app, my_pair.app_password, host=HOST, port=listener.port)
    )
    token = mysql_sm.start_rotation(arn)
    pending = {**mysql_sm.value(arn, "AWSCURRENT"), "ssl": False, "password": "Pending-" + uuid.uuid4().hex}
    mysql_sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(pending), VersionStages=["AWSPENDING"]
    )
    labels = mysql_sm.stages(arn)
    with pytest.raises(TargetMismatchError, match="weaker TLS"):
        invoke(mysql.handler, arn, token, "setSecret")
    assert mysql_sm.stages(arn) == labels
    assert listener.users == [] and not listener.received, "nothing reached the listener"


@pytest.mark.parametrize("ask", ATTACKS)
def test_mysql_single_user_without_tls_refuses_methods_that_give_the_password_away(
    mysql_sm: LocalSecretsManager,
    mariadb: MariaDBServer,
    my_pair: Pair,
    impostor: ImpostorFactory,
    ask: str,
) -> None:
    listener = impostor(MySQLImpostor, (mariadb.host, mariadb.port), set(), ask)
    secret = mysql_secret(
        mariadb, my_pair.app, my_pair.app_password, host=HOST, port=listener.port, ssl=False
    )
    arn = mysql_sm.create_secret(my_pair.app, secret)

    fails_and_moves_nothing(mysql_sm, mysql.handler, arn, listener, LoginError, "without TLS")

    assert listener.users == [my_pair.app]


def test_the_impostor_would_have_caught_a_password(
    mariadb: MariaDBServer, pg: PostgresServer, impostor: ImpostorFactory
) -> None:
    """The proof can fail: drivers left to their defaults hand the impostor the password by each
    method the tests above ask for."""
    import psycopg
    import pymysql

    password = "Caught-" + uuid.uuid4().hex
    for ask in ("3", "5"):
        listener = impostor(PostgresImpostor, (pg.host, pg.port), set(), ask)
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
    for ask in ATTACKS:
        listener = impostor(MySQLImpostor, (mariadb.host, mariadb.port), set(), ask)
        with pytest.raises(pymysql.MySQLError):
            pymysql.connect(
                host=HOST, port=listener.port, user="m", password=password, ssl_disabled=True,
                connect_timeout=3, read_timeout=1,
            )  # fmt: skip
        assert password.encode() in listener.received, ask
