"""The MySQL engine on MariaDB through the conformance kit: crashes after each hook, retries,
failing hooks, and that exactly the labelled passwords log in afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rotators.database import DatabaseSecret
from rotators.engines.mysql import MySQLRotator
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import MariaDBAdmin, mysql_secret


@pytest.fixture
def fresh_user(
    mariadb_admin: MariaDBAdmin, mariadb: MariaDBServer, new_password: Callable[[], str]
) -> Callable[..., dict[str, Any]]:
    def make(**extra: Any) -> dict[str, Any]:
        name, password = f"app_{uuid.uuid4().hex[:10]}", new_password()
        mariadb_admin.create_user(name, password)
        return mysql_secret(mariadb, name, password, **extra)

    return make


def logs_in(admin: MariaDBAdmin) -> Callable[[DatabaseSecret], bool]:
    return lambda s: admin.logs_in(s.username, s.password)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_single_user_conforms(
    rotator_conformance: RotatorConformance,
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    fresh_user: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    rotator_conformance.check(
        MySQLRotator,
        new_secret=fresh_user,
        accepts=logs_in(mariadb_admin),
        keeps_previous=False,
        scenarios=[scenario],
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alternating_users_conform(
    rotator_conformance: RotatorConformance,
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    fresh_user: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    master = fresh_user()
    mariadb_admin.sql(
        "GRANT ALL PRIVILEGES ON *.* TO %s@'127.0.0.1' WITH GRANT OPTION", (master["username"],)
    )
    master_arn = mysql_sm.create_secret(master["username"], master)
    rotator_conformance.check(
        MySQLRotator,
        new_secret=lambda: fresh_user(masterarn=master_arn),
        accepts=logs_in(mariadb_admin),
        keeps_previous=True,
        scenarios=[scenario],
    )
