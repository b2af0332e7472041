"""Issue 11's attacks, live on PostgreSQL and MariaDB: someone who can write one app secret (or
attach the shared rotator to a secret of their own) tries to turn the master against the master
itself, against another user, or against another team. Every test ends by proving that the
master and the victim still log in with their own secrets and that nothing was handed out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotators.errors import (
    LoginError,
    PrivilegeError,
    RotationError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.secrets import ROTATORS_TESTED
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, MariaDBAdmin, invoke, mysql_secret, pg_secret

HOST = "127.0.0.1"


@dataclass
class Db:
    """One engine under attack: its handler, its admin, and users made the engine's way."""

    name: str
    handler: Callable[..., None]
    sm: LocalSecretsManager
    secret_of: Callable[[str, str], dict[str, Any]]
    logs_in: Callable[[str, str], bool]
    plain: Callable[[str, str], None]  # an application user with some privileges of its own
    admin_user: Callable[[str, str], None]  # a user that may create users (not the master)
    powerful_clone: Callable[[str, str], None]  # `ops_clone`: privileged, and no clone of `ops`
    user_exists: Callable[[str], bool]
    master: str = ""
    master_password: str = field(default="", repr=False)
    master_arn: str = ""

    def secret(self, username: str, password: str, **extra: Any) -> str:
        name = f"{username}-{uuid.uuid4().hex[:6]}"
        return self.sm.create_secret(name, {**self.secret_of(username, password), **extra})

    def app(self, username: str, password: str, **extra: Any) -> str:
        return self.secret(username, password, masterarn=self.master_arn, **extra)

    def assert_master_intact(self) -> None:
        current = self.sm.value(self.master_arn, "AWSCURRENT")
        assert current["password"] == self.master_password, "the master secret is unchanged"
        assert self.logs_in(self.master, self.master_password), "the master still logs in"


def _postgresql(sm: LocalSecretsManager, admin: Admin, pg: Any) -> Db:
    from rotators.engines.postgresql import handler

    def plain(name: str, password: str) -> None:
        admin.create_role(name, password)
        admin.sql(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"')

    def exists(name: str) -> bool:
        return bool(admin.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))

    return Db(
        name="postgresql",
        handler=handler,
        sm=sm,
        secret_of=lambda user, password: pg_secret(pg, user, password),
        logs_in=admin.logs_in,
        plain=plain,
        admin_user=lambda name, password: admin.create_role(name, password, "CREATEROLE"),
        powerful_clone=lambda name, password: admin.create_role(name, password, "CREATEROLE CREATEDB"),
        user_exists=exists,
    )


def _mariadb(sm: LocalSecretsManager, admin: MariaDBAdmin, server: Any) -> Db:
    from rotators.engines.mysql import handler

    def plain(name: str, password: str) -> None:
        admin.sql(f"CREATE DATABASE IF NOT EXISTS `db_{name}`")
        admin.create_user(name, password, f"SELECT, INSERT ON `db_{name}`.*")

    def exists(name: str) -> bool:
        return bool(admin.sql("SELECT 1 FROM mysql.user WHERE User = %s", (name,)))

    return Db(
        name="mariadb",
        handler=handler,
        sm=sm,
        secret_of=lambda user, password: mysql_secret(server, user, password),
        logs_in=admin.logs_in,
        plain=plain,
        admin_user=lambda name, password: admin.create_user(name, password, "CREATE USER ON *.*"),
        powerful_clone=lambda name, password: admin.create_user(name, password, "ALL PRIVILEGES ON *.*"),
        user_exists=exists,
    )


@pytest.fixture(params=["postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, new_password: Callable[[], str], role_name: str) -> Iterator[Db]:
    """The engine, with a master made as RDS makes one (PostgreSQL: CREATEROLE, not a superuser;
    MariaDB: every privilege WITH GRANT OPTION, not root)."""
    if request.param == "postgresql":
        admin = request.getfixturevalue("admin")
        engine = _postgresql(request.getfixturevalue("local_sm"), admin, request.getfixturevalue("pg"))
        engine.master, engine.master_password = f"master_{role_name}", new_password()
        admin.create_role(engine.master, engine.master_password, "CREATEROLE")
    else:
        admin = request.getfixturevalue("mariadb_admin")
        engine = _mariadb(request.getfixturevalue("mysql_sm"), admin, request.getfixturevalue("mariadb"))
        engine.master, engine.master_password = f"master_{role_name}", new_password()
        admin.create_user(engine.master, engine.master_password)
        admin.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (engine.master, HOST))
    engine.master_arn = engine.secret(engine.master, engine.master_password)
    yield engine
    engine.assert_master_intact()


def attempt(db: Db, arn: str, error: type[RotationError]) -> None:
    """createSecret, then a setSecret that must fail with `error` and move no label."""
    token = db.sm.start_rotation(arn)
    invoke(db.handler, arn, token, "createSecret")
    labels = db.sm.stages(arn, marks=True)
    with pytest.raises(error):
        invoke(db.handler, arn, token, "setSecret")
    assert db.sm.stages(arn, marks=True) == labels, "a failed step moves no label"


# -- 1. username = <master>_clone: its partner is the master -------------------------------------------
def test_the_masters_clone_name_cannot_make_the_master_change_its_own_password(db: Db) -> None:
    arn = db.app(f"{db.master}_clone", "a-guess")
    attempt(db, arn, TargetMismatchError)
    assert not db.user_exists(f"{db.master}_clone")


# -- 2. username = <master>: a clone of the master -----------------------------------------------------
def test_the_master_itself_is_never_cloned(db: Db) -> None:
    arn = db.app(db.master, "a-guess")
    attempt(db, arn, TargetMismatchError)
    assert not db.user_exists(f"{db.master}_clone")


def test_a_source_with_administrative_power_is_refused_unless_the_secret_opts_in(
    db: Db, role_name: str, new_password: Callable[[], str]
) -> None:
    """Even with its own password proven, an administrative user is not cloned by default."""
    ops, password = f"ops_{role_name}", new_password()
    db.admin_user(ops, password)
    attempt(db, db.app(ops, password), PrivilegeError)
    assert not db.user_exists(f"{ops}_clone"), "nothing was created"

    opted_in = db.app(ops, password, allow_privileged_user=True)
    invoke(db.handler, opted_in, db.sm.start_rotation(opted_in))
    clone = db.sm.value(opted_in, "AWSCURRENT")
    assert clone["username"] == f"{ops}_clone"
    assert db.logs_in(clone["username"], clone["password"])
    assert db.logs_in(ops, password), "the original keeps working"


# -- 3. username = victim_clone: an unrelated user -----------------------------------------------------
def test_an_unknown_current_password_stops_the_master_before_it_acts(
    db: Db, role_name: str, new_password: Callable[[], str]
) -> None:
    """The confused-deputy guard: AWSCURRENT must log in as its user first."""
    victim, password = f"victim_{role_name}", new_password()
    db.plain(victim, password)
    victim_arn = db.secret(victim, password)
    attempt(db, db.app(f"{victim}_clone", "a-guess"), LoginError)
    assert db.logs_in(victim, db.sm.value(victim_arn, "AWSCURRENT")["password"])
    assert not db.user_exists(f"{victim}_clone")


def test_owning_a_user_named_victim_clone_does_not_give_the_victims_password(
    db: Db, role_name: str, new_password: Callable[[], str]
) -> None:
    """The attacker's own user happens to be called `<victim>_clone`: the guard passes, but it is
    no clone of the victim, so the master does not give the victim a password the attacker holds."""
    victim, password = f"victim_{role_name}", new_password()
    db.plain(victim, password)
    victim_arn = db.secret(victim, password)
    mallory_password = new_password()
    db.plain(f"{victim}_clone", mallory_password)
    attempt(db, db.app(f"{victim}_clone", mallory_password), PrivilegeError)
    assert db.logs_in(victim, db.sm.value(victim_arn, "AWSCURRENT")["password"]), (
        "the victim keeps its password"
    )


def test_a_privileged_user_named_like_a_clone_is_not_taken_over(
    db: Db, role_name: str, new_password: Callable[[], str]
) -> None:
    """`ops_clone` exists with powers of its own; rotating `ops` must not adopt it."""
    ops, password = f"ops_{role_name}", new_password()
    db.plain(ops, password)
    clone_password = new_password()
    db.powerful_clone(f"{ops}_clone", clone_password)
    clone_arn = db.secret(f"{ops}_clone", clone_password)  # its owner's secret
    attempt(db, db.app(ops, password), PrivilegeError)
    assert db.logs_in(f"{ops}_clone", db.sm.value(clone_arn, "AWSCURRENT")["password"]), "not taken over"
    assert db.logs_in(ops, password)


# -- 4. masterarn pointing at another team's app secret ------------------------------------------------
def test_another_teams_secret_as_master_cannot_be_made_to_change_its_own_password(
    db: Db, role_name: str, new_password: Callable[[], str]
) -> None:
    victim, password = f"victim_{role_name}", new_password()
    db.plain(victim, password)
    victim_arn = db.secret(victim, password)
    their_clone = db.sm.create_secret(
        f"evil-{uuid.uuid4().hex[:6]}",
        {**db.secret_of(f"{victim}_clone", "a-guess"), "masterarn": victim_arn},
    )
    attempt(db, their_clone, TargetMismatchError)
    assert db.sm.value(victim_arn, "AWSCURRENT")["password"] == password
    assert db.logs_in(victim, password)


# -- 5. the master logs in with its own TLS settings, never the app's ----------------------------------
def test_the_master_logs_in_with_its_own_tls_settings(
    db: Db, role_name: str, new_password: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, password = f"app_{role_name}", new_password()
    db.plain(app, password)
    arn = db.app(app, password, sslmode="require")
    rotator_class = type(db.handler.__self__)  # type: ignore[attr-defined]
    logins: list[tuple[str, str | None]] = []
    original = rotator_class.connect

    def recording(self: Any, secret: Any, username: str, secret_password: str) -> Any:
        logins.append((username, secret.tls.mode))
        return original(self, secret, username, secret_password)

    monkeypatch.setattr(rotator_class, "connect", recording)
    invoke(db.handler, arn, db.sm.start_rotation(arn))
    assert (db.master, None) in logins, "the master used its own secret's settings (verify-full by default)"
    assert (db.master, "require") not in logins
    assert (app, "require") in logins, "the app's own login keeps the app's settings"


# -- 6. finishSecret moves AWSCURRENT only to a tested version -----------------------------------------
@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
def test_finish_right_after_create_moves_nothing(
    db: Db, role_name: str, new_password: Callable[[], str], strategy: str
) -> None:
    app, password = f"app_{role_name}", new_password()
    db.plain(app, password)
    arn = db.app(app, password) if strategy == "alternating_users" else db.secret(app, password)
    token = db.sm.start_rotation(arn)
    invoke(db.handler, arn, token, "createSecret")
    labels = db.sm.stages(arn, marks=True)
    with pytest.raises(LoginError):
        invoke(db.handler, arn, token, "finishSecret")
    assert db.sm.stages(arn, marks=True) == labels
    current = db.sm.value(arn, "AWSCURRENT")
    assert db.logs_in(current["username"], current["password"])

    invoke(db.handler, arn, token, "setSecret", "testSecret")
    assert ROTATORS_TESTED in db.sm.stages(arn, marks=True)[token], "testSecret marks what it tested"
    invoke(db.handler, arn, token, "finishSecret")
    current = db.sm.value(arn, "AWSCURRENT")
    assert db.logs_in(current["username"], current["password"])


# -- 7. a superseded setSecret changes nothing ---------------------------------------------------------
def test_a_set_secret_superseded_while_it_runs_changes_nothing(
    db: Db, role_name: str, new_password: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation B starts while A's setSecret is logged in: A must not change the password."""
    app, password = f"app_{role_name}", new_password()
    db.plain(app, password)
    arn = db.secret(app, password)
    token = db.sm.start_rotation(arn)
    invoke(db.handler, arn, token, "createSecret")
    rotator_class = type(db.handler.__self__)  # type: ignore[attr-defined]
    original = rotator_class.connect
    newer: list[str] = []

    def racing(self: Any, secret: Any, username: str, secret_password: str) -> Any:
        if not newer:
            newer.append(db.sm.start_rotation(arn))
            invoke(db.handler, arn, newer[0], "createSecret")
        return original(self, secret, username, secret_password)

    with monkeypatch.context() as patched, pytest.raises(VersionStageError, match="superseded"):
        patched.setattr(rotator_class, "connect", racing)
        invoke(db.handler, arn, token, "setSecret")
    assert db.logs_in(app, password), "the password is still the AWSCURRENT one"
    invoke(db.handler, arn, newer[0], "setSecret", "testSecret", "finishSecret")
    current = db.sm.value(arn, "AWSCURRENT")
    assert db.logs_in(app, current["password"])
