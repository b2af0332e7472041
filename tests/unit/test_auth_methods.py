"""The password methods each engine answers: none that hands the password to whoever listens on
the server's address (the live proof is tests/integration/test_hostile_listener.py)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pymysql
import pytest
from pymysql import _auth
from pymysql.protocol import MysqlPacket

from rotators.engines import mysql, postgresql
from rotators.engines.mysql import UNSAFE_WITHOUT_TLS, MySQLRotator, UnsafeAuthError
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.errors import DatabaseUnavailableError, LoginError

PASSWORD = "Auth-Method-S3cret"
NONCE = b"abcdefghij0123456789"


def pg(**changes: Any) -> Any:
    value = {"engine": "postgres", "host": "db", "username": "app", "password": PASSWORD, **changes}
    return PostgreSQLRotator().parse(json.dumps(value), where="the test secret")


def my(**changes: Any) -> Any:
    value = {"engine": "mariadb", "host": "db", "username": "app", "password": PASSWORD, **changes}
    return MySQLRotator().parse(json.dumps(value), where="the test secret")


# -- PostgreSQL: libpq's require_auth ---------------------------------------------------------------
@pytest.mark.parametrize("tls", [{"ssl": False}, {"sslmode": "disable"}])
def test_postgresql_without_tls_answers_scram_only(tls: dict[str, Any]) -> None:
    assert PostgreSQLRotator.auth_options(pg(**tls)) == {"require_auth": "scram-sha-256"}


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_postgresql_over_tls_also_answers_md5_and_never_the_clear_password(mode: str) -> None:
    assert PostgreSQLRotator.auth_options(pg(sslmode=mode)) == {"require_auth": "scram-sha-256,md5"}


@pytest.mark.parametrize("tls", [{"ssl": False}, {"sslmode": "require"}])
def test_postgresql_with_a_libpq_older_than_16_logs_in_only_to_a_verified_server(
    tls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It cannot refuse a cleartext request, so it refuses the settings an impostor can answer."""
    monkeypatch.setattr(psycopg.pq, "version", lambda: 150007)
    with pytest.raises(LoginError, match=r"libpq .*15.*verify-ca or verify-full"):
        PostgreSQLRotator.auth_options(pg(**tls))
    assert PostgreSQLRotator.auth_options(pg(sslmode="verify-ca")) == {}
    assert PostgreSQLRotator.auth_options(pg()) == {}


def test_postgresql_the_bundled_libpq_takes_require_auth() -> None:
    assert psycopg.pq.version() >= postgresql.REQUIRE_AUTH_LIBPQ


def test_postgresql_connect_asks_libpq_for_it_and_types_its_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def refuse(conninfo: str, **_: Any) -> None:
        seen.append(conninfo)
        raise psycopg.OperationalError(
            'connection to server at "db", port 5432 failed: authentication method requirement '
            f'"scram-sha-256" failed: server requested a cleartext password ({PASSWORD})'
        )

    monkeypatch.setattr(psycopg, "connect", refuse)
    with (
        pytest.raises(LoginError, match="cleartext password") as caught,
        PostgreSQLRotator().connect(pg(ssl=False), "app", PASSWORD),
    ):
        pass
    assert "require_auth=scram-sha-256" in seen[0]
    assert PASSWORD not in str(caught.value)
    assert not isinstance(caught.value, DatabaseUnavailableError)


# -- MySQL: PyMySQL's auth_plugin_map -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_mysql_over_tls_answers_as_pymysql_does(mode: str) -> None:
    assert MySQLRotator.auth_options(my(sslmode=mode)) == {}


@pytest.mark.parametrize("tls", [{"ssl": False}, {"sslmode": "disable"}])
def test_mysql_without_tls_maps_every_method_that_gives_the_password_away(tls: dict[str, Any]) -> None:
    plugins = MySQLRotator.auth_options(my(**tls))["auth_plugin_map"]
    assert set(plugins) == {*UNSAFE_WITHOUT_TLS, "caching_sha2_password"}
    assert "mysql_clear_password" in plugins and "dialog" in plugins and "sha256_password" in plugins


class FakeConnection:
    """What an auth plugin handler sees of PyMySQL's Connection: packets in, packets out."""

    def __init__(self, *replies: bytes) -> None:
        self.password = PASSWORD.encode()
        self.replies = [MysqlPacket(reply, "utf8") for reply in replies]
        self.written: list[bytes] = []

    def write_packet(self, payload: bytes) -> None:
        self.written.append(payload)

    def _read_packet(self) -> MysqlPacket:
        return self.replies.pop(0)


OK = b"\x00\x00\x00\x02\x00\x00\x00"


def switch(plugin: bytes, data: bytes = NONCE + b"\0") -> MysqlPacket:
    """An auth switch request, read as far as PyMySQL reads it before calling the handler."""
    packet = MysqlPacket(b"\xfe" + plugin + b"\0" + data, "utf8")
    packet.advance(2 + len(plugin))  # 0xfe, the name and its NUL
    return packet


@pytest.mark.parametrize("plugin", UNSAFE_WITHOUT_TLS)
def test_mysql_refused_methods_write_nothing(plugin: str) -> None:
    conn = FakeConnection()
    handler = MySQLRotator.auth_options(my(ssl=False))["auth_plugin_map"][plugin](conn)
    with pytest.raises(UnsafeAuthError, match=f"{plugin} without TLS"):
        handler.authenticate(switch(plugin.encode()))
    assert conn.written == []


def test_mysql_caching_sha2_fast_path_still_logs_in() -> None:
    conn = FakeConnection(b"\x01\x03", OK)
    handler = mysql._ScrambleOnly(conn)  # type: ignore[arg-type]
    result = handler.authenticate(switch(b"caching_sha2_password"))
    assert result is not None and result.is_ok_packet()
    assert conn.written == [_auth.scramble_caching_sha2(PASSWORD.encode(), NONCE)]


def test_mysql_caching_sha2_full_authentication_is_refused_after_the_scramble_only() -> None:
    conn = FakeConnection(b"\x01\x04")
    handler = mysql._ScrambleOnly(conn)  # type: ignore[arg-type]
    with pytest.raises(UnsafeAuthError, match="full authentication"):
        handler.authenticate(switch(b"caching_sha2_password"))
    assert conn.written == [_auth.scramble_caching_sha2(PASSWORD.encode(), NONCE)]
    assert all(PASSWORD.encode() not in payload for payload in conn.written)


def test_mysql_caching_sha2_full_authentication_after_the_handshake_is_refused() -> None:
    """The server named caching_sha2_password in its greeting: the scramble went with the
    handshake response, and the handler first sees the server's verdict."""
    conn = FakeConnection()
    handler = mysql._ScrambleOnly(conn)  # type: ignore[arg-type]
    with pytest.raises(UnsafeAuthError):
        handler.authenticate(MysqlPacket(b"\x01\x04", "utf8"))
    assert conn.written == []


def test_mysql_connect_types_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**options: Any) -> None:
        assert "auth_plugin_map" in options and options["ssl_disabled"] is True
        raise UnsafeAuthError(mysql.CR_AUTH_PLUGIN_ERR, "the server asked for dialog without TLS")

    monkeypatch.setattr(pymysql, "connect", refuse)
    with (
        pytest.raises(LoginError, match=r'dialog without TLS.*drop "ssl": false') as caught,
        MySQLRotator().connect(my(ssl=False), "app", PASSWORD),
    ):
        pass
    assert PASSWORD not in str(caught.value)
