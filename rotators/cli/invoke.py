"""`rotators invoke`: the Docker-free twin of `sam local invoke`.

It reads a function's handler and environment from template.yaml, applies an `--env-vars` file
with SAM's precedence, imports the handler in this process and calls it with the event and a
Lambda context object. The function's logs go to stderr and its result (or Lambda's error
object) to stdout, as with SAM.

SAM's precedence for a variable the template declares for the function, highest first:
the function's entry in the env-vars file (by LogicalId, then by FunctionName), the file's
`Parameters` entry, the shell's environment, the template's value. Variables the template does
not declare are ignored, as SAM ignores them (we say so on stderr).

Differences from SAM, all of them because nothing runs in a container: the code is the installed
`rotators` package (not .aws-sam/build), the process's own environment and AWS credentials stay
visible to the handler, and the exit status is 1 when the function fails.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from unittest import mock

from rotators.cli.samtemplate import LOCAL_ACCOUNT_ID, FunctionSpec, SamTemplate, parse_parameter_overrides
from rotators.errors import ConfigurationError


@dataclass
class LambdaContext:
    """The attributes and method of Lambda's Python context object."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    timeout_s: int
    function_version: str = "$LATEST"
    identity: object = None
    client_context: object = None

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """What one call returned: the result, or Lambda's error object, and how long it took."""

    request_id: str
    result: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def response(self) -> str:
        return json.dumps(self.error if self.error is not None else self.result)


def load_env_vars(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """An `--env-vars` file: {"Parameters": {...}, "<LogicalId>": {...}}; SAM refuses other shapes."""
    if path is None:
        return {}
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"--env-vars file {str(file)!r} does not exist") from None
    except ValueError:
        raise ConfigurationError(f"--env-vars file {str(file)!r} is not valid JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(
            f"--env-vars file {str(file)!r} must map 'Parameters' and function names to objects of variables"
        )
    return data


def resolve_environment(
    spec: FunctionSpec, env_vars: Mapping[str, Mapping[str, Any]], shell: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The function's variables with SAM's precedence, and the overrides SAM would ignore."""
    from rotators.cli.samtemplate import stringify

    overrides: dict[str, Any] = dict(env_vars.get("Parameters", {}))
    overrides.update(env_vars.get(spec.logical_id) or env_vars.get(spec.function_name) or {})
    resolved: dict[str, str] = {}
    for name, value in spec.variables.items():
        chosen: Any = value
        if name in shell:
            chosen = shell[name]
        if name in overrides:
            chosen = overrides[name]
        resolved[name] = stringify(chosen)
    ignored = sorted(set(overrides) - set(spec.variables))
    return resolved, ignored


def lambda_variables(spec: FunctionSpec, region: str) -> dict[str, str]:
    """The variables the Lambda runtime (and SAM) sets; credentials stay the caller's own."""
    return {
        "AWS_SAM_LOCAL": "true",
        "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout),
        "AWS_LAMBDA_FUNCTION_HANDLER": spec.handler,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"aws/lambda/{spec.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def default_region(explicit: str | None = None) -> str:
    """As SAM: --region, then the caller's configuration, then us-east-1."""
    if explicit:
        return explicit
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


@contextlib.contextmanager
def logs_to(stream: IO[str]) -> Iterator[None]:
    """In Lambda a function logs to stdout; here stdout carries the result, so logs move to `stream`."""
    stdouts = {id(sys.stdout), id(sys.__stdout__)}
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]
    for each in loggers:
        for handler in each.handlers:
            if type(handler) is logging.StreamHandler and id(handler.stream) in stdouts:
                moved.append((handler, handler.stream))
                handler.setStream(stream)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        for handler, old in moved:
            handler.setStream(old)


def import_handler(handler: str) -> Callable[..., Any]:
    module_name, _, attribute = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ""
        if module_name.startswith("rotators.engines."):
            hint = f": install its driver with pip install 'rotators[{module_name.rsplit('.', 1)[1]}]'"
        raise ConfigurationError(f"Cannot import {module_name} ({exc}){hint}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigurationError(f"{module_name} has no callable {attribute!r}")
    return function  # type: ignore[no-any-return]


def call(spec: FunctionSpec, event: Any, region: str, logs: IO[str]) -> Invocation:
    """Import the handler and call it once, with the environment already in place."""
    invocation = Invocation(request_id=str(uuid.uuid4()))
    context = LambdaContext(
        function_name=spec.logical_id,
        memory_limit_in_mb=spec.memory,
        invoked_function_arn=f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{spec.logical_id}",
        aws_request_id=invocation.request_id,
        log_group_name=f"aws/lambda/{spec.logical_id}",
        log_stream_name="$LATEST",
        timeout_s=spec.timeout,
    )
    with logs_to(logs):
        function = import_handler(spec.handler)
        print(f"START RequestId: {invocation.request_id} Version: $LATEST", file=logs)
        started = time.perf_counter()
        try:
            invocation.result = function(event, context)
        except Exception as exc:
            invocation.error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": invocation.request_id,
                "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:]),
            }
        invocation.duration_ms = 1000 * (time.perf_counter() - started)
        print(f"END RequestId: {invocation.request_id}", file=logs)
        print(
            f"REPORT RequestId: {invocation.request_id}\tDuration: {invocation.duration_ms:.2f} ms\t"
            f"Memory Size: {spec.memory} MB",
            file=logs,
        )
        if invocation.duration_ms > spec.timeout * 1000:
            print(f"Note: this call took longer than the function's Timeout of {spec.timeout} s", file=logs)
    return invocation


def read_event(path: str | None) -> Any:
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise ConfigurationError(f"Event file {path!r} does not exist") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ConfigurationError(f"Event file {path!r} is not valid JSON") from None


@dataclass
class Target:
    """A function ready to call: its spec and the environment it runs with."""

    spec: FunctionSpec
    environment: dict[str, str]
    region: str


def prepare(logical_id: str, options: Any, logs: IO[str]) -> Target:
    """Read the template and env-vars file the SAM-like `options` name (--template, --env-vars,
    --parameter-overrides, --region, --profile); say on `logs` which overrides SAM would ignore."""
    chosen_region = default_region(options.region)
    overrides = parse_parameter_overrides(options.parameter_overrides)
    sam = SamTemplate.load(options.template, overrides, chosen_region)
    spec = sam.function(logical_id)
    env, ignored = resolve_environment(spec, load_env_vars(options.env_vars), os.environ)
    if ignored:
        print(
            f"Ignored from --env-vars (not declared for {logical_id} in the template, as SAM ignores "
            f"them): {', '.join(ignored)}",
            file=logs,
        )
    extra = {"AWS_PROFILE": options.profile} if options.profile else {}
    return Target(spec, {**env, **lambda_variables(spec, chosen_region), **extra}, chosen_region)


def run(args: Any, out: IO[str] | None = None, logs: IO[str] | None = None) -> int:
    """The `rotators invoke` command."""
    out = out or sys.stdout
    logs = logs or sys.stderr
    try:
        target = prepare(args.function, args, logs)
        event = read_event(args.event)
        if isinstance(event, dict):
            if args.secret_id:
                event["SecretId"] = args.secret_id
            if args.token:
                event["ClientRequestToken"] = args.token
        with mock.patch.dict(os.environ, target.environment):  # the old environment comes back after
            invocation = call(target.spec, event, target.region, logs)
    except ConfigurationError as exc:
        print(f"rotators invoke: {exc}", file=logs)
        return 2
    print(invocation.response(), file=out)
    return 0 if invocation.ok else 1


def add_arguments(parser: Any) -> None:
    parser.add_argument("function", metavar="LogicalId", help="the function's LogicalId in the template")
    parser.add_argument("-e", "--event", help="event JSON file ('-' reads stdin); default {}")
    add_template_arguments(parser)
    parser.add_argument("--secret-id", help="replace the event's SecretId")
    parser.add_argument("--token", help="replace the event's ClientRequestToken")


def add_template_arguments(parser: Any) -> None:
    """Where the function comes from and how it runs, as `sam local invoke` takes them."""
    parser.add_argument(
        "-n", "--env-vars", help="JSON file of environment variables, as for sam local invoke"
    )
    parser.add_argument("-t", "--template", default="template.yaml", help="default: template.yaml")
    parser.add_argument("--parameter-overrides", help="template parameters, e.g. 'LogLevel=DEBUG'")
    parser.add_argument("--region", help="AWS region (default: your configuration, else us-east-1)")
    parser.add_argument("--profile", help="AWS profile for the function's calls (sets AWS_PROFILE)")
