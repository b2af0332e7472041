"""The servers' own statement logs hold no password: MariaDB's general_log and PostgreSQL's
log_statement=all (the Redshift engine's test server), through real rotations of both strategies.

Every password the run read or generated is looked for in what the server logged while the
rotator worked; the hash the rotator sent instead must be there, so a log that recorded nothing
cannot pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from rotators.engines import mysql, redshift
from rotators.engines.mysql_auth import ed25519_key, native_hash
from rotators.engines.redshift_sql import md5_password
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Admin, MariaDBAdmin, invoke, mysql_secret, redshift_secret
from tests.redshift_shims import StartupParameterProxy

HOST = "127.0.0.1"


def rotate(sm: LocalSecretsManager, handler: Callable[..., object], arn: str) -> str:
    """One full rotation; the new password."""
    invoke(handler, arn, sm.start_rotation(arn))
    password: str = sm.value(arn, "AWSCURRENT")["password"]
    return password


def leaked(log: str, *passwords: str) -> int:
    """How many of the passwords the log holds (a count: a failure must not print them)."""
    return sum(password in log for password in passwords)


# -- MariaDB: general_log ------------------------------------------------------------------------------
@pytest.fixture
def logged(own_mariadb: MariaDBServer) -> MariaDBAdmin:
    """A server of the test's own, so that its general_log holds this test's statements only."""
    return MariaDBAdmin(own_mariadb)


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


def test_mariadb_single_user_rotations_log_only_hashes(
    mysql_sm: LocalSecretsManager,
    logged: MariaDBAdmin,
    own_mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    initial = new_password()
    logged.create_user(role_name, initial, host=HOST)
    arn = mysql_sm.create_secret(role_name, mysql_secret(own_mariadb, role_name, initial))
    general_log_on(logged)

    rotated = [rotate(mysql_sm, mysql.handler, arn) for _ in range(2)]

    log = general_log(logged)
    assert leaked(log, initial, *rotated) == 0, "a password reached the general log"
    for password in rotated:
        assert f"SET PASSWORD = '{native_hash(password)}'" in log, "its hash was sent, and logged"
    assert logged.logs_in(role_name, rotated[-1])
    assert not logged.logs_in(role_name, rotated[0])
    assert plugin_of(logged, role_name) == "mysql_native_password", "the account keeps its plugin"


def test_mariadb_alternating_rotations_log_only_hashes(
    mysql_sm: LocalSecretsManager,
    logged: MariaDBAdmin,
    own_mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """The clone's CREATE USER, then ALTER USER of the original and of the existing clone."""
    master, master_password, initial = f"master_{role_name}", new_password(), new_password()
    logged.create_user(master, master_password, "ALL PRIVILEGES ON *.*", host=HOST)
    logged.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (master, HOST))
    master_arn = mysql_sm.create_secret(master, mysql_secret(own_mariadb, master, master_password))
    logged.sql(f"CREATE DATABASE `shop_{role_name}`")
    logged.create_user(role_name, initial, f"SELECT ON `shop_{role_name}`.*", host=HOST)
    arn = mysql_sm.create_secret(
        f"{role_name}-{uuid.uuid4().hex[:6]}",
        mysql_secret(own_mariadb, role_name, initial, masterarn=master_arn),
    )
    general_log_on(logged)

    rotated = [rotate(mysql_sm, mysql.handler, arn) for _ in range(3)]

    log = general_log(logged)
    assert leaked(log, master_password, initial, *rotated) == 0
    clone = f"{role_name}_clone"
    assert f"CREATE USER '{clone}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[0])}'" in log
    assert f"ALTER USER '{role_name}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[1])}'" in log
    assert f"ALTER USER '{clone}'@'{HOST}' IDENTIFIED BY PASSWORD '{native_hash(rotated[2])}'" in log
    assert logged.logs_in(clone, rotated[2]) and logged.logs_in(role_name, rotated[1])
    assert logged.grants(clone) == logged.grants(role_name), "the clone still holds what the original does"


def plugin_of(admin: MariaDBAdmin, user: str) -> str:
    rows = admin.sql("SELECT plugin FROM mysql.user WHERE User = %s AND Host = %s", (user, HOST))
    return str(rows[0][0])


def test_mariadb_ed25519_accounts_keep_their_plugin_and_log_only_their_key(
    mysql_sm: LocalSecretsManager,
    logged: MariaDBAdmin,
    own_mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """ed25519 (MariaDB's recommended plugin): a single user sets its own key, the master the
    original's and the clone's (a new clone takes ed25519 too); no password reaches the log, and
    no account is moved to mysql_native_password on the way."""
    logged.sql("INSTALL SONAME 'auth_ed25519'")
    single, single_initial = f"{role_name}_s", new_password()
    logged.sql("CREATE USER %s@%s IDENTIFIED VIA ed25519 USING PASSWORD(%s)", (single, HOST, single_initial))
    single_arn = mysql_sm.create_secret(single, mysql_secret(own_mariadb, single, single_initial))
    master, master_password = f"master_{role_name}", new_password()
    logged.create_user(master, master_password, host=HOST)
    logged.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (master, HOST))
    master_arn = mysql_sm.create_secret(master, mysql_secret(own_mariadb, master, master_password))
    app, app_initial = f"{role_name}_a", new_password()
    logged.sql("CREATE USER %s@%s IDENTIFIED VIA ed25519 USING PASSWORD(%s)", (app, HOST, app_initial))
    logged.sql(f"GRANT SELECT ON `mysql`.`db` TO `{app}`@`{HOST}`")
    app_arn = mysql_sm.create_secret(app, mysql_secret(own_mariadb, app, app_initial, masterarn=master_arn))
    general_log_on(logged)

    rotated = [rotate(mysql_sm, mysql.handler, single_arn) for _ in range(2)]
    rotated += [rotate(mysql_sm, mysql.handler, app_arn) for _ in range(3)]

    log = general_log(logged)
    assert leaked(log, single_initial, master_password, app_initial, *rotated) == 0
    clone = f"{app}_clone"
    assert f"SET PASSWORD = '{ed25519_key(rotated[1])}'" in log
    assert f"CREATE USER '{clone}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[2])}'" in log
    assert f"ALTER USER '{app}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[3])}'" in log
    assert f"ALTER USER '{clone}'@'{HOST}' IDENTIFIED VIA ed25519 USING '{ed25519_key(rotated[4])}'" in log
    assert [plugin_of(logged, user) for user in (single, app, clone)] == ["ed25519"] * 3
    assert logged.logs_in(single, rotated[1]) and not logged.logs_in(single, rotated[0])
    assert logged.logs_in(app, rotated[3]) and logged.logs_in(clone, rotated[4])
    assert logged.grants(clone) == logged.grants(app)


def test_mariadb_password_validation_that_must_see_the_password_gets_it(
    mysql_sm: LocalSecretsManager,
    logged: MariaDBAdmin,
    own_mariadb: MariaDBServer,
    role_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """simple_password_check with strict_password_validation refuses every hash (error 1290): the
    rotation still completes, with the clear value, and the rotator's log says so without it.
    This is the one case where MariaDB's own log holds the password (README)."""
    logged.sql("INSTALL SONAME 'simple_password_check'")
    logged.sql("SET GLOBAL strict_password_validation = ON")
    initial = "Init-Aa1!" + uuid.uuid4().hex
    logged.create_user(role_name, initial, host=HOST)
    arn = mysql_sm.create_secret(role_name, mysql_secret(own_mariadb, role_name, initial))
    with pytest.raises(Exception, match=r"1290.*strict-password-validation"):
        logged.sql("SET PASSWORD FOR %s@%s = %s", (role_name, HOST, native_hash("Other-Aa1!x")))

    rotated = rotate(mysql_sm, mysql.handler, arn)

    assert logged.logs_in(role_name, rotated) and not logged.logs_in(role_name, initial)
    assert plugin_of(logged, role_name) == "mysql_native_password"
    assert "refused the password's hash" in caplog.text and rotated not in caplog.text


# -- Redshift's engine on PostgreSQL: log_statement=all ----------------------------------------------
@pytest.mark.usefixtures("redshift_shims")
def test_redshift_rotations_log_no_password(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    """Single user, then alternating users (the clone created, then the original changed)."""
    single, initial = f"{role_name}_s", new_password()
    admin.create_role(single, initial)
    single_arn = local_sm.create_secret(single, redshift_secret(redshift_proxy, single, initial))
    master, master_password = f"admin_{role_name}", new_password()
    admin.create_role(master, master_password, "SUPERUSER")
    master_arn = local_sm.create_secret(master, redshift_secret(redshift_proxy, master, master_password))
    app, app_initial = f"{role_name}_a", new_password()
    admin.create_role(app, app_initial)
    app_arn = local_sm.create_secret(
        app, redshift_secret(redshift_proxy, app, app_initial, masterarn=master_arn)
    )
    start = pg.log_path.stat().st_size  # the set-up above sent its passwords in clear, as a DBA might

    rotated = [rotate(local_sm, redshift.handler, single_arn) for _ in range(2)]
    rotated += [rotate(local_sm, redshift.handler, app_arn) for _ in range(2)]

    with pg.log_path.open("rb") as file:
        file.seek(start)
        log = file.read().decode(errors="replace")
    assert leaked(log, initial, master_password, app_initial, *rotated) == 0
    verifier = "PASSWORD 'SCRAM-SHA-256$4096:"
    assert log.count(f"ALTER USER {single} {verifier}") == 2, "each change was logged, as a verifier"
    assert log.count(f"CREATE USER {app}_clone {verifier}") == 1
    assert log.count(f"ALTER USER {app} {verifier}") == 1
    assert admin.logs_in(single, rotated[1]) and not admin.logs_in(single, rotated[0])
    assert admin.logs_in(f"{app}_clone", rotated[2]) and admin.logs_in(app, rotated[3])


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
