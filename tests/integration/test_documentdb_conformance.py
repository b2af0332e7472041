"""The DocumentDB/MongoDB engine on SecantusDB through the conformance kit: crashes after each
hook, retries, failing hooks, and that exactly the labelled passwords log in afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rotators.database import DatabaseSecret
from rotators.engines.documentdb import DocumentDBRotator
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.secantus import SecantusServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import MongoAdmin, mongo_secret

SELF_SERVICE = [{"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword", "viewUser"]}]


@pytest.fixture
def fresh_user(
    mongo_admin: MongoAdmin, mongo: SecantusServer, new_password: Callable[[], str]
) -> Callable[..., dict[str, Any]]:
    def make(*roles: Any, **extra: Any) -> dict[str, Any]:
        name, password = f"app_{uuid.uuid4().hex[:10]}", new_password()
        mongo_admin.command("createRole", f"self_{name}", privileges=SELF_SERVICE, roles=[])
        mongo_admin.create_user(name, password, [{"role": f"self_{name}", "db": "admin"}, *roles])
        return mongo_secret(mongo, name, password, **extra)

    return make


def logs_in(admin: MongoAdmin) -> Callable[[DatabaseSecret], bool]:
    return lambda s: admin.logs_in(s.username, s.password)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_single_user_conforms(
    rotator_conformance: RotatorConformance,
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    fresh_user: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    rotator_conformance.check(
        DocumentDBRotator,
        new_secret=fresh_user,
        accepts=logs_in(mongo_admin),
        keeps_previous=False,
        scenarios=[scenario],
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alternating_users_conform(
    rotator_conformance: RotatorConformance,
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    fresh_user: Callable[..., dict[str, Any]],
    scenario: str,
) -> None:
    master = fresh_user({"role": "userAdminAnyDatabase", "db": "admin"})
    master_arn = mongo_sm.create_secret(master["username"], master)
    rotator_conformance.check(
        DocumentDBRotator,
        new_secret=lambda: fresh_user(masterarn=master_arn),
        accepts=logs_in(mongo_admin),
        keeps_previous=True,
        scenarios=[scenario],
    )
