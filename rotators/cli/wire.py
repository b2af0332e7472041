"""`rotators rotate` and `rotators wire`: what Secrets Manager does, played from the command line.

`rotate` starts a rotation (RotateSecret, with a fresh token) and calls the four steps in order
in this process, with the function's handler and environment from template.yaml, against the
endpoint the environment points to; it stops at the first failure and shows the labels as
they stand. `wire` finds a deployed rotator's ARN in the stack's outputs and attaches it to a
secret with RotateSecret and the rotation rules.

Secret values are never printed: only version ids and their labels.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from unittest import mock

from rotators import engines as registry
from rotators.cli.invoke import (
    Target,
    add_template_arguments,
    call,
    default_region,
    lambda_variables,
    prepare,
)
from rotators.cli.samtemplate import DEFAULT_RUNTIME, FunctionSpec
from rotators.errors import ConfigurationError
from rotators.rotation import STEPS


@dataclass(frozen=True)
class Function:
    """A rotator function of template.yaml."""

    logical_id: str
    handler: str

    @property
    def output_key(self) -> str:
        return f"{self.logical_id}Arn"


# The engines' functions, from the registry, and the example's.
ENGINES = {engine.name: Function(engine.logical_id, engine.handler) for engine in registry.ENGINES} | {
    "api-key-example": Function("ApiKeyExampleRotator", "rotators.examples.api_key.handler"),
}


def _error_code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _client() -> Any:
    """Secrets Manager through SecretStore's client: the same endpoint and retries as the rotator."""
    from rotators.secrets import SecretStore

    return SecretStore().client


def show_labels(secret_id: str, token: str | None, out: IO[str]) -> None:
    found = _client().describe_secret(SecretId=secret_id)
    print(f"Labels of {found['Name']}:", file=out)
    for version, stages in found.get("VersionIdsToStages", {}).items():
        if stages:
            mark = "  <- this rotation" if version == token else ""
            print(f"  {version}  {' '.join(sorted(stages))}{mark}", file=out)


# -- rotate -----------------------------------------------------------------------------------------
def rotate_target(args: Any, logs: IO[str]) -> Target:
    """The function to run: a LogicalId of the template, or an engine (its LogicalId when the
    template is there, else its handler with this process's environment)."""
    if args.function:
        logical_id = args.function
    else:
        engine = ENGINES[args.engine]
        if not Path(args.template).is_file():
            region = default_region(args.region)
            spec = FunctionSpec(
                engine.logical_id, engine.handler, DEFAULT_RUNTIME, 60, 256, engine.logical_id, {}
            )
            profile = {"AWS_PROFILE": args.profile} if args.profile else {}
            return Target(spec, {**lambda_variables(spec, region), **profile}, region)
        logical_id = engine.logical_id
    return prepare(logical_id, args, logs)


def rotate(
    target: Target,
    secret_id: str,
    *,
    token: str | None = None,
    rotation_lambda_arn: str | None = None,
    out: IO[str],
    logs: IO[str],
) -> bool:
    """Start a rotation (unless `token` names one already started) and run the four steps."""
    with mock.patch.dict(os.environ, target.environment):
        client = _client()
        found = client.describe_secret(SecretId=secret_id)
        arn = found["ARN"]
        if token is None:
            lambda_arn = rotation_lambda_arn or found.get("RotationLambdaARN")
            if not lambda_arn:
                raise ConfigurationError(
                    f"{found['Name']!r} has no rotation function attached, and RotateSecret needs one to "
                    "start a rotation: attach one with `rotators wire` or pass --rotation-lambda-arn"
                )
            token = str(uuid.uuid4())
            client.rotate_secret(
                SecretId=arn, ClientRequestToken=token, RotationLambdaARN=lambda_arn, RotateImmediately=True
            )
            print(f"Started a rotation of {found['Name']} with token {token} (RotateSecret)", file=out)
        else:
            print(f"Continuing the rotation of {found['Name']} with token {token}", file=out)
        print(f"Running the four steps with {target.spec.handler} in this process:", file=out)
        ok = True
        for step in STEPS:
            event = {"SecretId": arn, "ClientRequestToken": token, "Step": step}
            invocation = call(target.spec, event, target.region, logs)
            status = "ok" if invocation.ok else "FAILED"
            print(f"  {step:<13} {status:<6} {invocation.duration_ms:8.0f} ms", file=out)
            if invocation.error is not None:
                print(
                    f"{step} failed: {invocation.error['errorType']}: {invocation.error['errorMessage']}",
                    file=out,
                )
                print("Stopped there; no later step ran.", file=out)
                ok = False
                break
        show_labels(arn, token, out)
    return ok


def rotate_command(args: Any, out: IO[str] | None = None, logs: IO[str] | None = None) -> int:
    out, logs = out or sys.stdout, logs or sys.stderr
    try:
        target = rotate_target(args, logs)
        ok = rotate(
            target,
            args.secret_id,
            token=args.token,
            rotation_lambda_arn=args.rotation_lambda_arn,
            out=out,
            logs=logs,
        )
    except ConfigurationError as exc:
        print(f"rotators rotate: {exc}", file=logs)
        return 2
    except Exception as exc:  # an SDK error before or between steps: say it plainly
        print(f"rotators rotate: {_describe_sdk_error(exc)}", file=logs)
        return 1
    return 0 if ok else 1


# -- wire -------------------------------------------------------------------------------------------
def rotator_arn(stack: str, engine: str, region: str) -> str:
    """The rotator's ARN from the stack's outputs (template.yaml exports `<LogicalId>Arn`)."""
    import boto3

    wanted = ENGINES[engine].output_key
    cloudformation = boto3.client("cloudformation", region_name=region)
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        if _error_code(exc) == "ValidationError":
            raise ConfigurationError(
                f"Stack {stack!r} does not exist in {region}: deploy it with `sam deploy`, name it with "
                "--stack, or give the function with --rotation-lambda-arn"
            ) from None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if wanted not in outputs:
        raise ConfigurationError(
            f"Stack {stack!r} has no output {wanted}: its outputs are {', '.join(sorted(outputs)) or 'none'}"
            + (" (deploy with DeployApiKeyExample=true)" if engine == "api-key-example" else "")
        )
    return str(outputs[wanted])


def rotation_rules(schedule: str, duration: str | None) -> dict[str, Any]:
    """A bare number of days means AutomaticallyAfterDays; anything else is a schedule expression."""
    rules: dict[str, Any] = {}
    if re.fullmatch(r"\d+", schedule.strip()):
        rules["AutomaticallyAfterDays"] = int(schedule)
    else:
        rules["ScheduleExpression"] = schedule.strip()
    if duration:
        rules["Duration"] = duration
    return rules


def wire(
    secret_id: str,
    arn: str,
    rules: dict[str, Any],
    *,
    rotate_immediately: bool,
    out: IO[str],
) -> None:
    client = _client()
    client.rotate_secret(
        SecretId=secret_id, RotationLambdaARN=arn, RotationRules=rules, RotateImmediately=rotate_immediately
    )
    found = client.describe_secret(SecretId=secret_id)
    print(f"Wired {found['Name']} to {arn}", file=out)
    print(f"  rules: {', '.join(f'{k}={v}' for k, v in rules.items())}", file=out)
    if rotate_immediately:
        print("  Secrets Manager is rotating it now; watch the function's logs.", file=out)
    else:
        print(
            "  Secrets Manager tests the function (testSecret) now and rotates at the next window.",
            file=out,
        )


def wire_command(args: Any, out: IO[str] | None = None, logs: IO[str] | None = None) -> int:
    out, logs = out or sys.stdout, logs or sys.stderr
    region = default_region(args.region)
    try:
        profile = {"AWS_PROFILE": args.profile} if args.profile else {}
        with mock.patch.dict(os.environ, {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, **profile}):
            arn = args.rotation_lambda_arn or rotator_arn(args.stack, args.engine, region)
            rules = rotation_rules(args.schedule, args.duration)
            wire(args.secret_id, arn, rules, rotate_immediately=not args.no_rotate_immediately, out=out)
    except ConfigurationError as exc:
        print(f"rotators wire: {exc}", file=logs)
        return 2
    except Exception as exc:
        print(f"rotators wire: {_describe_sdk_error(exc)}", file=logs)
        return 1
    return 0


def _describe_sdk_error(exc: Exception) -> str:
    code = _error_code(exc)
    if code == "ResourceNotFoundException":
        return f"not found: {exc}"
    if type(exc).__name__ in {"NoCredentialsError", "NoRegionError"}:
        return f"{exc}: configure AWS credentials and a region, or set SECRETS_MANAGER_ENDPOINT"
    return f"{type(exc).__name__}: {exc}"


def add_rotate_arguments(parser: Any) -> None:
    parser.add_argument("--secret-id", required=True, help="name or ARN of the secret")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--function", metavar="LogicalId", help="a function of the template")
    which.add_argument("--engine", choices=sorted(ENGINES), help="the engine's function")
    parser.add_argument("--token", help="continue a rotation already started with this ClientRequestToken")
    parser.add_argument(
        "--rotation-lambda-arn", help="the function RotateSecret names (default: the one attached)"
    )
    add_template_arguments(parser)


def add_wire_arguments(parser: Any) -> None:
    parser.add_argument("--secret-id", required=True, help="name or ARN of the secret")
    parser.add_argument("--engine", required=True, choices=sorted(ENGINES), help="which rotator")
    parser.add_argument(
        "--stack", default=os.environ.get("ROTATORS_STACK", "rotators"), help="default: rotators"
    )
    parser.add_argument(
        "--schedule",
        default="rate(30 days)",
        help="rate(...) or cron(...), or a number of days (default: 30 days)",
    )
    parser.add_argument("--duration", help="rotation window, e.g. 3h (default: Secrets Manager's)")
    parser.add_argument(
        "--no-rotate-immediately", action="store_true", help="wait for the schedule instead of rotating now"
    )
    parser.add_argument("--rotation-lambda-arn", help="use this function instead of the stack's output")
    parser.add_argument("--region", help="AWS region (default: your configuration, else us-east-1)")
    parser.add_argument("--profile", help="AWS profile (sets AWS_PROFILE)")
