"""The conformance kit must fail rotators that break the contract, each with a message that says why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rotators.custom import JsonSecret, RotationContext
from rotators.examples.api_key import ApiKeyRotator, ApiKeyUpdater
from rotators.log import logger
from rotators.testing.apikeys import ApiKeyService
from rotators.testing.conformance import RotatorConformance

pytest_plugins = ["pytester"]


@pytest.fixture
def service(api_key_service: ApiKeyService, monkeypatch: pytest.MonkeyPatch) -> ApiKeyService:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", api_key_service.ca_bundle)
    api_key_service.outage = False
    return api_key_service


def fresh(service: ApiKeyService) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        key_id, secret = service.create_account()
        return {"endpoint": service.endpoint, "key_id": key_id, "api_key": secret}

    return make


def accepts(service: ApiKeyService) -> Callable[[JsonSecret], bool]:
    return lambda s: service.accepts(s["key_id"], s["api_key"])


class NeverRevokes(ApiKeyRotator):
    def revoke(self, login: JsonSecret, key_id: str) -> None:
        pass


class ForgetsTheToken(ApiKeyRotator):
    """Mints without an idempotency key: a retry after a crash mints a second key."""

    def issue(self, login: JsonSecret, token: str) -> tuple[str, str]:
        return super().issue(login, f"{token}-{id(object())}")


class LogsTheKey(ApiKeyRotator):
    def issue(self, login: JsonSecret, token: str) -> tuple[str, str]:
        key_id, secret = super().issue(login, token)
        logger.debug(f"minted {key_id}: {secret}")
        return key_id, secret


class SetsOnlyWithCurrent(ApiKeyUpdater):
    """No fallback: once the service holds the new value, a retried setSecret cannot log in."""

    def set_pending(self, ctx: RotationContext[JsonSecret]) -> None:
        self.update(ctx.current, ctx.pending)


@pytest.mark.parametrize(
    ("rotator", "scenario", "message"),
    [
        (NeverRevokes, "two_rotations", r"\[two_rotations\] after rotation 2, version .* still works: "
         "a value no label holds must not work"),
        (ForgetsTheToken, "crash_and_retry", "never stored still works: .*idempotency key"),
        (LogsTheKey, "two_rotations", r"\[no_secret_in_logs\] \d+ secret value"),
        (SetsOnlyWithCurrent, "crash_and_retry", r"\[crash_and_retry\] setSecret failed: "
         "CredentialRefusedError: PUT .* refused"),
    ],
)  # fmt: skip
def test_the_kit_fails_a_broken_rotator(
    rotator_conformance: RotatorConformance,
    service: ApiKeyService,
    rotator: type[ApiKeyRotator | ApiKeyUpdater],
    scenario: str,
    message: str,
) -> None:
    with pytest.raises(AssertionError, match=message) as failure:
        rotator_conformance.check(
            rotator, new_secret=fresh(service), accepts=accepts(service), scenarios=[scenario]
        )
    assert "sk_" not in str(failure.value), "the kit's own message names no key"


@pytest.mark.parametrize(
    ("rotator", "keeps_previous", "message"),
    [
        (ApiKeyUpdater, True, r"AWSPREVIOUS .* does not work"),
        (ApiKeyRotator, False, "still works: declare keeps_previous=True"),
    ],
    ids=["updater-says-it-keeps", "issuer-says-it-does-not"],
)
def test_a_wrong_keeps_previous_is_caught(
    rotator_conformance: RotatorConformance,
    service: ApiKeyService,
    rotator: type[ApiKeyRotator | ApiKeyUpdater],
    keeps_previous: bool,
    message: str,
) -> None:
    with pytest.raises(AssertionError, match=message):
        rotator_conformance.check(
            rotator,
            new_secret=fresh(service),
            accepts=accepts(service),
            keeps_previous=keeps_previous,
            scenarios=["two_rotations"],
        )


def test_keeps_previous_must_be_said_for_a_plain_rotator(rotator_conformance: RotatorConformance) -> None:
    from rotators.engines.postgresql import PostgreSQLRotator

    with pytest.raises(TypeError, match="keeps_previous=True or False"):
        rotator_conformance.check(PostgreSQLRotator, new_secret=dict, accepts=lambda s: True)


def test_the_kit_leaves_the_rotator_as_it_found_it(
    rotator_conformance: RotatorConformance, service: ApiKeyService
) -> None:
    rotator = ApiKeyRotator()
    rotator_conformance.check(
        rotator, new_secret=fresh(service), accepts=accepts(service), scenarios=["crash_and_retry"]
    )
    assert "make_pending" not in vars(rotator) and "move_stage" not in vars(rotator.store)


USER_CONFTEST = 'pytest_plugins = ["rotators.testing.conformance"]\n'
USER_TEST = """
import pytest
from rotators.examples.api_key import ApiKeyRotator
from rotators.testing.apikeys import ApiKeyService


@pytest.fixture
def service(monkeypatch):
    service = ApiKeyService()
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", service.ca_bundle)
    yield service
    service.close()


def test_api_key_rotator(rotator_conformance, service):
    def new_secret():
        key_id, api_key = service.create_account()
        return {"endpoint": service.endpoint, "key_id": key_id, "api_key": api_key}

    rotator_conformance.check(
        ApiKeyRotator,
        new_secret=new_secret,
        accepts=lambda s: service.accepts(s["key_id"], s["api_key"]),
    )
"""


def test_a_user_project_needs_only_the_plugin_line(pytester: pytest.Pytester) -> None:
    """The README's few lines, in a project that has none of this suite's fixtures."""
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
