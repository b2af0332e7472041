"""The one shared fixture module: real servers, a local Secrets Manager, and the leak check.

Servers are started by the fixtures (random ports, temporary directories, SCRAM password
auth, TLS), never the machine's own PostgreSQL: a `trust` server accepts any password and
would prove nothing about rotation.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from rotators.local.postgres import PostgresFactory, PostgresServer
from rotators.local.secretsmanager import LocalSecretsManager
from rotators.log import logger
from rotators.secrets import SecretStore

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


# -- the leak check: no secret value may reach a log line or captured output --------------------
@dataclass
class Watched:
    capture: pytest.CaptureFixture[str] | None = None
    values: set[str] = field(default_factory=set)
    output: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)

    def log_records(self) -> list[dict[str, Any]]:
        """The package's log lines so far, parsed, as Lambda would print them."""
        return [json.loads(line) for line in self.log_lines]

    def read_output(self) -> str:
        """What the test printed so far; use it instead of capfd, so the check still sees it."""
        assert self.capture is not None
        out, err = self.capture.readouterr()
        self.output.extend([out, err])
        return out


_generated = Watched()


@pytest.fixture(autouse=True)
def leak_check(
    request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[Watched]:
    """Fails a test if any password it generated, stored or watched shows up in its output:
    our JSON log lines as Lambda would print them, any other log record, stdout and stderr."""
    watched = Watched(capfd)
    _generated.values.clear()
    lines = _JsonLines(watched.log_lines)
    package_logger = logging.getLogger(logger.name)
    package_logger.addHandler(lines)
    try:
        yield watched
    finally:
        package_logger.removeHandler(lines)
    if "local_sm" in request.fixturenames:
        watched.add(*_stored_values(request.getfixturevalue("_sm_server")))
    watched.add(*_generated.values)
    watched.read_output()
    records = [r for phase in ("setup", "call") for r in caplog.get_records(phase)]
    other_records = [f"{r.getMessage()} {r.__dict__}" for r in records]
    seen = "\n".join([*watched.output, *watched.log_lines, *other_records])
    leaked = sorted(v for v in watched.values if v in seen)
    assert not leaked, f"{len(leaked)} secret value(s) appeared in logs or output"


class _JsonLines(logging.Handler):
    """Formats records with the Powertools formatter, exactly as the Lambda log would show them."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logger.registered_formatter)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_checked_arns: set[str] = set()


def _stored_values(sm: LocalSecretsManager) -> Iterator[str]:
    """Every value of every secret the running test made (earlier tests' secrets are done)."""
    for secret in sm.client.list_secrets()["SecretList"]:
        if secret["ARN"] in _checked_arns:
            continue
        _checked_arns.add(secret["ARN"])
        versions = sm.client.list_secret_version_ids(SecretId=secret["ARN"], IncludeDeprecated=True)
        for version in versions["Versions"]:
            try:
                text = sm.client.get_secret_value(SecretId=secret["ARN"], VersionId=version["VersionId"])[
                    "SecretString"
                ]
            except sm.client.exceptions.ResourceNotFoundException:
                continue  # a version staged by RotateSecret that never got a value
            yield text
            try:
                parsed = json.loads(text)
            except ValueError:
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get("password"), str):
                yield parsed["password"]


@pytest.fixture(autouse=True, scope="session")
def _record_generated_passwords() -> Iterator[None]:
    """Every password GetRandomPassword hands out joins the leak check of the running test."""
    original = SecretStore.random_password

    def recording(self: SecretStore, policy: Any) -> str:
        password = original(self, policy)
        _generated.add(password)
        return password

    SecretStore.random_password = recording  # type: ignore[method-assign]
    yield
    SecretStore.random_password = original  # type: ignore[method-assign]


# -- real parts --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_factory() -> Iterator[PostgresFactory]:
    factory = PostgresFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def pg(pg_factory: PostgresFactory) -> PostgresServer:
    """A PostgreSQL server shared by the tests that do not stop it (each uses its own roles)."""
    return pg_factory.start()


@pytest.fixture
def own_pg(pg_factory: PostgresFactory) -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop and start it."""
    server = pg_factory.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _sm_server() -> Iterator[LocalSecretsManager]:
    sm = LocalSecretsManager()
    yield sm
    sm.close()


@pytest.fixture
def local_sm(
    _sm_server: LocalSecretsManager, pg_factory: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> LocalSecretsManager:
    """The moto server over HTTP, with the environment a deployed rotator would have."""
    for key, value in _sm_server.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(pg_factory.ca.cert_path))
    return _sm_server


# -- helpers that play Secrets Manager and the database admin -----------------------------------------
class Admin:
    """The superuser of one test server: makes roles and checks which passwords log in."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(**self.server.admin_dsn(), autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def create_role(self, name: str, password: str, *extra: str) -> None:
        from psycopg import sql

        with psycopg.connect(**self.server.admin_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + " ".join(extra)).format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def set_password(self, name: str, password: str) -> None:
        """A password reset by hand, outside Secrets Manager."""
        from psycopg import sql

        with psycopg.connect(**self.server.admin_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
            )

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with psycopg.connect(
                host=self.server.host,
                port=self.server.port,
                dbname="postgres",
                user=user,
                password=password,
                sslmode="verify-full",
                sslrootcert=str(self.server.ca.cert_path),
                connect_timeout=5,
            ):
                return True
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), "login failed for another reason"
            return False


@pytest.fixture
def admin(pg: PostgresServer) -> Admin:
    return Admin(pg)


@pytest.fixture
def role_name() -> str:
    """A fresh role name per test, so tests can share one server."""
    return f"app_{uuid.uuid4().hex[:10]}"


def pg_secret(server: PostgresServer, username: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": username,
        "password": password,
        "dbname": "postgres",
        **extra,
    }


@pytest.fixture
def new_password() -> Callable[[], str]:
    """Passwords a test sets by hand (they join the leak check through the stored secrets)."""
    return lambda: "Init-" + uuid.uuid4().hex


def invoke(handler: Callable[..., Any], secret_id: str, token: str, *steps: str, **extra: str) -> None:
    for step in steps or STEPS:
        handler({"SecretId": secret_id, "ClientRequestToken": token, "Step": step, **extra}, None)


@pytest.fixture(scope="session", autouse=True)
def _no_aws_by_accident() -> None:
    """Tests talk to the local endpoint only; a missing override must not reach real AWS."""
    os.environ.pop("AWS_PROFILE", None)
