"""`rotators invoke`, `rotate` and `wire` against a real PostgreSQL and the local Secrets Manager.

The sample events in events/ are used verbatim, except for the SecretId that `--secret-id`
replaces with the test's own secret (their token is the rotation's token).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotators.cli import main
from rotators.secrets import SecretStore
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import STEPS, Admin, Watched

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = str(ROOT / "template.yaml")
EVENTS = ROOT / "events"
EVENT_TOKEN = json.loads((EVENTS / "createSecret.json").read_text())["ClientRequestToken"]


def outputs(watched: Watched) -> tuple[str, str]:
    """stdout and stderr so far (both still go through the leak check)."""
    assert watched.capture is not None
    out, err = watched.capture.readouterr()
    watched.output.extend([out, err])
    return out, err


def assert_rotated(sm: LocalSecretsManager, admin: Admin, arn: str, old_password: str) -> None:
    stages = sm.stages(arn)
    assert sorted(stages.values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    current = sm.value(arn, "AWSCURRENT")
    assert current["password"] != old_password
    assert admin.logs_in(current["username"], current["password"])
    assert not admin.logs_in(current["username"], old_password)


# -- invoke ------------------------------------------------------------------------------------------
def test_each_sample_event_through_invoke_rotates_the_secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    secret: str,
    leak_check: Watched,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The endpoint comes from the --env-vars file only (the shell no longer has it), as with
    `sam local invoke ... --env-vars`; afterwards the process environment is as it was."""
    monkeypatch.delenv("SECRETS_MANAGER_ENDPOINT")
    env_file = tmp_path / "env.json"
    env_file.write_text(
        json.dumps({"PostgreSQLRotator": {"SECRETS_MANAGER_ENDPOINT": local_sm.endpoint_url}})
    )
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    local_sm.start_rotation(secret, EVENT_TOKEN)

    for step in STEPS:
        code = main(
            [
                *("invoke", "PostgreSQLRotator", "-e", str(EVENTS / f"{step}.json")),
                *("--env-vars", str(env_file), "--secret-id", secret, "-t", TEMPLATE),
            ]
        )
        out, err = outputs(leak_check)
        assert code == 0, err
        assert out.strip() == "null", "the handler's result, alone on stdout"
        assert "START RequestId:" in err and "REPORT RequestId:" in err
        assert f'"step":"{step}"' in err.replace(" ", ""), "the function's JSON logs go to stderr"

    assert "SECRETS_MANAGER_ENDPOINT" not in os.environ
    assert_rotated(local_sm, admin, secret, before)


def test_invoke_failure_prints_lambdas_error_object_and_exits_1(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    local_sm.start_rotation(secret)
    before = local_sm.stages(secret)
    code = main(
        [
            *("invoke", "PostgreSQLRotator", "-e", str(EVENTS / "createSecret.json"), "-t", TEMPLATE),
            *("--secret-id", secret, "--token", str(uuid.uuid4())),
        ]
    )
    out, _ = outputs(leak_check)
    assert code == 1
    error = json.loads(out)
    assert error["errorType"] == "VersionStageError"
    assert "is not a version of" in error["errorMessage"]
    assert error["stackTrace"], "as Lambda reports it"
    assert local_sm.stages(secret) == before, "a failed step moves no label"


def test_invoke_reports_env_vars_that_sam_would_ignore(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched, tmp_path: Path
) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"NOT_IN_TEMPLATE": "x", "POWERTOOLS_LOG_LEVEL": "ERROR"}}))
    token = local_sm.start_rotation(secret)
    code = main(
        [
            *("invoke", "PostgreSQLRotator", "-e", str(EVENTS / "createSecret.json"), "-t", TEMPLATE),
            *("--env-vars", str(env_file), "--secret-id", secret, "--token", token),
        ]
    )
    _, err = outputs(leak_check)
    assert code == 0
    assert "Ignored from --env-vars" in err and "NOT_IN_TEMPLATE" in err
    assert "NOT_IN_TEMPLATE" not in os.environ


def test_invoke_usage_errors_exit_2(leak_check: Watched, tmp_path: Path) -> None:
    assert main(["invoke", "NoSuchRotator", "-t", TEMPLATE]) == 2
    _, err = outputs(leak_check)
    assert "choose one of" in err and "PostgreSQLRotator" in err

    bad = tmp_path / "env.json"
    bad.write_text('{"PostgreSQLRotator": "not an object"}')
    assert main(["invoke", "PostgreSQLRotator", "--env-vars", str(bad), "-t", TEMPLATE]) == 2
    _, err = outputs(leak_check)
    assert "must map 'Parameters' and function names" in err


# -- rotate ------------------------------------------------------------------------------------------
def test_rotate_runs_the_four_steps_with_a_fresh_token(
    local_sm: LocalSecretsManager, admin: Admin, secret: str, leak_check: Watched
) -> None:
    abandoned = local_sm.start_rotation(secret)  # attaches a function; its rotation never ran
    before = local_sm.value(secret, "AWSCURRENT")["password"]

    code = main(["rotate", "--secret-id", secret, "--engine", "postgresql", "-t", TEMPLATE])
    out, err = outputs(leak_check)
    assert code == 0, out + err
    for step in STEPS:
        assert f"{step:<13} ok" in out
    assert abandoned not in out, "a fresh token, not the abandoned rotation's"
    assert "AWSCURRENT ROTATORS_TESTED  <- this rotation" in out, "tested, then made current"
    assert_rotated(local_sm, admin, secret, before)


def test_rotate_stops_at_the_first_failure_and_shows_the_labels(
    local_sm: LocalSecretsManager,
    admin: Admin,
    secret: str,
    leak_check: Watched,
    new_password: Callable[[], str],
) -> None:
    local_sm.start_rotation(secret)
    current = local_sm.value(secret, "AWSCURRENT")
    current_version = next(v for v, s in local_sm.stages(secret).items() if "AWSCURRENT" in s)
    admin.set_password(current["username"], new_password())  # reset outside Secrets Manager

    code = main(["rotate", "--secret-id", secret, "--function", "PostgreSQLRotator", "-t", TEMPLATE])
    out, _ = outputs(leak_check)
    assert code == 1
    assert "createSecret  ok" in out
    assert "setSecret     FAILED" in out
    assert "setSecret failed: LoginError:" in out
    assert "testSecret" not in out, "no step after the failure"
    assert f"{current_version}  AWSCURRENT" in out, "AWSCURRENT did not move"
    assert "AWSPENDING  <- this rotation" in out


def test_rotate_needs_an_attached_function(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    code = main(["rotate", "--secret-id", secret, "--engine", "postgresql", "-t", TEMPLATE])
    _, err = outputs(leak_check)
    assert code == 2
    assert "has no rotation function attached" in err and "rotators wire" in err


# -- wire --------------------------------------------------------------------------------------------
@pytest.fixture
def stack(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stack on the local endpoint whose outputs name the rotator, as template.yaml's do."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", local_sm.endpoint_url)
    name = f"rotators-{uuid.uuid4().hex[:8]}"
    body = {
        "Resources": {"Anything": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"PostgreSQLRotatorArn": {"Value": local_sm.rotation_lambda_arn}},
    }
    local_sm._client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(body))
    return name


@pytest.fixture
def rotate_secret_calls() -> Iterator[list[dict[str, Any]]]:
    """The RotateSecret requests the rotators' client sends (they still reach the endpoint)."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    events = SecretStore().client.meta.events
    events.register("provide-client-params.secrets-manager.RotateSecret", record)
    yield calls
    events.unregister("provide-client-params.secrets-manager.RotateSecret", record)


WireRun = Callable[..., tuple[str, dict[str, Any]]]


@pytest.fixture
def wire(secret: str, stack: str, leak_check: Watched, rotate_secret_calls: list[dict[str, Any]]) -> WireRun:
    """`rotators wire` of the test's secret to the stack's rotator, with more `options`; it must
    succeed: what it printed, and the RotateSecret request it sent."""

    def run(*options: str) -> tuple[str, dict[str, Any]]:
        code = main(["wire", "--secret-id", secret, "--engine", "postgresql", "--stack", stack, *options])
        out, err = outputs(leak_check)
        assert code == 0, err
        return out, rotate_secret_calls[-1]

    return run


def test_wire_attaches_the_stacks_rotator_then_rotate_uses_it(
    local_sm: LocalSecretsManager, admin: Admin, secret: str, leak_check: Watched, wire: WireRun
) -> None:
    out, request = wire("--schedule", "30", "--no-rotate-immediately")
    assert f"to {local_sm.rotation_lambda_arn}" in out
    described = local_sm.client.describe_secret(SecretId=secret)
    assert described["RotationLambdaARN"] == local_sm.rotation_lambda_arn
    assert described["RotationEnabled"]
    assert request["RotationRules"] == {"AutomaticallyAfterDays": 30}
    assert request["RotateImmediately"] is False

    before = local_sm.value(secret, "AWSCURRENT")["password"]
    assert main(["rotate", "--secret-id", secret, "--engine", "postgresql", "-t", TEMPLATE]) == 0
    outputs(leak_check)
    assert_rotated(local_sm, admin, secret, before)


def test_wire_sends_the_schedule_window_and_immediate_rotation(
    local_sm: LocalSecretsManager, wire: WireRun
) -> None:
    _, request = wire("--duration", "3h")
    assert request["RotationRules"] == {"ScheduleExpression": "rate(30 days)", "Duration": "3h"}
    assert request["RotateImmediately"] is True
    assert request["RotationLambdaARN"] == local_sm.rotation_lambda_arn


def test_wire_says_what_is_missing(
    local_sm: LocalSecretsManager, secret: str, stack: str, leak_check: Watched
) -> None:
    assert main(["wire", "--secret-id", secret, "--engine", "postgresql", "--stack", "no-such-stack"]) == 2
    _, err = outputs(leak_check)
    assert "Stack 'no-such-stack' does not exist" in err and "--rotation-lambda-arn" in err

    assert main(["wire", "--secret-id", secret, "--engine", "api-key-example", "--stack", stack]) == 2
    _, err = outputs(leak_check)
    assert "has no output ApiKeyExampleRotatorArn" in err and "DeployApiKeyExample=true" in err
    assert "RotationLambdaARN" not in local_sm.client.describe_secret(SecretId=secret), "nothing was wired"
