"""Secrets Manager's contract, enforced by the base class before any engine code runs."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from rotators.engines.postgresql import PostgreSQLRotator, handler
from rotators.errors import EventError, RotationNotEnabledError, SecretNotFoundError, VersionStageError
from rotators.secrets import SecretStore
from rotators.testing.secretsmanager import REGION, LocalSecretsManager
from tests.conftest import Admin, Watched, invoke


def test_rotation_must_be_enabled(local_sm: LocalSecretsManager, secret: str) -> None:
    with pytest.raises(RotationNotEnabledError, match="rotate-secret"):
        invoke(handler, secret, str(uuid.uuid4()), "createSecret")


def test_the_token_must_be_a_version_of_the_secret(local_sm: LocalSecretsManager, secret: str) -> None:
    local_sm.start_rotation(secret)
    labels = local_sm.stages(secret)
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        with pytest.raises(VersionStageError, match="not a version"):
            invoke(handler, secret, str(uuid.uuid4()), step)
    assert local_sm.stages(secret) == labels


def test_a_finished_token_is_a_no_op_for_every_step(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token)
    labels, current = local_sm.stages(secret), local_sm.value(secret, "AWSCURRENT")
    invoke(handler, secret, token)
    assert local_sm.stages(secret) == labels
    assert admin.logs_in(current["username"], current["password"])


def test_a_finish_that_stopped_between_its_label_moves_is_completed(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret", "testSecret")
    old = next(v for v, s in local_sm.stages(secret).items() if "AWSCURRENT" in s)
    # the first half of finishSecret, then the process died
    local_sm.client.update_secret_version_stage(
        SecretId=secret, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=old
    )
    assert sorted(local_sm.stages(secret)[token]) == ["AWSCURRENT", "AWSPENDING"]
    invoke(handler, secret, token, "finishSecret")
    assert local_sm.stages(secret)[token] == ["AWSCURRENT"]
    invoke(handler, secret, local_sm.start_rotation(secret))  # the next rotation is not refused
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])


def test_any_step_completes_such_a_finish_even_when_its_answer_is_lost(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    """The late step takes AWSPENDING off; the answer to that call is lost, so the SDK sends it again
    and Secrets Manager refuses it (the label is gone): the step is done, not failed."""
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret", "testSecret")
    old = next(v for v, s in local_sm.stages(secret).items() if "AWSCURRENT" in s)
    local_sm.client.update_secret_version_stage(
        SecretId=secret, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=old
    )
    sent: list[int] = []

    def answer_lost(attempts: int, response: object = None, **_: object) -> float | None:
        sent.append(attempts)
        return 0.0 if attempts == 1 and response is not None else None  # send it again, now

    client: Any = boto3.client(  # Any: the stubs type a handler as returning None
        "secretsmanager",
        endpoint_url=local_sm.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.meta.events.register("needs-retry.secrets-manager.UpdateSecretVersionStage", answer_lost)
    rotator = PostgreSQLRotator(SecretStore(client))
    rotator.handle({"SecretId": secret, "ClientRequestToken": token, "Step": "setSecret"}, None)

    assert sent[:2] == [1, 2], "the call went twice: its first answer was lost"
    assert local_sm.stages(secret)[token] == ["AWSCURRENT"]
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])


def test_the_rotation_token_is_passed_on_and_never_logged(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    rotation_token = "rt-" + uuid.uuid4().hex + uuid.uuid4().hex
    leak_check.add(rotation_token)
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, RotationToken=rotation_token)
    assert list(local_sm.stages(secret)[token]) == ["AWSCURRENT"]


def test_an_unknown_secret_is_a_clear_error(local_sm: LocalSecretsManager) -> None:
    with pytest.raises(SecretNotFoundError, match="does not exist"):
        invoke(handler, "no-such-secret", str(uuid.uuid4()), "createSecret")


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"SecretId": "s", "ClientRequestToken": "t"},
        {"SecretId": "s", "ClientRequestToken": "t", "Step": "rotateSecret"},
        {"SecretId": 5, "ClientRequestToken": "t", "Step": "createSecret"},
    ],
)
def test_bad_events_fail_before_any_call(local_sm: LocalSecretsManager, event: dict[str, object]) -> None:
    with pytest.raises(EventError):
        handler(event, None)


def test_snake_case_steps_are_accepted(local_sm: LocalSecretsManager, admin: Admin, secret: str) -> None:
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "create_secret", "set_secret", "test_secret", "finish_secret")
    assert local_sm.value(secret, "AWSPREVIOUS")["password"] == before


@pytest.mark.parametrize("container", ["warm", "cold"])
def test_api_calls_and_logins_per_step(
    local_sm: LocalSecretsManager, secret: str, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    """The common path is cheap: one DescribeSecret per invocation, no version read twice in a
    warm container (12 calls per rotation, two of them for the master-safety checks), and a
    single-user setSecret logs in once, with AWSCURRENT, instead of trying a doomed login first."""
    from rotators.engines.postgresql import PostgreSQLRotator
    from rotators.secrets import SecretStore

    calls: list[str] = []
    client = boto3.client("secretsmanager", endpoint_url=local_sm.endpoint_url)
    client.meta.events.register("before-call.secretsmanager.*", lambda model, **_: calls.append(model.name))
    logins: list[str] = []
    original_connect = PostgreSQLRotator.connect

    def counting_connect(self: PostgreSQLRotator, secret: object, username: str, password: str) -> object:
        logins.append(username)
        return original_connect(self, secret, username, password)  # type: ignore[arg-type]

    monkeypatch.setattr(PostgreSQLRotator, "connect", counting_connect)
    warm = PostgreSQLRotator(SecretStore(client))
    token = local_sm.start_rotation(secret)
    per_step: dict[str, list[str]] = {}
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        calls.clear()
        logins.clear()
        rotator = warm if container == "warm" else PostgreSQLRotator(SecretStore(client))
        rotator.handle({"SecretId": secret, "ClientRequestToken": token, "Step": step})
        per_step[step] = [*calls, *(f"login:{u}" for u in logins)]
    user = f"login:{local_sm.value(secret, 'AWSCURRENT')['username']}"
    reads = {"warm": [], "cold": ["GetSecretValue", "GetSecretValue"]}[container]
    assert per_step == {
        "createSecret": [
            "DescribeSecret",
            "GetSecretValue",
            "GetSecretValue",
            "GetRandomPassword",
            "PutSecretValue",
        ],
        # The second DescribeSecret: right before the change, is this token still AWSPENDING?
        "setSecret": ["DescribeSecret", *reads, "DescribeSecret", user],
        # testSecret labels the version it tested (ROTATORS_TESTED), for finishSecret to read.
        "testSecret": ["DescribeSecret", *reads[:1], "UpdateSecretVersionStage", user],
        "finishSecret": ["DescribeSecret", "UpdateSecretVersionStage", "UpdateSecretVersionStage"],
    }
