"""A real MySQL 8/9 (or Aurora MySQL), when ROTATORS_TEST_MYSQL_DSN names one.

No MySQL server can be installed here: by default the MySQL 8/9 path is checked at the statement
level (tests/unit/test_mysql_statements.py) and the engine runs live on MariaDB. Point this at a
server to run the same engine on MySQL's own dialect:

    ROTATORS_TEST_MYSQL_DSN='mysql://admin:password@db.example.com:3306/?sslrootcert=/path/ca.pem'

The account needs CREATE USER, CREATE ROLE, CREATE/DROP on databases and GRANT OPTION (an RDS
master user has them). Query options: `sslrootcert`, `sslmode`, or `ssl=false` for plaintext.
Everything the tests create is named `rot_<random>` and dropped afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from rotators.engines.mysql import MySQLRotator, handler
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import invoke
from tests.live import dsn_secret as from_dsn
from tests.live import live_only

pytestmark = live_only(
    "ROTATORS_TEST_MYSQL_DSN",
    "ROTATORS_TEST_MYSQL_DSN is not set (mysql://admin:password@host:3306/?sslrootcert=ca.pem): "
    "no MySQL 8/9 server can run here, so its dialect is covered at the statement level",
)


def dsn_secret() -> dict[str, Any]:
    """The admin account of the DSN as a secret value."""
    return from_dsn("ROTATORS_TEST_MYSQL_DSN", engine="mysql", port=3306)


class LiveServer:
    def __init__(self) -> None:
        self.admin = dsn_secret()
        self.rotator = MySQLRotator()
        self.parsed = self.rotator.parse(json.dumps(self.admin), where="ROTATORS_TEST_MYSQL_DSN")
        self.made: list[str] = []  # statements that drop what a test made, run in reverse

    def connect(self, user: str, password: str) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host=self.parsed.host, port=self.parsed.port, user=user, password=password, autocommit=True,
            connect_timeout=10, **self.rotator.tls_options(self.parsed),
        )  # fmt: skip

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connect(self.admin["username"], self.admin["password"]) as conn, conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            return list(cursor.fetchall())

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.connect(user, password):
                return True
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1045, "login failed for another reason"
            return False

    def grants(self, user: str) -> set[str]:
        rows = self.sql("SHOW GRANTS FOR %s@'%%'", (user,))
        return {str(row[0]).replace(f"`{user}`@`%`", "<account>") for row in rows}


@pytest.fixture
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)  # the DSN's own TLS settings apply
    server = LiveServer()
    yield server
    failed = []
    for statement in reversed(server.made):  # every one, even after a failure
        try:
            server.sql(statement)
        except Exception as exc:
            failed.append(f"{statement}: {type(exc).__name__}")
    assert not failed, f"clean-up left objects behind: {failed}"


def test_single_user_on_a_real_server(
    live: LiveServer, local_sm: LocalSecretsManager, new_password: Callable[[], str]
) -> None:
    name, password = f"rot_{uuid.uuid4().hex[:10]}", new_password()
    live.sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, password))
    live.made += [f"DROP USER IF EXISTS '{name}'@'%'"]
    arn = local_sm.create_secret(name, {**live.admin, "username": name, "password": password})
    for _ in range(2):
        before = local_sm.value(arn, "AWSCURRENT")["password"]
        invoke(handler, arn, local_sm.start_rotation(arn))
        current = local_sm.value(arn, "AWSCURRENT")
        assert live.logs_in(name, current["password"])
        assert not live.logs_in(name, before)


def test_alternating_users_on_a_real_server(
    live: LiveServer, local_sm: LocalSecretsManager, new_password: Callable[[], str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, role, db, password = f"rot_{tag}", f"rot_role_{tag}", f"rot_db_{tag}", new_password()
    live.sql(f"CREATE DATABASE `{db}`")
    live.made += [f"DROP DATABASE IF EXISTS `{db}`"]
    live.sql(f"CREATE ROLE `{role}`")
    live.made += [f"DROP ROLE IF EXISTS `{role}`"]
    live.sql(f"GRANT SELECT ON `{db}`.* TO `{role}`")
    live.sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, password))
    live.made += [f"DROP USER IF EXISTS '{name}'@'%'", f"DROP USER IF EXISTS '{name}_clone'@'%'"]
    live.sql(f"GRANT INSERT ON `{db}`.* TO %s@'%%' WITH GRANT OPTION", (name,))
    live.sql(f"GRANT `{role}` TO %s@'%%'", (name,))
    live.sql(f"SET DEFAULT ROLE `{role}` TO %s@'%%'", (name,))
    master = local_sm.create_secret(f"master-{tag}", live.admin)
    arn = local_sm.create_secret(
        name, {**live.admin, "username": name, "password": password, "masterarn": master}
    )

    invoke(handler, arn, local_sm.start_rotation(arn))
    clone = local_sm.value(arn, "AWSCURRENT")
    assert clone["username"] == f"{name}_clone"
    assert live.logs_in(name, password), "the original keeps working"
    assert live.logs_in(clone["username"], clone["password"])
    assert live.grants(clone["username"]) == live.grants(name)
    roles = "SELECT DEFAULT_ROLE_USER FROM mysql.default_roles WHERE USER = %s"
    assert live.sql(roles, (clone["username"],)) == live.sql(roles, (name,)) == [(role,)]

    invoke(handler, arn, local_sm.start_rotation(arn))
    assert local_sm.value(arn, "AWSCURRENT")["username"] == name
    assert live.logs_in(clone["username"], clone["password"]), "the clone keeps working"
