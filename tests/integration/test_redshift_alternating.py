"""Alternating Redshift users through redshift-connector, against PostgreSQL via the test shims:
the clone gets the original's groups and every table, schema and database privilege it holds.
(RBAC roles, GRANT ROLE and SVV_USER_GRANTS exist only on Redshift: see the statement tests.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from rotators.engines.redshift import RedshiftRotator, handler
from rotators.errors import PasswordChangeError, SecretFormatError
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, invoke, redshift_secret
from tests.redshift_shims import StartupParameterProxy

pytestmark = pytest.mark.usefixtures("redshift_shims")


@pytest.fixture
def master_arn(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """Redshift's admin user is a superuser."""
    name, password = f"Admin_{role_name}", new_password()
    admin.create_role(name, password, "SUPERUSER")
    return local_sm.create_secret(name, redshift_secret(redshift_proxy, name, password))


@pytest.fixture
def warehouse(admin: Admin, role_name: str) -> str:
    """A schema with: a table granted to the user, one the user owns, one granted to its group,
    and one it may not touch."""
    schema = f"wh_{role_name}"
    admin.sql(f'CREATE ROLE "analysts_{role_name}" NOLOGIN')  # a group, as pg_group sees it
    admin.sql(f'CREATE SCHEMA "{schema}"')
    for table in ("sales", "owned", "shared", "secret"):
        admin.sql(f'CREATE TABLE "{schema}".{table} (id int)')
    return schema


@pytest.fixture
def app_secret(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    master_arn: str,
    warehouse: str,
    new_password: Callable[[], str],
) -> str:
    password = new_password()
    admin.create_role(role_name, password)
    admin.sql(f'GRANT USAGE ON SCHEMA "{warehouse}" TO "{role_name}"')
    admin.sql(f'GRANT SELECT, INSERT ON "{warehouse}".sales TO "{role_name}"')
    admin.sql(f'ALTER TABLE "{warehouse}".owned OWNER TO "{role_name}"')
    admin.sql(f'GRANT SELECT ON "{warehouse}".shared TO "analysts_{role_name}"')
    admin.sql(f'ALTER GROUP "analysts_{role_name}" ADD USER "{role_name}"')
    return local_sm.create_secret(
        role_name, redshift_secret(redshift_proxy, role_name, password, masterarn=master_arn)
    )


def connect(pg: PostgresServer, user: str, password: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(**{**pg.admin_dsn(), "user": user, "password": password}, autocommit=True)


def test_two_alternating_rotations_keep_both_logins_working(
    local_sm: LocalSecretsManager, admin: Admin, app_secret: str, role_name: str
) -> None:
    first = local_sm.value(app_secret, "AWSCURRENT")
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    second = local_sm.value(app_secret, "AWSCURRENT")
    assert second["username"] == f"{role_name}_clone"
    assert admin.logs_in(first["username"], first["password"]), "the previous login keeps working"
    assert admin.logs_in(second["username"], second["password"])

    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    third = local_sm.value(app_secret, "AWSCURRENT")
    assert third["username"] == role_name
    assert admin.logs_in(second["username"], second["password"]), "the clone keeps working"
    assert admin.logs_in(third["username"], third["password"])
    assert not admin.logs_in(role_name, first["password"])
    assert sorted(local_sm.stages(app_secret).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]


def test_the_clone_gets_the_groups_and_privileges_of_the_original(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    app_secret: str,
    role_name: str,
    warehouse: str,
) -> None:
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    clone = local_sm.value(app_secret, "AWSCURRENT")
    groups = admin.sql(
        "SELECT g.groname FROM pg_group g, pg_user u WHERE u.usename = %s AND u.usesysid = ANY(g.grolist)",
        (clone["username"],),
    )
    assert groups == [(f"analysts_{role_name}",)]
    with connect(pg, clone["username"], clone["password"]) as conn:
        conn.execute(f'INSERT INTO "{warehouse}".sales VALUES (1)')
        conn.execute(f'SELECT * FROM "{warehouse}".sales')
        conn.execute(f'INSERT INTO "{warehouse}".owned VALUES (1)')  # owned by the original
        conn.execute(f'SELECT * FROM "{warehouse}".shared')  # through the group
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'SELECT * FROM "{warehouse}".secret')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'DELETE FROM "{warehouse}".sales')


def test_privileges_granted_later_reach_the_clone_at_its_next_rotation(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    app_secret: str,
    role_name: str,
    warehouse: str,
) -> None:
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    admin.sql(f'GRANT SELECT ON "{warehouse}".secret TO "{role_name}"')
    admin.sql(f'CREATE ROLE "ops_{role_name}" NOLOGIN')
    admin.sql(f'ALTER GROUP "ops_{role_name}" ADD USER "{role_name}"')
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    invoke(handler, app_secret, local_sm.start_rotation(app_secret))
    clone = local_sm.value(app_secret, "AWSCURRENT")
    assert clone["username"] == f"{role_name}_clone"
    with connect(pg, clone["username"], clone["password"]) as conn:
        conn.execute(f'SELECT * FROM "{warehouse}".secret')
    members = admin.sql(
        "SELECT 1 FROM pg_group g, pg_user u"
        " WHERE g.groname = %s AND u.usename = %s AND u.usesysid = ANY(g.grolist)",
        (f"ops_{role_name}", clone["username"]),
    )
    assert members == [(1,)]


def test_names_that_need_quoting(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    master_arn: str,
    new_password: Callable[[], str],
) -> None:
    name = f'O\'Neil "BI" {uuid.uuid4().hex[:4]}'
    password = new_password()
    admin.create_role(name, password)
    arn = local_sm.create_secret(name, redshift_secret(redshift_proxy, name, password, masterarn=master_arn))
    for _ in range(2):
        invoke(handler, arn, local_sm.start_rotation(arn))
        current = local_sm.value(arn, "AWSCURRENT")
        assert admin.logs_in(current["username"], current["password"])


def test_a_master_that_is_not_a_superuser_fails_clearly_and_moves_nothing(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    app_secret: str,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    weak, weak_password = f"weak_{role_name}", new_password()
    admin.create_role(weak, weak_password, "CREATEROLE")
    weak_arn = local_sm.create_secret(weak, redshift_secret(redshift_proxy, weak, weak_password))
    current = local_sm.value(app_secret, "AWSCURRENT")
    arn = local_sm.create_secret(f"{role_name}-weak", {**current, "masterarn": weak_arn})
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = local_sm.stages(arn)
    with pytest.raises(PasswordChangeError, match="Redshift refused the change"):
        invoke(handler, arn, token, "setSecret")
    assert local_sm.stages(arn) == labels
    assert admin.logs_in(current["username"], current["password"])


def test_a_clone_name_over_127_bytes_fails_at_create(
    local_sm: LocalSecretsManager, redshift_proxy: StartupParameterProxy, master_arn: str
) -> None:
    arn = local_sm.create_secret(
        f"long-{uuid.uuid4().hex[:6]}",
        redshift_secret(redshift_proxy, "é" * 61, "Long-Name-Pass-1", masterarn=master_arn),
    )
    token = local_sm.start_rotation(arn)
    with pytest.raises(SecretFormatError, match="longer than 127 bytes"):
        invoke(handler, arn, token, "createSecret")
    with pytest.raises(local_sm.client.exceptions.ResourceNotFoundException):
        local_sm.client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alternating_users_conform(
    rotator_conformance: RotatorConformance,
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    master_arn: str,
    new_password: Callable[[], str],
    scenario: str,
) -> None:
    def fresh() -> dict[str, Any]:
        name, password = f"app_{uuid.uuid4().hex[:10]}", new_password()
        admin.create_role(name, password)
        return redshift_secret(redshift_proxy, name, password, masterarn=master_arn)

    rotator_conformance.check(
        RedshiftRotator,
        new_secret=fresh,
        accepts=lambda s: admin.logs_in(s.username, s.password),
        keeps_previous=True,
        scenarios=[scenario],
    )
