"""PostgreSQLRotator without a server: its TLS options and the exact SQL it sends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql

from rotators.database import DatabaseSecret
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.errors import SecretTestError
from rotators.secrets import AWSCURRENT
from tests.offline import FakeSecretsManager, create_then_set, refused_change, store

SOURCE = "O'Neil-App we\"ird"
SOURCE_ID = '"O\'Neil-App we""ird"'
CLONE_ID = '"O\'Neil-App we""ird_clone"'
PASSWORD = "it's-S3cr3t-Value"


def verifier_literal(user: str, password: str) -> str:
    """What the engine sends instead of the password: the verifier libpq made (faked below)."""
    return "'" + FakePgConn.verifier(user.encode(), password.encode()).decode().replace("'", "''") + "'"


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "postgres", "host": "db", "username": "app", "password": PASSWORD, **changes}
    return PostgreSQLRotator().parse(json.dumps(value), where="the test secret")


# -- TLS (plaintext and a weak ROTATORS_SSLMODE: tests/unit/test_tls_policy.py) --------------------------
def test_tls_default_is_verified_against_the_system_store() -> None:
    assert PostgreSQLRotator.tls_options(secret()) == {"sslmode": "verify-full", "sslrootcert": "system"}


def test_tls_ca_bundle_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/env/ca.pem")
    assert PostgreSQLRotator.tls_options(secret())["sslrootcert"] == "/env/ca.pem"
    assert PostgreSQLRotator.tls_options(secret(sslrootcert="/own/ca.pem"))["sslrootcert"] == "/own/ca.pem"


def test_tls_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    options = PostgreSQLRotator.tls_options
    assert options(secret(sslmode="verify-ca")) == {"sslmode": "verify-ca", "sslrootcert": "system"}
    monkeypatch.setenv("ROTATORS_SSLMODE", "require")
    assert options(secret()) == {"sslmode": "require"}
    assert options(secret(sslmode="verify-full"))["sslmode"] == "verify-full"  # the secret wins


# -- SQL -----------------------------------------------------------------------------------------------
class Result:
    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [] if self.row is None else [self.row]


class FakePgConn:
    """libpq's PQencryptPasswordConn, faked: a verifier that names the user, never the password."""

    @staticmethod
    def verifier(user: bytes, password: bytes) -> bytes:
        return b"SCRAM-SHA-256$4096:fake$" + user + b":" + hashlib.sha256(password).hexdigest()[:12].encode()

    def encrypt_password(self, passwd: bytes, user: bytes, algorithm: bytes | None = None) -> bytes:
        return self.verifier(user, passwd)


class RecordingConnection:
    """Records (sql, params, inside a transaction) for every statement; answers two queries."""

    def __init__(
        self,
        *,
        existing: frozenset[str] = frozenset(),
        session_row: tuple[Any, ...] | None = ("app", 2),
        fail_with: Exception | None = None,
    ) -> None:
        self.existing, self.session_row, self.fail_with = existing, session_row, fail_with
        self.sent: list[tuple[str, Any, bool]] = []
        self.in_transaction = False
        self.pgconn = FakePgConn()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.in_transaction = True
        try:
            yield
        finally:
            self.in_transaction = False

    def execute(self, statement: str | sql.Composed, params: Any = None) -> Result:
        text = statement if isinstance(statement, str) else statement.as_string(None)
        self.sent.append((text, params, self.in_transaction))
        if isinstance(statement, sql.Composed) and self.fail_with is not None:
            raise self.fail_with
        if text.startswith("SELECT 1 FROM pg_roles"):
            return Result((1,) if params[0] in self.existing else None)
        if text.startswith("SELECT session_user"):
            return Result(self.session_row)
        if text.startswith("SELECT pg_has_role"):
            return Result((True,))  # the clone is a member of its source
        return Result(None)

    def as_conn(self) -> psycopg.Connection[Any]:
        return cast("psycopg.Connection[Any]", self)


def test_set_password_sql() -> None:
    conn = RecordingConnection()
    PostgreSQLRotator().set_password(conn.as_conn(), SOURCE, PASSWORD)
    assert conn.sent == [
        (f"ALTER ROLE {SOURCE_ID} WITH PASSWORD {verifier_literal(SOURCE, PASSWORD)}", None, True)
    ]
    assert PASSWORD not in str(conn.sent), "only the verifier reaches the server"


@pytest.mark.parametrize(
    ("existing", "verb"), [(frozenset(), "CREATE"), (frozenset({SOURCE + "_clone"}), "ALTER")]
)
def test_clone_user_sql(existing: frozenset[str], verb: str) -> None:
    conn = RecordingConnection(existing=existing)
    PostgreSQLRotator().clone_user(conn.as_conn(), SOURCE, SOURCE + "_clone", PASSWORD)
    assert conn.sent == [
        ("SELECT 1 FROM pg_roles WHERE rolname = %s", [SOURCE + "_clone"], False),
        (
            f"{verb} ROLE {CLONE_ID} WITH LOGIN PASSWORD {verifier_literal(SOURCE + '_clone', PASSWORD)}",
            None,
            True,
        ),
        (f"GRANT {SOURCE_ID} TO {CLONE_ID}", None, True),
        (f"ALTER ROLE {CLONE_ID} SET role = 'O''Neil-App we\"ird'", None, True),
    ]


def test_probe() -> None:
    PostgreSQLRotator().probe(RecordingConnection(session_row=("app", 2)).as_conn(), "app")
    for row in [("postgres", 2), ("app", 3), None]:
        with pytest.raises(SecretTestError, match="'app'"):
            PostgreSQLRotator().probe(RecordingConnection(session_row=row).as_conn(), "app")


@pytest.mark.parametrize("call", ["set_password", "clone_user"])
def test_driver_error_becomes_password_change_error_without_the_password(call: str) -> None:
    refusal = psycopg.errors.InsufficientPrivilege(
        f"permission denied to alter role: {PASSWORD} / {PASSWORD}"
    )
    conn = RecordingConnection(fail_with=refusal).as_conn()
    assert "permission denied to alter role" in refused_change(PostgreSQLRotator(), conn, call, PASSWORD)


# -- which statements setSecret of a master (alternating-users) rotation sends -------------------------
class OfflinePostgreSQLRotator(PostgreSQLRotator):
    """The real engine, whose connect() hands out the recording connection instead of a socket."""

    def __init__(self, client: FakeSecretsManager, conn: RecordingConnection) -> None:
        super().__init__(store(client))
        self.conn = conn
        self.logins: list[str] = []

    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Any]:
        self.logins.append(username)
        yield self.conn


def master_set_sql(current_user: str) -> list[str]:
    """createSecret then setSecret from `current_user`; the SQL setSecret sent as the master."""
    login = {"engine": "postgres", "host": "db", "port": 5432, "dbname": "postgres"}
    client = FakeSecretsManager(
        {
            ("demo", AWSCURRENT): {**login, "username": current_user, "password": "Old-1", "masterarn": "m"},
            ("m", AWSCURRENT): {**login, "username": "postgres", "password": "Master-3"},
        }
    )
    rotator = OfflinePostgreSQLRotator(client, RecordingConnection(session_row=(current_user, 2)))
    create_then_set(rotator, client)
    assert rotator.logins == [current_user, "postgres"], "AWSCURRENT proves itself before the master acts"
    sent = [text for text, _, _ in rotator.conn.sent]
    checks = [i for i, text in enumerate(sent) if text.lstrip().startswith(("SELECT session_user", *_SAFETY))]
    changes = [i for i, text in enumerate(sent) if not text.lstrip().startswith("SELECT")]
    assert checks and changes and max(checks) < min(changes), "every check runs before any change"
    return [text for text in sent if not text.lstrip().startswith(("SELECT session_user", *_SAFETY))]


# The queries of the master's safety rules (admin_power, clone_mismatch, clone_lacks).
_SAFETY = ("SELECT r.rolname", "SELECT oid, rolsuper", "SELECT pg_has_role")


# The master's lock on the user it changes (an overlapping run waits), in the same transaction.
_LOCK = ["SELECT set_config('lock_timeout', %s, true)", "SELECT pg_advisory_xact_lock(hashtext(%s))"]


def test_master_rotation_of_a_user_creates_its_clone() -> None:
    assert master_set_sql("app") == [
        *_LOCK,
        "SELECT 1 FROM pg_roles WHERE rolname = %s",
        f'CREATE ROLE "app_clone" WITH LOGIN PASSWORD {verifier_literal("app_clone", "New-Value-2")}',
        'GRANT "app" TO "app_clone"',
        """ALTER ROLE "app_clone" SET role = 'app'""",
    ]


def test_master_rotation_of_the_clone_sets_the_original_password() -> None:
    assert master_set_sql("app_clone") == [
        *_LOCK,
        f'ALTER ROLE "app" WITH PASSWORD {verifier_literal("app", "New-Value-2")}',
    ]


def test_master_rotation_of_the_user_named_clone_creates_its_clone() -> None:
    assert master_set_sql("_clone")[:4] == [
        *_LOCK,
        "SELECT 1 FROM pg_roles WHERE rolname = %s",
        f'CREATE ROLE "_clone_clone" WITH LOGIN PASSWORD {verifier_literal("_clone_clone", "New-Value-2")}',
    ]
