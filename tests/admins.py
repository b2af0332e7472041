"""The superusers of the test servers, one class per server kind with the same few methods
(`ServerAdmin`): make a user with given grants, reset a password by hand, say whether a password
logs in, what a user may do, and what the server decides a login on. tests/engines.py puts each
engine's one to work.
"""

from __future__ import annotations

import contextlib
import json
import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.secantus import SecantusServer

if TYPE_CHECKING:
    from tests.engines import Engine

Statement = str | sql.SQL | sql.Composed  # what psycopg executes
A = TypeVar("A")
Q = TypeVar("Q")  # a statement, as the driver takes it


def backend(server: Any) -> Any:
    """The server that holds the users: `server` itself, or the one behind a proxy (Redshift's)."""
    return getattr(server, "backend", server)


class ServerAdmin(Protocol):
    """What every scenario needs from the superuser of an engine's server."""

    def add_user(self, name: str, password: str, *grants: Any) -> None:
        """A user with `grants`, in the server's own terms (role options, GRANTs, roles)."""
        ...

    def set_password(self, name: str, password: str) -> None:
        """A password reset by hand, outside Secrets Manager."""
        ...

    def logs_in(self, name: str, password: str) -> bool: ...
    def user_exists(self, name: str) -> bool: ...
    def privileges(self, name: str) -> object:
        """What the user may do, comparable between users (a clone's with its original's)."""
        ...

    def auth_state(self, name: str) -> object:
        """What the server decides a login of `name` on (e.g. its stored verifier)."""
        ...

    def close(self) -> None: ...


class _Kept(ABC, Generic[Q]):
    """SQL as the superuser. With `keep`, one connection serves every statement (a TLS and SCRAM
    login costs about 25 ms) until close(), made again after the server restarted; without it
    (where nobody would close it) each statement has a connection of its own."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self._conn: Any = None

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _fetch(self, conn: Any, statement: Q, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _lost(self, exc: Exception) -> bool:
        """Was `exc` the kept connection going away (the server restarted)?"""

    def sql(self, statement: Q, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.keep:
            with self._connect() as conn:
                return self._fetch(conn, statement, params)
        if self._conn is not None:
            try:
                return self._fetch(self._conn, statement, params)
            except Exception as exc:
                if not self._lost(exc):
                    raise
        self.close()
        self._conn = self._connect()
        return self._fetch(self._conn, statement, params)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # the server may be gone by now
                self._conn.close()
            self._conn = None


class Admin(_Kept[Statement]):
    """The superuser of a PostgreSQL server (Redshift's here too): makes roles and checks which
    passwords log in."""

    def __init__(self, server: PostgresServer, *, keep: bool = False) -> None:
        super().__init__(keep=keep)
        self.server = server

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(make_conninfo("", **self.server.admin_dsn()), autocommit=True)

    def _fetch(self, conn: Any, statement: Statement, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = conn.execute(statement, params or None)  # () would make "%" a placeholder
        rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
        return rows

    def _lost(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.OperationalError) and bool(self._conn and self._conn.broken)

    def create_role(self, name: str, password: str, *extra: str) -> None:
        """A login role; `extra` are role options such as CREATEROLE."""
        self.sql(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + " ".join(extra)).format(
                sql.Identifier(name), sql.Literal(password)
            )
        )

    def add_user(self, name: str, password: str, *grants: Any) -> None:
        self.create_role(name, password, *grants)

    def set_password(self, name: str, password: str) -> None:
        self.sql(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with psycopg.connect(
                host=self.server.host, port=self.server.port, dbname="postgres", user=user,
                password=password, sslmode="verify-full", sslrootcert=str(self.server.ca.cert_path),
                connect_timeout=5,
            ):  # fmt: skip
                return True
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), "login failed for another reason"
            return False

    def user_exists(self, name: str) -> bool:
        return bool(self.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))

    def privileges(self, name: str) -> object:
        """Role attributes, memberships and table privileges."""
        attributes = self.sql(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,"
            " rolconnlimit, rolvaliduntil FROM pg_roles WHERE rolname = %s",
            (name,),
        )
        member_of = self.sql(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1",
            (name,),
        )
        tables = self.sql(
            "SELECT table_schema, table_name, privilege_type, is_grantable"
            " FROM information_schema.table_privileges WHERE grantee = %s ORDER BY 1, 2, 3",
            (name,),
        )
        return attributes, member_of, tables

    def auth_state(self, name: str) -> object:
        rows = self.sql(
            "SELECT rolpassword, rolcanlogin, rolvaliduntil FROM pg_authid WHERE rolname = %s", (name,)
        )
        return rows[0] if rows else ("no such role",)


class MariaDBAdmin(_Kept[str]):
    """root of a MariaDB server: makes accounts at the host part a local login matches and checks
    which passwords log in."""

    HOST = "127.0.0.1"  # the account a local TCP login matches (the server skips name resolution)
    _LOST = (0, 2006, 2013)  # error codes of a connection that is gone

    def __init__(self, server: MariaDBServer, *, keep: bool = False) -> None:
        super().__init__(keep=keep)
        self.server = server

    def _connect(self) -> Any:
        import pymysql

        return pymysql.connect(**self.server.admin_kwargs())

    def _fetch(self, conn: Any, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            return list(cursor.fetchall())

    def _lost(self, exc: Exception) -> bool:
        import pymysql

        lost = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
        return isinstance(exc, lost) and (not exc.args or exc.args[0] in self._LOST)

    def create_user(self, name: str, password: str, *grants: str, host: str = HOST) -> None:
        """`name`@`host` with `password`; each grant (e.g. "SELECT ON shop.*", "ALL PRIVILEGES ON
        *.* WITH GRANT OPTION") is given to it."""
        self.sql("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
        for grant in grants:
            what, with_, option = grant.partition(" WITH ")
            self.sql(f"GRANT {what} TO %s@%s{with_}{option}", (name, host))

    def add_user(self, name: str, password: str, *grants: Any) -> None:
        self.create_user(name, password, *grants)

    def set_password(self, name: str, password: str, host: str = HOST) -> None:
        self.sql("SET PASSWORD FOR %s@%s = PASSWORD(%s)", (name, host, password))

    def grants(self, name: str, host: str = HOST) -> set[str]:
        """SHOW GRANTS with the account written as <account>, without password hashes, and with
        column lists sorted (the server prints them in no fixed order)."""
        account = f"`{name.replace('`', '``')}`@`{host}`"
        found = set()
        for (line,) in self.sql("SHOW GRANTS FOR %s@%s", (name, host)):
            text = re.sub(
                r" IDENTIFIED (BY PASSWORD|VIA \w+ USING) '[^']*'", "", line.replace(account, "<account>")
            )
            found.add(re.sub(r"\(([^()]*)\)", lambda m: f"({', '.join(sorted(m[1].split(', ')))})", text))
        return found

    def privileges(self, name: str) -> object:
        return self.grants(name)

    def logs_in(self, user: str, password: str) -> bool:
        import pymysql

        try:
            tls = {"ssl_ca": str(self.server.ca.cert_path), "ssl_verify_identity": True}
            with pymysql.connect(
                host=self.server.host, port=self.server.port, user=user, password=password,
                connect_timeout=5, **(tls if self.server.tls else {"ssl_disabled": True}),
            ):  # fmt: skip
                return True
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1045, "login failed for another reason"
            return False

    def user_exists(self, name: str) -> bool:
        return bool(self.sql("SELECT 1 FROM mysql.user WHERE User = %s", (name,)))

    def auth_state(self, name: str) -> object:
        return tuple(
            self.sql("SELECT Host, Priv FROM mysql.global_priv WHERE User = %s ORDER BY Host", (name,))
        )


# MongoDB lets a user change its own password only with the changeOwnPassword action, which no
# built-in role grants: an application user gets it through this role, as a MongoDB admin would.
SELF_SERVICE = {"role": "rotatorsChangeOwnPassword", "db": "admin"}
READ_WRITE = {"role": "readWrite", "db": "orders"}


class MongoAdmin:
    """The `root` user of a SecantusDB server (the MongoDB wire protocol): makes users and checks
    which passwords log in. With `keep`, one client serves every command (it finds a restarted
    server again within half a second)."""

    def __init__(self, server: SecantusServer, *, keep: bool = False) -> None:
        self.server = server
        self.keep = keep
        self._client: Any = None
        self._self_service = False

    def command(self, *args: Any, **kwargs: Any) -> Any:
        if not self.keep:
            with self.server.client() as client:
                return client.admin.command(*args, **kwargs)
        if self._client is None:
            self._client = self.server.client(heartbeatFrequencyMS=500)
        return self._client.admin.command(*args, **kwargs)

    def create_user(self, name: str, password: str, roles: list[Any], **options: Any) -> None:
        if SELF_SERVICE in roles:
            self._ensure_self_service()
        self.command("createUser", name, pwd=password, roles=roles, **options)

    def add_user(self, name: str, password: str, *grants: Any) -> None:
        self.create_user(name, password, list(grants))

    def _ensure_self_service(self) -> None:
        if self._self_service or self.command("rolesInfo", SELF_SERVICE["role"])["roles"]:
            self._self_service = True
            return
        self.command(
            "createRole",
            SELF_SERVICE["role"],
            privileges=[
                {"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword", "viewUser"]}
            ],
            roles=[],
        )
        self._self_service = True

    def set_password(self, name: str, password: str) -> None:
        self.command("updateUser", name, pwd=password)

    def user(self, name: str) -> dict[str, Any] | None:
        users = self.command("usersInfo", name)["users"]
        return users[0] if users else None

    def logs_in(self, user: str, password: str, mechanism: str | None = None) -> bool:
        """SecantusDB answers pymongo's speculative SCRAM-SHA-256 for a SHA-1-only user and then
        fails it, so such a user must name SCRAM-SHA-1 (a real mongod negotiates it)."""
        import pymongo

        options = {"authMechanism": mechanism} if mechanism else {}
        try:
            with self.server.client(user, password, **options) as client:
                client.admin.command("ping")
                return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, "login failed for another reason"
            return False

    def user_exists(self, name: str) -> bool:
        return self.user(name) is not None

    def privileges(self, name: str) -> object:
        """Its roles and SCRAM mechanisms."""
        user = self.user(name) or {}
        return user.get("roles"), user.get("mechanisms")

    def auth_state(self, name: str) -> object:
        users = self.command({"usersInfo": name, "showCredentials": True})["users"]
        return json.dumps([u.get("credentials") for u in users], sort_keys=True, default=str)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class Admins:
    """The superusers of the servers the session shares, each over one kept connection."""

    def __init__(self) -> None:
        self._admins: dict[int, ServerAdmin] = {}

    def of(self, engine: Engine, server: Any) -> ServerAdmin:
        """`server`'s superuser (Redshift's is its PostgreSQL server's)."""
        key = id(backend(server))
        if key not in self._admins:
            self._admins[key] = engine.superuser(server, keep=True)
        return self._admins[key]

    def typed(self, engine: Engine, server: Any, kind: type[A]) -> A:
        """The same, as its own class (for the SQL or commands only that engine has)."""
        admin = self.of(engine, server)
        assert isinstance(admin, kind)
        return admin

    def close(self) -> None:
        for admin in self._admins.values():
            admin.close()
        self._admins.clear()
