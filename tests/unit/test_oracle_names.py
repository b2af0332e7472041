"""OracleRotator's names and passwords: Oracle's quoting rules, checked before anything changes."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from rotators.engines.oracle import OracleRotator, server_version
from rotators.engines.oracle_names import parse_name, quote, quote_password
from rotators.errors import ConfigurationError, PasswordChangeError, SecretFormatError
from rotators.rotation import Step
from rotators.secrets import AWSCURRENT, SecretStore
from tests.offline import FakeSecretsManager, context


@pytest.mark.parametrize(
    ("spelled", "stored"),
    [
        ("app", "APP"),
        ("App_1$x#", "APP_1$X#"),
        ("select", "SELECT"),  # a reserved word is fine: the statement quotes it
        ('"App"', "App"),
        ('"app user"', "app user"),
        ('"O\'Neil-ünï"', "O'Neil-ünï"),
        ('"1st"', "1st"),
    ],
)
def test_a_name_is_read_as_oracle_reads_it(spelled: str, stored: str) -> None:
    assert parse_name(spelled).stored == stored


@pytest.mark.parametrize(
    "spelled",
    [
        "app-user",
        "app user",
        "1app",
        "_app",
        "ünï",
        "",
        '"',
        '""',
        '"a"b"',
        '"tab\tname"',
        '"new\nline"',
        'app"',
    ],
)
def test_a_name_that_cannot_be_quoted_safely_is_refused(spelled: str) -> None:
    with pytest.raises(SecretFormatError, match="Oracle"):
        parse_name(spelled)


def test_the_refusal_says_how_to_write_the_name() -> None:
    with pytest.raises(SecretFormatError, match=r'\\"APP-USER\\"'):
        parse_name("app-user")


@pytest.mark.parametrize("identifier", ['a"b', "a\x00b", ""])
def test_quote_refuses_what_oracle_cannot_quote(identifier: str) -> None:
    with pytest.raises(PasswordChangeError):
        quote(identifier)


def test_quote_password() -> None:
    assert quote_password("Ab1-x'y\\z") == '"Ab1-x\'y\\z"'
    for bad in ['Ab"1', "Ab\x001", ""]:
        with pytest.raises(ConfigurationError, match="double quote"):
            quote_password(bad)


@pytest.mark.parametrize(
    ("name", "partner"),
    [
        ("app", "app_clone"),
        ("app_clone", "app"),
        ("APP_CLONE", "APP"),  # Oracle reads nonquoted names in any case
        ("App_Clone", "App"),
        ("APP", "APP_CLONE"),
        ('"App"', '"App_clone"'),
        ('"App_clone"', '"App"'),
        ('"APP_CLONE"', '"APP_CLONE_clone"'),  # quoted: case counts, this is not a clone name
        ("x_clone", "x"),
    ],
)
def test_partner(name: str, partner: str) -> None:
    rotator = OracleRotator(SecretStore(cast(Any, object())))
    assert rotator.partner(name) == partner
    assert parse_name(rotator.partner(partner)).stored == parse_name(name).stored


def test_clone_name() -> None:
    rotator = OracleRotator(SecretStore(cast(Any, object())))
    assert rotator.clone_name("app") == "app_clone"
    assert rotator.clone_name('"App User"') == '"App User_clone"'


@pytest.mark.parametrize(
    ("version", "parsed"),
    [("19.3.0.0.0", (19, 3)), ("12.1.0.2.0", (12, 1)), ("23.4.0.24.5", (23, 4)), ("11", (11, 0))],
)
def test_server_version(version: str, parsed: tuple[int, int]) -> None:
    assert server_version(version) == parsed


# -- createSecret: the names and the generated password ---------------------------------------------
def rotator_for(current: dict[str, Any], *passwords: str) -> tuple[OracleRotator, FakeSecretsManager]:
    """GetRandomPassword draws `passwords` in order."""
    client = FakeSecretsManager({("demo", AWSCURRENT): current}, passwords=passwords)
    return OracleRotator(SecretStore(cast(Any, client))), client


LOGIN = {"engine": "oracle", "host": "db", "port": 1521, "dbname": "ORCLPDB1", "password": "Old-pass-1"}


def test_defaults_are_port_1521_and_service_orcl() -> None:
    bare = OracleRotator().parse(
        json.dumps({"engine": "oracle", "host": "db", "username": "app", "password": "p"}), where="x"
    )
    assert (bare.port, bare.dbname) == (1521, "ORCL")


def test_the_generated_password_is_30_characters_without_a_double_quote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "@")  # an operator's own list still keeps `"` out
    rotator, client = rotator_for({**LOGIN, "username": "app"}, "Abcdefgh1")
    pending = rotator.make_pending(context(rotator, Step.CREATE))
    assert pending.password == "Abcdefgh1"
    assert client.policies[0]["PasswordLength"] == 30
    assert client.policies[0]["ExcludeCharacters"] == '@"'


def test_a_password_a_verify_function_would_refuse_is_drawn_again() -> None:
    rotator, client = rotator_for(
        {**LOGIN, "username": "app"},
        "1Abcdefgh",  # starts with a digit
        "-Abcdefgh1",  # starts with a symbol
        "xAPPx12345",  # holds the user name
        "xPPAx12345",  # holds it reversed
        "xOrAcLe123",  # holds 'oracle'
        "Good-pass-1",
    )
    assert rotator.make_pending(context(rotator, Step.CREATE)).password == "Good-pass-1"
    assert client.passwords == []


def test_no_acceptable_password_is_a_configuration_error() -> None:
    rotator, _ = rotator_for({**LOGIN, "username": "app"}, *["1digit-first"] * 11)
    with pytest.raises(ConfigurationError, match="EXCLUDE_"):
        rotator.make_pending(context(rotator, Step.CREATE))


@pytest.mark.parametrize("username", ["app-user", '"a"b"', "1app"])
@pytest.mark.parametrize("master", [False, True])
def test_an_illegal_name_fails_create_before_a_password_is_drawn(username: str, master: bool) -> None:
    current = {**LOGIN, "username": username, **({"masterarn": "m"} if master else {})}
    rotator, client = rotator_for(current, "Never-used-1")
    with pytest.raises(SecretFormatError, match=r"Oracle|double quote"):
        rotator.make_pending(context(rotator, Step.CREATE))
    assert client.policies == [], "nothing was generated, nothing staged"


def test_a_clone_name_over_128_bytes_fails_create() -> None:
    rotator, client = rotator_for({**LOGIN, "username": "A" * 123, "masterarn": "m"}, "Never-used-1")
    with pytest.raises(SecretFormatError, match="longer than 128 bytes"):
        rotator.make_pending(context(rotator, Step.CREATE))
    assert client.policies == []


def test_alternating_pending_is_the_clone_spelled_like_the_original() -> None:
    rotator, _ = rotator_for({**LOGIN, "username": '"App"', "masterarn": "m"}, "Good-pass-1")
    assert rotator.make_pending(context(rotator, Step.CREATE)).username == '"App_clone"'


def test_password_length_over_1024_is_refused_at_create(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSWORD_LENGTH", "1025")
    rotator, client = rotator_for({**LOGIN, "username": "app"}, "Never-used-1")
    with pytest.raises(ConfigurationError, match="at most 1024"):
        rotator.make_pending(context(rotator, Step.CREATE))
    assert client.policies == []
