"""A recording stand-in for python-tds at the driver boundary: no SQL Server runs here.

`SqlServerDouble.install(monkeypatch)` replaces `pytds.connect` and the engine's `open_socket`
(which hands back a dummy socket). Every connect call is recorded with its keyword arguments and
the SSLContext the driver would have been given (`pytds.tls.create_context(cafile)`, as
`pytds.connect` calls it); every statement with its parameters, noting whether any were passed
at all (`NO_PARAMS` when not: the driver then sends a plain batch, else it %-formats the text
and runs it through sp_executesql); closed cursors and connections are counted.

Behind it is a small server (`Server`): SQL and Windows logins with their password and policy
settings, server roles and their members, server permissions, and databases (master, tempdb,
model and msdb, as on any server, and the tests' own) with their owner, users (mapped to logins),
guest (enabled where it holds CONNECT), database roles and members, permissions and owned
schemas. The engine's catalog queries (the constants of rotators.engines.sqlserver_sql, its
mapped_users_sql(database) for any database, and the engine's own) are answered from it, and what
the rotator sends is applied to it as SQL Server would: CREATE/ALTER LOGIN (password,
OLD_PASSWORD, settings, the password policy; CREATE LOGIN grants CONNECT SQL), ALTER [SERVER]
ROLE ... ADD/DROP MEMBER, GRANT/DENY/REVOKE (a grantable permission needs CASCADE; server-scope
permissions only in master, error 4621), CREATE USER ... FOR LOGIN (which grants CONNECT), ALTER
USER ... WITH DEFAULT_SCHEMA; so a second rotation sees what the first made, and a login with the
wrong password fails with 18456.

Each connection has a current database: where it logged in, then where `USE [db]` took it (911
for no such database, 942 offline, 916 when its login may not open it: HAS_DBACCESS, which
DATABASES_SQL reports per database, is a user there holding CONNECT, guest enabled, or a server
power that opens every database). Database-scope statements and catalog views act on the current
database, and every statement is recorded with the database it ran in. Application locks
(sp_getapplock) are the session's and live in the database they were taken in: releasing one
from another database fails with 1223, as on SQL Server. Names compare as
SQL Server's default collation does: without case and trailing spaces. Errors are the driver's
own exceptions, made by its own `_create_exception_by_message` (msg_no and text set as it sets
them); anything the double cannot parse is a syntax error (102), as the server would say.

Set-up runs as an administrator with `admin(...)`, in the same T-SQL (bracketed names), plus
CREATE LOGIN ... FROM WINDOWS, CREATE [SERVER] ROLE, CREATE DATABASE, ALTER AUTHORIZATION and DROP
USER; a test takes a database offline with `server.databases[name].online = False`, or makes it
read-only with `.read_only = True` (its catalog reads as before; any change in it fails with 3906).
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytds
import pytds.tls
import pytest
from pytds import tds_base

from rotators.engines import sqlserver
from rotators.engines.sqlserver_sql import (
    DATABASE_PERMISSIONS_SQL,
    DATABASE_POWER_SQL,
    DATABASE_ROLES_SQL,
    DATABASES_SQL,
    LOGIN_SQL,
    OWNED_SQL,
    PRINCIPAL_SQL,
    SERVER_PERMISSIONS_SQL,
    SERVER_POWER_SQL,
    SERVER_ROLES_SQL,
)

PROBE_SQL = "SELECT SUSER_SNAME(), 1 + 1"
VERSION_SQL = "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128))"
MY_PERMISSIONS_SQL: str = sqlserver._MY_PERMISSIONS_SQL
LOCK_SQL: str = sqlserver._LOCK_SQL
UNLOCK_SQL: str = sqlserver._UNLOCK_SQL

FIXED_SERVER_ROLES = (
    "sysadmin", "securityadmin", "serveradmin", "setupadmin", "processadmin", "diskadmin", "dbcreator",
    "bulkadmin",
)  # fmt: skip
FIXED_DATABASE_ROLES = (
    "db_owner", "db_securityadmin", "db_accessadmin", "db_ddladmin", "db_datareader", "db_datawriter",
    "db_backupoperator", "db_denydatareader", "db_denydatawriter",
)  # fmt: skip
# Permissions of the SERVER class (GRANT ... TO a login, no ON clause); any other is a database's.
SERVER_PERMISSIONS = frozenset({
    "CONNECT SQL", "CONNECT ANY DATABASE", "VIEW SERVER STATE", "VIEW ANY DATABASE", "VIEW ANY DEFINITION",
    "ALTER ANY LOGIN", "ALTER ANY SERVER ROLE", "CONTROL SERVER", "IMPERSONATE ANY LOGIN",
    "ALTER ANY DATABASE", "CREATE ANY DATABASE", "ALTER SERVER STATE", "ALTER SETTINGS", "ALTER TRACE",
    "ADMINISTER BULK OPERATIONS", "SHUTDOWN", "ALTER ANY CREDENTIAL", "ALTER ANY LINKED SERVER",
    "ALTER ANY CONNECTION", "SELECT ALL USER SECURABLES", "AUTHENTICATE SERVER", "ALTER ANY ENDPOINT",
    "EXTERNAL ACCESS ASSEMBLY", "UNSAFE ASSEMBLY", "ALTER ANY EVENT SESSION", "ALTER RESOURCES",
})  # fmt: skip
# The kinds of an ON clause at server scope, and their class_desc.
_SERVER_CLASSES = {"LOGIN": "SERVER_PRINCIPAL", "SERVER ROLE": "SERVER_PRINCIPAL", "ENDPOINT": "ENDPOINT"}
_DATABASE_CLASSES = {
    "OBJECT": "OBJECT_OR_COLUMN", "SCHEMA": "SCHEMA", "USER": "DATABASE_PRINCIPAL",
    "ROLE": "DATABASE_PRINCIPAL", "APPLICATION ROLE": "DATABASE_PRINCIPAL", "TYPE": "TYPE",
    "ASSEMBLY": "ASSEMBLY", "CERTIFICATE": "CERTIFICATE", "SYMMETRIC KEY": "SYMMETRIC_KEYS",
    "XML SCHEMA COLLECTION": "XML_SCHEMA_COLLECTION",
}  # fmt: skip
_PRINCIPAL_TYPES = {"USER": ("S", "U", "G", "C", "K", "E", "X"), "ROLE": ("R",), "APPLICATION ROLE": ("A",)}
_STATES = {"G": "GRANT", "W": "GRANT_WITH_GRANT_OPTION", "D": "DENY"}

_NAME = r"\[(?:[^\]]|\]\])*\]"
_LITERAL = r"N'(?:[^']|'')*'"
_LOGIN_DDL = re.compile(
    rf"(?P<verb>CREATE|ALTER) LOGIN (?P<login>{_NAME}) WITH PASSWORD = (?P<password>{_LITERAL})"
    rf"(?: OLD_PASSWORD = (?P<old>{_LITERAL}))?(?P<options>(?:, [A-Z_]+ = (?:{_NAME}|ON|OFF))*)\Z",
    re.S,
)
_OPTION = re.compile(rf", (?P<key>[A-Z_]+) = (?P<value>{_NAME}|ON|OFF)", re.S)
_WINDOWS_LOGIN = re.compile(rf"CREATE LOGIN (?P<login>{_NAME}) FROM WINDOWS\Z", re.S)
_MEMBER = re.compile(
    rf"ALTER (?P<server>SERVER )?ROLE (?P<role>{_NAME}) (?P<verb>ADD|DROP) MEMBER (?P<member>{_NAME})\Z", re.S
)
_CREATE_USER = re.compile(
    rf"CREATE USER (?P<user>{_NAME}) FOR LOGIN (?P<login>{_NAME})"
    rf"(?: WITH DEFAULT_SCHEMA = (?P<schema>{_NAME}))?\Z",
    re.S,
)
_CREATE_ROLE = re.compile(rf"CREATE (?P<server>SERVER )?ROLE (?P<role>{_NAME})\Z", re.S)
_CREATE_DATABASE = re.compile(rf"CREATE DATABASE (?P<database>{_NAME})\Z", re.S)
_AUTHORIZATION = re.compile(
    rf"ALTER AUTHORIZATION ON (?P<kind>DATABASE|SCHEMA|OBJECT)::(?P<target>{_NAME}(?:\.{_NAME})?) "
    rf"TO (?P<owner>{_NAME})\Z",
    re.S,
)
_PERMISSION = re.compile(
    rf"(?P<verb>GRANT|DENY|REVOKE) (?P<permission>[A-Z]+(?: [A-Z]+)*)(?: \((?P<column>{_NAME})\))?"
    rf"(?: ON (?P<kind>[A-Z]+(?: [A-Z]+)*)::(?P<first>{_NAME})(?:\.(?P<second>{_NAME}))?)?"
    rf" (?:TO|FROM) (?P<grantee>{_NAME})(?P<option> WITH GRANT OPTION| CASCADE)?\Z",
    re.S,
)
_USE = re.compile(rf"USE (?P<database>{_NAME})\Z", re.S)
_ALTER_USER = re.compile(rf"ALTER USER (?P<user>{_NAME}) WITH DEFAULT_SCHEMA = (?P<schema>{_NAME})\Z", re.S)
_DROP_USER = re.compile(rf"DROP USER (?P<user>{_NAME})\Z", re.S)
# mapped_users_sql(database) as the server receives it: the driver has put @P1, @P2 in place of
# %(source)s and %(clone)s, and made each `%%` of the quoted database name one `%`.
_MAPPED_USERS = re.compile(
    r"SELECT sp\.name, dp\.name, dp\.default_schema_name "
    rf"FROM (?P<database>{_NAME})\.sys\.database_principals dp "
    r"JOIN sys\.server_principals sp ON sp\.sid = dp\.sid "
    r"WHERE sp\.name IN \((?P<first>@P\d+), (?P<second>@P\d+)\)\Z",
    re.S,
)
_QUERIES = ("SELECT", "WITH", "DECLARE", "EXEC sp_")  # catalog queries, locks, test queries
_IN_MASTER = re.compile(rf"EXEC \[master\]\.\[sys\]\.\[sp_executesql\] (?P<inner>{_LITERAL})\Z", re.S)

MESSAGES = {
    102: "Incorrect syntax near '{0}'.",
    911: "Database '{0}' does not exist. Make sure that the name is entered correctly.",
    916: 'The server principal "{0}" is not able to access the database "{1}" under the current security '
    "context.",
    942: "Database '{0}' cannot be opened because it is offline.",
    3906: 'Failed to update database "{0}" because the database is read-only.',
    1223: "Cannot release the application lock (Database Principal: 'public', Resource: '{0}') because it "
    "is not currently held.",
    4060: 'Cannot open database "{0}" requested by the login. The login failed.',
    4611: "To revoke or deny grantable privileges, specify the CASCADE option.",
    4613: "Grantor does not have GRANT permission.",
    4621: "Permissions at the server scope can only be {0} when the current database is master",
    15007: "'{0}' is not a valid login or you do not have permission.",
    15023: "User, group, or role '{0}' already exists in the current database.",
    15025: "The server principal '{0}' already exists.",
    15063: "The login already has an account under a different user name.",
    15110: "The proposed new database owner is already a user or aliased in the database.",
    15138: "The database principal owns a schema in the database, and cannot be dropped.",
    15116: "Password validation failed. The password does not meet the operating system policy "
    "requirements because it is too short.",
    15118: "Password validation failed. The password does not meet the operating system policy "
    "requirements because it is not complex enough.",
    15151: "Cannot {0} '{1}', because it does not exist or you do not have permission.",
    15247: "User does not have permission to perform this action.",
    18456: "Login failed for user '{0}'.",
    18486: "Login failed for user '{0}' because the account is currently locked out. The system "
    "administrator can unlock it.",
    18487: "Login failed for user '{0}'. Reason: The password of the account has expired.",
    18488: "Login failed for user '{0}'. Reason: The password of the account must be changed.",
}


def fold(name: str) -> str:
    """Who a name is to SQL Server's default collation (CI): no case, no trailing spaces."""
    return name.rstrip(" ").casefold()


def unquote(name: str) -> str:
    """`[a]]b]` -> `a]b`."""
    return name[1:-1].replace("]]", "]")


def literal(text: str) -> str:
    """`N'O''Neil'` -> `O'Neil`."""
    return text[2:-1].replace("''", "'")


def tds_error(*messages: tuple[int, str]) -> tds_base.Error:
    """The exception python-tds raises for the server's error messages, made as its
    TdsSession.raise_db_exception makes it: the class and msg_no from the last message, the
    text of all of them (a refused database at login: 4060, then 18456)."""
    found: list[tds_base.Message] = [
        {
            "marker": 0xAA,
            "msgno": number,
            "state": 1,
            "severity": 14 if number in (18456, 18486, 18487, 18488) else 16,
            "sql_state": None,
            "priv_msg_type": 0,
            "message": text,
            "server": "double",
            "proc_name": "",
            "line_number": 1,
        }
        for number, text in messages
    ]
    error: tds_base.Error = tds_base._create_exception_by_message(
        found[-1], " ".join(m["message"] for m in found)
    )
    return error


def server_error(number: int, *args: str) -> tds_base.Error:
    """The server's error `number` with its own words (MESSAGES), e.g. server_error(18456, "app")."""
    return tds_error((number, MESSAGES[number].format(*args)))


# -- the server's state -----------------------------------------------------------------------------------
def through_roles(name: str, members: list[tuple[str, str]]) -> list[str]:
    """`name` and every role it is a member of, directly or through roles ((role, member) pairs)."""
    found, todo = [name], [name]
    while todo:
        member = todo.pop(0)
        for role, who in members:
            if fold(who) == fold(member) and fold(role) not in map(fold, found):
                found.append(role)
                todo.append(role)
    return found


@dataclass
class ServerPrincipal:
    """A row of sys.server_principals (and sys.sql_logins for a SQL login)."""

    name: str
    type_desc: str = "SQL_LOGIN"  # WINDOWS_LOGIN, SERVER_ROLE
    password: str | None = field(default=None, repr=False)
    default_database: str = "master"
    default_language: str | None = "us_english"  # NULL in sys.sql_logins for some logins
    check_policy: bool = True
    check_expiration: bool = False

    @property
    def type(self) -> str:
        return {"SQL_LOGIN": "S", "WINDOWS_LOGIN": "U", "SERVER_ROLE": "R"}[self.type_desc]


@dataclass
class DatabasePrincipal:
    """A row of sys.database_principals: a user (mapped to `login`) or a role."""

    name: str
    type: str = "S"  # S SQL user, U Windows user, R role, A application role
    login: str | None = None
    default_schema: str | None = None


@dataclass(frozen=True)
class Grant:
    """A row of sys.server_permissions or sys.database_permissions, names as stored."""

    grantee: str
    state: str  # G, W or D
    permission: str
    kind: str = "SERVER"  # class_desc: SERVER, SERVER_PRINCIPAL, DATABASE, OBJECT_OR_COLUMN, ...
    schema: str | None = None
    name: str | None = None
    column: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes a row one: the grantee, the securable (and column), the permission."""
        names = (self.grantee, self.schema, self.name, self.column)
        return (*(fold(n) if n is not None else None for n in names), self.kind, self.permission)


@dataclass
class Database:
    """A database: its principals (dbo, the owner's user; guest, which lets in a login without a
    user while it holds CONNECT, as in master, tempdb and msdb), role members, permissions."""

    name: str
    owner: str  # the login that owns it; its user here is dbo
    principals: dict[str, DatabasePrincipal] = field(default_factory=dict)  # fold(name) ->
    members: list[tuple[str, str]] = field(default_factory=list)  # (role, member), stored names
    permissions: list[Grant] = field(default_factory=list)
    owns: dict[str, int] = field(default_factory=dict)  # fold(user) -> schemas and objects it owns
    online: bool = True  # sys.databases.state = 0
    read_only: bool = False  # sys.databases.is_read_only (or a readable secondary)

    def __post_init__(self) -> None:
        for role in ("public", *FIXED_DATABASE_ROLES):
            self.principals[fold(role)] = DatabasePrincipal(role, "R")
        self.principals["dbo"] = DatabasePrincipal("dbo", "S", self.owner, "dbo")
        self.principals["guest"] = DatabasePrincipal("guest", "S", None, "guest")  # disabled: no CONNECT
        self.members.append(("db_owner", "dbo"))
        self.owns["dbo"] = 1

    def principal(self, name: str) -> DatabasePrincipal | None:
        return self.principals.get(fold(name))

    def user_of(self, login: str) -> DatabasePrincipal | None:
        """The user a login maps to (sys.database_principals JOIN by sid)."""
        return next(
            (p for p in self.principals.values() if p.login is not None and fold(p.login) == fold(login)),
            None,
        )

    def held(self, name: str) -> list[str]:
        """`name` and the roles it is a member of, through roles (the recursive CTE)."""
        return through_roles(name, self.members)

    def connects(self, user: DatabasePrincipal) -> bool:
        """Whether `user` holds CONNECT here (granted to it or a role of it, public included, and
        denied to none of them); dbo always does."""
        if user.name == "dbo":
            return True
        held = {fold(name) for name in (*self.held(user.name), "public")}
        states = {
            g.state
            for g in self.permissions
            if g.kind == "DATABASE" and g.permission == "CONNECT" and fold(g.grantee) in held
        }
        return bool(states) and "D" not in states


@dataclass
class Server:
    principals: dict[str, ServerPrincipal] = field(default_factory=dict)  # fold(name) ->
    members: list[tuple[str, str]] = field(default_factory=list)  # (server role, member)
    permissions: list[Grant] = field(default_factory=list)
    databases: dict[str, Database] = field(default_factory=dict)  # fold(name) ->
    version: str = "16.0.4135.4"

    def __post_init__(self) -> None:
        for role in ("public", *FIXED_SERVER_ROLES):
            self.principals[fold(role)] = ServerPrincipal(role, "SERVER_ROLE")
        self.principals["sa"] = ServerPrincipal("sa", password=None)
        self.members.append(("sysadmin", "sa"))
        for name in ("master", "tempdb", "model", "msdb"):  # as every SQL Server has them
            self.databases[name] = Database(name, "sa")
            if name != "model":  # guest is enabled in these three
                self.databases[name].permissions.append(Grant("guest", "G", "CONNECT", "DATABASE"))

    def principal(self, name: str) -> ServerPrincipal | None:
        return self.principals.get(fold(name))

    def login(self, name: str) -> ServerPrincipal | None:
        found = self.principal(name)
        return found if found is not None and found.type_desc != "SERVER_ROLE" else None

    def database(self, name: str) -> Database | None:
        return self.databases.get(fold(name))

    def held(self, name: str) -> list[str]:
        """`name` and the server roles it is a member of, through roles."""
        return through_roles(name, self.members)

    # -- what a login may do -----------------------------------------------------------------------------
    def server_powers(self, login: str) -> set[str]:
        """Effective server permissions ("*": all of them)."""
        held = {fold(name) for name in self.held(login)}
        powers = {g.permission for g in self.permissions if fold(g.grantee) in held and g.state != "D"}
        if "sysadmin" in held or "CONTROL SERVER" in powers:
            return {"*"}
        if "securityadmin" in held:
            powers |= {"ALTER ANY LOGIN", "ALTER ANY SERVER ROLE"}
        return powers

    def database_powers(self, login: str, database: Database) -> set[str]:
        if "*" in self.server_powers(login):
            return {"*"}
        user = database.user_of(login)
        if user is None:
            return set()
        held = {fold(name) for name in database.held(user.name)}
        powers = {
            g.permission
            for g in database.permissions
            if fold(g.grantee) in held and g.state != "D" and g.kind == "DATABASE"
        }
        if "db_owner" in held or "CONTROL" in powers:
            return {"*"}
        if "db_accessadmin" in held:
            powers.add("ALTER ANY USER")
        if "db_securityadmin" in held:
            powers.add("ALTER ANY ROLE")
        return powers

    def may_enter(self, login: str, database: Database) -> bool:
        """HAS_DBACCESS: a server power that opens every database, or CONNECT held by the login's
        user there, or (when it has none) by guest. An offline database lets no one in."""
        if not database.online:
            return False
        if self.server_powers(login) & {"*", "CONNECT ANY DATABASE"}:
            return True
        user = database.user_of(login) or database.principal("guest")
        return user is not None and database.connects(user)

    def may_connect(self, login: str) -> bool:
        """CONNECT SQL, granted to the login or a server role of it (public included) and denied to
        none of them; a sysadmin or CONTROL SERVER needs none."""
        if "*" in self.server_powers(login):
            return True
        held = {fold(name) for name in (*self.held(login), "public")}
        states = {
            g.state for g in self.permissions if g.permission == "CONNECT SQL" and fold(g.grantee) in held
        }
        return bool(states) and "D" not in states

    def accepts(self, login: str, password: str) -> bool:
        """Whether `login` logs in with `password` (a SQL login's own) and may connect."""
        found = self.login(login)
        return (
            found is not None
            and found.type_desc == "SQL_LOGIN"
            and found.password == password
            and self.may_connect(found.name)
        )


# -- the driver's side -------------------------------------------------------------------------------------
class _NoParams:
    def __repr__(self) -> str:
        return "NO_PARAMS"


NO_PARAMS: Any = _NoParams()  # cursor.execute(statement): a plain batch


@dataclass(frozen=True)
class Executed:
    statement: str
    params: Any  # the dict, None, or NO_PARAMS when execute() was given none at all
    login: str
    database: str

    @property
    def batch(self) -> bool:
        """Sent as a plain SQL batch, not through sp_executesql."""
        return self.params is NO_PARAMS or not self.params


class DummySocket:
    """What the engine's open_socket returns here: nothing is connected."""

    def __init__(self, double: SqlServerDouble, address: tuple[str, int], timeout: float) -> None:
        self.double, self.address, self.timeout = double, address, timeout
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.double.closed_sockets += 1


@dataclass
class Session:
    """What one connection knows: who logged in, where it is now (USE moves it), and the
    application locks it holds, each in the database it was taken in."""

    login: str
    database: str
    locks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (fold(database), resource) ->


class RecordingCursor:
    def __init__(self, connection: RecordingConnection) -> None:
        self.connection = connection
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.double.closed_cursors += 1

    def execute(self, statement: str, params: Any = NO_PARAMS) -> RecordingCursor:
        connection = self.connection
        double = connection.double
        if connection.closed:
            raise pytds.ClosedConnectionError()
        index = len(double.executed)
        double.executed.append(Executed(statement, params, connection.login, connection.session.database))
        if params is not NO_PARAMS and params is not None:
            # What the driver does with any params (even {}): %-format the text with @P names.
            statement % {name: f"@P{i}" for i, name in enumerate(params, 1)}
        failure = double.fail_at.get(index)
        if failure is None:
            failure = next((e for prefix, e in double.fail_on.items() if statement.startswith(prefix)), None)
        if failure is not None:
            raise failure
        binds = params if isinstance(params, dict) else {}
        self.rows = double.run(statement, binds, connection.session)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class RecordingConnection:
    def __init__(self, double: SqlServerDouble, login: str, database: str, sock: Any) -> None:
        self.double, self.login, self.sock = double, login, sock
        self.session = Session(login, database)
        self.closed = False

    @property
    def database(self) -> str:
        """The connection's current database: where it logged in, or where USE took it since."""
        return self.session.database

    def cursor(self) -> RecordingCursor:
        if self.closed:
            raise pytds.ClosedConnectionError()
        return RecordingCursor(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.double.closed_connections += 1
            self.sock.close()


@dataclass
class SqlServerDouble:
    server: Server = field(default_factory=Server)
    rows: Callable[[str, dict[str, Any]], list[tuple[Any, ...]] | None] | None = None  # answers first
    connect_error: Exception | None = None
    login_errors: dict[str, Exception] = field(default_factory=dict)  # fold(login) -> its error
    fail_at: dict[int, Exception] = field(default_factory=dict)
    fail_on: dict[str, Exception] = field(default_factory=dict)
    lock_result: int = 0
    connects: list[dict[str, Any]] = field(default_factory=list, repr=False)
    executed: list[Executed] = field(default_factory=list)
    locks: list[tuple[str, str]] = field(default_factory=list)  # ("lock" | "unlock", resource)
    sockets: list[DummySocket] = field(default_factory=list)
    closed_connections: int = 0
    closed_cursors: int = 0
    closed_sockets: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> SqlServerDouble:
        monkeypatch.setattr(pytds, "connect", self.connect)
        monkeypatch.setattr(sqlserver, "open_socket", self.open_socket)
        return self

    def open_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = DummySocket(self, (host, port), timeout)
        self.sockets.append(sock)
        return sock  # type: ignore[return-value]

    def connect(self, **kwargs: Any) -> RecordingConnection:
        """pytds.connect: the TLS context as the driver asks for it, then the server's checks."""
        cafile = kwargs.get("cafile")
        context = pytds.tls.create_context(cafile) if cafile else None
        self.connects.append({**kwargs, "context": context})
        user, password, database = kwargs["user"], kwargs["password"], kwargs.get("database") or "master"
        if self.connect_error is not None:
            raise self.connect_error
        if fold(user) in self.login_errors:
            raise self.login_errors[fold(user)]
        if not self.server.accepts(user, password):
            raise server_error(18456, user)
        login = self.server.login(user)
        assert login is not None
        found = self.server.database(database)
        if found is None or not self.server.may_enter(login.name, found):
            raise tds_error((4060, MESSAGES[4060].format(database)), (18456, MESSAGES[18456].format(user)))
        return RecordingConnection(self, login.name, found.name, kwargs.get("sock"))

    # -- what a test reads -----------------------------------------------------------------------------
    @property
    def statements(self) -> list[str]:
        return [e.statement for e in self.executed]

    @property
    def logins(self) -> list[str]:
        return [kwargs["user"] for kwargs in self.connects]

    def changes(self) -> list[str]:
        """Every statement that is not a catalog query, lock or test query, with the USEs that take
        the session to another database for changes and back; a USE pair around catalog reads
        only is left out with them. A USE that took the session elsewhere (the next statement ran
        there) pairs with the next one that did; one that did not (refused, or a no-op) is kept
        when it is next to a change."""
        executed = self.executed
        kinds = [
            "query" if e.statement.startswith(_QUERIES) else "use" if _USE.match(e.statement) else "change"
            for e in executed
        ]
        keep = [kind == "change" for kind in kinds]
        opened: int | None = None
        for i, (e, kind) in enumerate(zip(executed, kinds, strict=True)):
            if kind != "use":
                continue
            target = fold(unquote(e.statement[4:]))
            moved = target != fold(e.database) and (
                i + 1 == len(executed) or fold(executed[i + 1].database) == target
            )
            if not moved:
                keep[i] = "change" in (
                    kinds[i - 1] if i else "query",
                    kinds[i + 1] if i + 1 < len(kinds) else "query",
                )
            elif opened is None:
                opened = i
            else:
                keep[opened] = keep[i] = "change" in kinds[opened + 1 : i]
                opened = None
        if opened is not None:  # taken elsewhere and not (yet) back
            keep[opened] = "change" in kinds[opened + 1 :]
        return [e.statement for e, kept in zip(executed, keep, strict=True) if kept]

    def accepts(self, login: str, password: str) -> bool:
        return self.server.accepts(login, password)

    def password_of(self, login: str) -> str | None:
        found = self.server.login(login)
        return found.password if found else None

    # -- set-up, as an administrator ---------------------------------------------------------------------
    def admin(self, *statements: str, database: str = "master") -> SqlServerDouble:
        """Run T-SQL as sa, unrecorded: the state a test starts from."""
        for statement in statements:
            self.run(statement, {}, Session("sa", database))
        return self

    def sql_login(
        self,
        name: str,
        password: str,
        *,
        database: str | None = None,
        user: str | None = None,
        schema: str | None = "dbo",
        policy: bool = False,
        expiration: bool = False,
        default_database: str = "master",
        language: str = "us_english",
    ) -> SqlServerDouble:
        """A SQL login (CHECK_POLICY OFF unless asked), and its user in `database` when given."""
        settings = (
            f"DEFAULT_DATABASE = {quote(default_database)}, DEFAULT_LANGUAGE = {quote(language)}, "
            f"CHECK_POLICY = {'ON' if policy else 'OFF'}, CHECK_EXPIRATION = {'ON' if expiration else 'OFF'}"
        )
        self.admin(f"CREATE LOGIN {quote(name)} WITH PASSWORD = {quote_literal(password)}, {settings}")
        if database is not None:
            with_schema = f" WITH DEFAULT_SCHEMA = {quote(schema)}" if schema else ""
            self.admin(
                f"CREATE USER {quote(user or name)} FOR LOGIN {quote(name)}{with_schema}", database=database
            )
        return self

    # -- the server ------------------------------------------------------------------------------------
    def run(self, statement: str, binds: dict[str, Any], session: Session) -> list[tuple[Any, ...]]:
        """A statement as the server runs it: a catalog query's rows, or a change applied."""
        if self.rows is not None and (rows := self.rows(statement, binds)) is not None:
            return rows
        found = self._query(statement, binds, session)
        if found is not None:
            return found
        self._apply(statement, session)
        return []

    def _query(self, statement: str, binds: dict[str, Any], session: Session) -> list[tuple[Any, ...]] | None:
        server = self.server
        database = server.database(session.database)
        assert database is not None
        names = {fold(binds.get("source") or ""), fold(binds.get("clone") or "")} - {""}
        if statement == PROBE_SQL:
            return [(session.login, 2)]
        if statement == VERSION_SQL:
            return [(server.version,)]
        if statement == LOGIN_SQL:
            login = server.login(binds["name"])
            if login is None or login.type_desc != "SQL_LOGIN":
                return []
            return [
                (login.default_database, login.default_language, login.check_policy, login.check_expiration)
            ]
        if statement == PRINCIPAL_SQL:
            principal = server.principal(binds["name"])
            return [(principal.type_desc,)] if principal else []
        if statement == DATABASES_SQL:
            listed = [
                d
                for d in server.databases.values()
                if d.online and fold(d.name) not in ("tempdb", "rdsadmin")
            ]
            return [
                (d.name, int(server.may_enter(session.login, d)))
                for d in sorted(listed, key=lambda d: fold(d.name))
            ]
        if binds and (found := _MAPPED_USERS.match(self._sent(statement, binds))):
            return self._mapped_users(found, binds, session)
        if statement == SERVER_ROLES_SQL:
            return [(member, role) for role, member in server.members if fold(member) in names]
        if statement == SERVER_PERMISSIONS_SQL:
            return [self._server_row(g) for g in server.permissions if fold(g.grantee) in names]
        if statement == DATABASE_ROLES_SQL:
            return [(member, role) for role, member in database.members if fold(member) in names]
        if statement == DATABASE_PERMISSIONS_SQL:
            return [self._database_row(g, database) for g in database.permissions if fold(g.grantee) in names]
        if statement == SERVER_POWER_SQL:
            return self._server_power(binds["name"])
        if statement == DATABASE_POWER_SQL:
            return self._database_power(binds["name"], database)
        if statement == OWNED_SQL:
            return [(database.owns.get(fold(binds["user"]), 0) if database.principal(binds["user"]) else 0,)]
        if statement == MY_PERMISSIONS_SQL:
            server_powers = server.server_powers(session.login)
            database_powers = server.database_powers(session.login, database)
            held = [p for p in ("ALTER ANY LOGIN",) if server_powers & {"*", p}]
            held += [p for p in ("ALTER ANY USER", "ALTER ANY ROLE") if database_powers & {"*", p}]
            return [(p,) for p in held]
        if statement == LOCK_SQL:  # an application lock lives in the session's current database
            assert set(binds) == {"resource", "timeout"}
            self.locks.append(("lock", binds["resource"]))
            if self.lock_result >= 0:
                session.locks[fold(database.name), binds["resource"]] += 1
            return [(self.lock_result,)]
        if statement == UNLOCK_SQL:
            assert set(binds) == {"resource"}
            self.locks.append(("unlock", binds["resource"]))
            key = (fold(database.name), binds["resource"])
            if not session.locks[key]:
                raise server_error(1223, binds["resource"])
            session.locks[key] -= 1
            return []
        return None

    @staticmethod
    def _sent(statement: str, binds: dict[str, Any]) -> str:
        """The text the server receives for a statement with parameters: %-formatted by the driver
        with @P1, @P2... (a `%%` becomes `%`)."""
        return statement % {name: f"@P{i}" for i, name in enumerate(binds, 1)}

    def _mapped_users(
        self, found: re.Match[str], binds: dict[str, Any], session: Session
    ) -> list[tuple[Any, ...]]:
        """mapped_users_sql: the users of two logins in the named database, which the session's
        login must be able to open, wherever the session is: (login, user, default schema)."""
        database = self._open(unquote(found["database"]), session)
        values = list(binds.values())
        names = {fold(values[int(found[which][2:]) - 1]) for which in ("first", "second")}
        return [
            (self.server.principals[fold(p.login)].name, p.name, p.default_schema)
            for p in database.principals.values()
            if p.login is not None and fold(p.login) in names
        ]

    def _open(self, name: str, session: Session) -> Database:
        """The database `name` for the session's login, or the server's refusal: 911 (no such
        database), 942 (offline), 916 (the login may not open it)."""
        database = self.server.database(name)
        if database is None:
            raise server_error(911, name)
        if not database.online:
            raise server_error(942, database.name)
        if not self.server.may_enter(session.login, database):
            raise server_error(916, session.login, database.name)
        return database

    def _server_row(self, grant: Grant) -> tuple[Any, ...]:
        target = self.server.principal(grant.name or "") if grant.kind == "SERVER_PRINCIPAL" else None
        return (
            grant.grantee,
            _STATES[grant.state],
            grant.permission,
            grant.kind,
            target.name if target else None,
            target.type if target else None,
        )

    @staticmethod
    def _database_row(grant: Grant, database: Database) -> tuple[Any, ...]:
        """What the catalog's joins give: schema and name for objects and types, name for
        schemas and principals (and the principal's type), the column for a column's row."""
        principal = database.principal(grant.name or "") if grant.kind == "DATABASE_PRINCIPAL" else None
        joined = grant.kind in ("OBJECT_OR_COLUMN", "SCHEMA", "DATABASE_PRINCIPAL", "TYPE")
        return (
            grant.grantee,
            _STATES[grant.state],
            grant.permission,
            grant.kind,
            grant.schema if grant.kind in ("OBJECT_OR_COLUMN", "TYPE") else None,
            (principal.name if principal else grant.name) if joined else None,
            grant.column,
            principal.type if principal else None,
        )

    def _server_power(self, name: str) -> list[tuple[Any, ...]]:
        server = self.server
        if server.principal(name) is None:
            return []
        held = [server.principals[fold(n)].name for n in server.held(name)]
        rows: list[tuple[Any, ...]] = []
        for holder in held:
            for role, member in server.members:
                row = ("ROLE", server.principals[fold(role)].name, "GRANT", holder)
                if fold(member) == fold(holder) and row not in rows:
                    rows.append(row)
        for holder in held:
            for g in server.permissions:
                row = ("PERMISSION", g.permission, _STATES[g.state], holder)
                if fold(g.grantee) == fold(holder) and g.state in "GW" and row not in rows:
                    rows.append(row)
        rows += [
            ("OWNER", d.name, "GRANT", name) for d in server.databases.values() if fold(d.owner) == fold(name)
        ]
        return rows

    @staticmethod
    def _database_power(name: str, database: Database) -> list[tuple[Any, ...]]:
        """DATABASE_POWER_SQL: the user's roles, through roles, and their grants on the database
        and on its principals (classes 0 and 4)."""
        user = database.user_of(name)
        if user is None:
            return []
        held = [database.principals[fold(n)].name for n in database.held(user.name)]
        rows: list[tuple[Any, ...]] = []
        for holder in held:
            for role, member in database.members:
                row = ("ROLE", database.principals[fold(role)].name, "GRANT", holder)
                if fold(member) == fold(holder) and row not in rows:
                    rows.append(row)
        for holder in held:
            for g in database.permissions:
                row = ("PERMISSION", g.permission, _STATES[g.state], holder)
                if (
                    fold(g.grantee) == fold(holder)
                    and g.kind in ("DATABASE", "DATABASE_PRINCIPAL")
                    and g.state in "GW"
                    and row not in rows
                ):
                    rows.append(row)
        return rows

    # -- changes -----------------------------------------------------------------------------------------
    def _apply(self, statement: str, session: Session) -> None:
        if found := _IN_MASTER.match(statement):
            self._apply(literal(found["inner"]), Session(session.login, "master"))
        elif found := _LOGIN_DDL.match(statement):
            self._login_ddl(found, session)
        elif found := _WINDOWS_LOGIN.match(statement):
            name = unquote(found["login"])
            self._refuse_existing(name)
            self.server.principals[fold(name)] = ServerPrincipal(name, "WINDOWS_LOGIN")
        elif found := _MEMBER.match(statement):
            self._membership(found, session)
        elif found := _CREATE_USER.match(statement):
            self._create_user(found, session)
        elif found := _USE.match(statement):
            session.database = self._open(unquote(found["database"]), session).name
        elif found := _ALTER_USER.match(statement):
            self._alter_user(found, session)
        elif found := _DROP_USER.match(statement):
            self._drop_user(found, session)
        elif found := _PERMISSION.match(statement):
            self._permission(found, session)
        elif found := _CREATE_ROLE.match(statement):
            role = unquote(found["role"])
            if found["server"]:
                self._refuse_existing(role)
                self.server.principals[fold(role)] = ServerPrincipal(role, "SERVER_ROLE")
            else:
                self._session_database(session).principals[fold(role)] = DatabasePrincipal(role, "R")
        elif found := _CREATE_DATABASE.match(statement):
            name = unquote(found["database"])
            self.server.databases[fold(name)] = Database(name, session.login)
        elif found := _AUTHORIZATION.match(statement):
            self._authorization(found, session)
        else:
            near = statement.split(" ", maxsplit=1)[0]
            raise tds_error((102, MESSAGES[102].format(near) + " (the double does not know this statement)"))

    def _refuse_existing(self, name: str) -> None:
        if self.server.principal(name) is not None:
            raise server_error(15025, name)

    def _session_database(self, session: Session) -> Database:
        """The session's current database, for a change in it: refused (3906) when it is read-only."""
        found = self.server.database(session.database)
        assert found is not None
        if found.read_only:
            raise server_error(3906, found.name)
        return found

    def _login_ddl(self, found: re.Match[str], session: Session) -> None:
        server = self.server
        name, password = unquote(found["login"]), literal(found["password"])
        options = {m["key"]: m["value"] for m in _OPTION.finditer(found["options"])}
        unknown = set(options) - {"DEFAULT_DATABASE", "DEFAULT_LANGUAGE", "CHECK_POLICY", "CHECK_EXPIRATION"}
        if unknown:
            raise tds_error((102, MESSAGES[102].format(sorted(unknown)[0])))
        administrator = bool(server.server_powers(session.login) & {"*", "ALTER ANY LOGIN"})
        login = server.login(name)
        if found["verb"] == "CREATE":
            if not administrator:
                raise server_error(15247)
            self._refuse_existing(name)
            login = ServerPrincipal(name)
        else:
            if login is None or login.type_desc != "SQL_LOGIN":
                raise server_error(15151, "alter the login", name)
            own = fold(name) == fold(session.login)
            if not administrator and not (own and not options):
                raise server_error(15151, "alter the login", name)
            old = found["old"]
            if not administrator and (old is None or literal(old) != login.password):
                raise server_error(15151, "alter the login", name)
        changed = ServerPrincipal(
            login.name,
            password=password,
            default_database=unquote(options["DEFAULT_DATABASE"])
            if "DEFAULT_DATABASE" in options
            else login.default_database,
            default_language=unquote(options["DEFAULT_LANGUAGE"])
            if "DEFAULT_LANGUAGE" in options
            else login.default_language,
            check_policy=options["CHECK_POLICY"] == "ON" if "CHECK_POLICY" in options else login.check_policy,
            check_expiration=options["CHECK_EXPIRATION"] == "ON"
            if "CHECK_EXPIRATION" in options
            else login.check_expiration,
        )
        if changed.check_policy and len(password) < 8:
            raise server_error(15116)
        if changed.check_policy and fold(name) in password.casefold():
            raise server_error(15118)
        server.principals[fold(name)] = changed
        if found["verb"] == "CREATE":  # every new login may connect
            server.permissions.append(Grant(name, "G", "CONNECT SQL"))

    def _membership(self, found: re.Match[str], session: Session) -> None:
        role, member = unquote(found["role"]), unquote(found["member"])
        members: list[tuple[str, str]]
        if found["server"]:
            server = self.server
            if not server.server_powers(session.login) & {"*", "ALTER ANY SERVER ROLE"}:
                raise server_error(15247)
            server_role, who = server.principal(role), server.principal(member)
            if server_role is None or server_role.type_desc != "SERVER_ROLE":
                raise server_error(15151, "alter the server role", role)
            if who is None:
                raise server_error(15151, "add the principal", member)
            pair, members = (server_role.name, who.name), server.members
        else:
            database = self._session_database(session)
            if not self.server.database_powers(session.login, database) & {"*", "ALTER ANY ROLE"}:
                raise server_error(15151, "alter the role", role)
            database_role, user = database.principal(role), database.principal(member)
            if database_role is None or database_role.type != "R":
                raise server_error(15151, "alter the role", role)
            if user is None:
                raise server_error(15151, "add the principal", member)
            pair, members = (database_role.name, user.name), database.members
        held = next(((r, m) for r, m in members if (fold(r), fold(m)) == (fold(role), fold(member))), None)
        if found["verb"] == "ADD" and held is None:
            members.append(pair)
        elif found["verb"] == "DROP" and held is not None:
            members.remove(held)

    def _create_user(self, found: re.Match[str], session: Session) -> None:
        database = self._session_database(session)
        if not self.server.database_powers(session.login, database) & {"*", "ALTER ANY USER"}:
            raise server_error(15247)
        name, login_name = unquote(found["user"]), unquote(found["login"])
        if database.principal(name) is not None:
            raise server_error(15023, name)
        login = self.server.login(login_name)
        if login is None:
            raise server_error(15007, login_name)
        if database.user_of(login.name) is not None:
            raise server_error(15063)
        kind = "S" if login.type_desc == "SQL_LOGIN" else "U"
        schema = unquote(found["schema"]) if found["schema"] else "dbo"
        database.principals[fold(name)] = DatabasePrincipal(name, kind, login.name, schema)
        database.permissions.append(Grant(name, "G", "CONNECT", "DATABASE"))

    def _user_to_change(self, found: re.Match[str], session: Session, verb: str) -> tuple[Database, str]:
        database = self._session_database(session)
        user = database.principal(unquote(found["user"]))
        if user is None or user.type == "R" or user.name in ("dbo", "guest"):
            raise server_error(15151, f"{verb} the user", unquote(found["user"]))
        if not self.server.database_powers(session.login, database) & {"*", "ALTER ANY USER"}:
            raise server_error(15151, f"{verb} the user", user.name)
        return database, user.name

    def _alter_user(self, found: re.Match[str], session: Session) -> None:
        database, name = self._user_to_change(found, session, "alter")
        database.principals[fold(name)].default_schema = unquote(found["schema"])

    def _drop_user(self, found: re.Match[str], session: Session) -> None:
        """DROP USER: its memberships and permissions go with it; a user that owns a schema stays."""
        database, name = self._user_to_change(found, session, "drop")
        if database.owns.get(fold(name)):
            raise server_error(15138)
        del database.principals[fold(name)]
        database.members = [(r, m) for r, m in database.members if fold(m) != fold(name)]
        database.permissions = [g for g in database.permissions if fold(g.grantee) != fold(name)]

    def _permission(self, found: re.Match[str], session: Session) -> None:
        server = self.server
        verb, permission, kind = found["verb"], found["permission"], found["kind"]
        first = unquote(found["first"]) if found["first"] else None
        second = unquote(found["second"]) if found["second"] else None
        column = unquote(found["column"]) if found["column"] else None
        grantee = unquote(found["grantee"])
        option = found["option"] or ""
        if (option == " WITH GRANT OPTION" and verb != "GRANT") or (option == " CASCADE" and verb == "GRANT"):
            raise tds_error((102, MESSAGES[102].format(option.strip())))
        if column is not None and kind != "OBJECT":
            raise tds_error((102, MESSAGES[102].format("(")))
        if kind in _SERVER_CLASSES or (kind is None and permission in SERVER_PERMISSIONS):
            if fold(session.database) != "master":
                done = {"GRANT": "granted", "DENY": "denied", "REVOKE": "revoked"}[verb]
                raise server_error(4621, done)
            if "*" not in server.server_powers(session.login):
                raise server_error(4613)
            who = server.principal(grantee)
            if who is None:
                raise server_error(15151, "find the login", grantee)
            target = server.principal(first) if first else None
            if kind in ("LOGIN", "SERVER ROLE") and (
                target is None or (target.type_desc == "SERVER_ROLE") != (kind == "SERVER ROLE")
            ):
                raise server_error(15151, f"find the {kind.lower()}", first or "")
            grant = Grant(
                who.name, "G", permission, _SERVER_CLASSES[kind] if kind else "SERVER", None,
                target.name if target else first,
            )  # fmt: skip
            rows = server.permissions
        else:
            database = self._session_database(session)
            if "*" not in server.database_powers(session.login, database):
                raise server_error(4613)
            who_user = database.principal(grantee)
            if who_user is None:
                raise server_error(15151, "find the user", grantee)
            if kind is None:
                schema, name, class_desc = None, None, "DATABASE"
            elif kind not in _DATABASE_CLASSES:
                raise tds_error((102, MESSAGES[102].format(kind)))
            else:
                class_desc = _DATABASE_CLASSES[kind]
                schema, name = (first, second) if second is not None else (None, first)
                if kind in _PRINCIPAL_TYPES:
                    target_user = database.principal(name or "")
                    if target_user is None or target_user.type not in _PRINCIPAL_TYPES[kind]:
                        raise server_error(15151, f"find the {kind.lower()}", name or "")
                    name = target_user.name
            grant = Grant(who_user.name, "G", permission, class_desc, schema, name, column)
            rows = database.permissions
        existing = next((g for g in rows if g.key == grant.key), None)
        cascade = option == " CASCADE"
        if existing is not None and existing.state == "W" and verb in ("REVOKE", "DENY") and not cascade:
            raise server_error(4611)
        if existing is not None:
            rows.remove(existing)
        if verb == "GRANT":
            keeps_option = existing is not None and existing.state == "W"
            state = "W" if option == " WITH GRANT OPTION" or keeps_option else "G"
            rows.append(Grant(grant.grantee, state, *_rest(grant)))
        elif verb == "DENY":
            rows.append(Grant(grant.grantee, "D", *_rest(grant)))

    def _authorization(self, found: re.Match[str], session: Session) -> None:
        owner = unquote(found["owner"])
        if found["kind"] == "DATABASE":
            database = self.server.database(unquote(found["target"]))
            login = self.server.login(owner)
            assert database is not None and login is not None
            if database.user_of(login.name) is not None and fold(database.owner) != fold(login.name):
                raise server_error(15110)
            database.owner = login.name
            database.principals["dbo"].login = login.name
        else:
            database = self._session_database(session)
            assert database.principal(owner) is not None
            database.owns[fold(owner)] = database.owns.get(fold(owner), 0) + 1


def _rest(grant: Grant) -> tuple[Any, ...]:
    return (grant.permission, grant.kind, grant.schema, grant.name, grant.column)


def quote(name: str) -> str:
    """[name], as the tests write their set-up (the engine's own quoting is under test)."""
    return "[" + name.replace("]", "]]") + "]"


def quote_literal(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"
