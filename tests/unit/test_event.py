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
        (event(Step=3), ["Step must be a string"]),
        (event(Step="CREATESECRET"), ["Unknown rotation Step", "'CREATESECRET'", "createSecret"]),
        (event(SecretId="x" * 2049), ["SecretId is longer than 2048 characters"]),
        (event(ClientRequestToken="t" * 65), ["ClientRequestToken is longer than 64 characters"]),
        (event(SecretId="demo\nforged log line"), ["SecretId holds a control character"]),
        (event(ClientRequestToken="abc\x00def"), ["ClientRequestToken holds a control character"]),
        (event(RotationToken="rt\x85"), ["RotationToken holds a control character"]),
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


@pytest.mark.parametrize(
    "raw",
    [
        "CREATESECRET",
        "createsecret",
        "CreateSecret",
        "c_r_e_a_t_e_secret",
        "createSecret ",
        " createSecret",
        "create_Secret",
        "CREATE_SECRET",
        "create-secret",
        "createSecret\n",
        "create\uff33ecret",  # a full-width S
        "setsecret",
        "Finish_Secret",
        "test__secret",
    ],
)
def test_only_the_sent_and_the_documented_spelling_run(raw: str) -> None:
    """No case folding, no underscores dropped, no whitespace trimmed."""
    with pytest.raises(EventError, match="Unknown rotation Step"):
        Step.parse(raw)


def test_the_snake_case_spelling_is_derived_from_the_sent_one() -> None:
    assert [s.snake_case for s in Step] == ["create_secret", "set_secret", "test_secret", "finish_secret"]


def test_the_longest_real_ids_pass() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + "n" * 512 + "-AbCdEf"
    parsed = RotationEvent.parse(event(SecretId=arn, ClientRequestToken="t" * 64))
    assert (parsed.secret_id, parsed.token) == (arn, "t" * 64)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_read_and_deeper_refused() -> None:
    RotationEvent.parse(event(Extra=nested(31)))  # the event itself is level 1
    with pytest.raises(EventError, match="nested more than 32 levels"):
        RotationEvent.parse(event(Extra=nested(32)))


def test_very_deep_nesting_is_an_event_error_not_a_recursion_error() -> None:
    with pytest.raises(EventError, match="nested"):
        RotationEvent.parse(event(Extra=nested(100_000)))


@pytest.mark.parametrize(
    "extra", [{"Blob": "b" * 20_000}, {"Many": ["x"] * 20_000}, {f"k{i}": i for i in range(9000)}]
)
def test_a_huge_event_is_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(EventError, match="larger than"):
        RotationEvent.parse(event(**extra))
