"""DatabaseRotator.password_policy(): engine defaults, overridden by AWS's environment variables."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from rotators.engines.postgresql import PostgreSQLRotator
from rotators.errors import ConfigurationError
from rotators.secrets import PasswordPolicy, _client

VARIABLES = (
    "PASSWORD_LENGTH",
    "EXCLUDE_CHARACTERS",
    "EXCLUDE_NUMBERS",
    "EXCLUDE_PUNCTUATION",
    "EXCLUDE_UPPERCASE",
    "EXCLUDE_LOWERCASE",
    "REQUIRE_EACH_INCLUDED_TYPE",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


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
