"""Issue 11's attacks, live on PostgreSQL and MariaDB: someone who can write one app secret (or
attach the shared rotator to a secret of their own) tries to turn the master against the master
itself, against another user, or against another team. Every test ends by proving that the
master and the victim still log in with their own secrets and that nothing was handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import sql

from rotators.errors import (
    LoginError,
    PrivilegeError,
    RotationError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.secrets import AWSCURRENT, ROTATORS_TESTED
from tests.admins import Admin, MariaDBAdmin
from tests.engines import MYSQL, POSTGRESQL, Database, Engine, Login, engines


def _own_schema(db: Database, name: str) -> None:
    """PostgreSQL: a schema the user owns."""
    assert isinstance(db.admin, Admin)
    db.admin.sql(sql.SQL("CREATE SCHEMA {0} AUTHORIZATION {0}").format(sql.Identifier(name)))


def _own_database(db: Database, name: str) -> None:
    """MariaDB: a database only the user reads and writes."""
    assert isinstance(db.admin, MariaDBAdmin)
    db.admin.sql(f"CREATE DATABASE IF NOT EXISTS `db_{name}`")
    db.admin.sql(f"GRANT SELECT, INSERT ON `db_{name}`.* TO %s@%s", (name, MariaDBAdmin.HOST))


@dataclass(frozen=True)
class Powers:
    """What the attacks need of an engine, in its own terms."""

    user_admin: tuple[str, ...]  # may create users, and is not the master
    privileged: tuple[str, ...]  # more power than an application user: attack 3's `ops_clone`
    own_space: Callable[[Database, str], None]  # privileges that no other user holds


POWERS = {
    POSTGRESQL: Powers(("CREATEROLE",), ("CREATEROLE CREATEDB",), _own_schema),
    MYSQL: Powers(("CREATE USER ON *.*",), ("ALL PRIVILEGES ON *.*",), _own_database),
}


class Target(Database):
    """An engine's server under attack, with a master made as the managed service makes one
    (PostgreSQL: CREATEROLE, not a superuser; MariaDB: every privilege WITH GRANT OPTION, not root)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.engine, db.server, db.admin, db.sm, db.watch)
        self.powers = POWERS[db.engine]
        self.master = self.add_master()
        self.master_arn = self.store(self.master)

    def add_owner(self, name: str | None = None) -> Login:
        """An application user with some privileges of its own."""
        login = self.add_user(name, grants=())
        self.powers.own_space(self, login.username)
        return login

    def app(self, login: Login, **extra: Any) -> str:
        """An application secret of `login` that names the master."""
        return self.store(login, masterarn=self.master_arn, **extra)

    def attempt(self, arn: str, error: type[RotationError], step: str = "setSecret") -> str:
        """createSecret, then a `step` that must fail with `error` and move no label: the token."""
        token = self.sm.start_rotation(arn)
        self.invoke(arn, token, "createSecret")
        labels = self.sm.stages(arn, marks=True)
        with pytest.raises(error):
            self.invoke(arn, token, step)
        assert self.sm.stages(arn, marks=True) == labels, "a failed step moves no label"
        return token

    def assert_master_intact(self) -> None:
        current = self.sm.value(self.master_arn, AWSCURRENT)
        assert current["password"] == self.master.password, "the master secret is unchanged"
        assert self.logs_in(self.master.username, self.master.password), "the master still logs in"


@pytest.fixture(params=engines(among=tuple(POWERS)))
def engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.param
    return engine


@pytest.fixture
def target(db: Database) -> Iterator[Target]:
    target = Target(db)
    yield target
    target.assert_master_intact()


def before_each_login(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, hook: Callable[[Any, str], None]
) -> None:
    """`hook(secret, username)` runs before each login of the engine's rotator."""
    rotator = engine.rotator
    original = rotator.connect

    def connect(self: Any, secret: Any, username: str, password: str) -> Any:
        hook(secret, username)
        return original(self, secret, username, password)

    monkeypatch.setattr(rotator, "connect", connect)


# -- 1. username = <master>_clone: its partner is the master -------------------------------------------
def test_the_masters_clone_name_cannot_make_the_master_change_its_own_password(target: Target) -> None:
    clone = f"{target.master.username}_clone"
    target.attempt(target.app(Login(clone, "a-guess")), TargetMismatchError)
    assert not target.admin.user_exists(clone)


# -- 2. username = <master>: a clone of the master -----------------------------------------------------
def test_the_master_itself_is_never_cloned(target: Target) -> None:
    target.attempt(target.app(Login(target.master.username, "a-guess")), TargetMismatchError)
    assert not target.admin.user_exists(f"{target.master.username}_clone")


def test_a_source_with_administrative_power_is_refused_unless_the_secret_opts_in(target: Target) -> None:
    """Even with its own password proven, an administrative user is not cloned by default."""
    ops = target.add_user(target.name("ops"), grants=target.powers.user_admin)
    target.attempt(target.app(ops), PrivilegeError)
    assert not target.admin.user_exists(f"{ops.username}_clone"), "nothing was created"

    clone = target.rotate(target.app(ops, allow_privileged_user=True))
    assert clone["username"] == f"{ops.username}_clone"
    assert target.logs_in(clone["username"], clone["password"])
    assert target.logs_in(ops.username, ops.password), "the original keeps working"


# -- 3. username = victim_clone: an unrelated user -----------------------------------------------------
def test_an_unknown_current_password_stops_the_master_before_it_acts(target: Target) -> None:
    """The confused-deputy guard: AWSCURRENT must log in as its user first."""
    victim = target.add_owner(target.name("victim"))
    victim_arn = target.store(victim)
    target.attempt(target.app(Login(f"{victim.username}_clone", "a-guess")), LoginError)
    assert target.current_logs_in(victim_arn)
    assert not target.admin.user_exists(f"{victim.username}_clone")


def test_owning_a_user_named_victim_clone_does_not_give_the_victims_password(target: Target) -> None:
    """The attacker's own user happens to be called `<victim>_clone`: the guard passes, but it is
    no clone of the victim, so the master does not give the victim a password the attacker holds."""
    victim = target.add_owner(target.name("victim"))
    victim_arn = target.store(victim)
    mallory = target.add_owner(f"{victim.username}_clone")
    target.attempt(target.app(mallory), PrivilegeError)
    assert target.current_logs_in(victim_arn), "the victim keeps its password"


def test_a_privileged_user_named_like_a_clone_is_not_taken_over(target: Target) -> None:
    """`ops_clone` exists with powers of its own; rotating `ops` must not adopt it."""
    ops = target.add_owner(target.name("ops"))
    ops_clone = target.add_user(f"{ops.username}_clone", grants=target.powers.privileged)
    clone_arn = target.store(ops_clone)  # its owner's secret
    target.attempt(target.app(ops), PrivilegeError)
    assert target.current_logs_in(clone_arn), "not taken over"
    assert target.logs_in(ops.username, ops.password)


# -- 4. masterarn pointing at another team's app secret ------------------------------------------------
def test_another_teams_secret_as_master_cannot_be_made_to_change_its_own_password(target: Target) -> None:
    victim = target.add_owner(target.name("victim"))
    victim_arn = target.store(victim)
    their_clone = target.store(Login(f"{victim.username}_clone", "a-guess"), masterarn=victim_arn)
    target.attempt(their_clone, TargetMismatchError)
    assert target.sm.value(victim_arn, AWSCURRENT)["password"] == victim.password
    assert target.logs_in(victim.username, victim.password)


# -- 5. the master logs in with its own TLS settings, never the app's ----------------------------------
def test_the_master_logs_in_with_its_own_tls_settings(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = target.add_owner()
    arn = target.app(app, sslmode="require")
    logins: list[tuple[str, str | None]] = []
    before_each_login(monkeypatch, target.engine, lambda secret, user: logins.append((user, secret.tls.mode)))
    target.rotate(arn)
    master = target.master.username
    assert (master, None) in logins, "the master used its own secret's settings (verify-full by default)"
    assert (master, "require") not in logins
    assert (app.username, "require") in logins, "the app's own login keeps the app's settings"


# -- 6. finishSecret moves AWSCURRENT only to a tested version -----------------------------------------
@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
def test_finish_right_after_create_moves_nothing(target: Target, strategy: str) -> None:
    app = target.add_owner()
    arn = target.app(app) if strategy == "alternating_users" else target.store(app)
    token = target.attempt(arn, LoginError, "finishSecret")
    assert target.current_logs_in(arn)

    target.invoke(arn, token, "setSecret", "testSecret")
    assert ROTATORS_TESTED in target.sm.stages(arn, marks=True)[token], "testSecret marks what it tested"
    target.invoke(arn, token, "finishSecret")
    assert target.current_logs_in(arn)


# -- 7. a superseded setSecret changes nothing ---------------------------------------------------------
def test_a_set_secret_superseded_while_it_runs_changes_nothing(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation B starts while A's setSecret is logged in: A must not change the password."""
    app = target.add_owner()
    arn = target.store(app)
    token = target.sm.start_rotation(arn)
    target.invoke(arn, token, "createSecret")
    newer: list[str] = []

    def start_a_newer_rotation(secret: Any, username: str) -> None:
        if not newer:
            newer.append(target.sm.start_rotation(arn))
            target.invoke(arn, newer[0], "createSecret")

    with monkeypatch.context() as patched, pytest.raises(VersionStageError, match="superseded"):
        before_each_login(patched, target.engine, start_a_newer_rotation)
        target.invoke(arn, token, "setSecret")
    assert target.logs_in(app.username, app.password), "the password is still the AWSCURRENT one"
    target.invoke(arn, newer[0], "setSecret", "testSecret", "finishSecret")
    assert target.current_logs_in(arn)
