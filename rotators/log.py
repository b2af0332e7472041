"""Logs, metrics and traces, all through Powertools; none of them ever carries a secret value.

- Logger: JSON lines with the secret ARN, step, engine and strategy, the token as correlation id.
- Metrics: EMF, per step success/failure and duration, dimensioned by engine and step.
- Tracer: only botocore is patched (database drivers are not: X-Ray's SQL patchers would record
  statements, and an ALTER ... PASSWORD statement holds the password); responses and errors are
  never captured into a trace.
- SDK and driver loggers: pinned at WARNING by name (see `quiet_sdk_loggers`).
"""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer

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
tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
