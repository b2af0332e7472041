"""Drive createSecret and setSecret of a database rotator with no Secrets Manager and no server.

The engine under test keeps its own code; only its `connect` is replaced (by the caller) with one
that hands out a recording stand-in for the driver, and Secrets Manager with a table of values.
What the engines' statement tests share is here: that table, the rotation steps, and the check
that a driver's refusal comes back as the engine's error without the password.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import pytest

from rotators.database import DatabaseRotator, DatabaseSecret, LoginRefusedError
from rotators.errors import PasswordChangeError
from rotators.rotation import RotationContext, RotationEvent, Step
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretMeta, SecretStore

if TYPE_CHECKING:
    from rotators.testing.secretsmanager import LocalSecretsManager

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

    def list_secret_version_ids(self, *, SecretId: str, **_: Any) -> Any:
        return {"Versions": [{"VersionId": v, "VersionStages": s} for v, s in self.versions.items()]}

    def describe_secret(self, *, SecretId: str) -> Any:
        return {
            "ARN": f"arn:{SecretId}",
            "Name": SecretId,
            "RotationEnabled": True,
            "VersionIdsToStages": self.versions,
        }


def store(client: FakeSecretsManager) -> SecretStore:
    """What a rotator reads Secrets Manager through, with the fake in boto3's place."""
    return SecretStore(cast(Any, client))


def meta(*, previous: bool = False) -> SecretMeta:
    versions = {"v1": frozenset({AWSCURRENT}), "v2": frozenset({AWSPENDING})}
    if previous:
        versions["v0"] = frozenset({AWSPREVIOUS})
    return SecretMeta("arn:demo", "demo", True, versions)


def context(rotator: DatabaseRotator[Any], step: Step, *, previous: bool = False) -> RotationContext[Any]:
    return RotationContext(rotator, RotationEvent("demo", "v2", step), meta(previous=previous))


def make_pending(rotator: DatabaseRotator[Any]) -> DatabaseSecret:
    """createSecret's pending value, not staged."""
    return rotator.make_pending(context(rotator, Step.CREATE))


def create_then_set(rotator: DatabaseRotator[Any], client: FakeSecretsManager) -> None:
    """createSecret's pending value, staged in the table, then setSecret with it."""
    client.values[("demo", AWSPENDING)] = json.loads(make_pending(rotator).to_json())
    rotator.set_pending(context(rotator, Step.SET, previous=("demo", AWSPREVIOUS) in client.values))


def redacted(error: BaseException, *secrets: str) -> str:
    """The message of an error made of a driver's, checked to quote none of `secrets`: the
    driver's words stay, with <redacted> in their place, and the driver's exception (which may
    quote them) is not chained to it. The message, for the caller's own checks."""
    message = str(error)
    assert "<redacted>" in message
    assert not [secret for secret in secrets if secret in message], "a secret is quoted"
    assert error.__cause__ is None and error.__suppress_context__, "the driver's error is not chained"
    return message


def refused_change(rotator: DatabaseRotator[Any], conn: Any, call: str, password: str) -> str:
    """`call` (set_password for app, or clone_user of app to app_clone) with `password`, on a
    connection that refuses it: the PasswordChangeError's message, checked to be redacted."""
    with pytest.raises(PasswordChangeError) as caught:
        if call == "set_password":
            rotator.set_password(conn, "app", password)
        else:
            rotator.clone_user(conn, "app", "app_clone", password)
    return redacted(caught.value, password)


def ca_names(context: ssl.SSLContext) -> list[str]:
    """The common names of the CAs an SSLContext trusts."""
    certificates: list[Any] = context.get_ca_certs()
    return [dict(entry[0] for entry in cert["subject"])["commonName"] for cert in certificates]


def current_logs_in(sm: LocalSecretsManager, rotator: DatabaseRotator[Any], arn: str) -> bool:
    """Whether the AWSCURRENT value of `arn` logs in, through the engine's own connect."""
    text = sm.client.get_secret_value(SecretId=arn, VersionStage=AWSCURRENT)["SecretString"]
    secret = rotator.parse(text, where="the test")
    try:
        with rotator.connect(secret, secret.username, secret.password):
            return True
    except LoginRefusedError:
        return False
