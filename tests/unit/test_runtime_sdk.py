"""The bundles use the SDK of Lambda's Python runtime, which may be older than the one the rotator
was written against: a parameter that SDK's service model lacks is left out, and said so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from rotators.secrets import AWSPENDING, SecretStore

TOKEN, ROTATION_TOKEN = "t" * 32, "rotation-token-" + "r" * 30
PENDING = {
    "SecretId": "demo",
    "ClientRequestToken": TOKEN,
    "SecretString": "{}",
    "VersionStages": [AWSPENDING],
}
REPLY = {"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:demo-AbCdEf", "Name": "demo"}


def client(models: Path | None = None) -> Any:
    """A Secrets Manager client, with the service models in `models` ahead of botocore's own."""
    session = botocore.session.Session()
    if models is not None:
        session.get_component("data_loader").search_paths.insert(0, str(models))
    return session.create_client(
        "secretsmanager",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def without_rotation_token(tmp_path: Path) -> Path:
    """Secrets Manager's model as an SDK from before PutSecretValue took a RotationToken."""
    loader = botocore.session.Session().get_component("data_loader")
    version = loader.determine_latest_version("secretsmanager", "service-2")
    model = loader.load_service_model("secretsmanager", "service-2")
    del model["shapes"]["PutSecretValueRequest"]["members"]["RotationToken"]
    folder = tmp_path / "secretsmanager" / version
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    return tmp_path


def put(sdk: Any, expected: dict[str, Any]) -> None:
    with Stubber(sdk) as stub:
        stub.add_response("put_secret_value", REPLY, expected)
        SecretStore(sdk).put_pending("demo", TOKEN, "{}", rotation_token=ROTATION_TOKEN)
        stub.assert_no_pending_responses()


def test_the_rotation_token_goes_with_the_pending_value_where_the_sdk_knows_it() -> None:
    put(client(), {**PENDING, "RotationToken": ROTATION_TOKEN})


def test_an_sdk_without_it_stores_the_value_and_says_why(
    without_rotation_token: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(client(without_rotation_token), PENDING)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "does not know PutSecretValue's RotationToken" in said
    assert ROTATION_TOKEN not in said
