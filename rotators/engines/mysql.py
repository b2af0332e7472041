"""MySQL 5.7/8.x/9.x, Aurora MySQL and MariaDB 10.x/11.x with PyMySQL.

Handler: rotators.engines.mysql.handler. One engine, two dialects, chosen from what the server
says it is in `SELECT VERSION()`: MariaDB 10's handshake claims "5.5.5-10.x", and a MySQL 9 is
not a MySQL 5, so neither the handshake nor a version prefix decides anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import pymysql
from pymysql import _auth
from pymysql.connections import Connection
from pymysql.protocol import MysqlPacket

from rotators.database import (
    DatabaseRotator,
    DatabaseSecret,
    prepare_shared_ssl_context,
    shared_ssl_context,
    tls_mode,
)
from rotators.engines import BY_NAME
from rotators.engines.mysql_auth import (
    MARIADB,
    MYSQL,
    Account,
    Server,
    Statement,
    account_password,
    account_text,
    create_user,
    own_password,
    validation_needs_clear,
)
from rotators.engines.mysql_grants import Grant, Privileges, account_options, auth_plugin, replay
from rotators.errors import PasswordChangeError, RotationError, SecretFormatError, shown
from rotators.log import logger

# The longest account user name: MySQL 5.7.8+ takes 32 characters, MariaDB 10.x 80 (128 from
# 10.6, but createSecret cannot know the version, so 80 holds on every MariaDB).
MAX_NAME_CHARS = {MYSQL: 32, MARIADB: 80}

ER_ACCESS_DENIED = 1045
ER_PASSWORD_EXPIRED = 1862
ER_SET_PASSWORD_AUTH_PLUGIN = 1699  # a warning: SET PASSWORD ignored (e.g. a unix_socket account)
CLIENT_ERRORS = range(2000, 3000)  # CR_*: the connection failed, not the statement
ER_CANNOT_USER = 1396  # CREATE USER of an account that exists (among other failures)
LOCK_WAIT_SECONDS = 20  # how long a master waits for another run of the step with the same user
CR_AUTH_PLUGIN_ERR = 2061  # libmysqlclient's "Authentication requires secure connection"


@dataclass(frozen=True)
class Session:
    """A connection, its server's features and the account it logged in as (CURRENT_USER())."""

    conn: Connection[Any]
    features: Server
    account: Account


class MySQLRotator(DatabaseRotator[Session]):
    engine = BY_NAME["mysql"]  # kind, label, secret engines, default port and dbname
    driver_errors = (pymysql.MySQLError,)
    max_username_bytes = 3 * MAX_NAME_CHARS[MARIADB]  # utf8mb3 names; the real check counts characters

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Session]:
        with self.login_errors(secret, username, password):
            conn = pymysql.connect(
                host=secret.host,
                port=secret.port,
                user=username,
                password=password,
                database=secret.dbname or None,
                connect_timeout=self.connect_timeout().seconds,
                autocommit=True,
                charset="utf8mb4",
                program_name="rotators",
                **self.tls_options(secret),
                **self.auth_options(secret),
            )
        try:
            with self.statement_errors(password, what="the first query"), conn.cursor() as cursor:
                cursor.execute("SELECT VERSION(), CURRENT_USER()")
                version, current = cursor.fetchall()[0]
            user, _, host = str(current).rpartition("@")
            yield Session(conn, Server.from_version(str(version)), (user, host))
        finally:
            with suppress(Exception):
                conn.close()

    def refused_login(self, exc: Exception) -> bool:
        return _code(exc) == ER_ACCESS_DENIED

    def login_error(self, exc: Exception) -> str | None:
        if isinstance(exc, UnsafeAuthError):
            return (
                "That would hand the password to whoever answers on that address. Without TLS the "
                "rotator answers only mysql_native_password, client_ed25519 and caching_sha2_password's "
                'fast path: use TLS (drop "ssl": false), or give the account one of those plugins'
            )
        if _code(exc) == ER_PASSWORD_EXPIRED:
            return (
                "An expired password can log in to change nothing: reset it to the AWSCURRENT value "
                "(ALTER USER ... IDENTIFIED BY) and rotate again"
            )
        return None

    def lost_connection(self, exc: Exception) -> bool:
        return _code(exc) in CLIENT_ERRORS

    def error_text(self, exc: Exception) -> str:
        return f"{_message(exc)} (error {_code(exc)})"

    def prepare(self) -> None:
        """Also the TLS context of the environment's CA bundle (see shared_ssl_context)."""
        super().prepare()
        try:
            prepare_shared_ssl_context()
        except Exception as exc:  # a bad ROTATORS_CA_BUNDLE: the first login says so
            logger.debug(f"No TLS context at INIT ({type(exc).__name__})")

    @staticmethod
    def tls_options(secret: DatabaseSecret) -> dict[str, Any]:
        """An SSLContext of our own: PyMySQL would not verify anything when given no CA. PyMySQL only
        wraps its socket with it, so one context serves every login of the same TLS settings."""
        context = shared_ssl_context(secret)
        return {"ssl_disabled": True} if context is None else {"ssl": context}

    @staticmethod
    def auth_options(secret: DatabaseSecret) -> dict[str, Any]:
        """Without TLS, the password methods that would give it away are refused (see
        UNSAFE_WITHOUT_TLS). Over TLS PyMySQL answers as it always did: a verified server is the
        real one, and `require` is the secret's choice of an unverified one."""
        if tls_mode(secret) is not None:
            return {}
        refused = {name: partial(_RefusedPlugin, name) for name in UNSAFE_WITHOUT_TLS}
        return {"auth_plugin_map": {**refused, "caching_sha2_password": _ScrambleOnly}}

    # -- createSecret: a clone name the server cannot hold fails before anything changes ----
    def check_username(self, username: str, *, current: DatabaseSecret) -> None:
        """MySQL counts characters: 32, MariaDB 80 (the secret's engine says which). Only a name
        the rotator would create (the clone) is checked: an existing user is what it is."""
        flavour = MARIADB if current.engine == MARIADB else MYSQL
        if username != current.username and len(username) > MAX_NAME_CHARS[flavour]:
            raise SecretFormatError(
                f"User name {shown(username)} is longer than {MAX_NAME_CHARS[flavour]} characters, the limit "
                f"of {'MariaDB' if flavour == MARIADB else 'MySQL'}: shorten {shown(current.username)} "
                "so that its clone name fits"
            )

    # -- setSecret --------------------------------------------------------------------------
    def set_password(self, conn: Session, username: str, password: str) -> None:
        if username == conn.account[0]:
            account = conn.account
            # MySQL takes only the clear value from an account changing its own password.
            plugin = self._plugin(conn, account) if conn.features.is_mariadb else None
            make = partial(own_password, conn.features, account, password)
        else:
            account = (username, self._host_of(conn, username))
            plugin = self._plugin(conn, account)
            make = partial(account_password, conn.features, account, password)
        statement = self._send_password(conn, make, plugin, password)
        self._check_applied(conn, statement, password)
        logger.info(f"password of {account_text(account)} changed on {conn.features}")

    def clone_user(self, conn: Session, source: str, clone: str, password: str) -> None:
        """Create (or update) `clone` at the source's host part, with privileges equal to the
        source's: replayed from SHOW GRANTS on creation, and refreshed whenever they drifted. An
        existing clone's privileges are put right before its password changes, so a failure
        leaves its old password working. A new clone gets the source's plugin where its hash
        can be sent (see `hashed`), else the server's default plugin."""
        host = self._host_of(conn, source)
        source_account, clone_account = (source, host), (clone, host)
        exists = bool(
            self._rows(conn, "SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", clone_account)
        )
        if not exists:
            make = partial(create_user, conn.features, clone_account, password)
            self._send_password(conn, make, self._plugin(conn, source_account), password)
        statements = self._privilege_statements(conn, source_account, clone_account, fresh=not exists)
        self._execute(conn, [(s, None) for s in statements], password)
        if exists:
            make = partial(account_password, conn.features, clone_account, password)
            self._send_password(conn, make, self._plugin(conn, clone_account), password)
        logger.info(
            f"{account_text(clone_account)} {'updated' if exists else 'created'}; privileges of "
            f"{account_text(source_account)} {'copied' if statements else 'already held'} "
            f"({len(statements)} statements)"
        )

    @contextmanager
    def exclusive(self, conn: Session, username: str) -> Iterator[None]:
        """A named lock (GET_LOCK, which needs no privilege) on the user: an overlapping run of the
        step waits, then finds the account this one made. Released on disconnect too."""
        name = f"rotators:{username}"[:64]  # the server's limit; a shared prefix only waits longer
        (taken,) = self._rows(conn, "SELECT GET_LOCK(%s, %s)", (name, LOCK_WAIT_SECONDS))[0]
        if taken != 1:
            raise PasswordChangeError(
                f"Another run of this step held the lock on {shown(username)} for {LOCK_WAIT_SECONDS} s, "
                "so nothing was changed: retry the step"
            )
        try:
            yield
        finally:
            with suppress(RotationError):  # the server drops it with the session anyway
                self._rows(conn, "SELECT RELEASE_LOCK(%s)", (name,))

    def user_exists(self, exc: Exception) -> bool:
        return _code(exc) == ER_CANNOT_USER and "CREATE USER" in _message(exc)

    def _plugin(self, conn: Session, account: Account) -> str | None:
        """The account's one authentication plugin, from SHOW CREATE USER (which an account may
        run on itself without privileges); None where the server has no such statement."""
        if not conn.features.has_alter_user:
            return None
        rows = self._rows(conn, "SHOW CREATE USER %s@%s", account)
        return auth_plugin(str(rows[0][0]), conn.features) if rows else None

    def _send_password(
        self, conn: Session, make: Callable[..., Statement], plugin: str | None, password: str
    ) -> Statement:
        """Send the statement with the hash for `plugin`. A MariaDB with a password validation
        plugin and strict_password_validation refuses hashes (error 1290) and gets the clear
        value: it must see a password to check it. The log says which, never what."""
        statement = make(plugin)
        clear = make(plugin, clear=True)
        with conn.conn.cursor() as cursor:
            try:
                cursor.execute(*statement)
                return statement
            except pymysql.MySQLError as exc:
                if statement == clear or not validation_needs_clear(_code(exc), _message(exc)):
                    raise self.statement_failure(exc, [password]) from None
            logger.warning(
                f"{conn.features} refused the password's hash (strict_password_validation: its "
                "password validation must see the value): the clear value was sent, so its statement "
                "log may hold it"
            )
            with self.statement_errors(password):
                cursor.execute(*clear)
        return clear

    def _privilege_statements(
        self, conn: Session, source: Account, clone: Account, *, fresh: bool
    ) -> list[str]:
        wanted = self._privileges(conn, source)
        held = None if fresh else self._privileges(conn, clone)
        return replay(wanted, held, self._account_sql(conn, clone))

    # -- the master's safety rules -----------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """Account names compare with trailing spaces ignored (a PAD SPACE collation)."""
        return username.rstrip(" ")

    def admin_power(self, conn: Session, username: str) -> list[str]:
        found = self._privileges(conn, (username, self._host_of(conn, username))).administrative
        return [f"{shown(username)} holds {', '.join(found)}"] if found else []

    def clone_mismatch(self, conn: Session, source: str, clone: str) -> list[str]:
        """An existing clone (at the source's host) may hold only what the source holds: missing
        grants are added on every rotation, extra ones are never taken over."""
        host = self._host_of(conn, source)
        if not self._rows(conn, "SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", (clone, host)):
            return []
        extra = self._privileges(conn, (clone, host)).beyond(self._privileges(conn, (source, host)))
        return [f"{shown(clone)} holds what {shown(source)} does not: {', '.join(extra)}"] if extra else []

    def clone_lacks(self, conn: Session, source: str, clone: str) -> list[str]:
        wanted = self._privileges(conn, (source, self._host_of(conn, source)))
        missing = wanted.beyond(self._privileges(conn, (clone, self._host_of(conn, clone))))
        return [f"{shown(clone)} lacks what {shown(source)} holds: {', '.join(missing)}"] if missing else []

    # -- testSecret -------------------------------------------------------------------------
    def session_user(self, conn: Session) -> str | None:
        current, two = self._rows(conn, "SELECT CURRENT_USER(), 1 + 1", ())[0]
        return str(current).rpartition("@")[0] if two == 2 else None

    # -- `rotators check` -------------------------------------------------------------------
    def tls_version(self, conn: Session) -> str | None:
        rows = self._rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'", ())
        return str(rows[0][1]) if rows and rows[0][1] else None

    def server_name(self, conn: Session) -> str:
        return str(conn.features)

    def change_privileges(self, conn: Session, username: str, *, as_master: bool) -> str | None:
        if not as_master:
            if conn.account[0] != username:
                return f"the login matched the account {account_text(conn.account)}, not {shown(username)}"
            return None
        try:
            self._host_of(conn, username)
            if self._privileges(conn, conn.account).may_create_users:
                return None
        except RotationError as exc:
            return str(exc)
        return "the master user lacks CREATE USER (GRANT CREATE USER ON *.* TO <master> WITH GRANT OPTION)"

    # -- helpers ----------------------------------------------------------------------------
    def _host_of(self, conn: Session, user: str) -> str:
        """The host part of `user`'s one account; several accounts make the target ambiguous."""
        query = "SELECT Host FROM mysql.user WHERE User = %s"
        if conn.features.is_mariadb:
            query += " AND is_role <> 'Y'"
        hosts = sorted(str(row[0]) for row in self._rows(conn, query, (user,)))
        if len(hosts) == 1:
            return hosts[0]
        if not hosts:
            raise PasswordChangeError(
                f"{conn.features} has no account for user {shown(user)}: create it, or fix 'username'"
            )
        raise PasswordChangeError(
            f"User {shown(user)} has accounts at several hosts ({', '.join(map(repr, hosts))}), so the "
            "master cannot tell which one the application uses: drop the extra accounts, or rotate this "
            "secret as a single user"
        )

    def _privileges(self, conn: Session, account: Account) -> Privileges:
        lines = self._rows(conn, "SHOW GRANTS FOR %s@%s", account)
        grants = tuple(Grant.parse(str(row[0]), account) for row in lines)
        options = None
        if conn.features.has_alter_user:
            create = self._rows(conn, "SHOW CREATE USER %s@%s", account)
            options = account_options(str(create[0][0]), conn.features)
        roles = None
        if conn.features.has_default_role_table:
            found = self._rows(
                conn,
                "SELECT DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles "
                "WHERE USER = %s AND HOST = %s ORDER BY 1, 2",
                account,
            )
            roles = tuple(self._account_sql(conn, (str(u), str(h))) for u, h in found)
        return Privileges(grants, options, roles)

    @staticmethod
    def _account_sql(conn: Session, account: Account) -> str:
        """'user'@'host', quoted by PyMySQL (which honours NO_BACKSLASH_ESCAPES)."""
        return f"{conn.conn.escape(account[0])}@{conn.conn.escape(account[1])}"

    def _rows(self, conn: Session, query: str, args: tuple[Any, ...], *secrets: str) -> list[tuple[Any, ...]]:
        with self.statement_errors(*secrets), conn.conn.cursor() as cursor:
            cursor.execute(query, args or None)
            return list(cursor.fetchall())

    def _execute(self, conn: Session, statements: Sequence[Statement], password: str) -> None:
        with self.statement_errors(password), conn.conn.cursor() as cursor:
            for query, args in statements:
                cursor.execute(query, args)

    def _check_applied(self, conn: Session, statement: Statement, password: str) -> None:
        """SET PASSWORD only warns when the account's plugin ignores passwords (unix_socket)."""
        if not statement[0].startswith("SET PASSWORD"):
            return
        warnings = self._rows(conn, "SHOW WARNINGS", (), password)
        if any(row[1] == ER_SET_PASSWORD_AUTH_PLUGIN for row in warnings):
            raise PasswordChangeError(
                f"{conn.features} ignored the new password: the account authenticates with a plugin "
                "that takes no password (e.g. unix_socket); give it mysql_native_password or ed25519"
            )


# -- password methods without TLS ------------------------------------------------------------
# What an impostor on the server's address could ask for to learn the password: mysql_clear_password
# and dialog (PAM) send it as typed; sha256_password encrypts it with a public key the server
# itself sends (an impostor sends its own, and PyMySQL takes a key sent even when one was
# configured); mysql_old_password's scramble gives away a password equivalent.
UNSAFE_WITHOUT_TLS = ("mysql_clear_password", "dialog", "sha256_password", "mysql_old_password")
_FULL_AUTH = b"\x04"  # caching_sha2_password: the server's cache missed, send the password itself


class UnsafeAuthError(pymysql.err.OperationalError):
    """The server asked, without TLS, for a password method the rotator does not answer."""


class _RefusedPlugin:
    """An auth_plugin_map entry that answers nothing: PyMySQL calls it before writing a byte."""

    def __init__(self, plugin: str, conn: Connection[Any]) -> None:
        self.plugin = plugin

    def authenticate(self, pkt: MysqlPacket) -> MysqlPacket:
        raise UnsafeAuthError(CR_AUTH_PLUGIN_ERR, f"the server asked for {self.plugin} without TLS")


class _ScrambleOnly:
    """caching_sha2_password without TLS: its fast path, a scramble, and no more. Its full
    authentication encrypts the password with a public key fetched from the server, which an
    impostor makes; MySQL's own client refuses that too unless told --get-server-public-key."""

    def __init__(self, conn: Connection[Any]) -> None:
        self.conn = conn

    def authenticate(self, pkt: MysqlPacket) -> MysqlPacket | None:
        conn = self.conn
        if pkt.is_auth_switch_request() and conn.password:  # the fast path, as PyMySQL tries it
            nonce = bytes(pkt.read_all()).removesuffix(b"\0")  # type: ignore[no-untyped-call]
            conn.write_packet(_auth.scramble_caching_sha2(conn.password, nonce))
            pkt = conn._read_packet()  # type: ignore[no-untyped-call]
            pkt.check_error()
        if pkt.is_extra_auth_data() and pkt.get_bytes(1) == _FULL_AUTH:
            raise UnsafeAuthError(
                CR_AUTH_PLUGIN_ERR,
                "the server asked for caching_sha2_password's full authentication (the password "
                "encrypted with a public key the server sends) without TLS",
            )
        return _auth.caching_sha2_password_auth(conn, pkt)


def _code(exc: BaseException) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _message(exc: BaseException) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)


handler = MySQLRotator().handle
