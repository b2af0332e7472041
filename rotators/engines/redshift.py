"""Amazon Redshift (provisioned clusters and Serverless workgroups) with redshift-connector.

Handler: rotators.engines.redshift.handler. Redshift's SQL for users is PostgreSQL 8's, but its
users are not roles: there is no role membership or `SET ROLE` to lend a clone the original's
privileges, so the clone gets the original's groups, RBAC roles and object privileges copied.
redshift-connector has no identifier quoting of its own: names are quoted by the server's
`quote_ident()`, and passwords are literals only after they passed Redshift's password rules,
which exclude every character that could end or escape one.

Logins go through `GuardedConnection`, redshift-connector's own connection with one change: it
never answers a server's request for the password in clear text on a connection without TLS
(the driver has no option to refuse it). MD5 (salted hash) and Redshift's SHA-256 digest are
still answered over plaintext when the secret turns TLS off: neither sends the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import string
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from redshift_connector.core import Connection
from redshift_connector.cursor import Cursor
from redshift_connector.error import Error as DriverError
from redshift_connector.error import InterfaceError
from scramp import ScramMechanism  # type: ignore[import-untyped]

from rotators.database import DatabaseRotator, DatabaseSecret, LoginRefusedError, ca_bundle, tls_mode
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    PasswordChangeError,
    SecretFormatError,
    SecretTestError,
    redact,
    shown,
)
from rotators.log import logger
from rotators.rotation import RotationContext
from rotators.secrets import PasswordPolicy

# Redshift's password rules: 8 to 64 printable ASCII characters with an upper case letter, a
# lower case letter and a digit, and none of these.
FORBIDDEN_CHARACTERS = "'\"\\/@ "
MIN_LENGTH, MAX_LENGTH = 8, 64
_REFUSED_STATES = {"28P01", "28000"}  # invalid password; no such user or no pg_hba entry

# The object privileges a clone receives, where the original holds them by any route (its own
# grants, its groups, its roles, PUBLIC, or owning the object). Common to Redshift and PostgreSQL.
TABLE_PRIVILEGES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     (SELECT 'SELECT' AS privilege UNION ALL SELECT 'INSERT' UNION ALL SELECT 'UPDATE'
      UNION ALL SELECT 'DELETE' UNION ALL SELECT 'REFERENCES') p
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'
  AND has_table_privilege(%s, quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege)
  AND NOT has_table_privilege(%s, quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege)
ORDER BY 1, 2
"""
SCHEMA_PRIVILEGES = """
SELECT quote_ident(n.nspname), p.privilege
FROM pg_namespace n, (SELECT 'USAGE' AS privilege UNION ALL SELECT 'CREATE') p
WHERE n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'
  AND has_schema_privilege(%s, n.nspname, p.privilege)
  AND NOT has_schema_privilege(%s, n.nspname, p.privilege)
ORDER BY 1, 2
"""
DATABASE_PRIVILEGES = """
SELECT quote_ident(current_database()), p.privilege
FROM (SELECT 'CREATE' AS privilege UNION ALL SELECT 'TEMP') p
WHERE has_database_privilege(%s, current_database(), p.privilege)
  AND NOT has_database_privilege(%s, current_database(), p.privilege)
ORDER BY 1, 2
"""
GROUPS = (
    "SELECT quote_ident(g.groname) FROM pg_group g, pg_user u "
    "WHERE u.usename = %s AND u.usesysid = ANY(g.grolist) ORDER BY 1"
)
# Redshift only (RBAC, 2022): vanilla PostgreSQL has neither the view nor GRANT ROLE.
ROLES = "SELECT quote_ident(role_name), admin_option FROM svv_user_grants WHERE user_name = %s ORDER BY 1"
# The user attributes that carry power, as both Redshift's and PostgreSQL's pg_user show them.
# Redshift's CREATEUSER is its superuser.
USER_FLAGS = "SELECT usesuper, usecreatedb FROM pg_user WHERE usename = %s"
# Redshift only: what makes a role administrative. System roles that manage users or any schema
# (sys:monitor and sys:operator only watch and vacuum), and roles holding a system privilege that
# manages users, roles or other users' default privileges, or that bypasses row-level security.
ADMIN_SYSTEM_ROLES = ("sys:superuser", "sys:secadmin", "sys:dba")
ADMIN_PRIVILEGE_ROLES = """
SELECT DISTINCT identity_name FROM svv_system_privileges
WHERE identity_type = 'role' AND system_privilege IN ('CREATE USER', 'ALTER USER', 'DROP USER',
  'CREATE ROLE', 'DROP ROLE', 'ALTER DEFAULT PRIVILEGES', 'IGNORE RLS')
"""
DIRECT_ROLES = "SELECT role_name FROM svv_user_grants WHERE user_name = %s"
ROLE_GRANTS = "SELECT role_name, granted_role_name FROM svv_role_grants"
_CLEARTEXT_PASSWORD = 3  # AuthenticationCleartextPassword in PostgreSQL's (and Redshift's) protocol
_SHOWN = 8  # items named in a refusal; the rest are counted


class CleartextPasswordRefusedError(DatabaseUnavailableError):
    """The server asked for the password in clear text on a connection without TLS."""


class _AskedForCleartext(Exception):
    """Raised inside the driver's handshake; connect() turns it into the typed error."""


class GuardedConnection(Connection):
    """redshift-connector's connection, except that it does not send the password in clear text
    over a connection without TLS: whoever answers on the host and port (an impostor, when the
    secret turned TLS off) asks for it with one message, and the driver cannot be told to refuse.

    Constructed directly: `redshift_connector.connect()` adds only IAM and identity-provider
    logins, which the rotator does not use, and then calls this same constructor."""

    def handle_AUTHENTICATION_REQUEST(self, data: bytes, cursor: Cursor) -> None:
        (code,) = struct.unpack_from("!i", data)
        if code == _CLEARTEXT_PASSWORD and not isinstance(self._usock, ssl.SSLSocket):
            with suppress(OSError):
                self._sock.close()  # the file over the socket holds it open too
                self._usock.close()
            raise _AskedForCleartext
        super().handle_AUTHENTICATION_REQUEST(data, cursor)


def password_problems(password: str) -> list[str]:
    """What a password lacks to pass Redshift's rules; the password itself is never repeated."""
    problems = []
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        problems.append(f"{MIN_LENGTH} to {MAX_LENGTH} characters")
    for name, kind in (
        ("an upper case letter", string.ascii_uppercase),
        ("a lower case letter", string.ascii_lowercase),
        ("a digit", string.digits),
    ):
        if not any(char in kind for char in password):
            problems.append(name)
    if any(char in FORBIDDEN_CHARACTERS or not 33 <= ord(char) <= 126 for char in password):
        problems.append("only printable ASCII, without ' \" \\ / @ or space")
    return problems


def password_literal(password: str) -> str:
    """A password that passed the rules holds no quote or backslash, so quoting it is exact."""
    if problems := password_problems(password):
        raise SecretFormatError(
            f"The new password does not meet Redshift's rules (it needs {', '.join(problems)}): "
            "cancel this rotation and let createSecret generate the pending password"
        )
    return f"'{password}'"


def md5_password(password: str, stored_name: str) -> str:
    """Redshift's MD5 password string: 'md5' and the MD5 of the password followed by the user
    name as stored. Sent instead of the password, so no statement log holds the password."""
    return "md5" + hashlib.md5((password + stored_name).encode()).hexdigest()  # noqa: S324 - Redshift's scheme


def scram_verifier(password: str) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier (4096 iterations, random salt), made with scramp, the
    SCRAM library redshift-connector itself logs in with."""
    salt, stored_key, server_key, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(password)
    salt_text, stored_text, server_text = (
        base64.b64encode(part).decode() for part in (salt, stored_key, server_key)
    )
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored_text}:{server_text}"


class RedshiftRotator(DatabaseRotator[Connection]):
    kind = "redshift"
    engines = frozenset({"redshift", "redshift-serverless"})
    default_port = 5439
    default_dbname = "dev"
    max_username_bytes = 127

    # -- passwords Redshift accepts, and only those --------------------------------------------
    def password_policy(self) -> PasswordPolicy:
        policy = super().password_policy()
        if not MIN_LENGTH <= policy.length <= MAX_LENGTH:
            raise ConfigurationError(
                f"PASSWORD_LENGTH must be between {MIN_LENGTH} and {MAX_LENGTH} for Redshift"
            )
        if policy.exclude_uppercase or policy.exclude_lowercase or policy.exclude_numbers:
            raise ConfigurationError(
                "Redshift passwords need upper and lower case letters and digits: unset "
                "EXCLUDE_UPPERCASE, EXCLUDE_LOWERCASE and EXCLUDE_NUMBERS"
            )
        if not policy.require_each_included_type:
            raise ConfigurationError("REQUIRE_EACH_INCLUDED_TYPE must stay true for Redshift")
        missing = "".join(c for c in FORBIDDEN_CHARACTERS if c not in policy.exclude_characters)
        return replace(policy, exclude_characters=policy.exclude_characters + missing)

    def make_pending(self, ctx: RotationContext[DatabaseSecret]) -> DatabaseSecret:
        pending = super().make_pending(ctx)
        if problems := password_problems(pending.password):
            raise ConfigurationError(
                f"GetRandomPassword returned a password Redshift would refuse (it needs "
                f"{', '.join(problems)}): check PASSWORD_LENGTH and the EXCLUDE_* settings"
            )
        return pending

    # -- connections ----------------------------------------------------------------------------
    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Connection]:
        mode = tls_mode(secret)
        try:
            with _trusting(ca_bundle(secret) if mode else None):
                conn = GuardedConnection(
                    host=secret.host,
                    port=secret.port,
                    database=secret.dbname,
                    user=username,
                    password=password,
                    ssl=mode is not None,
                    # redshift-connector always checks the chain: `require` is served as verify-ca.
                    sslmode="verify-full" if mode == "verify-full" else "verify-ca",
                    timeout=self.connect_timeout().whole_seconds,
                    application_name="rotators",
                )
        except _AskedForCleartext:
            raise CleartextPasswordRefusedError(
                f"Did not log in as {shown(username)} at {secret.host}:{secret.port}: the server asked for "
                "the password in clear text on a connection without TLS, and nothing was sent. Check "
                'what answers there, and turn TLS on: remove "ssl": false (or sslmode disable) from '
                "the secret"
            ) from None
        except DriverError as exc:
            state, message = _state(exc), redact(_message(exc), [password])
            if state in _REFUSED_STATES:
                raise LoginRefusedError(f"Redshift refused the login of {shown(username)}") from None
            raise DatabaseUnavailableError(
                f"Cannot connect to Redshift at {secret.host}:{secret.port}: {message}"
            ) from None
        try:
            conn.autocommit = True  # Redshift runs some user DDL only outside a transaction block
            yield conn
        finally:
            with suppress(Exception):
                conn.close()

    # -- setSecret ------------------------------------------------------------------------------
    def set_password(self, conn: Connection, username: str, password: str) -> None:
        (user,) = self._idents(conn, username)
        literal = self._stored_form(conn, username, password)
        self._execute(conn, [f"ALTER USER {user} PASSWORD {literal}"], password)

    def clone_user(self, conn: Connection, source: str, clone: str, password: str) -> None:
        """Create (or update) `clone` and give it what `source` has: CREATEDB, its groups, its RBAC
        roles, and every table, schema and database privilege it holds by any route. Only adds: a
        privilege taken from the source later stays with the clone until revoked by hand. An
        existing clone's password changes last, so a failure leaves its old password working."""
        (user,) = self._idents(conn, clone)
        literal = self._stored_form(conn, clone, password)
        attributes = self._attributes(conn, clone)
        exists = attributes is not None
        if not exists:
            self._execute(conn, [f"CREATE USER {user} PASSWORD {literal}"], password)
        if "CREATEDB" in (self._attributes(conn, source) or set()) - (attributes or set()):
            self._execute(conn, [f"ALTER USER {user} CREATEDB"], password)
        in_groups = set(self._column(conn, GROUPS, clone))
        memberships = [
            f"ALTER GROUP {group} ADD USER {user}"
            for group in self._column(conn, GROUPS, source)
            if group not in in_groups
        ]
        if self._is_redshift(conn):
            held = {role for role, _ in self._rows(conn, ROLES, clone)}
            memberships += [
                f"GRANT ROLE {role} TO {user}" + (" WITH ADMIN OPTION" if admin else "")
                for role, admin in self._rows(conn, ROLES, source)
                if role not in held
            ]
        self._execute(conn, memberships, password)
        grants = [
            *self._grants(conn, TABLE_PRIVILEGES, "TABLE", source=source, clone=clone, user=user),
            *self._grants(conn, SCHEMA_PRIVILEGES, "SCHEMA", source=source, clone=clone, user=user),
            *self._grants(conn, DATABASE_PRIVILEGES, "DATABASE", source=source, clone=clone, user=user),
        ]
        self._execute(conn, grants, password)
        if exists:
            self._execute(conn, [f"ALTER USER {user} PASSWORD {literal}"], password)
        logger.info(
            f"{shown(clone)} {'updated' if exists else 'created'} with the groups, roles and privileges of "
            f"{shown(source)} ({len(memberships)} memberships, {len(grants)} grants added)"
        )

    # -- the master's safety rules ------------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """Redshift folds user names to lower case (unless case-sensitive identifiers are on, when
        this refuses more than it must): `Admin` is the master `admin`."""
        return username.lower()

    def admin_power(self, conn: Connection, username: str) -> list[str]:
        """Superuser (which Redshift's CREATEUSER makes a user), and on Redshift the RBAC roles,
        held directly or through other roles, that manage users, roles or every schema."""
        found = []
        if "SUPERUSER" in (self._attributes(conn, username) or set()):
            found.append(f"{shown(username)} is a superuser (CREATEUSER)")
        if self._is_redshift(conn):
            roles = self._admin_roles(conn, username)
            found += [f"{shown(username)} holds the administrative role {role!r}" for role in roles]
        return found

    def clone_mismatch(self, conn: Connection, source: str, clone: str) -> list[str]:
        """What the rotator makes of the source: a user with its groups, roles, privileges and
        CREATEDB, and nothing more. A clone with less is fine: clone_user adds what it lacks."""
        held = self._attributes(conn, clone)
        if held is None:
            return []
        extra = sorted(held - (self._attributes(conn, source) or set()))
        extra += self._beyond(conn, clone, source)
        return [f"{shown(clone)} holds what {shown(source)} does not: {_listed(extra)}"] if extra else []

    def clone_lacks(self, conn: Connection, source: str, clone: str) -> list[str]:
        """The clone holds a copy of what the source held when it was last refreshed; whatever the
        source holds beyond it (including what was granted to the source since) is named."""
        wanted, held = self._attributes(conn, source), self._attributes(conn, clone)
        if wanted is None or held is None:
            return [f"{shown(source)} or {shown(clone)} does not exist"]
        missing = sorted(wanted - held) + self._beyond(conn, source, clone)
        return [f"{shown(clone)} lacks what {shown(source)} holds: {_listed(missing)}"] if missing else []

    # -- testSecret -----------------------------------------------------------------------------
    def probe(self, conn: Connection, username: str) -> None:
        rows = self._rows(conn, "SELECT session_user, 1 + 1")
        if not rows or rows[0][0] != username or rows[0][1] != 2:
            raise SecretTestError(f"The test query did not run as {shown(username)}")

    # -- `rotators check` -----------------------------------------------------------------------
    def change_privileges(self, conn: Connection, username: str, *, as_master: bool) -> str | None:
        """Any user may change its own password; creating the clone and granting it the
        original's privileges takes a superuser (Redshift's admin user is one)."""
        if not self._rows(conn, "SELECT 1 FROM pg_user WHERE usename = %s", username):
            return f"user {shown(username)} does not exist"
        if not as_master:
            return None
        rows = self._rows(conn, "SELECT usesuper FROM pg_user WHERE usename = current_user")
        return (
            None if rows and rows[0][0] else "the master user is not a superuser (ALTER USER ... CREATEUSER)"
        )

    # -- helpers --------------------------------------------------------------------------------
    def _grants(
        self, conn: Connection, query: str, kind: str, *, source: str, clone: str, user: str
    ) -> list[str]:
        """One GRANT per object, for what the source holds there and the clone does not."""
        missing: dict[str, list[str]] = {}
        for name, privilege in self._rows(conn, query, source, clone):
            missing.setdefault(name, []).append(privilege)
        return [
            f"GRANT {', '.join(privileges)} ON {kind} {name} TO {user}"
            for name, privileges in missing.items()
        ]

    def _attributes(self, conn: Connection, username: str) -> set[str] | None:
        """SUPERUSER and CREATEDB, as far as the user has them; None when there is no such user."""
        rows = self._rows(conn, USER_FLAGS, username)
        if not rows:
            return None
        return {name for name, flag in zip(("SUPERUSER", "CREATEDB"), rows[0], strict=True) if flag}

    def _beyond(self, conn: Connection, holder: str, other: str) -> list[str]:
        """What `holder` has that `other` does not, in words: groups, RBAC roles (with ADMIN
        OPTION), and table, schema and database privileges held by any route."""
        their_groups = set(self._column(conn, GROUPS, other))
        found = [
            f"group {group}" for group in self._column(conn, GROUPS, holder) if group not in their_groups
        ]
        if self._is_redshift(conn):
            their_roles = {str(role): bool(admin) for role, admin in self._rows(conn, ROLES, other)}
            found += [
                f"role {role}" + (" WITH ADMIN OPTION" if admin else "")
                for role, admin in self._rows(conn, ROLES, holder)
                if role not in their_roles or (admin and not their_roles[role])
            ]
        for query, kind in (
            (TABLE_PRIVILEGES, "TABLE"),
            (SCHEMA_PRIVILEGES, "SCHEMA"),
            (DATABASE_PRIVILEGES, "DATABASE"),
        ):
            found += [
                f"{privilege} ON {kind} {name}" for name, privilege in self._rows(conn, query, holder, other)
            ]
        return found

    def _admin_roles(self, conn: Connection, username: str) -> list[str]:
        """The administrative roles among those `username` holds, following roles granted to roles."""
        admin = set(ADMIN_SYSTEM_ROLES) | set(self._column(conn, ADMIN_PRIVILEGE_ROLES))
        granted: dict[str, list[str]] = {}
        for role, granted_role in self._rows(conn, ROLE_GRANTS):
            granted.setdefault(str(role), []).append(str(granted_role))
        held, todo = set(), self._column(conn, DIRECT_ROLES, username)
        while todo:
            role = todo.pop()
            if role not in held:
                held.add(role)
                todo += granted.get(role, [])
        return sorted(held & admin)

    def _stored_form(self, conn: Connection, username: str, password: str) -> str:
        """The password as the server stores it, quoted: what STL_QUERY and any statement log
        see. Redshift gets its documented MD5 form, salted with the user name as Redshift stores
        it (folded to lower case unless enable_case_sensitive_identifier is on), which is also
        what it stores for a clear password. Any other server (PostgreSQL, where the tests run
        this engine) gets a SCRAM-SHA-256 verifier, as its own password_encryption would make."""
        password_literal(password)  # Redshift's rules, checked on the password itself
        if not self._is_redshift(conn):
            return f"'{scram_verifier(password)}'"
        sensitive = str(self._rows(conn, "SELECT current_setting('enable_case_sensitive_identifier')")[0][0])
        stored = username if sensitive.lower() in ("on", "true") else username.lower()
        return f"'{md5_password(password, stored)}'"

    def _idents(self, conn: Connection, *names: str) -> list[str]:
        """Identifiers quoted by the server's own quote_ident()."""
        row = self._rows(conn, "SELECT " + ", ".join(["quote_ident(%s)"] * len(names)), *names)[0]
        return [str(value) for value in row]

    def _is_redshift(self, conn: Connection) -> bool:
        return "Redshift" in str(self._rows(conn, "SELECT version()")[0][0])

    def _column(self, conn: Connection, query: str, *args: Any) -> list[str]:
        return [str(row[0]) for row in self._rows(conn, query, *args)]

    @staticmethod
    def _rows(conn: Connection, query: str, *args: Any) -> list[Sequence[Any]]:
        cursor = conn.cursor()
        try:
            cursor.execute(query, args or None)
            return list(cursor.fetchall() or [])
        except DriverError as exc:
            raise _change_error(exc, "") from None
        finally:
            cursor.close()

    @staticmethod
    def _execute(conn: Connection, statements: Sequence[str], password: str) -> None:
        cursor = conn.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        except DriverError as exc:
            raise _change_error(exc, password) from None
        finally:
            cursor.close()


def _listed(items: Sequence[str]) -> str:
    """The first few items, and how many more: a superuser clone holds every privilege there is."""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


@contextmanager
def _trusting(bundle: str | None) -> Iterator[None]:
    """redshift-connector trusts the system store and its bundled Redshift CAs, and takes no CA
    file; OpenSSL reads SSL_CERT_FILE while it connects, so a configured bundle joins there."""
    if bundle is None:
        yield
        return
    if not os.path.isfile(bundle):
        raise ConfigurationError(
            f"The CA bundle {bundle!r} does not exist: fix 'sslrootcert' or ROTATORS_CA_BUNDLE"
        )
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = bundle
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


def _fields(exc: BaseException) -> dict[str, Any]:
    """redshift-connector puts the server's error fields (S, C, M, ...) in a dict."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}


def _state(exc: BaseException) -> str | None:
    return _fields(exc).get("C")


def _message(exc: BaseException) -> str:
    fields = _fields(exc)
    if fields:
        return str(fields.get("M", ""))
    return " ".join(str(arg) for arg in exc.args) or type(exc).__name__


def _change_error(exc: BaseException, password: str) -> DatabaseUnavailableError | PasswordChangeError:
    message = redact(_message(exc), [password]).strip()
    if isinstance(exc, InterfaceError):  # no server error: the connection itself failed
        return DatabaseUnavailableError(f"Lost the connection to Redshift: {message}")
    return PasswordChangeError(f"Redshift refused the change ({_state(exc)}): {message}")


handler = RedshiftRotator().handle
