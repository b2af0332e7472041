"""Single-user rotation against a real MariaDB server (password auth, TLS) and moto over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from rotators.engines.mysql import MySQLRotator, handler
from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.testing.mariadb import MariaDBFactory, MariaDBServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import MariaDBAdmin, Watched, invoke, mysql_secret


@pytest.fixture
def secret(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """An application account at the host part a local login matches, with a database of its own."""
    password = new_password()
    mariadb_admin.sql(f"CREATE DATABASE `{role_name}`")
    mariadb_admin.create_user(role_name, password, f"SELECT, INSERT ON `{role_name}`.*")
    return mysql_sm.create_secret(role_name, mysql_secret(mariadb, role_name, password, owner="team-a"))


def assert_rotated(sm: LocalSecretsManager, admin: MariaDBAdmin, arn: str, old_password: str) -> None:
    stages = sm.stages(arn)
    assert sorted(stages.values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]], (
        "exactly one current and one previous"
    )
    current, previous = sm.value(arn, "AWSCURRENT"), sm.value(arn, "AWSPREVIOUS")
    assert previous["password"] == old_password
    assert current["password"] != old_password
    assert admin.logs_in(current["username"], current["password"])
    assert not admin.logs_in(current["username"], old_password)


def password_hash(admin: MariaDBAdmin, user: str, host: str) -> str:
    rows = admin.sql(
        "SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = %s", (user, host)
    )
    return str(rows[0][0])


def test_rotation_changes_the_password_and_moves_the_labels(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, secret: str
) -> None:
    before = mysql_sm.value(secret, "AWSCURRENT")
    invoke(handler, secret, mysql_sm.start_rotation(secret))

    assert_rotated(mysql_sm, mariadb_admin, secret, before["password"])
    after = mysql_sm.value(secret, "AWSCURRENT")
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }, "unknown keys such as 'owner' are carried into the new version"


def test_two_rotations_in_a_row(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, secret: str
) -> None:
    for _ in range(2):
        before = mysql_sm.value(secret, "AWSCURRENT")["password"]
        invoke(handler, secret, mysql_sm.start_rotation(secret))
        assert_rotated(mysql_sm, mariadb_admin, secret, before)


def test_every_step_repeated_is_harmless(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, secret: str
) -> None:
    before = mysql_sm.value(secret, "AWSCURRENT")["password"]
    token = mysql_sm.start_rotation(secret)
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        invoke(handler, secret, token, step)
        invoke(handler, secret, token, step)
    assert_rotated(mysql_sm, mariadb_admin, secret, before)


def test_crash_after_set_then_full_retry_with_the_same_token(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, secret: str
) -> None:
    """The server already has the pending password, so AWSCURRENT no longer logs in: setSecret
    must see that AWSPENDING does, and change nothing."""
    before = mysql_sm.value(secret, "AWSCURRENT")["password"]
    token = mysql_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret", "setSecret")
    assert not mariadb_admin.logs_in(mysql_sm.value(secret, "AWSCURRENT")["username"], before)
    invoke(handler, secret, token)  # Secrets Manager retries the whole rotation
    assert_rotated(mysql_sm, mariadb_admin, secret, before)


def test_abandoned_rotation_with_another_token(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, secret: str
) -> None:
    before = mysql_sm.value(secret, "AWSCURRENT")["password"]
    abandoned = mysql_sm.start_rotation(secret)
    invoke(handler, secret, abandoned, "createSecret")
    invoke(handler, secret, mysql_sm.start_rotation(secret))
    assert_rotated(mysql_sm, mariadb_admin, secret, before)
    labels = mysql_sm.stages(secret)
    with pytest.raises(VersionStageError, match="not AWSPENDING"):
        invoke(handler, secret, abandoned, "setSecret")
    assert mysql_sm.stages(secret) == labels, "a stale token moves nothing"


def test_password_changed_behind_our_back_fails_clearly_and_moves_nothing(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    secret: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    user = mysql_sm.value(secret, "AWSCURRENT")["username"]
    by_hand = new_password()
    leak_check.add(by_hand)
    mariadb_admin.set_password(user, by_hand)
    token = mysql_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    labels = mysql_sm.stages(secret)
    with pytest.raises(LoginError, match="No staged version"):
        invoke(handler, secret, token, "setSecret")
    assert mysql_sm.stages(secret) == labels
    assert mariadb_admin.logs_in(user, by_hand), "the working password was not touched"


def test_server_stopped_during_set_raises_and_the_retry_succeeds(
    mysql_sm: LocalSecretsManager,
    own_mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    admin = MariaDBAdmin(own_mariadb)
    password = new_password()
    admin.create_user(role_name, password)
    arn = mysql_sm.create_secret(role_name, mysql_secret(own_mariadb, role_name, password))
    token = mysql_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mysql_sm.stages(arn)

    own_mariadb.stop()
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect to MySQL"):
        invoke(handler, arn, token, "setSecret")
    assert mysql_sm.stages(arn) == labels, "a failed step moves no label"

    own_mariadb.start()
    assert admin.logs_in(role_name, password), "the old password still works after the failure"
    invoke(handler, arn, token, "setSecret", "testSecret", "finishSecret")
    assert_rotated(mysql_sm, admin, arn, password)


@pytest.mark.parametrize("name", ["O'Neil", 'we"ird', "with space", "back`tick", "per%cent", "back\\slash"])
def test_user_names_that_need_quoting(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    name: str,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    user = f"{name}_{role_name[-6:]}"
    password = new_password()
    mariadb_admin.create_user(user, password)
    arn = mysql_sm.create_secret(role_name, mysql_secret(mariadb, user, password))
    invoke(handler, arn, mysql_sm.start_rotation(arn))
    assert_rotated(mysql_sm, mariadb_admin, arn, password)


def test_the_account_of_the_login_host_changes_not_the_wildcard_one(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """'app'@'127.0.0.1' and 'app'@'%' are two accounts; a local login is the first one, so the
    rotator must change that one (found with CURRENT_USER()) and leave '%' alone."""
    password, wildcard_password = new_password(), new_password()
    mariadb_admin.create_user(role_name, password)
    mariadb_admin.create_user(role_name, wildcard_password, host="%")
    wildcard_before = password_hash(mariadb_admin, role_name, "%")
    arn = mysql_sm.create_secret(role_name, mysql_secret(mariadb, role_name, password))

    invoke(handler, arn, mysql_sm.start_rotation(arn))

    assert_rotated(mysql_sm, mariadb_admin, arn, password)
    assert password_hash(mariadb_admin, role_name, "%") == wildcard_before, "'app'@'%' was not touched"


def test_an_account_at_a_host_other_than_the_wildcard(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """Only 'app'@'127.0.0.1' exists: a statement for 'app'@'%' would fail (no such account)."""
    password = new_password()
    mariadb_admin.create_user(role_name, password)
    assert mariadb_admin.sql("SELECT Host FROM mysql.user WHERE User = %s", (role_name,)) == [("127.0.0.1",)]
    arn = mysql_sm.create_secret(role_name, mysql_secret(mariadb, role_name, password))
    invoke(handler, arn, mysql_sm.start_rotation(arn))
    assert_rotated(mysql_sm, mariadb_admin, arn, password)


def test_a_user_without_create_user_rotates_with_set_password(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, mariadb: MariaDBServer, secret: str
) -> None:
    """On MariaDB such a user gets error 1227 from ALTER USER, even for its own account."""
    current = mysql_sm.value(secret, "AWSCURRENT")
    with (
        pymysql.connect(
            **{**mariadb.admin_kwargs(), "user": current["username"], "password": current["password"]}
        ) as conn,
        conn.cursor() as cursor,
        pytest.raises(pymysql.err.OperationalError, match="CREATE USER") as refused,
    ):
        cursor.execute("ALTER USER CURRENT_USER() IDENTIFIED BY %s", ("Not-Used-1",))
    assert refused.value.args[0] == 1227
    invoke(handler, secret, mysql_sm.start_rotation(secret))
    assert_rotated(mysql_sm, mariadb_admin, secret, current["password"])


def test_tls_is_used_by_default(mysql_sm: LocalSecretsManager, secret: str) -> None:
    rotator = MySQLRotator()
    current = rotator.parse(mysql_sm.client.get_secret_value(SecretId=secret)["SecretString"], where="test")
    with rotator.connect(current, current.username, current.password) as session:
        status = rotator._rows(session, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", ())
        assert status[0][1], "the session is encrypted"
        assert rotator.transport(session, current).startswith("TLS (TLSv1.")


def test_a_certificate_that_does_not_verify_fails_without_plaintext_fallback(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(stranger.cert_path))
    token = mysql_sm.start_rotation(secret)
    invoke(handler, secret, token, "createSecret")
    labels = mysql_sm.stages(secret)
    with pytest.raises(DatabaseUnavailableError, match="certificate verify failed"):
        invoke(handler, secret, token, "setSecret")
    assert mysql_sm.stages(secret) == labels
    current = mysql_sm.value(secret, "AWSCURRENT")
    assert mariadb_admin.logs_in(current["username"], current["password"]), "nothing changed"


def test_a_server_without_tls_is_refused_unless_the_secret_says_plaintext(
    mysql_sm: LocalSecretsManager,
    mariadb_factory: MariaDBFactory,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """PyMySQL would fall back to plaintext before 1.2; the rotator must not send a login there."""
    server = mariadb_factory.start(tls=False)
    try:
        admin = MariaDBAdmin(server)
        password = new_password()
        admin.create_user(role_name, password)
        arn = mysql_sm.create_secret(role_name, mysql_secret(server, role_name, password))
        token = mysql_sm.start_rotation(arn)
        invoke(handler, arn, token, "createSecret")
        with pytest.raises(DatabaseUnavailableError, match="SSL is required"):
            invoke(handler, arn, token, "setSecret")

        plain = mysql_sm.create_secret(
            f"{role_name}-plain", mysql_secret(server, role_name, password, ssl=False)
        )
        invoke(handler, plain, mysql_sm.start_rotation(plain))
        assert sorted(mysql_sm.stages(plain).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
        assert mysql_sm.value(plain, "AWSCURRENT")["ssl"] is False
    finally:
        server.stop()


def test_pending_that_points_at_another_server_is_refused(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, mariadb: MariaDBServer, secret: str
) -> None:
    token = mysql_sm.start_rotation(secret)
    current = mysql_sm.value(secret, "AWSCURRENT")
    evil = {**current, "host": "localhost", "port": mariadb.port + 1, "password": "Evil-" + token}
    mysql_sm.client.put_secret_value(
        SecretId=secret, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=["AWSPENDING"]
    )
    with pytest.raises(TargetMismatchError, match="another server"):
        invoke(handler, secret, token, "setSecret")
    assert mariadb_admin.logs_in(current["username"], current["password"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"engine": "postgres", "host": "h", "username": "u", "password": "Pg-Pass-1"}, "engine 'postgres'"),
        ({"engine": "mariadb", "host": "h", "password": "No-User-1"}, "lacks 'username'"),
        ({"engine": "mysql", "host": "h", "username": "u", "password": "P-1", "port": "x"}, "'port'"),
        ({"engine": "mysql", "host": "h", "username": "u", "password": "P-1", "ssl": "maybe"}, "'ssl'"),
    ],
)
def test_bad_secret_is_a_typed_error_and_stages_nothing(
    mysql_sm: LocalSecretsManager, role_name: str, value: dict[str, object], message: str
) -> None:
    arn = mysql_sm.create_secret(role_name, value)
    token = mysql_sm.start_rotation(arn)
    labels = mysql_sm.stages(arn)
    with pytest.raises(SecretFormatError, match=message):
        invoke(handler, arn, token, "createSecret")
    assert mysql_sm.stages(arn) == labels


def test_an_unknown_sslmode_stops_create_secret(
    mysql_sm: LocalSecretsManager, mariadb: MariaDBServer, role_name: str
) -> None:
    from rotators.errors import SecretFormatError

    arn = mysql_sm.create_secret(
        role_name, mysql_secret(mariadb, role_name, "Any-Pass-1", sslmode="preferred")
    )
    token = mysql_sm.start_rotation(arn)
    before = mysql_sm.stages(arn, marks=True)
    with pytest.raises(SecretFormatError, match="'preferred'"):
        invoke(handler, arn, token, "createSecret")
    assert mysql_sm.stages(arn, marks=True) == before, "no label moved"
    with pytest.raises(mysql_sm.client.exceptions.ResourceNotFoundException):
        mysql_sm.client.get_secret_value(SecretId=arn, VersionId=token)  # no value was staged
