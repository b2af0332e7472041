"""Logs, metrics and traces, all through Powertools; none of them ever carries a secret value.

- Logger: JSON lines with the secret ARN, step, engine and strategy, the token as correlation id.
- Metrics: EMF, per step success/failure and duration, dimensioned by engine and step.
- Tracer: made on the first invocation that X-Ray samples (Tracing: Active), never at import:
  the X-Ray SDK builds botocore clients of its own when imported (about 110 ms of a cold start
  here). Only botocore is patched (database drivers are not: X-Ray's SQL patchers would record
  statements, and an ALTER ... PASSWORD statement holds the password); responses and errors are
  never captured into a trace.
- SDK and driver loggers: pinned at WARNING by name (see `quiet_sdk_loggers`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

F = TypeVar("F", bound=Callable[..., Any])

# Loggers that write request/response bodies, connection properties or statements at DEBUG:
# botocore logs every GetRandomPassword/GetSecretValue response and PutSecretValue body (with the
# RotationToken), redshift_connector its connection properties, the X-Ray emitter whole segments.
QUIET_LOGGERS = (
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
    "aws_xray_sdk",
    "psycopg",
    "pymysql",
    "redshift_connector",
    "oracledb",
    "pymongo",
    "pytds",
)


def quiet_sdk_loggers() -> None:
    """Pin the SDK and driver loggers at WARNING, so a DEBUG root (what Lambda's runtime sets for
    a JSON-format function at log level DEBUG, or a later basicConfig(level=DEBUG)) cannot make
    them write secrets. An explicit level on a logger is not touched by the root's level, and
    its children (botocore.endpoint, ...) inherit it; configured by name, so no driver is
    imported. Lowering one of these loggers explicitly is the caller's own choice."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


quiet_sdk_loggers()

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "rotators")

logger = Logger(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Rotators"),
    service=SERVICE,
    function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
)


class Tracing:
    """Powertools' Tracer, made when an invocation is sampled: Lambda puts `Sampled=1` in
    _X_AMZN_TRACE_ID for the invocations X-Ray records, which only a function with active tracing
    (or a sampled caller) gets. Until then every traced call is the plain call."""

    def __init__(self) -> None:
        self._tracer: Tracer | None = None
        self._wrapped: dict[tuple[Callable[..., Any], bool], Callable[..., Any]] = {}

    def active(self) -> Tracer | None:
        if self._tracer is None and "Sampled=1" in os.environ.get("_X_AMZN_TRACE_ID", ""):
            from aws_lambda_powertools import Tracer  # imports the X-Ray SDK: only now

            self._tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
        return self._tracer

    def handler(self, function: F) -> F:
        """Powertools' capture_lambda_handler once sampled; never the response or the error."""
        return self._traced(function, handler=True)

    def method(self, function: F) -> F:
        """Powertools' capture_method once sampled; never the result or the error."""
        return self._traced(function, handler=False)

    def _traced(self, function: F, *, handler: bool) -> F:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            tracer = self.active()
            if tracer is None:
                return function(*args, **kwargs)
            key = (function, handler)
            if key not in self._wrapped:
                self._wrapped[key] = (
                    tracer.capture_lambda_handler(function, capture_response=False, capture_error=False)
                    if handler
                    else tracer.capture_method(capture_response=False, capture_error=False)(function)
                )
            return self._wrapped[key](*args, **kwargs)

        return call  # type: ignore[return-value]


tracer = Tracing()
