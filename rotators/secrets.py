"""SecretStore: the only code that calls Secrets Manager."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import botocore.session
from botocore.config import Config

from rotators.errors import SecretNotFoundError, shown
from rotators.log import logger

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

AWSCURRENT = "AWSCURRENT"
AWSPENDING = "AWSPENDING"
AWSPREVIOUS = "AWSPREVIOUS"
# A custom label that testSecret puts on the version it tested, so that finishSecret, reading it
# from the DescribeSecret it makes anyway, moves AWSCURRENT only to a tested version.
ROTATORS_TESTED = "ROTATORS_TESTED"
_CACHED_VERSIONS = 64


@dataclass(frozen=True)
class PasswordPolicy:
    """The arguments of GetRandomPassword, named as AWS's own rotation functions name them."""

    length: int = 32
    exclude_characters: str = ""
    exclude_numbers: bool = False
    exclude_punctuation: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    require_each_included_type: bool = True


@dataclass(frozen=True)
class SecretMeta:
    """What DescribeSecret says about a secret: enough for every guard of a step."""

    arn: str
    name: str
    rotation_enabled: bool
    versions: Mapping[str, frozenset[str]]
    # The secret's tags: a master secret that RDS, Aurora or Redshift manage names its database here.
    tags: Mapping[str, str] = field(default_factory=dict)

    def stages_of(self, version_id: str) -> frozenset[str]:
        return self.versions.get(version_id, frozenset())

    def version_with(self, stage: str) -> str | None:
        return next((v for v, stages in self.versions.items() if stage in stages), None)


@dataclass(frozen=True)
class VersionInfo:
    """One row of ListSecretVersionIds."""

    version_id: str
    stages: frozenset[str]
    created: datetime | None


# Every client: standard retries (throttling and 5xx), and a stalled endpoint fails the step fast.
SDK_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=10)


@cache
def sdk_session() -> botocore.session.Session:
    """One botocore session per container for every client. Not boto3: it adds resources and S3
    transfers, which a rotator never uses, and about 25 ms to each cold start."""
    return botocore.session.Session()


@cache
def _client(endpoint_url: str | None) -> SecretsManagerClient:
    """One client per container and endpoint: creating a client costs more than a call."""
    client = sdk_session().create_client("secretsmanager", endpoint_url=endpoint_url, config=SDK_CONFIG)
    return cast("SecretsManagerClient", client)


def _takes(client: Any, operation: str, parameter: str) -> bool:
    """Whether the client's service model has `parameter`: the runtime's SDK may be older."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    return shape is not None and parameter in shape.members


def error_code(exc: Exception) -> str:
    """The AWS error code of an SDK exception ("" for any other exception)."""
    response: Any = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class SecretStore:
    """Describe, read by stage or version, stage a pending value, move labels, make passwords.

    The endpoint comes from SECRETS_MANAGER_ENDPOINT (as in AWS's own rotation functions);
    the SDK's AWS_ENDPOINT_URL_SECRETS_MANAGER works too when that is unset.
    """

    def __init__(self, client: SecretsManagerClient | None = None) -> None:
        self._explicit_client = client
        # A version's value never changes, so a warm container need not read it twice: the four
        # steps of a rotation usually run in one container and share what createSecret wrote.
        self._versions: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def client(self) -> SecretsManagerClient:
        if self._explicit_client is not None:
            return self._explicit_client
        return _client(os.environ.get("SECRETS_MANAGER_ENDPOINT") or None)

    def prepare(self) -> None:
        """Make the client now, at INIT (Rotator.prepare): ~50 ms of CPU, most of a first step's."""
        try:
            self.client  # noqa: B018 - made and cached for the invocations
        except Exception as exc:
            logger.debug(f"The Secrets Manager client was not made at INIT ({type(exc).__name__})")

    def describe(self, secret_id: str) -> SecretMeta:
        try:
            found = self.client.describe_secret(SecretId=secret_id)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise SecretNotFoundError(
                    f"Secret {shown(secret_id)} does not exist: check the SecretId and the region"
                ) from None
            raise
        return SecretMeta(
            arn=found["ARN"],
            name=found["Name"],
            rotation_enabled=bool(found.get("RotationEnabled", False)),
            versions={
                version: frozenset(stages) for version, stages in found.get("VersionIdsToStages", {}).items()
            },
            tags={tag["Key"]: tag["Value"] for tag in found.get("Tags", [])},
        )

    def get(self, secret_id: str, *, stage: str, version_id: str | None = None) -> str:
        """Read by explicit stage (and version): an unstaged read may return a stale value."""
        value = self.find(secret_id, stage=stage, version_id=version_id)
        if value is None:
            which = f"version {shown(version_id)} " if version_id else ""
            raise SecretNotFoundError(f"Secret {shown(secret_id)} has no {which}value labelled {stage}")
        return value

    def find(self, secret_id: str, *, stage: str, version_id: str | None = None) -> str | None:
        """Read by stage, or by version id (from this invocation's DescribeSecret) and stage."""
        if version_id is not None and (secret_id, version_id) in self._versions:
            return self._versions[(secret_id, version_id)]
        kwargs: dict[str, str] = {"SecretId": secret_id, "VersionStage": stage}
        if version_id is not None:
            kwargs["VersionId"] = version_id
        try:
            found = self.client.get_secret_value(**kwargs)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        if "SecretString" not in found:
            raise SecretNotFoundError(
                f"Secret {shown(secret_id)} holds binary data; rotators rotate SecretString values"
            )
        self._remember(secret_id, found["VersionId"], found["SecretString"])
        return found["SecretString"]

    def _remember(self, secret_id: str, version_id: str, value: str) -> None:
        self._versions[(secret_id, version_id)] = value
        self._versions.move_to_end((secret_id, version_id))
        while len(self._versions) > _CACHED_VERSIONS:
            self._versions.popitem(last=False)

    def put_pending(self, secret_id: str, token: str, value: str, rotation_token: str | None = None) -> None:
        kwargs: dict[str, Any] = {
            "SecretId": secret_id,
            "ClientRequestToken": token,
            "SecretString": value,
            "VersionStages": [AWSPENDING],
        }
        if rotation_token and _takes(self.client, "PutSecretValue", "RotationToken"):
            kwargs["RotationToken"] = rotation_token
        elif rotation_token:
            logger.warning(
                f"The SDK here (botocore {botocore.__version__}) does not know PutSecretValue's "
                "RotationToken: the pending value is stored without it. Build with "
                "ROTATORS_BUNDLE_SDK=bundled for a newer SDK than the Lambda runtime's"
            )
        self.client.put_secret_value(**kwargs)
        self._remember(secret_id, token, value)

    def move_stage(self, secret_id: str, stage: str, *, to_version: str, from_version: str | None) -> None:
        kwargs: dict[str, str] = {
            "SecretId": secret_id,
            "VersionStage": stage,
            "MoveToVersionId": to_version,
        }
        if from_version is not None:
            kwargs["RemoveFromVersionId"] = from_version
        self.client.update_secret_version_stage(**kwargs)

    def remove_stage(self, secret_id: str, stage: str, *, from_version: str) -> None:
        self.client.update_secret_version_stage(
            SecretId=secret_id, VersionStage=stage, RemoveFromVersionId=from_version
        )

    def random_password(self, policy: PasswordPolicy) -> str:
        return self.client.get_random_password(
            PasswordLength=policy.length,
            ExcludeCharacters=policy.exclude_characters,
            ExcludeNumbers=policy.exclude_numbers,
            ExcludePunctuation=policy.exclude_punctuation,
            ExcludeUppercase=policy.exclude_uppercase,
            ExcludeLowercase=policy.exclude_lowercase,
            IncludeSpace=False,
            RequireEachIncludedType=policy.require_each_included_type,
        )["RandomPassword"]

    def versions(self, secret_id: str) -> list[VersionInfo]:
        """Every version, labelled or not, newest first (abandoned rotations leave theirs here).
        On equal dates the later listed comes first: moto stamps every version with the call's time."""
        found: list[VersionInfo] = []
        kwargs: dict[str, Any] = {"SecretId": secret_id, "IncludeDeprecated": True, "MaxResults": 100}
        while True:
            page = self.client.list_secret_version_ids(**kwargs)
            found.extend(
                VersionInfo(v["VersionId"], frozenset(v.get("VersionStages", [])), v.get("CreatedDate"))
                for v in page.get("Versions", [])
            )
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        oldest = datetime.min.replace(tzinfo=UTC)
        ranked = sorted(enumerate(found), key=lambda item: (item[1].created or oldest, item[0]), reverse=True)
        return [version for _, version in ranked]

    def find_version(self, secret_id: str, version_id: str) -> str | None:
        """The value of one version whatever its labels; None for a version that has none."""
        try:
            found = self.client.get_secret_value(SecretId=secret_id, VersionId=version_id)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return found.get("SecretString")
