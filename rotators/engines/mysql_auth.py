"""MySQL and MariaDB passwords: which server is behind a session (its features), the stored forms
of a password (the hashes each plugin keeps) and the statements that send them. No driver here:
these are pure functions of the server's features, the account and the password.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from rotators.errors import ConfigurationError, DatabaseUnavailableError

MYSQL, MARIADB = "mysql", "mariadb"
ER_NOT_VALID_PASSWORD = 1819  # a password validation plugin refused the password
ER_OPTION_PREVENTS_STATEMENT = 1290  # e.g. --strict-password-validation refusing a hash
Account = tuple[str, str]  # (user, host) as in 'user'@'host'
Statement = tuple[str, tuple[Any, ...] | None]


def account_text(account: Account) -> str:
    return f"'{account[0]}'@'{account[1]}'"


@dataclass(frozen=True)
class Server:
    """The features of a session: the flavour and version the server reports, and what its
    dialect can do. Read once per session, from `SELECT VERSION()` at login."""

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


def validation_needs_clear(code: int | None, message: str) -> bool:
    """Whether the server refused a hash because its password validation must see the value:
    MariaDB's strict_password_validation answers 1290 (the error of every option that prevents a
    statement, hence the message check) or, for some plugins, 1819."""
    return code == ER_NOT_VALID_PASSWORD or (
        code == ER_OPTION_PREVENTS_STATEMENT and "strict-password-validation" in message
    )
