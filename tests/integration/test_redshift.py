"""What only the Redshift engine has: the real engine and redshift-connector, against the
throwaway PostgreSQL (SCRAM, TLS) through the test-only shims of tests/redshift_shims.py.

What runs here is the SQL Redshift shares with PostgreSQL (`ALTER USER ... PASSWORD`, groups,
grants, the probe); what only a real Redshift can confirm is in test_redshift_live.py. The
scenarios every engine shares are in test_single_user.py and test_alternating_users.py.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import redshift_connector
from psycopg.conninfo import make_conninfo
from redshift_connector.error import ProgrammingError

from rotators.errors import ConfigurationError, PasswordChangeError, SecretFormatError
from rotators.secrets import AWSCURRENT, AWSPENDING
from rotators.testing.postgres import PostgresFactory, PostgresServer
from tests.admins import Admin
from tests.engines import REDSHIFT, Database, Engine, Login


@pytest.fixture
def engine() -> Engine:
    return REDSHIFT


# -- single user --------------------------------------------------------------------------------------------
def test_rotation_through_redshift_connector(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    before = db.sm.value(arn, AWSCURRENT)
    seen = len(db.client_tls())
    after = db.rotate(arn)

    db.assert_rotated(arn, login.password)
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }
    assert len(after["password"]) == 32
    assert db.client_tls()[seen:] and all(db.client_tls()[seen:]), "TLS by default"
    assert "driver_version" in db.server.proxy.dropped, "the driver really was redshift-connector"


def test_a_reserved_word_as_the_user_name(db: Database, admin: Admin) -> None:
    """`select` needs quoting only as a whole name (tests/integration/test_single_user.py adds a suffix)."""
    admin.sql('DROP ROLE IF EXISTS "select"')
    login = db.add_user("select")
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)


def test_a_pending_password_that_breaks_the_rules_is_refused_before_use(
    db: Database, app: tuple[str, Login]
) -> None:
    arn, login = app
    token = db.sm.start_rotation(arn)
    staged = {**db.sm.value(arn, AWSCURRENT), "password": "no-upper-case-1"}
    db.sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(staged), VersionStages=[AWSPENDING]
    )
    db.fails(arn, token, "setSecret", SecretFormatError, "an upper case letter")
    assert db.logs_in(login.username, login.password)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PASSWORD_LENGTH", "65", "between 8 and 64"),
        ("EXCLUDE_NUMBERS", "true", "digits"),
        ("REQUIRE_EACH_INCLUDED_TYPE", "false", "must stay true"),
    ],
)
def test_a_policy_redshift_would_refuse_stages_nothing(
    db: Database,
    app: tuple[str, Login],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    arn, _ = app
    monkeypatch.setenv(variable, value)
    db.fails(arn, db.sm.start_rotation(arn), "createSecret", ConfigurationError, message)


def test_excluded_characters_keep_redshifts_forbidden_ones(
    db: Database, app: tuple[str, Login], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, _ = app
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "%")
    monkeypatch.setenv("PASSWORD_LENGTH", "64")
    password = db.rotate(arn)["password"]
    assert len(password) == 64 and "%" not in password
    assert db.engine.module.password_problems(password) == []


def test_without_the_proxy_postgresql_refuses_the_redshift_startup_parameters(
    db: Database, pg: PostgresServer, pg_factory: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shims are what make this file possible (and nothing more)."""
    login = db.add_user()
    monkeypatch.setenv("SSL_CERT_FILE", str(pg_factory.ca.cert_path))
    with pytest.raises(ProgrammingError, match="unrecognized configuration parameter"):
        redshift_connector.connect(
            host=pg.host, port=pg.port, database="postgres", user=login.username, password=login.password,
            sslmode="verify-full", timeout=5,
        )  # fmt: skip


# -- alternating users: groups and privileges -------------------------------------------------------------
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
def analyst(db: Database, admin: Admin, role_name: str, warehouse: str) -> Login:
    """A user with table privileges, an owned table and a group."""
    login = db.add_user(role_name)
    admin.sql(f'GRANT USAGE ON SCHEMA "{warehouse}" TO "{role_name}"')
    admin.sql(f'GRANT SELECT, INSERT ON "{warehouse}".sales TO "{role_name}"')
    admin.sql(f'ALTER TABLE "{warehouse}".owned OWNER TO "{role_name}"')
    admin.sql(f'GRANT SELECT ON "{warehouse}".shared TO "analysts_{role_name}"')
    admin.sql(f'ALTER GROUP "analysts_{role_name}" ADD USER "{role_name}"')
    return login


def connect(pg: PostgresServer, user: str, password: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(make_conninfo("", **pg.admin_dsn()), user=user, password=password, autocommit=True)


def test_the_clone_gets_the_groups_and_privileges_of_the_original(
    db: Database, admin: Admin, pg: PostgresServer, analyst: Login, warehouse: str
) -> None:
    clone = db.rotate(db.store(analyst, masterarn=db.master_secret()))
    groups = admin.sql(
        "SELECT g.groname FROM pg_group g, pg_user u WHERE u.usename = %s AND u.usesysid = ANY(g.grolist)",
        (clone["username"],),
    )
    assert groups == [(f"analysts_{analyst.username}",)]
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
    db: Database, admin: Admin, pg: PostgresServer, analyst: Login, warehouse: str
) -> None:
    name = analyst.username
    arn = db.store(analyst, masterarn=db.master_secret())
    db.rotate(arn)
    admin.sql(f'GRANT SELECT ON "{warehouse}".secret TO "{name}"')
    admin.sql(f'CREATE ROLE "ops_{name}" NOLOGIN')
    admin.sql(f'ALTER GROUP "ops_{name}" ADD USER "{name}"')
    db.rotate(arn)
    clone = db.rotate(arn)
    assert clone["username"] == f"{name}_clone"
    with connect(pg, clone["username"], clone["password"]) as conn:
        conn.execute(f'SELECT * FROM "{warehouse}".secret')
    members = admin.sql(
        "SELECT 1 FROM pg_group g, pg_user u"
        " WHERE g.groname = %s AND u.usename = %s AND u.usesysid = ANY(g.grolist)",
        (f"ops_{name}", clone["username"]),
    )
    assert members == [(1,)]


def test_a_master_that_is_not_a_superuser_fails_clearly_and_moves_nothing(
    db: Database, analyst: Login
) -> None:
    """Redshift's clone takes the original's groups and privileges, which a CREATEROLE master
    may not grant (a user with none of them the tests of every engine cover)."""
    weak = db.add_master(("CREATEROLE",))
    arn = db.store(analyst, masterarn=db.store(weak))
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    db.fails(arn, token, "setSecret", PasswordChangeError, "Redshift refused the change")
    assert db.logs_in(analyst.username, analyst.password)
