"""Oracle (RDS for Oracle, self-managed) with python-oracledb in thin mode: no Instant Client.
Handler: rotators.engines.oracle.handler.

`ALTER USER ... IDENTIFIED BY` cannot bind its user name or password, so both are checked
against Oracle's rules and quoted here; every other value (dictionary lookups) is a bind.
A user name in the secret is spelled as for SQL*Plus or the driver: `app` is the user APP,
`"App"` the case-sensitive user App.
"""

from __future__ import annotations

import re
import ssl
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import oracledb

from rotators.database import (
    CLONE_SUFFIX,
    DatabaseRotator,
    DatabaseSecret,
    LoginRefusedError,
    ca_bundle,
    tls_mode,
)
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    LoginError,
    PasswordChangeError,
    RotationError,
    SecretFormatError,
    SecretTestError,
    redact,
    shown,
)
from rotators.rotation import RotationContext
from rotators.secrets import PasswordPolicy

_NONQUOTED = re.compile(r"[A-Za-z][A-Za-z0-9_$#]*\Z")
_KEYWORDS = re.compile(r"[A-Z]+( [A-Z]+)*\Z")  # privilege names come from the dictionary; check anyway
# Object types whose GRANT names the object without an owner, or with a keyword before it.
_UNOWNED_TYPES = frozenset({"DIRECTORY", "EDITION", "USER"})
_KEYWORD_TYPES = frozenset({"JAVA SOURCE", "JAVA RESOURCE", "MINING MODEL", "SQL TRANSLATION PROFILE"})
_LOGIN_REFUSED, _LOCKED, _EXPIRED = 1017, 28000, 28001
_HINTS = {
    1031: "the master user lacks a privilege for this (ALTER USER, CREATE USER, or the grant WITH "
    "ADMIN/GRANT OPTION)",
    1920: "that name is already taken by a role: rename the user or the role",
    28003: "the profile's password verify function refused the generated password: align "
    "PASSWORD_LENGTH and EXCLUDE_* with its rules, then start a new rotation",
    28007: "the profile forbids reusing this password: start a new rotation for another one",
    972: "the name is longer than this database accepts (COMPATIBLE below 12.2 keeps 30 bytes)",
}
_TRIES = 10
_SESSION_PRIVS = "SELECT privilege FROM session_privs WHERE privilege IN ('ALTER USER', 'CREATE USER')"
_SYS_PRIVS = "SELECT grantee, privilege, admin_option FROM dba_sys_privs WHERE grantee IN (:source, :clone)"
_ROLE_PRIVS = (
    "SELECT grantee, granted_role, admin_option, default_role FROM dba_role_privs "
    "WHERE grantee IN (:source, :clone)"
)
_TAB_PRIVS = (
    "SELECT grantee, owner, table_name, privilege, grantable, type FROM dba_tab_privs "
    "WHERE grantee IN (:source, :clone)"
)
_COL_PRIVS = (
    "SELECT grantee, owner, table_name, column_name, privilege, grantable FROM dba_col_privs "
    "WHERE grantee IN (:source, :clone)"
)
# Every role a user holds, directly or through other roles, and every system privilege of the
# user and of those roles: (kind, role or privilege, admin option, the grantee that holds it).
ADMIN_POWER_SQL = """WITH held_roles AS (
  SELECT DISTINCT grantee, granted_role, admin_option FROM dba_role_privs
  START WITH grantee = :name CONNECT BY NOCYCLE PRIOR granted_role = grantee
)
SELECT 'ROLE', granted_role, admin_option, grantee FROM held_roles
UNION ALL
SELECT 'PRIVILEGE', privilege, admin_option, grantee FROM dba_sys_privs
WHERE grantee = :grantee OR grantee IN (SELECT granted_role FROM held_roles)"""
# What a user has besides grants: administrative privileges (only in the password file), proxy
# rights to log in as other users, and objects of its own. Rows: (kind, what).
ACCOUNT_SQL = """SELECT 'ADMINISTRATIVE', privilege FROM v$pwfile_users
UNPIVOT (held FOR privilege IN (sysdba AS 'SYSDBA', sysoper AS 'SYSOPER', sysasm AS 'SYSASM',
  sysbackup AS 'SYSBACKUP', sysdg AS 'SYSDG', syskm AS 'SYSKM'))
WHERE username = :name AND held = 'TRUE'
UNION ALL
SELECT 'PROXY', client FROM dba_proxies WHERE proxy = :proxy
UNION ALL
SELECT 'OBJECTS', TO_CHAR(COUNT(*)) FROM dba_objects WHERE owner = :owner HAVING COUNT(*) > 0"""
# System privileges that administer users, grants or the server, or that run code with another
# user's rights (a known way to all of those). Held WITH ADMIN OPTION, any privilege counts too.
ADMIN_PRIVILEGES = frozenset({
    "ALTER USER", "CREATE USER", "DROP USER", "BECOME USER", "INHERIT ANY PRIVILEGES",
    "GRANT ANY PRIVILEGE", "GRANT ANY ROLE", "GRANT ANY OBJECT PRIVILEGE", "ALTER ANY ROLE",
    "DROP ANY ROLE", "ALTER SYSTEM", "ALTER DATABASE", "ADMINISTER DATABASE TRIGGER",
    "SYSDBA", "SYSOPER", "SYSASM", "SYSBACKUP", "SYSDG", "SYSKM", "SELECT ANY DICTIONARY",
    "CREATE ANY PROCEDURE", "ALTER ANY PROCEDURE", "EXECUTE ANY PROCEDURE", "CREATE ANY TRIGGER",
    "CREATE ANY JOB", "CREATE EXTERNAL JOB", "CREATE ANY DIRECTORY",
})  # fmt: skip
# Roles that administer the database (RDS_MASTER_ROLE only where RDS made it).
ADMIN_ROLES = frozenset({
    "DBA", "IMP_FULL_DATABASE", "EXP_FULL_DATABASE", "DATAPUMP_IMP_FULL_DATABASE",
    "DATAPUMP_EXP_FULL_DATABASE", "RDS_MASTER_ROLE",
})  # fmt: skip


@dataclass(frozen=True)
class OracleName:
    """A user name as the secret spells it and as the dictionary stores it."""

    spelled: str
    stored: str

    @property
    def quoted(self) -> bool:
        return self.spelled.startswith('"')


def _quotable(text: str) -> bool:
    return bool(text) and '"' not in text and not any(unicodedata.category(c) == "Cc" for c in text)


def parse_name(spelled: str) -> OracleName:
    """`app` is APP (a nonquoted identifier); `"App"` is App exactly. Anything else is refused."""
    if len(spelled) >= 2 and spelled[0] == spelled[-1] == '"':
        if not _quotable(spelled[1:-1]):
            raise SecretFormatError(
                f"User name {shown(spelled)} cannot be quoted for Oracle: a quoted name holds no double "
                "quote and no control character"
            )
        return OracleName(spelled, spelled[1:-1])
    if not _NONQUOTED.match(spelled):
        raise SecretFormatError(
            f"User name {shown(spelled)} is not a nonquoted Oracle identifier (a letter, then letters, "
            "digits, _ $ #): write it in double quotes exactly as Oracle stores it, e.g. "
            f'"\\"{spelled.upper()}\\"" in the JSON'
        )
    return OracleName(spelled, spelled.upper())


def quote(identifier: str) -> str:
    """A quoted identifier; Oracle has no escape for `"` inside one, so such names are refused."""
    if not _quotable(identifier):
        raise PasswordChangeError(f"{shown(identifier)} cannot be quoted as an Oracle identifier")
    return f'"{identifier}"'


def quote_password(password: str) -> str:
    if not _quotable(password):
        raise ConfigurationError(
            'An Oracle password cannot hold a double quote or a control character: keep " in '
            "EXCLUDE_CHARACTERS (it always is for generated passwords) and fix the stored one"
        )
    return f'"{password}"'


def server_version(text: str) -> tuple[int, int]:
    major, minor = [*(int(p) for p in re.findall(r"\d+", text)[:2]), 0, 0][:2]
    return major, minor


@dataclass(frozen=True)
class OracleSession:
    """A connection, who logged in (with which password, for REPLACE) and the server's version."""

    conn: Any
    login: OracleName
    password: str = field(repr=False)
    version: tuple[int, int]

    @property
    def max_name_bytes(self) -> int:
        return 128 if self.version >= (12, 2) else 30

    @property
    def max_password_bytes(self) -> int:
        return 1024 if self.version >= (23, 0) else 30


class Grant(NamedTuple):
    """One privilege as GRANT and REVOKE need it: `what` and `on` are already SQL."""

    what: str
    on: str | None
    option: bool  # WITH ADMIN OPTION (system privileges, roles) or WITH GRANT OPTION (objects)
    admin: bool  # which of the two


@dataclass
class Privileges:
    """A user's grants as read from DBA_SYS_PRIVS, DBA_ROLE_PRIVS, DBA_TAB_PRIVS and DBA_COL_PRIVS."""

    grants: set[Grant] = field(default_factory=set)
    columns: dict[tuple[str, str], set[tuple[str, bool]]] = field(default_factory=lambda: defaultdict(set))
    roles: dict[str, bool] = field(default_factory=dict)  # role -> is a default role


class OracleRotator(DatabaseRotator[OracleSession]):
    kind = "oracle"
    engines = frozenset({"oracle"})
    default_port = 1521
    default_dbname = "ORCL"
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
            and _quotable(password)
            and stored_name.upper() not in upper
            and stored_name.upper()[::-1] not in upper
            and "ORACLE" not in upper
        )

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[OracleSession]:
        login = parse_name(username)
        options = self.connect_options(secret)
        try:
            conn = oracledb.connect(user=username, password=password, **options)
        except oracledb.Error as exc:
            code = getattr(exc.args[0], "code", 0) if exc.args else 0
            if code == _LOGIN_REFUSED:
                raise LoginRefusedError(f"Oracle refused the login of {shown(username)}") from None
            if code == _LOCKED:
                raise LoginError(
                    f"Oracle account {shown(username)} is locked (ORA-28000): unlock it with ALTER USER "
                    "... ACCOUNT UNLOCK, then retry the rotation"
                ) from None
            if code == _EXPIRED:
                raise LoginError(
                    f"The password of {shown(username)} has expired (ORA-28001): have an administrator "
                    "set the AWSCURRENT value again, or rotate it through a master secret"
                ) from None
            message = _message(exc, [password])
            hint = ""
            if options["protocol"] == "tcps" and not re.search(r"certificate|DN|host ?name", message):
                hint = (
                    " (TCPS is on: if this port serves plain TCP, use the listener's TCPS port, 2484 "
                    'on RDS with the SSL option, or put "ssl": false in the secret)'
                )
            raise DatabaseUnavailableError(
                f"Cannot connect to Oracle at {secret.host}:{secret.port}/{secret.dbname}: {message}{hint}"
            ) from None
        try:
            yield OracleSession(conn, login, password, server_version(conn.version))
        finally:
            conn.close()

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
        mode = tls_mode(secret)
        if mode is None:
            return {**options, "protocol": "tcp"}
        if mode == "require":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            bundle = ca_bundle(secret)
            try:
                context = ssl.create_default_context(cafile=bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"The CA bundle {bundle!r} cannot be read ({type(exc).__name__}): fix 'sslrootcert' "
                    "in the secret or ROTATORS_CA_BUNDLE"
                ) from None
        # The driver matches the host name against the certificate itself (ssl_server_dn_match).
        return {
            **options,
            "protocol": "tcps",
            "ssl_context": context,
            "ssl_server_dn_match": mode == "verify-full",
        }

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
            *self._sync(user, wanted, held),
        ]
        self._execute(conn, statements, password)

    def transport(self, conn: OracleSession, secret: DatabaseSecret) -> str:
        mode = tls_mode(secret)
        if mode is None:
            return "plain TCP, as the secret asks"
        verified = "certificate verified" if mode.startswith("verify") else "certificate NOT verified"
        return f"TCPS (sslmode={mode}, {verified}), Oracle {conn.version[0]}.{conn.version[1]}"

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

    def probe(self, conn: OracleSession, username: str) -> None:
        row = self._query(conn, "SELECT USER, 1 + 1 FROM dual")
        if not row or row[0][0] != parse_name(username).stored or row[0][1] != 2:
            raise SecretTestError(f"The test query did not run as {shown(username)}")

    # -- the master's safety rules ---------------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """Oracle's stored name: `admin`, `ADMIN` and `"ADMIN"` are one user."""
        return parse_name(username).stored

    def admin_power(self, conn: OracleSession, username: str) -> list[str]:
        """Administrative roles and privileges, held directly or through roles (one hierarchical
        query), anything WITH ADMIN OPTION, SYSDBA and the like, and proxy rights. What comes
        through an administrative role is not listed again."""
        name = parse_name(username).stored
        rows = self._query(conn, ADMIN_POWER_SQL, name=name, grantee=name)
        edges = [(grantee, role) for kind, role, _, grantee in rows if kind == "ROLE"]
        named = {name}  # holders reached without passing through an administrative role
        while grown := {r for g, r in edges if g in named and r not in ADMIN_ROLES} - named:
            named |= grown
        found = set()
        for kind, what, admin, grantee in rows:
            is_admin = admin == "YES" or what in (ADMIN_ROLES if kind == "ROLE" else ADMIN_PRIVILEGES)
            if not is_admin or grantee not in named:  # else the administrative role names it
                continue
            text = f"role {what}" if kind == "ROLE" else str(what)
            text += " WITH ADMIN OPTION" if admin == "YES" else ""
            found.add(text + (f" (through role {grantee})" if grantee != name else ""))
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

    # -- the clone's grants --------------------------------------------------------------------
    def _privileges(self, conn: OracleSession, source: str, clone: str) -> tuple[Privileges, Privileges]:
        found = {source: Privileges(), clone: Privileges()}
        names = {"source": source, "clone": clone}
        for grantee, privilege, admin in self._query(conn, _SYS_PRIVS, **names):
            found[grantee].grants.add(Grant(_keyword(privilege), None, admin == "YES", True))
        for grantee, role, admin, default in self._query(conn, _ROLE_PRIVS, **names):
            found[grantee].grants.add(Grant(quote(role), None, admin == "YES", True))
            found[grantee].roles[role] = default == "YES"
        for grantee, owner, name, privilege, grantable, kind in self._query(conn, _TAB_PRIVS, **names):
            on = _object(owner, name, kind)
            found[grantee].grants.add(Grant(_keyword(privilege), on, grantable == "YES", False))
        for grantee, owner, name, column, privilege, grantable in self._query(conn, _COL_PRIVS, **names):
            key = (_keyword(privilege), f"{quote(owner)}.{quote(name)}")
            found[grantee].columns[key].add((column, grantable == "YES"))
        return found[source], found[clone]

    @staticmethod
    def _sync(user: str, wanted: Privileges, held: Privileges) -> list[str]:
        """REVOKE what the clone holds beyond the source, then GRANT what it lacks. A column
        privilege can only be revoked for the whole table, so a changed set is granted anew."""
        revoke_columns = {k for k in held.columns if held.columns[k] != wanted.columns.get(k, set())}
        # revoking a column privilege on a table also revokes that privilege on the whole table
        held_grants = {g for g in held.grants if g.admin or (g.what, g.on) not in revoke_columns}
        revokes = sorted(held_grants - wanted.grants, key=_order) + [
            Grant(what, on, option=False, admin=False) for what, on in sorted(revoke_columns)
        ]
        statements = [
            f"REVOKE {g.what} ON {g.on} FROM {user}" if g.on else f"REVOKE {g.what} FROM {user}"
            for g in revokes
        ]
        for grant in sorted(wanted.grants - held_grants, key=_order):
            target = f" ON {grant.on}" if grant.on else ""
            option = (" WITH ADMIN OPTION" if grant.admin else " WITH GRANT OPTION") if grant.option else ""
            statements.append(f"GRANT {grant.what}{target} TO {user}{option}")
        for (what, on), columns in sorted(wanted.columns.items()):
            if (what, on) in held.columns and (what, on) not in revoke_columns:
                continue
            for grantable in (False, True):
                chosen = sorted(c for c, g in columns if g == grantable)
                if chosen:
                    listed = ", ".join(quote(c) for c in chosen)
                    option = " WITH GRANT OPTION" if grantable else ""
                    statements.append(f"GRANT {what} ({listed}) ON {on} TO {user}{option}")
        if wanted.roles:
            defaults = sorted(r for r, is_default in wanted.roles.items() if is_default)
            if len(defaults) == len(wanted.roles):
                statements.append(f"ALTER USER {user} DEFAULT ROLE ALL")
            elif not defaults:
                statements.append(f"ALTER USER {user} DEFAULT ROLE NONE")
            else:
                statements.append(f"ALTER USER {user} DEFAULT ROLE {', '.join(quote(r) for r in defaults)}")
        return statements

    # -- plumbing ------------------------------------------------------------------------------
    def _checked(self, conn: OracleSession, username: str, password: str) -> OracleName:
        """Both limits depend on the server's version, known only once connected."""
        name = parse_name(username)
        if len(name.stored.encode()) > conn.max_name_bytes:
            raise SecretFormatError(
                f"User name {shown(username)} is longer than {conn.max_name_bytes} bytes, the limit of "
                f"Oracle {conn.version[0]}.{conn.version[1]}: use a shorter user name"
            )
        if len(password.encode()) > conn.max_password_bytes:
            raise ConfigurationError(
                f"The pending password is longer than {conn.max_password_bytes} bytes, the limit of "
                f"Oracle {conn.version[0]}.{conn.version[1]}: set PASSWORD_LENGTH to at most "
                f"{conn.max_password_bytes}, cancel this rotation and start a new one"
            )
        return name

    @staticmethod
    def _query(conn: OracleSession, statement: str, **binds: str) -> list[tuple[Any, ...]]:
        try:
            with conn.conn.cursor() as cursor:
                cursor.execute(statement, binds)
                return list(cursor.fetchall())
        except oracledb.Error as exc:
            subqueries = set(re.findall(r"\bWITH (\w+) AS", statement))
            views = ", ".join(
                v for v in dict.fromkeys(re.findall(r"\bFROM ([\w$]+)", statement)) if v not in subqueries
            )
            raise PasswordChangeError(
                f"Oracle refused a query of {views}: {_message(exc, [])}; the master user needs SELECT "
                "on the DBA_ views and V$PWFILE_USERS (SELECT_CATALOG_ROLE)"
            ) from None

    @staticmethod
    def _execute(conn: OracleSession, statements: Iterable[str], password: str) -> None:
        """DDL commits as it goes: a failure leaves earlier statements applied, and a retry of the
        step converges, since every statement list is computed from what the dictionary says."""
        secrets = [password, conn.password]
        with conn.conn.cursor() as cursor:
            for statement in statements:
                try:
                    cursor.execute(statement)
                except oracledb.Error as exc:
                    error = exc.args[0] if exc.args else None
                    hint = _HINTS.get(getattr(error, "code", 0), "")
                    shown = statement.split(" IDENTIFIED BY ")[0]
                    raise PasswordChangeError(
                        f"Oracle refused {redact(shown, secrets)}: {_message(exc, secrets)}"
                        + (f"; {hint}" if hint else "")
                    ) from None


def _message(exc: Exception, secrets: list[str]) -> str:
    """The driver's words on one line, without its "Help:" link, and never a password."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Help:")]
    return redact(" ".join(lines), secrets)


def beyond(held: Privileges, other: Privileges) -> list[str]:
    """What `held` grants that `other` does not, in words. A grant WITH ADMIN/GRANT OPTION covers
    the same grant without it; a table-wide object privilege covers its columns."""
    granted = {(g.what, g.on, g.admin) for g in other.grants}
    with_option = {(g.what, g.on, g.admin) for g in other.grants if g.option}
    found = [
        _grant_text(g)
        for g in sorted(held.grants, key=_order)
        if (g.what, g.on, g.admin) not in (with_option if g.option else granted)
    ]
    for (what, on), columns in sorted(held.columns.items()):
        theirs = other.columns.get((what, on), set())
        for column, grantable in sorted(columns):
            table_wide = (what, on, False) in (with_option if grantable else granted)
            if table_wide or (column, True) in theirs or (column, grantable) in theirs:
                continue
            found.append(f"{what} ({quote(column)}) ON {on}" + (" WITH GRANT OPTION" if grantable else ""))
    return found


def _grant_text(grant: Grant) -> str:
    text = f"role {grant.what[1:-1]}" if grant.what.startswith('"') else grant.what
    text += f" ON {grant.on}" if grant.on else ""
    if grant.option:
        text += " WITH ADMIN OPTION" if grant.admin else " WITH GRANT OPTION"
    return text


def _order(grant: Grant) -> tuple[int, str, str, bool]:
    """System privileges, then roles, then object grants, each by name."""
    rank = 2 if grant.on is not None else 1 if grant.what.startswith('"') else 0
    return (rank, grant.on or "", grant.what, grant.option)


def _keyword(privilege: str) -> str:
    if not _KEYWORDS.match(privilege):
        raise PasswordChangeError(f"Unexpected privilege name {privilege!r} in the Oracle dictionary")
    return privilege


def _object(owner: str, name: str, kind: str | None) -> str:
    if kind in _UNOWNED_TYPES:
        return f"{kind} {quote(name)}"
    if kind in _KEYWORD_TYPES:
        return f"{kind} {quote(owner)}.{quote(name)}"
    return f"{quote(owner)}.{quote(name)}"


handler = OracleRotator().handle
