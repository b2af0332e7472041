"""Logs, metrics and traces of a real rotation: the keys are there, the secrets are not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from rotators.engines.postgresql import handler
from rotators.errors import LoginError
from rotators.testing.postgres import PostgresFactory
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import STEPS, Admin, Watched, invoke


def emf_blobs(output: str) -> list[dict[str, Any]]:
    blobs = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    return [b for b in blobs if b["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Rotators"]


def test_log_lines_carry_the_secret_step_engine_strategy_and_token(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token)
    records = leak_check.log_records()
    assert {r["step"] for r in records} == set(STEPS)
    for record in records:
        assert record["secret_id"] == secret
        assert record["engine"] == "postgresql"
        assert record["correlation_id"] == token
        assert record.get("strategy") == ("single_user" if record["step"] != "finishSecret" else None)
    messages = [r["message"] for r in records]
    assert "password changed by logging in with AWSCURRENT" in messages
    assert [m for m in messages if m.endswith("succeeded")] == [f"{step} succeeded" for step in STEPS]


def test_each_decision_has_its_own_line(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret")
    invoke(handler, secret, token, "createSecret", "setSecret")  # a retry after a crash
    messages = [r["message"] for r in leak_check.log_records()]
    assert "pending secret already staged for this token: nothing to create" in messages
    assert "AWSCURRENT does not log in: trying the next staged version" in messages
    assert "pending already accepted by the database: nothing to set" in messages


def test_emf_metrics_per_step_by_engine_and_step(
    local_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    invoke(handler, secret, local_sm.start_rotation(secret))
    blobs = [b for b in emf_blobs(leak_check.read_output()) if "StepSucceeded" in b]
    assert [b["step"] for b in blobs] == list(STEPS)
    for blob in blobs:
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        assert directive["Dimensions"] == [["engine", "step", "service"]]
        assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
            "StepDuration": "Milliseconds",
            "StepSucceeded": "Count",
        }
        assert blob["engine"] == "postgresql"
        assert blob["StepSucceeded"] == [1.0]
        assert blob["StepDuration"][0] > 0


def test_a_failed_step_counts_as_failed(
    local_sm: LocalSecretsManager,
    admin: Admin,
    secret: str,
    leak_check: Watched,
    new_password: Callable[[], str],
) -> None:
    user = local_sm.value(secret, "AWSCURRENT")["username"]
    by_hand = new_password()
    leak_check.add(by_hand)
    admin.set_password(user, by_hand)
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    with pytest.raises(LoginError):
        invoke(handler, secret, token, "setSecret")
    failed = [b for b in emf_blobs(leak_check.read_output()) if "StepFailed" in b]
    assert len(failed) == 1 and failed[0]["step"] == "setSecret" and "StepSucceeded" not in failed[0]
    errors = [r for r in leak_check.log_records() if r["level"] == "ERROR"]
    assert errors[0]["error"] == "LoginError"


# A fresh interpreter: the first invocation is a cold start, and X-Ray records to a local emitter.
TRACED_RUN = """
import json, sys
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.context import Context

class Emitter:
    sent = []
    def send_entity(self, entity): self.sent.append(json.loads(entity.serialize()))
    def set_daemon_address(self, address): pass

from rotators.engines.postgresql import handler  # LAMBDA_TASK_ROOT and a sampled trace id: traced

global_sdk_config.set_sdk_enabled(True)
xray_recorder.configure(emitter=Emitter(), context=Context(), sampling=False)
xray_recorder.begin_segment("lambda")
for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
    handler({"SecretId": sys.argv[1], "ClientRequestToken": sys.argv[2], "Step": step}, None)
xray_recorder.end_segment()
print("TRACE " + json.dumps(Emitter.sent))
"""


# The same rotation where X-Ray samples nothing: the X-Ray SDK is never imported.
UNTRACED_RUN = """
import sys
from rotators.engines.postgresql import handler
for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
    handler({"SecretId": sys.argv[1], "ClientRequestToken": sys.argv[2], "Step": step}, None)
print("XRAY " + str(sorted(m for m in sys.modules if m.startswith(("aws_xray_sdk", "wrapt")))))
"""
SAMPLED = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"


def _run(
    local_sm: LocalSecretsManager, pg_factory: PostgresFactory, code: str, secret: str, trace: str
) -> str:
    """`code` in a fresh interpreter as Lambda would run it (LAMBDA_TASK_ROOT set: Powertools traces),
    with `trace` as the invocation's trace header; its output."""
    env = {
        **os.environ,
        **local_sm.environment(),
        "ROTATORS_CA_BUNDLE": str(pg_factory.ca.cert_path),
        "LAMBDA_TASK_ROOT": str(pg_factory.root),
        "_X_AMZN_TRACE_ID": trace,
    }
    token = local_sm.start_rotation(secret)
    run = subprocess.run(
        [sys.executable, "-c", code, secret, token],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout + run.stderr


@pytest.mark.parametrize("trace", ["", SAMPLED.replace("Sampled=1", "Sampled=0")])
def test_an_unsampled_rotation_never_imports_the_xray_sdk(
    local_sm: LocalSecretsManager, secret: str, pg_factory: PostgresFactory, leak_check: Watched, trace: str
) -> None:
    output = _run(local_sm, pg_factory, UNTRACED_RUN, secret, trace)
    leak_check.output.append(output)
    assert "XRAY []" in output
    assert local_sm.value(secret, "AWSCURRENT")["password"]


def test_cold_start_metric_and_traces_without_captured_values(
    local_sm: LocalSecretsManager, secret: str, pg_factory: PostgresFactory, leak_check: Watched
) -> None:
    output = _run(local_sm, pg_factory, TRACED_RUN, secret, SAMPLED)  # as Lambda sets it when sampled
    leak_check.output.append(output)

    cold = [b for b in emf_blobs(output) if "ColdStart" in b]
    assert len(cold) == 1, "one cold start per container"

    trace = json.loads(next(line for line in output.splitlines() if line.startswith("TRACE "))[6:])
    names: list[str] = []

    def walk(entity: dict[str, Any]) -> None:
        names.append(entity["name"])
        if entity["name"].startswith("## "):  # ours; the trace as a whole is in the leak check
            assert "response" not in json.dumps(entity.get("metadata", {})), "no response captured"
        for child in entity.get("subsegments", []):
            walk(child)

    for entity in trace:
        walk(entity)
    assert names.count("## _handle") == 4
    engine = "## rotators.engines.postgresql.PostgreSQLRotator."
    assert {engine + "connect", engine + "set_password", engine + "probe"} <= set(names)
    assert "secretsmanager" in names, "Secrets Manager calls appear as botocore subsegments"
