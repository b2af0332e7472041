"""Single-user rotation against a real PostgreSQL server (SCRAM, TLS) and moto over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rotators.engines.postgresql import PostgreSQLRotator, handler
from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Admin, Watched, invoke, pg_secret


@pytest.fixture
def secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """A secret created by 'someone else's script': plain boto3, a role made by the admin."""
    password = new_password()
    admin.create_role(role_name, password)
    return local_sm.create_secret(role_name, pg_secret(pg, role_name, password, owner="team-a"))


def assert_rotated(sm: LocalSecretsManager, admin: Admin, arn: str, old_password: str) -> None:
    stages = sm.stages(arn)
    assert sorted(stages.values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]], (
        "exactly one current and one previous"
    )
    current, previous = sm.value(arn, "AWSCURRENT"), sm.value(arn, "AWSPREVIOUS")
    assert previous["password"] == old_password
    assert current["password"] != old_password
    assert admin.logs_in(current["username"], current["password"])
    assert not admin.logs_in(current["username"], old_password)


def test_rotation_changes_the_password_and_moves_the_labels(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    before = local_sm.value(secret, "AWSCURRENT")
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token)

    assert_rotated(local_sm, admin, secret, before["password"])
    after = local_sm.value(secret, "AWSCURRENT")
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }
    assert after["owner"] == "team-a", "unknown keys are carried into the new version"


def test_two_rotations_in_a_row(local_sm: LocalSecretsManager, admin: Admin, secret: str) -> None:
    for _ in range(2):
        before = local_sm.value(secret, "AWSCURRENT")["password"]
        invoke(handler, secret, local_sm.start_rotation(secret))
        assert_rotated(local_sm, admin, secret, before)


def test_every_step_repeated_is_harmless(local_sm: LocalSecretsManager, admin: Admin, secret: str) -> None:
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    token = local_sm.start_rotation(secret)
    for step in (
        "createSecret",
        "createSecret",
        "setSecret",
        "setSecret",
        "testSecret",
        "testSecret",
        "finishSecret",
        "finishSecret",
    ):
        invoke(handler, secret, token, step)
    assert_rotated(local_sm, admin, secret, before)


def test_repeated_create_keeps_the_first_pending_value(local_sm: LocalSecretsManager, secret: str) -> None:
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    first = local_sm.value(secret, "AWSPENDING")
    invoke(handler, secret, token, "createSecret")
    assert local_sm.value(secret, "AWSPENDING") == first


def test_crash_after_set_then_full_retry_with_the_same_token(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    """The database already has the pending password: AWSCURRENT no longer logs in, and
    setSecret must see that the pending value is applied instead of failing."""
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret")
    # the process died here; Secrets Manager retries the whole rotation with the same token
    invoke(handler, secret, token)
    assert_rotated(local_sm, admin, secret, before)


def test_abandoned_rotation_with_another_token(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    abandoned = local_sm.start_rotation(secret)
    invoke(handler, secret, abandoned, "createSecret")
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token)
    assert_rotated(local_sm, admin, secret, before)
    labels = local_sm.stages(secret)
    with pytest.raises(VersionStageError, match="not AWSPENDING"):
        invoke(handler, secret, abandoned, "setSecret")
    assert local_sm.stages(secret) == labels, "a stale token moves nothing"


def test_recovers_through_previous_after_a_half_finished_rotation(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    """The database still has the AWSPREVIOUS password (e.g. restored from a snapshot):
    setSecret logs in with it instead of locking the user out."""
    invoke(handler, secret, local_sm.start_rotation(secret))
    previous = local_sm.value(secret, "AWSPREVIOUS")
    admin.set_password(previous["username"], previous["password"])
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token)
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])


def test_password_changed_behind_our_back_fails_clearly_and_moves_nothing(
    local_sm: LocalSecretsManager,
    admin: Admin,
    secret: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    user = local_sm.value(secret, "AWSCURRENT")["username"]
    by_hand = new_password()
    leak_check.add(by_hand)
    admin.set_password(user, by_hand)
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    labels = local_sm.stages(secret)
    with pytest.raises(LoginError, match="No staged version"):
        invoke(handler, secret, token, "setSecret")
    assert local_sm.stages(secret) == labels
    assert admin.logs_in(user, by_hand), "the working password was not touched"


def test_server_down_during_set_raises_and_the_retry_succeeds(
    local_sm: LocalSecretsManager, own_pg: PostgresServer, role_name: str, new_password: Callable[[], str]
) -> None:
    admin = Admin(own_pg)
    password = new_password()
    admin.create_role(role_name, password)
    arn = local_sm.create_secret(role_name, pg_secret(own_pg, role_name, password))
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = local_sm.stages(arn)

    own_pg.stop()
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect"):
        invoke(handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels, "a failed step moves no label"

    own_pg.start()
    assert admin.logs_in(role_name, password), "the old password still works after the failure"
    invoke(handler, arn, token, "setSecret", "testSecret", "finishSecret")
    assert_rotated(local_sm, admin, arn, password)


@pytest.mark.parametrize("name", ["App-User", "MixedCase", 'we"ird', "with space"])
def test_role_names_that_need_quoting(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    name: str,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    user = f"{name}_{role_name[-6:]}"
    password = new_password()
    admin.create_role(user, password)
    arn = local_sm.create_secret(role_name, pg_secret(pg, user, password))
    invoke(handler, arn, local_sm.start_rotation(arn))
    assert_rotated(local_sm, admin, arn, password)


def test_tls_is_used_by_default(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, secret: str
) -> None:
    rotator = PostgreSQLRotator()
    current = rotator.parse(local_sm.client.get_secret_value(SecretId=secret)["SecretString"], where="test")
    with rotator.connect(current, current.username, current.password) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_a_certificate_that_does_not_verify_fails_without_plaintext_fallback(
    local_sm: LocalSecretsManager, admin: Admin, secret: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(stranger.cert_path))
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    with pytest.raises(DatabaseUnavailableError, match="certificate verify failed"):
        invoke(handler, secret, token, "setSecret")
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"]), "nothing changed"


def test_plaintext_only_when_the_secret_says_so(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    password = new_password()
    admin.create_role(role_name, password)
    arn = local_sm.create_secret(role_name, pg_secret(pg, role_name, password, ssl=False))
    invoke(handler, arn, local_sm.start_rotation(arn))
    assert_rotated(local_sm, admin, arn, password)
    current = local_sm.value(arn, "AWSCURRENT")
    assert current["ssl"] is False


def test_pending_that_points_at_another_server_is_refused(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, secret: str
) -> None:
    token = local_sm.start_rotation(secret)
    current = local_sm.value(secret, "AWSCURRENT")
    evil = {**current, "host": "localhost", "port": pg.port + 1, "password": "Evil-" + token}
    local_sm.client.put_secret_value(
        SecretId=secret, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=["AWSPENDING"]
    )
    invoke(handler, secret, token, "createSecret")  # keeps the staged value, as a retry would
    with pytest.raises(TargetMismatchError, match="another server"):
        invoke(handler, secret, token, "setSecret")
    assert admin.logs_in(current["username"], current["password"])


def test_bad_secret_is_a_typed_error_and_stages_nothing(
    local_sm: LocalSecretsManager, pg: PostgresServer, role_name: str
) -> None:
    arn = local_sm.create_secret(
        role_name, {"engine": "mysql", "host": pg.host, "username": "u", "password": "Mysql-Pass-1"}
    )
    token = local_sm.start_rotation(arn)
    labels = local_sm.stages(arn)
    with pytest.raises(SecretFormatError, match="engine 'mysql'"):
        invoke(handler, arn, token, "createSecret")
    assert local_sm.stages(arn) == labels


def test_not_json_secret_is_a_typed_error(local_sm: LocalSecretsManager, role_name: str) -> None:
    arn = local_sm.client.create_secret(Name=role_name, SecretString="Plain-Password-Only")["ARN"]
    token = local_sm.start_rotation(arn)
    with pytest.raises(SecretFormatError, match="not valid JSON"):
        invoke(handler, arn, token, "createSecret")


def test_only_a_scram_verifier_reaches_the_server(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, secret: str
) -> None:
    """The server logs every statement here (log_statement=all): the new password must not be in it."""
    invoke(handler, secret, local_sm.start_rotation(secret))
    current = local_sm.value(secret, "AWSCURRENT")
    stored = admin.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (current["username"],))
    assert stored[0][0].startswith("SCRAM-SHA-256$4096:")
    log = pg.log_path.read_text(errors="replace")
    assert f'ALTER ROLE "{current["username"]}" WITH PASSWORD \'SCRAM-SHA-256$' in log
    assert current["password"] not in log
