"""The custom-rotator API without servers: the secret format, its hygiene, and the HTTPS rule."""

from __future__ import annotations

import json

import pytest

from rotators.custom import JsonSecret, call_json
from rotators.errors import SecretFormatError
from rotators.examples.api_key import ApiKeyRotator, ApiKeyUpdater

SECRET = {"endpoint": "https://api.example.com", "key_id": "key_1", "api_key": "sk_Unit-Test-Secret-42"}


def test_a_json_secret_never_shows_its_values() -> None:
    value = JsonSecret(SECRET)
    for shown in (repr(value), str(value), f"{value}", repr([value])):
        assert "sk_Unit" not in shown and "api.example.com" not in shown
    assert "api_key" in repr(value), "the keys are named, to help debugging"


def test_replace_keeps_every_other_key_and_the_original() -> None:
    value = JsonSecret({**SECRET, "owner": "team-a"})
    changed = value.replace(api_key="sk_other")
    assert json.loads(changed.to_json()) == {**SECRET, "owner": "team-a", "api_key": "sk_other"}
    assert value["api_key"] == SECRET["api_key"]


@pytest.mark.parametrize("missing", ["endpoint", "key_id", "api_key"])
def test_a_missing_key_is_named_and_no_value_is_shown(missing: str) -> None:
    text = json.dumps({k: v for k, v in SECRET.items() if k != missing})
    for rotator in (ApiKeyRotator(), ApiKeyUpdater()):
        with pytest.raises(SecretFormatError, match=f"needs '{missing}'") as error:
            rotator.parse(text, where="the test")
        assert "sk_Unit" not in str(error.value)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", json.dumps({**SECRET, "api_key": 7})])
def test_other_shapes_are_refused(text: str) -> None:
    with pytest.raises(SecretFormatError):
        ApiKeyRotator().parse(text, where="the test")


def test_the_issuer_always_needs_its_id_key() -> None:
    class Bare(ApiKeyRotator):
        required = ("endpoint",)  # type: ignore[assignment]  # drops key_id on purpose

    with pytest.raises(SecretFormatError, match="needs 'key_id'"):
        Bare().parse(json.dumps({"endpoint": "https://x", "api_key": "k"}), where="the test")


def test_only_the_secret_is_sensitive() -> None:
    assert ApiKeyRotator().sensitive_values(JsonSecret(SECRET)) == [SECRET["api_key"]]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/keys", "ftp://x/keys", "127.0.0.1/keys"])
def test_call_json_never_sends_a_key_in_plaintext(url: str) -> None:
    with pytest.raises(SecretFormatError, match="https://"):
        call_json("GET", url, bearer=SECRET["api_key"])
