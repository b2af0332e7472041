"""The MySQL engine without a server: dialects, SHOW GRANTS parsing, TLS options, error mapping,
and the exact statements setSecret sends to MySQL 8/9 (no MySQL server can run here), recorded
at the driver boundary with PyMySQL's own escaping."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pymysql
import pytest
from pymysql.converters import escape_string

from rotators import errors
from rotators.database import DatabaseSecret, LoginRefusedError
from rotators.engines.mysql import MySQLRotator, Session
from rotators.engines.mysql_auth import (
    CACHING_SHA2,
    ED25519,
    NATIVE,
    Server,
    account_password,
    caching_sha2_hash,
    create_user,
    ed25519_key,
    native_hash,
    own_password,
    sha256_crypt,
)
from rotators.engines.mysql_grants import Grant, account_options, auth_plugin
from rotators.secrets import AWSCURRENT, AWSPREVIOUS
from tests.offline import FakeSecretsManager, create_then_set, make_pending, redacted, store

NEW = "New-Pass'word-2"
NEW_LITERAL = "'New-Pass\\'word-2'"
NEW_HASH = "*" + hashlib.sha1(hashlib.sha1(NEW.encode()).digest()).hexdigest().upper()  # PASSWORD(NEW)
MYSQL8 = Server("mysql", (8, 0, 36))
MARIADB_NATIVE_APP = (
    "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*0123456789ABCDEF0123456789ABCDEF01234567'"
)
MARIADB = Server("mariadb", (10, 11, 6))
# What MariaDB 10.11 answers a hash under strict_password_validation (seen live: test_statement_logs).
STRICT_VALIDATION = (
    "The MariaDB server is running with the --strict-password-validation option "
    "so it cannot execute this statement"
)


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "mysql", "host": "db", "username": "app", "password": "Old-Pass-1", **changes}
    return MySQLRotator().parse(json.dumps(value), where="the test secret")


# -- which server, which dialect -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reported", "flavour", "version"),
    [
        ("8.0.36", "mysql", (8, 0, 36)),
        ("9.1.0-commercial", "mysql", (9, 1, 0)),
        ("5.7.44-log", "mysql", (5, 7, 44)),
        ("8.0.mysql_aurora.3.05.2", "mysql", (8, 0, 0)),
        ("5.7.mysql_aurora.2.11.2", "mysql", (5, 7, 0)),
        ("10.11.6-MariaDB-0+deb12u1", "mariadb", (10, 11, 6)),
        ("11.4.2-MariaDB-log", "mariadb", (11, 4, 2)),
        ("5.5.5-10.6.16-MariaDB", "mariadb", (10, 6, 16)),  # MariaDB 10's handshake disguise
    ],
)
def test_the_server_is_read_from_what_it_reports(
    reported: str, flavour: str, version: tuple[int, ...]
) -> None:
    assert Server.from_version(reported) == Server(flavour, version)  # type: ignore[arg-type]


def test_an_unreadable_version_is_a_typed_error() -> None:
    with pytest.raises(errors.DatabaseUnavailableError, match="server version"):
        Server.from_version("unknown")


@pytest.mark.parametrize(
    ("server", "own", "other"),
    [
        (
            Server("mysql", (9, 1, 0)),
            "ALTER USER %s@%s IDENTIFIED BY %s",
            "ALTER USER %s@%s IDENTIFIED BY %s",
        ),
        (MYSQL8, "ALTER USER %s@%s IDENTIFIED BY %s", "ALTER USER %s@%s IDENTIFIED BY %s"),
        (
            Server("mysql", (5, 7, 0)),
            "ALTER USER %s@%s IDENTIFIED BY %s",
            "ALTER USER %s@%s IDENTIFIED BY %s",
        ),
        (Server("mysql", (5, 6, 51)), "SET PASSWORD = PASSWORD(%s)", "SET PASSWORD FOR %s@%s = PASSWORD(%s)"),
        (MARIADB, "SET PASSWORD = PASSWORD(%s)", "SET PASSWORD FOR %s@%s = PASSWORD(%s)"),
        (
            Server("mariadb", (10, 1, 48)),
            "SET PASSWORD = PASSWORD(%s)",
            "SET PASSWORD FOR %s@%s = PASSWORD(%s)",
        ),
    ],
)
def test_the_password_statement_of_each_dialect(server: Server, own: str, other: str) -> None:
    """MySQL 8 and 9 have no PASSWORD(); MariaDB's ALTER USER needs CREATE USER even for oneself,
    and its IDENTIFIED BY would give the account mysql_native_password (SET PASSWORD keeps the plugin)."""
    assert own_password(server, ("app", "10.0.%"), NEW)[0] == own
    assert account_password(server, ("app", "10.0.%"), NEW)[0] == other
    if "PASSWORD(" not in own:
        assert own_password(server, ("app", "10.0.%"), NEW)[1] == ("app", "10.0.%", NEW), "the exact account"


def test_the_native_hash_is_what_password_makes() -> None:
    """MariaDB's documented example: PASSWORD('notagoodpwd')."""
    assert native_hash("notagoodpwd") == "*3A70EE9FC6594F88CE9E959CD51C5A1C002DC937"


@pytest.mark.parametrize(
    ("server", "create", "plugin"),
    [
        (MARIADB, MARIADB_NATIVE_APP, NATIVE),
        (MARIADB, "CREATE USER `app`@`%`", NATIVE),  # no password: MariaDB prints no IDENTIFIED
        (MARIADB, "CREATE USER `app`@`%` IDENTIFIED VIA ed25519 USING 'x OR y'", "ed25519"),
        (MARIADB, "CREATE USER `app`@`%` IDENTIFIED VIA ed25519 USING 'x' OR unix_socket", None),
        (MYSQL8, "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$x'",
         "caching_sha2_password"),
        (MYSQL8, "CREATE USER `app`@`%` IDENTIFIED WITH 'mysql_native_password' AS '*AB' REQUIRE NONE",
         NATIVE),
        (Server("mysql", (5, 7, 44)),
         "CREATE USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*AB' REQUIRE NONE", NATIVE),
        (MYSQL8, "CREATE USER `app`@`%` REQUIRE NONE", None),
    ],
)  # fmt: skip
def test_the_plugin_is_read_from_show_create_user(server: Server, create: str, plugin: str | None) -> None:
    assert auth_plugin(create, server) == plugin


@pytest.mark.parametrize(
    ("server", "own", "other", "create"),
    [
        (MARIADB, "SET PASSWORD = %s", "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
         "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s"),
        (MYSQL8, "ALTER USER %s@%s IDENTIFIED BY %s",  # MySQL: AS '<hash>' on oneself needs CREATE USER
         "ALTER USER %s@%s IDENTIFIED WITH mysql_native_password AS %s",
         "CREATE USER %s@%s IDENTIFIED WITH mysql_native_password AS %s"),
        (Server("mysql", (5, 7, 44)), "ALTER USER %s@%s IDENTIFIED BY %s",
         "ALTER USER %s@%s IDENTIFIED WITH mysql_native_password AS %s",
         "CREATE USER %s@%s IDENTIFIED WITH mysql_native_password AS %s"),
    ],
)  # fmt: skip
def test_native_accounts_are_sent_the_hash(server: Server, own: str, other: str, create: str) -> None:
    account = ("app", "10.0.%")
    assert own_password(server, account, NEW, NATIVE)[0] == own
    assert account_password(server, account, NEW, NATIVE) == (other, (*account, NEW_HASH))
    assert create_user(server, account, NEW, NATIVE) == (create, (*account, NEW_HASH))
    for plugin in ("sha256_password", "parsec", None):
        assert account_password(server, account, NEW, plugin)[1] == (*account, NEW)
        assert create_user(server, account, NEW, plugin) == (
            "CREATE USER %s@%s IDENTIFIED BY %s",
            (*account, NEW),
        )


def test_mysql_caching_sha2_accounts_are_sent_their_stored_form() -> None:
    """From the master: `$A$005$`, a salt of 20, the SHA-crypt digest; never the password."""
    account = ("app", "10.0.%")
    statement, args = account_password(MYSQL8, account, NEW, CACHING_SHA2)
    assert args is not None
    user, host, stored = args
    assert statement == "ALTER USER %s@%s IDENTIFIED WITH caching_sha2_password AS %s"
    assert (user, host) == account and NEW not in stored
    assert stored.startswith("$A$005$") and len(stored) == 70
    assert stored == caching_sha2_hash(NEW, stored[7:27]), "the digest of this password and salt"
    assert create_user(MYSQL8, account, NEW, CACHING_SHA2)[0].endswith(
        "IDENTIFIED WITH caching_sha2_password AS %s"
    )
    assert own_password(MYSQL8, account, NEW, CACHING_SHA2) == (
        "ALTER USER %s@%s IDENTIFIED BY %s",
        (*account, NEW),
    )
    assert caching_sha2_hash(NEW) != caching_sha2_hash(NEW), "a fresh salt each time"


def test_sha256_crypt_is_the_one_of_glibc_and_of_mysql() -> None:
    """glibc's crypt() made the first (a 16-byte salt, 5000 rounds); a MySQL 8 server stored the
    second for the password `foobar`, its 20-byte salt holding control characters."""
    assert (
        sha256_crypt(b"Rotate-Me 9", b"saltsaltsaltsalt", 5000)
        == "1PKC9v46TfoClzYEqkR4h8PYI3.w90954OHnHbNyCD."
    )
    stored = bytes.fromhex(
        "24412430303524031A69251C34295C4B35167C7F1E5A7B63091349503974624D34504B5A4246793548"
        "56336868686F52485A736E4A733368786E427575516C73446469496537"
    )
    assert stored[:7] == b"$A$005$"
    assert sha256_crypt(b"foobar", stored[7:27], 5000) == stored[27:].decode()
    assert sha256_crypt(b"not foobar", stored[7:27], 5000) != stored[27:].decode()


def test_mariadb_ed25519_accounts_are_sent_their_public_key() -> None:
    """The key a MariaDB 10.11 server stored for `first` (CREATE USER ... USING PASSWORD('first'))."""
    assert ed25519_key("first") == "yimNcp6dq3P0N8rm+FGHNJKGzblrmmBDojH2V8xiL7w"
    account, key = ("app", "%"), ed25519_key(NEW)
    assert own_password(MARIADB, account, NEW, ED25519) == ("SET PASSWORD = %s", (key,))
    assert account_password(MARIADB, account, NEW, ED25519) == (
        "ALTER USER %s@%s IDENTIFIED VIA ed25519 USING %s",
        (*account, key),
    )
    assert create_user(MARIADB, account, NEW, ED25519) == (
        "CREATE USER %s@%s IDENTIFIED VIA ed25519 USING %s",
        (*account, key),
    )
    assert create_user(MARIADB, account, NEW, ED25519, clear=True) == (
        "CREATE USER %s@%s IDENTIFIED VIA ed25519 USING PASSWORD(%s)",
        (*account, NEW),
    ), "still ed25519"
    assert account_password(MARIADB, account, NEW, ED25519, clear=True) == (
        "SET PASSWORD FOR %s@%s = PASSWORD(%s)",
        (*account, NEW),
    ), "SET PASSWORD keeps the plugin"
    assert account_password(MYSQL8, account, NEW, ED25519)[0] == "ALTER USER %s@%s IDENTIFIED BY %s"


def test_an_ed25519_account_without_pynacl_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)
    with pytest.raises(errors.ConfigurationError, match="PyNaCl"):
        ed25519_key(NEW)


# -- SHOW GRANTS, parsed --------------------------------------------------------------------------------
APP = ("app", "%")


@pytest.mark.parametrize(
    ("line", "grant"),
    [
        ("GRANT USAGE ON *.* TO `app`@`%`", Grant("GRANT USAGE ON *.*", "TO", "")),
        (
            "GRANT SELECT, INSERT ON `shop`.* TO `app`@`%` WITH GRANT OPTION",
            Grant("GRANT SELECT, INSERT ON `shop`.*", "TO", "WITH GRANT OPTION"),
        ),
        (  # a column and a role whose names hold " TO "
            "GRANT UPDATE (`ship TO`, `id`) ON `shop`.`orders` TO `app`@`%`",
            Grant("GRANT UPDATE (`ship TO`, `id`) ON `shop`.`orders`", "TO", ""),
        ),
        (
            "GRANT `reader TO x`@`%`,`r2`@`%` TO `app`@`%`",
            Grant("GRANT `reader TO x`@`%`,`r2`@`%`", "TO", ""),
        ),
        ("GRANT `r1` TO `app`@`%` WITH ADMIN OPTION", Grant("GRANT `r1`", "TO", "WITH ADMIN OPTION")),
        (  # MariaDB: the password hash goes, REQUIRE and the limits stay
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB12' "
            "REQUIRE SSL WITH MAX_USER_CONNECTIONS 5",
            Grant("GRANT USAGE ON *.*", "TO", "REQUIRE SSL WITH MAX_USER_CONNECTIONS 5"),
        ),
        (
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED VIA ed25519 USING 'x WITH y' OR unix_socket",
            Grant("GRANT USAGE ON *.*", "TO", ""),
        ),
        ("SET DEFAULT ROLE `r1` FOR `app`@`%`", Grant("SET DEFAULT ROLE `r1`", "FOR", "")),
        ("REVOKE INSERT ON `mysql`.* FROM `app`@`%`", Grant("REVOKE INSERT ON `mysql`.*", "FROM", "")),
        (
            "GRANT PROXY ON ''@'' TO 'app'@'%' WITH GRANT OPTION",
            Grant("GRANT PROXY ON ''@''", "TO", "WITH GRANT OPTION"),
        ),
        (  # MySQL 8 dynamic privileges
            "GRANT BACKUP_ADMIN,XA_RECOVER_ADMIN ON *.* TO `app`@`%`",
            Grant("GRANT BACKUP_ADMIN,XA_RECOVER_ADMIN ON *.*", "TO", ""),
        ),
    ],
)
def test_show_grants_lines_are_parsed(line: str, grant: Grant) -> None:
    assert Grant.parse(line, APP) == grant
    assert grant.to("'app_clone'@'%'").endswith(("'app_clone'@'%'", grant.tail))


def test_quoted_names_are_read_back_exactly() -> None:
    name = "O'Ne`il TO \\x"
    assert (
        Grant.parse("GRANT USAGE ON *.* TO `O'Ne``il TO \\x`@`10.%`", (name, "10.%")).head
        == "GRANT USAGE ON *.*"
    )
    assert Grant.parse("GRANT USAGE ON *.* TO 'O\\'Ne`il TO \\\\x'@'10.%'", (name, "10.%")).keyword == "TO"


@pytest.mark.parametrize(
    "line",
    ["GRANT USAGE ON *.* TO `someone`@`%`", "CREATE USER `app`@`%`", "GRANT SELECT ON *.*", ""],
)
def test_a_line_that_is_not_understood_stops_the_copy(line: str) -> None:
    with pytest.raises(errors.PasswordChangeError, match="Cannot parse the SHOW GRANTS line"):
        Grant.parse(line, APP)


def test_grants_compare_without_the_column_order() -> None:
    one = Grant.parse("GRANT UPDATE (`b`, `a`), SELECT (`c`) ON `s`.`t` TO `app`@`%`", APP)
    other = Grant.parse("GRANT UPDATE (`a`, `b`), SELECT (`c`) ON `s`.`t` TO `app`@`%`", APP)
    assert one.key == other.key
    assert one.key != Grant.parse("GRANT UPDATE (`a`) ON `s`.`t` TO `app`@`%`", APP).key


def test_account_options_of_mysql_8() -> None:
    line = (
        "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$x WITH y' REQUIRE SSL "
        "WITH MAX_QUERIES_PER_HOUR 10 MAX_USER_CONNECTIONS 2 PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK "
        "PASSWORD HISTORY DEFAULT PASSWORD REUSE INTERVAL DEFAULT PASSWORD REQUIRE CURRENT DEFAULT"
    )
    assert account_options(line, MYSQL8) == (
        "REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 10 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 "
        "MAX_USER_CONNECTIONS 2"
    )


def test_account_options_of_mariadb() -> None:
    line = (
        "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*AB' REQUIRE ISSUER '/C=NO' AND SUBJECT '/CN=app' "
        "WITH MAX_STATEMENT_TIME 1.500000 PASSWORD EXPIRE INTERVAL 30 DAY"
    )
    assert account_options(line, MARIADB) == (
        "REQUIRE ISSUER '/C=NO' AND SUBJECT '/CN=app' WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 "
        "MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 MAX_STATEMENT_TIME 1.500000"
    )
    assert account_options("CREATE USER `app`@`%`", MARIADB).startswith("REQUIRE NONE WITH ")


# -- TLS: the SSLContext of each mode, plaintext, a weak ROTATORS_SSLMODE: tests/unit/test_tls_policy.py ---
# -- a recording double at the driver boundary ----------------------------------------------------------
@dataclass
class Account:
    grants: list[str]
    create: str = ""
    default_roles: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FakeServer:
    """Answers the engine's reads as a MySQL 8 server would; records every statement as sent."""

    version: str = "8.0.36"
    current_user: str = "app@10.0.%"
    accounts: dict[tuple[str, str], Account] = field(default_factory=dict)
    warnings: list[tuple[str, int, str]] = field(default_factory=list)
    fail_on: str | None = None
    fail_with: tuple[int, str] = (1227, f"Access denied; {NEW} needs CREATE USER")
    create_user: str = ""  # SHOW CREATE USER of an account not in `accounts`
    strict_validation: bool = False  # a password validation plugin that refuses hashes (1290)
    sent: list[str] = field(default_factory=list)

    def escape(self, value: object) -> str:
        if isinstance(value, int):  # GET_LOCK's timeout
            return str(value)
        assert isinstance(value, str)
        return "'" + escape_string(value) + "'"

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        pass

    def answer(self, text: str) -> list[tuple[Any, ...]]:
        self.sent.append(text)
        if self.fail_on and text.startswith(self.fail_on):
            raise pymysql.err.OperationalError(*self.fail_with)
        if self.strict_validation and NEW_HASH in text:
            raise pymysql.err.OperationalError(1290, STRICT_VALIDATION)
        if text == "SELECT VERSION(), CURRENT_USER()":
            return [(self.version, self.current_user)]
        if text == "SELECT CURRENT_USER(), 1 + 1":
            return [(self.current_user, 2)]
        if text == "SHOW WARNINGS":
            return list(self.warnings)
        if text.startswith(("SELECT GET_LOCK(", "SELECT RELEASE_LOCK(")):
            return [(1,)]
        if match := re.fullmatch(r"SELECT Host FROM mysql\.user WHERE User = '(.*?)'.*", text):
            return [(host,) for user, host in self.accounts if user == match[1]]
        if match := re.fullmatch(r"SELECT 1 FROM mysql\.user WHERE User = '(.*)' AND Host = '(.*)'", text):
            return [(1,)] if (match[1], match[2]) in self.accounts else []
        if match := re.fullmatch(r"SHOW GRANTS FOR '(.*)'@'(.*)'", text):
            return [(line,) for line in self.accounts[(match[1], match[2])].grants]
        if match := re.fullmatch(r"SHOW CREATE USER '(.*)'@'(.*)'", text):
            found = self.accounts.get((match[1], match[2]))
            return [(found.create if found else self.create_user,)]
        if match := re.fullmatch(
            r"SELECT DEFAULT_ROLE_USER.* WHERE USER = '(.*)' AND HOST = '(.*)' ORDER BY 1, 2", text
        ):
            return list(self.accounts[(match[1], match[2])].default_roles)
        return []


@dataclass
class FakeCursor:
    server: FakeServer
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, query: str, args: tuple[Any, ...] | None = None) -> int:
        text = query % tuple(self.server.escape(a) for a in args) if args else query
        self.rows = self.server.answer(text)
        return len(self.rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def set_secret(
    server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    user: str = "app",
    master: bool = False,
    previous: str | None = None,
) -> list[str]:
    """createSecret then setSecret through the real engine; the statements sent, reads included.
    Each login is the account of its user name (CURRENT_USER() as the server would say)."""

    def connect(**kwargs: Any) -> FakeServer:
        hosts = [host for name, host in server.accounts if name == kwargs["user"]]
        if hosts or kwargs["user"] != server.current_user.rpartition("@")[0]:
            server.current_user = f"{kwargs['user']}@{hosts[0] if hosts else '%'}"
        return server

    monkeypatch.setattr(pymysql, "connect", connect)
    login = {"engine": "mysql", "host": "db", "port": 3306}
    current = {**login, "username": user, "password": "Old-Pass-1"}
    values = {("demo", AWSCURRENT): {**current, "masterarn": "m"} if master else current}
    values[("m", AWSCURRENT)] = {**login, "username": "admin", "password": "Master-Pass-3"}
    if previous:
        values[("demo", AWSPREVIOUS)] = {**current, "username": previous, "password": "Prev-Pass-0"}
    client = FakeSecretsManager(values, NEW)
    create_then_set(MySQLRotator(store(client)), client)
    return server.sent


SHA2_STORED = re.compile(r"'(\$A\$005\$[./0-9A-Za-z]{63})'")
SHA2_OF_NEW = "'<caching_sha2 of NEW>'"


def writes(sent: list[str]) -> list[str]:
    """The statements that change something; a caching_sha2_password hash of NEW (its salt is
    random) as SHA2_OF_NEW once it is checked to be one."""

    def known(match: re.Match[str]) -> str:
        stored = match.group(1)
        return SHA2_OF_NEW if stored == caching_sha2_hash(NEW, stored[7:27]) else match.group(0)

    return [SHA2_STORED.sub(known, s) for s in sent if not s.startswith(("SELECT", "SHOW"))]


def test_mysql8_single_user_changes_its_exact_account(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = set_secret(FakeServer(current_user="app@10.0.%"), monkeypatch)
    assert sent == [
        "SELECT VERSION(), CURRENT_USER()",
        f"ALTER USER 'app'@'10.0.%' IDENTIFIED BY {NEW_LITERAL}",
    ]


def test_mysql9_is_not_sent_down_an_old_path(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = set_secret(FakeServer(version="9.1.0", current_user="app@%"), monkeypatch)
    assert writes(sent) == [f"ALTER USER 'app'@'%' IDENTIFIED BY {NEW_LITERAL}"]


MARIADB_NATIVE = MARIADB_NATIVE_APP


def test_mariadb_single_user_sets_its_own_password_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """SET PASSWORD = '<hash>' needs no privilege on MariaDB: the password never reaches the server."""
    server = FakeServer(version="10.6.16-MariaDB", current_user="app@%", create_user=MARIADB_NATIVE)
    sent = set_secret(server, monkeypatch)
    assert "SHOW CREATE USER 'app'@'%'" in sent, "the account's plugin is read first"
    assert writes(sent) == [f"SET PASSWORD = '{NEW_HASH}'"]
    assert sent[-1] == "SHOW WARNINGS"
    assert not any(NEW in statement for statement in sent)


@pytest.mark.parametrize(
    "create",
    [
        "CREATE USER `app`@`%` IDENTIFIED VIA mysql_native_password USING '*04B9' OR unix_socket",
    ],
)
def test_mariadb_accounts_of_other_plugins_keep_them(monkeypatch: pytest.MonkeyPatch, create: str) -> None:
    """PASSWORD() hashes for the account's own plugin(s); a native hash would replace them."""
    server = FakeServer(version="10.11.6-MariaDB", current_user="app@%", create_user=create)
    assert writes(set_secret(server, monkeypatch)) == [f"SET PASSWORD = PASSWORD({NEW_LITERAL})"]


def test_a_password_the_server_ignores_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer(version="10.6.16-MariaDB", current_user="app@localhost")
    server.create_user = "CREATE USER `app`@`localhost` IDENTIFIED VIA unix_socket"
    server.warnings = [("Warning", 1699, "SET PASSWORD is ignored for users authenticating via unix_socket")]
    with pytest.raises(errors.PasswordChangeError, match="unix_socket"):
        set_secret(server, monkeypatch)


MYSQL8_GRANTS = [
    "GRANT USAGE ON *.* TO `app`@`10.0.%`",
    "GRANT SELECT, INSERT ON `shop`.* TO `app`@`10.0.%` WITH GRANT OPTION",
    "GRANT `reader`@`%`,`writer TO`@`%` TO `app`@`10.0.%`",
    "REVOKE INSERT ON `shop`.`audit` FROM `app`@`10.0.%`",
]
MYSQL8_CREATE = (
    "CREATE USER `app`@`10.0.%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$hash' REQUIRE SSL "
    "PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK PASSWORD REQUIRE CURRENT DEFAULT"
)
OPTIONS = (
    "REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 "
    "MAX_USER_CONNECTIONS 0"
)


def mysql8_with_app(**clone: Account) -> FakeServer:
    accounts = {
        ("admin", "%"): Account([]),
        ("app", "10.0.%"): Account(MYSQL8_GRANTS, MYSQL8_CREATE, [("reader", "%")]),
    }
    if "clone" in clone:
        accounts[("app_clone", "10.0.%")] = clone["clone"]
    return FakeServer(current_user="admin@%", accounts=accounts)


def test_mysql8_master_creates_the_clone_with_the_same_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = set_secret(mysql8_with_app(), monkeypatch, master=True)
    assert sent[:2] == ["SELECT VERSION(), CURRENT_USER()", "SELECT CURRENT_USER(), 1 + 1"], (
        "AWSCURRENT logs in as its account before the master acts"
    )
    first_write = next(i for i, statement in enumerate(sent) if statement.startswith("CREATE USER"))
    assert "SHOW GRANTS FOR 'app'@'10.0.%'" in sent[:first_write], "checked first"
    assert writes(sent) == [
        f"CREATE USER 'app_clone'@'10.0.%' IDENTIFIED WITH caching_sha2_password AS {SHA2_OF_NEW}",
        f"ALTER USER 'app_clone'@'10.0.%' {OPTIONS}",
        "GRANT USAGE ON *.* TO 'app_clone'@'10.0.%'",
        "GRANT SELECT, INSERT ON `shop`.* TO 'app_clone'@'10.0.%' WITH GRANT OPTION",
        "GRANT `reader`@`%`,`writer TO`@`%` TO 'app_clone'@'10.0.%'",
        "REVOKE INSERT ON `shop`.`audit` FROM 'app_clone'@'10.0.%'",
        "SET DEFAULT ROLE 'reader'@'%' TO 'app_clone'@'10.0.%'",
    ]


def test_mysql8_clone_in_step_only_gets_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    same = Account(
        [line.replace("`app`", "`app_clone`") for line in reversed(MYSQL8_GRANTS)],
        MYSQL8_CREATE.replace("`app`", "`app_clone`"),
        [("reader", "%")],
    )
    sent = set_secret(mysql8_with_app(clone=same), monkeypatch, master=True)
    assert writes(sent) == [
        f"ALTER USER 'app_clone'@'10.0.%' IDENTIFIED WITH caching_sha2_password AS {SHA2_OF_NEW}"
    ]


DRIFTED = Account(
    ["GRANT USAGE ON *.* TO `app_clone`@`10.0.%`", "GRANT `admin_role`@`%` TO `app_clone`@`10.0.%`"],
    "CREATE USER `app_clone`@`10.0.%` IDENTIFIED WITH 'caching_sha2_password' AS 'x' REQUIRE NONE",
    [("admin_role", "%")],
)


def test_a_clone_with_more_than_its_source_is_not_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing proves the secret ever held `app_clone`: its extra role is not adopted."""
    server = mysql8_with_app(clone=DRIFTED)
    with pytest.raises(
        errors.PrivilegeError, match=r"'app_clone' holds what 'app' does not: role `admin_role`@`%`"
    ):
        set_secret(server, monkeypatch, master=True)
    assert writes(server.sent) == []


def test_mysql8_clone_that_drifted_is_reset_then_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWSPREVIOUS logs in as the clone: it is the rotator's own, and its drift is put right."""
    sent = writes(set_secret(mysql8_with_app(clone=DRIFTED), monkeypatch, master=True, previous="app_clone"))
    assert sent[:4] == [
        "SET DEFAULT ROLE NONE TO 'app_clone'@'10.0.%'",
        "REVOKE `admin_role`@`%` FROM 'app_clone'@'10.0.%'",
        "REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'app_clone'@'10.0.%'",
        f"ALTER USER 'app_clone'@'10.0.%' {OPTIONS}",
    ]
    assert sent[-2:] == [
        "SET DEFAULT ROLE 'reader'@'%' TO 'app_clone'@'10.0.%'",
        f"ALTER USER 'app_clone'@'10.0.%' IDENTIFIED WITH caching_sha2_password AS {SHA2_OF_NEW}",
    ], "the password changes last, so a failed refresh leaves the clone's old one working"


def test_mysql8_master_rotating_back_changes_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    clone = Account([line.replace("`app`", "`app_clone`") for line in MYSQL8_GRANTS], MYSQL8_CREATE)
    sent = set_secret(mysql8_with_app(clone=clone), monkeypatch, user="app_clone", master=True)
    assert writes(sent) == [
        f"ALTER USER 'app'@'10.0.%' IDENTIFIED WITH caching_sha2_password AS {SHA2_OF_NEW}"
    ]


MYSQL8_NATIVE = MYSQL8_CREATE.replace(
    "'caching_sha2_password' AS '$A$005$hash'", "'mysql_native_password' AS '*AB'"
)


def test_mysql8_native_clone_is_created_and_changed_with_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clone takes the source's plugin, and only the hash of its password is sent."""
    server = mysql8_with_app()
    server.accounts[("app", "10.0.%")].create = MYSQL8_NATIVE
    sent = set_secret(server, monkeypatch, master=True)
    assert writes(sent)[0] == (
        f"CREATE USER 'app_clone'@'10.0.%' IDENTIFIED WITH mysql_native_password AS '{NEW_HASH}'"
    )
    assert not any(NEW in statement for statement in sent)

    clone = Account(
        [line.replace("`app`", "`app_clone`") for line in MYSQL8_GRANTS],
        MYSQL8_NATIVE.replace("`app`", "`app_clone`"),
        [("reader", "%")],
    )
    server = mysql8_with_app(clone=clone)
    server.accounts[("app", "10.0.%")].create = MYSQL8_NATIVE
    sent = set_secret(server, monkeypatch, master=True)
    assert writes(sent) == [
        f"ALTER USER 'app_clone'@'10.0.%' IDENTIFIED WITH mysql_native_password AS '{NEW_HASH}'"
    ]
    assert not any(NEW in statement for statement in sent)


def test_a_validation_plugin_that_refuses_hashes_gets_the_clear_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MariaDB's strict_password_validation refuses a hash (1290): the clear value follows, and
    the log says so without it."""
    server = FakeServer(version="10.11.6-MariaDB", current_user="app@%", create_user=MARIADB_NATIVE)
    server.strict_validation = True
    sent = set_secret(server, monkeypatch)
    assert writes(sent) == [f"SET PASSWORD = '{NEW_HASH}'", f"SET PASSWORD = PASSWORD({NEW_LITERAL})"]


def test_a_read_only_server_is_not_sent_the_clear_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """1290 is every option that prevents a statement: only strict_password_validation's is retried."""
    server = FakeServer(version="10.11.6-MariaDB", current_user="app@%", create_user=MARIADB_NATIVE)
    server.fail_on = "SET PASSWORD"
    server.fail_with = (
        1290,
        "The MariaDB server is running with the --read-only option so it cannot execute this statement",
    )
    with pytest.raises(errors.PasswordChangeError, match="read-only"):
        set_secret(server, monkeypatch)
    assert writes(server.sent) == [f"SET PASSWORD = '{NEW_HASH}'"]


def test_other_refusals_of_the_hash_are_not_retried_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer(version="10.11.6-MariaDB", current_user="app@%", create_user=MARIADB_NATIVE)
    server.fail_on = "SET PASSWORD"
    with pytest.raises(errors.PasswordChangeError, match="error 1227"):
        set_secret(server, monkeypatch)
    assert writes(server.sent) == [f"SET PASSWORD = '{NEW_HASH}'"]


def test_an_unrelated_user_named_like_the_clone_does_not_get_the_original(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`app_clone` logs in, but lacks what `app` holds: `app`'s password is not handed to it."""
    stranger = Account(["GRANT USAGE ON *.* TO `app_clone`@`10.0.%`"], "CREATE USER `app_clone`@`10.0.%`")
    server = mysql8_with_app(clone=stranger)
    with pytest.raises(errors.PrivilegeError, match="'app_clone' lacks what 'app' holds"):
        set_secret(server, monkeypatch, user="app_clone", master=True)
    assert writes(server.sent) == []


@pytest.mark.parametrize(
    "grant",
    ["GRANT CREATE USER ON *.* TO `app`@`10.0.%`", "GRANT ALL PRIVILEGES ON *.* TO `app`@`10.0.%`",
     "GRANT UPDATE ON `mysql`.* TO `app`@`10.0.%`",
     "GRANT SELECT ON *.* TO `app`@`10.0.%` WITH GRANT OPTION"],
)  # fmt: skip
def test_an_administrative_source_is_not_cloned(monkeypatch: pytest.MonkeyPatch, grant: str) -> None:
    server = mysql8_with_app()
    server.accounts[("app", "10.0.%")].grants.append(grant)
    with pytest.raises(errors.PrivilegeError, match="'app' holds"):
        set_secret(server, monkeypatch, master=True)
    assert writes(server.sent) == []


def test_refusals_become_typed_errors_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer(current_user="app@%", fail_on="ALTER USER")
    with pytest.raises(errors.PasswordChangeError, match="error 1227") as caught:
        set_secret(server, monkeypatch)
    redacted(caught.value, NEW)


# -- connecting ---------------------------------------------------------------------------------------
@contextmanager
def refusing(monkeypatch: pytest.MonkeyPatch, error: Exception) -> Iterator[None]:
    def connect(**kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(pymysql, "connect", connect)
    yield


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (
            pymysql.err.OperationalError(1045, "Access denied for user 'app'@'10.0.0.9'"),
            LoginRefusedError,
            "refused",
        ),
        (pymysql.err.OperationalError(1862, "Your password has expired"), errors.LoginError, "has expired"),
        (
            pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db' (timed out)"),
            errors.DatabaseUnavailableError,
            "db:3306",
        ),
        (
            pymysql.err.OperationalError(2026, "SSL is required but the server doesn't support it"),
            errors.DatabaseUnavailableError,
            "SSL",
        ),
    ],
)
def test_login_failures_are_typed(
    monkeypatch: pytest.MonkeyPatch, error: Exception, raised: type[Exception], message: str
) -> None:
    with (
        refusing(monkeypatch, error),
        pytest.raises(raised, match=message),
        MySQLRotator().connect(secret(), "app", "Old-Pass-1"),
    ):
        pass


def test_a_driver_message_quoting_the_password_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    error = pymysql.err.OperationalError(2003, "Can't connect with password 'Old-Pass-1'")
    with (
        refusing(monkeypatch, error),
        pytest.raises(errors.DatabaseUnavailableError) as caught,
        MySQLRotator().connect(secret(), "app", "Old-Pass-1"),
    ):
        pass
    assert "Old-Pass-1" not in str(caught.value)


def test_probe_checks_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    session = Session(cast(Any, FakeServer(current_user="app@%")), MYSQL8, ("app", "%"))
    MySQLRotator().probe(session, "app")
    with pytest.raises(errors.SecretTestError, match="'other'"):
        MySQLRotator().probe(session, "other")


def test_several_accounts_for_one_user_are_ambiguous_for_a_master(monkeypatch: pytest.MonkeyPatch) -> None:
    server = mysql8_with_app()
    server.accounts[("app", "%")] = Account([])
    with pytest.raises(errors.PasswordChangeError, match="several hosts"):
        set_secret(server, monkeypatch, master=True)
    assert writes(server.sent) == []


@pytest.mark.parametrize(
    ("engine", "name", "limit"),
    [("mysql", "a" * 27, 32), ("aurora-mysql", "a" * 27, 32), ("mariadb", "a" * 75, 80)],
)
def test_a_clone_name_over_the_limit_fails_at_create(engine: str, name: str, limit: int) -> None:
    def pending_of(username: str) -> DatabaseSecret:
        value = {"engine": engine, "host": "db", "username": username, "password": "P-1", "masterarn": "m"}
        return make_pending(MySQLRotator(store(FakeSecretsManager({("demo", AWSCURRENT): value}, NEW))))

    with pytest.raises(errors.SecretFormatError, match=f"longer than {limit} characters"):
        pending_of(name)
    assert pending_of(name[:-1]).username == name[:-1] + "_clone", "one character less fits"
