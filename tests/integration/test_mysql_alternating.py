"""Alternating users on a real MariaDB: a master changes `app` and `app_clone` in turns, and the
clone holds exactly the original's privileges, replayed from SHOW GRANTS and kept in step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from rotators.engines.mysql import handler
from rotators.errors import PasswordChangeError, SecretFormatError
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import MariaDBAdmin, invoke, mysql_secret

HOST = "127.0.0.1"


@pytest.fixture
def master_arn(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """A master like RDS's: every privilege with GRANT OPTION, not root."""
    name, password = f"master_{role_name}", new_password()
    mariadb_admin.create_user(name, password, "ALL PRIVILEGES ON *.*")
    mariadb_admin.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (name, HOST))
    return mysql_sm.create_secret(name, mysql_secret(mariadb, name, password))


@pytest.fixture
def shop(mariadb_admin: MariaDBAdmin, role_name: str, master_arn: str) -> str:
    """A database with a table, a column whose name holds ' TO ', and a role (the master may grant it)."""
    db = f"shop_{role_name}"
    master = f"master_{role_name}"
    mariadb_admin.sql(f"CREATE DATABASE `{db}`")
    mariadb_admin.sql(f"CREATE TABLE `{db}`.orders (id int, `ship TO` varchar(20))")
    mariadb_admin.sql(f"CREATE TABLE `{db}`.audit (id int)")
    mariadb_admin.sql(f"CREATE ROLE `reader {role_name}`")
    mariadb_admin.sql(f"GRANT SELECT ON `{db}`.audit TO `reader {role_name}`")
    mariadb_admin.sql(f"GRANT `reader {role_name}` TO %s@%s WITH ADMIN OPTION", (master, HOST))
    return db


def make_app(
    admin: MariaDBAdmin,
    server: MariaDBServer,
    sm: LocalSecretsManager,
    name: str,
    password: str,
    **extra: Any,
) -> str:
    return sm.create_secret(f"{name}-{uuid.uuid4().hex[:6]}", mysql_secret(server, name, password, **extra))


@pytest.fixture
def app_secret(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    master_arn: str,
    shop: str,
    new_password: Callable[[], str],
) -> str:
    """An application user with the kinds of grants SHOW GRANTS prints: database and column
    privileges, WITH GRANT OPTION, a role with a default role, REQUIRE SSL and a resource limit."""
    password = new_password()
    mariadb_admin.create_user(role_name, password)
    mariadb_admin.sql(f"GRANT SELECT, INSERT ON `{shop}`.* TO %s@%s WITH GRANT OPTION", (role_name, HOST))
    mariadb_admin.sql(f"GRANT UPDATE (id, `ship TO`) ON `{shop}`.orders TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"GRANT `reader {role_name}` TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"SET DEFAULT ROLE `reader {role_name}` FOR %s@%s", (role_name, HOST))
    mariadb_admin.sql("ALTER USER %s@%s REQUIRE SSL WITH MAX_USER_CONNECTIONS 20", (role_name, HOST))
    return make_app(mariadb_admin, mariadb, mysql_sm, role_name, password, masterarn=master_arn)


def connect(server: MariaDBServer, user: str, password: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        **{**server.admin_kwargs(), "user": user, "password": password, "autocommit": True}
    )


def test_two_alternating_rotations_keep_both_logins_working(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str
) -> None:
    first = mysql_sm.value(app_secret, "AWSCURRENT")

    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    second = mysql_sm.value(app_secret, "AWSCURRENT")
    assert second["username"] == f"{role_name}_clone"
    assert mysql_sm.value(app_secret, "AWSPREVIOUS") == first
    assert mariadb_admin.logs_in(first["username"], first["password"]), "the previous login keeps working"
    assert mariadb_admin.logs_in(second["username"], second["password"])
    assert mariadb_admin.grants(f"{role_name}_clone") == mariadb_admin.grants(role_name)

    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    third = mysql_sm.value(app_secret, "AWSCURRENT")
    assert third["username"] == role_name
    assert third["password"] not in (first["password"], second["password"])
    assert mysql_sm.value(app_secret, "AWSPREVIOUS") == second
    assert mariadb_admin.logs_in(second["username"], second["password"]), "the clone keeps working"
    assert mariadb_admin.logs_in(third["username"], third["password"])
    assert not mariadb_admin.logs_in(role_name, first["password"])
    assert sorted(mysql_sm.stages(app_secret).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]


def test_the_clone_gets_every_kind_of_grant(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str
) -> None:
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    clone = mariadb_admin.grants(f"{role_name}_clone")
    assert clone == mariadb_admin.grants(role_name)
    assert {
        f"GRANT `reader {role_name}` TO <account>",
        f"SET DEFAULT ROLE `reader {role_name}` FOR <account>",
        "GRANT USAGE ON *.* TO <account> REQUIRE SSL WITH MAX_USER_CONNECTIONS 20",
        f"GRANT SELECT, INSERT ON `shop_{role_name}`.* TO <account> WITH GRANT OPTION",
        f"GRANT UPDATE (`id`, `ship TO`) ON `shop_{role_name}`.`orders` TO <account>",
    } == clone
    hashes = mariadb_admin.sql(
        "SELECT User, authentication_string FROM mysql.user WHERE User LIKE %s", (role_name + "%",)
    )
    assert len({h for _, h in hashes}) == 2, "the clone has its own password, not the original's hash"


def test_the_clone_can_do_what_the_original_can(
    mysql_sm: LocalSecretsManager, mariadb: MariaDBServer, app_secret: str, shop: str
) -> None:
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    clone = mysql_sm.value(app_secret, "AWSCURRENT")
    with connect(mariadb, clone["username"], clone["password"]) as conn, conn.cursor() as cursor:
        cursor.execute(f"INSERT INTO `{shop}`.orders VALUES (1, 'Oslo')")
        cursor.execute(f"UPDATE `{shop}`.orders SET `ship TO` = 'Bergen'")
        cursor.execute(f"SELECT count(*) FROM `{shop}`.audit")  # through the default role
        with pytest.raises(pymysql.err.OperationalError, match="DELETE command denied"):
            cursor.execute(f"DELETE FROM `{shop}`.orders")


def test_grants_are_refreshed_so_they_cannot_drift_apart(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str, shop: str
) -> None:
    """Privileges added to or taken from the original, and stray grants on the clone, are all
    put right the next time the clone's password is set."""
    clone = f"{role_name}_clone"
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))  # creates the clone
    mariadb_admin.sql(f"GRANT DELETE ON `{shop}`.orders TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"REVOKE `reader {role_name}` FROM %s@%s", (role_name, HOST))
    mariadb_admin.sql("ALTER USER %s@%s REQUIRE NONE WITH MAX_USER_CONNECTIONS 0", (role_name, HOST))
    mariadb_admin.sql(f"GRANT DROP ON `{shop}`.* TO %s@%s", (clone, HOST))
    assert mariadb_admin.grants(clone) != mariadb_admin.grants(role_name)

    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))  # back to the original
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))  # the clone again: refreshed

    assert mysql_sm.value(app_secret, "AWSCURRENT")["username"] == clone
    # MariaDB keeps printing a default role after the role is revoked; it is not granted again.
    stale = f"SET DEFAULT ROLE `reader {role_name}` FOR <account>"
    granted = mariadb_admin.grants(clone)
    assert granted == mariadb_admin.grants(role_name) - {stale}
    text = "\n".join(granted)
    assert "DELETE ON" in text or ", DELETE" in text, "added to the original: added to the clone"
    assert "reader" not in text and "REQUIRE SSL" not in text, "taken from the original: taken from the clone"
    assert "DROP" not in text, "the stray grant on the clone is gone"


def test_names_with_quotes_and_backticks(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    master_arn: str,
    shop: str,
    new_password: Callable[[], str],
) -> None:
    name = f"O'Neil `we\"ird` TO {uuid.uuid4().hex[:4]}"
    password = new_password()
    mariadb_admin.create_user(name, password)
    mariadb_admin.sql(f"GRANT SELECT ON `{shop}`.* TO %s@%s", (name, HOST))
    arn = make_app(mariadb_admin, mariadb, mysql_sm, name, password, masterarn=master_arn)
    for _ in range(2):
        invoke(handler, arn, mysql_sm.start_rotation(arn))
        current = mysql_sm.value(arn, "AWSCURRENT")
        assert mariadb_admin.logs_in(current["username"], current["password"])
    assert mariadb_admin.grants(name + "_clone") == mariadb_admin.grants(name)


def test_the_clone_is_made_at_the_original_host_part(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    master_arn: str,
    new_password: Callable[[], str],
) -> None:
    password = new_password()
    mariadb_admin.create_user(role_name, password)
    arn = make_app(mariadb_admin, mariadb, mysql_sm, role_name, password, masterarn=master_arn)
    invoke(handler, arn, mysql_sm.start_rotation(arn))
    hosts = mariadb_admin.sql("SELECT Host FROM mysql.user WHERE User = %s", (f"{role_name}_clone",))
    assert hosts == [(HOST,)], "'app_clone'@'127.0.0.1', not '%'"


def test_accounts_at_several_hosts_are_refused_before_anything_changes(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    master_arn: str,
    new_password: Callable[[], str],
) -> None:
    """The master cannot tell which of 'app'@'127.0.0.1' and 'app'@'%' the application uses."""
    password = new_password()
    mariadb_admin.create_user(role_name, password)
    mariadb_admin.create_user(role_name, password, host="%")
    arn = make_app(mariadb_admin, mariadb, mysql_sm, role_name, password, masterarn=master_arn)
    token = mysql_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mysql_sm.stages(arn)
    with pytest.raises(PasswordChangeError, match="several hosts"):
        invoke(handler, arn, token, "setSecret")
    assert mysql_sm.stages(arn) == labels
    assert mariadb_admin.sql("SELECT 1 FROM mysql.user WHERE User = %s", (f"{role_name}_clone",)) == []


def test_a_master_without_privileges_fails_clearly_and_moves_nothing(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    weak, weak_password, password = f"weak_{role_name}", new_password(), new_password()
    mariadb_admin.create_user(weak, weak_password)
    mariadb_admin.create_user(role_name, password)
    weak_arn = mysql_sm.create_secret(weak, mysql_secret(mariadb, weak, weak_password))
    arn = make_app(mariadb_admin, mariadb, mysql_sm, role_name, password, masterarn=weak_arn)
    token = mysql_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mysql_sm.stages(arn)
    with pytest.raises(PasswordChangeError, match="MySQL refused"):
        invoke(handler, arn, token, "setSecret")
    assert mysql_sm.stages(arn) == labels
    assert mariadb_admin.logs_in(role_name, password)


@pytest.mark.parametrize(("engine", "length", "limit"), [("mariadb", 75, 80), ("mysql", 27, 32)])
def test_a_clone_name_that_does_not_fit_fails_at_create_before_anything_changes(
    mysql_sm: LocalSecretsManager,
    mariadb_admin: MariaDBAdmin,
    mariadb: MariaDBServer,
    master_arn: str,
    new_password: Callable[[], str],
    engine: str,
    length: int,
    limit: int,
) -> None:
    name = uuid.uuid4().hex[:8] + "u" * (length - 8)
    password = new_password()
    mariadb_admin.create_user(name, password)
    arn = make_app(mariadb_admin, mariadb, mysql_sm, name, password, masterarn=master_arn, engine=engine)
    token = mysql_sm.start_rotation(arn)
    with pytest.raises(SecretFormatError, match=f"longer than {limit} characters"):
        invoke(handler, arn, token, "createSecret")
    with pytest.raises(mysql_sm.client.exceptions.ResourceNotFoundException):
        mysql_sm.client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
    assert mariadb_admin.logs_in(name, password)
    assert mariadb_admin.sql("SELECT 1 FROM mysql.user WHERE User = %s", (name + "_clone",)) == []


def test_a_refresh_that_fails_leaves_both_logins_working_and_the_retry_succeeds(
    mysql_sm: LocalSecretsManager, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str
) -> None:
    """The master may grant only the roles it administers; a new role it cannot grant stops the
    refresh before the clone's password changes, so AWSPREVIOUS keeps logging in."""
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    invoke(handler, app_secret, mysql_sm.start_rotation(app_secret))
    current, previous = mysql_sm.value(app_secret, "AWSCURRENT"), mysql_sm.value(app_secret, "AWSPREVIOUS")
    mariadb_admin.sql(f"CREATE ROLE `auditor {role_name}`")
    mariadb_admin.sql(f"GRANT `auditor {role_name}` TO %s@%s", (role_name, HOST))

    token = mysql_sm.start_rotation(app_secret)
    invoke(handler, app_secret, token, "createSecret")
    labels = mysql_sm.stages(app_secret)
    with pytest.raises(PasswordChangeError, match="MySQL refused"):
        invoke(handler, app_secret, token, "setSecret")
    assert mysql_sm.stages(app_secret) == labels
    assert mariadb_admin.logs_in(current["username"], current["password"])
    assert mariadb_admin.logs_in(previous["username"], previous["password"]), "the clone's old password works"

    mariadb_admin.sql(
        f"GRANT `auditor {role_name}` TO %s@%s WITH ADMIN OPTION", (f"master_{role_name}", HOST)
    )
    invoke(handler, app_secret, token, "setSecret", "testSecret", "finishSecret")
    assert mariadb_admin.grants(f"{role_name}_clone") == mariadb_admin.grants(role_name)
