"""The one engine-under-test adapter, shared by the scenario suite (tests/integration) and the fault
harness (tests/faults).

An `Engine` declares only what differs between engines: its module, its secrets, its server's
superuser (tests/admins.py), the grants of an application user and of a master, the names that
need quoting, and its `Features` (in the spirit of Django's `features` and SQLAlchemy's
`Requirements`). A `Database` binds an engine to a running server, that server's superuser and
the local Secrets Manager, and does everything else the same way for every engine: make users and
masters, store their secrets, rotate, and check which passwords log in. Redshift runs against
PostgreSQL through tests/redshift_shims.py.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from rotators.database import DatabaseRotator
from rotators.engines import BY_NAME
from rotators.rotation import Step
from rotators.secrets import AWSCURRENT, AWSPREVIOUS
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.admins import READ_WRITE, SELF_SERVICE, Admin, MariaDBAdmin, MongoAdmin, ServerAdmin, backend

if TYPE_CHECKING:
    from tests.redshift_shims import StartupParameterProxy

STEPS: tuple[str, ...] = tuple(step.value for step in Step)  # in the order Secrets Manager calls them


def invoke(handler: Callable[..., Any], secret_id: str, token: str, *steps: str, **extra: str) -> None:
    """Invoke `handler` for each step (all four by default) as Secrets Manager would."""
    for step in steps or STEPS:
        handler({"SecretId": secret_id, "ClientRequestToken": token, "Step": step, **extra}, None)


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)


# -- what a secret points at ------------------------------------------------------------------------------
class Address(Protocol):
    """What a secret names of a server."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass
class RedshiftServer:
    """Redshift here: PostgreSQL behind the startup-parameter proxy (tests/redshift_shims.py).
    Secrets name the proxy; all else (its CA, superuser, process, stops and starts) is the
    PostgreSQL server's."""

    proxy: StartupParameterProxy
    backend: PostgresServer

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def port(self) -> int:
        return self.proxy.port

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


# -- the engines --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Features:
    """What an engine's server shows here; a scenario that needs one runs on the engines that have it."""

    copies_grants: bool = False  # the clone is made a copy of the original's privileges
    statement_log: bool = False  # the server logs every statement (log_statement=all)
    tls_witness: bool = False  # whether each connection asked for TLS is seen (Redshift's proxy)
    password_rules: bool = False  # a password must pass the module's password_problems()


@dataclass(frozen=True)
class LongName:
    """A user whose clone's name (with "_clone") is over the engine's limit: createSecret refuses it."""

    length: int
    error: str
    pad: str = "u"
    flavour: str | None = None  # the secret's `engine` value, where the limit depends on it
    on_server: bool = True  # False: the test server cannot hold the user either (Redshift's 127 bytes)

    def name(self) -> str:
        """Unique where the user is made (tests share a server), exactly `length` characters."""
        if not self.on_server:
            return self.pad * self.length
        return uuid.uuid4().hex[:8] + self.pad * (self.length - 8)


@dataclass(frozen=True, eq=False)
class Engine:
    """One engine under test: what differs from the others, and nothing else."""

    name: str  # in the registry (rotators.engines): its module, and the tests' ids
    secret_engine: str  # the `engine` value of its secrets here
    admin: Callable[..., ServerAdmin]  # (server, keep=...) -> the superuser of a server (its backend)
    shared_server: str  # fixture: a server the tests share (they must not stop it); own_<it>: a test's own
    master_grants: tuple[Any, ...]  # a master as the managed service makes it, not a superuser
    awkward_names: tuple[str, ...]  # user names a statement must quote (or pass as data)
    pair_name: str  # the start of one such name, for alternating users
    foreign_engine: str  # another engine's `engine` value: the handler refuses such a secret
    user_grants: tuple[Any, ...] = ()  # what an application user gets
    secret_defaults: tuple[tuple[str, Any], ...] = ()  # other keys each of its secrets holds here
    long_names: tuple[LongName, ...] = ()
    weak_master: tuple[tuple[Any, ...], str] | None = None  # a master's grants short of enough, the error
    plain_server: str | None = None  # fixture: a server without TLS, where one can run here
    no_tls_error: str = ""  # what a step says there when the secret does not turn TLS off
    features: Features = Features()
    shims: Callable[[pytest.MonkeyPatch], None] = lambda monkeypatch: None  # test-only driver patches
    crash: bool = False  # stop its server with a SIGKILL (a clean stop takes seconds)

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(BY_NAME[self.name].module)  # imported late: a driver per engine

    @property
    def handler(self) -> Callable[..., Any]:
        handler: Callable[..., Any] = self.module.handler
        return handler

    @property
    def rotator(self) -> type[DatabaseRotator[Any]]:
        """Its Rotator subclass: the module's handler is the `handle` of one of its instances."""
        rotator: type[DatabaseRotator[Any]] = type(self.module.handler.__self__)
        return rotator

    @property
    def unavailable(self) -> str:
        """What a step says when the server is down."""
        return f"Cannot connect to {BY_NAME[self.name].label}"

    def superuser(self, server: Any, *, keep: bool) -> ServerAdmin:
        """The superuser of `server` (of the server behind it, for Redshift's proxy)."""
        return self.admin(backend(server), keep=keep)

    def secret(self, server: Address, username: str, password: str, **extra: Any) -> dict[str, Any]:
        """The secret value of a login on `server`, as someone else's script would store it."""
        return {
            "engine": self.secret_engine,
            "host": server.host,
            "port": server.port,
            "username": username,
            "password": password,
            **dict(self.secret_defaults),
            **extra,
        }


def _redshift_shims(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.redshift_shims import patch_parsing

    patch_parsing(monkeypatch)


POSTGRESQL = Engine(
    name="postgresql",
    secret_engine="postgres",
    admin=Admin,
    shared_server="pg",
    master_grants=("CREATEROLE",),  # RDS's master: CREATEROLE, not a superuser
    awkward_names=("App-User", "MixedCase", 'we"ird', "with space"),
    pair_name='O\'Neil "BI" x',
    foreign_engine="mysql",
    secret_defaults=(("dbname", "postgres"),),
    long_names=(LongName(60, "longer than 63 bytes"),),
    features=Features(statement_log=True),
)
MYSQL = Engine(
    name="mysql",
    secret_engine="mariadb",
    admin=MariaDBAdmin,
    shared_server="mariadb",
    master_grants=("ALL PRIVILEGES ON *.* WITH GRANT OPTION",),  # RDS's master: not root
    awkward_names=("O'Neil", 'we"ird', "with space", "back`tick", "per%cent", "back\\slash"),
    pair_name="O'Neil `we\"ird` TO x",
    foreign_engine="postgres",
    user_grants=("SELECT, INSERT ON `app`.*",),
    long_names=(
        LongName(75, "longer than 80 characters", flavour="mariadb"),
        LongName(27, "longer than 32 characters", flavour="mysql"),
    ),
    weak_master=((), "MySQL refused"),
    plain_server="plain_mariadb",
    no_tls_error="SSL is required",
    features=Features(copies_grants=True),
)
REDSHIFT = Engine(
    name="redshift",
    secret_engine="redshift",
    admin=Admin,  # of the PostgreSQL server behind the proxy
    shared_server="redshift",
    master_grants=("SUPERUSER",),  # Redshift's admin user is a superuser
    awkward_names=("O'Neil", 'we"ird', "with space", "MixedCase"),  # "select" alone: test_redshift.py
    pair_name='O\'Neil "BI" x',
    foreign_engine="postgres",
    secret_defaults=(("dbname", "postgres"),),
    long_names=(LongName(61, "longer than 127 bytes", pad="é", on_server=False),),
    features=Features(statement_log=True, tls_witness=True, password_rules=True),
    shims=_redshift_shims,
)
DOCUMENTDB = Engine(
    name="documentdb",
    secret_engine="mongo",
    admin=MongoAdmin,
    shared_server="mongo",
    master_grants=({"role": "userAdminAnyDatabase", "db": "admin"},),  # DocumentDB's: not root
    awkward_names=("App User", "o'neil\"x", "ünïcode-名前", "a.b$c"),
    pair_name="o'neil\"x ünïcode.a$b",
    foreign_engine="postgres",
    user_grants=(READ_WRITE, SELF_SERVICE),
    secret_defaults=(("dbname", "admin"), ("ssl", True)),
    weak_master=((READ_WRITE,), "viewUser"),
    plain_server="plain_mongo",
    no_tls_error="Cannot connect",
    features=Features(copies_grants=True),
    crash=True,
)
ENGINES: tuple[Engine, ...] = (POSTGRESQL, MYSQL, REDSHIFT, DOCUMENTDB)
STRATEGIES = ("single", "alternating")


def engines(*needs: str, among: tuple[Engine, ...] = ENGINES) -> list[Any]:
    """pytest params: every engine (of `among`) that has the features `needs` names, with its name
    as the id."""
    return [
        pytest.param(engine, id=engine.name)
        for engine in among
        if all(getattr(engine.features, need) for need in needs)
    ]


# -- one engine on one server -------------------------------------------------------------------------------
class Database:
    """One engine on one running server, with its superuser and the local Secrets Manager."""

    def __init__(
        self,
        engine: Engine,
        server: Any,
        admin: ServerAdmin,
        sm: LocalSecretsManager,
        watch: Callable[[str], None],
    ) -> None:
        self.engine, self.server, self.admin, self.sm, self.watch = engine, server, admin, sm, watch

    @property
    def handler(self) -> Callable[..., Any]:
        return self.engine.handler

    @staticmethod
    def name(prefix: str = "app") -> str:
        """A fresh name, so that tests can share one server."""
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    def new_password(self) -> str:
        """A password set by hand; the leak check watches it."""
        password = "Init-" + uuid.uuid4().hex
        self.watch(password)
        return password

    def secret(self, login: Login, **extra: Any) -> dict[str, Any]:
        return self.engine.secret(self.server, login.username, login.password, **extra)

    def add_user(self, name: str | None = None, *, grants: tuple[Any, ...] | None = None) -> Login:
        """An application user (the engine's usual grants unless told otherwise)."""
        login = Login(name or self.name(), self.new_password())
        grants = self.engine.user_grants if grants is None else grants
        self.admin.add_user(login.username, login.password, *grants)
        return login

    def add_master(self, grants: tuple[Any, ...] | None = None) -> Login:
        """A master as the managed service makes it: it may change other users' passwords."""
        grants = self.engine.master_grants if grants is None else grants
        return self.add_user(self.name("master"), grants=grants)

    def store(self, login: Login, **extra: Any) -> str:
        """A secret of `login`, made with plain boto3 as someone else's script would: its ARN."""
        return self.sm.create_secret(f"s-{uuid.uuid4().hex[:12]}", self.secret(login, **extra))

    def master_secret(self) -> str:
        return self.store(self.add_master())

    def logs_in(self, user: str, password: str) -> bool:
        return self.admin.logs_in(user, password)

    def current_logs_in(self, arn: str) -> bool:
        """Does the AWSCURRENT value of `arn` log in?"""
        current = self.sm.value(arn, AWSCURRENT)
        return self.logs_in(current["username"], current["password"])

    def invoke(self, arn: str, token: str, *steps: str) -> None:
        invoke(self.handler, arn, token, *steps)

    def rotate(self, arn: str) -> dict[str, Any]:
        """A whole rotation with a new token; the new AWSCURRENT value."""
        self.invoke(arn, self.sm.start_rotation(arn))
        return self.sm.value(arn, AWSCURRENT)

    def fails(self, arn: str, token: str, step: str, error: type[Exception], match: str) -> None:
        """`step` fails with `error` (its message matching `match`) and moves no label."""
        labels = self.sm.stages(arn)
        with pytest.raises(error, match=match):
            self.invoke(arn, token, step)
        assert self.sm.stages(arn) == labels, f"a failed {step} moves no label"

    def assert_rotated(self, arn: str, old_password: str) -> None:
        """Single user: AWSCURRENT holds a new password that logs in, AWSPREVIOUS the old one that
        no longer does, and no other label is left."""
        stages = self.sm.stages(arn)
        assert sorted(stages.values()) == [[AWSCURRENT], [AWSPREVIOUS]], (
            "exactly one current and one previous"
        )
        current, previous = self.sm.value(arn, AWSCURRENT), self.sm.value(arn, AWSPREVIOUS)
        assert previous["password"] == old_password
        assert current["password"] != old_password
        if self.engine.features.password_rules:
            assert self.engine.module.password_problems(current["password"]) == [], "meets the engine's rules"
        assert self.logs_in(current["username"], current["password"])
        assert not self.logs_in(current["username"], old_password)

    def stop(self) -> None:
        """The server goes away for real (its connections are cut); `server.start()` brings it back."""
        self.server.stop(crash=self.engine.crash)

    def client_tls(self) -> list[bool]:
        """Per connection so far: did the client ask for TLS? (Features.tls_witness)"""
        tls: list[bool] = self.server.proxy.client_tls
        return tls

    def statement_log(self) -> str:
        """What the server logged so far, one statement a line (Features.statement_log)."""
        server: PostgresServer = backend(self.server)
        return server.log_path.read_text(errors="replace")


def bind(
    engine: Engine,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    watch: Callable[[str], None],
    *,
    server: str = "shared",
) -> Database:
    """`engine` on its shared server, or on one of the test's "own" (which it may stop) or its
    "plain" one (without TLS), with the rotator's environment set. The superuser of a server of
    the test's own is closed before that server is torn down (finalizers run last in, first out)."""
    sm: LocalSecretsManager = request.getfixturevalue("local_sm")
    shared = engine.shared_server
    fixture = {"shared": shared, "own": f"own_{shared}", "plain": engine.plain_server}[server]
    assert fixture is not None, f"{engine.name} has no {server} server here"
    found = request.getfixturevalue(fixture)
    if server == "shared":
        admin = request.getfixturevalue("admins").of(engine, found)
    else:
        admin = engine.superuser(found, keep=True)
        request.addfinalizer(admin.close)
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(found.ca.cert_path))
    engine.shims(monkeypatch)
    return Database(engine, found, admin, sm, watch)
