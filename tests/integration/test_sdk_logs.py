"""Real rotations with the root logger at DEBUG and a stderr handler on it, as Lambda's runtime sets
them for a JSON-format function at log level DEBUG: nothing written holds a password, a
RotationToken or a secret string. botocore would write all three (the control test shows it)."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rotators.engines import mysql, postgresql
from rotators.log import QUIET_LOGGERS, logger
from rotators.secrets import PasswordPolicy, SecretStore
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, MariaDBAdmin, Watched, _generated, invoke, mysql_secret, pg_secret

MARKER = "function-debug-" + uuid.uuid4().hex


class LambdaJson(logging.Formatter):
    """One JSON object a line, the message in it, as Lambda's runtime formats the root's records."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname, "logger": record.name, "message": record.getMessage()})


@contextmanager
def debug_root() -> Iterator[None]:
    """The root at DEBUG with a stderr handler, and our own logger at DEBUG too (Lambda's
    AWS_LAMBDA_LOG_LEVEL=DEBUG sets both), set after rotators.log is imported (the later case).
    Entered in the test's body, where stderr is capfd's (the leak check reads it too); a line
    logged at DEBUG on either side of the rotations shows the handler wrote all along."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LambdaJson())
    level, own_level = root.level, logger.log_level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logger.setLevel(logging.DEBUG)
    try:
        logging.getLogger("function").debug("%s start", MARKER)
        yield
        logging.getLogger("function").debug("%s end", MARKER)
    finally:
        logger.setLevel(own_level)
        root.setLevel(level)
        root.removeHandler(handler)


def forms(value: str) -> set[str]:
    """The value as it can be written: raw, or through up to three layers of JSON escaping or a
    bytes repr (botocore logs a body as bytes of JSON, a SecretString is JSON inside it, and the
    log line is JSON again)."""
    layers: tuple[Callable[[str], str], ...] = (
        lambda v: json.dumps(v)[1:-1],
        lambda v: repr(v.encode())[2:-1],
    )
    found = {value}
    for _ in range(3):
        found |= {layer(v) for v in found for layer in layers}
    return found


def assert_nothing_readable(watched: Watched, sm: LocalSecretsManager, arns: list[str], *tokens: str) -> None:
    """Nothing captured holds a generated or stored password, a RotationToken or a stored secret
    string; a failure names what leaked and through which logger, never the value."""
    watched.read_output()
    written = "\n".join(watched.output)
    assert f"{MARKER} start" in written and f"{MARKER} end" in written, "the DEBUG handler wrote throughout"
    assert _generated.values, "the run generated passwords"
    kinds = dict.fromkeys(_generated.values, "generated password")
    kinds |= dict.fromkeys(tokens, "RotationToken")
    for arn in arns:
        for version in sm.client.list_secret_version_ids(SecretId=arn)["Versions"]:
            text = sm.client.get_secret_value(SecretId=arn, VersionId=version["VersionId"])["SecretString"]
            kinds.setdefault(json.loads(text)["password"], "stored password")
            kinds[text] = "secret string"
    leaks = {
        f"{kind} by {_writer(line)}"
        for value, kind in kinds.items()
        for line in written.splitlines()
        if any(form in line for form in forms(value))
    }
    assert not leaks, f"written at a DEBUG root: {sorted(leaks)}"


def _writer(line: str) -> str:
    """The logger that wrote a captured line (named, so a failure shows no secret)."""
    try:
        return str(json.loads(line)["logger"])
    except (ValueError, KeyError, TypeError):
        return "(not a log line)"


def rotate(handler: Callable[..., object], sm: LocalSecretsManager, arn: str) -> str:
    """One full rotation with a RotationToken in every event; returns that token."""
    rotation_token = "rt-" + uuid.uuid4().hex + uuid.uuid4().hex
    invoke(handler, arn, sm.start_rotation(arn), RotationToken=rotation_token)
    return rotation_token


def test_postgresql_single_user_at_a_debug_root_writes_no_secret(
    local_sm: LocalSecretsManager, admin: Admin, secret: str, leak_check: Watched
) -> None:
    with debug_root():
        tokens = [rotate(postgresql.handler, local_sm, secret) for _ in range(2)]
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])
    assert_nothing_readable(leak_check, local_sm, [secret], *tokens)


def test_postgresql_alternating_at_a_debug_root_writes_no_secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    master, master_password = f"master_{role_name}", new_password()
    admin.create_role(master, master_password, "CREATEROLE")
    master_arn = local_sm.create_secret(master, pg_secret(pg, master, master_password))
    password = new_password()
    admin.create_role(role_name, password)
    app = local_sm.create_secret(role_name, pg_secret(pg, role_name, password, masterarn=master_arn))
    with debug_root():
        tokens = [rotate(postgresql.handler, local_sm, app) for _ in range(2)]
    current = local_sm.value(app, "AWSCURRENT")
    assert current["username"] == role_name, "rotated to the clone and back"
    assert admin.logs_in(current["username"], current["password"])
    assert_nothing_readable(leak_check, local_sm, [app, master_arn], *tokens)


def test_mariadb_single_user_at_a_debug_root_writes_no_secret(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    password = new_password()
    mariadb_admin.create_user(role_name, password)
    arn = mysql_sm.create_secret(role_name, mysql_secret(mariadb, role_name, password))
    with debug_root():
        tokens = [rotate(mysql.handler, mysql_sm, arn)]
    current = mysql_sm.value(arn, "AWSCURRENT")
    assert mariadb_admin.logs_in(current["username"], current["password"])
    assert_nothing_readable(leak_check, mysql_sm, [arn], *tokens)


def test_without_the_pinned_levels_botocore_writes_the_generated_password(
    local_sm: LocalSecretsManager,
) -> None:
    """The control: what the tests above would catch. The levels are unpinned and the root put at
    DEBUG; botocore gets a handler of the test's own and does not propagate, so nothing reaches
    the captured output."""
    root, botocore = logging.getLogger(), logging.getLogger("botocore")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    root_level = root.level
    botocore.addHandler(handler)
    botocore.propagate = False
    try:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        root.setLevel(logging.DEBUG)
        # Letters and digits only: botocore writes the body as a bytes repr, whose escaping of
        # punctuation made the look-up flaky; the point is that the value is written at all.
        password = SecretStore().random_password(PasswordPolicy(exclude_punctuation=True))
    finally:
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        botocore.propagate = True
        botocore.removeHandler(handler)
    written = stream.getvalue()
    assert "GetRandomPassword" in written and "Response body" in written
    assert any(form in written for form in forms(password)), "the response body holds the password"
