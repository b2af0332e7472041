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

import os
import ssl
import struct
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

from redshift_connector.core import Connection
from redshift_connector.cursor import Cursor
from redshift_connector.error import Error as DriverError
from redshift_connector.error import InterfaceError

from rotators.database import DatabaseRotator, DatabaseSecret, address, ca_bundle, tls_mode
from rotators.engines import BY_NAME
from rotators.engines import redshift_sql as sql
from rotators.engines.redshift_sql import md5_password, password_problems
from rotators.errors import ConfigurationError, DatabaseUnavailableError, shown
from rotators.log import logger
from rotators.rotation import RotationContext
from rotators.secrets import PasswordPolicy

_REFUSED_STATES = {"28P01", "28000"}  # invalid password; no such user or no pg_hba entry
# CREATE USER of a user that exists; the unique violation when another session's CREATE USER of
# the same name commits while this one runs.
_USER_EXISTS = {"42710", "23505"}
_CLEARTEXT_PASSWORD = 3  # AuthenticationCleartextPassword in PostgreSQL's (and Redshift's) protocol
_SHOWN = 8  # items named in a refusal; the rest are counted


class CleartextPasswordRefusedError(DatabaseUnavailableError):
    """The server asked for the password in clear text on a connection without TLS."""


class _AskedForCleartext(Exception):
    """Raised inside the driver's handshake; connect() turns it into the typed error."""


@dataclass(frozen=True)
class Server:
    """The features of a session: Redshift, or the PostgreSQL the tests run this engine on (no
    RBAC roles, SCRAM instead of MD5). Read once per session, when first asked."""

    is_redshift: bool


class GuardedConnection(Connection):
    """redshift-connector's connection, except that it does not send the password in clear text
    over a connection without TLS: whoever answers on the host and port (an impostor, when the
    secret turned TLS off) asks for it with one message, and the driver cannot be told to refuse.

    Constructed directly: `redshift_connector.connect()` adds only IAM and identity-provider
    logins, which the rotator does not use, and then calls this same constructor."""

    features: Server | None = None  # see RedshiftRotator.features

    def handle_AUTHENTICATION_REQUEST(self, data: bytes, cursor: Cursor) -> None:
        (code,) = struct.unpack_from("!i", data)
        if code == _CLEARTEXT_PASSWORD and not isinstance(self._usock, ssl.SSLSocket):
            with suppress(OSError):
                self._sock.close()  # the file over the socket holds it open too
                self._usock.close()
            raise _AskedForCleartext
        super().handle_AUTHENTICATION_REQUEST(data, cursor)


class RedshiftRotator(DatabaseRotator[GuardedConnection]):
    engine = BY_NAME["redshift"]  # kind, label, secret engines, default port and dbname
    driver_errors = (DriverError,)
    max_username_bytes = 127

    # -- passwords Redshift accepts, and only those --------------------------------------------
    def password_policy(self) -> PasswordPolicy:
        policy = super().password_policy()
        if not sql.MIN_LENGTH <= policy.length <= sql.MAX_LENGTH:
            raise ConfigurationError(
                f"PASSWORD_LENGTH must be between {sql.MIN_LENGTH} and {sql.MAX_LENGTH} for Redshift"
            )
        if policy.exclude_uppercase or policy.exclude_lowercase or policy.exclude_numbers:
            raise ConfigurationError(
                "Redshift passwords need upper and lower case letters and digits: unset "
                "EXCLUDE_UPPERCASE, EXCLUDE_LOWERCASE and EXCLUDE_NUMBERS"
            )
        if not policy.require_each_included_type:
            raise ConfigurationError("REQUIRE_EACH_INCLUDED_TYPE must stay true for Redshift")
        missing = "".join(c for c in sql.FORBIDDEN_CHARACTERS if c not in policy.exclude_characters)
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
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[GuardedConnection]:
        mode = tls_mode(secret)
        try:
            with (
                self.login_errors(secret, username, password),
                _trusting(ca_bundle(secret).path if mode else None),
            ):
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
                f"Did not log in as {shown(username)} at {address(secret)}: the server asked for the "
                "password in clear text on a connection without TLS, and nothing was sent. Check what "
                'answers there, and turn TLS on: remove "ssl": false (or sslmode disable) from the secret'
            ) from None
        try:
            conn.autocommit = True  # Redshift runs some user DDL only outside a transaction block
            yield conn
        finally:
            with suppress(Exception):
                conn.close()

    def refused_login(self, exc: Exception) -> bool:
        return _fields(exc).get("C") in _REFUSED_STATES

    def lost_connection(self, exc: Exception) -> bool:
        return isinstance(exc, InterfaceError)  # no server error: the connection itself failed

    def user_exists(self, exc: Exception) -> bool:
        return _fields(exc).get("C") in _USER_EXISTS

    def error_text(self, exc: Exception) -> str:
        fields = _fields(exc)
        if not fields:
            return " ".join(str(arg) for arg in exc.args) or type(exc).__name__
        return f"{fields.get('M', '')} ({fields.get('C')})"

    def features(self, conn: GuardedConnection) -> Server:
        """Read on first use, once per session: a clone's refresh asks several times."""
        if conn.features is None:
            conn.features = Server(is_redshift="Redshift" in str(self._rows(conn, "SELECT version()")[0][0]))
        return conn.features

    # -- setSecret ------------------------------------------------------------------------------
    def set_password(self, conn: GuardedConnection, username: str, password: str) -> None:
        (user,) = self._idents(conn, username)
        literal = self._stored_form(conn, username, password)
        self._execute(conn, [f"ALTER USER {user} PASSWORD {literal}"], password)

    def clone_user(self, conn: GuardedConnection, source: str, clone: str, password: str) -> None:
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
        in_groups = set(self._column(conn, sql.GROUPS, clone))
        memberships = [
            f"ALTER GROUP {group} ADD USER {user}"
            for group in self._column(conn, sql.GROUPS, source)
            if group not in in_groups
        ]
        if self.features(conn).is_redshift:
            held = {role for role, _ in self._rows(conn, sql.ROLES, clone)}
            memberships += [
                f"GRANT ROLE {role} TO {user}" + (" WITH ADMIN OPTION" if admin else "")
                for role, admin in self._rows(conn, sql.ROLES, source)
                if role not in held
            ]
        self._execute(conn, memberships, password)
        grants = [
            *self._grants(conn, sql.TABLE_PRIVILEGES, "TABLE", source=source, clone=clone, user=user),
            *self._grants(conn, sql.SCHEMA_PRIVILEGES, "SCHEMA", source=source, clone=clone, user=user),
            *self._grants(conn, sql.DATABASE_PRIVILEGES, "DATABASE", source=source, clone=clone, user=user),
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

    def admin_power(self, conn: GuardedConnection, username: str) -> list[str]:
        """Superuser (which Redshift's CREATEUSER makes a user), and on Redshift the RBAC roles,
        held directly or through other roles, that manage users, roles or every schema."""
        found = []
        if "SUPERUSER" in (self._attributes(conn, username) or set()):
            found.append(f"{shown(username)} is a superuser (CREATEUSER)")
        if self.features(conn).is_redshift:
            roles = self._admin_roles(conn, username)
            found += [f"{shown(username)} holds the administrative role {role!r}" for role in roles]
        return found

    def clone_mismatch(self, conn: GuardedConnection, source: str, clone: str) -> list[str]:
        """What the rotator makes of the source: a user with its groups, roles, privileges and
        CREATEDB, and nothing more. A clone with less is fine: clone_user adds what it lacks."""
        held = self._attributes(conn, clone)
        if held is None:
            return []
        extra = sorted(held - (self._attributes(conn, source) or set()))
        extra += self._beyond(conn, clone, source)
        return [f"{shown(clone)} holds what {shown(source)} does not: {_listed(extra)}"] if extra else []

    def clone_lacks(self, conn: GuardedConnection, source: str, clone: str) -> list[str]:
        """The clone holds a copy of what the source held when it was last refreshed; whatever the
        source holds beyond it (including what was granted to the source since) is named."""
        wanted, held = self._attributes(conn, source), self._attributes(conn, clone)
        if wanted is None or held is None:
            return [f"{shown(source)} or {shown(clone)} does not exist"]
        missing = sorted(wanted - held) + self._beyond(conn, source, clone)
        return [f"{shown(clone)} lacks what {shown(source)} holds: {_listed(missing)}"] if missing else []

    # -- testSecret -----------------------------------------------------------------------------
    def session_user(self, conn: GuardedConnection) -> str | None:
        rows = self._rows(conn, "SELECT session_user, 1 + 1")
        return str(rows[0][0]) if rows and rows[0][1] == 2 else None

    # -- `rotators check` -----------------------------------------------------------------------
    def tls_version(self, conn: GuardedConnection) -> str | None:
        sock = getattr(conn, "_usock", None)
        return sock.version() if isinstance(sock, ssl.SSLSocket) else None

    def change_privileges(self, conn: GuardedConnection, username: str, *, as_master: bool) -> str | None:
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
        self, conn: GuardedConnection, query: str, kind: str, *, source: str, clone: str, user: str
    ) -> list[str]:
        """One GRANT per object, for what the source holds there and the clone does not."""
        missing: dict[str, list[str]] = {}
        for name, privilege in self._rows(conn, query, source, clone):
            missing.setdefault(name, []).append(privilege)
        return [
            f"GRANT {', '.join(privileges)} ON {kind} {name} TO {user}"
            for name, privileges in missing.items()
        ]

    def _attributes(self, conn: GuardedConnection, username: str) -> set[str] | None:
        """SUPERUSER and CREATEDB, as far as the user has them; None when there is no such user."""
        rows = self._rows(conn, sql.USER_FLAGS, username)
        if not rows:
            return None
        return {name for name, flag in zip(("SUPERUSER", "CREATEDB"), rows[0], strict=True) if flag}

    def _beyond(self, conn: GuardedConnection, holder: str, other: str) -> list[str]:
        """What `holder` has that `other` does not, in words: groups, RBAC roles (with ADMIN
        OPTION), and table, schema and database privileges held by any route."""
        their_groups = set(self._column(conn, sql.GROUPS, other))
        found = [
            f"group {group}" for group in self._column(conn, sql.GROUPS, holder) if group not in their_groups
        ]
        if self.features(conn).is_redshift:
            their_roles = {str(role): bool(admin) for role, admin in self._rows(conn, sql.ROLES, other)}
            found += [
                f"role {role}" + (" WITH ADMIN OPTION" if admin else "")
                for role, admin in self._rows(conn, sql.ROLES, holder)
                if role not in their_roles or (admin and not their_roles[role])
            ]
        for query, kind in (
            (sql.TABLE_PRIVILEGES, "TABLE"),
            (sql.SCHEMA_PRIVILEGES, "SCHEMA"),
            (sql.DATABASE_PRIVILEGES, "DATABASE"),
        ):
            found += [
                f"{privilege} ON {kind} {name}" for name, privilege in self._rows(conn, query, holder, other)
            ]
        return found

    def _admin_roles(self, conn: GuardedConnection, username: str) -> list[str]:
        """The administrative roles among those `username` holds, following roles granted to roles."""
        admin = set(sql.ADMIN_SYSTEM_ROLES) | set(self._column(conn, sql.ADMIN_PRIVILEGE_ROLES))
        granted: dict[str, list[str]] = {}
        for role, granted_role in self._rows(conn, sql.ROLE_GRANTS):
            granted.setdefault(str(role), []).append(str(granted_role))
        held, todo = set(), self._column(conn, sql.DIRECT_ROLES, username)
        while todo:
            role = todo.pop()
            if role not in held:
                held.add(role)
                todo += granted.get(role, [])
        return sorted(held & admin)

    def _stored_form(self, conn: GuardedConnection, username: str, password: str) -> str:
        """The password as the server stores it, quoted: what STL_QUERY and any statement log
        see. Redshift gets its documented MD5 form, salted with the user name as Redshift stores
        it (folded to lower case unless enable_case_sensitive_identifier is on), which is also
        what it stores for a clear password. Any other server (PostgreSQL, where the tests run
        this engine) gets a SCRAM-SHA-256 verifier, as its own password_encryption would make."""
        sql.password_literal(password)  # Redshift's rules, checked on the password itself
        if not self.features(conn).is_redshift:
            return f"'{sql.scram_verifier(password)}'"
        sensitive = str(self._rows(conn, "SELECT current_setting('enable_case_sensitive_identifier')")[0][0])
        stored = username if sensitive.lower() in ("on", "true") else username.lower()
        return f"'{md5_password(password, stored)}'"

    def _idents(self, conn: GuardedConnection, *names: str) -> list[str]:
        """Identifiers quoted by the server's own quote_ident()."""
        row = self._rows(conn, "SELECT " + ", ".join(["quote_ident(%s)"] * len(names)), *names)[0]
        return [str(value) for value in row]

    def _column(self, conn: GuardedConnection, query: str, *args: Any) -> list[str]:
        return [str(row[0]) for row in self._rows(conn, query, *args)]

    def _rows(self, conn: GuardedConnection, query: str, *args: Any) -> list[Sequence[Any]]:
        with self.statement_errors(), closing(conn.cursor()) as cursor:
            cursor.execute(query, args or None)
            return list(cursor.fetchall() or [])

    def _execute(self, conn: GuardedConnection, statements: Sequence[str], password: str) -> None:
        with self.statement_errors(password), closing(conn.cursor()) as cursor:
            for statement in statements:
                cursor.execute(statement)


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


handler = RedshiftRotator().handle
