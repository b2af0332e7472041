"""PostgreSQL (RDS, Aurora, self-managed) with psycopg 3. Handler: rotators.engines.postgresql.handler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rotators.database import DatabaseRotator, DatabaseSecret, ca_bundle, tls_mode
from rotators.engines import BY_NAME
from rotators.errors import LoginError, shown

# libpq reports these when the server itself refused the login (not a network or TLS fault).
_REFUSED = ("password authentication failed", "no pg_hba.conf entry")
# libpq's words when a server asked for a password method that `require_auth` rules out.
_METHOD_REFUSED = "authentication method requirement"
REQUIRE_AUTH_LIBPQ = 160000  # the first libpq that takes `require_auth`

# Roles whose members administer the server: RDS's, and PostgreSQL's file and program access.
ADMIN_ROLES = ["rds_superuser", "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"]
_ATTRIBUTES = ("SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS")
# Every role `%s` is a member of (itself included) that has an administrative attribute or name.
_ADMIN_POWER = """
SELECT r.rolname, r.rolname = u.rolname, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls
FROM pg_roles u JOIN pg_roles r ON pg_has_role(u.oid, r.oid, 'MEMBER')
WHERE u.rolname = %s
  AND (r.rolsuper OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls OR r.rolname = ANY(%s))
ORDER BY 1
"""
_CLONE = (
    "SELECT oid, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
    "FROM pg_roles WHERE rolname = %s"
)
_MEMBERSHIPS = (
    "SELECT r.rolname, bool_or(m.admin_option) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
    "WHERE m.member = %s GROUP BY 1 ORDER BY 1"
)
# How long a master waits for another run of the step to finish with the same user.
LOCK_WAIT = "20s"
# Objects in any database that the role owns or holds privileges on (pg_shdepend is cluster-wide).
_DEPENDENTS = "SELECT count(*) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND refobjid = %s"


class PostgreSQLRotator(DatabaseRotator[psycopg.Connection[Any]]):
    engine = BY_NAME["postgresql"]  # kind, label, secret engines, default port and dbname
    driver_errors = (psycopg.Error,)
    max_username_bytes = 63

    @contextmanager
    def connect(
        self, secret: DatabaseSecret, username: str, password: str
    ) -> Iterator[psycopg.Connection[Any]]:
        with self.login_errors(secret, username, password):
            conninfo = make_conninfo(
                host=secret.host,
                port=secret.port,
                dbname=secret.dbname,
                user=username,
                password=password,
                connect_timeout=self.connect_timeout().whole_seconds,
                application_name="rotators",
                **self.tls_options(secret),
                **self.auth_options(secret),
            )
            conn = psycopg.connect(conninfo, autocommit=True)
        with conn:
            yield conn

    def refused_login(self, exc: Exception) -> bool:
        return any(marker in str(exc) for marker in _REFUSED)

    def login_error(self, exc: Exception) -> str | None:
        if _METHOD_REFUSED not in str(exc):
            return None
        return (
            "The rotator sends a password by SCRAM only (md5 too over TLS), never in clear, so that "
            "whoever answers on the server's address cannot learn it: use scram-sha-256 in "
            "pg_hba.conf, or TLS for md5"
        )

    def lost_connection(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.OperationalError)

    @staticmethod
    def tls_options(secret: DatabaseSecret) -> dict[str, str]:
        """Verified TLS unless the secret says otherwise; never a silent plaintext fallback."""
        mode = tls_mode(secret)
        if mode is None:
            return {"sslmode": "disable"}
        options = {"sslmode": mode}
        if mode.startswith("verify"):
            options["sslrootcert"] = ca_bundle(secret).path or "system"
        return options

    @staticmethod
    def auth_options(secret: DatabaseSecret) -> dict[str, str]:
        """The password methods libpq may answer (`require_auth`): SCRAM, whose exchange tells a
        listener nothing it can log in with; md5 also over TLS; never the clear password. So an
        impostor on the server's address, which can refuse TLS or ask for anything, gets no
        password. A libpq older than 16 cannot refuse a method: it logs in only to a server whose
        certificate it verifies (verify-ca, verify-full), the one protection left."""
        mode = tls_mode(secret)
        version = psycopg.pq.version()
        if version >= REQUIRE_AUTH_LIBPQ:
            return {"require_auth": "scram-sha-256" if mode is None else "scram-sha-256,md5"}
        if mode is None or not mode.startswith("verify"):
            raise LoginError(
                f"The libpq this rotator runs with ({version // 10000}) cannot refuse a server that asks "
                "for the clear password, so it logs in only over verified TLS (sslmode verify-ca or "
                f"verify-full), not {mode or 'plaintext'!r}: deploy psycopg[binary] (libpq 16 or later) "
                "or verify the server's certificate"
            )
        return {}

    def tls_version(self, conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        return str(row[0]) if row and row[0] else None

    def server_name(self, conn: psycopg.Connection[Any]) -> str:
        return f"PostgreSQL {conn.info.parameter_status('server_version') or ''}".strip()

    def change_privileges(
        self, conn: psycopg.Connection[Any], username: str, *, as_master: bool
    ) -> str | None:
        """Any role may change its own password; a master needs CREATEROLE, and from PostgreSQL 16
        on, ADMIN OPTION on the user's role to grant it to the clone."""
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [username]).fetchone():
            return f"role {shown(username)} does not exist"
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
            return f"the master user needs ADMIN OPTION on {shown(username)} (GRANT ... WITH ADMIN OPTION)"
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
        with self.statement_errors(password):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [clone]).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        create = sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
            verb, sql.Identifier(clone), self._verifier(conn, clone, password)
        )
        self._execute(conn, [create, *statements], password)

    @contextmanager
    def exclusive(self, conn: psycopg.Connection[Any], username: str) -> Iterator[None]:
        """One transaction holding an advisory lock on the user's name: the checks and the change
        of an overlapping run wait for this one's commit, then see what it made."""
        hint = f"another run of this step held the lock on {shown(username)} for {LOCK_WAIT}: retry the step"
        with self.statement_errors(what=f"the change of {shown(username)}"), conn.transaction():  # its commit
            with self.statement_errors(what=f"the lock on {shown(username)}", hint=hint):
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_WAIT])
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"rotators:{username}"])
            yield

    def user_exists(self, exc: Exception) -> bool:
        # UniqueViolation: another session's CREATE ROLE of the name committed while this one ran.
        return isinstance(exc, (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation))

    # -- the master's safety rules ---------------------------------------------------------
    def admin_power(self, conn: psycopg.Connection[Any], username: str) -> list[str]:
        with self.statement_errors():
            rows = conn.execute(_ADMIN_POWER, [username, ADMIN_ROLES]).fetchall()
        found = []
        for role, itself, *flags in rows:
            attributes = ", ".join(a for a, flag in zip(_ATTRIBUTES, flags, strict=True) if flag)
            who = shown(username)
            holder = f"{who} is" if itself else f"{who} is a member of {role!r}, which is"
            found.append(f"{holder} {attributes or 'an administrative role'}")
        return found

    def clone_mismatch(self, conn: psycopg.Connection[Any], source: str, clone: str) -> list[str]:
        """What the rotator makes (and AWS's multi-user function too): a LOGIN role that is a member
        of the source and nothing else: no attribute, no other role, no object of its own."""
        with self.statement_errors():
            row = conn.execute(_CLONE, [clone]).fetchone()
            if row is None:
                return []
            oid, *flags = row
            memberships = dict(conn.execute(_MEMBERSHIPS, [oid]).fetchall())
            (dependents,) = conn.execute(_DEPENDENTS, [oid]).fetchone() or (0,)
        attributes = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
        found = [f"{shown(clone)} is {a}" for a, flag in zip(attributes, flags, strict=True) if flag]
        if source not in memberships:
            found.append(f"{shown(clone)} exists but is not a member of {shown(source)}")
        elif memberships[source]:
            found.append(f"{shown(clone)} holds ADMIN OPTION on {shown(source)}")
        found += [f"{shown(clone)} is a member of {role!r}" for role in memberships if role != source]
        if dependents:
            found.append(f"{shown(clone)} owns or holds privileges on {dependents} objects")
        return found

    def clone_lacks(self, conn: psycopg.Connection[Any], source: str, clone: str) -> list[str]:
        """A member of the source can SET ROLE to it, and so do all it can."""
        with self.statement_errors():
            row = conn.execute(
                "SELECT pg_has_role(c.oid, s.oid, 'MEMBER') FROM pg_roles s, pg_roles c "
                "WHERE s.rolname = %s AND c.rolname = %s",
                [source, clone],
            ).fetchone()
        if row is None:
            return [f"{shown(source)} or {shown(clone)} does not exist"]
        return [] if row[0] else [f"{shown(clone)} is not a member of {shown(source)}"]

    def session_user(self, conn: psycopg.Connection[Any]) -> str | None:
        with self.statement_errors(what="the test query"):
            row = conn.execute("SELECT session_user, 1 + 1").fetchone()
        return str(row[0]) if row is not None and row[1] == 2 else None

    def _verifier(self, conn: psycopg.Connection[Any], username: str, password: str) -> sql.Literal:
        """The password as libpq hashes it for this server (SCRAM-SHA-256, or md5 where the server
        still asks for it), so the clear password never reaches the server or its statement log."""
        with self.statement_errors(password):
            verifier = conn.pgconn.encrypt_password(password.encode(), username.encode())
        return sql.Literal(verifier.decode())

    def _execute(self, conn: psycopg.Connection[Any], statements: list[sql.Composed], password: str) -> None:
        with self.statement_errors(password), conn.transaction():
            for statement in statements:
                conn.execute(statement)


handler = PostgreSQLRotator().handle
