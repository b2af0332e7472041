"""Each function's role in template.yaml grants every Secrets Manager action its code really calls.

The calls are counted (botocore event hooks) during real rotations against the local endpoint,
so a new call in the code without its permission in the template fails here, not in AWS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from rotators.engines.postgresql import PostgreSQLRotator
from rotators.examples.api_key import ApiKeyRotator
from rotators.local.apikeys import ApiKeyService
from rotators.local.postgres import PostgresServer
from rotators.local.secretsmanager import LocalSecretsManager
from rotators.rotation import Rotator
from rotators.samtemplate import load_yaml
from rotators.secrets import SecretStore
from tests.conftest import Admin, invoke, pg_secret

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def granted(role: str) -> set[str]:
    """The secretsmanager:* actions of a role's inline policies (plus a master-secret statement)."""
    resources = load_yaml(TEMPLATE.read_text())["Resources"]
    actions: set[str] = set()
    for policy in resources[role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return {a for a in actions if a.startswith("secretsmanager:")}


def called(local_sm: LocalSecretsManager, make: type[Rotator[Any]], arn: str, rotations: int = 2) -> set[str]:
    calls: set[str] = set()
    client = boto3.client("secretsmanager", endpoint_url=local_sm.endpoint_url)
    client.meta.events.register("before-call.secretsmanager.*", lambda model, **_: calls.add(model.name))
    rotator = make(SecretStore(client))
    for _ in range(rotations):
        invoke(rotator.handle, arn, local_sm.start_rotation(arn))
    return {f"secretsmanager:{name}" for name in calls}


def test_the_postgresql_role_grants_what_both_strategies_call(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, role_name: str, secret: str
) -> None:
    admin.create_role(f"m_{role_name}", "Master-" + role_name, "CREATEROLE")
    master = local_sm.create_secret(f"m_{role_name}", pg_secret(pg, f"m_{role_name}", "Master-" + role_name))
    alternating = local_sm.create_secret(
        f"alt_{role_name}", {**local_sm.value(secret, "AWSCURRENT"), "masterarn": master}
    )
    needed = called(local_sm, PostgreSQLRotator, secret) | called(local_sm, PostgreSQLRotator, alternating)
    assert needed - granted("PostgreSQLRotatorRole") == set()


def test_the_api_key_example_role_grants_what_the_issuer_calls(
    local_sm: LocalSecretsManager, api_key_service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", api_key_service.ca_bundle)
    key_id, key = api_key_service.create_account()
    value = {"endpoint": api_key_service.endpoint, "key_id": key_id, "api_key": key}
    arn = local_sm.client.create_secret(Name=f"api-key-{key_id}", SecretString=json.dumps(value))["ARN"]
    needed = called(local_sm, ApiKeyRotator, arn, rotations=3)
    assert "secretsmanager:ListSecretVersionIds" in needed, "the issuer looks for abandoned keys"
    assert needed - granted("ApiKeyExampleRotatorRole") == set()
