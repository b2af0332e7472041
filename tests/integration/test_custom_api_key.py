"""The example API key rotator, both shapes, against a real local HTTPS key service and moto."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rotators.examples.api_key as example
from rotators.custom import CredentialRefusedError, JsonSecret, ServiceUnavailableError
from rotators.errors import LoginError, SecretFormatError, TargetMismatchError
from rotators.examples.api_key import ApiKeyRotator, ApiKeyUpdater
from rotators.testing.apikeys import ApiKeyService
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import invoke


@pytest.fixture
def service(api_key_service: ApiKeyService, monkeypatch: pytest.MonkeyPatch) -> ApiKeyService:
    """The service, trusted through ROTATORS_CA_BUNDLE as a deployed rotator would trust it."""
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", api_key_service.ca_bundle)
    api_key_service.outage = False
    return api_key_service


def fresh_key(service: ApiKeyService) -> dict[str, Any]:
    key_id, secret = service.create_account()
    return {"endpoint": service.endpoint, "key_id": key_id, "api_key": secret, "owner": "team-a"}


def accepts(service: ApiKeyService) -> Callable[[JsonSecret], bool]:
    return lambda s: service.accepts(s["key_id"], s["api_key"])


# -- the conformance kit ---------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("rotator", [ApiKeyRotator, ApiKeyUpdater], ids=["issuer", "updater"])
def test_both_shapes_conform(
    rotator_conformance: RotatorConformance,
    service: ApiKeyService,
    rotator: type[ApiKeyRotator | ApiKeyUpdater],
    scenario: str,
) -> None:
    rotator_conformance.check(
        rotator, new_secret=lambda: fresh_key(service), accepts=accepts(service), scenarios=[scenario]
    )


# -- where the issuer revokes, seen from the service ------------------------------------------------
@pytest.fixture
def issued(local_sm: LocalSecretsManager, service: ApiKeyService) -> str:
    return local_sm.create_secret(f"api-{service.create_account()[0]}", fresh_key(service))


def key_of(sm: LocalSecretsManager, arn: str, stage: str) -> tuple[str, str]:
    value = sm.value(arn, stage)
    return value["key_id"], value["api_key"]


def test_the_issuer_revokes_in_set_secret_the_key_that_was_previous(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    first = key_of(local_sm, issued, "AWSCURRENT")
    account = service.account_of(first[0])
    invoke(example.handler, issued, local_sm.start_rotation(issued))
    assert service.live_keys(account) == {first[0], key_of(local_sm, issued, "AWSCURRENT")[0]}, (
        "the first rotation revokes nothing: the old key stays valid until the next rotation"
    )
    second = key_of(local_sm, issued, "AWSCURRENT")

    token = local_sm.start_rotation(issued)
    invoke(example.handler, issued, token, "createSecret")
    third = local_sm.value(issued, "AWSPENDING")["key_id"]
    assert service.live_keys(account) == {first[0], second[0], third}, "createSecret only mints"
    del service.requests[:]
    invoke(example.handler, issued, token, "setSecret")
    assert service.live_keys(account) == {second[0], third}, "setSecret revokes the AWSPREVIOUS key"
    assert [(r.method, r.path, r.status) for r in service.requests] == [
        ("GET", "/whoami", 200),
        ("DELETE", f"/keys/{first[0]}", 204),
    ], "the new key is proven before anything is revoked, and it does the revoking"
    assert service.accepts(*second), "the key consumers hold now keeps working"

    invoke(example.handler, issued, token, "setSecret")  # a retry: the revoked key is gone, fine
    assert service.requests[-1].status == 404
    invoke(example.handler, issued, token, "testSecret", "finishSecret")
    assert key_of(local_sm, issued, "AWSPREVIOUS") == second
    assert service.accepts(*second) and service.accepts(*key_of(local_sm, issued, "AWSCURRENT"))
    assert not service.accepts(*first)
    assert service.max_live[account] == 3, "at most three keys live at once during a rotation"


def test_a_secret_edited_by_hand_never_gets_its_current_key_revoked(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    """Editing a field in the console stores a new version with the same key, so AWSPREVIOUS
    and AWSCURRENT hold one key: the next rotation must not revoke it."""
    invoke(example.handler, issued, local_sm.start_rotation(issued))
    edited = {**local_sm.value(issued, "AWSCURRENT"), "owner": "team-b"}
    local_sm.client.put_secret_value(SecretId=issued, SecretString=json.dumps(edited))
    assert key_of(local_sm, issued, "AWSPREVIOUS") == key_of(local_sm, issued, "AWSCURRENT")
    held = key_of(local_sm, issued, "AWSCURRENT")
    invoke(example.handler, issued, local_sm.start_rotation(issued))
    assert key_of(local_sm, issued, "AWSPREVIOUS") == held
    assert service.accepts(*held), "the key consumers held was not revoked"
    assert local_sm.value(issued, "AWSCURRENT")["owner"] == "team-b"


def test_a_service_outage_is_a_typed_error_and_moves_no_label(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    invoke(example.handler, issued, local_sm.start_rotation(issued))
    token = local_sm.start_rotation(issued)
    invoke(example.handler, issued, token, "createSecret")
    labels = local_sm.stages(issued)
    service.outage = True
    with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
        invoke(example.handler, issued, token, "setSecret")
    assert local_sm.stages(issued) == labels
    service.outage = False
    assert service.accepts(*key_of(local_sm, issued, "AWSCURRENT"))
    assert service.accepts(*key_of(local_sm, issued, "AWSPREVIOUS")), "nothing was revoked"
    invoke(example.handler, issued, token, "setSecret", "testSecret", "finishSecret")
    assert service.accepts(*key_of(local_sm, issued, "AWSCURRENT"))


def test_a_current_key_revoked_by_hand_fails_clearly_and_stages_nothing(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    key_id, secret = key_of(local_sm, issued, "AWSCURRENT")
    service.handle("DELETE", f"/keys/{key_id}", secret, b"", None)  # revoked by hand
    token = local_sm.start_rotation(issued)
    labels = local_sm.stages(issued)
    with pytest.raises(CredentialRefusedError, match="put a working key as AWSCURRENT"):
        invoke(example.handler, issued, token, "createSecret")
    assert local_sm.stages(issued) == labels


def test_the_updater_refuses_to_guess_when_no_staged_value_works(
    local_sm: LocalSecretsManager, service: ApiKeyService
) -> None:
    secret = fresh_key(service)
    arn = local_sm.create_secret(f"upd-{secret['key_id']}", secret)
    by_hand = "reset-by-hand-" + "x" * 20
    service.handle(
        "PUT", f"/keys/{secret['key_id']}", secret["api_key"], json.dumps({"secret": by_hand}).encode(), None
    )
    token = local_sm.start_rotation(arn)
    invoke(example.updater_handler, arn, token, "createSecret")
    labels = local_sm.stages(arn)
    with pytest.raises(LoginError, match="changed outside Secrets Manager"):
        invoke(example.updater_handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels
    assert service.accepts(secret["key_id"], by_hand), "the working value was not touched"


def test_a_pending_version_that_points_elsewhere_is_refused_before_any_call(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    token = local_sm.start_rotation(issued)
    current = local_sm.value(issued, "AWSCURRENT")
    evil = {**current, "endpoint": "https://attacker.example", "key_id": "key_evil", "api_key": "sk_" + token}
    local_sm.client.put_secret_value(
        SecretId=issued, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=["AWSPENDING"]
    )
    del service.requests[:]
    with pytest.raises(TargetMismatchError, match="'endpoint'"):
        invoke(example.handler, issued, token, "setSecret")
    assert service.requests == []


def test_plain_http_endpoints_are_refused(local_sm: LocalSecretsManager, service: ApiKeyService) -> None:
    secret = {**fresh_key(service), "endpoint": service.endpoint.replace("https://", "http://")}
    arn = local_sm.create_secret(f"http-{secret['key_id']}", secret)
    with pytest.raises(SecretFormatError, match="not an https:// URL"):
        invoke(example.handler, arn, local_sm.start_rotation(arn), "createSecret")


def test_an_untrusted_certificate_fails_without_changing_anything(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTATORS_CA_BUNDLE")
    account = service.account_of(key_of(local_sm, issued, "AWSCURRENT")[0])
    with pytest.raises(ServiceUnavailableError, match="certificate verify failed"):
        invoke(example.handler, issued, local_sm.start_rotation(issued), "createSecret")
    assert len(service.live_keys(account)) == 1


def test_unknown_keys_are_carried_forward(
    local_sm: LocalSecretsManager, service: ApiKeyService, issued: str
) -> None:
    invoke(example.handler, issued, local_sm.start_rotation(issued))
    assert local_sm.value(issued, "AWSCURRENT")["owner"] == "team-a"


# -- the example as users see it -------------------------------------------------------------------
def test_the_example_is_at_most_40_lines_of_code() -> None:
    path = Path(example.__file__)
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node):
            first = node.body[0]
            docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    code = [
        line
        for number, line in enumerate(source.splitlines(), 1)
        if number not in docstrings and line.strip() and not line.strip().startswith("#")
    ]
    assert len(code) <= 40, f"{len(code)} lines of code"
    assert callable(example.handler) and callable(example.updater_handler)


def test_runtime_modules_import_neither_pytest_nor_moto_nor_the_kit() -> None:
    probe = (
        "import sys, rotators.examples.api_key, rotators.custom, rotators.rotation;"
        "bad = [m for m in ('pytest', 'moto', 'rotators.testing', 'rotators.cli') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, timeout=60)


def readme_section(readme: Path) -> str:
    text = readme.read_text()
    start = text.find("## Write your own rotator")
    if start == -1:
        pytest.skip("README.md has no 'Write your own rotator' section yet: nothing to check")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_shows_the_example_as_shipped_and_it_runs(tmp_path: Path) -> None:
    section = readme_section(Path(__file__).parents[2] / "README.md")
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    source = Path(example.__file__).read_text()
    after_docstring = source.splitlines()[ast.parse(source).body[0].end_lineno or 0 :]
    assert blocks[0].strip() == "\n".join(after_docstring).strip(), "the README's copy of the example"
    script = tmp_path / "try_api_key.py"
    script.write_text(blocks[1])
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = re.findall(r"^(AWSCURRENT|AWSPREVIOUS|first key) key_\w+ works: (True|False)$", done.stdout, re.M)
    assert shown == [("AWSCURRENT", "True"), ("AWSPREVIOUS", "True"), ("first key", "False")]
