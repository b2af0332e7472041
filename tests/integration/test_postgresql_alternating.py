"""Alternating users: a master secret changes the password of `user` and `user_clone` in turns."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from rotators.engines.postgresql import handler
from rotators.errors import SecretFormatError, SecretNotFoundError, TargetMismatchError
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, invoke, pg_secret


@pytest.fixture
def master_arn(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """A master like RDS's: CREATEROLE, not a superuser."""
    name, password = f"master_{role_name}", new_password()
    admin.create_role(name, password, "CREATEROLE")
    return local_sm.create_secret(name, pg_secret(pg, name, password))


@pytest.fixture
def app_secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    master_arn: str,
    new_password: Callable[[], str],
) -> str:
    password = new_password()
    admin.create_role(role_name, password)
    admin.sql(f'CREATE SCHEMA "{role_name}" AUTHORIZATION "{role_name}"')
    admin.sql(f'CREATE TABLE "{role_name}".orders (id int)')
    admin.sql(f'ALTER TABLE "{role_name}".orders OWNER TO "{role_name}"')
    return local_sm.create_secret(role_name, pg_secret(pg, role_name, password, masterarn=master_arn))


def connect(pg: PostgresServer, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=pg.host, port=pg.port, dbname="postgres", user=user, password=password,
        sslmode="verify-full", sslrootcert=str(pg.ca.cert_path), autocommit=True,
    )  # fmt: skip


def test_two_alternating_rotations_keep_both_logins_working(
    local_sm: LocalSecretsManager, admin: Admin, pg: PostgresServer, app_secret: str, role_name: str
) -> None:
    first = local_sm.value(app_secret, "AWSCURRENT")

    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    second = local_sm.value(app_secret, "AWSCURRENT")
    assert second["username"] == f"{role_name}_clone"
    assert local_sm.value(app_secret, "AWSPREVIOUS") == first
    assert admin.logs_in(first["username"], first["password"]), "the previous login keeps working"
    assert admin.logs_in(second["username"], second["password"])

    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    third = local_sm.value(app_secret, "AWSCURRENT")
    assert third["username"] == role_name
    assert third["password"] not in (first["password"], second["password"])
    assert local_sm.value(app_secret, "AWSPREVIOUS") == second
    assert admin.logs_in(second["username"], second["password"]), "the clone keeps working"
    assert admin.logs_in(third["username"], third["password"])
    assert not admin.logs_in(role_name, first["password"])
    assert sorted(local_sm.stages(app_secret).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    log = pg.log_path.read_text(errors="replace")
    assert "CREATE ROLE" in log and second["password"] not in log and third["password"] not in log


def test_the_clone_can_use_and_create_what_the_original_can(
    local_sm: LocalSecretsManager, pg: PostgresServer, app_secret: str, role_name: str
) -> None:
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    clone = local_sm.value(app_secret, "AWSCURRENT")
    with connect(pg, clone["username"], clone["password"]) as conn:
        conn.execute(f'INSERT INTO "{role_name}".orders VALUES (1)')
        conn.execute(f'CREATE TABLE "{role_name}".made_by_clone (id int)')
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'made_by_clone'",
            [role_name],
        ).fetchone()
    assert owner == (role_name,), "objects the clone creates belong to the shared owner role"
    original = local_sm.value(app_secret, "AWSPREVIOUS")
    with connect(pg, original["username"], original["password"]) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{role_name}".made_by_clone').fetchone() == (0,)


def test_missing_master_secret_is_a_clear_error(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    password = new_password()
    admin.create_role(role_name, password)
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-master-AbCdEf"
    arn = local_sm.create_secret(role_name, pg_secret(pg, role_name, password, masterarn=missing))
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = local_sm.stages(arn)
    with pytest.raises(SecretNotFoundError, match="masterarn"):
        invoke(handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels
    assert admin.logs_in(role_name, password)


def test_master_on_another_host_is_refused(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    password, master_password = new_password(), new_password()
    admin.create_role(role_name, password)
    admin.create_role(f"m_{role_name}", master_password, "CREATEROLE")
    elsewhere = local_sm.create_secret(
        f"m_{role_name}", {**pg_secret(pg, f"m_{role_name}", master_password), "port": pg.port + 1}
    )
    arn = local_sm.create_secret(role_name, pg_secret(pg, role_name, password, masterarn=elsewhere))
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    with pytest.raises(TargetMismatchError, match="same host and port"):
        invoke(handler, arn, token, "setSecret")
    assert admin.sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", (f"{role_name}_clone",)) == [(0,)]


def test_a_clone_name_that_does_not_fit_fails_before_anything_changes(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    master_arn: str,
    new_password: Callable[[], str],
) -> None:
    name = "u" * 60
    password = new_password()
    admin.create_role(name, password)
    arn = local_sm.create_secret(
        f"long-{master_arn[-6:]}", pg_secret(pg, name, password, masterarn=master_arn)
    )
    token = local_sm.start_rotation(arn)
    with pytest.raises(SecretFormatError, match="longer than 63 bytes"):
        invoke(handler, arn, token, "createSecret")
    assert (
        "AWSPENDING"
        not in local_sm.client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["VersionStages"]
    )
    with pytest.raises(local_sm.client.exceptions.ResourceNotFoundException):
        local_sm.client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")


def test_a_master_secret_marked_for_deletion_is_named_in_the_error(
    local_sm: LocalSecretsManager, admin: Admin, app_secret: str, master_arn: str
) -> None:
    token = local_sm.start_rotation(app_secret)
    invoke(handler, app_secret, token, "createSecret")
    local_sm.client.delete_secret(SecretId=master_arn, RecoveryWindowInDays=7)
    labels = local_sm.stages(app_secret)
    with pytest.raises(SecretNotFoundError, match=r"named by 'masterarn'.*marked"):
        invoke(handler, app_secret, token, "setSecret")
    assert local_sm.stages(app_secret) == labels
    local_sm.client.restore_secret(SecretId=master_arn)
    invoke(handler, app_secret, token, "setSecret", "testSecret", "finishSecret")
    current = local_sm.value(app_secret, "AWSCURRENT")
    assert admin.logs_in(current["username"], current["password"])
