"""The servers' own statement logs hold no password: MariaDB's general_log and PostgreSQL's
log_statement=all (the Redshift engine's test server), through real rotations of both strategies.

Every password the run read or generated is looked for in what the server logged while the
rotator worked; the hash the rotator sent instead must be there, so a log that recorded nothing
cannot pass.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from rotators.engines.mysql_auth import ed25519_key, native_hash
from rotators.engines.redshift_sql import md5_password
from tests.admins import Admin, MariaDBAdmin
from tests.engines import MYSQL, REDSHIFT, Database, Engine, Login, engines

HOST = MariaDBAdmin.HOST


@pytest.fixture
def engine() -> Engine:
    """MariaDB (the MySQL engine), unless a test names another engine."""
    return MYSQL


def rotations(db: Database, arn: str, times: int) -> list[str]:
    """`times` full rotations, one after the other; the new password of each."""
    return [db.rotate(arn)["password"] for _ in range(times)]


def leaked(log: str, *passwords: str) -> int:
    """How many of the passwords the log holds (a count: a failure must not print them)."""
    return sum(password in log for password in passwords)


# -- MariaDB: general_log ------------------------------------------------------------------------------
@pytest.fixture
def logged(own_db: Database) -> MariaDBAdmin:
    """root of a server of the test's own, so that its general_log holds this test's statements only."""
    assert isinstance(own_db.admin, MariaDBAdmin)
    return own_db.admin


def general_log_on(admin: MariaDBAdmin) -> None:
    admin.sql("SET GLOBAL log_output = 'TABLE'")
    admin.sql("SET GLOBAL general_log = 1")


def general_log(admin: MariaDBAdmin) -> str:
    """What every session but the test's own root logged, one statement a line."""
    admin.sql("SET GLOBAL general_log = 0")
    rows = admin.sql("SELECT user_host, argument FROM mysql.general_log")
    return "\n".join(
        argument.decode(errors="replace") if isinstance(argument, bytes) else str(argument)
        for user_host, argument in rows
        if not str(user_host).startswith("root[")
    )


def test_mariadb_single_user_rotations_log_only_hashes(own_db: Database, logged: MariaDBAdmin) -> None:
    login = own_db.add_user(grants=())
    arn = own_db.store(login)
    general_log_on(logged)

    rotated = rotations(own_db, arn, 2)

    log = general_log(logged)
    assert leaked(log, login.password, *rotated) == 0, "a password reached the general log"
    for password in rotated:
        assert f"SET PASSWORD = '{native_hash(password)}'" in log, "its hash was sent, and logged"
    assert logged.logs_in(login.username, rotated[-1])
    assert not logged.logs_in(login.username, rotated[0])
    assert plugin_of(logged, login.username) == "mysql_native_password", "the account keeps its plugin"


def test_mariadb_alternating_rotations_log_only_hashes(own_db: Database, logged: MariaDBAdmin) -> None:
    """The clone's CREATE USER, then ALTER USER of the original and of the existing clone."""
    master, shop = own_db.add_master(), own_db.name("shop")
    logged.sql(f"CREATE DATABASE `{shop}`")
    login = own_db.add_user(grants=(f"SELECT ON `{shop}`.*",))
    arn = own_db.store(login, masterarn=own_db.store(master))
    general_log_on(logged)

    rotated = rotations(own_db, arn, 3)

    log = general_log(logged)
    assert leaked(log, master.password, login.password, *rotated) == 0
    user, clone = login.username, f"{login.username}_clone"
    assert f"CREATE USER '{clone}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[0])}'" in log
    assert f"ALTER USER '{user}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[1])}'" in log
    assert f"ALTER USER '{clone}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[2])}'" in log
    assert logged.logs_in(clone, rotated[2]) and logged.logs_in(user, rotated[1])
    assert logged.grants(clone) == logged.grants(user), "the clone still holds what the original does"


def plugin_of(admin: MariaDBAdmin, user: str) -> str:
    rows = admin.sql("SELECT plugin FROM mysql.user WHERE User = %s AND Host = %s", (user, HOST))
    return str(rows[0][0])


def add_ed25519_user(db: Database, admin: MariaDBAdmin) -> Login:
    """An account of MariaDB's recommended plugin (auth_ed25519 installed)."""
    login = Login(db.name(), db.new_password())
    admin.sql(
        "CREATE USER %s@%s IDENTIFIED VIA ed25519 USING PASSWORD(%s)", (login.username, HOST, login.password)
    )
    return login


def test_mariadb_ed25519_accounts_keep_their_plugin_and_log_only_their_key(
    own_db: Database, logged: MariaDBAdmin
) -> None:
    """ed25519 (MariaDB's recommended plugin): a single user sets its own key, the master the
    original's and the clone's (a new clone takes ed25519 too); no password reaches the log, and
    no account is moved to mysql_native_password on the way."""
    logged.sql("INSTALL SONAME 'auth_ed25519'")
    single = add_ed25519_user(own_db, logged)
    single_arn = own_db.store(single)
    master = own_db.add_master()
    app = add_ed25519_user(own_db, logged)
    logged.sql(f"GRANT SELECT ON `mysql`.`db` TO `{app.username}`@`{HOST}`")
    app_arn = own_db.store(app, masterarn=own_db.store(master))
    general_log_on(logged)

    rotated = rotations(own_db, single_arn, 2) + rotations(own_db, app_arn, 3)

    log = general_log(logged)
    assert leaked(log, single.password, master.password, app.password, *rotated) == 0
    user, clone = app.username, f"{app.username}_clone"
    assert f"SET PASSWORD = '{ed25519_key(rotated[1])}'" in log
    assert f"CREATE USER '{clone}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[2])}'" in log
    assert f"ALTER USER '{user}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[3])}'" in log
    assert f"ALTER USER '{clone}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[4])}'" in log
    assert [plugin_of(logged, name) for name in (single.username, user, clone)] == ["ed25519"] * 3
    assert logged.logs_in(single.username, rotated[1]) and not logged.logs_in(single.username, rotated[0])
    assert logged.logs_in(user, rotated[3]) and logged.logs_in(clone, rotated[4])
    assert logged.grants(clone) == logged.grants(user)


def test_mariadb_password_validation_that_must_see_the_password_gets_it(
    own_db: Database, logged: MariaDBAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """simple_password_check with strict_password_validation refuses every hash (error 1290): the
    rotation still completes, with the clear value, and the rotator's log says so without it.
    This is the one case where MariaDB's own log holds the password (README)."""
    logged.sql("INSTALL SONAME 'simple_password_check'")
    logged.sql("SET GLOBAL strict_password_validation = ON")
    login = Login(own_db.name(), "Init-Aa1!" + uuid.uuid4().hex)  # what the check asks of a password
    logged.create_user(login.username, login.password)
    arn = own_db.store(login)
    with pytest.raises(Exception, match=r"1290.*strict-password-validation"):
        logged.sql("SET PASSWORD FOR %s@%s = %s", (login.username, HOST, native_hash("Other-Aa1!x")))

    (rotated,) = rotations(own_db, arn, 1)

    assert logged.logs_in(login.username, rotated) and not logged.logs_in(login.username, login.password)
    assert plugin_of(logged, login.username) == "mysql_native_password"
    assert "refused the password's hash" in caplog.text and rotated not in caplog.text


# -- Redshift's engine on PostgreSQL: log_statement=all ----------------------------------------------
@pytest.mark.parametrize("engine", engines(among=(REDSHIFT,)))
def test_redshift_rotations_log_no_password(db: Database) -> None:
    """Single user, then alternating users (the clone created, then the original changed)."""
    single, master, app = db.add_user(), db.add_master(), db.add_user()
    single_arn = db.store(single)
    app_arn = db.store(app, masterarn=db.store(master))
    start = len(db.statement_log())  # the set-up above sent its passwords in clear, as a DBA might

    rotated = rotations(db, single_arn, 2) + rotations(db, app_arn, 2)

    log = db.statement_log()[start:]
    assert leaked(log, single.password, master.password, app.password, *rotated) == 0
    verifier = "PASSWORD 'SCRAM-SHA-256$4096:"
    assert log.count(f"ALTER USER {single.username} {verifier}") == 2, "each change was logged, as a verifier"
    assert log.count(f"CREATE USER {app.username}_clone {verifier}") == 1
    assert log.count(f"ALTER USER {app.username} {verifier}") == 1
    assert db.logs_in(single.username, rotated[1]) and not db.logs_in(single.username, rotated[0])
    assert db.logs_in(f"{app.username}_clone", rotated[2]) and db.logs_in(app.username, rotated[3])


def test_the_md5_form_is_the_one_postgresql_computes(admin: Admin, role_name: str) -> None:
    """Redshift's documented MD5 string is PostgreSQL's: the server's own md5 of a password equals
    what the engine sends to Redshift (no Redshift runs here; this is the next best witness)."""
    name, password = f"{role_name}_md5", "Md5-Witness-9"
    admin.sql(f'CREATE ROLE "{name}" LOGIN')
    with psycopg.connect(make_conninfo("", **admin.server.admin_dsn()), autocommit=True) as conn:
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(f"ALTER ROLE \"{name}\" PASSWORD '{password}'")
    stored = admin.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))
    assert stored == [(md5_password(password, name),)]
