"""The built-in PostgreSQL engine through the conformance kit custom rotators use, so the kit stays honest."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rotators.database import DatabaseSecret
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, pg_secret


@pytest.fixture
def fresh_role(
    admin: Admin, pg: PostgresServer, new_password: Callable[[], str]
) -> Callable[..., dict[str, Any]]:
    def make(**extra: Any) -> dict[str, Any]:
        name, password = f"app_{uuid.uuid4().hex[:10]}", new_password()
        admin.create_role(name, password)
        return pg_secret(pg, name, password, **extra)

    return make


def logs_in(admin: Admin) -> Callable[[DatabaseSecret], bool]:
    return lambda s: admin.logs_in(s.username, s.password)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_single_user_conforms(
    rotator_conformance: RotatorConformance,
    local_sm: LocalSecretsManager,
    admin: Admin,
    fresh_role: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    """One password at a time: after a rotation only AWSCURRENT logs in."""
    rotator_conformance.check(
        PostgreSQLRotator,
        new_secret=fresh_role,
        accepts=logs_in(admin),
        keeps_previous=False,
        scenarios=[scenario],
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alternating_users_conform(
    rotator_conformance: RotatorConformance,
    local_sm: LocalSecretsManager,
    admin: Admin,
    fresh_role: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    """Two users in turns: AWSPREVIOUS keeps logging in until the next rotation."""
    master = fresh_role()
    admin.sql(f'ALTER ROLE "{master["username"]}" CREATEROLE')
    master_arn = local_sm.create_secret(master["username"], master)
    rotator_conformance.check(
        PostgreSQLRotator,
        new_secret=lambda: fresh_role(masterarn=master_arn),
        accepts=logs_in(admin),
        keeps_previous=True,
        scenarios=[scenario],
    )
