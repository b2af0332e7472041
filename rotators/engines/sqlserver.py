"""SQL Server (RDS for SQL Server 2016 and later, self-managed) with python-tds, a pure-Python
TDS driver. Handler: rotators.engines.sqlserver.handler.

TLS is the standard library's (sqlserver_tls), with the SSLContext every engine uses; the
driver's connect() makes one attempt (_one_attempt, at the end). A login changes its own password
with `ALTER LOGIN ... OLD_PASSWORD`; a master with ALTER ANY LOGIN sets it, and makes
`<login>_clone` with the source login's server roles and permissions and, in every database where
the source has a user, a user with its database roles and permissions. Password DDL goes out as a
plain SQL batch, never through sp_executesql or EXEC(): SQL Server masks password DDL in the
traces and audit records of a batch, not inside dynamic SQL.
"""

from __future__ import annotations

import socket
import ssl
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any

import pytds

from rotators.database import DatabaseRotator, DatabaseSecret, ssl_context, tls_mode
from rotators.engines import BY_NAME, sqlserver_tls
from rotators.engines.sqlserver_sql import (
    DATABASE_PERMISSIONS_SQL,
    DATABASE_POWER_SQL,
    DATABASE_ROLES_SQL,
    DATABASES_SQL,
    LOGIN_SQL,
    MAX_NAME,
    OWNED_SQL,
    PRINCIPAL_SQL,
    SERVER_PERMISSIONS_SQL,
    SERVER_POWER_SQL,
    SERVER_ROLES_SQL,
    Permission,
    Privileges,
    administrative,
    beyond,
    fold,
    mapped_users_sql,
    quote_name,
    quote_password,
    read_database_permissions,
    read_roles,
    read_server_permissions,
    sync,
)
from rotators.errors import (
    ConfigurationError,
    PasswordChangeError,
    RotationError,
    SecretFormatError,
    SecretTestError,
    redact,
    shown,
)
from rotators.log import logger
from rotators.rotation import RotationContext
from rotators.secrets import PasswordPolicy

sqlserver_tls.install()

_LOGIN_FAILED, _LOCKED_OUT, _EXPIRED, _MUST_CHANGE = 18456, 18486, 18487, 18488
_CANNOT_OPEN_DATABASE = 4060
_PRINCIPAL_EXISTS, _USER_EXISTS = 15025, 15023
_HINTS = {
    15151: "the master user cannot see or alter that login: it needs ALTER ANY LOGIN",
    15247: "the master user lacks the permission for this (ALTER ANY LOGIN; ALTER ANY USER and the role "
    "memberships in the database)",
    15118: "the password policy (CHECK_POLICY) refused the generated password: align PASSWORD_LENGTH and "
    "EXCLUDE_* with the server's policy, then start a new rotation",
    15114: "the password policy forbids reusing this password: start a new rotation for another one",
    15116: "the password policy refused the generated password as too short: raise PASSWORD_LENGTH",
    _CANNOT_OPEN_DATABASE: "check 'dbname' in the secret",
    3906: "that database is read-only (or a readable secondary): give the clone its user there by hand, "
    "or rotate this secret as a single user",
}
_TRIES = 10
_LOCK_TIMEOUT_MS = 20_000
_LOCK_SQL = (
    "DECLARE @result int; EXEC @result = sp_getapplock @Resource = %(resource)s, @LockMode = 'Exclusive', "
    "@LockOwner = 'Session', @LockTimeout = %(timeout)s; SELECT @result"
)
_UNLOCK_SQL = "EXEC sp_releaseapplock @Resource = %(resource)s, @LockOwner = 'Session'"
_MY_PERMISSIONS_SQL = (
    "SELECT permission_name FROM fn_my_permissions(NULL, 'SERVER') WHERE permission_name = 'ALTER ANY LOGIN' "
    "UNION SELECT permission_name FROM fn_my_permissions(NULL, 'DATABASE') "
    "WHERE permission_name IN ('ALTER ANY USER', 'ALTER ANY ROLE')"
)
_CATALOG_HINT = "the master user needs to see logins and users (ALTER ANY LOGIN, VIEW DEFINITION)"


@dataclass(frozen=True)
class Mapped:
    """The users of a source login and its clone in one database: (user name, default schema)."""

    database: str
    source: tuple[str, str] | None
    clone: tuple[str, str] | None


@dataclass(frozen=True)
class SqlServerSession:
    """A connection, who logged in (with which password, for OLD_PASSWORD) and its transport."""

    conn: Any
    login: str
    password: str = field(repr=False)
    database: str = "master"  # where the session logged in, and returns to after another database
    tls: sqlserver_tls.TlsSocket | None = None
    # What the catalog said, read once per pass of checks and change under the lock (forget():
    # exclusive() and every change): the databases by (source, clone), the privileges of the two
    # by (database or "", source, clone).
    known: dict[tuple[str, str], tuple[list[Mapped], list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    privileges: dict[tuple[str, str, str], tuple[Privileges, Privileges]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def forget(self) -> None:
        self.known.clear()
        self.privileges.clear()


class SQLServerRotator(DatabaseRotator[SqlServerSession]):
    engine = BY_NAME["sqlserver"]  # kind, label, secret engines, default port and dbname
    driver_errors = (pytds.Error, OSError)  # OSError: the socket, ssl's refusals, the driver's timeout
    max_username_bytes = MAX_NAME  # characters, in fact: sysname is nvarchar(128)
    password_length = 32

    # -- names ---------------------------------------------------------------------------------
    def check_username(self, username: str, *, current: DatabaseSecret) -> None:
        if len(username) > MAX_NAME or not username.strip():
            raise SecretFormatError(
                f"User name {shown(username)} is not a SQL Server login name of at most {MAX_NAME} "
                f"characters: shorten {shown(current.username)} so that its clone name fits"
            )
        quote_name(username)

    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """SQL Server compares names without trailing spaces and, under the default collation,
        without case (`Admin ` is `admin`); under an accent- or width-insensitive one, `Admín`
        and a full-width `Admin` are `admin` too. The key folds all of it: a server that tells such names
        apart only sees more of them kept from the master's own login."""
        decomposed = unicodedata.normalize("NFKD", username.rstrip(" "))
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()

    # -- passwords -----------------------------------------------------------------------------
    def password_policy(self) -> PasswordPolicy:
        policy = super().password_policy()
        if policy.length > 128:
            raise ConfigurationError("PASSWORD_LENGTH must be at most 128 for SQL Server")
        return policy

    def make_pending(self, ctx: RotationContext[DatabaseSecret]) -> DatabaseSecret:
        """Retry GetRandomPassword until the password does not hold the login name, which
        CHECK_POLICY's complexity rule refuses."""
        pending = super().make_pending(ctx)
        for _ in range(_TRIES):
            if pending.username.casefold() not in pending.password.casefold():
                return pending
            pending = pending.with_login(pending.username, self.store.random_password(self.password_policy()))
        raise ConfigurationError(
            f"GetRandomPassword gave no password without the login name in {_TRIES} tries: relax EXCLUDE_*"
        )

    # -- connections ---------------------------------------------------------------------------
    def tls_context(self, secret: DatabaseSecret) -> ssl.SSLContext | None:
        """The secret's TLS policy (rotators.database.ssl_context), TLS 1.2 as TDS 7.x carries it."""
        return ssl_context(secret)

    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[SqlServerSession]:
        options = self.connect_options(secret)
        context = self.tls_context(secret)
        with self.login_errors(secret, username, password):
            sock = open_socket(secret.host, secret.port, options["login_timeout"])
            try:
                with sqlserver_tls.context_for_login(context) if context else nullcontext() as cafile:
                    conn = pytds.connect(
                        user=username, password=password, sock=sock, cafile=cafile, **options
                    )
            except BaseException:
                sock.close()
                raise
        try:
            transport = getattr(getattr(conn, "_tds_socket", None), "sock", None)
            tls = transport if isinstance(transport, sqlserver_tls.TlsSocket) else None
            yield SqlServerSession(conn, username, password, secret.dbname or "master", tls)
        finally:
            conn.close()

    def connect_options(self, secret: DatabaseSecret) -> dict[str, Any]:
        """Keyword arguments of pytds.connect() besides the login, the socket and the TLS
        context; nothing here opens a socket."""
        if "\\" in secret.host:
            raise SecretFormatError(
                f"Host {shown(secret.host)} names a SQL Server instance: give its host and 'port' instead"
            )
        return {
            "dsn": secret.host,
            "port": secret.port,
            "database": secret.dbname,
            "login_timeout": self.connect_timeout().seconds,
            "appname": "rotators",
            "autocommit": True,  # CREATE LOGIN and friends; the lock is the session's
            "validate_host": False,  # the SSLContext checks the host name, during the handshake
            "enc_login_only": False,
            "disable_connect_retry": True,
        }

    def refused_login(self, exc: Exception) -> bool:
        """18456 alone: after 4060 (the database cannot be opened) the password was accepted."""
        return _number(exc) == _LOGIN_FAILED and not _after_other_messages(exc)

    def login_error(self, exc: Exception) -> str | None:
        number = _number(exc)
        if number == _LOCKED_OUT:
            return (
                "The login is locked out: unlock it (ALTER LOGIN ... WITH PASSWORD = ... UNLOCK), then retry"
            )
        if number in (_EXPIRED, _MUST_CHANGE):
            return (
                "The password has expired or must be changed: have an administrator set the AWSCURRENT value "
                "again, or rotate it through a master secret"
            )
        return None

    def lost_connection(self, exc: Exception) -> bool:
        return isinstance(exc, (pytds.ClosedConnectionError, OSError))

    def error_text(self, exc: Exception) -> str:
        """The server's message (all of them where it sent several)."""
        text = getattr(exc, "text", "") or str(exc) or type(exc).__name__
        if _after_other_messages(exc):
            text = exc.args[0]  # all of the server's messages, the last one's number
        return " ".join(str(text).split())

    def user_exists(self, exc: Exception) -> bool:
        return _number(exc) in (_PRINCIPAL_EXISTS, _USER_EXISTS)

    def error_hint(self, exc: Exception, login: DatabaseSecret | None) -> str:
        if login is not None and tls_mode(login) and "not supported by server" in str(exc):
            return 'the server offers no TLS: turn on rds.force_ssl (RDS), or put "ssl": false in the secret'
        if _number(exc) == _LOGIN_FAILED and _after_other_messages(exc):
            return _HINTS[_CANNOT_OPEN_DATABASE]
        return _HINTS.get(_number(exc), "")

    def tls_version(self, conn: SqlServerSession) -> str | None:
        return conn.tls.tls_version if conn.tls else None

    def server_name(self, conn: SqlServerSession) -> str | None:
        rows = self._query(conn, "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128))")
        return f"SQL Server {rows[0][0]}" if rows and rows[0][0] else None

    # -- statements ----------------------------------------------------------------------------
    def set_password(self, conn: SqlServerSession, username: str, password: str) -> None:
        """A login changing its own password says OLD_PASSWORD (required without ALTER ANY
        LOGIN); a master needs none."""
        statement = f"ALTER LOGIN {quote_name(username)} WITH PASSWORD = {quote_password(password)}"
        if self.user_key(username, _NO_SECRET) == self.user_key(conn.login, _NO_SECRET):
            statement += f" OLD_PASSWORD = {quote_password(conn.password)}"
        self._execute(conn, [statement], password)

    def clone_user(self, conn: SqlServerSession, source: str, clone: str, password: str) -> None:
        """The clone login gets the source's password policy, default database and language,
        server roles and server permissions, and in every database where the source has a user, a
        user with its default schema, roles and permissions; all read afresh every rotation, and
        what the source lost is taken from the clone. The clone owns nothing."""
        account = self._query(conn, LOGIN_SQL, name=source)
        if not account:
            raise PasswordChangeError(
                f"SQL Server has no SQL login {shown(source)} to clone (a Windows login has no password): "
                "check 'username'"
            )
        database, language, policy, expiration = account[0]
        exists = bool(self._query(conn, PRINCIPAL_SQL, name=clone))
        login = quote_name(clone)
        settings = f"DEFAULT_DATABASE = {quote_name(database)}, " + (
            f"DEFAULT_LANGUAGE = {quote_name(language)}, " if language else ""
        )
        settings += (
            f"CHECK_POLICY = {'ON' if policy else 'OFF'}, CHECK_EXPIRATION = {'ON' if expiration else 'OFF'}"
        )
        verb = "ALTER" if exists else "CREATE"
        statements = [f"{verb} LOGIN {login} WITH PASSWORD = {quote_password(password)}, {settings}"]
        wanted, held = self._server_privileges(conn, source, clone)
        if not exists:
            held.permissions.add(Permission("GRANT", "CONNECT SQL"))  # what CREATE LOGIN grants
        statements += sync(login, wanted, held, server=True)
        mapped, unreachable = self._databases(conn, source, clone)
        for here in mapped:
            statements += self._clone_in(conn, here, clone)
        if unreachable := _worth_saying(unreachable):
            logger.warning(
                f"The master user cannot open {len(unreachable)} databases ({', '.join(unreachable)[:300]}): "
                f"if {shown(source)} has a user there, {shown(clone)} gets none"
            )
        self._execute(conn, statements, password)

    def _clone_in(self, conn: SqlServerSession, mapped: Mapped, clone: str) -> list[str]:
        """The statements that make the clone's user in one database what the source's is."""
        if mapped.source is not None and mapped.source[0] == "dbo":
            raise PasswordChangeError(
                f"The source login is the owner (dbo) of database {shown(mapped.database)}, which a clone "
                "cannot be: rotate it as a single user"
            )
        wanted, held = self._database_privileges(conn, mapped)
        login = quote_name(clone)
        statements = []
        schema = mapped.source[1] if mapped.source else ""
        if mapped.clone is None:
            with_schema = f" WITH DEFAULT_SCHEMA = {quote_name(schema)}" if schema else ""
            statements.append(f"CREATE USER {login} FOR LOGIN {login}{with_schema}")
            held.permissions.add(Permission("GRANT", "CONNECT"))  # what CREATE USER grants
        elif schema and fold(mapped.clone[1]) != fold(schema):
            statements.append(
                f"ALTER USER {quote_name(mapped.clone[0])} WITH DEFAULT_SCHEMA = {quote_name(schema)}"
            )
        user = quote_name(mapped.clone[0] if mapped.clone else clone)
        statements += sync(user, wanted, held, server=False)
        if not statements or fold(mapped.database) == fold(conn.database):
            return statements
        return [f"USE {quote_name(mapped.database)}", *statements, f"USE {quote_name(conn.database)}"]

    def session_user(self, conn: SqlServerSession) -> str | None:
        rows = self._query(conn, "SELECT SUSER_SNAME(), 1 + 1")
        return str(rows[0][0]) if rows and rows[0][1] == 2 else None

    def probe(self, conn: SqlServerSession, username: str) -> None:
        """The test query runs, as `username` in SQL Server's comparison of names."""
        found = self.session_user(conn)
        if found is None or self.user_key(found, _NO_SECRET) != self.user_key(username, _NO_SECRET):
            raise SecretTestError(f"The test query did not run as {shown(username)}")

    def change_privileges(self, conn: SqlServerSession, username: str, *, as_master: bool) -> str | None:
        """A login may change its own password (with OLD_PASSWORD); a master needs ALTER ANY
        LOGIN, and ALTER ANY USER and ALTER ANY ROLE for the clone's users in the secret's
        database and in every other one where the login has a user; it must be able to open those."""
        if not as_master:
            return None
        try:
            if not self._query(conn, LOGIN_SQL, name=username):
                return f"SQL Server has no SQL login {username!r}"
            held = {row[0] for row in self._query(conn, _MY_PERMISSIONS_SQL)}
            missing = sorted({"ALTER ANY LOGIN", "ALTER ANY USER", "ALTER ANY ROLE"} - held)
            lacking = [", ".join(missing)] if missing else []
            mapped, unreachable = self._databases(conn, username, self.clone_name(username))
            for here in mapped:
                if here.source is None or fold(here.database) == fold(conn.database):
                    continue
                with self._in_database(conn, here.database):
                    there = {row[0] for row in self._query(conn, _MY_PERMISSIONS_SQL)}
                if missing := sorted({"ALTER ANY USER", "ALTER ANY ROLE"} - there):
                    lacking.append(f"{', '.join(missing)} in database {here.database}")
        except RotationError as exc:
            return str(exc)
        problems = [f"the master user lacks {'; '.join(lacking)}"] if lacking else []
        if unreachable := _worth_saying(unreachable):
            problems.append(f"the master user cannot open database {', '.join(unreachable)[:300]}")
        return "; ".join(problems) or None

    # -- the master's safety rules ---------------------------------------------------------------
    @contextmanager
    def exclusive(self, conn: SqlServerSession, username: str) -> Iterator[None]:
        """sp_getapplock on the login, held by the session (released on disconnect too): a
        concurrent run waits, then checks what the first one made."""
        conn.forget()
        resource = f"rotators:{self.user_key(username, _NO_SECRET)}"[:255]
        rows = self._query(conn, _LOCK_SQL, resource=resource, timeout=_LOCK_TIMEOUT_MS)
        if not rows or rows[0][0] is None or int(rows[0][0]) < 0:
            raise PasswordChangeError(
                f"Another run holds the rotation lock of {shown(username)} for {_LOCK_TIMEOUT_MS // 1000} s: "
                "retry the step"
            )
        try:
            yield
        finally:
            self._query(conn, _UNLOCK_SQL, fetch=False, resource=resource)

    def admin_power(self, conn: SqlServerSession, username: str) -> list[str]:
        """Administrative server roles and permissions (held directly or through roles, or WITH
        GRANT OPTION), databases the login owns, and the same in every database where it has a
        user."""
        found = administrative(self._query(conn, SERVER_POWER_SQL, name=username), username, server=True)
        for mapped in self._databases(conn, username, self.clone_name(username))[0]:
            if mapped.source is None:
                continue
            with self._in_database(conn, mapped.database):
                rows = self._query(conn, DATABASE_POWER_SQL, name=username)
            held = administrative(rows, mapped.source[0], server=False)
            if mapped.source[0] == "dbo":
                held.add("the database owner's user (dbo)")
            found |= {f"{power} in database {mapped.database}" for power in held}
        return [f"{shown(username)} holds {', '.join(sorted(found))}"] if found else []

    def clone_mismatch(self, conn: SqlServerSession, source: str, clone: str) -> list[str]:
        """The rotator's clone holds what the source holds and nothing else: no role, grant or
        missing DENY beyond the source's, in the server and in every database; it owns nothing.
        Where the master cannot look (a database it cannot open), an existing clone is not
        known to be such a clone."""
        kind = self._query(conn, PRINCIPAL_SQL, name=clone)
        if not kind:
            return []
        if str(kind[0][0]) != "SQL_LOGIN":
            return [f"{shown(clone)} is a {kind[0][0]}, not a SQL login the rotator made"]
        found = self._differences(conn, source, clone, beyond_source=True)
        for mapped in self._databases(conn, source, clone)[0]:
            if mapped.clone is None:
                continue
            where = f"in database {mapped.database}"
            if mapped.clone[0] == "dbo":
                found.append(f"{shown(clone)} is the database owner's user (dbo) {where}")
            with self._in_database(conn, mapped.database):
                owned = self._query(conn, OWNED_SQL, user=mapped.clone[0])
            if owned and owned[0][0]:
                found.append(f"{shown(clone)} owns {owned[0][0]} schemas or objects {where}")
        owns = [row[1] for row in self._query(conn, SERVER_POWER_SQL, name=clone) if row[0] == "OWNER"]
        if owns:
            found.append(f"{shown(clone)} owns database {', '.join(sorted(map(str, owns)))}")
        return found

    def clone_lacks(self, conn: SqlServerSession, source: str, clone: str) -> list[str]:
        """What the source (whose password the master is about to set) holds beyond the clone
        that AWSCURRENT proved: in the server and every database; unknown where the master
        cannot look."""
        return self._differences(conn, source, clone, beyond_source=False)

    def _differences(
        self, conn: SqlServerSession, source: str, clone: str, *, beyond_source: bool
    ) -> list[str]:
        """What the clone holds beyond the source (or lacks of it), in the server and in every
        database where either has a user. A login without a user in a database holds nothing
        there: no DENY of the other's is missing (a clone whose CREATE USER failed is the
        rotator's to finish, not more power). Where the master cannot open a database, what the
        login to be handed over holds there is unknown: said, so that only AWSPREVIOUS's proof
        that the secret already held that login lets the master act."""
        server_wanted, server_held = self._server_privileges(conn, source, clone)
        found = beyond(server_held, server_wanted) if beyond_source else beyond(server_wanted, server_held)
        mapped_here, unreachable = self._databases(conn, source, clone)
        handed_over, unknown = clone if beyond_source else source, []
        if unreachable:
            unknown.append(
                f"the master user cannot open database {', '.join(unreachable)[:300]}, so what "
                f"{shown(handed_over)} holds there is unknown: give the master a user there"
            )
        for mapped in mapped_here:
            if (mapped.clone if beyond_source else mapped.source) is None:
                continue
            wanted, held = self._database_privileges(conn, mapped)
            here = beyond(held, wanted) if beyond_source else beyond(wanted, held)
            found += [f"{text} in database {mapped.database}" for text in here]
        if not found:
            return unknown
        if beyond_source:
            return [f"{shown(clone)} holds what {shown(source)} does not: {', '.join(found)}", *unknown]
        return [f"{shown(clone)} lacks what {shown(source)} holds: {', '.join(found)}", *unknown]

    # -- plumbing ------------------------------------------------------------------------------
    def _server_privileges(
        self, conn: SqlServerSession, source: str, clone: str
    ) -> tuple[Privileges, Privileges]:
        """The server roles and permissions of the two logins; copies, free to change."""
        key = ("", fold(source), fold(clone))
        if key not in conn.privileges:
            found = {source: Privileges(), clone: Privileges()}
            read_roles(self._query(conn, SERVER_ROLES_SQL, source=source, clone=clone), found)
            rows = self._query(conn, SERVER_PERMISSIONS_SQL, source=source, clone=clone)
            read_server_permissions(rows, found)
            conn.privileges[key] = (found[source], found[clone])
        return _copies(conn.privileges[key])

    def _database_privileges(self, conn: SqlServerSession, mapped: Mapped) -> tuple[Privileges, Privileges]:
        """The roles and permissions of the two users in one database (nothing for a login
        without one there); copies, free to change."""
        source, clone = mapped.source[0] if mapped.source else "", mapped.clone[0] if mapped.clone else ""
        key = (fold(mapped.database), source, clone)
        if key not in conn.privileges:
            wanted, held = Privileges(), Privileges()
            found = {name: privileges for name, privileges in ((source, wanted), (clone, held)) if name}
            with self._in_database(conn, mapped.database):
                read_roles(self._query(conn, DATABASE_ROLES_SQL, source=source, clone=clone), found)
                rows = self._query(conn, DATABASE_PERMISSIONS_SQL, source=source, clone=clone)
            read_database_permissions(rows, found)
            conn.privileges[key] = (wanted, held)
        return _copies(conn.privileges[key])

    def _databases(self, conn: SqlServerSession, source: str, clone: str) -> tuple[list[Mapped], list[str]]:
        """The databases where the source or the clone login has a user (one lookup in each
        database the master can open: each keeps its own users), and those it cannot open.
        Once per pass of checks and change (SqlServerSession.known)."""
        key = (fold(source), fold(clone))
        if key not in conn.known:
            mapped, unreachable = [], []
            for database, reachable in self._query(conn, DATABASES_SQL):
                if not reachable:
                    unreachable.append(str(database))
                    continue
                rows = self._query(conn, mapped_users_sql(str(database)), source=source, clone=clone)
                users = {fold(str(login)): (str(user), str(schema or "")) for login, user, schema in rows}
                source_user, clone_user = users.get(fold(source)), users.get(fold(clone))
                if source_user or clone_user:
                    mapped.append(Mapped(str(database), source_user, clone_user))
            conn.known[key] = (mapped, unreachable)
        return conn.known[key]

    @contextmanager
    def _in_database(self, conn: SqlServerSession, database: str) -> Iterator[None]:
        """Catalog reads in another database than the session's (its own views: users, roles,
        permissions), then back, after an error too (see _back_home)."""
        if fold(database) == fold(conn.database):
            yield
            return
        self._query(conn, f"USE {quote_name(database)}", fetch=False)
        try:
            yield
        except Exception:
            self._back_home(conn)
            raise
        self._query(conn, f"USE {quote_name(conn.database)}", fetch=False)

    def _back_home(self, conn: SqlServerSession) -> None:
        """After an error in another database, the session goes back to its own: the rotation lock
        was taken there (an application lock belongs to its database: sp_releaseapplock elsewhere
        fails, error 1223, hiding the first error), and a retry of the checks under the lock
        (UserExistsError) reads from there. If that fails too (the connection is lost), the first
        error is the one to report."""
        with suppress(RotationError):
            self._query(conn, f"USE {quote_name(conn.database)}", fetch=False)

    def _query(
        self, conn: SqlServerSession, statement: str, *, fetch: bool = True, **binds: Any
    ) -> list[tuple[Any, ...]]:
        """A catalog lookup, its values bound (sp_executesql): none of them is a secret."""
        with (
            self.statement_errors(what="a query of the catalog", hint=_CATALOG_HINT),
            conn.conn.cursor() as cursor,
        ):
            if binds:
                cursor.execute(statement, binds)
            else:
                cursor.execute(statement)
            return [tuple(row) for row in cursor.fetchall()] if fetch else []

    def _execute(self, conn: SqlServerSession, statements: Iterable[str], password: str) -> None:
        """Each statement its own batch, sent with no parameters: the driver would otherwise
        %-format it and run it through sp_executesql, whose text the server's traces keep.
        DDL commits as it goes; a retry converges, each list being computed from the catalog."""
        secrets = [password, conn.password]
        conn.forget()  # what it changes
        home, away = f"USE {quote_name(conn.database)}", False  # whether a USE took the session elsewhere
        with conn.conn.cursor() as cursor:
            for statement in statements:
                try:
                    cursor.execute(statement)
                except self.driver_errors as exc:  # OSError too: the socket, mid-statement
                    what = redact(statement.split(" WITH PASSWORD = ")[0], secrets)
                    failure = self.statement_failure(exc, secrets, what=what)  # error_hint: _HINTS
                    if away:
                        self._back_home(conn)
                    raise failure from None
                if statement.startswith("USE "):
                    away = statement != home


_NO_SECRET: Any = None  # user_key() does not look at the secret


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """The TCP connection the driver logs in over: opened here, because the driver's own
    connect() waits out its whole timeout before it reports a refused connection."""
    return socket.create_connection((host, port), timeout)


def _worth_saying(unreachable: list[str]) -> list[str]:
    """Databases the master cannot open, but model: guest is off there, and its users only pass
    to databases made later (what a clone may hold there still counts in clone_mismatch)."""
    return [name for name in unreachable if fold(name) != "model"]


def _copies(pair: tuple[Privileges, Privileges]) -> tuple[Privileges, Privileges]:
    """What the memo keeps stays as read: the caller gets sets of its own."""
    wanted, held = (Privileges(roles=set(p.roles), permissions=set(p.permissions)) for p in pair)
    return wanted, held


def _number(exc: BaseException) -> int:
    return int(getattr(exc, "msg_no", 0) or 0)


def _after_other_messages(exc: BaseException) -> bool:
    """Whether the server sent other messages before the one the driver raised: python-tds
    raises the last, with the text of all of them (SQL Server sends 4060, then 18456)."""
    joined = exc.args[0] if exc.args else None
    return isinstance(exc, pytds.DatabaseError) and isinstance(joined, str) and joined != exc.text


def _one_attempt(work: Callable[[float], Any], *_: Any, first_attempt_time_sec: float, **__: Any) -> Any:
    """In place of python-tds's retry loop, which (even with disable_connect_retry) sleeps out
    the whole login_timeout after an error it deems transient (a reset connection, a server
    error other than a refused login) before it raises: one attempt, its error as it is."""
    return work(first_attempt_time_sec)


pytds.utils.exponential_backoff = _one_attempt  # what pytds.connect() calls its attempt through


handler = SQLServerRotator().handle
