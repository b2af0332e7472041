"""Each function's role in template.yaml grants exactly the Secrets Manager access its code uses.

The calls are recorded (botocore event hooks) during real rotations against the local endpoint,
each with its step, the secret it names and the request's condition keys, and judged against the
role's statements the way IAM judges them: action, resource and the conditions the template uses.
A new call without its permission fails here, not in AWS; so does a permission that no call uses.
KMS is not emulated locally: its statements are checked in tests/unit/test_samtemplate.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from rotators.cli.samtemplate import SamTemplate
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.examples.api_key import ApiKeyRotator
from rotators.rotation import Rotator
from rotators.secrets import SecretStore
from rotators.testing.apikeys import ApiKeyService
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import STEPS, Admin, invoke, pg_secret

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
STAGE = "secretsmanager:VersionStage"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
ROTATION_LAMBDA = "secretsmanager:resource/AllowRotationLambdaArn"


@dataclass(frozen=True)
class Call:
    """One request as IAM sees it: action, resource and the condition keys it carries."""

    step: str
    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.step}: {self.action} on {self.resource} {dict(self.context)}"


@dataclass(frozen=True)
class Statement:
    origin: str
    body: Mapping[str, Any]

    def actions(self) -> list[str]:
        return _listed(self.body["Action"])

    def allows(self, call: Call) -> bool:
        assert self.body["Effect"] == "Allow", f"{self.origin}: teach this test other effects"
        if not any(_like(pattern, call.action) for pattern in self.actions()):
            return False
        if not any(_like(pattern, call.resource) for pattern in _listed(self.body["Resource"])):
            return False
        conditions = self.body.get("Condition", {})
        return all(
            _holds(operator, wanted, call.context.get(key))
            for operator, block in conditions.items()
            for key, wanted in block.items()
        )


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _like(pattern: str, value: str) -> bool:
    """IAM's wildcards: * any run of characters, ? one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def _holds(operator: str, wanted: Any, present: tuple[str, ...] | None) -> bool:
    """A condition key the request does not carry fails each operator the template uses."""
    if present is None:
        return False
    if operator in ("StringEquals", "ForAnyValue:StringEquals"):
        return any(value in _listed(wanted) for value in present)
    if operator in ("StringLike", "ForAnyValue:StringLike"):
        return any(_like(pattern, value) for pattern in _listed(wanted) for value in present)
    raise AssertionError(f"the template uses {operator}: teach this test how IAM evaluates it")


def role_statements(template: SamTemplate, role: str) -> list[Statement]:
    """A role's inline statements and those of the template's managed policies it attaches."""
    resources = template.data["Resources"]
    properties = resources[role]["Properties"]
    found = [
        Statement(f"{role}/{policy['PolicyName']}", statement)
        for policy in properties.get("Policies", [])
        for statement in template.resolve(policy["PolicyDocument"])["Statement"]
    ]
    for item in properties.get("ManagedPolicyArns", []):
        chosen = item
        if isinstance(item, dict) and "Fn::If" in item:
            condition, if_true, if_false = item["Fn::If"]
            chosen = if_true if template.condition(condition) else if_false
        name = str(chosen.get("Ref")) if isinstance(chosen, dict) else ""
        if name in resources:  # an AWS managed policy (a string ARN) grants no secretsmanager:*
            document = template.resolve(resources[name]["Properties"]["PolicyDocument"])
            found += [Statement(name, statement) for statement in document["Statement"]]
    for name, resource in resources.items():  # AWS::IAM::Policy resources that name the role
        attached = resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]
        if attached and ("Condition" not in resource or template.condition(resource["Condition"])):
            document = template.resolve(resource["Properties"]["PolicyDocument"])
            found += [Statement(name, statement) for statement in document["Statement"]]
    return found


@dataclass
class Recorder:
    """Counts a rotator's Secrets Manager calls, naming for each secret its rotation function."""

    local_sm: LocalSecretsManager
    rotation_lambda: Mapping[str, str | None]
    calls: list[Call] = field(default_factory=list)
    step: str = ""

    def rotate(self, make: type[Rotator[Any]], arn: str, rotations: int = 2) -> None:
        for _ in range(rotations):
            self._run(make, arn, self.local_sm.start_rotation(arn), STEPS)

    def abandon(self, make: type[Rotator[Any]], arn: str) -> None:
        """createSecret and setSecret, then AWSPENDING taken off by hand: the next single-user
        setSecret recovers from the unlabelled version."""
        token = self.local_sm.start_rotation(arn)
        self._run(make, arn, token, STEPS[:2])
        self.local_sm.client.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=token
        )

    def _run(self, make: type[Rotator[Any]], arn: str, token: str, steps: Iterable[str]) -> None:
        client = boto3.client("secretsmanager", endpoint_url=self.local_sm.endpoint_url)
        client.meta.events.register("before-parameter-build.secretsmanager.*", self._record)
        rotator = make(SecretStore(client))
        for step in steps:
            self.step = step
            invoke(rotator.handle, arn, token, step)

    def _record(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        context: dict[str, tuple[str, ...]] = {}
        resource = "*"
        if "SecretId" in params:
            resource = params["SecretId"]
            assert resource in self.rotation_lambda, f"a call names an unexpected secret {resource!r}"
            function = self.rotation_lambda[resource]
            if function is not None:
                context[ROTATION_LAMBDA] = (function,)
        stages = params.get("VersionStages") or ([params["VersionStage"]] if "VersionStage" in params else [])
        if stages:
            context[STAGE] = tuple(stages)
        self.calls.append(Call(self.step, f"secretsmanager:{model.name}", resource, context))


def check_exact(statements: list[Statement], calls: Iterable[Call]) -> None:
    """Every call is allowed; every secretsmanager action a statement grants is used by a call."""
    calls = list(calls)
    denied = [str(c) for c in calls if not any(s.allows(c) for s in statements)]
    assert denied == [], "calls the role does not allow:\n" + "\n".join(denied)
    unused = [
        f"{s.origin} {s.body.get('Sid', '')}: {action}"
        for s in statements
        for action in s.actions()
        if action.startswith("secretsmanager:") and not any(c.action == action and s.allows(c) for c in calls)
    ]
    assert unused == [], "granted but never used:\n" + "\n".join(unused)


def function_arn(template: SamTemplate, logical_id: str) -> str:
    name = template.function(logical_id).function_name
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


def test_the_postgresql_role_grants_exactly_what_both_strategies_call(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, role_name: str, secret: str
) -> None:
    master_user, alt_user = f"m_{role_name}", f"{role_name}_a"
    admin.create_role(master_user, "Master-" + role_name, "CREATEROLE")
    admin.create_role(alt_user, "Alt-" + role_name)
    master = local_sm.create_secret(master_user, pg_secret(pg, master_user, "Master-" + role_name))
    alternating = local_sm.create_secret(
        alt_user, {**pg_secret(pg, alt_user, "Alt-" + role_name), "masterarn": master}
    )
    template = SamTemplate.load(TEMPLATE, {"MasterSecretArns": master, "KmsKeyArns": KMS_KEY})
    own = function_arn(template, "PostgreSQLRotator")
    recorder = Recorder(local_sm, {secret: own, alternating: own, master: None})
    recorder.abandon(PostgreSQLRotator, secret)
    recorder.rotate(PostgreSQLRotator, secret)
    recorder.rotate(PostgreSQLRotator, alternating)

    seen = {(c.step, c.action) for c in recorder.calls}
    assert ("testSecret", "secretsmanager:UpdateSecretVersionStage") in seen, "testSecret marks the version"
    assert ("setSecret", "secretsmanager:ListSecretVersionIds") in seen, (
        "setSecret recovered the abandoned one"
    )
    on_master = {(c.action, c.context.get(STAGE)) for c in recorder.calls if c.resource == master}
    assert on_master == {("secretsmanager:GetSecretValue", ("AWSCURRENT",))}, "only AWSCURRENT is read"
    # A master secret that names its host uses nothing of the lookup policy for service-managed
    # masters (tests/integration/test_managed_master.py judges that one, both ways).
    statements = role_statements(template, "PostgreSQLRotatorRole")
    check_exact([s for s in statements if s.origin != "PostgreSQLMasterEndpointPolicy"], recorder.calls)


def test_the_api_key_example_role_grants_exactly_what_the_issuer_calls(
    local_sm: LocalSecretsManager, api_key_service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", api_key_service.ca_bundle)
    key_id, key = api_key_service.create_account()
    value = {"endpoint": api_key_service.endpoint, "key_id": key_id, "api_key": key}
    arn = local_sm.client.create_secret(Name=f"api-key-{key_id}", SecretString=json.dumps(value))["ARN"]
    template = SamTemplate.load(
        TEMPLATE, {"DeployApiKeyExample": "true", "MasterSecretArns": "arn:m", "KmsKeyArns": KMS_KEY}
    )
    recorder = Recorder(local_sm, {arn: function_arn(template, "ApiKeyExampleRotator")})
    recorder.rotate(ApiKeyRotator, arn, rotations=3)

    actions = {c.action for c in recorder.calls}
    assert "secretsmanager:ListSecretVersionIds" in actions, "the issuer looks for abandoned keys"
    assert "secretsmanager:GetRandomPassword" not in actions, "the service mints the keys"
    check_exact(role_statements(template, "ApiKeyExampleRotatorRole"), recorder.calls)


def test_the_roles_refuse_what_no_rotator_may_do() -> None:
    """The judge above can say no: requests a rotator never makes are refused by the template."""
    master = "arn:aws:secretsmanager:us-east-1:123456789012:secret:master-AbCdEf"
    other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf"
    template = SamTemplate.load(TEMPLATE, {"MasterSecretArns": master, "KmsKeyArns": KMS_KEY})
    statements = role_statements(template, "PostgreSQLRotatorRole")
    own = {ROTATION_LAMBDA: (function_arn(template, "PostgreSQLRotator"),)}
    theirs = {ROTATION_LAMBDA: (function_arn(template, "MySQLRotator"),)}
    refused = [
        Call("", "secretsmanager:DescribeSecret", other),  # a master's tags only (managed masters)
        Call("", "secretsmanager:GetSecretValue", master, {STAGE: ("AWSPENDING",)}),
        Call("", "secretsmanager:GetSecretValue", master),  # no stage: whatever a default is
        Call("", "secretsmanager:PutSecretValue", master, {STAGE: ("AWSPENDING",)}),
        Call("", "secretsmanager:GetSecretValue", other, theirs),  # attached to another rotator
        Call("", "secretsmanager:PutSecretValue", other),  # attached to none
        Call("", "secretsmanager:ListSecretVersionIds", master),
        Call("", "secretsmanager:DeleteSecret", other, own),
    ]
    allowed = [str(c) for c in refused if any(s.allows(c) for s in statements)]
    assert allowed == []
    read = Call("", "secretsmanager:GetSecretValue", master, {STAGE: ("AWSCURRENT",)})
    assert any(s.allows(read) for s in statements), "while the master's AWSCURRENT may be read"
