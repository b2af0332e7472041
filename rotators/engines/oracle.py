"""Oracle (RDS for Oracle, self-managed) with python-oracledb in thin mode: no Instant Client.
Handler: rotators.engines.oracle.handler.

`ALTER USER ... IDENTIFIED BY` cannot bind its user name or password, so both are checked
against Oracle's rules and quoted (oracle_names); every other value (dictionary lookups) is a
bind. A user name in the secret is spelled as for SQL*Plus or the driver: `app` is the user APP,
`"App"` the case-sensitive user App. The grants a clone copies are oracle_grants'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import oracledb

from rotators.database import CLONE_SUFFIX, DatabaseRotator, DatabaseSecret, ssl_context, tls_mode
from rotators.engines import BY_NAME
from rotators.engines.oracle_grants import (
    ACCOUNT_SQL,
    ADMIN_POWER_SQL,
    Privileges,
    administrative,
    beyond,
    read_privileges,
    sync,
)
from rotators.engines.oracle_names import OracleName, parse_name, quotable, quote, quote_password
from rotators.errors import (
    ConfigurationError,
    PasswordChangeError,
    RotationError,
    SecretFormatError,
    redact,
    shown,
)
from rotators.rotation import RotationContext
from rotators.secrets import PasswordPolicy

_LOGIN_REFUSED, _LOCKED, _EXPIRED, _NAME_TAKEN = 1017, 28000, 28001, 1920
_HINTS = {
    1031: "the master user lacks a privilege for this (ALTER USER, CREATE USER, or the grant WITH "
    "ADMIN/GRANT OPTION)",
    _NAME_TAKEN: "that name is already taken by a role: rename the user or the role",
    28003: "the profile's password verify function refused the generated password: align "
    "PASSWORD_LENGTH and EXCLUDE_* with its rules, then start a new rotation",
    28007: "the profile forbids reusing this password: start a new rotation for another one",
    972: "the name is longer than this database accepts (COMPATIBLE below 12.2 keeps 30 bytes)",
}
_TRIES = 10
_SESSION_PRIVS = "SELECT privilege FROM session_privs WHERE privilege IN ('ALTER USER', 'CREATE USER')"
# A TLS failure, not a plain-TCP port. Not a bare "DN": the driver's random CONNECTION_ID can hold it.
_CERTIFICATE = re.compile(r"certificate|distinguished name|host ?name", re.IGNORECASE)
_DICTIONARY_HINT = "the master user needs SELECT on the DBA_ views and V$PWFILE_USERS (SELECT_CATALOG_ROLE)"


def server_version(text: str) -> tuple[int, int]:
    major, minor = [*(int(p) for p in re.findall(r"\d+", text)[:2]), 0, 0][:2]
    return major, minor


@dataclass(frozen=True)
class Server:
    """The features of a session: what the server's version allows."""

    version: tuple[int, int]

    @property
    def max_name_bytes(self) -> int:
        return 128 if self.version >= (12, 2) else 30

    @property
    def max_password_bytes(self) -> int:
        return 1024 if self.version >= (23, 0) else 30

    def __str__(self) -> str:
        return f"Oracle {self.version[0]}.{self.version[1]}"


@dataclass(frozen=True)
class OracleSession:
    """A connection, who logged in (with which password, for REPLACE) and the server's features."""

    conn: Any
    login: OracleName
    password: str = field(repr=False)
    features: Server


class OracleRotator(DatabaseRotator[OracleSession]):
    engine = BY_NAME["oracle"]  # kind, label, secret engines, default port and dbname
    driver_errors = (oracledb.Error,)
    max_username_bytes = 128  # 30 before 12.2: checked against the server's version when connected
    password_length = 30  # Oracle before 23ai accepts at most 30 bytes

    # -- names ---------------------------------------------------------------------------------
    def clone_name(self, username: str) -> str:
        """`app` -> `app_clone`, `APP` -> `APP_CLONE` (the same user to Oracle), `"App"` -> `"App_clone"`."""
        name = parse_name(username)
        if name.quoted:
            return f'"{name.stored}{CLONE_SUFFIX}"'
        return username + (CLONE_SUFFIX.upper() if username == username.upper() else CLONE_SUFFIX)

    def partner(self, username: str) -> str:
        """`app` <-> `app_clone` (any case, as Oracle reads it), `"App"` <-> `"App_clone"`."""
        name = parse_name(username)
        suffix = len(CLONE_SUFFIX)
        if name.quoted:
            if name.stored.endswith(CLONE_SUFFIX) and len(name.stored) > suffix:
                return f'"{name.stored[:-suffix]}"'
            return self.clone_name(username)
        if username.upper().endswith(CLONE_SUFFIX.upper()) and len(username) > suffix:
            return username[:-suffix]
        return self.clone_name(username)

    def check_username(self, username: str, *, current: DatabaseSecret) -> None:
        name = parse_name(username)
        if len(name.stored.encode()) > self.max_username_bytes:
            raise SecretFormatError(
                f"User name {shown(username)} is longer than {self.max_username_bytes} bytes, Oracle's "
                f"limit: shorten {shown(current.username)} so that its clone name fits"
            )

    # -- passwords -----------------------------------------------------------------------------
    def password_policy(self) -> PasswordPolicy:
        """`"` ends a quoted password, so it is excluded whatever EXCLUDE_CHARACTERS says."""
        policy = super().password_policy()
        if policy.length > 1024:
            raise ConfigurationError("PASSWORD_LENGTH must be at most 1024 for Oracle (30 before 23ai)")
        if '"' not in policy.exclude_characters:
            policy = replace(policy, exclude_characters=policy.exclude_characters + '"')
        return policy

    def make_pending(self, ctx: RotationContext[DatabaseSecret]) -> DatabaseSecret:
        """Retry GetRandomPassword until the password suits common verify functions as far as
        knowable: it starts with a letter and holds neither the user name nor `oracle`."""
        pending = super().make_pending(ctx)
        for _ in range(_TRIES):
            if self._acceptable(pending.password, parse_name(pending.username).stored):
                return pending
            pending = pending.with_login(pending.username, self.store.random_password(self.password_policy()))
        raise ConfigurationError(
            f"GetRandomPassword gave no password Oracle verify functions accept in {_TRIES} tries "
            "(first character a letter, no user name, no 'oracle'): relax EXCLUDE_* settings"
        )

    @staticmethod
    def _acceptable(password: str, stored_name: str) -> bool:
        upper = password.upper()
        return (
            password[:1].isascii()
            and password[:1].isalpha()
            and quotable(password)
            and stored_name.upper() not in upper
            and stored_name.upper()[::-1] not in upper
            and "ORACLE" not in upper
        )

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[OracleSession]:
        login = parse_name(username)
        options = self.connect_options(secret)
        with self.login_errors(secret, username, password):
            conn = oracledb.connect(user=username, password=password, **options)
        try:
            yield OracleSession(conn, login, password, Server(server_version(conn.version)))
        finally:
            conn.close()

    def refused_login(self, exc: Exception) -> bool:
        return _code(exc) == _LOGIN_REFUSED

    def login_error(self, exc: Exception) -> str | None:
        if _code(exc) == _LOCKED:
            return "The account is locked: unlock it (ALTER USER ... ACCOUNT UNLOCK), then retry the rotation"
        if _code(exc) == _EXPIRED:
            return (
                "The password has expired: have an administrator set the AWSCURRENT value again, or "
                "rotate it through a master secret"
            )
        return None

    def error_text(self, exc: Exception) -> str:
        """The driver's words on one line, without its "Help:" link."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join(line for line in lines if not line.startswith("Help:"))

    def user_exists(self, exc: Exception) -> bool:
        return _code(exc) == _NAME_TAKEN  # a role of that name fails the same way the second time

    def error_hint(self, exc: Exception, login: DatabaseSecret | None) -> str:
        if login is None or tls_mode(login) is None or re.search(_CERTIFICATE, self.error_text(exc)):
            return ""
        return (
            "TCPS is on: if this port serves plain TCP, use the listener's TCPS port, 2484 on RDS with "
            'the SSL option, or put "ssl": false in the secret'
        )

    def connect_options(self, secret: DatabaseSecret) -> dict[str, Any]:
        """Keyword arguments of oracledb.connect() besides the login; nothing here opens a socket."""
        options: dict[str, Any] = {
            "host": secret.host,
            "port": secret.port,
            "service_name": secret.dbname,
            "tcp_connect_timeout": self.connect_timeout().seconds,
            "retry_count": 0,
            "program": "rotators",
        }
        context = ssl_context(secret)
        if context is None:
            return {**options, "protocol": "tcp"}
        # The driver matches the host name against the certificate itself (ssl_server_dn_match).
        match = tls_mode(secret) == "verify-full"
        return {**options, "protocol": "tcps", "ssl_context": context, "ssl_server_dn_match": match}

    # -- statements ----------------------------------------------------------------------------
    def set_password(self, conn: OracleSession, username: str, password: str) -> None:
        """A user changing its own password says REPLACE with the old one, which a profile with a
        verify function requires (ORA-28221 otherwise); a master needs no REPLACE."""
        name = self._checked(conn, username, password)
        statement = f"ALTER USER {quote(name.stored)} IDENTIFIED BY {quote_password(password)}"
        if name.stored == conn.login.stored:
            statement += f" REPLACE {quote_password(conn.password)}"
        self._execute(conn, [statement], password)

    def clone_user(self, conn: OracleSession, source: str, clone: str, password: str) -> None:
        """The clone gets the source's profile, tablespaces, system privileges, roles (and which
        are default) and object grants, read afresh every rotation; grants the source lost are
        revoked from the clone. The clone owns none of the source's objects."""
        original, copy = parse_name(source), self._checked(conn, clone, password)
        account = self._query(
            conn,
            "SELECT profile, default_tablespace, temporary_tablespace FROM dba_users WHERE username = :name",
            name=original.stored,
        )
        if not account:
            raise PasswordChangeError(
                f"Oracle has no user {shown(original.stored)} to clone: check 'username'"
            )
        profile, tablespace, temporary = account[0]
        exists = self._query(conn, "SELECT 1 FROM dba_users WHERE username = :name", name=copy.stored)
        wanted, held = self._privileges(conn, original.stored, copy.stored)
        user = quote(copy.stored)
        statements = [
            f"{'ALTER' if exists else 'CREATE'} USER {user} IDENTIFIED BY {quote_password(password)} "
            f"DEFAULT TABLESPACE {quote(tablespace)} TEMPORARY TABLESPACE {quote(temporary)} "
            f"PROFILE {quote(profile)}",
            *sync(user, wanted, held),
        ]
        self._execute(conn, statements, password)

    def server_name(self, conn: OracleSession) -> str:
        return str(conn.features)

    def change_privileges(self, conn: OracleSession, username: str, *, as_master: bool) -> str | None:
        """A user may change its own password (with REPLACE); a master needs ALTER USER and
        CREATE USER, and the DBA_ views to read the grants it copies."""
        if not as_master:
            return None
        try:
            found = self._query(
                conn, "SELECT 1 FROM dba_users WHERE username = :name", name=parse_name(username).stored
            )
            held = {row[0] for row in self._query(conn, _SESSION_PRIVS)}
        except RotationError as exc:
            return str(exc)
        missing = sorted({"ALTER USER", "CREATE USER"} - held)
        if not found:
            return f"Oracle has no user {parse_name(username).stored!r}"
        return f"the master user lacks {', '.join(missing)}" if missing else None

    def session_user(self, conn: OracleSession) -> str | None:
        rows = self._query(conn, "SELECT USER, 1 + 1 FROM dual")
        return str(rows[0][0]) if rows and rows[0][1] == 2 else None

    def session_name(self, username: str) -> str:
        return parse_name(username).stored

    # -- the master's safety rules ---------------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """Oracle's stored name: `admin`, `ADMIN` and `"ADMIN"` are one user."""
        return parse_name(username).stored

    def admin_power(self, conn: OracleSession, username: str) -> list[str]:
        """Administrative roles and privileges, held directly or through roles (one hierarchical
        query), anything WITH ADMIN OPTION, SYSDBA and the like, and proxy rights. What comes
        through an administrative role is not listed again."""
        name = parse_name(username).stored
        found = administrative(name, self._query(conn, ADMIN_POWER_SQL, name=name, grantee=name))
        found.update(self._account(conn, name)[0])
        return [f"{shown(username)} holds {', '.join(sorted(found))}"] if found else []

    def clone_mismatch(self, conn: OracleSession, source: str, clone: str) -> list[str]:
        """The rotator's clone holds the source's grants and nothing else: no grant the source
        lacks, no SYSDBA or proxy rights, no objects of its own."""
        original, copy = parse_name(source).stored, parse_name(clone).stored
        if not self._query(conn, "SELECT 1 FROM dba_users WHERE username = :name", name=copy):
            return []
        wanted, held = self._privileges(conn, original, copy)
        extra = beyond(held, wanted)
        powers, objects = self._account(conn, copy)
        found = [f"{shown(clone)} holds what {shown(source)} does not: {', '.join(extra)}"] if extra else []
        if powers:
            found.append(f"{shown(clone)} holds {', '.join(powers)}, which the rotator never grants")
        return found + ([f"{shown(clone)} owns {objects} objects"] if objects else [])

    def clone_lacks(self, conn: OracleSession, source: str, clone: str) -> list[str]:
        """Compared as grants (and SYSDBA, proxy rights), not as objects: the clone owns none."""
        original, copy = parse_name(source).stored, parse_name(clone).stored
        wanted, held = self._privileges(conn, original, copy)
        missing = beyond(wanted, held)
        powers = self._account(conn, copy)[0]
        missing += [power for power in self._account(conn, original)[0] if power not in powers]
        return [f"{shown(clone)} lacks what {shown(source)} holds: {', '.join(missing)}"] if missing else []

    def _account(self, conn: OracleSession, stored: str) -> tuple[list[str], int]:
        """SYSDBA and the like and proxy rights of one user, in words; how many objects it owns."""
        powers, objects = [], 0
        for kind, what in self._query(conn, ACCOUNT_SQL, name=stored, proxy=stored, owner=stored):
            if kind == "ADMINISTRATIVE":
                powers.append(str(what).strip())  # UNPIVOT's labels may come padded as CHAR
            elif kind == "PROXY":
                powers.append(f"proxy rights for {what!r}")
            else:
                objects = int(what)
        return sorted(powers), objects

    # -- plumbing ------------------------------------------------------------------------------
    def _privileges(self, conn: OracleSession, source: str, clone: str) -> tuple[Privileges, Privileges]:
        return read_privileges(partial(self._query, conn, source=source, clone=clone), source, clone)

    def _checked(self, conn: OracleSession, username: str, password: str) -> OracleName:
        """Both limits depend on the server's version, known only once connected."""
        name, features = parse_name(username), conn.features
        if len(name.stored.encode()) > features.max_name_bytes:
            raise SecretFormatError(
                f"User name {shown(username)} is longer than {features.max_name_bytes} bytes, the limit "
                f"of {features}: use a shorter user name"
            )
        if len(password.encode()) > features.max_password_bytes:
            raise ConfigurationError(
                f"The pending password is longer than {features.max_password_bytes} bytes, the limit of "
                f"{features}: set PASSWORD_LENGTH to at most {features.max_password_bytes}, cancel this "
                "rotation and start a new one"
            )
        return name

    def _query(self, conn: OracleSession, statement: str, **binds: str) -> list[tuple[Any, ...]]:
        subqueries = set(re.findall(r"\bWITH (\w+) AS", statement))
        views = [v for v in dict.fromkeys(re.findall(r"\bFROM ([\w$]+)", statement)) if v not in subqueries]
        with (
            self.statement_errors(what=f"a query of {', '.join(views)}", hint=_DICTIONARY_HINT),
            conn.conn.cursor() as cursor,
        ):
            cursor.execute(statement, binds)
            return list(cursor.fetchall())

    def _execute(self, conn: OracleSession, statements: Iterable[str], password: str) -> None:
        """DDL commits as it goes: a failure leaves earlier statements applied, and a retry of the
        step converges, since every statement list is computed from what the dictionary says."""
        secrets = [password, conn.password]
        with conn.conn.cursor() as cursor:
            for statement in statements:
                try:
                    cursor.execute(statement)
                except oracledb.Error as exc:
                    what = redact(statement.split(" IDENTIFIED BY ")[0], secrets)
                    hint = _HINTS.get(_code(exc), "")
                    raise self.statement_failure(exc, secrets, what=what, hint=hint) from None


def _code(exc: Exception) -> int:
    return getattr(exc.args[0], "code", 0) if exc.args else 0


handler = OracleRotator().handle
