"""The one shared fixture module: real servers, a local Secrets Manager, and the leak check.

Servers are started by the fixtures (random ports, temporary directories, SCRAM password
auth, TLS), never the machine's own PostgreSQL: a `trust` server accepts any password and
would prove nothing about rotation. What differs between engines (their superusers, secrets and
features) is declared once in tests/engines.py; `db` binds one to its server for a test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from rotators.log import logger
from rotators.secrets import SecretStore
from rotators.testing.apikeys import ApiKeyService
from rotators.testing.mariadb import MariaDBFactory, MariaDBServer
from rotators.testing.postgres import PostgresFactory, PostgresServer
from rotators.testing.secantus import SecantusFactory, SecantusServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.servers import ServerFactory, Stoppable
from tests.admins import Admin, Admins, MariaDBAdmin, MongoAdmin
from tests.engines import (
    DOCUMENTDB,
    MYSQL,
    POSTGRESQL,
    REDSHIFT,
    STEPS,
    Database,
    Engine,
    Login,
    RedshiftServer,
    bind,
    invoke,
)

if TYPE_CHECKING:
    from tests.redshift_shims import StartupParameterProxy

# Imported from here by the test modules (tests/admins.py and tests/engines.py hold them now).
__all__ = [
    "STEPS",
    "Admin",
    "MariaDBAdmin",
    "MongoAdmin",
    "invoke",
    "mysql_secret",
    "pg_secret",
    "redshift_secret",
]

pg_secret = POSTGRESQL.secret
mysql_secret = MYSQL.secret
redshift_secret = REDSHIFT.secret  # of the proxy: its host and port


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
    from rotators.testing.conformance import (
        JsonLines,
    )  # here: the plugin must load it first (assert rewriting)

    lines = JsonLines(watched.log_lines)
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


_checked_arns: set[str] = set()


def _stored_values(sm: LocalSecretsManager) -> list[str]:
    """Every value of every secret the running test made (earlier tests' secrets are done). The
    secrets are deleted once read: moto builds every secret's listing for each page it returns,
    so secrets left behind would slow every later test's check."""
    pages = sm.client.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True)
    made = [s["ARN"] for page in pages for s in page["SecretList"] if s["ARN"] not in _checked_arns]
    values: list[str] = []
    for arn in made:
        _checked_arns.add(arn)
        values += _values(sm, arn)
        with contextlib.suppress(sm.client.exceptions.ClientError):
            sm.client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    return values


def _values(sm: LocalSecretsManager, arn: str) -> Iterator[str]:
    """Each version's text, and the password in it."""
    versions = sm.client.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)
    for version in versions["Versions"]:
        try:
            text = sm.client.get_secret_value(SecretId=arn, VersionId=version["VersionId"])["SecretString"]
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
class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)
S = TypeVar("S", bound=Stoppable)


def _closed_after(thing: C) -> Iterator[C]:
    """For the session: at its end `thing` closes (a factory: every server it made stops and its
    files go)."""
    yield thing
    thing.close()


def _stopped_after(server: S, *, crash: bool = False) -> Iterator[S]:
    """A server of one test's own, stopped when the test ends."""
    yield server
    server.stop(crash=crash)


@pytest.fixture(scope="session", autouse=True)
def _no_aws_by_accident() -> None:
    """Tests talk to the local endpoint only; a missing override must not reach real AWS."""
    os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def _sm_server(rotators_local_sm: LocalSecretsManager) -> LocalSecretsManager:
    """The suite's one local Secrets Manager: the conformance kit's (rotators.testing.conformance)."""
    return rotators_local_sm


@pytest.fixture
def local_sm(
    _sm_server: LocalSecretsManager, pg_factory: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> LocalSecretsManager:
    """The moto server over HTTP, with the environment a deployed rotator would have."""
    for key, value in _sm_server.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(pg_factory.ca.cert_path))
    return _sm_server


@pytest.fixture(scope="session")
def admins() -> Iterator[Admins]:
    """The superusers of the shared servers, one kept connection each for the whole session."""
    yield from _closed_after(Admins())


@pytest.fixture
def role_name() -> str:
    """A fresh role name per test, so tests can share one server."""
    return f"app_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_password() -> Callable[[], str]:
    """Passwords a test sets by hand (they join the leak check through the stored secrets)."""
    return lambda: "Init-" + uuid.uuid4().hex


# -- one engine of tests/engines.py on its server, for tests parametrised with `engine` ---------------
@pytest.fixture
def db(
    engine: Engine, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, leak_check: Watched
) -> Database:
    """`engine` on the server the tests share."""
    return bind(engine, request, monkeypatch, leak_check.add)


@pytest.fixture
def app(db: Database) -> tuple[str, Login]:
    """A user of `engine` and its secret, made as someone else's script would (with a key the
    rotator does not read)."""
    login = db.add_user()
    return db.store(login, owner="team-a"), login


@pytest.fixture
def own_db(
    engine: Engine, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, leak_check: Watched
) -> Database:
    """`engine` on a server of the test's own, which the test may stop and start."""
    return bind(engine, request, monkeypatch, leak_check.add, server="own")


# -- the servers: each kind's factory for the session, a server the tests share, one of a test's own ------
def _servers(
    make: Callable[[], ServerFactory[Any]], factory: str, shared: str, *, crash: bool = False
) -> tuple[Any, Any, Any]:
    """A kind's three fixtures: `factory` for the session (at its end every server it made stops
    and its files go), `shared`, a server the tests share (they must not stop it; each uses users
    of its own), and own_`shared`, a server of one test's own, which it may stop and start."""

    @pytest.fixture(scope="session", name=factory)
    def session_factory() -> Iterator[ServerFactory[Any]]:
        yield from _closed_after(make())

    @pytest.fixture(scope="session", name=shared)
    def shared_server(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(factory).start()

    @pytest.fixture(name=f"own_{shared}")
    def own_server(request: pytest.FixtureRequest) -> Iterator[Any]:
        yield from _stopped_after(request.getfixturevalue(factory).start(), crash=crash)

    return session_factory, shared_server, own_server


pg_factory, pg, own_pg = _servers(PostgresFactory, "pg_factory", "pg")
secantus_factory, mongo, own_mongo = _servers(SecantusFactory, "secantus_factory", "mongo", crash=True)
mariadb_factory, mariadb, own_mariadb = _servers(MariaDBFactory, "mariadb_factory", "mariadb")


# -- PostgreSQL --------------------------------------------------------------------------------------------
@pytest.fixture
def admin(admins: Admins, pg: PostgresServer) -> Admin:
    return admins.typed(POSTGRESQL, pg, Admin)


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


# -- SecantusDB: a MongoDB-wire server with SCRAM and TLS, for the DocumentDB/MongoDB engine -----------
@pytest.fixture(scope="session")
def plain_mongo(secantus_factory: SecantusFactory) -> SecantusServer:
    """A server that speaks plaintext only (tests of `"ssl": false`)."""
    return secantus_factory.start(tls=False)


@pytest.fixture
def mongo_admin(admins: Admins, mongo: SecantusServer) -> MongoAdmin:
    return admins.typed(DOCUMENTDB, mongo, MongoAdmin)


# -- custom rotators: the conformance kit (rotators.testing.conformance) and a local API key service ---
pytest_plugins = ["rotators.testing.conformance"]


@pytest.fixture(scope="session")
def api_key_service() -> Iterator[ApiKeyService]:
    """A real HTTPS API key service on 127.0.0.1 (rotators/testing/apikeys.py)."""
    yield from _closed_after(ApiKeyService())


# -- MariaDB: the MySQL engine's real server (password authentication, TLS) ----------------------------
@pytest.fixture
def plain_mariadb(mariadb_factory: MariaDBFactory) -> Iterator[MariaDBServer]:
    """A server of the test's own without TLS (tests of `"ssl": false`)."""
    yield from _stopped_after(mariadb_factory.start(tls=False))


@pytest.fixture
def mysql_sm(
    local_sm: LocalSecretsManager, mariadb_factory: MariaDBFactory, monkeypatch: pytest.MonkeyPatch
) -> LocalSecretsManager:
    """The local Secrets Manager, with the CA of the MariaDB servers as the rotator's bundle."""
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(mariadb_factory.ca.cert_path))
    return local_sm


@pytest.fixture
def mariadb_admin(admins: Admins, mariadb: MariaDBServer) -> MariaDBAdmin:
    return admins.typed(MYSQL, mariadb, MariaDBAdmin)


# -- Redshift: the real engine and driver, against PostgreSQL through test-only shims ----------------------
@pytest.fixture
def redshift_shims(monkeypatch: pytest.MonkeyPatch) -> None:
    """redshift-connector's two parsing fixes (tests/redshift_shims.py), for one test."""
    REDSHIFT.shims(monkeypatch)


@pytest.fixture(scope="session")
def redshift_proxy(
    pg: PostgresServer, pg_factory: PostgresFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartupParameterProxy]:
    """The shared PostgreSQL server, as redshift-connector can reach it (TLS from pg_factory's CA)."""
    from tests.redshift_shims import StartupParameterProxy

    workdir = tmp_path_factory.mktemp("redshift-proxy")
    yield from _closed_after(StartupParameterProxy(pg.host, pg.port, pg_factory.ca, workdir))


@pytest.fixture(scope="session")
def redshift(redshift_proxy: StartupParameterProxy, pg: PostgresServer) -> RedshiftServer:
    """The shared PostgreSQL server behind its proxy, as the Redshift engine's server."""
    return RedshiftServer(redshift_proxy, pg)


@pytest.fixture
def own_redshift(
    own_pg: PostgresServer, pg_factory: PostgresFactory, tmp_path: Path
) -> Iterator[RedshiftServer]:
    """A PostgreSQL server of the test's own behind a proxy of its own."""
    from tests.redshift_shims import StartupParameterProxy

    proxy = StartupParameterProxy(own_pg.host, own_pg.port, pg_factory.ca, tmp_path / "proxy")
    yield RedshiftServer(proxy, own_pg)
    proxy.close()
