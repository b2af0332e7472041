"""Attacks on alternating SQL Server rotation, at the statement level: the real handler through all
its steps, Secrets Manager as moto serves it, and the recording double in place of SQL Server (no
server runs here). The double keeps the logins, their passwords and what roles, GRANTs, DENYs
and database users did, so every refused attack ends by proving that nothing was changed and
that the master and the victim still log in with their own secrets.

Whoever writes an app secret is not trusted with the master: the master's own login is never a
target (SQL Server compares names without case and trailing spaces, and under some collations
without accents or width), a source with administrative power needs the secret's opt-in, and a
pre-existing clone is adopted only if it holds nothing beyond its source (a DENY the source has
and the clone lacks is more power), nor sits where the master cannot look, unless AWSPREVIOUS
proves it is the rotator's own.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotators.engines.sqlserver import SQLServerRotator, handler
from rotators.engines.sqlserver_sql import mapped_users_sql
from rotators.engines.sqlserver_tls import CONTEXT_MARKER
from rotators.errors import (
    LoginError,
    PasswordChangeError,
    PrivilegeError,
    RotationError,
    TargetMismatchError,
)
from rotators.secrets import AWSCURRENT, AWSPREVIOUS, ROTATORS_TESTED
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import invoke
from tests.offline import ca_names, current_logs_in
from tests.sqlserver_double import SqlServerDouble, quote

LOGIN = {"engine": "sqlserver", "host": "db.example", "port": 1433, "dbname": "appdb"}


@dataclass
class SqlServer:
    """One server behind the double, its master secret, and logins made as an admin would."""

    sm: LocalSecretsManager
    double: SqlServerDouble
    master: str = "admin"
    master_password: str = field(default="", repr=False)
    master_arn: str = ""
    during: list[str] = field(default_factory=list)  # who logged in during the refused rotation

    def login(self, name: str, *, user: bool = True) -> str:
        """A SQL login (and its user in appdb); returns its password."""
        password = "Init-" + uuid.uuid4().hex[:20]
        self.double.sql_login(name, password, database="appdb" if user else None)
        return password

    def secret(self, username: str, password: str, **extra: Any) -> str:
        name = f"{username.strip() or 'x'}-{uuid.uuid4().hex[:6]}".replace("]", "_").replace("'", "_")
        return self.sm.create_secret(name, {**LOGIN, "username": username, "password": password, **extra})

    def app(self, username: str, password: str, **extra: Any) -> str:
        return self.secret(username, password, masterarn=self.master_arn, **extra)

    def logs_in(self, arn: str) -> bool:
        return current_logs_in(self.sm, SQLServerRotator(), arn)

    def attempt(self, arn: str, error: type[RotationError]) -> RotationError:
        """A whole rotation that must stop at setSecret with `error`, having changed nothing."""
        before = self.sm.value(arn, AWSCURRENT)
        passwords = {name: p.password for name, p in self.double.server.principals.items()}
        changes, locks, logins = len(self.double.changes()), len(self.double.locks), len(self.double.logins)
        with pytest.raises(error) as caught:
            invoke(handler, arn, self.sm.start_rotation(arn))
        self.during = self.double.logins[logins:]
        assert self.double.changes()[changes:] == [], "no statement that changes anything"
        assert {name: p.password for name, p in self.double.server.principals.items()} == passwords
        assert self.sm.value(arn, AWSCURRENT) == before
        taken = [kind for kind, _ in self.double.locks[locks:]]
        assert taken in ([], ["lock", "unlock"]), "the lock is released"
        self.assert_master_intact()
        return caught.value

    def assert_master_intact(self) -> None:
        assert self.sm.value(self.master_arn, AWSCURRENT)["password"] == self.master_password
        assert self.logs_in(self.master_arn), "the master still logs in with its own secret"


@pytest.fixture
def sqlserver(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> SqlServer:
    """A master `admin` in sysadmin (as a self-managed server's would be): its power is the
    prize, never a reason to refuse; the application database `appdb`."""
    double = SqlServerDouble().admin("CREATE DATABASE [appdb]").install(monkeypatch)
    db = SqlServer(local_sm, double)
    db.master_password = db.login("admin", user=False)
    double.admin("ALTER SERVER ROLE [sysadmin] ADD MEMBER [admin]")
    db.master_arn = db.secret("admin", db.master_password)
    return db


# -- the master's own login, under any spelling ------------------------------------------------------------
@pytest.mark.parametrize(
    ("master", "username"),
    [
        ("admin", "admin"),  # the master itself, to be cloned
        ("admin", "ADMIN"),
        ("admin", "admin "),
        ("admin", "Admin  "),
        ("admin", "admin_clone"),  # its partner is the master
        ("admin", "ADMIN_clone"),
        ("ADMIN ", "admin"),  # the master secret spells it otherwise
        ("Admin", "admin_clone"),
        # Under an accent- or width-insensitive collation these are `admin` too.
        ("admin", "Admín"),
        ("admin", "Admi\u0301n"),  # the accent as a combining mark
        ("admin", "\uff21dmin"),  # a full-width A
        ("admin", "\uff41\uff44\uff4d\uff49\uff4e_clone"),
        ("admin", "ADMIN "),
        ("admin", "ÁDMÍN_clone"),
    ],
)
def test_the_master_is_never_one_of_the_alternating_logins(
    sqlserver: SqlServer, master: str, username: str
) -> None:
    sqlserver.master_arn = sqlserver.secret(master, sqlserver.master_password)
    arn = sqlserver.app(username, "Guess-pass-1")
    error = sqlserver.attempt(arn, TargetMismatchError)
    assert "master user" in str(error)
    assert sqlserver.during == [], "refused before any login, the master's included"
    assert sqlserver.double.statements == []


# -- the source's own power ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "database", "named"),
    [
        (["ALTER SERVER ROLE [sysadmin] ADD MEMBER [app]"], [], "server role sysadmin"),
        (
            [
                "CREATE SERVER ROLE [ops]",
                "CREATE SERVER ROLE [team]",
                "ALTER SERVER ROLE [team] ADD MEMBER [app]",
                "ALTER SERVER ROLE [ops] ADD MEMBER [team]",
                "ALTER SERVER ROLE [sysadmin] ADD MEMBER [ops]",
            ],
            [],
            "server role sysadmin (through role ops)",
        ),
        (["ALTER SERVER ROLE [securityadmin] ADD MEMBER [app]"], [], "server role securityadmin"),
        (["GRANT CONTROL SERVER TO [app]"], [], "CONTROL SERVER"),
        (["GRANT ALTER ANY LOGIN TO [app]"], [], "ALTER ANY LOGIN"),
        (
            [
                "CREATE SERVER ROLE [ops]",
                "ALTER SERVER ROLE [ops] ADD MEMBER [app]",
                "GRANT ALTER ANY LOGIN TO [ops]",
            ],
            [],
            "ALTER ANY LOGIN (through role ops)",
        ),
        (["GRANT IMPERSONATE ON LOGIN::[admin] TO [app]"], [], "IMPERSONATE"),
        (["GRANT VIEW SERVER STATE TO [app] WITH GRANT OPTION"], [], "VIEW SERVER STATE WITH GRANT OPTION"),
        ([], ["ALTER ROLE [db_owner] ADD MEMBER [app]"], "role db_owner"),
        ([], ["ALTER ROLE [db_securityadmin] ADD MEMBER [app]"], "role db_securityadmin"),
        (
            [],
            [
                "CREATE ROLE [team]",
                "ALTER ROLE [team] ADD MEMBER [app]",
                "ALTER ROLE [db_owner] ADD MEMBER [team]",
            ],
            "role db_owner (through role team)",
        ),
        ([], ["GRANT ALTER ANY USER TO [app]"], "ALTER ANY USER"),
        ([], ["GRANT CREATE TABLE TO [app] WITH GRANT OPTION"], "CREATE TABLE WITH GRANT OPTION"),
        ([], ["GRANT IMPERSONATE ON USER::[dbo] TO [app]"], "IMPERSONATE"),
    ],
)
def test_a_source_with_administrative_power_needs_the_opt_in(
    sqlserver: SqlServer, server: list[str], database: list[str], named: str
) -> None:
    password = sqlserver.login("app")
    sqlserver.double.admin(*server).admin(*database, database="appdb")
    error = sqlserver.attempt(sqlserver.app("app", password), PrivilegeError)
    assert f"'app' holds {named}" in str(error)
    assert "allow_privileged_user" in str(error)
    assert sqlserver.double.server.login("app_clone") is None

    opted_in = sqlserver.app("app", password, allow_privileged_user=True)
    invoke(handler, opted_in, sqlserver.sm.start_rotation(opted_in))
    assert sqlserver.sm.value(opted_in, AWSCURRENT)["username"] == "app_clone"
    assert sqlserver.logs_in(opted_in)


@pytest.mark.parametrize("owned", ["appdb", "sales"])
def test_the_owner_of_a_database_is_refused_even_when_opted_in(sqlserver: SqlServer, owned: str) -> None:
    """dbo is one user: a clone cannot be it, in the secret's database or any other, and the
    master says so before any change."""
    password = sqlserver.login("app", user=owned != "appdb")
    if owned != "appdb":
        sqlserver.double.admin(f"CREATE DATABASE [{owned}]")
    sqlserver.double.admin(f"ALTER AUTHORIZATION ON DATABASE::[{owned}] TO [app]")
    error = sqlserver.attempt(sqlserver.app("app", password), PrivilegeError)
    assert f"ownership of database {owned}" in str(error)
    assert f"the database owner's user (dbo) in database {owned}" in str(error)

    opted_in = sqlserver.app("app", password, allow_privileged_user=True)
    error = sqlserver.attempt(opted_in, PasswordChangeError)
    assert f"The source login is the owner (dbo) of database '{owned}', which a clone cannot be" in str(error)
    assert sqlserver.double.server.login("app_clone") is None


def test_an_application_login_has_no_administrative_power(sqlserver: SqlServer) -> None:
    """Roles and grants of an ordinary application, through roles too, are no power."""
    password = sqlserver.login("app")
    sqlserver.double.admin(
        "CREATE SERVER ROLE [monitoring]", "ALTER SERVER ROLE [monitoring] ADD MEMBER [app]",
        "GRANT VIEW SERVER STATE TO [monitoring]", "ALTER SERVER ROLE [bulkadmin] ADD MEMBER [app]",
    )  # fmt: skip
    sqlserver.double.admin(
        "CREATE ROLE [reporting]", "ALTER ROLE [reporting] ADD MEMBER [app]",
        "ALTER ROLE [db_datareader] ADD MEMBER [reporting]", "ALTER ROLE [db_datawriter] ADD MEMBER [app]",
        "GRANT CREATE TABLE TO [app]", "GRANT ALTER ON SCHEMA::[dbo] TO [app]",
        "GRANT SELECT ON OBJECT::[dbo].[t] TO [reporting]",
        database="appdb",
    )  # fmt: skip
    arn = sqlserver.app("app", password)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == "app_clone"
    assert sqlserver.logs_in(arn)


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (["ALTER ROLE [db_owner] ADD MEMBER [app]"], "role db_owner in database sales"),
        (
            [
                "CREATE ROLE [team]",
                "ALTER ROLE [team] ADD MEMBER [app]",
                "ALTER ROLE [db_owner] ADD MEMBER [team]",
            ],
            "role db_owner (through role team) in database sales",
        ),
        (["ALTER ROLE [db_accessadmin] ADD MEMBER [app]"], "role db_accessadmin in database sales"),
        (["GRANT ALTER ANY USER TO [app]"], "ALTER ANY USER in database sales"),
        (
            ["GRANT CREATE TABLE TO [app] WITH GRANT OPTION"],
            "CREATE TABLE WITH GRANT OPTION in database sales",
        ),
    ],
)
def test_a_source_with_power_only_in_another_database_needs_the_opt_in(
    sqlserver: SqlServer, statements: list[str], named: str
) -> None:
    """Nothing in the server or the secret's database, but power in sales, where the source has a
    user too: refused before any change, as it would be in appdb."""
    password = sqlserver.login("app")
    sqlserver.double.admin("CREATE DATABASE [sales]")
    sqlserver.double.admin("CREATE USER [app] FOR LOGIN [app]", *statements, database="sales")
    error = sqlserver.attempt(sqlserver.app("app", password), PrivilegeError)
    assert f"'app' holds {named}" in str(error) and "allow_privileged_user" in str(error)
    assert sqlserver.double.server.login("app_clone") is None

    opted_in = sqlserver.app("app", password, allow_privileged_user=True)
    invoke(handler, opted_in, sqlserver.sm.start_rotation(opted_in))
    assert sqlserver.sm.value(opted_in, AWSCURRENT)["username"] == "app_clone"
    sales = sqlserver.double.server.databases["sales"]
    assert {r for r, m in sales.members if m == "app_clone"} == {r for r, m in sales.members if m == "app"}


# -- a master that cannot open every database ----------------------------------------------------------------
def keeper(sqlserver: SqlServer) -> None:
    """The master becomes `keeper`, no sysadmin (as on a managed server): securityadmin, and db_owner
    in appdb. It opens master and msdb (guest), not model (guest is off there) nor hr, which it
    has no user in."""
    password = sqlserver.login("keeper")
    sqlserver.double.admin("ALTER SERVER ROLE [securityadmin] ADD MEMBER [keeper]", "CREATE DATABASE [hr]")
    sqlserver.double.admin("ALTER ROLE [db_owner] ADD MEMBER [keeper]", database="appdb")
    sqlserver.master, sqlserver.master_password = "keeper", password
    sqlserver.master_arn = sqlserver.secret("keeper", password)
    server = sqlserver.double.server
    assert not any(server.may_enter("keeper", server.databases[name]) for name in ("hr", "model"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_clone_where_the_master_cannot_look_is_not_taken_over(sqlserver: SqlServer) -> None:
    """OPS_CLONE matches OPS wherever the master looks, but holds db_owner in hr, which the master
    cannot open: what it holds there is unknown, so it is refused, nothing changed. Once the
    master has a user in hr, the same rotation names what the clone holds there."""
    keeper(sqlserver)
    ops = sqlserver.login("ops")
    clone = sqlserver.login("ops_clone")
    sqlserver.double.admin(
        "CREATE USER [ops_clone] FOR LOGIN [ops_clone]", "ALTER ROLE [db_owner] ADD MEMBER [ops_clone]",
        database="hr",
    )  # fmt: skip
    arn = sqlserver.app("ops", ops)
    error = sqlserver.attempt(arn, PrivilegeError)
    assert (
        "the master user cannot open database hr, model, so what 'ops_clone' holds there is unknown: give "
        "the master a user there"
    ) in str(error)
    assert sqlserver.during == ["ops", "keeper"] and sqlserver.double.accepts("ops_clone", clone)

    sqlserver.double.admin("CREATE USER [keeper] FOR LOGIN [keeper]", database="hr")
    error = sqlserver.attempt(arn, PrivilegeError)
    assert "'ops_clone' holds what 'ops' does not: role db_owner in database hr" in str(error)
    assert "cannot open database model, so what 'ops_clone' holds there" in str(error), "model: still unknown"


def test_an_original_where_the_master_cannot_look_is_not_handed_to_its_clones_holder(
    sqlserver: SqlServer,
) -> None:
    """Mallory holds VICTIM_CLONE (AWSCURRENT logs in as it) and names it in her secret, so that
    the master would set VICTIM's password next. VICTIM holds db_owner in hr, which the master
    cannot open: what it holds there is unknown, so the master refuses, nothing changed. Once the
    master has a user in hr, the same rotation names what VICTIM holds there."""
    keeper(sqlserver)
    victim = sqlserver.login("victim")
    mallory = sqlserver.login("victim_clone")
    sqlserver.double.admin(
        "CREATE USER [victim] FOR LOGIN [victim]", "ALTER ROLE [db_owner] ADD MEMBER [victim]", database="hr"
    )
    arn = sqlserver.app("victim_clone", mallory)
    error = sqlserver.attempt(arn, PrivilegeError)
    assert ("the master user cannot open database hr, model, so what 'victim' holds there is unknown") in str(
        error
    )
    assert sqlserver.during == ["victim_clone", "keeper"]
    assert sqlserver.double.accepts("victim", victim), "VICTIM keeps its password"

    sqlserver.double.admin("CREATE USER [keeper] FOR LOGIN [keeper]", database="hr")
    error = sqlserver.attempt(arn, PrivilegeError)
    assert "'victim_clone' lacks what 'victim' holds: role db_owner in database hr" in str(error)
    assert sqlserver.double.accepts("victim", victim)


def test_the_rotators_own_clone_is_rotated_where_the_master_cannot_look(
    sqlserver: SqlServer, caplog: pytest.LogCaptureFixture
) -> None:
    """APP has a user in hr, which the master cannot open. The first rotation makes APP_CLONE with
    what the master can see, and warns about hr; the second goes back to APP. The third finds
    APP_CLONE and cannot know what it holds in hr, but AWSPREVIOUS logs in as it: the secret
    already held it, so it is rotated (its password set, nothing else)."""
    keeper(sqlserver)
    password = sqlserver.login("app")
    sqlserver.double.admin("ALTER ROLE [db_datareader] ADD MEMBER [app]", database="appdb")
    sqlserver.double.admin("CREATE USER [app] FOR LOGIN [app]", database="hr")
    arn = sqlserver.app("app", password)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == "app_clone" and sqlserver.logs_in(arn)
    assert warnings(caplog) == [
        "The master user cannot open 1 databases (hr): if 'app' has a user there, 'app_clone' gets none"
    ], "hr only: model is not counted"
    assert sqlserver.double.server.databases["hr"].user_of("app_clone") is None

    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSPREVIOUS)["username"] == "app_clone"
    done = len(sqlserver.double.changes())
    caplog.clear()
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    new = sqlserver.sm.value(arn, AWSCURRENT)
    assert new["username"] == "app_clone" and sqlserver.logs_in(arn)
    assert sqlserver.double.changes()[done:] == [
        "ALTER LOGIN [app_clone] WITH PASSWORD = N'{}', DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF".format(new["password"])
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert "AWSPREVIOUS logs in as 'app_clone': its privileges are put right" in messages
    assert len(warnings(caplog)) == 1 and "cannot open 1 databases (hr)" in warnings(caplog)[0]
    sqlserver.assert_master_intact()


def test_model_is_looked_into_where_the_master_may_open_it(sqlserver: SqlServer) -> None:
    """model is the template of every new database: a clone's user there in db_owner would be
    db_owner of each database made later. A sysadmin master looks, and refuses."""
    ops = sqlserver.login("ops")
    sqlserver.login("ops_clone")
    sqlserver.double.admin(
        "CREATE USER [ops_clone] FOR LOGIN [ops_clone]", "ALTER ROLE [db_owner] ADD MEMBER [ops_clone]",
        database="model",
    )  # fmt: skip
    error = sqlserver.attempt(sqlserver.app("ops", ops), PrivilegeError)
    assert "'ops_clone' holds what 'ops' does not: role db_owner in database model" in str(error)


def test_model_where_the_master_may_not_open_it_is_no_warning_but_leaves_a_clone_unknown(
    sqlserver: SqlServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A master that cannot open model (and opens every other database) makes a clone without a
    warning (model's users only pass to databases made later). But a clone made by hand may hold
    db_owner there, which would make it db_owner of every later database: not adopted unless the
    secret proves it already held it (AWSPREVIOUS), nothing changed."""
    keeper(sqlserver)
    sqlserver.double.admin("CREATE USER [keeper] FOR LOGIN [keeper]", database="hr")
    password = sqlserver.login("app")
    arn = sqlserver.app("app", password)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == "app_clone" and sqlserver.logs_in(arn)
    assert warnings(caplog) == []
    assert mapped_users_sql("hr") in sqlserver.double.statements
    assert mapped_users_sql("model") not in sqlserver.double.statements

    ops = sqlserver.login("ops")
    clone = sqlserver.login("ops_clone")
    error = sqlserver.attempt(sqlserver.app("ops", ops), PrivilegeError)
    assert "the master user cannot open database model, so what 'ops_clone' holds there is unknown" in str(
        error
    )
    assert sqlserver.double.accepts("ops_clone", clone), "nothing changed"


# -- a pre-existing clone with more power than the source ----------------------------------------------------
@pytest.mark.parametrize("spelled", ["ops", "OPS", "oPs"])
@pytest.mark.parametrize(
    ("server", "database", "named"),
    [
        (
            ["ALTER SERVER ROLE [bulkadmin] ADD MEMBER [ops_clone]"],
            [],
            "holds what {} does not: role bulkadmin",
        ),
        (["GRANT VIEW SERVER STATE TO [ops_clone]"], [], "holds what {} does not: GRANT VIEW SERVER STATE"),
        (
            ["GRANT VIEW DEFINITION ON LOGIN::[admin] TO [ops_clone]"],
            [],
            "holds what {} does not: GRANT VIEW DEFINITION ON LOGIN::[admin]",
        ),
        (
            [],
            ["ALTER ROLE [db_datareader] ADD MEMBER [ops_clone]"],
            "holds what {} does not: role db_datareader",
        ),
        (
            [],
            ["GRANT SELECT ON OBJECT::[hr].[salaries] TO [ops_clone]"],
            "holds what {} does not: GRANT SELECT ON OBJECT::[hr].[salaries]",
        ),
        (
            [],
            ["GRANT UPDATE ON OBJECT::[hr].[staff] TO [ops_clone] WITH GRANT OPTION"],
            "holds what {} does not: GRANT UPDATE ON OBJECT::[hr].[staff] WITH GRANT OPTION",
        ),
        (
            [],
            ["@DENY SELECT ON OBJECT::[hr].[salaries] TO [ops]"],
            "not DENY SELECT ON OBJECT::[hr].[salaries]",
        ),
        (["@DENY VIEW ANY DATABASE TO [ops]"], [], "not DENY VIEW ANY DATABASE"),
        ([], ["ALTER AUTHORIZATION ON SCHEMA::[reports] TO [ops_clone]"], "owns 1 schemas or objects"),
    ],
)
def test_a_pre_existing_clone_with_more_than_the_source_is_not_taken_over(
    sqlserver: SqlServer, spelled: str, server: list[str], database: list[str], named: str
) -> None:
    """Mallory knows OPS's password (AWSCURRENT logs in); OPS_CLONE was made by someone else
    with more power, and its password must not land in Mallory's secret. `@`: a change to the
    source instead (a DENY it has that the clone lacks)."""
    ops = sqlserver.login("ops")
    clone = sqlserver.login("ops_clone")
    sqlserver.double.admin(*[s.lstrip("@") for s in server])
    sqlserver.double.admin(*[s.lstrip("@") for s in database], database="appdb")
    error = sqlserver.attempt(sqlserver.app(spelled, ops), PrivilegeError)
    assert named.format(repr(spelled)) in str(error)
    assert sqlserver.double.accepts("ops_clone", clone), "OPS_CLONE keeps its password"


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        (["CREATE LOGIN [ops_clone] FROM WINDOWS"], "'ops_clone' is a WINDOWS_LOGIN, not a SQL login"),
        (["CREATE SERVER ROLE [ops_clone]"], "'ops_clone' is a SERVER_ROLE, not a SQL login"),
        (
            ["!ops_clone", "ALTER AUTHORIZATION ON DATABASE::[appdb] TO [ops_clone]"],
            "'ops_clone' is the database owner's user (dbo)",
        ),
        (
            ["!ops_clone", "CREATE DATABASE [hr]", "ALTER AUTHORIZATION ON DATABASE::[hr] TO [ops_clone]"],
            "owns database hr",
        ),
    ],
)
def test_a_clone_name_held_by_something_the_rotator_never_makes_is_refused(
    sqlserver: SqlServer, setup: list[str], named: str
) -> None:
    ops = sqlserver.login("ops")
    for statement in setup:
        if statement.startswith("!"):
            sqlserver.login(statement[1:], user=False)
        else:
            sqlserver.double.admin(statement)
    error = sqlserver.attempt(sqlserver.app("ops", ops), PrivilegeError)
    assert named in str(error)


def test_a_clone_made_as_awss_function_makes_it_is_adopted(sqlserver: SqlServer) -> None:
    """CREATE LOGIN, CREATE USER FOR LOGIN and the same roles and grants as the source: that is the
    clone the rotator makes, so its password is set and nothing else changes."""
    ops = sqlserver.login("ops")
    clone = sqlserver.login("ops_clone")
    for login in ("ops", "ops_clone"):
        sqlserver.double.admin(f"ALTER SERVER ROLE [bulkadmin] ADD MEMBER [{login}]")
        sqlserver.double.admin(
            f"ALTER ROLE [db_datareader] ADD MEMBER [{login}]",
            f"GRANT EXECUTE ON SCHEMA::[dbo] TO [{login}]",
            f"DENY DELETE ON OBJECT::[dbo].[audit] TO [{login}]",
            database="appdb",
        )
    arn = sqlserver.app("ops", ops)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    new = sqlserver.sm.value(arn, AWSCURRENT)
    assert new["username"] == "ops_clone"
    assert sqlserver.double.changes() == [
        "ALTER LOGIN [ops_clone] WITH PASSWORD = N'{}', DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF".format(new["password"])
    ]
    assert sqlserver.logs_in(arn) and not sqlserver.double.accepts("ops_clone", clone)


@pytest.mark.parametrize(
    ("source", "clone", "named"),
    [
        ([], ["ALTER ROLE [db_owner] ADD MEMBER [ops_clone]"], "does not: role db_owner in database sales"),
        (
            [],
            ["GRANT SELECT ON OBJECT::[hr].[salaries] TO [ops_clone]"],
            "does not: GRANT SELECT ON OBJECT::[hr].[salaries] in database sales",
        ),
        (
            ["DENY SELECT ON OBJECT::[hr].[salaries] TO [ops]"],
            [],
            "does not: not DENY SELECT ON OBJECT::[hr].[salaries] in database sales",
        ),
        (
            [],
            ["ALTER AUTHORIZATION ON SCHEMA::[reports] TO [ops_clone]"],
            "'ops_clone' owns 1 schemas or objects in database sales",
        ),
        (None, [], "does not: GRANT CONNECT in database sales"),  # a user where the source has none
        (
            None,
            ["ALTER ROLE [db_datareader] ADD MEMBER [ops_clone]"],
            "does not: role db_datareader in database sales",
        ),
    ],
)
def test_a_pre_existing_clone_with_more_only_in_another_database_is_not_taken_over(
    sqlserver: SqlServer, source: list[str] | None, clone: list[str], named: str
) -> None:
    """The server and appdb match; in sales the clone holds more than the source (a role, a grant,
    a missing DENY, a schema, or a user where the source has none). None: the source has no
    user in sales."""
    ops = sqlserver.login("ops")
    password = sqlserver.login("ops_clone")
    sqlserver.double.admin("CREATE DATABASE [sales]")
    if source is not None:
        sqlserver.double.admin("CREATE USER [ops] FOR LOGIN [ops]", *source, database="sales")
    sqlserver.double.admin("CREATE USER [ops_clone] FOR LOGIN [ops_clone]", *clone, database="sales")
    error = sqlserver.attempt(sqlserver.app("ops", ops), PrivilegeError)
    assert named in str(error)
    assert sqlserver.double.accepts("ops_clone", password), "OPS_CLONE keeps its password"


def test_a_clone_that_owns_another_database_is_not_taken_over(sqlserver: SqlServer) -> None:
    """dbo of sales: its user there is the database owner's, which the rotator never makes."""
    ops = sqlserver.login("ops")
    sqlserver.login("ops_clone")
    sqlserver.double.admin(
        "CREATE DATABASE [sales]", "ALTER AUTHORIZATION ON DATABASE::[sales] TO [ops_clone]"
    )
    error = sqlserver.attempt(sqlserver.app("ops", ops), PrivilegeError)
    assert "'ops_clone' is the database owner's user (dbo) in database sales" in str(error)
    assert "'ops_clone' owns database sales" in str(error)


def test_an_adopted_clone_gets_the_sources_default_schemas(sqlserver: SqlServer) -> None:
    """A clone made by hand with the source's privileges but dbo as its default schema, in appdb
    and in sales: adopted, and ALTER USER gives it the source's schema in each."""
    ops = "Init-" + uuid.uuid4().hex[:20]
    sqlserver.double.sql_login("ops", ops, database="appdb", schema="reports")
    password = sqlserver.login("ops_clone")
    sqlserver.double.admin("CREATE DATABASE [sales]")
    sqlserver.double.admin(
        "CREATE USER [ops] FOR LOGIN [ops] WITH DEFAULT_SCHEMA = [ledger]",
        "CREATE USER [ops_clone] FOR LOGIN [ops_clone]",
        database="sales",
    )
    arn = sqlserver.app("ops", ops)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    new = sqlserver.sm.value(arn, AWSCURRENT)
    assert new["username"] == "ops_clone" and not sqlserver.double.accepts("ops_clone", password)
    assert sqlserver.double.changes() == [
        "ALTER LOGIN [ops_clone] WITH PASSWORD = N'{}', DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF".format(new["password"]),
        "ALTER USER [ops_clone] WITH DEFAULT_SCHEMA = [reports]",
        "USE [sales]",
        "ALTER USER [ops_clone] WITH DEFAULT_SCHEMA = [ledger]",
        "USE [appdb]",
    ]
    for database, schema in (("appdb", "reports"), ("sales", "ledger")):
        user = sqlserver.double.server.databases[database].user_of("ops_clone")
        assert user is not None and user.default_schema == schema
    assert sqlserver.logs_in(arn)


# -- a clone that drifted, and the secret that proves it is the rotator's ---------------------------------
def test_drift_of_the_rotators_own_clone_is_put_right_when_awsprevious_logs_in(sqlserver: SqlServer) -> None:
    """Two rotations made `app_clone` and went back to `app`; then someone granted the clone more.
    AWSPREVIOUS (the clone, its password still working) proves the clone is the rotator's: the
    third rotation takes the extra away instead of refusing."""
    password = sqlserver.login("app")
    sqlserver.double.admin("DENY DELETE ON OBJECT::[dbo].[audit] TO [app]", database="appdb")
    arn = sqlserver.app("app", password)
    for _ in range(2):
        invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSPREVIOUS)["username"] == "app_clone"
    sqlserver.double.admin("ALTER SERVER ROLE [bulkadmin] ADD MEMBER [app_clone]")
    sqlserver.double.admin(
        "REVOKE DELETE ON OBJECT::[dbo].[audit] FROM [app_clone]",
        "GRANT SELECT ON OBJECT::[hr].[pay] TO [app_clone]",
        database="appdb",
    )
    done = len(sqlserver.double.changes())
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == "app_clone"
    assert sqlserver.double.changes()[done + 1 :] == [
        "ALTER SERVER ROLE [bulkadmin] DROP MEMBER [app_clone]",
        "REVOKE SELECT ON OBJECT::[hr].[pay] FROM [app_clone]",
        "DENY DELETE ON OBJECT::[dbo].[audit] TO [app_clone]",
    ]
    assert sqlserver.logs_in(arn)


def test_drift_is_refused_when_awsprevious_does_not_log_in(sqlserver: SqlServer) -> None:
    password = sqlserver.login("app")
    arn = sqlserver.app("app", password)
    for _ in range(2):
        invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    sqlserver.double.admin(
        "ALTER SERVER ROLE [bulkadmin] ADD MEMBER [app_clone]",
        "ALTER LOGIN [app_clone] WITH PASSWORD = N'Taken-over-9'",  # whoever granted it now holds it
    )
    error = sqlserver.attempt(arn, PrivilegeError)
    assert "'app_clone' holds what 'app' does not: role bulkadmin" in str(error)


# -- the confused-deputy guard ------------------------------------------------------------------------------
def test_a_current_version_that_does_not_log_in_stops_before_the_master(sqlserver: SqlServer) -> None:
    sqlserver.login("app")  # its real password is not the one in the secret
    error = sqlserver.attempt(sqlserver.app("app", "Guess-pass-1"), LoginError)
    assert "AWSCURRENT" in str(error)
    assert sqlserver.during == ["app", "app_clone"], "AWSCURRENT, then AWSPENDING; never the master"
    assert sqlserver.double.statements == []


# -- each login with its own secret's TLS settings -------------------------------------------------------
@pytest.mark.parametrize(
    "weaker", [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}, {"sslrootcert": "impostor"}]
)
def test_the_master_logs_in_with_its_own_tls_settings(
    sqlserver: SqlServer, cas: tuple[CertificateAuthority, CertificateAuthority], weaker: dict[str, Any]
) -> None:
    """Whatever the app secret says about TLS, the master's login gets the driver a context that
    verifies the master secret's own CA and host name; the app's logins follow the app secret."""
    ours, impostor = cas
    app_tls = {k: str(impostor.cert_path) if v == "impostor" else v for k, v in weaker.items()}
    sqlserver.master_arn = sqlserver.secret(
        "admin", sqlserver.master_password, sslmode="verify-full", sslrootcert=str(ours.cert_path)
    )
    password = sqlserver.login("app")
    arn = sqlserver.app("app", password, **app_tls)
    invoke(handler, arn, sqlserver.sm.start_rotation(arn))
    assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == "app_clone"

    connects = sqlserver.double.connects
    assert [c["user"] for c in connects] == ["app", "admin", "app_clone"]
    master = connects[1]
    assert master["cafile"] == CONTEXT_MARKER and master["database"] == "appdb"
    assert master["context"].verify_mode == ssl.CERT_REQUIRED and master["context"].check_hostname
    assert ca_names(master["context"]) == [ours.name]
    assert master["context"].maximum_version == ssl.TLSVersion.TLSv1_2
    for app in (connects[0], connects[2]):
        if weaker.get("ssl") is False or weaker.get("sslmode") == "disable":
            assert app["cafile"] is None and app["context"] is None
        elif "sslrootcert" in weaker:
            assert ca_names(app["context"]) == [impostor.name] and app["context"].check_hostname
        else:
            assert app["context"].verify_mode == ssl.CERT_NONE


# -- the whole flow ------------------------------------------------------------------------------------------
def test_two_rotations_are_tested_marked_and_finished(sqlserver: SqlServer) -> None:
    """testSecret marks the version it tested; finishSecret moves AWSCURRENT to it. The clone the
    first rotation made passes the checks of the second, which hands back to the original."""
    password = sqlserver.login("app")
    sqlserver.double.admin("GRANT VIEW SERVER STATE TO [app]")
    sqlserver.double.admin(
        "ALTER ROLE [db_datareader] ADD MEMBER [app]", "DENY SELECT ON OBJECT::[hr].[pay] TO [app]",
        "GRANT EXECUTE ON SCHEMA::[dbo] TO [app] WITH GRANT OPTION", database="appdb",
    )  # fmt: skip
    arn = sqlserver.app("app", password)
    for expected in ("app_clone", "app"):
        token = sqlserver.sm.start_rotation(arn)
        invoke(handler, arn, token)
        assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == expected
        assert set(sqlserver.sm.stages(arn, marks=True)[token]) == {AWSCURRENT, ROTATORS_TESTED}
        assert sqlserver.logs_in(arn)
    assert [s for s in sqlserver.double.changes() if not s.startswith(("ALTER LOGIN", "CREATE LOGIN"))] == [
        "EXEC [master].[sys].[sp_executesql] N'GRANT VIEW SERVER STATE TO [app_clone]'",
        "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [dbo]",
        "ALTER ROLE [db_datareader] ADD MEMBER [app_clone]",
        "DENY SELECT ON OBJECT::[hr].[pay] TO [app_clone]",
        "GRANT EXECUTE ON SCHEMA::[dbo] TO [app_clone] WITH GRANT OPTION",
    ], "CONNECT SQL and CONNECT come with CREATE LOGIN and CREATE USER"
    sqlserver.assert_master_intact()


def test_a_quoted_name_alternates(sqlserver: SqlServer) -> None:
    name = "O'Neil]s app"
    password = sqlserver.login(name)
    sqlserver.double.admin(f"GRANT VIEW SERVER STATE TO {quote(name)}")
    arn = sqlserver.app(name, password)
    for expected in (name + "_clone", name):
        invoke(handler, arn, sqlserver.sm.start_rotation(arn))
        assert sqlserver.sm.value(arn, AWSCURRENT)["username"] == expected
        assert sqlserver.logs_in(arn)
    sqlserver.assert_master_intact()
