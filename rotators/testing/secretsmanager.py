"""A local Secrets Manager endpoint (moto's server mode), spoken to over HTTP by plain boto3.

moto never runs a rotation Lambda itself, so `start_rotation` does what RotateSecret does on
AWS (turn rotation on and stage an empty AWSPENDING version for a fresh token) and the
caller then invokes the four steps, exactly as Secrets Manager would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock

from rotators.secrets import ROTATORS_TESTED

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class LocalSecretsManager:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # moto would try to run the placeholder rotation Lambda in Docker; a stub is enough.
        request = urllib.request.Request(  # noqa: S310 - our own http:// endpoint
            self.endpoint_url + "/moto-api/config",
            data=json.dumps({"lambda": {"use_docker": False}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
        self.client: SecretsManagerClient = self._client("secretsmanager")
        self.rotation_lambda_arn = self._placeholder_lambda()

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any key; no AWS account
        )

    def _placeholder_lambda(self) -> str:
        """RotateSecret needs a function ARN; this one is never really run. moto keeps one state
        per process, so names are unique to this endpoint."""
        name = f"rotator-placeholder-{uuid.uuid4().hex[:8]}"
        role = self._client("iam").create_role(RoleName=name, AssumeRolePolicyDocument="{}")
        bundle = io.BytesIO()
        with zipfile.ZipFile(bundle, "w") as archive:
            archive.writestr("placeholder.py", "def handler(event, context):\n    return None\n")
        function = self._client("lambda").create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="placeholder.handler",
            Code={"ZipFile": bundle.getvalue()},
        )
        return str(function["FunctionArn"])

    def environment(self) -> dict[str, str]:
        """What a rotator process needs to talk to this endpoint."""
        return {**FAKE_CREDENTIALS, "SECRETS_MANAGER_ENDPOINT": self.endpoint_url}

    @contextmanager
    def environ(self, **extra: str) -> Iterator[None]:
        """Point rotators in this process at this endpoint; the old environment comes back after."""
        with mock.patch.dict(os.environ, {**self.environment(), **extra}):
            yield

    def create_secret(self, name: str, value: dict[str, Any]) -> str:
        return self.client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]

    def start_rotation(self, secret_id: str, token: str | None = None) -> str:
        """RotateSecret: rotation on, a fresh token staged as an empty AWSPENDING version."""
        token = token or str(uuid.uuid4())
        self.client.rotate_secret(
            SecretId=secret_id,
            ClientRequestToken=token,
            RotationLambdaARN=self.rotation_lambda_arn,
            RotationRules={"AutomaticallyAfterDays": 30},
        )
        return token

    def stages(self, secret_id: str, *, marks: bool = False) -> dict[str, list[str]]:
        """The labels of each labelled version; the rotator's own ROTATORS_TESTED mark only with `marks`."""
        found = self.client.describe_secret(SecretId=secret_id)
        labelled = {
            version: [s for s in stages if marks or s != ROTATORS_TESTED]
            for version, stages in found["VersionIdsToStages"].items()
        }
        return {version: stages for version, stages in labelled.items() if stages}

    def value(self, secret_id: str, stage: str) -> dict[str, Any]:
        text = self.client.get_secret_value(SecretId=secret_id, VersionStage=stage)["SecretString"]
        found: dict[str, Any] = json.loads(text)
        return found

    def close(self) -> None:
        self._server.stop()
