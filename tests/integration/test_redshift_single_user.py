"""Single-user Redshift rotation: the real engine and redshift-connector, against the throwaway
PostgreSQL (SCRAM, TLS) through the test-only shims of tests/redshift_shims.py.

What runs here is the SQL Redshift shares with PostgreSQL (`ALTER USER ... PASSWORD`, the
probe). What only a real Redshift can confirm is listed in test_redshift_live.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redshift_connector

from rotators.engines.redshift import handler, password_problems
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    VersionStageError,
)
from rotators.testing.postgres import PostgresFactory, PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Admin, Watched, invoke, redshift_secret
from tests.redshift_shims import StartupParameterProxy

pytestmark = pytest.mark.usefixtures("redshift_shims")


@pytest.fixture
def secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    password = new_password()
    admin.create_role(role_name, password)
    return local_sm.create_secret(role_name, redshift_secret(redshift_proxy, role_name, password, owner="bi"))


def assert_rotated(sm: LocalSecretsManager, admin: Admin, arn: str, old_password: str) -> None:
    assert sorted(sm.stages(arn).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    current, previous = sm.value(arn, "AWSCURRENT"), sm.value(arn, "AWSPREVIOUS")
    assert previous["password"] == old_password
    assert current["password"] != old_password
    assert password_problems(current["password"]) == [], "the new password meets Redshift's rules"
    assert admin.logs_in(current["username"], current["password"])
    assert not admin.logs_in(current["username"], old_password)


def test_rotation_through_redshift_connector(
    local_sm: LocalSecretsManager, admin: Admin, redshift_proxy: StartupParameterProxy, secret: str
) -> None:
    before = local_sm.value(secret, "AWSCURRENT")
    seen = len(redshift_proxy.client_tls)
    invoke(handler, secret, local_sm.start_rotation(secret))

    assert_rotated(local_sm, admin, secret, before["password"])
    after = local_sm.value(secret, "AWSCURRENT")
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }
    assert len(after["password"]) == 32
    assert redshift_proxy.client_tls[seen:] and all(redshift_proxy.client_tls[seen:]), "TLS by default"
    assert "driver_version" in redshift_proxy.dropped, "the driver really was redshift-connector"


def test_two_rotations_and_every_step_repeated(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    invoke(handler, secret, local_sm.start_rotation(secret))
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    token = local_sm.start_rotation(secret)
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        invoke(handler, secret, token, step)
        invoke(handler, secret, token, step)
    assert_rotated(local_sm, admin, secret, before)


def test_crash_after_set_then_full_retry(local_sm: LocalSecretsManager, admin: Admin, secret: str) -> None:
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret")
    invoke(handler, secret, token)
    assert_rotated(local_sm, admin, secret, before)


def test_abandoned_rotation_with_another_token(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    before = local_sm.value(secret, "AWSCURRENT")["password"]
    abandoned = local_sm.start_rotation(secret)
    invoke(handler, secret, abandoned, "createSecret")
    invoke(handler, secret, local_sm.start_rotation(secret))
    assert_rotated(local_sm, admin, secret, before)
    labels = local_sm.stages(secret)
    with pytest.raises(VersionStageError, match="not AWSPENDING"):
        invoke(handler, secret, abandoned, "setSecret")
    assert local_sm.stages(secret) == labels


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
    assert admin.logs_in(user, by_hand)


@pytest.fixture
def own_proxy(
    own_pg: PostgresServer, pg_factory: PostgresFactory, tmp_path: Path
) -> Iterator[StartupParameterProxy]:
    proxy = StartupParameterProxy(own_pg.host, own_pg.port, pg_factory.ca, tmp_path / "proxy")
    yield proxy
    proxy.close()


def test_server_stopped_during_set_raises_and_the_retry_succeeds(
    local_sm: LocalSecretsManager,
    own_pg: PostgresServer,
    own_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    admin = Admin(own_pg)
    password = new_password()
    admin.create_role(role_name, password)
    arn = local_sm.create_secret(role_name, redshift_secret(own_proxy, role_name, password))
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = local_sm.stages(arn)

    own_pg.stop()
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect to Redshift"):
        invoke(handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels

    own_pg.start()
    assert admin.logs_in(role_name, password)
    invoke(handler, arn, token, "setSecret", "testSecret", "finishSecret")
    assert_rotated(local_sm, admin, arn, password)


@pytest.mark.parametrize("name", ["O'Neil", 'we"ird', "with space", "MixedCase", "select"])
def test_user_names_that_need_quoting(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    name: str,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    user = f"{name}_{role_name[-6:]}" if name != "select" else "select"
    password = new_password()
    if user == "select":
        admin.sql('DROP ROLE IF EXISTS "select"')
    admin.create_role(user, password)
    arn = local_sm.create_secret(role_name, redshift_secret(redshift_proxy, user, password))
    invoke(handler, arn, local_sm.start_rotation(arn))
    assert_rotated(local_sm, admin, arn, password)


def test_a_certificate_that_does_not_verify_fails_without_plaintext_fallback(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(stranger.cert_path))
    token = local_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    labels, seen = local_sm.stages(secret), len(redshift_proxy.client_tls)
    with pytest.raises(DatabaseUnavailableError, match="certificate verify failed"):
        invoke(handler, secret, token, "setSecret")
    assert local_sm.stages(secret) == labels
    assert all(redshift_proxy.client_tls[seen:]), "no plaintext attempt followed"
    current = local_sm.value(secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])


def test_plaintext_only_when_the_secret_says_so(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    password = new_password()
    admin.create_role(role_name, password)
    arn = local_sm.create_secret(role_name, redshift_secret(redshift_proxy, role_name, password, ssl=False))
    seen = len(redshift_proxy.client_tls)
    invoke(handler, arn, local_sm.start_rotation(arn))
    assert_rotated(local_sm, admin, arn, password)
    assert redshift_proxy.client_tls[seen:] and not any(redshift_proxy.client_tls[seen:])


def test_a_pending_password_that_breaks_the_rules_is_refused_before_use(
    local_sm: LocalSecretsManager, admin: Admin, secret: str
) -> None:
    token = local_sm.start_rotation(secret)
    current = local_sm.value(secret, "AWSCURRENT")
    staged = {**current, "password": "no-upper-case-1"}
    local_sm.client.put_secret_value(
        SecretId=secret,
        ClientRequestToken=token,
        SecretString=json.dumps(staged),
        VersionStages=["AWSPENDING"],
    )
    with pytest.raises(SecretFormatError, match="an upper case letter"):
        invoke(handler, secret, token, "setSecret")
    assert admin.logs_in(current["username"], current["password"])


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PASSWORD_LENGTH", "65", "between 8 and 64"),
        ("EXCLUDE_NUMBERS", "true", "digits"),
        ("REQUIRE_EACH_INCLUDED_TYPE", "false", "must stay true"),
    ],
)
def test_a_policy_redshift_would_refuse_stages_nothing(
    local_sm: LocalSecretsManager,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    token = local_sm.start_rotation(secret)
    labels = local_sm.stages(secret)
    with pytest.raises(ConfigurationError, match=message):
        invoke(handler, secret, token, "createSecret")
    assert local_sm.stages(secret) == labels


def test_excluded_characters_keep_redshifts_forbidden_ones(
    local_sm: LocalSecretsManager, admin: Admin, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "%")
    monkeypatch.setenv("PASSWORD_LENGTH", "64")
    invoke(handler, secret, local_sm.start_rotation(secret))
    password = local_sm.value(secret, "AWSCURRENT")["password"]
    assert len(password) == 64 and "%" not in password and password_problems(password) == []


def test_another_engines_secret_is_refused(
    local_sm: LocalSecretsManager, redshift_proxy: StartupParameterProxy, role_name: str
) -> None:
    arn = local_sm.create_secret(
        role_name, {**redshift_secret(redshift_proxy, "u", "Some-Pass-1"), "engine": "postgres"}
    )
    with pytest.raises(SecretFormatError, match="engine 'postgres'"):
        invoke(handler, arn, local_sm.start_rotation(arn), "createSecret")


# -- the shims are what make this possible (and nothing more) ----------------------------------------
def test_without_the_proxy_postgresql_refuses_the_redshift_startup_parameters(
    pg: PostgresServer,
    pg_factory: PostgresFactory,
    admin: Admin,
    role_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin.create_role(role_name, "Direct-Pass-1")
    monkeypatch.setenv("SSL_CERT_FILE", str(pg_factory.ca.cert_path))
    with pytest.raises(redshift_connector.ProgrammingError, match="unrecognized configuration parameter"):
        redshift_connector.connect(
            host=pg.host, port=pg.port, database="postgres", user=role_name, password="Direct-Pass-1",
            sslmode="verify-full", timeout=5,
        )  # fmt: skip
