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
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from rotators.log import logger
from rotators.secrets import SecretStore
from rotators.testing.apikeys import ApiKeyService
from rotators.testing.mariadb import MariaDBFactory, MariaDBServer
from rotators.testing.postgres import PostgresFactory, PostgresServer
from rotators.testing.secantus import SecantusFactory, SecantusServer
from rotators.testing.secretsmanager import LocalSecretsManager

if TYPE_CHECKING:  # imported where used: tests/test_leak_check.py runs this file outside the package
    from tests.redshift_shims import StartupParameterProxy

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
    # Every page: ListSecrets returns 100 secrets a page, and a session makes hundreds.
    pages = sm.client.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True)
    for secret in (s for page in pages for s in page["SecretList"]):
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
            except (ValueError, RecursionError):  # a bad-input test stores such strings
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
            cursor = conn.execute(statement, params or None)  # () would make "%" a placeholder
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


@pytest.fixture
def secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """A single-user PostgreSQL secret made as someone else's script would: a role, plain boto3."""
    password = new_password()
    admin.create_role(role_name, password)
    return local_sm.create_secret(role_name, pg_secret(pg, role_name, password))


def invoke(handler: Callable[..., Any], secret_id: str, token: str, *steps: str, **extra: str) -> None:
    for step in steps or STEPS:
        handler({"SecretId": secret_id, "ClientRequestToken": token, "Step": step, **extra}, None)


@pytest.fixture(scope="session", autouse=True)
def _no_aws_by_accident() -> None:
    """Tests talk to the local endpoint only; a missing override must not reach real AWS."""
    os.environ.pop("AWS_PROFILE", None)


# -- SecantusDB: a MongoDB-wire server with SCRAM and TLS, for the DocumentDB/MongoDB engine -----------
@pytest.fixture(scope="session")
def secantus_factory() -> Iterator[SecantusFactory]:
    factory = SecantusFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def mongo(secantus_factory: SecantusFactory) -> SecantusServer:
    """A server shared by the tests that do not stop it (each uses its own users)."""
    return secantus_factory.start()


@pytest.fixture
def own_mongo(secantus_factory: SecantusFactory) -> Iterator[SecantusServer]:
    """A server of the test's own, for tests that stop and start it."""
    server = secantus_factory.start()
    yield server
    server.stop(crash=True)


@pytest.fixture
def mongo_sm(
    local_sm: LocalSecretsManager, secantus_factory: SecantusFactory, monkeypatch: pytest.MonkeyPatch
) -> LocalSecretsManager:
    """The local Secrets Manager, with the CA of the SecantusDB servers as the rotator's bundle."""
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(secantus_factory.ca.cert_path))
    return local_sm


class MongoAdmin:
    """The `root` user of one SecantusDB server: makes users and checks which passwords log in."""

    def __init__(self, server: SecantusServer) -> None:
        self.server = server

    def command(self, *args: Any, **kwargs: Any) -> Any:
        with self.server.client() as client:
            return client.admin.command(*args, **kwargs)

    def create_user(self, name: str, password: str, roles: list[Any], **options: Any) -> None:
        self.command("createUser", name, pwd=password, roles=roles, **options)

    def set_password(self, name: str, password: str) -> None:
        """A password reset by hand, outside Secrets Manager."""
        self.command("updateUser", name, pwd=password)

    def user(self, name: str) -> dict[str, Any] | None:
        users = self.command("usersInfo", name)["users"]
        return users[0] if users else None

    def logs_in(self, user: str, password: str, mechanism: str | None = None) -> bool:
        """SecantusDB answers pymongo's speculative SCRAM-SHA-256 for a SHA-1-only user and then
        fails it, so such a user must name SCRAM-SHA-1 (a real mongod negotiates it)."""
        import pymongo

        options = {"authMechanism": mechanism} if mechanism else {}
        try:
            with self.server.client(user, password, **options) as client:
                client.admin.command("ping")
                return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, "login failed for another reason"
            return False


@pytest.fixture
def mongo_admin(mongo: SecantusServer) -> MongoAdmin:
    return MongoAdmin(mongo)


def mongo_secret(server: SecantusServer, username: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "mongo",
        "host": server.host,
        "port": server.port,
        "username": username,
        "password": password,
        "dbname": "admin",
        "ssl": True,
        **extra,
    }


# -- custom rotators: the conformance kit (rotators.testing.conformance) and a local API key service ---
pytest_plugins = ["rotators.testing.conformance"]


@pytest.fixture(scope="session")
def rotators_local_sm(_sm_server: LocalSecretsManager) -> LocalSecretsManager:
    """The kit shares the suite's one local Secrets Manager."""
    return _sm_server


@pytest.fixture(scope="session")
def api_key_service() -> Iterator[ApiKeyService]:
    """A real HTTPS API key service on 127.0.0.1 (rotators/testing/apikeys.py)."""
    service = ApiKeyService()
    yield service
    service.close()


# -- MariaDB: the MySQL engine's real server (password authentication, TLS) ----------------------------
@pytest.fixture(scope="session")
def mariadb_factory() -> Iterator[MariaDBFactory]:
    factory = MariaDBFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def mariadb(mariadb_factory: MariaDBFactory) -> MariaDBServer:
    """A MariaDB server shared by the tests that do not stop it (each uses its own accounts)."""
    return mariadb_factory.start()


@pytest.fixture
def own_mariadb(mariadb_factory: MariaDBFactory) -> Iterator[MariaDBServer]:
    """A server of the test's own, for tests that stop and start it."""
    server = mariadb_factory.start()
    yield server
    server.stop()


@pytest.fixture
def mysql_sm(
    local_sm: LocalSecretsManager, mariadb_factory: MariaDBFactory, monkeypatch: pytest.MonkeyPatch
) -> LocalSecretsManager:
    """The local Secrets Manager, with the CA of the MariaDB servers as the rotator's bundle."""
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(mariadb_factory.ca.cert_path))
    return local_sm


class MariaDBAdmin:
    """root of one MariaDB server: makes accounts and checks which passwords log in."""

    def __init__(self, server: MariaDBServer) -> None:
        self.server = server

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import pymysql

        with pymysql.connect(**self.server.admin_kwargs()) as conn, conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            return list(cursor.fetchall())

    def create_user(self, name: str, password: str, *grants: str, host: str = "127.0.0.1") -> None:
        """`name`@`host` with `password`; each grant (e.g. "SELECT ON shop.*") is given to it."""
        self.sql("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
        for grant in grants:
            self.sql(f"GRANT {grant} TO %s@%s", (name, host))

    def set_password(self, name: str, password: str, host: str = "127.0.0.1") -> None:
        """A password reset by hand, outside Secrets Manager."""
        self.sql("SET PASSWORD FOR %s@%s = PASSWORD(%s)", (name, host, password))

    def grants(self, name: str, host: str = "127.0.0.1") -> set[str]:
        """SHOW GRANTS with the account written as <account>, without password hashes, and with
        column lists sorted (the server prints them in no fixed order)."""
        import re

        account = f"`{name.replace('`', '``')}`@`{host}`"
        found = set()
        for (line,) in self.sql("SHOW GRANTS FOR %s@%s", (name, host)):
            text = re.sub(
                r" IDENTIFIED (BY PASSWORD|VIA \w+ USING) '[^']*'", "", line.replace(account, "<account>")
            )
            found.add(re.sub(r"\(([^()]*)\)", lambda m: f"({', '.join(sorted(m[1].split(', ')))})", text))
        return found

    def logs_in(self, user: str, password: str) -> bool:
        import pymysql

        try:
            with pymysql.connect(
                host=self.server.host, port=self.server.port, user=user, password=password,
                ssl_ca=str(self.server.ca.cert_path), ssl_verify_identity=True, connect_timeout=5,
            ):  # fmt: skip
                return True
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1045, "login failed for another reason"
            return False


@pytest.fixture
def mariadb_admin(mariadb: MariaDBServer) -> MariaDBAdmin:
    return MariaDBAdmin(mariadb)


def mysql_secret(server: MariaDBServer, username: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "mariadb",
        "host": server.host,
        "port": server.port,
        "username": username,
        "password": password,
        **extra,
    }


# -- Redshift: the real engine and driver, against PostgreSQL through test-only shims ----------------------
@pytest.fixture
def redshift_shims(monkeypatch: pytest.MonkeyPatch) -> None:
    """redshift-connector's two parsing fixes (tests/redshift_shims.py), for one test."""
    from tests.redshift_shims import patch_parsing

    patch_parsing(monkeypatch)


@pytest.fixture(scope="session")
def redshift_proxy(
    pg: PostgresServer, pg_factory: PostgresFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartupParameterProxy]:
    """The shared PostgreSQL server, as redshift-connector can reach it (TLS from pg_factory's CA)."""
    from tests.redshift_shims import StartupParameterProxy

    proxy = StartupParameterProxy(pg.host, pg.port, pg_factory.ca, tmp_path_factory.mktemp("redshift-proxy"))
    yield proxy
    proxy.close()


def redshift_secret(
    proxy: StartupParameterProxy, username: str, password: str, **extra: Any
) -> dict[str, Any]:
    return {
        "engine": "redshift",
        "host": proxy.host,
        "port": proxy.port,
        "username": username,
        "password": password,
        "dbname": "postgres",
        **extra,
    }
