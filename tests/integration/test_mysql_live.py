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

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from rotators.engines.mysql import MySQLRotator, handler
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.live import EngineServer, fresh_names, live_only, serve

DSN = "ROTATORS_TEST_MYSQL_DSN"
pytestmark = live_only(DSN, "no MySQL 8/9 can run here: its dialect is covered at the statement level")


class MySQLServer(EngineServer[MySQLRotator]):
    """Runs statements and logs in with PyMySQL itself, under the engine's TLS options."""

    def __init__(self, sm: LocalSecretsManager) -> None:
        super().__init__(sm, handler, MySQLRotator(), DSN, engine="mysql", port=3306)

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
        """A refused login is MySQL's error 1045; any other failure fails the test."""
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
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[MySQLServer]:
    yield from serve(MySQLServer(local_sm), monkeypatch)


def test_single_user_on_a_real_server(live: MySQLServer, new_password: Callable[[], str]) -> None:
    [name], password = fresh_names(""), new_password()
    live.sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, password))
    live.made += [f"DROP USER IF EXISTS '{name}'@'%'"]
    live.assert_rotates_alone(live.secret(name, password), name)


def test_alternating_users_on_a_real_server(live: MySQLServer, new_password: Callable[[], str]) -> None:
    name, role, db = fresh_names("", "role", "db")
    password = new_password()
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
    arn = live.secret(name, password, master=live.master(name))

    clone = live.rotate(arn)
    assert clone["username"] == f"{name}_clone"
    assert live.logs_in(name, password), "the original keeps working"
    assert live.logs_in(clone["username"], clone["password"])
    assert live.grants(clone["username"]) == live.grants(name)
    roles = "SELECT DEFAULT_ROLE_USER FROM mysql.default_roles WHERE USER = %s"
    assert live.sql(roles, (clone["username"],)) == live.sql(roles, (name,)) == [(role,)]

    assert live.rotate(arn)["username"] == name
    assert live.logs_in(clone["username"], clone["password"]), "the clone keeps working"
