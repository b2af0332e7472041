"""parse_database_secret and DatabaseSecret: the JSON format AWS's rotation functions use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rotators.database import DatabaseSecret, TlsSettings, other_user, parse_database_secret, weaker_tls
from rotators.errors import SecretFormatError

PASSWORD = "S3cr3t-Value-xyz"
WHERE = "the AWSCURRENT version of 'demo'"
DROP = object()


def text(**changes: Any) -> str:
    """A valid secret as JSON; a change to DROP removes the key."""
    value: dict[str, Any] = {
        "engine": "postgres",
        "host": "DB.example.com",
        "port": 5432,
        "username": "app",
        "password": PASSWORD,
        "dbname": "appdb",
    }
    value.update(changes)
    return json.dumps({k: v for k, v in value.items() if v is not DROP})


def parse(secret_text: str) -> DatabaseSecret:
    return parse_database_secret(
        secret_text,
        engines=frozenset({"postgres", "aurora-postgresql"}),
        default_port=5432,
        default_dbname="postgres",
        handler_hint="x",
        where=WHERE,
    )


# -- accepted formats ----------------------------------------------------------------------------
def test_a_complete_secret() -> None:
    secret = parse(text(masterarn="arn:master"))
    assert (secret.engine, secret.host, secret.port) == ("postgres", "DB.example.com", 5432)
    assert (secret.username, secret.password, secret.dbname) == ("app", PASSWORD, "appdb")
    assert secret.masterarn == "arn:master"
    assert secret.tls == TlsSettings(enabled=True, mode=None, ca_bundle=None)
    assert secret.target == ("db.example.com", 5432, "appdb")


@pytest.mark.parametrize("port", [6543, "6543"])
def test_port_as_number_or_numeric_string(port: object) -> None:
    assert parse(text(port=port)).port == 6543


def test_port_and_dbname_default() -> None:
    assert parse(text(port=DROP)).port == 5432
    assert parse(text(dbname=DROP)).dbname == "postgres"
    assert parse(text(dbname=None)).dbname == "postgres"
    assert parse(text(dbname="")).dbname == "postgres"


def test_aurora_engine() -> None:
    assert parse(text(engine="aurora-postgresql")).engine == "aurora-postgresql"


def test_unknown_keys_are_carried_forward() -> None:
    extra = {"proxy": {"endpoint": "p.example.com", "ids": [1, 2]}, "note": "ops", "port": "6543"}
    original = json.loads(text(**extra))
    secret = parse(json.dumps(original))
    rotated = secret.with_login("app_clone", "N3w-Value")
    assert json.loads(rotated.to_json()) == {**original, "username": "app_clone", "password": "N3w-Value"}
    assert (rotated.username, rotated.password) == ("app_clone", "N3w-Value")
    assert json.loads(secret.to_json()) == original  # the old value is untouched


@pytest.mark.parametrize(
    ("ssl", "enabled"), [(True, True), (False, False), ("true", True), ("false", False), ("FALSE", False)]
)
def test_ssl_flag(ssl: object, enabled: bool) -> None:
    assert parse(text(ssl=ssl)).tls.enabled is enabled


def test_sslmode_and_sslrootcert_go_into_tls() -> None:
    secret = parse(text(sslmode="verify-ca", sslrootcert="/opt/ca.pem"))
    assert secret.tls == TlsSettings(enabled=True, mode="verify-ca", ca_bundle="/opt/ca.pem")


def test_repr_never_shows_the_password() -> None:
    secret = parse(text(note=PASSWORD))  # even a copy of it under another key
    for shown in (repr(secret), str(secret), repr(secret.with_login("app", PASSWORD))):
        assert "'app'" in shown
        assert PASSWORD not in shown


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("secret_text", "fragments"),
    [
        (f'{{"password": "{PASSWORD}", ', ["not valid JSON"]),
        (json.dumps(["postgres", PASSWORD]), ["JSON object"]),
        (text(host=DROP), ["lacks 'host'"]),
        (text(username=""), ["lacks 'username'"]),
        (text(password=DROP), ["lacks 'password'"]),
        (text(engine=DROP, host=None), ["lacks 'engine', 'host'"]),
        (text(engine="mysql"), ["engine 'mysql'", "x"]),
        (text(port=0), ["'port'", "between 1 and 65535"]),
        (text(port=65536), ["'port'", "between 1 and 65535"]),
        (text(port="5432x"), ["'port'", "must be a number"]),
        (text(port=PASSWORD), ["'port'", "must be a number"]),
        (text(port=True), ["'port'", "must be a number"]),
        (text(port=None), ["'port'", "must be a number"]),
        (text(username=42), ["'username'", "must be a string"]),
        (text(password=[PASSWORD]), ["'password'", "must be a string"]),
        (text(ssl="maybe"), ["'ssl'", "true or false"]),
        (text(ssl=1), ["'ssl'", "true or false"]),
        (text(sslmode=1), ["'sslmode'", "must be a string"]),
    ],
)
def test_format_errors_name_the_key_never_the_password(secret_text: str, fragments: list[str]) -> None:
    with pytest.raises(SecretFormatError) as caught:
        parse(secret_text)
    message = str(caught.value)
    assert WHERE in message
    for fragment in fragments:
        assert fragment in message
    assert PASSWORD not in message


def test_port_with_a_fraction_is_rejected() -> None:
    with pytest.raises(SecretFormatError, match="'port'"):
        parse(text(port=5432.9))


# -- other_user ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "partner"),
    [
        ("app", "app_clone"),
        ("app_clone", "app"),
        ("app_clone_clone", "app_clone"),
        ("_clone", "_clone_clone"),  # never the empty name
        ("_clone_clone", "_clone"),
    ],
)
def test_other_user(name: str, partner: str) -> None:
    assert other_user(name) == partner


@pytest.mark.parametrize("name", ["app", "_clone", "App-User"])
def test_other_user_alternates(name: str) -> None:
    assert other_user(other_user(name)) == name


@pytest.mark.parametrize(
    ("pending", "current", "weaker"),
    [
        ({"ssl": False}, {}, True),
        ({"sslmode": "disable"}, {}, True),
        ({"sslmode": "require"}, {}, True),
        ({"sslmode": "verify-ca"}, {"sslmode": "verify-full"}, True),
        ({"sslrootcert": "/tmp/impostor.pem"}, {"sslrootcert": "/opt/rds.pem"}, True),
        ({"sslrootcert": "system"}, {"sslrootcert": "/opt/rds.pem"}, True),
        ({}, {}, False),
        ({"sslmode": "verify-full"}, {"sslmode": "require"}, False),
        ({"sslmode": "require", "sslrootcert": "/tmp/other.pem"}, {"sslmode": "require"}, False),
        ({}, {"ssl": False}, False),
    ],
)
def test_weaker_tls(
    pending: dict[str, Any], current: dict[str, Any], weaker: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending version may not lower the mode, nor verify against another CA bundle."""
    monkeypatch.delenv("ROTATORS_SSLMODE", raising=False)
    monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)
    assert weaker_tls(parse(text(**pending)), parse(text(**current))) is weaker


def test_the_privileged_opt_in_is_a_strict_boolean() -> None:
    assert parse(text()).allow_privileged is False
    assert parse(text(allow_privileged_user=True)).allow_privileged is True
    with pytest.raises(SecretFormatError, match="allow_privileged_user"):
        parse(text(allow_privileged_user="maybe"))


# -- strict, bounded input --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["engine", "host", "username", "password", "dbname", "masterarn", "sslmode", "sslrootcert"]
)
@pytest.mark.parametrize("char", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"])
def test_a_control_character_names_the_key_never_the_value(key: str, char: str) -> None:
    """A NUL in the user name cut libpq's connection string short, dropping password and TLS."""
    value = f"{PASSWORD}{char}tail" if key == "password" else f"value{char}{PASSWORD}"
    with pytest.raises(SecretFormatError) as caught:
        parse(text(**{key: value}))
    message = str(caught.value)
    assert f"Key {key!r}" in message
    assert "control character" in message
    assert PASSWORD not in message
    assert char not in message


def test_line_breaks_in_a_key_the_rotator_never_reads_are_carried_forward() -> None:
    """A PEM certificate or a note may hold newlines and tabs; the rotator passes them on untouched."""
    pem = "-----BEGIN CERTIFICATE-----\r\nMIIB\tx\n-----END CERTIFICATE-----\n"
    secret = parse(text(note="line one\nline two", tls={"ca": pem}))
    assert json.loads(secret.to_json())["note"] == "line one\nline two"
    assert json.loads(secret.to_json())["tls"] == {"ca": pem}


@pytest.mark.parametrize(
    "changes",
    [
        {"note": f"{PASSWORD}\x00tail"},
        {"note": "\x1b[2J"},
        {"app": {"nested": ["ok", f"bell\x07{PASSWORD}"]}},
        {"app": {f"key\x00{PASSWORD}": 1}},
        {"note\x00x": "value"},
        {"tags": ["\x85"]},
    ],
)
def test_other_control_characters_anywhere_in_the_secret_are_refused(changes: dict[str, Any]) -> None:
    """NUL, escape, bell and the C1 controls have no place in any string of a secret, nested ones
    and keys included: they cut C strings short and forge terminal or log output."""
    with pytest.raises(SecretFormatError, match="control character") as caught:
        parse(text(**changes))
    assert PASSWORD not in str(caught.value)
    assert not any(char in str(caught.value) for char in "\x00\x07\x1b\x85")


@pytest.mark.parametrize("mode", ["prefer", "allow", "verify_full", "VERIFY-FULL", ""])
def test_an_sslmode_the_rotator_does_not_take_is_refused_when_read(mode: str) -> None:
    """At parse time, so createSecret stops before anything is staged: allow and prefer fall back
    to plaintext without a word, and a misspelling must not mean a default."""
    if mode == "":
        assert parse(text(sslmode=mode)).tls.mode is None, "empty means unset"
        return
    with pytest.raises(SecretFormatError, match=r"Key 'sslmode'.*\"ssl\": false") as caught:
        parse(text(sslmode=mode))
    assert repr(mode) in str(caught.value)


@pytest.mark.parametrize("mode", ["disable", "require", "verify-ca", "verify-full"])
def test_the_sslmodes_the_rotator_takes(mode: str) -> None:
    assert parse(text(sslmode=mode)).tls.mode == mode


@pytest.mark.parametrize(
    "port",
    [
        "\u0665\u0664\u0663\u0662",
        "5432 ",
        " 5432",
        "+5432",
        "0x1538",
        "5_432",
        "5432.0",
        "-5432",
        "",
        1e3,
        5432.0,
    ],
)
def test_port_only_ascii_digits(port: object) -> None:
    with pytest.raises(SecretFormatError, match="'port'"):
        parse(text(port=port))


def test_a_port_string_of_ascii_digits() -> None:
    assert parse(text(port="05432")).port == 5432


@pytest.mark.parametrize(
    "secret_text",
    [
        "[" * 65_536,
        '{"a":' * 65_536,
        json.dumps(json.loads(text()) | {"extra": json.loads("[" * 40 + "]" * 40)}),
        json.dumps(json.loads(text()) | {"extra": json.loads('{"a":' * 32 + "1" + "}" * 32)}),
    ],
)
def test_deep_nesting_is_a_format_error_not_a_recursion_error(secret_text: str) -> None:
    with pytest.raises(SecretFormatError, match="nested more than 32 levels"):
        parse(secret_text)


def test_nesting_up_to_the_limit_is_read() -> None:
    extra = json.loads("[" * 31 + "]" * 31)  # the secret's object is level 1
    assert json.loads(parse(json.dumps(json.loads(text()) | {"extra": extra})).to_json())["extra"] == extra


def test_a_long_engine_value_is_quoted_bounded() -> None:
    with pytest.raises(SecretFormatError) as caught:
        parse(text(engine="m" * 60_000))
    assert len(str(caught.value)) < 1000
    assert "60000 characters" in str(caught.value)
