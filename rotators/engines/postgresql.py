"""PostgreSQL (RDS, Aurora, self-managed) with psycopg 3. Handler: rotators.engines.postgresql.handler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rotators.database import DatabaseRotator, DatabaseSecret, LoginRefusedError, ca_bundle, tls_mode
from rotators.errors import (
    DatabaseUnavailableError,
    PasswordChangeError,
    SecretTestError,
    redact,
)

# libpq reports these when the server itself refused the login (not a network or TLS fault).
_REFUSED = ("password authentication failed", "no pg_hba.conf entry")


class PostgreSQLRotator(DatabaseRotator[psycopg.Connection[Any]]):
    kind = "postgresql"
    engines = frozenset({"postgres", "postgresql", "aurora-postgresql"})
    default_port = 5432
    default_dbname = "postgres"
    max_username_bytes = 63

    @contextmanager
    def connect(
        self, secret: DatabaseSecret, username: str, password: str
    ) -> Iterator[psycopg.Connection[Any]]:
        try:
            conninfo = make_conninfo(
                host=secret.host,
                port=secret.port,
                dbname=secret.dbname,
                user=username,
                password=password,
                connect_timeout=os.environ.get("DB_CONNECT_TIMEOUT", "5"),
                application_name="rotators",
                **self.tls_options(secret),
            )
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            message = redact(str(exc), [password])
            if any(marker in message for marker in _REFUSED):
                raise LoginRefusedError(f"PostgreSQL refused the login of {username!r}") from None
            raise DatabaseUnavailableError(
                f"Cannot connect to PostgreSQL at {secret.host}:{secret.port}: {message.strip()}"
            ) from None
        with conn:
            yield conn

    @staticmethod
    def tls_options(secret: DatabaseSecret) -> dict[str, str]:
        """Verified TLS unless the secret says otherwise; never a silent plaintext fallback."""
        mode = tls_mode(secret)
        if mode is None:
            return {"sslmode": "disable"}
        options = {"sslmode": mode}
        if mode.startswith("verify"):
            options["sslrootcert"] = ca_bundle(secret) or "system"
        return options

    def transport(self, conn: psycopg.Connection[Any], secret: DatabaseSecret) -> str:
        if not conn.pgconn.ssl_in_use:
            return "plaintext, as the secret asks"
        mode = self.tls_options(secret)["sslmode"]
        verified = "certificate verified" if mode.startswith("verify") else "certificate NOT verified"
        return f"TLS (sslmode={mode}, {verified})"

    def change_privileges(
        self, conn: psycopg.Connection[Any], username: str, *, as_master: bool
    ) -> str | None:
        """Any role may change its own password; a master needs CREATEROLE, and from PostgreSQL 16
        on, ADMIN OPTION on the user's role to grant it to the clone."""
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [username]).fetchone():
            return f"role {username!r} does not exist"
        if not as_master:
            return None
        row = conn.execute(
            "SELECT r.rolsuper, r.rolcreaterole, current_setting('server_version_num')::int, EXISTS ("
            " SELECT 1 FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.roleid"
            " WHERE u.rolname = %s AND m.member = r.oid AND m.admin_option)"
            " FROM pg_roles r WHERE r.rolname = current_user",
            [username],
        ).fetchone()
        assert row is not None
        superuser, createrole, version, admin = row
        if superuser:
            return None
        if not createrole:
            return "the master user lacks CREATEROLE (ALTER ROLE master CREATEROLE)"
        if version >= 160000 and not admin:
            return f"the master user needs ADMIN OPTION on {username!r} (GRANT ... WITH ADMIN OPTION)"
        return None

    def set_password(self, conn: psycopg.Connection[Any], username: str, password: str) -> None:
        statement = sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(username), self._verifier(conn, username, password)
        )
        self._execute(conn, [statement], password)

    def clone_user(self, conn: psycopg.Connection[Any], source: str, clone: str, password: str) -> None:
        """The clone logs in as itself and acts as the source role, so objects either creates are
        owned by the same role and both keep every privilege the source has, now and later."""
        statements = [
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(source), sql.Identifier(clone)),
            sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(clone), sql.Literal(source)),
        ]
        with self._refused_as_change_error(password):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [clone]).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        create = sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
            verb, sql.Identifier(clone), self._verifier(conn, clone, password)
        )
        self._execute(conn, [create, *statements], password)

    def probe(self, conn: psycopg.Connection[Any], username: str) -> None:
        try:
            row = conn.execute("SELECT session_user, 1 + 1").fetchone()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"PostgreSQL went away during the test query: {exc}") from None
        if row is None or row[0] != username or row[1] != 2:
            raise SecretTestError(f"The test query did not run as {username!r}")

    def _verifier(self, conn: psycopg.Connection[Any], username: str, password: str) -> sql.Literal:
        """The password as libpq hashes it for this server (SCRAM-SHA-256, or md5 where the server
        still asks for it), so the clear password never reaches the server or its statement log."""
        with self._refused_as_change_error(password):
            verifier = conn.pgconn.encrypt_password(password.encode(), username.encode())
        return sql.Literal(verifier.decode())

    def _execute(self, conn: psycopg.Connection[Any], statements: list[sql.Composed], password: str) -> None:
        with self._refused_as_change_error(password), conn.transaction():
            for statement in statements:
                conn.execute(statement)

    @staticmethod
    @contextmanager
    def _refused_as_change_error(password: str) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:  # the connection or the server went away: retry later
            raise DatabaseUnavailableError(
                f"PostgreSQL went away during the change: {redact(str(exc), [password]).strip()}"
            ) from None
        except psycopg.Error as exc:
            raise PasswordChangeError(
                f"PostgreSQL refused the change: {redact(str(exc), [password]).strip()}"
            ) from None


handler = PostgreSQLRotator().handle
