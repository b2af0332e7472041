"""Rotations against a real SQL Server, when ROTATORS_TEST_SQLSERVER_DSN names one.

No SQL Server can run on the development machine, so these tests skip unless given one. SQL
Server 2022 in Docker serves (2016 and later, and RDS for SQL Server, do too):

    docker run -d --name rotators-mssql -p 1433:1433 -e ACCEPT_EULA=Y \\
        -e 'MSSQL_SA_PASSWORD=<password>' mcr.microsoft.com/mssql/server:2022-latest
    ROTATORS_TEST_SQLSERVER_DSN='sqlserver://sa:<password>@localhost:1433/master?sslmode=require' \\
        .venv/bin/pytest -q tests/integration/test_sqlserver_live.py

MSSQL_SA_PASSWORD must pass SQL Server's policy (8 characters or more, of three kinds: upper
case, lower case, digits, symbols), and the container takes a few seconds to start; in the DSN,
percent-encode any of `@ : / ? # %` in the password. The container makes itself a self-signed
certificate at start, which no CA vouches for: `sslmode=require` encrypts without checking it. To
verify, give the server a certificate of your own CA (`mssql-conf set network.tlscert` and
`network.tlskey`) and add `&sslrootcert=/path/ca.pem` (verify-full, the default mode, checks the
host name too); `ssl=false` talks plaintext to a server that allows it.

The DSN's login should be `sa` or another sysadmin: the tests make logins, server roles,
databases and an Extended Events session, grant server permissions and add a login to sysadmin
(that case skips for a login that cannot). The masking checks skip without VIEW SERVER STATE or
ALTER ANY EVENT SESSION. Everything the tests make has a random `rot_` name and is dropped at the
end, the sessions of the tests' logins killed first; a test fails if anything is left behind.
"""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from xml.etree import ElementTree

import pytds
import pytest

from rotators.database import DatabaseSecret, LoginRefusedError, other_user, tls_mode
from rotators.engines.sqlserver import SQLServerRotator, handler
from rotators.engines.sqlserver_sql import LOGIN_SQL
from rotators.errors import PrivilegeError, TargetMismatchError
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import invoke
from tests.live import EngineServer, fresh_names, live_only, serve

DSN = "ROTATORS_TEST_SQLSERVER_DSN"
pytestmark = live_only(DSN, "no SQL Server can run on this machine")

MASTER_DB = "master"  # every login may connect to it (through its guest user)
PROBE = "SUSER_SNAME()"  # in the engine's test query, sent as a plain batch


# -- T-SQL text, written here rather than taken from the engine under test --------------------------
def ident(name: str) -> str:
    """`[name]` with `]` doubled (QUOTENAME's rule)."""
    return "[" + name.replace("]", "]]") + "]"


def literal(value: str) -> str:
    """N'value' with `'` doubled."""
    return "N'" + value.replace("'", "''") + "'"


def drop_login(name: str) -> str:
    """Kills the login's sessions, then drops it, if it exists."""
    return (
        "DECLARE @kill nvarchar(max) = N''; "
        "SELECT @kill += N'KILL ' + CAST(session_id AS nvarchar(11)) + N'; ' FROM sys.dm_exec_sessions "
        f"WHERE login_name = {literal(name)} AND session_id <> @@SPID; EXEC (@kill); "
        f"IF EXISTS (SELECT 1 FROM sys.server_principals WHERE name = {literal(name)}) "
        f"DROP LOGIN {ident(name)}"
    )


def drop_user(database: str, name: str) -> str:
    return f"USE {ident(database)}; DROP USER IF EXISTS {ident(name)}"


def secret_name(username: str) -> str:
    """A Secrets Manager name for a secret of `username`, which may hold `]`, `'` or spaces."""
    return re.sub(r"[^\w/+=.@-]", "-", username) + "-" + uuid.uuid4().hex[:6]


# What a login holds, read column by column: catalog names and the *_desc columns may differ in
# collation, so no query puts them in one column (UNION) or one string (+).
SERVER_ROLES = (
    "SELECT r.name FROM sys.server_role_members rm "
    "JOIN sys.server_principals r ON r.principal_id = rm.role_principal_id "
    "JOIN sys.server_principals m ON m.principal_id = rm.member_principal_id WHERE m.name = %(name)s"
)
SERVER_PERMISSIONS = (
    "SELECT p.state_desc, p.permission_name, p.class_desc, t.name FROM sys.server_permissions p "
    "JOIN sys.server_principals g ON g.principal_id = p.grantee_principal_id "
    "LEFT JOIN sys.server_principals t ON p.class = 101 AND t.principal_id = p.major_id "
    "WHERE g.name = %(name)s"
)
# The same for the login's user in the session's database (found by SID, whatever its name).
DATABASE_ROLES = (
    "SELECT r.name FROM sys.database_role_members rm "
    "JOIN sys.database_principals r ON r.principal_id = rm.role_principal_id "
    "JOIN sys.database_principals m ON m.principal_id = rm.member_principal_id "
    "WHERE m.sid = SUSER_SID(%(name)s)"
)
DATABASE_PERMISSIONS = (
    "SELECT p.state_desc, p.permission_name, p.class, OBJECT_SCHEMA_NAME(p.major_id), "
    "OBJECT_NAME(p.major_id), COL_NAME(p.major_id, NULLIF(p.minor_id, 0)), SCHEMA_NAME(p.major_id) "
    "FROM sys.database_permissions p JOIN sys.database_principals g "
    "ON g.principal_id = p.grantee_principal_id WHERE g.sid = SUSER_SID(%(name)s)"
)
LOGIN_SETTINGS = (
    "SELECT default_database_name, default_language_name, is_policy_checked, is_expiration_checked "
    "FROM sys.sql_logins WHERE name = %(name)s"
)
DEFAULT_SCHEMA = "SELECT default_schema_name FROM sys.database_principals WHERE sid = SUSER_SID(%(name)s)"
# Statement texts SQL Server keeps with the plans it caches.
RECENT_TEXTS = (
    "SELECT st.text FROM sys.dm_exec_query_stats qs CROSS APPLY sys.dm_exec_sql_text(qs.sql_handle) st "
    "WHERE qs.last_execution_time >= %(since)s"
)
CACHED_TEXTS = (
    "SELECT st.text FROM sys.dm_exec_cached_plans cp CROSS APPLY sys.dm_exec_sql_text(cp.plan_handle) st"
)
RING_BUFFER = (
    "SELECT t.target_data FROM sys.dm_xe_session_targets t "
    "JOIN sys.dm_xe_sessions s ON s.address = t.event_session_address "
    "WHERE s.name = %(name)s AND t.target_name = N'ring_buffer'"
)


class SqlServerAdmin(EngineServer[SQLServerRotator]):
    """The DSN's login, through the engine's own connect(): runs T-SQL, makes logins, users, roles
    and grants (each with the statement that drops it in `made`), and checks which passwords log in."""

    def __init__(self, sm: LocalSecretsManager) -> None:
        super().__init__(
            sm, handler, SQLServerRotator(), DSN, engine="sqlserver", port=1433, dbname=MASTER_DB, user="sa"
        )

    def at(self, database: str) -> DatabaseSecret:
        """The DSN's server, port and TLS settings, in `database`."""
        return replace(self.parsed, dbname=database)

    def run(
        self, user: str, password: str, statement: str, *, database: str = MASTER_DB, **binds: Any
    ) -> list[tuple[Any, ...]]:
        """`statement` as one batch of `user`'s; with `binds` it goes through sp_executesql (then
        a `%` in it is written `%%`), without them as a plain batch. The rows it answers."""
        with (
            self.rotator.connect(self.at(database), user, password) as session,
            session.conn.cursor() as cursor,
        ):
            if binds:
                cursor.execute(statement, binds)
            else:
                cursor.execute(statement)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def sql(self, statement: str, *, database: str = MASTER_DB, **binds: Any) -> list[tuple[Any, ...]]:
        """As the DSN's login, in master unless told: server permissions are granted only there."""
        return self.run(self.parsed.username, self.parsed.password, statement, database=database, **binds)

    def logs_in(self, user: str, password: str, database: str = MASTER_DB) -> bool:
        """False only for a password SQL Server refuses (18456 alone); a locked or expired login,
        or a database the login may not open (4060, then 18456), fails the test. In master by
        default, which every login may open."""
        try:
            with self.rotator.connect(self.at(database), user, password):
                return True
        except LoginRefusedError:
            return False

    def may(self, permission: str) -> bool:
        """Whether the DSN's login holds the server permission `permission`."""
        return bool(self.sql(f"SELECT HAS_PERMS_BY_NAME(NULL, NULL, {literal(permission)})")[0][0] == 1)

    def require(self, permission: str, why: str) -> None:
        if not self.may(permission):
            pytest.skip(f"the DSN's login lacks {permission}, which {why}")

    # -- secrets ---------------------------------------------------------------------------------
    def master(self, user: str) -> str:
        return self.sm.create_secret(secret_name(f"{user}-master"), self.admin)

    def secret(
        self,
        username: str,
        password: str,
        *,
        master: str | None = None,
        name: str = "",
        database: str = MASTER_DB,
    ) -> str:
        """A secret of `username` in `database`, alternating with the master secret `master` when given."""
        value = {**self.admin, "username": username, "password": password, "dbname": database}
        if master is not None:
            value["masterarn"] = master
        return self.sm.create_secret(name or secret_name(username), value)

    def stage(self, arn: str, **changes: Any) -> str:
        """A rotation started with AWSPENDING already staged: AWSCURRENT with `changes`. Its token."""
        token = self.sm.start_rotation(arn)
        value = {**self.sm.value(arn, AWSCURRENT), **changes}
        self.sm.client.put_secret_value(
            SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(value), VersionStages=[AWSPENDING]
        )
        return token

    # -- what a test makes ---------------------------------------------------------------------
    def database(self) -> str:
        [name] = fresh_names("db")
        self.sql(f"CREATE DATABASE {ident(name)}")
        self.made.append(
            f"ALTER DATABASE {ident(name)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
            f"DROP DATABASE {ident(name)}"
        )
        return name

    def server_role(self, name: str) -> None:
        """Made before the logins that join it: they go first at the end."""
        self.made.append(
            f"IF EXISTS (SELECT 1 FROM sys.server_principals WHERE name = {literal(name)} AND type = 'R') "
            f"DROP SERVER ROLE {ident(name)}"
        )
        self.sql(f"CREATE SERVER ROLE {ident(name)}")

    def login(self, name: str, password: str, *, policy: bool = False, database: str | None = None) -> None:
        """A SQL login (CHECK_POLICY OFF unless `policy`); it and its clone go at the end."""
        self.made += [drop_login(name), drop_login(name + "_clone")]
        default = f", DEFAULT_DATABASE = {ident(database)}" if database else ""
        self.sql(
            f"CREATE LOGIN {ident(name)} WITH PASSWORD = {literal(password)}, "
            f"CHECK_POLICY = {'ON' if policy else 'OFF'}{default}"
        )

    def user(self, database: str, login: str, *, schema: str | None = None) -> None:
        """The login's user in `database`; it and its clone's go at the end, before the logins."""
        self.made += [drop_user(database, login), drop_user(database, login + "_clone")]
        default = f" WITH DEFAULT_SCHEMA = {ident(schema)}" if schema else ""
        self.sql(f"CREATE USER {ident(login)} FOR LOGIN {ident(login)}{default}", database=database)

    # -- what the catalog says -----------------------------------------------------------------
    def privileges(self, login: str, database: str) -> set[tuple[str, str, str, str]]:
        """Server roles and permissions of `login`, and those of its user in `database`, as
        (where, role or state, permission, on what)."""
        found = {("server role", str(role), "", "") for (role,) in self.sql(SERVER_ROLES, name=login)}
        for state, permission, kind, principal in self.sql(SERVER_PERMISSIONS, name=login):
            target = "" if kind == "SERVER" else f"{kind}::{principal}"
            found.add(("server", str(state), str(permission), target))
        rows = self.sql(DATABASE_ROLES, database=database, name=login)
        found |= {("database role", str(role), "", "") for (role,) in rows}
        rows = self.sql(DATABASE_PERMISSIONS, database=database, name=login)
        for state, permission, kind, schema, name, column, schema_name in rows:
            if kind == 0:
                target = ""
            elif kind == 1:
                target = f"{schema}.{name}" + (f"({column})" if column else "")
            elif kind == 3:
                target = f"SCHEMA::{schema_name}"
            else:
                target = f"class {kind}"
            found.add(("database", str(state), str(permission), target))
        return found

    def settings(self, login: str) -> list[tuple[Any, ...]]:
        """Default database and language, CHECK_POLICY and CHECK_EXPIRATION."""
        return self.sql(LOGIN_SETTINGS, name=login)

    def identity(self, login: str) -> list[tuple[Any, ...]]:
        """SID and creation time: the same login, not one dropped and made again."""
        return self.sql(
            "SELECT sid, create_date FROM sys.server_principals WHERE name = %(name)s", name=login
        )

    def exists(self, login: str) -> bool:
        return bool(self.identity(login))


@pytest.fixture
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlServerAdmin]:
    yield from serve(SqlServerAdmin(local_sm), monkeypatch)


@pytest.fixture
def database(live: SqlServerAdmin) -> str:
    """A throwaway database, dropped after the logins and users in it."""
    return live.database()


@dataclass(frozen=True)
class Source:
    """An application's login with all a clone must copy: in the server, a role, a permission and a
    DENY; in `database`, a user with a default schema, two roles, grants on `table` (INSERT, and
    UPDATE of `column`) and a DENY on `hidden`, which db_datareader would let it read."""

    login: str
    password: str = field(repr=False)
    database: str
    server_role: str
    role: str
    schema: str
    table: str
    column: str
    hidden: str

    @property
    def clone(self) -> str:
        return self.login + "_clone"

    def on(self, table: str) -> str:
        return f"OBJECT::[dbo].{ident(table)}"


def make_source(
    live: SqlServerAdmin, database: str, password: str, *, odd: str = "", grants: bool = True
) -> Source:
    """A Source; every name holds `odd` after `rot_`. Without `grants`: roles only (no server
    permission, no grant or DENY on a table), as AWS's multi-user function copies them."""
    kinds = fresh_names("", "srv", "role", "sch", "t", "h")
    names = [name.replace("rot_", f"rot_{odd}_" if odd else "rot_", 1) for name in kinds]
    name, server_role, role, schema, table, hidden = names
    source = Source(name, password, database, server_role, role, schema, table, f"id{odd}", hidden)
    login = user = ident(source.login)
    live.server_role(source.server_role)
    live.login(source.login, password, database=database)
    live.sql(f"ALTER SERVER ROLE {ident(source.server_role)} ADD MEMBER {login}")
    live.sql(f"CREATE SCHEMA {ident(source.schema)}", database=database)
    live.sql(
        f"CREATE TABLE [dbo].{ident(source.table)} ({ident(source.column)} int); "
        f"CREATE TABLE [dbo].{ident(source.hidden)} (id int); CREATE ROLE {ident(source.role)}",
        database=database,
    )
    live.user(database, source.login, schema=source.schema)
    live.sql(
        f"ALTER ROLE [db_datareader] ADD MEMBER {user}; ALTER ROLE {ident(source.role)} ADD MEMBER {user}",
        database=database,
    )
    if grants:
        live.sql(f"GRANT VIEW ANY DEFINITION TO {login}; DENY VIEW ANY DATABASE TO {login}")
        target = source.on(source.table)
        live.sql(
            f"GRANT INSERT ON {target} TO {user}; "
            f"GRANT UPDATE ({ident(source.column)}) ON {target} TO {user}; "
            f"DENY SELECT ON {source.on(source.hidden)} TO {user}",
            database=database,
        )
    return source


def alternating(live: SqlServerAdmin, source: Source) -> str:
    """The source's secret in its database, alternating with the DSN's login as master."""
    return live.secret(
        source.login, source.password, master=live.master(source.login), database=source.database
    )


# -- single user -------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [False, True], ids=["check_policy_off", "check_policy_on"])
def test_single_user_rotation_through_the_four_steps(
    live: SqlServerAdmin, new_password: Callable[[], str], policy: bool
) -> None:
    """The login changes its own password (ALTER LOGIN ... OLD_PASSWORD); each step does its part
    only, and afterwards only the newest password logs in."""
    [name], password = fresh_names(""), new_password()
    live.login(name, password, policy=policy)
    arn = live.secret(name, password)

    token = live.sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    pending = live.sm.value(arn, AWSPENDING)
    assert pending["username"] == name and pending["password"] != password
    assert live.logs_in(name, password), "createSecret changes nothing on the server"
    invoke(handler, arn, token, "setSecret")
    assert live.logs_in(name, pending["password"]) and not live.logs_in(name, password)
    assert live.sm.value(arn, AWSCURRENT)["password"] == password, "setSecret moves no label"
    invoke(handler, arn, token, "testSecret", "finishSecret")
    assert live.sm.value(arn, AWSCURRENT) == pending
    assert live.sm.value(arn, AWSPREVIOUS)["password"] == password
    assert sorted(live.sm.stages(arn).values()) == [[AWSCURRENT], [AWSPREVIOUS]]

    live.assert_rotates_alone(arn, name)


# -- alternating users -------------------------------------------------------------------------------
def test_alternating_rotations_copy_the_source_and_keep_the_old_login_working(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> None:
    source = make_source(live, database, new_password())
    held = live.privileges(source.login, database)
    table = f"dbo.{source.table}"
    assert {
        ("server role", source.server_role, "", ""),
        ("server", "GRANT", "VIEW ANY DEFINITION", ""),
        ("server", "DENY", "VIEW ANY DATABASE", ""),
        ("database role", "db_datareader", "", ""),
        ("database role", source.role, "", ""),
        ("database", "GRANT", "INSERT", table),
        ("database", "GRANT", "UPDATE", f"{table}({source.column})"),
        ("database", "DENY", "SELECT", f"dbo.{source.hidden}"),
    } <= held, "the catalog query sees what the source was given"
    arn = alternating(live, source)

    first = live.rotate(arn)
    assert first["username"] == source.clone
    assert live.privileges(source.clone, database) == held
    assert live.settings(source.clone) == live.settings(source.login)
    assert live.sql(DEFAULT_SCHEMA, database=database, name=source.clone) == [(source.schema,)]
    assert live.logs_in(source.clone, first["password"], database)
    assert live.logs_in(source.login, source.password, database), "the original keeps working"
    as_clone = functools.partial(live.run, source.clone, first["password"], database=database)
    as_clone(f"INSERT INTO [dbo].{ident(source.table)} VALUES (1)")
    assert as_clone(f"SELECT COUNT(*) FROM [dbo].{ident(source.table)}") == [(1,)]
    with pytest.raises(pytds.Error, match="permission was denied"):
        as_clone(f"SELECT COUNT(*) FROM [dbo].{ident(source.hidden)}")

    second = live.rotate(arn)
    assert second["username"] == source.login and second["password"] != source.password
    assert live.logs_in(source.login, second["password"], database)
    assert not live.logs_in(source.login, source.password)
    assert live.logs_in(source.clone, first["password"], database), "the clone works until its next turn"

    # The source loses a grant and a role and gains a grant: the clone's next turn follows it.
    login = ident(source.login)
    live.sql(
        f"REVOKE INSERT ON {source.on(source.table)} FROM {login}; "
        f"ALTER ROLE {ident(source.role)} DROP MEMBER {login}; "
        f"GRANT DELETE ON {source.on(source.table)} TO {login}",
        database=database,
    )
    third = live.rotate(arn)
    assert third["username"] == source.clone
    changed = live.privileges(source.login, database)
    assert ("database", "GRANT", "DELETE", table) in changed and (
        "database",
        "GRANT",
        "INSERT",
        table,
    ) not in changed
    assert live.privileges(source.clone, database) == changed
    assert not live.logs_in(source.clone, first["password"])
    assert live.logs_in(source.login, second["password"], database), "the original works until its next turn"
    with pytest.raises(pytds.Error, match="permission was denied"):
        live.run(
            source.clone,
            third["password"],
            f"INSERT INTO [dbo].{ident(source.table)} VALUES (2)",
            database=database,
        )


def test_the_clone_gets_the_sources_user_in_a_second_database(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> None:
    """Issue 17: the same users and role memberships in every database the source is mapped to. In
    a second database the source has a user with its own default schema, a role, db_datareader
    and a DENY: the clone gets the same there, and follows when the source leaves the role."""
    source = make_source(live, database, new_password())
    second = live.database()
    role, schema, table = fresh_names("role2", "sch2", "t2")
    user = ident(source.login)
    live.sql(f"CREATE SCHEMA {ident(schema)}", database=second)
    live.sql(f"CREATE TABLE [dbo].{ident(table)} (id int); CREATE ROLE {ident(role)}", database=second)
    live.user(second, source.login, schema=schema)
    live.sql(
        f"ALTER ROLE {ident(role)} ADD MEMBER {user}; ALTER ROLE [db_datareader] ADD MEMBER {user}; "
        f"DENY SELECT ON OBJECT::[dbo].{ident(table)} TO {user}",
        database=second,
    )
    held = live.privileges(source.login, second)
    assert {
        ("database role", role, "", ""),
        ("database role", "db_datareader", "", ""),
        ("database", "DENY", "SELECT", f"dbo.{table}"),
    } <= held, "the catalog query sees what the source was given"
    arn = alternating(live, source)

    first = live.rotate(arn)
    assert first["username"] == source.clone
    assert live.privileges(source.clone, second) == held
    assert live.sql(DEFAULT_SCHEMA, database=second, name=source.clone) == [(schema,)]
    assert live.privileges(source.clone, database) == live.privileges(source.login, database)
    as_clone = functools.partial(live.run, source.clone, first["password"], database=second)
    assert as_clone("SELECT DB_NAME()") == [(second,)], "the clone opens the second database"
    with pytest.raises(pytds.Error, match="permission was denied"):
        as_clone(f"SELECT COUNT(*) FROM [dbo].{ident(table)}")

    live.sql(f"ALTER ROLE {ident(role)} DROP MEMBER {user}", database=second)
    assert live.rotate(arn)["username"] == source.login
    assert live.rotate(arn)["username"] == source.clone
    changed = live.privileges(source.login, second)
    assert ("database role", role, "", "") not in changed
    assert live.privileges(source.clone, second) == changed


def aws_clone(live: SqlServerAdmin, source: Source, password: str) -> None:
    """What AWS's multi-user function makes: CREATE LOGIN (CHECK_POLICY left at its default, ON),
    CREATE USER ... FOR LOGIN, and the source's server and database roles."""
    live.login(source.clone, password, policy=True)
    live.sql(f"ALTER SERVER ROLE {ident(source.server_role)} ADD MEMBER {ident(source.clone)}")
    live.user(source.database, source.clone)
    live.sql(
        f"ALTER ROLE [db_datareader] ADD MEMBER {ident(source.clone)}; "
        f"ALTER ROLE {ident(source.role)} ADD MEMBER {ident(source.clone)}",
        database=source.database,
    )


@pytest.mark.parametrize(
    "variant", ["as_aws_makes_it", "with_a_role_the_source_lacks", "without_the_sources_deny"]
)
def test_a_clone_made_by_awss_multi_user_function(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str], variant: str
) -> None:
    """Adopted as it is (same login, new password, the source's settings); refused, unchanged,
    when it holds a role the source lacks, or lacks a DENY the source has (more power either way)."""
    source = make_source(live, database, new_password(), grants=False)
    aws_password = new_password()
    aws_clone(live, source, aws_password)
    refusal = ""
    if variant == "with_a_role_the_source_lacks":
        live.sql(f"ALTER ROLE [db_datawriter] ADD MEMBER {ident(source.clone)}", database=database)
        refusal = "does not: role db_datawriter"
    elif variant == "without_the_sources_deny":
        live.sql(f"DENY SELECT ON {source.on(source.hidden)} TO {ident(source.login)}", database=database)
        refusal = f"not DENY SELECT ON {source.on(source.hidden)}"
    made, clone_privileges = live.identity(source.clone), live.privileges(source.clone, database)
    arn = alternating(live, source)

    if not refusal:
        rotated = live.rotate(arn)
        assert rotated["username"] == source.clone
        assert live.identity(source.clone) == made, "adopted, not dropped and made again"
        assert live.logs_in(source.clone, rotated["password"], database)
        assert not live.logs_in(source.clone, aws_password)
        assert live.privileges(source.clone, database) == live.privileges(source.login, database)
        assert live.settings(source.clone) == live.settings(source.login), "CHECK_POLICY, default database"
        return
    with pytest.raises(PrivilegeError, match=re.escape(refusal)):
        live.rotate(arn)
    assert live.sm.value(arn, AWSCURRENT)["password"] == source.password
    assert live.logs_in(source.clone, aws_password, database), "the clone's password is unchanged"
    assert live.privileges(source.clone, database) == clone_privileges
    assert live.logs_in(source.login, source.password, database)


# -- the master's safety rules -----------------------------------------------------------------------
@pytest.mark.parametrize("power", ["sysadmin", "db_owner", "db_owner_through_a_role"])
def test_an_administrative_source_is_refused_and_nothing_changes(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str], power: str
) -> None:
    if power == "sysadmin" and live.sql("SELECT IS_SRVROLEMEMBER('sysadmin')") != [(1,)]:
        pytest.skip("only a member of sysadmin may add a login to it")
    source = make_source(live, database, new_password(), grants=False)
    user = ident(source.login)
    if power == "sysadmin":
        live.sql(f"ALTER SERVER ROLE [sysadmin] ADD MEMBER {user}")
        refusal = "server role sysadmin"
    elif power == "db_owner":
        live.sql(f"ALTER ROLE [db_owner] ADD MEMBER {user}", database=database)
        refusal = "role db_owner"
    else:
        [owners] = fresh_names("owners")
        live.sql(
            f"CREATE ROLE {ident(owners)}; ALTER ROLE [db_owner] ADD MEMBER {ident(owners)}; "
            f"ALTER ROLE {ident(owners)} ADD MEMBER {user}",
            database=database,
        )
        refusal = f"role db_owner (through role {owners})"
    before = live.privileges(source.login, database), live.settings(source.login)
    arn = alternating(live, source)

    with pytest.raises(PrivilegeError, match=re.escape(refusal)):
        live.rotate(arn)
    assert live.sm.value(arn, AWSCURRENT)["password"] == source.password
    assert not live.exists(source.clone)
    assert not live.sql(
        "SELECT 1 FROM sys.database_principals WHERE name = %(name)s", database=database, name=source.clone
    )
    assert (live.privileges(source.login, database), live.settings(source.login)) == before
    assert live.logs_in(source.login, source.password, database)


def test_a_source_with_db_owner_only_in_a_second_database_is_refused(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> None:
    """Nothing administrative in the server or the secret's database, db_owner in another one where
    the source has a user: refused before any change, in either database."""
    source = make_source(live, database, new_password(), grants=False)
    second = live.database()
    live.user(second, source.login)
    live.sql(f"ALTER ROLE [db_owner] ADD MEMBER {ident(source.login)}", database=second)
    before = live.privileges(source.login, second), live.privileges(source.login, database)
    arn = alternating(live, source)

    with pytest.raises(PrivilegeError, match=re.escape(f"role db_owner in database {second}")):
        live.rotate(arn)
    assert live.sm.value(arn, AWSCURRENT)["password"] == source.password
    assert not live.exists(source.clone)
    for where in (database, second):
        assert not live.sql(
            "SELECT 1 FROM sys.database_principals WHERE name = %(name)s", database=where, name=source.clone
        )
    assert (live.privileges(source.login, second), live.privileges(source.login, database)) == before
    assert live.logs_in(source.login, source.password, database)


def test_the_masters_own_login_in_another_spelling_is_refused(live: SqlServerAdmin) -> None:
    """SQL Server compares login names without case (under the usual collations) and without
    trailing spaces: each of these names the DSN's login, or makes it the clone's partner."""
    master = live.parsed.username
    spellings = [master.swapcase(), f"{master} ", f"{master.swapcase()}  ", f"{master.upper()}_clone"]
    partners = [other_user(spelling) for spelling in spellings]
    changed = "SELECT CAST(LOGINPROPERTY(%(name)s, 'PasswordLastSetTime') AS datetime2)"
    before = live.sql(changed, name=master), [live.exists(partner) for partner in partners]
    master_arn = live.master(master)

    for spelling in spellings:
        password = f"Guess-{uuid.uuid4().hex}"
        arn = live.secret(spelling, password, master=master_arn)
        with pytest.raises(TargetMismatchError, match="the master user of"):
            live.rotate(arn)
        assert live.sm.value(arn, AWSCURRENT)["password"] == password
    assert (live.sql(changed, name=master), [live.exists(partner) for partner in partners]) == before
    assert live.logs_in(master, live.parsed.password, live.parsed.dbname)


# -- quoting -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("odd", ["a]b", "o'k"])
@pytest.mark.parametrize("strategy", ["single_user", "alternating"])
def test_names_that_need_quoting(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str], odd: str, strategy: str
) -> None:
    """`rot_a]b_<tag>` and `rot_o'k_<tag>`: logins, and for the clone also the server role, the
    database role, the schema, the tables and the column it is granted."""
    if strategy == "single_user":
        [name], password = fresh_names(""), new_password()
        name = name.replace("rot_", f"rot_{odd}_", 1)
        live.login(name, password)
        live.assert_rotates_alone(live.secret(name, password), name)
        return
    source = make_source(live, database, new_password(), odd=odd)
    assert odd in source.login and odd in source.role and odd in source.column
    arn = alternating(live, source)
    clone = live.rotate(arn)
    assert clone["username"] == source.clone
    assert live.logs_in(source.clone, clone["password"], database)
    assert live.privileges(source.clone, database) == live.privileges(source.login, database)
    live.run(
        source.clone, clone["password"], f"UPDATE [dbo].{ident(source.table)} SET {ident(source.column)} = 1",
        database=database,
    )  # fmt: skip
    original = live.rotate(arn)
    assert original["username"] == source.login
    assert live.logs_in(source.login, original["password"], database)
    assert not live.logs_in(source.login, source.password)


@pytest.mark.parametrize("strategy", ["single_user", "alternating"])
def test_passwords_with_quotes_and_percent_signs(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str], strategy: str
) -> None:
    """Two rotations to staged passwords with `'` (N'' literals double it), `%` (sent with no
    parameters, the driver formats nothing) and `]`. Single user: the login's own ALTER LOGIN with
    the old such password as OLD_PASSWORD; alternating: the master's CREATE LOGIN of the clone,
    then its ALTER LOGIN of the original."""
    first = f"It's-{uuid.uuid4().hex}-%s"
    if strategy == "single_user":
        [login] = fresh_names("")
        live.login(login, first)
        arn, where = live.secret(login, first), MASTER_DB
    else:
        source = make_source(live, database, first)
        arn, where = alternating(live, source), database
    for turn in range(2):
        current = live.sm.value(arn, AWSCURRENT)
        user = current["username"] if strategy == "single_user" else other_user(current["username"])
        quoted = f"O'Ne''il-{turn}-{uuid.uuid4().hex}-%(p)s%%\"]"
        invoke(handler, arn, live.stage(arn, username=user, password=quoted))
        assert live.sm.value(arn, AWSCURRENT)["password"] == quoted
        assert live.logs_in(user, quoted, where)
        if strategy == "single_user":
            assert not live.logs_in(user, current["password"])
        else:
            assert live.logs_in(current["username"], current["password"], where), (
                "the other login still works"
            )


# -- transport and masking -------------------------------------------------------------------------------
def test_the_engines_sessions_are_encrypted_as_the_dsn_asks(live: SqlServerAdmin) -> None:
    """TLS through the standard library's ssl (sqlserver_tls) carries the whole session, not only
    the login packet; with `ssl=false` nothing is encrypted."""
    with (
        live.rotator.connect(live.parsed, live.parsed.username, live.parsed.password) as session,
        session.conn.cursor() as cursor,
    ):
        cursor.execute("SELECT CAST(CONNECTIONPROPERTY('encrypt_option') AS nvarchar(8))")
        [(encrypted,)] = cursor.fetchall()
        version = session.tls.tls_version if session.tls else None
    if tls_mode(live.parsed) is None:
        assert (encrypted, version) == ("FALSE", None)
    else:
        assert (encrypted, version) == ("TRUE", "TLSv1.2")


def written(passwords: list[str]) -> set[str]:
    """Each password as it is, and as a T-SQL literal writes it (`'` doubled)."""
    return {form for password in passwords for form in (password, password.replace("'", "''"))}


def prepare_rotations(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> tuple[list[str], list[str]]:
    """A single-user secret and an alternating one, made before any capture starts: their ARNs, and
    every password so far (the master's too)."""
    [single] = fresh_names("one")
    password = new_password()
    live.login(single, password)
    source = make_source(live, database, new_password())
    arns = [live.secret(single, password), alternating(live, source)]
    return arns, [live.parsed.password, password, source.password]


def rotate_each(live: SqlServerAdmin, arns: list[str]) -> list[str]:
    """The single-user secret once (the login's own ALTER LOGIN ... OLD_PASSWORD), the alternating
    one twice (the master's CREATE LOGIN, then ALTER LOGIN): the new passwords."""
    single, pair = arns
    return [live.rotate(single)["password"], live.rotate(pair)["password"], live.rotate(pair)["password"]]


def test_the_plan_cache_holds_the_rotators_lookups_but_no_password(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> None:
    """SQL Server caches no text of password DDL sent as a plain batch; the catalog lookups, sent
    with parameters, are cached (which shows the check looks where the rotator's statements land)."""
    live.require("VIEW SERVER STATE", "reading sys.dm_exec_query_stats and sys.dm_exec_cached_plans needs")
    arns, passwords = prepare_rotations(live, database, new_password)
    [(since,)] = live.sql("SELECT SYSDATETIME()")
    passwords += rotate_each(live, arns)

    recent = [str(text or "") for (text,) in live.sql(RECENT_TEXTS, since=since)]
    lookup = LOGIN_SQL % {"name": "@P1"}  # as the driver sends it through sp_executesql
    assert any(lookup in text for text in recent), (
        "the rotator's catalog lookup of the source is in the cache"
    )
    cached = recent + [str(text or "") for (text,) in live.sql(CACHED_TEXTS)]
    leaked = sum(1 for text in cached if any(form in text for form in written(passwords)))
    assert leaked == 0, f"{leaked} cached statement texts hold a password"


def test_extended_events_record_the_rotators_batches_but_no_password(
    live: SqlServerAdmin, database: str, new_password: Callable[[], str]
) -> None:
    """An Extended Events session on the rotator's connections (its application name) records
    every batch and RPC of theirs, values sent with parameters included; none holds a password:
    password DDL goes as a plain batch, whose text SQL Server masks."""
    live.require("ALTER ANY EVENT SESSION", "an Extended Events session needs")
    live.require("VIEW SERVER STATE", "reading the session's ring buffer needs")
    arns, passwords = prepare_rotations(live, database, new_password)
    source_login = live.sm.value(arns[1], AWSCURRENT)["username"]
    [session, marker] = fresh_names("xe", "marker")
    app = literal(live.rotator.connect_options(live.parsed)["appname"])
    live.made.append(
        f"IF EXISTS (SELECT 1 FROM sys.server_event_sessions WHERE name = {literal(session)}) "
        f"DROP EVENT SESSION {ident(session)} ON SERVER"
    )
    live.sql(
        f"CREATE EVENT SESSION {ident(session)} ON SERVER "
        f"ADD EVENT sqlserver.sql_batch_completed (WHERE (sqlserver.client_app_name = {app})), "
        f"ADD EVENT sqlserver.rpc_completed (WHERE (sqlserver.client_app_name = {app})) "
        "ADD TARGET package0.ring_buffer (SET max_memory = 8192) "
        "WITH (MAX_DISPATCH_LATENCY = 1 SECONDS, EVENT_RETENTION_MODE = NO_EVENT_LOSS)"
    )
    live.sql(f"ALTER EVENT SESSION {ident(session)} ON SERVER STATE = START")
    passwords += rotate_each(live, arns)
    live.sql(f"SELECT {literal(marker)}")  # the last event: once it is in, the rotations' are too

    deadline = time.monotonic() + 30
    while True:
        [(xml,)] = live.sql(RING_BUFFER, name=session)
        events = [
            (
                event.get("name"),
                {data.get("name"): data.findtext("value") or "" for data in event.iter("data")},
            )
            for event in ElementTree.fromstring(xml or "<none/>").iter("event")
        ]
        if any(marker in fields.get("batch_text", "") for _, fields in events):
            break
        assert time.monotonic() < deadline, "the session's events did not arrive in 30 s"
        time.sleep(0.5)

    batches = [fields.get("batch_text", "") for name, fields in events if name == "sql_batch_completed"]
    calls = [fields.get("statement", "") for name, fields in events if name == "rpc_completed"]
    assert any(PROBE in text for text in batches), "the session records the rotator's plain batches"
    assert any(source_login in text for text in calls), "the session records values sent with parameters"
    everything = [str(xml), "".join(ElementTree.fromstring(str(xml)).itertext())]
    leaked = sum(1 for form in written(passwords) if any(form in text for text in everything))
    assert leaked == 0, f"{leaked} passwords (or their T-SQL literals) appear in the session's events"
