"""DatabaseRotator.password_policy(): engine defaults, overridden by AWS's environment variables;
and every other setting of rotators.settings (DB_CONNECT_TIMEOUT on every engine, TLS settings)."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

import pytest

from rotators import settings
from rotators.database import DatabaseRotator, DatabaseSecret, TlsSettings
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.errors import ConfigurationError
from rotators.secrets import PasswordPolicy, _client


def policy() -> PasswordPolicy:
    return PostgreSQLRotator().password_policy()


def test_defaults() -> None:
    found = policy()
    assert found.length == 32
    for char in "/@\"'\\ ":
        assert char in found.exclude_characters
    assert found.require_each_included_type is True
    assert not (
        found.exclude_numbers
        or found.exclude_punctuation
        or found.exclude_uppercase
        or found.exclude_lowercase
    )


@pytest.mark.parametrize(
    ("name", "value", "changes"),
    [
        ("PASSWORD_LENGTH", "40", {"length": 40}),
        ("PASSWORD_LENGTH", "8", {"length": 8}),
        ("PASSWORD_LENGTH", "4096", {"length": 4096}),
        ("PASSWORD_LENGTH", "", {}),
        ("EXCLUDE_CHARACTERS", "abc:;", {"exclude_characters": "abc:;"}),
        ("EXCLUDE_CHARACTERS", "", {"exclude_characters": ""}),  # as AWS's functions: exclude nothing
        ("EXCLUDE_NUMBERS", "true", {"exclude_numbers": True}),
        ("EXCLUDE_PUNCTUATION", "True", {"exclude_punctuation": True}),
        ("EXCLUDE_UPPERCASE", "1", {"exclude_uppercase": True}),
        ("EXCLUDE_LOWERCASE", "yes", {"exclude_lowercase": True}),
        ("EXCLUDE_NUMBERS", "false", {}),
        ("REQUIRE_EACH_INCLUDED_TYPE", "false", {"require_each_included_type": False}),
        ("REQUIRE_EACH_INCLUDED_TYPE", "off", {"require_each_included_type": False}),
        ("REQUIRE_EACH_INCLUDED_TYPE", "", {}),
    ],
)
def test_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, changes: dict[str, object]
) -> None:
    default = policy()
    monkeypatch.setenv(name, value)
    assert policy() == replace(default, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PASSWORD_LENGTH", "abc"),
        ("PASSWORD_LENGTH", "4"),
        ("PASSWORD_LENGTH", "7"),
        ("PASSWORD_LENGTH", "4097"),
        ("PASSWORD_LENGTH", "32.5"),
        ("EXCLUDE_NUMBERS", "maybe"),
        ("EXCLUDE_LOWERCASE", "2"),
        ("REQUIRE_EACH_INCLUDED_TYPE", "sometimes"),
    ],
)
def test_invalid_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        policy()


def test_constructing_the_rotator_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access while constructing the rotator")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("SECRETS_MANAGER_ENDPOINT", "http://192.0.2.1:9")
    before = _client.cache_info()
    rotator = PostgreSQLRotator()
    rotator.password_policy()
    assert _client.cache_info() == before  # no boto3 client was even built


# -- rotators.settings: every environment setting, parsed in one place -------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PASSWORD_LENGTH", "\u0663\u0662"),  # Arabic-Indic digits: int() would read 32
        ("PASSWORD_LENGTH", "+32"),
        ("PASSWORD_LENGTH", "3 2"),
        ("PASSWORD_LENGTH", "1e2"),
        ("PASSWORD_LENGTH", "5000"),
        ("EXCLUDE_NUMBERS", "tru"),
        ("EXCLUDE_PUNCTUATION", "true\x01"),  # the environment cannot hold a NUL
        ("EXCLUDE_CHARACTERS", "x" * 4097),
    ],
)
def test_more_invalid_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name) as caught:
        policy()
    assert len(str(caught.value)) < 300


def test_a_bad_value_is_quoted_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSWORD_LENGTH", "9" * 10_000)
    with pytest.raises(ConfigurationError, match="PASSWORD_LENGTH") as caught:
        policy()
    assert "9" * 50 not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds", "whole", "ms"),
    [
        (None, 5.0, 5, 5000),
        ("", 5.0, 5, 5000),
        ("2", 2.0, 2, 2000),
        ("2.5", 2.5, 3, 2500),
        (" 10 ", 10.0, 10, 10000),
    ],
)
def test_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float, whole: int, ms: int
) -> None:
    if value is None:
        monkeypatch.delenv("DB_CONNECT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", value)
    found = settings.connect_timeout()
    assert (found.seconds, found.whole_seconds, found.milliseconds) == (seconds, whole, ms)


@pytest.mark.parametrize("value", ["abc", "-1", "0", "0.0", "901", "2,5", "\u0665", "inf", "nan", "1e3"])
def test_connect_timeout_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="DB_CONNECT_TIMEOUT"):
        settings.connect_timeout()


@pytest.mark.parametrize("value", ["prefer", "disable", "VERIFY-FULL", "verify_full"])
def test_sslmode_setting_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ROTATORS_SSLMODE", value)
    with pytest.raises(ConfigurationError, match="ROTATORS_SSLMODE"):
        settings.sslmode()


def test_ca_bundle_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/opt/global-bundle.pem")
    assert settings.ca_bundle() == "/opt/global-bundle.pem"
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/opt/ca.pem\n")  # trailing whitespace of a .env file
    assert settings.ca_bundle() == "/opt/ca.pem"
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/opt/a\x1bb.pem")
    with pytest.raises(ConfigurationError, match="ROTATORS_CA_BUNDLE"):
        settings.ca_bundle()


# -- DB_CONNECT_TIMEOUT=2.5 reaches every engine's driver, in the driver's unit --------------------------
class Captured(Exception):
    """Raised by a stand-in driver once it has recorded what the engine passed."""


def _login_secret(engine: str, port: int) -> DatabaseSecret:
    return DatabaseSecret(engine, "db.example.com", port, "app", "pw", "appdb", TlsSettings(enabled=False))


def _capture(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs, args=args)
        raise Captured

    monkeypatch.setattr(target, name, record)
    return seen


@pytest.mark.parametrize(("value", "seconds", "whole"), [("2", 2.0, 2), ("2.5", 2.5, 3)])
def test_the_timeout_reaches_every_engine(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float, whole: int
) -> None:
    """The MySQL engine crashed on 2.5 with a bare ValueError; libpq and redshift-connector take
    whole seconds (rounded up), PyMySQL and python-oracledb seconds, pymongo milliseconds."""
    import psycopg
    import pymysql
    import pytds
    from psycopg.conninfo import conninfo_to_dict

    from rotators.engines import redshift, sqlserver
    from rotators.engines.documentdb import DocumentDBRotator
    from rotators.engines.mysql import MySQLRotator
    from rotators.engines.oracle import OracleRotator
    from rotators.engines.redshift import RedshiftRotator
    from rotators.engines.sqlserver import SQLServerRotator

    monkeypatch.setenv("DB_CONNECT_TIMEOUT", value)

    seen = _capture(monkeypatch, psycopg, "connect")
    with pytest.raises(Captured), PostgreSQLRotator().connect(_login_secret("postgres", 5432), "app", "pw"):
        pass
    assert conninfo_to_dict(seen["args"][0])["connect_timeout"] == str(whole)

    seen = _capture(monkeypatch, pymysql, "connect")
    with pytest.raises(Captured), MySQLRotator().connect(_login_secret("mysql", 3306), "app", "pw"):
        pass
    assert seen["connect_timeout"] == seconds

    seen = _capture(monkeypatch, redshift, "GuardedConnection")
    with pytest.raises(Captured), RedshiftRotator().connect(_login_secret("redshift", 5439), "app", "pw"):
        pass
    assert seen["timeout"] == whole

    opened: list[tuple[str, int, float]] = []  # the engine opens the socket, the driver logs in over it

    def open_socket(host: str, port: int, timeout: float) -> socket.socket:
        opened.append((host, port, timeout))
        return socket.socket()

    monkeypatch.setattr(sqlserver, "open_socket", open_socket)
    seen = _capture(monkeypatch, pytds, "connect")
    with pytest.raises(Captured), SQLServerRotator().connect(_login_secret("sqlserver", 1433), "app", "pw"):
        pass
    assert opened == [("db.example.com", 1433, seconds)]
    assert (seen["login_timeout"], seen["disable_connect_retry"]) == (seconds, True)

    assert OracleRotator().connect_options(_login_secret("oracle", 1521))["tcp_connect_timeout"] == seconds
    options = DocumentDBRotator().client_options(_login_secret("mongo", 27017), "app", "pw")
    milliseconds = seconds * 1000
    assert (options["connectTimeoutMS"], options["serverSelectionTimeoutMS"]) == (milliseconds, milliseconds)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_a_bad_timeout_is_a_configuration_error_on_every_engine(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from rotators.engines.documentdb import DocumentDBRotator
    from rotators.engines.mysql import MySQLRotator
    from rotators.engines.oracle import OracleRotator
    from rotators.engines.redshift import RedshiftRotator
    from rotators.engines.sqlserver import SQLServerRotator

    monkeypatch.setenv("DB_CONNECT_TIMEOUT", value)
    rotators: list[tuple[DatabaseRotator[Any], str]] = [
        (PostgreSQLRotator(), "postgres"),
        (MySQLRotator(), "mysql"),
        (RedshiftRotator(), "redshift"),
        (SQLServerRotator(), "sqlserver"),
    ]
    for rotator, engine in rotators:
        with (
            pytest.raises(ConfigurationError, match="DB_CONNECT_TIMEOUT"),
            rotator.connect(_login_secret(engine, 1), "app", "pw"),
        ):
            pass
    with pytest.raises(ConfigurationError, match="DB_CONNECT_TIMEOUT"):
        OracleRotator().connect_options(_login_secret("oracle", 1521))
    with pytest.raises(ConfigurationError, match="DB_CONNECT_TIMEOUT"):
        DocumentDBRotator().client_options(_login_secret("mongo", 27017), "app", "pw")
