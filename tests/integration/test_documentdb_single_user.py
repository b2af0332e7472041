"""Single-user rotation against a real MongoDB-wire server (SecantusDB: SCRAM, TLS) and moto over HTTP.

MongoDB lets a user change its own password only with the `changeOwnPassword` action, which no
built-in role grants; the tests give it through a custom role, as a MongoDB admin would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rotators.engines.documentdb import DocumentDBRotator, handler
from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.testing.secantus import SecantusFactory, SecantusServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import MongoAdmin, Watched, invoke, mongo_secret

SELF_SERVICE = {"role": "rotatorsChangeOwnPassword", "db": "admin"}


@pytest.fixture(scope="module")
def _self_service_role(mongo: SecantusServer) -> None:
    MongoAdmin(mongo).command(
        "createRole",
        SELF_SERVICE["role"],
        privileges=[
            {"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword", "viewUser"]}
        ],
        roles=[],
    )


def app_roles() -> list[dict[str, str]]:
    return [{"role": "readWrite", "db": "orders"}, SELF_SERVICE]


@pytest.fixture
def secret(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
    _self_service_role: None,
) -> str:
    """A secret created by 'someone else's script': plain boto3, a user made by the admin."""
    password = new_password()
    mongo_admin.create_user(role_name, password, app_roles())
    return mongo_sm.create_secret(role_name, mongo_secret(mongo, role_name, password, owner="team-a"))


def assert_rotated(
    sm: LocalSecretsManager, admin: MongoAdmin, arn: str, old_password: str, mechanism: str | None = None
) -> None:
    stages = sm.stages(arn)
    assert sorted(stages.values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]], (
        "exactly one current and one previous"
    )
    current, previous = sm.value(arn, "AWSCURRENT"), sm.value(arn, "AWSPREVIOUS")
    assert previous["password"] == old_password
    assert current["password"] != old_password
    assert admin.logs_in(current["username"], current["password"], mechanism)
    assert not admin.logs_in(current["username"], old_password, mechanism)


def test_rotation_changes_the_password_and_moves_the_labels(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str
) -> None:
    before = mongo_sm.value(secret, "AWSCURRENT")
    invoke(handler, secret, mongo_sm.start_rotation(secret))

    assert_rotated(mongo_sm, mongo_admin, secret, before["password"])
    after = mongo_sm.value(secret, "AWSCURRENT")
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }
    assert after["owner"] == "team-a", "unknown keys are carried into the new version"
    user = mongo_admin.user(after["username"])
    assert user is not None
    assert user["mechanisms"] == ["SCRAM-SHA-256"], "the user keeps its mechanisms"
    assert user["roles"] == app_roles(), "and its roles"


def test_two_rotations_in_a_row(mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str) -> None:
    for _ in range(2):
        before = mongo_sm.value(secret, "AWSCURRENT")["password"]
        invoke(handler, secret, mongo_sm.start_rotation(secret))
        assert_rotated(mongo_sm, mongo_admin, secret, before)


def test_every_step_repeated_is_harmless(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str
) -> None:
    before = mongo_sm.value(secret, "AWSCURRENT")["password"]
    token = mongo_sm.start_rotation(secret)
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        invoke(handler, secret, token, step)
        invoke(handler, secret, token, step)
    assert_rotated(mongo_sm, mongo_admin, secret, before)


def test_crash_after_set_then_full_retry_with_the_same_token(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str
) -> None:
    before = mongo_sm.value(secret, "AWSCURRENT")["password"]
    token = mongo_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret")
    invoke(handler, secret, token)  # Secrets Manager retries the whole rotation with the same token
    assert_rotated(mongo_sm, mongo_admin, secret, before)


def test_abandoned_rotation_with_another_token(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str
) -> None:
    before = mongo_sm.value(secret, "AWSCURRENT")["password"]
    abandoned = mongo_sm.start_rotation(secret)
    invoke(handler, secret, abandoned, "createSecret")
    invoke(handler, secret, mongo_sm.start_rotation(secret))
    assert_rotated(mongo_sm, mongo_admin, secret, before)
    labels = mongo_sm.stages(secret)
    with pytest.raises(VersionStageError, match="not AWSPENDING"):
        invoke(handler, secret, abandoned, "setSecret")
    assert mongo_sm.stages(secret) == labels


def test_recovers_through_previous_after_a_half_finished_rotation(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, secret: str
) -> None:
    invoke(handler, secret, mongo_sm.start_rotation(secret))
    previous = mongo_sm.value(secret, "AWSPREVIOUS")
    mongo_admin.set_password(previous["username"], previous["password"])
    invoke(handler, secret, mongo_sm.start_rotation(secret))
    current = mongo_sm.value(secret, "AWSCURRENT")
    assert mongo_admin.logs_in(current["username"], current["password"])


def test_password_changed_behind_our_back_fails_clearly_and_moves_nothing(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    secret: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    user = mongo_sm.value(secret, "AWSCURRENT")["username"]
    by_hand = new_password()
    leak_check.add(by_hand)
    mongo_admin.set_password(user, by_hand)
    token = mongo_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    labels = mongo_sm.stages(secret)
    with pytest.raises(LoginError, match="No staged version"):
        invoke(handler, secret, token, "setSecret")
    assert mongo_sm.stages(secret) == labels
    assert mongo_admin.logs_in(user, by_hand), "the working password was not touched"


def test_server_down_during_set_raises_and_the_retry_succeeds(
    mongo_sm: LocalSecretsManager,
    own_mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")  # pymongo waits this long for a server to appear
    admin = MongoAdmin(own_mongo)
    password = new_password()
    admin.command(
        "createRole",
        SELF_SERVICE["role"],
        privileges=[{"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword"]}],
        roles=[],
    )
    admin.create_user(role_name, password, app_roles())
    arn = mongo_sm.create_secret(role_name, mongo_secret(own_mongo, role_name, password))
    token = mongo_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mongo_sm.stages(arn)

    own_mongo.stop(crash=True)
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect"):
        invoke(handler, arn, token, "setSecret")
    assert mongo_sm.stages(arn) == labels, "a failed step moves no label"

    own_mongo.start()
    assert admin.logs_in(role_name, password), "the old password still works after the failure"
    invoke(handler, arn, token, "setSecret", "testSecret", "finishSecret")
    assert_rotated(mongo_sm, admin, arn, password)


def test_a_user_that_may_not_read_its_own_record_still_rotates(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MongoDB always shows users their own record; where a server does not, updateUser goes
    without the mechanisms list rather than failing."""
    mongo_admin.command(
        "createRole",
        f"own_{role_name}",
        privileges=[{"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword"]}],
        roles=[],
    )
    password = new_password()
    mongo_admin.create_user(role_name, password, [{"role": f"own_{role_name}", "db": "admin"}])
    arn = mongo_sm.create_secret(role_name, mongo_secret(mongo, role_name, password))
    invoke(handler, arn, mongo_sm.start_rotation(arn))
    assert_rotated(mongo_sm, mongo_admin, arn, password)
    assert any("no viewUser" in r.getMessage() for r in caplog.records), "the fallback path ran"


@pytest.mark.parametrize("name", ["App User", "o'neil\"x", "ünïcode-名前", "a.b$c"])
def test_user_names_need_no_quoting_and_rotate(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    name: str,
    role_name: str,
    new_password: Callable[[], str],
    _self_service_role: None,
) -> None:
    """User names travel as BSON strings, never spliced into a command text."""
    user = f"{name}_{role_name[-6:]}"
    password = new_password()
    mongo_admin.create_user(user, password, app_roles())
    arn = mongo_sm.create_secret(role_name, mongo_secret(mongo, user, password))
    invoke(handler, arn, mongo_sm.start_rotation(arn))
    assert_rotated(mongo_sm, mongo_admin, arn, password)


def test_scram_sha_1_user_keeps_scram_sha_1(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
    _self_service_role: None,
) -> None:
    """DocumentDB's default: a SCRAM-SHA-1 user, named as such in the secret."""
    password = new_password()
    mongo_admin.create_user(role_name, password, app_roles(), mechanisms=["SCRAM-SHA-1"])
    arn = mongo_sm.create_secret(
        role_name, mongo_secret(mongo, role_name, password, authMechanism="SCRAM-SHA-1")
    )
    invoke(handler, arn, mongo_sm.start_rotation(arn))
    assert_rotated(mongo_sm, mongo_admin, arn, password, mechanism="SCRAM-SHA-1")
    user = mongo_admin.user(role_name)
    assert user is not None
    assert user["mechanisms"] == ["SCRAM-SHA-1"]


def test_documentdb_dialect_rotates(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, mongo: SecantusServer, secret: str
) -> None:
    """`"engine": "documentdb"`: retryWrites off, no MongoDB-only options, a CA bundle by path."""
    current = mongo_sm.value(secret, "AWSCURRENT")
    mongo_sm.client.put_secret_value(
        SecretId=secret, SecretString=json.dumps({**current, "engine": "documentdb"})
    )
    invoke(handler, secret, mongo_sm.start_rotation(secret))
    assert_rotated(mongo_sm, mongo_admin, secret, current["password"])
    assert mongo_sm.value(secret, "AWSCURRENT")["engine"] == "documentdb"


def test_tls_is_used_by_default(mongo_sm: LocalSecretsManager, mongo: SecantusServer, secret: str) -> None:
    """The shared server speaks TLS only; a secret without `ssl` logs in over verified TLS."""
    rotator = DocumentDBRotator()
    value = {k: v for k, v in mongo_sm.value(secret, "AWSCURRENT").items() if k != "ssl"}
    current = rotator.parse(json.dumps(value), where="test")
    assert rotator.client_options(current, current.username, current.password)["tls"] is True
    with rotator.connect(current, current.username, current.password) as conn:
        rotator.probe(conn, current.username)


def test_a_certificate_that_does_not_verify_fails_without_plaintext_fallback(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(stranger.cert_path))
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    token = mongo_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    with pytest.raises(DatabaseUnavailableError, match="certificate verify failed"):
        invoke(handler, secret, token, "setSecret")
    current = mongo_sm.value(secret, "AWSCURRENT")
    assert mongo_admin.logs_in(current["username"], current["password"]), "nothing changed"


@pytest.fixture(scope="module")
def plain_mongo(secantus_factory: SecantusFactory) -> SecantusServer:
    return secantus_factory.start(tls=False)


def test_plaintext_only_when_the_secret_says_so(
    mongo_sm: LocalSecretsManager,
    plain_mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    admin = MongoAdmin(plain_mongo)
    admin.command(
        "createRole",
        f"own_{role_name}",
        privileges=[{"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword"]}],
        roles=[],
    )
    password = new_password()
    admin.create_user(role_name, password, [{"role": f"own_{role_name}", "db": "admin"}])
    unsaid = {k: v for k, v in mongo_secret(plain_mongo, role_name, password).items() if k != "ssl"}
    silent = mongo_sm.create_secret(role_name, unsaid)
    token = mongo_sm.start_rotation(silent)
    invoke(handler, silent, token, "createSecret")
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect"):
        invoke(handler, silent, token, "setSecret")
    assert admin.logs_in(role_name, password), "no plaintext fallback: nothing changed"

    explicit = mongo_sm.create_secret(
        f"{role_name}-plain", mongo_secret(plain_mongo, role_name, password, ssl=False)
    )
    invoke(handler, explicit, mongo_sm.start_rotation(explicit))
    assert_rotated(mongo_sm, admin, explicit, password)


def test_pending_that_points_at_another_server_is_refused(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, mongo: SecantusServer, secret: str
) -> None:
    token = mongo_sm.start_rotation(secret)
    current = mongo_sm.value(secret, "AWSCURRENT")
    evil = {**current, "host": "localhost", "port": mongo.port + 1, "password": "Evil-" + token}
    mongo_sm.client.put_secret_value(
        SecretId=secret, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=["AWSPENDING"]
    )
    with pytest.raises(TargetMismatchError, match="another server"):
        invoke(handler, secret, token, "setSecret")
    assert mongo_admin.logs_in(current["username"], current["password"])


def test_another_engines_secret_is_a_typed_error(
    mongo_sm: LocalSecretsManager, mongo: SecantusServer, role_name: str
) -> None:
    arn = mongo_sm.create_secret(
        role_name, {"engine": "postgres", "host": mongo.host, "username": "u", "password": "Pg-Pass-1"}
    )
    token = mongo_sm.start_rotation(arn)
    labels = mongo_sm.stages(arn)
    with pytest.raises(SecretFormatError, match="engine 'postgres'"):
        invoke(handler, arn, token, "createSecret")
    assert mongo_sm.stages(arn) == labels


def test_rotators_check_passes_a_good_secret_and_changes_nothing(
    mongo_sm: LocalSecretsManager, secret: str, leak_check: Watched
) -> None:
    from rotators.cli import main

    before = mongo_sm.stages(secret)
    assert main(["check", "--secret-id", secret]) == 0
    table = leak_check.read_output()
    assert "FAIL" not in table
    assert "TLS (sslmode=verify-full, certificate verified, MongoDB)" in table
    assert mongo_sm.stages(secret) == before
