"""Drive createSecret and setSecret of a database rotator with no Secrets Manager and no server.

The engine under test keeps its own code; only its `connect` is replaced (by the caller) with one
that hands out a recording stand-in for the driver, and Secrets Manager with a table of values.
"""

from __future__ import annotations

import json
from typing import Any

from rotators.database import DatabaseRotator
from rotators.rotation import RotationContext, RotationEvent, Step
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretMeta

NEW_PASSWORD = "New-Value-2"


class FakeSecretsManager:
    """Stands in for the boto3 client: GetSecretValue by stage from a table, a fixed new password."""

    def __init__(
        self, values: dict[tuple[str, str], dict[str, Any]], new_password: str = NEW_PASSWORD
    ) -> None:
        self.values = values
        self.new_password = new_password

    def get_secret_value(self, *, SecretId: str, VersionStage: str, VersionId: str | None = None) -> Any:
        version = VersionId or f"{SecretId}-{VersionStage}"
        return {"SecretString": json.dumps(self.values[(SecretId, VersionStage)]), "VersionId": version}

    def get_random_password(self, **policy: Any) -> Any:
        return {"RandomPassword": self.new_password}


def meta(*, previous: bool = False) -> SecretMeta:
    versions = {"v1": frozenset({AWSCURRENT}), "v2": frozenset({AWSPENDING})}
    if previous:
        versions["v0"] = frozenset({AWSPREVIOUS})
    return SecretMeta("arn:demo", "demo", True, versions)


def context(rotator: DatabaseRotator[Any], step: Step, *, previous: bool = False) -> RotationContext[Any]:
    return RotationContext(rotator, RotationEvent("demo", "v2", step), meta(previous=previous))


def create_then_set(rotator: DatabaseRotator[Any], client: FakeSecretsManager) -> None:
    """createSecret's pending value, staged in the table, then setSecret with it."""
    pending = rotator.make_pending(context(rotator, Step.CREATE))
    client.values[("demo", AWSPENDING)] = json.loads(pending.to_json())
    rotator.set_pending(context(rotator, Step.SET, previous=("demo", AWSPREVIOUS) in client.values))
