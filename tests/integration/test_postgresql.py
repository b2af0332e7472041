"""What only the PostgreSQL engine has, on a real server (SCRAM, TLS): the password reaches the
server as a SCRAM verifier, and the clone of alternating users is a member of the original role.

The scenarios every engine shares are in test_single_user.py and test_alternating_users.py.
"""

from __future__ import annotations

import psycopg
import pytest

from rotators.engines.postgresql import PostgreSQLRotator
from rotators.secrets import AWSPREVIOUS
from rotators.testing.postgres import PostgresServer
from tests.admins import Admin
from tests.engines import POSTGRESQL, Database, Engine


@pytest.fixture
def engine() -> Engine:
    return POSTGRESQL


def connect(pg: PostgresServer, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=pg.host, port=pg.port, dbname="postgres", user=user, password=password,
        sslmode="verify-full", sslrootcert=str(pg.ca.cert_path), autocommit=True,
    )  # fmt: skip


# -- single user -----------------------------------------------------------------------------------------
def test_tls_is_used_by_default(db: Database) -> None:
    rotator = PostgreSQLRotator()
    arn = db.store(db.add_user())
    current = rotator.parse(db.sm.client.get_secret_value(SecretId=arn)["SecretString"], where="test")
    with rotator.connect(current, current.username, current.password) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_only_a_scram_verifier_reaches_the_server(db: Database, admin: Admin) -> None:
    """The server logs every statement here (log_statement=all): the new password must not be in it."""
    current = db.rotate(db.store(db.add_user()))
    stored = admin.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (current["username"],))
    assert stored[0][0].startswith("SCRAM-SHA-256$4096:")
    log = db.statement_log()
    assert f'ALTER ROLE "{current["username"]}" WITH PASSWORD \'SCRAM-SHA-256$' in log
    assert current["password"] not in log


# -- alternating users: the clone is a member of the original role -----------------------------------
def test_the_clone_can_use_and_create_what_the_original_can(
    db: Database, admin: Admin, pg: PostgresServer
) -> None:
    login = db.add_user()
    name = login.username
    admin.sql(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"')
    admin.sql(f'CREATE TABLE "{name}".orders (id int)')
    admin.sql(f'ALTER TABLE "{name}".orders OWNER TO "{name}"')
    arn = db.store(login, masterarn=db.master_secret())

    clone = db.rotate(arn)
    with connect(pg, clone["username"], clone["password"]) as conn:
        conn.execute(f'INSERT INTO "{name}".orders VALUES (1)')
        conn.execute(f'CREATE TABLE "{name}".made_by_clone (id int)')
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'made_by_clone'", [name]
        ).fetchone()
    assert owner == (name,), "objects the clone creates belong to the shared owner role"
    original = db.sm.value(arn, AWSPREVIOUS)
    with connect(pg, original["username"], original["password"]) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{name}".made_by_clone').fetchone() == (0,)
