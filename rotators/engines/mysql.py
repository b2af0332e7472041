"""MySQL 5.7/8.x/9.x, Aurora MySQL and MariaDB 10.x/11.x with PyMySQL.

Handler: rotators.engines.mysql.handler. One engine, two dialects, chosen from what the server
says it is in `SELECT VERSION()`: MariaDB 10's handshake claims "5.5.5-10.x", and a MySQL 9 is
not a MySQL 5, so neither the handshake nor a version prefix decides anything.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import pymysql
from pymysql import _auth
from pymysql.connections import Connection
from pymysql.protocol import MysqlPacket

from rotators.database import DatabaseRotator, DatabaseSecret, LoginRefusedError, ca_bundle, tls_mode
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
from rotators.log import logger

MYSQL, MARIADB = "mysql", "mariadb"
# The longest account user name: MySQL 5.7.8+ takes 32 characters, MariaDB 10.x 80 (128 from
# 10.6, but createSecret cannot know the version, so 80 holds on every MariaDB).
MAX_NAME_CHARS = {MYSQL: 32, MARIADB: 80}

ER_ACCESS_DENIED = 1045
ER_PASSWORD_EXPIRED = 1862
ER_NOT_VALID_PASSWORD = 1819  # a password validation plugin refused the password
ER_OPTION_PREVENTS_STATEMENT = 1290  # e.g. --strict-password-validation refusing a hash
ER_SET_PASSWORD_AUTH_PLUGIN = 1699  # a warning: SET PASSWORD ignored (e.g. a unix_socket account)
CLIENT_ERRORS = range(2000, 3000)  # CR_*: the connection failed, not the statement
CR_AUTH_PLUGIN_ERR = 2061  # libmysqlclient's "Authentication requires secure connection"

Account = tuple[str, str]  # (user, host) as in 'user'@'host'
Statement = tuple[str, tuple[Any, ...] | None]
# One privilege on one object: ("SELECT", None, ("shop", "*")), ("UPDATE", "id", ("shop", "orders")),
# ("ROLE", "`reader`", ("", "")) for a role grant; objects other than db.table keep their words.
Atom = tuple[str, str | None, tuple[str, str]]
ALL = "ALL PRIVILEGES"
# Global privileges an application user may hold without administering the server.
_HARMLESS_GLOBAL = {"USAGE", "SHOW DATABASES", "SHOW VIEW", "EXECUTE", "LOCK TABLES", "REPLICATION CLIENT",
                    "BINLOG MONITOR", "SLAVE MONITOR", "REPLICA MONITOR"}  # fmt: skip


@dataclass(frozen=True)
class Server:
    """The flavour and version a server reports, and what its dialect can do."""

    flavour: str
    version: tuple[int, int, int]

    @classmethod
    def from_version(cls, text: str) -> Server:
        """`8.0.36`, `9.1.0`, `8.0.mysql_aurora.3.05.2`, `10.11.6-MariaDB-0+deb12u1`."""
        flavour = MARIADB if "mariadb" in text.lower() else MYSQL
        if flavour == MARIADB:
            text = text.removeprefix("5.5.5-")  # the handshake's disguise, should it ever get here
        match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
        if match is None:
            raise DatabaseUnavailableError(f"Cannot read the server version {text[:60]!r}")
        major, minor, patch = (int(part or 0) for part in match.groups())
        return cls(flavour, (major, minor, patch))

    @property
    def is_mariadb(self) -> bool:
        return self.flavour == MARIADB

    @property
    def has_alter_user(self) -> bool:
        """`ALTER USER ... IDENTIFIED BY` and `SHOW CREATE USER`: MySQL 5.7 (GA since 5.7.9;
        Aurora MySQL 2 reports `5.7.mysql_aurora...`), MariaDB 10.2 on."""
        return self.version >= ((10, 2, 0) if self.is_mariadb else (5, 7, 0))

    @property
    def has_default_role_table(self) -> bool:
        """MySQL 8 keeps default roles out of SHOW GRANTS (MariaDB prints SET DEFAULT ROLE)."""
        return not self.is_mariadb and self.version >= (8, 0, 0)

    def __str__(self) -> str:
        return f"{'MariaDB' if self.is_mariadb else 'MySQL'} {'.'.join(map(str, self.version))}"


@dataclass(frozen=True)
class Session:
    """A connection, the server behind it and the account it logged in as (CURRENT_USER())."""

    conn: Connection[Any]
    server: Server
    account: Account


# -- the dialects: which statement changes a password ---------------------------------------------
# The statements send the password's hash wherever the server takes one for the account's plugin,
# so that a statement log (MariaDB's general_log, audit plugins) never holds the password itself:
# mysql_native_password everywhere, MySQL's caching_sha2_password and MariaDB's ed25519 from the
# master. The clear value goes only where no hash form exists: other plugins, servers without SHOW
# CREATE USER, a MariaDB whose password validation must see the password (strict_password_validation,
# error 1819), and a MySQL account changing its own password, which MySQL allows only as IDENTIFIED
# BY 'clear' (IDENTIFIED WITH ... AS needs CREATE USER); MySQL itself rewrites that password out of
# its general, slow and binary logs. Every statement keeps the account's plugin.
NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
ED25519 = "ed25519"
_CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# SHA-crypt's output order: each group of three digest bytes makes four characters.
_CRYPT_ORDER = ((0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
                (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29))  # fmt: skip
SHA2_ROUNDS = 5  # thousands: caching_sha2_password's default ("$A$005$")


def native_hash(password: str) -> str:
    """mysql_native_password's stored form, as PASSWORD() makes it: '*' and SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the plugin's own scheme
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


def _repeat(block: bytes, size: int) -> bytes:
    return (block * (size // len(block) + 1))[:size]


def sha256_crypt(key: bytes, salt: bytes, rounds: int) -> str:
    """SHA-crypt's SHA-256 digest (Drepper's `$5$` scheme), 43 characters. MySQL's stored form
    uses it with a 20-byte salt, which the usual libraries cut to 16, hence our own."""
    digest = hashlib.sha256(key + salt + key).digest()
    mixed = hashlib.sha256(key + salt + _repeat(digest, len(key)))
    bits = len(key)
    while bits:
        mixed.update(digest if bits & 1 else key)
        bits >>= 1
    digest = mixed.digest()
    p_bytes = _repeat(hashlib.sha256(key * len(key)).digest(), len(key))
    s_bytes = _repeat(hashlib.sha256(salt * (16 + digest[0])).digest(), len(salt))
    for i in range(rounds):
        block = p_bytes if i & 1 else digest
        block += (s_bytes if i % 3 else b"") + (p_bytes if i % 7 else b"")
        digest = hashlib.sha256(block + (digest if i & 1 else p_bytes)).digest()
    groups = [(digest[a] << 16 | digest[b] << 8 | digest[c], 4) for a, b, c in _CRYPT_ORDER]
    groups.append((digest[31] << 8 | digest[30], 3))
    return "".join(_CRYPT64[(word >> 6 * i) & 63] for word, count in groups for i in range(count))


def caching_sha2_hash(password: str, salt: str | None = None) -> str:
    """caching_sha2_password's stored form: `$A$005$`, a 20-character salt, the SHA-crypt digest."""
    salt = salt or "".join(secrets.choice(_CRYPT64) for _ in range(20))
    digest = sha256_crypt(password.encode(), salt.encode(), SHA2_ROUNDS * 1000)
    return f"$A${SHA2_ROUNDS:03X}${salt}{digest}"


def ed25519_key(password: str) -> str:
    """MariaDB ed25519's stored form: the public key of the password's SHA-512 (as its client
    signs with it), base64 without padding. PyNaCl is what PyMySQL logs in with on such accounts."""
    try:
        from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp
    except ImportError:
        raise ConfigurationError(
            "An ed25519 account needs PyNaCl (PyMySQL logs in with it): install rotators[mysql]"
        ) from None
    scalar = bytearray(hashlib.sha512(password.encode()).digest()[:32])
    scalar[0] &= 248
    scalar[31] = (scalar[31] & 127) | 64
    return base64.b64encode(crypto_scalarmult_ed25519_base_noclamp(bytes(scalar))).decode().rstrip("=")


def hashed(server: Server, plugin: str | None, password: str) -> tuple[str, str] | None:
    """The IDENTIFIED clause that stores `password` by its hash for the account's plugin, and the
    hash; None where the server takes only the clear value for that plugin."""
    if plugin == NATIVE:
        clause = "IDENTIFIED BY PASSWORD %s" if server.is_mariadb else f"IDENTIFIED WITH {NATIVE} AS %s"
        return clause, native_hash(password)
    if plugin == CACHING_SHA2 and not server.is_mariadb:
        return f"IDENTIFIED WITH {CACHING_SHA2} AS %s", caching_sha2_hash(password)
    if plugin == ED25519 and server.is_mariadb:
        return f"IDENTIFIED VIA {ED25519} USING %s", ed25519_key(password)
    return None


def auth_plugin(create_user: str, server: Server) -> str | None:
    """The one authentication plugin of `SHOW CREATE USER`; None for several (MariaDB's `VIA a OR
    b`). MariaDB prints no IDENTIFIED clause for a native account without a password."""
    words = [word.group() for word in _words(create_user)]
    upper = [word.upper() for word in words]
    if "IDENTIFIED" not in upper:
        return NATIVE if server.is_mariadb else None
    at = upper.index("IDENTIFIED")
    if "OR" in upper[at:]:
        return None
    following = upper[at + 1 : at + 3]
    if following == ["BY", "PASSWORD"]:
        return NATIVE
    if following[:1] in (["WITH"], ["VIA"]) and at + 2 < len(words):
        return _unquote(words[at + 2]).lower()
    return None


def own_password(
    server: Server, account: Account, password: str, plugin: str | None = None, *, clear: bool = False
) -> Statement:
    """Change the logged-in account's own password, which needs no privilege. MariaDB's SET
    PASSWORD keeps the plugin and takes its stored form (its ALTER USER needs CREATE USER even for
    oneself, error 1227); MySQL takes only the clear value from an account on itself."""
    if server.is_mariadb and not clear and (found := hashed(server, plugin, password)):
        return "SET PASSWORD = %s", (found[1],)
    if server.is_mariadb or not server.has_alter_user:
        return "SET PASSWORD = PASSWORD(%s)", (password,)
    return "ALTER USER %s@%s IDENTIFIED BY %s", (*account, password)


def account_password(
    server: Server, account: Account, password: str, plugin: str | None = None, *, clear: bool = False
) -> Statement:
    """Change another account's password, as the master user, keeping its plugin: MySQL's ALTER
    USER ... IDENTIFIED BY keeps it, MariaDB's does not (SET PASSWORD FOR does)."""
    found = None if clear or not server.has_alter_user else hashed(server, plugin, password)
    if found is not None:
        return f"ALTER USER %s@%s {found[0]}", (*account, found[1])
    if server.has_alter_user and not server.is_mariadb:
        return "ALTER USER %s@%s IDENTIFIED BY %s", (*account, password)
    return "SET PASSWORD FOR %s@%s = PASSWORD(%s)", (*account, password)


def create_user(
    server: Server, account: Account, password: str, plugin: str | None = None, *, clear: bool = False
) -> Statement:
    """Create the clone with the source's plugin where its stored form can be sent (or, on MariaDB,
    its ed25519 from the clear value), else with the server's default plugin."""
    found = None if clear or not server.has_alter_user else hashed(server, plugin, password)
    if found is not None:
        return f"CREATE USER %s@%s {found[0]}", (*account, found[1])
    if server.is_mariadb and plugin == ED25519:
        return f"CREATE USER %s@%s IDENTIFIED VIA {ED25519} USING PASSWORD(%s)", (*account, password)
    return "CREATE USER %s@%s IDENTIFIED BY %s", (*account, password)


# -- SHOW GRANTS, parsed: the same privileges replayed for another account --------------------------
_TOKEN = re.compile(
    r"`(?:[^`]|``)*`"  # `identifier`
    r"|'(?:[^'\\]|\\.|'')*'"  # 'string'
    r'|"(?:[^"\\]|\\.|"")*"'  # "ANSI identifier"
    r"|\d+\.\d+|[A-Za-z0-9_$]+|\s+|.",  # 1.500000 (MAX_STATEMENT_TIME) is one word
    re.S,
)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_KEYWORD = {"GRANT": "TO", "REVOKE": "FROM", "SET": "FOR"}
# What may follow REQUIRE or the resource limits in SHOW CREATE USER.
_OPTION_END = {"PASSWORD", "ACCOUNT", "COMMENT", "ATTRIBUTE", "DEFAULT", "FAILED_LOGIN_ATTEMPTS"}
_LIMITS = ("MAX_QUERIES_PER_HOUR", "MAX_UPDATES_PER_HOUR", "MAX_CONNECTIONS_PER_HOUR", "MAX_USER_CONNECTIONS")


def _words(text: str) -> list[re.Match[str]]:
    return [token for token in _TOKEN.finditer(text) if not token.group().isspace()]


def _unquote(token: str) -> str:
    if token[:1] == "`":
        return token[1:-1].replace("``", "`")
    if token[:1] in ("'", '"'):
        quote = token[0]
        return re.sub(
            r"\\(.)|" + quote * 2,
            lambda m: quote if m.group(1) is None else _ESCAPES.get(m.group(1), m.group(1)),
            token[1:-1],
            flags=re.S,
        )
    return token


def _kept(text: str, words: Sequence[re.Match[str]], keep: Sequence[bool]) -> str:
    """The kept words as the server wrote them: runs of adjacent kept words keep their spacing."""
    parts: list[str] = []
    start: int | None = None
    end = 0
    for word, wanted in zip(words, keep, strict=True):
        if wanted:
            start = word.start() if start is None else start
            end = word.end()
        elif start is not None:
            parts.append(text[start:end])
            start = None
    if start is not None:
        parts.append(text[start:end])
    return " ".join(parts)


def _unparsable(line: str) -> PasswordChangeError:
    return PasswordChangeError(
        f"Cannot parse the SHOW GRANTS line {line[:80]!r}: nothing was copied; report it, or give the "
        "clone its privileges by hand and rotate again"
    )


@dataclass(frozen=True)
class Grant:
    """One SHOW GRANTS line without its grantee (and without any IDENTIFIED clause, which holds a
    password hash): `head` keyword <account> `tail`, e.g. "GRANT SELECT ON `shop`.*" TO ... "WITH
    GRANT OPTION". Head and tail are the server's own text, replayed as it printed them."""

    head: str
    keyword: str
    tail: str

    @classmethod
    def parse(cls, line: str, grantee: Account) -> Grant:
        words = _words(line)
        keyword = _KEYWORD.get(words[0].group().upper()) if words else None
        at = next((i for i, w in enumerate(words) if keyword and w.group().upper() == keyword), None)
        if keyword is None or at is None or at + 1 >= len(words):
            raise _unparsable(line)
        user, host, end = _unquote(words[at + 1].group()), "", words[at + 1].end()
        if at + 3 < len(words) and words[at + 2].group() == "@":
            host, end = _unquote(words[at + 3].group()), words[at + 3].end()
        if (user, host) != grantee:
            raise _unparsable(line)
        rest = line[end:]
        after, keep, skipping = _words(rest), [], False
        for word in after:
            upper = word.group().upper()
            skipping = upper == "IDENTIFIED" or (skipping and upper not in ("REQUIRE", "WITH"))
            keep.append(not skipping)
        return cls(line[: words[at].start()].strip(), keyword, _kept(rest, after, keep))

    def to(self, account: str) -> str:
        return " ".join(part for part in (self.head, self.keyword, account, self.tail) if part)

    @property
    def key(self) -> tuple[str, ...]:
        """For comparison: the server lists a grant's columns in no fixed order."""
        parts, group = [], None
        for word in _words(self.head):
            text = word.group()
            if text == "(":
                group = [""]
            elif group is not None and text == ")":
                parts.append("(" + ",".join(sorted(group)) + ")")
                group = None
            elif group is not None and text == ",":
                group.append("")
            elif group is not None:
                group[-1] += text
            else:
                parts.append(text)
        return (" ".join(parts), self.keyword, self.tail)

    @property
    def default_role(self) -> str | None:
        """The role of a MariaDB `SET DEFAULT ROLE r FOR ...` line."""
        return self.head.split(None, 3)[3] if self.is_default_role else None

    @property
    def roles(self) -> set[str]:
        """The roles of a role grant, as written."""
        if not self.is_role_grant:
            return set()
        return {part.strip() for part in self.head.split(None, 1)[1].split(",")}

    @property
    def _head_words(self) -> list[str]:
        return [w.group().upper() for w in _words(self.head)]

    @property
    def is_role_grant(self) -> bool:
        words = self._head_words
        return words[0] == "GRANT" and "ON" not in words

    @property
    def is_proxy(self) -> bool:
        return self._head_words[:2] == ["GRANT", "PROXY"]

    @property
    def is_default_role(self) -> bool:
        return self._head_words[0] == "SET"

    @property
    def atoms(self) -> set[Atom]:
        """The single privileges this line grants, for comparing what two accounts may do."""
        words = [w.group() for w in _words(self.head)]
        if not words or words[0].upper() != "GRANT":
            return set()  # SET DEFAULT ROLE grants nothing
        upper = [w.upper() for w in words]
        on = upper.index("ON") if "ON" in upper else len(words)
        target = _object(words[on + 1 :])
        names: list[tuple[str, list[str]]] = [("", [])]
        in_columns = False
        for word in words[1:on]:
            if word in "()":
                in_columns = word == "("
            elif word == ",":
                if not in_columns:
                    names.append(("", []))
            elif in_columns:
                names[-1][1].append(_unquote(word))
            else:  # privilege names are words apart; a role is `name`@`host`, written together
                space = " " if on < len(words) else ""
                names[-1] = ((names[-1][0] + space + word).strip(), names[-1][1])
        found: set[Atom] = set()
        for name, columns in names:
            privilege = name.upper() if on < len(words) else "ROLE"
            item = None if on < len(words) else name
            if privilege == "ALL":
                privilege = ALL
            parts: list[str | None] = [*columns] or [item]
            found.update((privilege, part, target) for part in parts)
        if re.search(r"\b(GRANT|ADMIN) OPTION\b", self.tail, re.I):
            found.add(("GRANT OPTION", None, target))
        return {atom for atom in found if atom[0] != "USAGE"}

    def undo(self, account: str) -> str | None:
        """Take back what REVOKE ALL PRIVILEGES, GRANT OPTION may leave: default roles, roles
        (MariaDB revokes them with ALL, so they go first) and proxy grants."""
        if self.is_role_grant or self.is_proxy:
            return f"REVOKE {self.head.split(None, 1)[1]} FROM {account}"
        if self.is_default_role:
            return f"SET DEFAULT ROLE NONE FOR {account}"
        return None


def _object(words: Sequence[str]) -> tuple[str, str]:
    """`shop`.* -> ("shop", "*"); a PROCEDURE or PROXY object keeps its words."""
    if len(words) == 3 and words[1] == ".":
        return (_unquote(words[0]), _unquote(words[2]))
    return (" ".join(words), "")


def _covers(held: set[Atom], atom: Atom) -> bool:
    """Whether `held` grants `atom`: ALL PRIVILEGES holds every privilege but GRANT OPTION, a
    database or global grant holds its tables, a table grant holds its columns."""
    privilege, column, (db, table) = atom
    for have, have_column, (have_db, have_table) in held:
        if have != privilege and not (have == ALL and privilege not in ("GRANT OPTION", "ROLE")):
            continue
        if have_column is not None and have_column != column:
            continue
        if (have_db, have_table) == (db, table) or have_db == "*" or (have_db == db and have_table == "*"):
            return True
    return False


def beyond(held: Privileges, other: Privileges) -> list[str]:
    """What `held` grants that `other` does not, in words."""
    theirs = set().union(*(grant.atoms for grant in other.grants))
    mine = set().union(*(grant.atoms for grant in held.grants))
    return sorted({_atom_text(atom) for atom in mine if not _covers(theirs, atom)})


def administrative(privileges: Privileges) -> list[str]:
    """Grants that administer the server: global ones (beyond monitoring), anything but SELECT on
    the `mysql` schema (its tables hold every account), PROXY, and GRANT OPTION on *.*."""
    found = set()
    for privilege, column, (db, table) in set().union(*(grant.atoms for grant in privileges.grants)):
        if (db == "*" and privilege not in _HARMLESS_GLOBAL) or (db == "mysql" and privilege != "SELECT"):
            found.add(_atom_text((privilege, column, (db, table))))
        elif privilege == "PROXY":
            found.add("PROXY")
    return sorted(found)


def _atom_text(atom: Atom) -> str:
    privilege, column, (db, table) = atom
    if privilege == "ROLE":
        return f"role {column}"
    where = f"{db}.{table}" if table else db
    return f"{privilege}{f' ({column})' if column else ''} ON {where}"


def account_options(create_user: str, server: Server) -> str:
    """REQUIRE and the resource limits of `SHOW CREATE USER`, as one ALTER USER clause that sets
    every limit, so that a replay also clears what the source does not have."""
    words = _words(create_user)
    upper = [word.group().upper() for word in words]
    in_require: list[bool] = []
    limits = dict.fromkeys(_LIMITS + (("MAX_STATEMENT_TIME",) if server.is_mariadb else ()), "0")
    section = ""
    for index, word in enumerate(upper):
        previous = upper[index - 1] if index else ""
        following = upper[index + 1] if index + 1 < len(upper) else ""
        if word == "REQUIRE" and previous != "PASSWORD":  # not MySQL 8's PASSWORD REQUIRE CURRENT
            section = "require"
        elif word == "WITH" and following.startswith("MAX_"):
            section = "limits"
        elif word in _OPTION_END or word in ("IDENTIFIED", "WITH"):
            section = ""
        elif section == "limits" and word.startswith("MAX_") and re.fullmatch(r"[\d.]+", following):
            limits[word] = following
        in_require.append(section == "require" and word != "REQUIRE")
    settings = " ".join(f"{name} {value}" for name, value in limits.items())
    return f"REQUIRE {_kept(create_user, words, in_require) or 'NONE'} WITH {settings}"


@dataclass(frozen=True)
class Privileges:
    """Everything an account holds that a clone must hold too."""

    grants: tuple[Grant, ...]
    options: str | None  # REQUIRE ... WITH <limits>, where the server has ALTER USER
    default_roles: tuple[str, ...] | None  # MySQL 8: 'role'@'host' literals

    def same_as(self, other: Privileges | None) -> bool:
        return (
            other is not None
            and {g.key for g in self.replayable} == {g.key for g in other.replayable}
            and (self.options, self.default_roles) == (other.options, other.default_roles)
        )

    @property
    def replayable(self) -> list[Grant]:
        """The grants in SHOW GRANTS order, without a default role the account no longer holds
        (MariaDB keeps printing it after REVOKE, and refuses to set it for the clone)."""
        held = set().union(*(grant.roles for grant in self.grants))
        return [g for g in self.grants if g.default_role is None or g.default_role in held]


class MySQLRotator(DatabaseRotator[Session]):
    kind = "mysql"
    engines = frozenset({MYSQL, "aurora-mysql", MARIADB})
    default_port = 3306
    default_dbname = ""  # none: log in without choosing a database
    max_username_bytes = 3 * MAX_NAME_CHARS[MARIADB]  # utf8mb3 names; the real check counts characters

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Session]:
        try:
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
        except UnsafeAuthError as exc:
            raise LoginError(
                f"Did not log in as {shown(username)} at {secret.host}:{secret.port}: {_message(exc)}, which "
                "would hand the password to whoever answers on that address. Without TLS the rotator "
                "answers only mysql_native_password, client_ed25519 and caching_sha2_password's fast "
                'path: use TLS (drop "ssl": false), or give the account one of those plugins'
            ) from None
        except pymysql.MySQLError as exc:
            code, message = _code(exc), redact(_message(exc), [password])
            if code == ER_ACCESS_DENIED:
                raise LoginRefusedError(f"MySQL refused the login of {shown(username)}") from None
            if code == ER_PASSWORD_EXPIRED:
                raise LoginError(
                    f"The password of {shown(username)} has expired, so it can log in to change nothing: "
                    "reset it to the AWSCURRENT value (ALTER USER ... IDENTIFIED BY) and rotate again"
                ) from None
            raise DatabaseUnavailableError(
                f"Cannot connect to MySQL at {secret.host}:{secret.port}: {message}"
            ) from None
        try:
            version, current = _fetch(conn, "SELECT VERSION(), CURRENT_USER()", password)[0]
            user, _, host = str(current).rpartition("@")
            yield Session(conn, Server.from_version(str(version)), (user, host))
        finally:
            with suppress(Exception):
                conn.close()

    @staticmethod
    def tls_options(secret: DatabaseSecret) -> dict[str, Any]:
        """An SSLContext of our own: PyMySQL would not verify anything when given no CA."""
        mode = tls_mode(secret)
        if mode is None:
            return {"ssl_disabled": True}
        bundle = ca_bundle(secret)
        try:
            context = ssl.create_default_context(cafile=bundle)
        except OSError:
            raise ConfigurationError(
                f"The CA bundle {bundle!r} cannot be read: fix 'sslrootcert' or ROTATORS_CA_BUNDLE"
            ) from None
        context.check_hostname = mode == "verify-full"
        if mode == "require":
            context.verify_mode = ssl.CERT_NONE
        return {"ssl": context}

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
            plugin = self._plugin(conn, account) if conn.server.is_mariadb else None
            make = partial(own_password, conn.server, account, password)
        else:
            account = (username, self._host_of(conn, username))
            plugin = self._plugin(conn, account)
            make = partial(account_password, conn.server, account, password)
        statement = self._send_password(conn, make, plugin, password)
        self._check_applied(conn, statement, password)
        logger.info(f"password of {_account_text(account)} changed on {conn.server}")

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
            make = partial(create_user, conn.server, clone_account, password)
            self._send_password(conn, make, self._plugin(conn, source_account), password)
        statements = self._privilege_statements(conn, source_account, clone_account, fresh=not exists)
        self._execute(conn, [(s, None) for s in statements], password)
        if exists:
            make = partial(account_password, conn.server, clone_account, password)
            self._send_password(conn, make, self._plugin(conn, clone_account), password)
        logger.info(
            f"{_account_text(clone_account)} {'updated' if exists else 'created'}; privileges of "
            f"{_account_text(source_account)} {'copied' if statements else 'already held'} "
            f"({len(statements)} statements)"
        )

    def _plugin(self, conn: Session, account: Account) -> str | None:
        """The account's one authentication plugin, from SHOW CREATE USER (which an account may
        run on itself without privileges); None where the server has no such statement."""
        if not conn.server.has_alter_user:
            return None
        rows = self._rows(conn, "SHOW CREATE USER %s@%s", account)
        return auth_plugin(str(rows[0][0]), conn.server) if rows else None

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
                if statement == clear or not _validation_needs_clear(exc):
                    raise _statement_error(exc, password) from None
            logger.warning(
                f"{conn.server} refused the password's hash (strict_password_validation: its "
                "password validation must see the value): the clear value was sent, so its statement "
                "log may hold it"
            )
            try:
                cursor.execute(*clear)
            except pymysql.MySQLError as exc:
                raise _statement_error(exc, password) from None
        return clear

    def _privilege_statements(
        self, conn: Session, source: Account, clone: Account, *, fresh: bool
    ) -> list[str]:
        """What makes the clone's privileges the source's: nothing when they match; a replay for a
        fresh clone; for one that drifted, everything taken back first, then the replay."""
        wanted = self._privileges(conn, source)
        held = None if fresh else self._privileges(conn, clone)
        if wanted.same_as(held):
            return []
        target = self._account_sql(conn, clone)
        statements: list[str] = []
        if held is not None:
            if held.default_roles:
                statements.append(f"SET DEFAULT ROLE NONE TO {target}")
            undone = sorted(held.grants, key=lambda grant: not grant.is_default_role)
            statements += [undo for grant in undone if (undo := grant.undo(target))]
            statements.append(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {target}")
        if wanted.options is not None:
            statements.append(f"ALTER USER {target} {wanted.options}")
        statements += [grant.to(target) for grant in wanted.replayable]
        if wanted.default_roles:
            statements.append(f"SET DEFAULT ROLE {', '.join(wanted.default_roles)} TO {target}")
        return statements

    # -- the master's safety rules -----------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> str:
        """Account names compare with trailing spaces ignored (a PAD SPACE collation)."""
        return username.rstrip(" ")

    def admin_power(self, conn: Session, username: str) -> list[str]:
        found = administrative(self._privileges(conn, (username, self._host_of(conn, username))))
        return [f"{shown(username)} holds {', '.join(found)}"] if found else []

    def clone_mismatch(self, conn: Session, source: str, clone: str) -> list[str]:
        """An existing clone (at the source's host) may hold only what the source holds: missing
        grants are added on every rotation, extra ones are never taken over."""
        host = self._host_of(conn, source)
        if not self._rows(conn, "SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", (clone, host)):
            return []
        extra = beyond(self._privileges(conn, (clone, host)), self._privileges(conn, (source, host)))
        return [f"{shown(clone)} holds what {shown(source)} does not: {', '.join(extra)}"] if extra else []

    def clone_lacks(self, conn: Session, source: str, clone: str) -> list[str]:
        wanted = self._privileges(conn, (source, self._host_of(conn, source)))
        missing = beyond(wanted, self._privileges(conn, (clone, self._host_of(conn, clone))))
        return [f"{shown(clone)} lacks what {shown(source)} holds: {', '.join(missing)}"] if missing else []

    # -- testSecret -------------------------------------------------------------------------
    def probe(self, conn: Session, username: str) -> None:
        current, two = self._rows(conn, "SELECT CURRENT_USER(), 1 + 1", ())[0]
        if str(current).rpartition("@")[0] != username or two != 2:
            raise SecretTestError(f"The test query did not run as {shown(username)}")

    # -- `rotators check` -------------------------------------------------------------------
    def transport(self, conn: Session, secret: DatabaseSecret) -> str:
        rows = self._rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'", ())
        version = str(rows[0][1]) if rows else ""
        if not version:
            return "plaintext, as the secret asks"
        mode = tls_mode(secret)
        verified = (
            "certificate verified" if mode and mode.startswith("verify") else "certificate NOT verified"
        )
        return f"TLS ({version}, sslmode={mode}, {verified})"

    def change_privileges(self, conn: Session, username: str, *, as_master: bool) -> str | None:
        if not as_master:
            if conn.account[0] != username:
                return f"the login matched the account {_account_text(conn.account)}, not {shown(username)}"
            return None
        try:
            self._host_of(conn, username)
            grants = self._privileges(conn, conn.account).grants
        except RotationError as exc:
            return str(exc)
        for grant in grants:
            head = grant.head.upper()
            if head.endswith(" ON *.*") and ("ALL PRIVILEGES" in head or "CREATE USER" in head):
                return None
        return "the master user lacks CREATE USER (GRANT CREATE USER ON *.* TO <master> WITH GRANT OPTION)"

    # -- helpers ----------------------------------------------------------------------------
    def _host_of(self, conn: Session, user: str) -> str:
        """The host part of `user`'s one account; several accounts make the target ambiguous."""
        query = "SELECT Host FROM mysql.user WHERE User = %s"
        if conn.server.is_mariadb:
            query += " AND is_role <> 'Y'"
        hosts = sorted(str(row[0]) for row in self._rows(conn, query, (user,)))
        if len(hosts) == 1:
            return hosts[0]
        if not hosts:
            raise PasswordChangeError(
                f"{conn.server} has no account for user {shown(user)}: create it, or fix 'username'"
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
        if conn.server.has_alter_user:
            create = self._rows(conn, "SHOW CREATE USER %s@%s", account)
            options = account_options(str(create[0][0]), conn.server)
        roles = None
        if conn.server.has_default_role_table:
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

    @staticmethod
    def _rows(conn: Session, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return _fetch(conn.conn, query, "", args)

    @staticmethod
    def _execute(conn: Session, statements: Sequence[Statement], password: str) -> None:
        with conn.conn.cursor() as cursor:
            for query, args in statements:
                try:
                    cursor.execute(query, args)
                except pymysql.MySQLError as exc:
                    raise _statement_error(exc, password) from None

    @staticmethod
    def _check_applied(conn: Session, statement: Statement, password: str) -> None:
        """SET PASSWORD only warns when the account's plugin ignores passwords (unix_socket)."""
        if not statement[0].startswith("SET PASSWORD"):
            return
        warnings = _fetch(conn.conn, "SHOW WARNINGS", password)
        if any(row[1] == ER_SET_PASSWORD_AUTH_PLUGIN for row in warnings):
            raise PasswordChangeError(
                f"{conn.server} ignored the new password: the account authenticates with a plugin "
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


def _account_text(account: Account) -> str:
    return f"'{account[0]}'@'{account[1]}'"


def _code(exc: BaseException) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _message(exc: BaseException) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)


def _validation_needs_clear(exc: BaseException) -> bool:
    """MariaDB refuses a hash under strict_password_validation with error 1290 (the error of every
    option that prevents a statement, hence the message check) or, for some plugins, 1819."""
    code = _code(exc)
    return code == ER_NOT_VALID_PASSWORD or (
        code == ER_OPTION_PREVENTS_STATEMENT and "strict-password-validation" in _message(exc)
    )


def _statement_error(exc: BaseException, password: str) -> RotationError:
    code, message = _code(exc), redact(_message(exc), [password])
    if code in CLIENT_ERRORS:
        return DatabaseUnavailableError(f"Lost the connection to MySQL: {message}")
    return PasswordChangeError(f"MySQL refused the change (error {code}): {message}")


def _fetch(
    conn: Connection[Any], query: str, password: str, args: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        try:
            cursor.execute(query, args or None)
        except pymysql.MySQLError as exc:
            raise _statement_error(exc, password) from None
        return list(cursor.fetchall())


handler = MySQLRotator().handle
