"""Bad events, secrets and settings, against live PostgreSQL and the local Secrets Manager.

Each case must end in a typed error (a RotationError) with a bounded message, move no label,
and show no password (the autouse leak check also holds every stored value against the output).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rotators.cli.check import rotator_for, rotator_serving, run_checks
from rotators.engines import BY_NAME, ENGINES
from rotators.engines.postgresql import handler
from rotators.errors import (
    ConfigurationError,
    EventError,
    RotationError,
    SecretFormatError,
    SecretNotFoundError,
    VersionStageError,
)
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import STEPS, Watched, pg_secret

MAX_MESSAGE = 1000
MAX_LOG_LINE = 4000
MB = 1_000_000


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# -- events: (arn, token) -> the event, and the error it must raise -------------------------------------
Event = Callable[[str, str], Any]


def ev(**changes: Any) -> Event:
    """The event Secrets Manager would send for createSecret, changed; None drops a key."""

    def build(arn: str, token: str) -> dict[str, Any]:
        raw = {"SecretId": arn, "ClientRequestToken": token, "Step": "createSecret"}
        raw.update({k: (v(arn, token) if callable(v) else v) for k, v in changes.items()})
        return {k: v for k, v in raw.items() if v is not None}

    return build


EVENTS: dict[str, tuple[Event, type[RotationError]]] = {
    "SecretId of 1 MB": (ev(SecretId="a" * MB), EventError),
    "SecretId: the ARN padded to 1 MB": (ev(SecretId=lambda arn, _: arn + "x" * MB), EventError),
    "SecretId of 2,048 characters naming no secret": (ev(SecretId="s" * 2048), RotationError),
    "SecretId a number": (ev(SecretId=42), EventError),
    "SecretId a list": (ev(SecretId=lambda arn, _: [arn]), EventError),
    "SecretId an object": (ev(SecretId=lambda arn, _: {"arn": arn}), EventError),
    "SecretId true": (ev(SecretId=True), EventError),
    "SecretId empty": (ev(SecretId=""), EventError),
    "SecretId with a newline": (ev(SecretId=lambda arn, _: arn + "\nforged log line"), EventError),
    "SecretId with a NUL": (ev(SecretId=lambda arn, _: arn + "\x00"), EventError),
    "token a number": (ev(ClientRequestToken=12345), EventError),
    "token a list": (ev(ClientRequestToken=lambda _, token: [token]), EventError),
    "token of 65 characters": (ev(ClientRequestToken="t" * 65), EventError),
    "token of 1 MB": (ev(ClientRequestToken="t" * MB), EventError),
    "token with a NUL": (ev(ClientRequestToken=lambda _, token: token[:-1] + "\x00"), EventError),
    "token with a newline": (ev(ClientRequestToken=lambda _, token: token[:-1] + "\n"), EventError),
    "token of no version": (ev(ClientRequestToken=lambda *_: str(uuid.uuid4())), VersionStageError),
    "Step CREATESECRET": (ev(Step="CREATESECRET"), EventError),
    "Step c_r_e_a_t_e_secret": (ev(Step="c_r_e_a_t_e_secret"), EventError),
    "Step 'createSecret '": (ev(Step="createSecret "), EventError),
    "Step ' createSecret'": (ev(Step=" createSecret"), EventError),
    "Step createsecret": (ev(Step="createsecret"), EventError),
    "Step CreateSecret": (ev(Step="CreateSecret"), EventError),
    "Step create-secret": (ev(Step="create-secret"), EventError),
    "Step create_Secret": (ev(Step="create_Secret"), EventError),
    "Step CREATE_SECRET": (ev(Step="CREATE_SECRET"), EventError),
    "Step with a newline": (ev(Step="createSecret\n"), EventError),
    "Step with a NUL": (ev(Step="createSecret\x00"), EventError),
    "Step with a full-width letter": (ev(Step="create\uff33ecret"), EventError),
    "Step rotateSecret": (ev(Step="rotateSecret"), EventError),
    "Step of 1 MB": (ev(Step="createSecret" * 90_000), EventError),
    "Step a number": (ev(Step=1), EventError),
    "Step a list": (ev(Step=["createSecret"]), EventError),
    "Step an object": (ev(Step={"createSecret": True}), EventError),
    "Step missing": (ev(Step=None), EventError),
    "token missing": (ev(ClientRequestToken=None), EventError),
    "SecretId missing": (ev(SecretId=None), EventError),
    "an empty event": (lambda *_: {}, EventError),
    "the event a list": (lambda arn, token: [arn, token, "createSecret"], EventError),
    "the event a string": (lambda *_: "createSecret", EventError),
    "the event null": (lambda *_: None, EventError),
    "the event nested 100,000 levels": (ev(Extra=lambda *_: nested(100_000)), EventError),
    "the event nested 33 levels": (ev(Extra=lambda *_: nested(33)), EventError),
    "the event with a 1 MB key": (ev(Extra="e" * MB), EventError),
    "the event with 20,000 keys": (
        lambda arn, token: {**ev()(arn, token), **dict.fromkeys(map(str, range(20_000)))},
        EventError,
    ),
    "RotationToken a number": (ev(RotationToken=987654321), EventError),
    "RotationToken of 1 MB": (ev(RotationToken="r" * MB), EventError),
    "RotationToken with a newline": (ev(RotationToken="rt\nforged"), EventError),
}


@pytest.mark.parametrize("name", list(EVENTS))
def test_a_bad_event(name: str, local_sm: LocalSecretsManager, secret: str, leak_check: Watched) -> None:
    build, expected = EVENTS[name]
    token = local_sm.start_rotation(secret)
    before = local_sm.stages(secret, marks=True)
    with pytest.raises(RotationError) as caught:
        handler(build(secret, token), None)
    assert isinstance(caught.value, expected), repr(caught.value)[:300]
    _bounded(caught.value, leak_check)
    assert local_sm.stages(secret, marks=True) == before


# -- secrets: the AWSCURRENT value, changed; each runs the steps until the first error --------------------
Secret = Callable[[PostgresServer, str, str], str]


def sv(**changes: Any) -> Secret:
    """A PostgreSQL secret of the live server, changed; None drops a key."""

    def build(server: PostgresServer, username: str, password: str) -> str:
        value = pg_secret(server, username, password)
        value.update({k: (v(username, password) if callable(v) else v) for k, v in changes.items()})
        return json.dumps({k: v for k, v in value.items() if v is not None})

    return build


SECRETS: dict[str, tuple[Secret, type[RotationError]]] = {
    "64 KB of [": (lambda *_: "[" * 65_536, SecretFormatError),
    "64 KB of nested objects": (lambda *_: '{"a":' * 13_000, SecretFormatError),
    "a key nested 40 levels": (sv(extra=json.loads("[" * 40 + "]" * 40)), SecretFormatError),
    "user name of 60 KB": (sv(username="u" * 60_000), SecretFormatError),
    "NUL in username": (sv(username=lambda u, _: u + "\x00sslmode=disable"), SecretFormatError),
    "NUL in dbname": (sv(dbname="postgres\x00 sslmode=disable"), SecretFormatError),
    "NUL in host": (sv(host="127.0.0.1\x00"), SecretFormatError),
    "NUL in password": (sv(password=lambda _, p: p + "\x00"), SecretFormatError),
    "newline in host": (sv(host="127.0.0.1\nforged"), SecretFormatError),
    "newline in username": (sv(username=lambda u, _: u + "\n"), SecretFormatError),
    "tab in password": (sv(password=lambda _, p: "\t" + p), SecretFormatError),
    "ESC in sslrootcert": (sv(sslrootcert="/opt/\x1b[2Jca.pem"), SecretFormatError),
    "C1 control in masterarn": (sv(masterarn="arn:aws:secretsmanager:x\x85"), SecretFormatError),
    "DEL in engine": (sv(engine="postgres\x7f"), SecretFormatError),
    "port in Arabic-Indic digits": (sv(port="\u0665\u0664\u0663\u0662"), SecretFormatError),
    "port '5432 '": (sv(port="5432 "), SecretFormatError),
    "port '+5432'": (sv(port="+5432"), SecretFormatError),
    "port '0x1538'": (sv(port="0x1538"), SecretFormatError),
    "port 1e3": (sv(port=1e3), SecretFormatError),
    "port true": (sv(port=True), SecretFormatError),
    "port 70000": (sv(port=70_000), SecretFormatError),
    "port a list": (sv(port=[5432]), SecretFormatError),
    "wrong engine": (sv(engine="mysql"), SecretFormatError),
    "engine of 60 KB": (sv(engine="e" * 60_000), SecretFormatError),
    "engine a number": (sv(engine=5), SecretFormatError),
    "masterarn a number": (sv(masterarn=42), SecretFormatError),
    "masterarn a list": (sv(masterarn=["arn:aws:secretsmanager:eu-west-1:1:secret:m"]), SecretFormatError),
    "masterarn naming no secret": (
        sv(masterarn="arn:aws:secretsmanager:us-east-1:123456789012:secret:none-AbCdEf"),
        SecretNotFoundError,
    ),
    "masterarn of 60 KB": (sv(masterarn="m" * 60_000), RotationError),
    'ssl "maybe"': (sv(ssl="maybe"), SecretFormatError),
    "ssl 2": (sv(ssl=2), SecretFormatError),
    'sslmode "prefer"': (sv(sslmode="prefer"), SecretFormatError),
    "NUL in a key the rotator never reads": (sv(note="a\x00b"), SecretFormatError),
    "escape nested deep in the secret": (sv(app={"colours": ["\x1b[31m"]}), SecretFormatError),
    "sslmode a number": (sv(sslmode=5), SecretFormatError),
    'allow_privileged_user "maybe"': (sv(allow_privileged_user="maybe"), SecretFormatError),
    "password missing": (sv(password=""), SecretFormatError),
    "host missing": (sv(host=None), SecretFormatError),
    "username a number": (sv(username=42), SecretFormatError),
    "not JSON": (lambda _s, _u, p: '{"password": "' + p + '", ', SecretFormatError),
    "a JSON array": (lambda _s, u, p: json.dumps(["postgres", u, p]), SecretFormatError),
    "a JSON string": (lambda _s, _u, p: json.dumps("only-" + p), SecretFormatError),
}


@pytest.mark.parametrize("name", list(SECRETS))
def test_a_bad_secret(
    name: str,
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    build, expected = SECRETS[name]
    password = new_password()
    text = build(pg, role_name, password)
    arn = local_sm.client.create_secret(Name=role_name, SecretString=text)["ARN"]
    token = local_sm.start_rotation(arn)
    before = local_sm.stages(arn, marks=True)
    error = _first_error(arn, token)
    assert isinstance(error, expected), repr(error)[:300]
    _bounded(error, leak_check, password)
    assert local_sm.stages(arn, marks=True) == before


# -- settings: a good secret of a real role, a bad environment ----------------------------------------------
BadValue = str | tuple[str, str]  # a value, or (what the test id calls it, the value)
BAD_VALUES: dict[str, list[BadValue]] = {
    "DB_CONNECT_TIMEOUT": ["abc", "-1", "0", "1e3", ("in Arabic-Indic digits", "\u0665")],
    "PASSWORD_LENGTH": ["x", "5", "5000", "32.5", ("in Arabic-Indic digits", "\u0663\u0662")],
    "EXCLUDE_NUMBERS": ["maybe"],
    "EXCLUDE_UPPERCASE": ["2"],
    "REQUIRE_EACH_INCLUDED_TYPE": ["sometimes"],
    "EXCLUDE_CHARACTERS": [("of 5,000 characters", "x" * 5000)],
    "ROTATORS_SSLMODE": ["prefer", "disable"],
    "ROTATORS_CA_BUNDLE": [("with a control character", "/opt/ca\x1b.pem")],
}


def _called(value: BadValue) -> tuple[str, str]:
    """(what the test id calls it, the value): a printable value is called by itself."""
    return value if isinstance(value, tuple) else (value, value)


SETTINGS: dict[str, tuple[str, str]] = {
    f"{variable} {called}": (variable, value)
    for variable, values in BAD_VALUES.items()
    for called, value in map(_called, values)
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_bad_setting(
    name: str,
    local_sm: LocalSecretsManager,
    secret: str,
    leak_check: Watched,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable, value = SETTINGS[name]
    monkeypatch.setenv(variable, value)
    token = local_sm.start_rotation(secret)
    before = local_sm.stages(secret, marks=True)
    error = _first_error(secret, token)
    assert isinstance(error, ConfigurationError), repr(error)[:300]
    assert variable in str(error)
    _bounded(error, leak_check)
    assert local_sm.stages(secret, marks=True) == before


def test_the_suite_holds_at_least_60_cases() -> None:
    assert len(EVENTS) + len(SECRETS) + len(SETTINGS) >= 60


def test_a_good_rotation_still_runs_with_a_fractional_timeout(
    local_sm: LocalSecretsManager, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings the suite refuses are refused for what they are: 2.5 seconds is fine."""
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "2.5")
    token = local_sm.start_rotation(secret)
    assert _first_error(secret, token) is None
    assert local_sm.stages(secret)[token] == ["AWSCURRENT"]


# -- rotators check: every engine value a handler accepts ------------------------------------------------
def test_check_serves_every_engine_value_its_handler_accepts() -> None:
    served = 0
    for engine in ENGINES:
        rotator = rotator_for(engine)
        for value in rotator.engines:
            assert type(rotator_serving(value)) is type(rotator), value
            served += 1
    assert served >= 12
    assert rotator_serving("mongodb").kind == rotator_for(BY_NAME["documentdb"]).kind
    with pytest.raises(RotationError, match="No rotator serves engine") as caught:
        rotator_serving("x" * 60_000)
    assert len(str(caught.value)) <= MAX_MESSAGE


def test_check_reads_a_mongodb_secret(
    local_sm: LocalSecretsManager, role_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`"engine": "mongodb"` was refused by `rotators check`, with advice to install an extra
    that does not exist; the handler accepts it. (Nothing listens on the port: the login fails.)"""
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "0.5")
    value = {
        "engine": "mongodb",
        "host": "127.0.0.1",
        "port": 9,
        "username": "app",
        "password": "Pw-" + uuid.uuid4().hex,
        "ssl": False,
    }
    arn = local_sm.create_secret(role_name, value)
    checks = {c.name: c for c in run_checks(arn)}
    assert checks["secret format"].passed is True
    assert checks["secret format"].detail.startswith("documentdb")
    assert checks["user logs in"].passed is False


# -- helpers ------------------------------------------------------------------------------------------------
def _first_error(arn: str, token: str) -> RotationError | None:
    """Run the four steps as Secrets Manager would, stopping at the first error."""
    for step in STEPS:
        try:
            handler({"SecretId": arn, "ClientRequestToken": token, "Step": step}, None)
        except RotationError as exc:
            return exc
    return None


def _bounded(error: BaseException | None, watched: Watched, *secrets: str) -> None:
    assert isinstance(error, RotationError), f"not a typed error: {type(error).__name__}"
    message = str(error)
    assert len(message) <= MAX_MESSAGE, len(message)
    for value in secrets:
        assert value not in message
    for line in watched.log_lines:
        assert len(line) <= MAX_LOG_LINE, line[:300]
