"""Logs, metrics and traces, all through Powertools; none of them ever carries a secret value.

- Logger: JSON lines with the secret ARN, step, engine and strategy, the token as correlation id.
- Metrics: EMF, per step success/failure and duration, dimensioned by engine and step.
- Tracer: only botocore is patched (database drivers are not: X-Ray's SQL patchers would record
  statements, and an ALTER ... PASSWORD statement holds the password); responses and errors are
  never captured into a trace.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "rotators")

logger = Logger(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Rotators"),
    service=SERVICE,
    function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
)
tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
