"""Drive createSecret and setSecret of a database rotator with no Secrets Manager and no server.

The engine under test keeps its own code; only its `connect` is replaced (by the caller) with one
that hands out a recording stand-in for the driver, and Secrets Manager with a table of values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rotators.database import DatabaseRotator
from rotators.rotation import RotationContext, RotationEvent, Step
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretMeta

NEW_PASSWORD = "New-Value-2"


class FakeSecretsManager:
    """Stands in for the boto3 client, the one fake of the unit tests. GetSecretValue by stage
    from a table; GetRandomPassword gives `new_password`, or draws `passwords` in order when
    given, and records the policy it was asked for; DescribeSecret answers as setSecret reads it
    right before a change: the token v2 still holds AWSPENDING (unless `versions` says else)."""

    def __init__(
        self,
        values: dict[tuple[str, str], dict[str, Any]],
        new_password: str = NEW_PASSWORD,
        *,
        passwords: Iterable[str] | None = None,
    ) -> None:
        self.values = values
        self.new_password = new_password
        self.passwords = None if passwords is None else list(passwords)
        self.policies: list[dict[str, Any]] = []
        self.versions: dict[str, list[str]] = {"v1": [AWSCURRENT], "v2": [AWSPENDING]}

    def get_secret_value(self, *, SecretId: str, VersionStage: str, VersionId: str | None = None) -> Any:
        version = VersionId or f"{SecretId}-{VersionStage}"
        return {"SecretString": json.dumps(self.values[(SecretId, VersionStage)]), "VersionId": version}

    def get_random_password(self, **policy: Any) -> Any:
        self.policies.append(policy)
        password = self.new_password if self.passwords is None else self.passwords.pop(0)
        return {"RandomPassword": password}

    def describe_secret(self, *, SecretId: str) -> Any:
        return {
            "ARN": f"arn:{SecretId}",
            "Name": SecretId,
            "RotationEnabled": True,
            "VersionIdsToStages": self.versions,
        }


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
