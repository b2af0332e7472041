"""The opt-in alerts of template.yaml: the rule's pattern matches a recorded RotationFailed CloudTrail
event (with EventBridge's matching, for the fields the pattern uses) and nothing unrelated; every
rotator function has an Errors alarm; both reach one topic, which only they may publish to."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from rotators.cli.samtemplate import SamTemplate
from rotators.engines import ENGINES

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app-AbCdEf"
EMAIL, TOPIC = "ops@example.com", "arn:aws:sns:eu-west-1:123456789012:on-call"

# As EventBridge delivers it (the shape of a recorded one; AWS docs: "AWS CloudTrail entries for
# Secrets Manager", log entries for rotation), with this account's names.
ROTATION_FAILED: dict[str, Any] = {
    "version": "0",
    "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196",
    "detail-type": "AWS Service Event via CloudTrail",
    "source": "aws.secretsmanager",
    "account": "123456789012",
    "time": "2024-05-01T04:12:31Z",
    "region": "eu-west-1",
    "resources": [],
    "detail": {
        "eventVersion": "1.08",
        "userIdentity": {"accountId": "123456789012", "invokedBy": "secretsmanager.amazonaws.com"},
        "eventTime": "2024-05-01T04:12:31Z",
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "RotationFailed",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "secretsmanager.amazonaws.com",
        "userAgent": "secretsmanager.amazonaws.com",
        "errorMessage": "Error when executing lambda arn:aws:lambda:eu-west-1:123456789012:function:"
        "rotators-postgresql during setSecret step",
        "requestParameters": None,
        "responseElements": None,
        "additionalEventData": {"SecretId": SECRET},
        "requestID": f"Rotation-{SECRET}-2024-05-01T04:12:31Z",
        "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9",
        "readOnly": False,
        "eventType": "AwsServiceEvent",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management",
    },
}


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching for exact values: every field of the pattern must match; a nested
    pattern matches a nested object; a list of values matches when the event's value (or, for an
    array, any of its elements) equals one of them, case and type included."""
    for key, wanted in pattern.items():
        if key not in event:
            return False
        value = event[key]
        if isinstance(wanted, dict):
            if not (isinstance(value, dict) and matches(wanted, value)):
                return False
            continue
        assert not any(isinstance(w, dict) for w in wanted), "teach matches() EventBridge's content filters"
        values = value if isinstance(value, list) else [value]
        if not any(v == w and type(v) is type(w) for v in values for w in wanted):
            return False
    return True


def with_detail(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(ROTATION_FAILED)
    event["detail"].update(changes)
    return event


@pytest.fixture(scope="module")
def template() -> SamTemplate:
    return SamTemplate.load(TEMPLATE, {"AlertTarget": EMAIL})


@pytest.fixture(scope="module")
def pattern(template: SamTemplate) -> dict[str, Any]:
    found: dict[str, Any] = template.data["Resources"]["RotationFailureRule"]["Properties"]["EventPattern"]
    return found


def test_the_matcher_follows_eventbridge_for_arrays_case_and_types() -> None:
    assert matches({"a": ["x"]}, {"a": ["y", "x"]}), "an array matches by any element"
    assert not matches({"a": ["x"]}, {"a": "X"}), "case matters"
    assert not matches({"a": ["1"]}, {"a": 1}), "so does the type"
    assert not matches({"a": {"b": ["x"]}}, {"a": "x"}) and not matches({"a": ["x"]}, {})


@pytest.mark.parametrize("name", ["RotationFailed", "RotationAbandoned", "TestRotationFailed"])
def test_the_rule_matches_a_recorded_rotation_failure(pattern: dict[str, Any], name: str) -> None:
    assert matches(pattern, with_detail(eventName=name))


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(with_detail(eventName="RotationSucceeded"), id="a rotation that succeeded"),
        pytest.param(
            {**with_detail(eventName="RotateSecret"), "detail-type": "AWS API Call via CloudTrail"},
            id="the RotateSecret call",
        ),
        pytest.param(
            {**with_detail(eventSource="kms.amazonaws.com", eventName="RotateKey"), "source": "aws.kms"},
            id="a KMS key rotation",
        ),
    ],
)
def test_the_rule_does_not_match_unrelated_events(pattern: dict[str, Any], event: dict[str, Any]) -> None:
    assert not matches(pattern, event)


@pytest.mark.parametrize(
    ("target", "on", "by_email"),
    [("", False, False), (EMAIL, True, True), (TOPIC, True, False)],
)
def test_alerts_are_opt_in_by_an_email_or_an_existing_topic(target: str, on: bool, by_email: bool) -> None:
    template = SamTemplate.load(TEMPLATE, {"AlertTarget": target})
    assert template.condition("HasAlerts") is on
    assert template.condition("AlertsByEmail") is by_email, "a topic of its own only for an e-mail"
    assert template.condition("AlertsToExistingTopic") is (on and not by_email)
    pattern = template.data["Parameters"]["AlertTarget"]["AllowedPattern"]
    assert re.fullmatch(pattern, target)


def test_every_rotator_function_has_an_errors_alarm_to_the_rules_topic(template: SamTemplate) -> None:
    resources = template.data["Resources"]
    target = resources["RotationFailureRule"]["Properties"]["Targets"][0]["Arn"]
    assert target == {"Fn::If": ["AlertsToExistingTopic", {"Ref": "AlertTarget"}, {"Ref": "AlertTopic"}]}
    functions = [name for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == len(ENGINES) + 1  # and the API-key example
    for function in functions:
        alarm = resources[f"{function}ErrorsAlarm"]
        assert alarm["Condition"] == resources[function].get("Condition", "HasAlerts").replace(
            "DeployApiKeyExample", "AlertsForApiKeyExample"
        )
        properties = alarm["Properties"]
        assert (properties["Namespace"], properties["MetricName"]) == ("AWS/Lambda", "Errors")
        assert properties["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert properties["AlarmActions"] == [target]
        assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert properties["Threshold"] == 1


def test_only_the_rule_and_the_stacks_alarms_may_publish_to_the_topic(template: SamTemplate) -> None:
    resources = template.data["Resources"]
    statements = resources["AlertTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    by_service = {s["Principal"]["Service"]: s for s in statements}
    assert set(by_service) == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}
    assert all(s["Action"] == "sns:Publish" and s["Resource"] == {"Ref": "AlertTopic"} for s in statements)
    events = by_service["events.amazonaws.com"]["Condition"]
    assert events == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["RotationFailureRule", "Arn"]}}}
    alarms = by_service["cloudwatch.amazonaws.com"]["Condition"]
    allowed = template.resolve(alarms["ArnLike"]["aws:SourceArn"])
    for name, resource in resources.items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            alarm = template.resolve(resource["Properties"]["AlarmName"])
            arn = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm}"
            assert re.fullmatch(allowed.replace("*", ".*"), arn), name
    subscription = resources["AlertTopic"]["Properties"]["Subscription"]
    assert subscription == [{"Protocol": "email", "Endpoint": {"Ref": "AlertTarget"}}]
