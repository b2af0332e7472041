"""The one Powertools Logger of the package: structured JSON, never the event itself."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rotators"))
