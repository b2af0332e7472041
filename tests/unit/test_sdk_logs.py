"""SDK and driver loggers stay at WARNING whatever the root level: set before the handler module is
imported (as Lambda's runtime does) or after it (a later basicConfig), in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

from rotators.log import QUIET_LOGGERS

# One logger each package really logs through, besides the package's own.
CHILDREN = (
    "botocore.endpoint",
    "botocore.parsers",
    "boto3.resources.action",
    "urllib3.connectionpool",
    "aws_xray_sdk.core.emitters.udp_emitter",
    "psycopg.pool",
    "redshift_connector.core",
    "pymongo.command",
)

SCRIPT = """
import logging, sys
root = logging.getLogger()
root.addHandler(logging.StreamHandler(sys.stderr))
root.setLevel(logging.DEBUG)  # Lambda's runtime, before the function's module is imported
import rotators.engines.postgresql
names = sys.argv[1:]

def write(tag):
    for name in names:
        log = logging.getLogger(name)
        log.debug("%s debug %s", tag, name)
        log.info("%s info %s", tag, name)
        log.warning("%s warning %s", tag, name)
    logging.getLogger("function").debug("%s function", tag)

write("before")
logging.basicConfig(level=logging.DEBUG, force=True)  # someone's later DEBUG, on a new handler
write("after")
print(sorted(m for m in ("pymysql", "redshift_connector", "oracledb", "pymongo") if m in sys.modules))
"""


def test_sdk_and_driver_loggers_write_warnings_only_at_a_debug_root() -> None:
    names = [*QUIET_LOGGERS, *CHILDREN]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, check=True, timeout=60
    )
    for tag in ("before", "after"):
        assert f"{tag} function" in run.stderr, "the root handler writes DEBUG lines"
        for name in names:
            assert f"{tag} warning {name}" in run.stderr, "warnings still reach the log"
            assert f"{tag} debug {name}" not in run.stderr
            assert f"{tag} info {name}" not in run.stderr
    assert run.stdout.strip() == "[]", "configured by name: no other driver imported for it"
