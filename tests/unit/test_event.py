"""RotationEvent.parse and Step.parse: what a Lambda event must hold, and what is never shown."""

from __future__ import annotations

from typing import Any

import pytest

from rotators.errors import EventError
from rotators.rotation import RotationEvent, Step

ROTATION_TOKEN = "rt-Sensitive-4f1c9e"


def event(**changes: Any) -> dict[str, Any]:
    """A valid event; a change to None drops the key."""
    raw: dict[str, Any] = {
        "SecretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo-AbCdEf",
        "ClientRequestToken": "3b6a4c2e-0000-4000-8000-000000000001",
        "Step": "createSecret",
        "RotationToken": ROTATION_TOKEN,
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "step"),
    [
        ("createSecret", Step.CREATE),
        ("setSecret", Step.SET),
        ("testSecret", Step.TEST),
        ("finishSecret", Step.FINISH),
        ("create_secret", Step.CREATE),
        ("set_secret", Step.SET),
        ("test_secret", Step.TEST),
        ("finish_secret", Step.FINISH),
    ],
)
def test_step_spellings(raw: str, step: Step) -> None:
    assert Step.parse(raw) is step
    assert RotationEvent.parse(event(Step=raw)).step is step


def test_parse_carries_every_field() -> None:
    parsed = RotationEvent.parse(event(Step="testSecret"))
    assert parsed.secret_id == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo-AbCdEf"
    assert parsed.token == "3b6a4c2e-0000-4000-8000-000000000001"
    assert parsed.step is Step.TEST
    assert parsed.rotation_token == ROTATION_TOKEN


def test_rotation_token_is_optional() -> None:
    assert RotationEvent.parse(event(RotationToken=None)).rotation_token is None


def test_rotation_token_is_never_shown() -> None:
    parsed = RotationEvent.parse(event())
    assert "demo-AbCdEf" in repr(parsed)  # the repr is meaningful ...
    assert ROTATION_TOKEN not in repr(parsed)  # ... but hides the token
    assert ROTATION_TOKEN not in str(parsed)
    assert ROTATION_TOKEN not in f"{parsed}"


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        (event(Step="rotateSecret"), ["Unknown rotation Step", "'rotateSecret'", "createSecret"]),
        (event(Step="create-secret"), ["Unknown rotation Step"]),
        (event(Step=3), ["Unknown rotation Step", "'3'"]),
        (event(SecretId=None), ["lacks SecretId"]),
        (event(ClientRequestToken=None), ["lacks ClientRequestToken"]),
        (event(Step=None), ["lacks Step"]),
        (event(SecretId="", Step=None), ["lacks SecretId, Step"]),
        (event(SecretId=42), ["SecretId must be a string"]),
        (event(ClientRequestToken=["a", "b"]), ["ClientRequestToken must be a string"]),
        (event(RotationToken=987654321), ["RotationToken must be a string"]),
        (event(RotationToken=[ROTATION_TOKEN]), ["RotationToken must be a string"]),
    ],
)
def test_bad_events_are_named(raw: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(EventError) as caught:
        RotationEvent.parse(raw)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert ROTATION_TOKEN not in message
    assert "987654321" not in message


@pytest.mark.parametrize("raw", [None, "createSecret", ["SecretId"], 7])
def test_non_mapping_event(raw: Any) -> None:
    with pytest.raises(EventError, match="not a JSON object"):
        RotationEvent.parse(raw)


def test_unknown_step_message_is_bounded() -> None:
    with pytest.raises(EventError) as caught:
        Step.parse("x" * 500)
    assert "x" * 41 not in str(caught.value)
