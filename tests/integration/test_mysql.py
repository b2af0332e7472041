"""What only the MySQL engine has, on a real MariaDB: accounts are `user`@`host`, a user without
CREATE USER changes its own password with SET PASSWORD, and the clone of alternating users holds
exactly the original's privileges, replayed from SHOW GRANTS and kept in step.

The scenarios every engine shares are in test_single_user.py and test_alternating_users.py.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from rotators.engines.mysql import MySQLRotator
from rotators.errors import PasswordChangeError
from rotators.secrets import AWSCURRENT, AWSPREVIOUS
from rotators.testing.mariadb import MariaDBServer
from tests.admins import MariaDBAdmin
from tests.engines import MYSQL, Database, Engine, Login

HOST = MariaDBAdmin.HOST


@pytest.fixture
def engine() -> Engine:
    return MYSQL


def password_hash(admin: MariaDBAdmin, user: str, host: str) -> str:
    rows = admin.sql(
        "SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = %s", (user, host)
    )
    return str(rows[0][0])


def connect(server: MariaDBServer, user: str, password: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        **{**server.admin_kwargs(), "user": user, "password": password, "autocommit": True}
    )


# -- single user --------------------------------------------------------------------------------------------
def test_the_account_of_the_login_host_changes_not_the_wildcard_one(
    db: Database, mariadb_admin: MariaDBAdmin
) -> None:
    """'app'@'127.0.0.1' and 'app'@'%' are two accounts; a local login is the first one, so the
    rotator must change that one (found with CURRENT_USER()) and leave '%' alone."""
    login = db.add_user(grants=())
    mariadb_admin.create_user(login.username, db.new_password(), host="%")
    wildcard_before = password_hash(mariadb_admin, login.username, "%")
    arn = db.store(login)

    db.rotate(arn)

    db.assert_rotated(arn, login.password)
    assert password_hash(mariadb_admin, login.username, "%") == wildcard_before, "'app'@'%' was not touched"


def test_an_account_at_a_host_other_than_the_wildcard(db: Database, mariadb_admin: MariaDBAdmin) -> None:
    """Only 'app'@'127.0.0.1' exists: a statement for 'app'@'%' would fail (no such account)."""
    login = db.add_user(grants=())
    assert mariadb_admin.sql("SELECT Host FROM mysql.user WHERE User = %s", (login.username,)) == [(HOST,)]
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)


def test_a_user_without_create_user_rotates_with_set_password(db: Database, mariadb: MariaDBServer) -> None:
    """On MariaDB such a user gets error 1227 from ALTER USER, even for its own account."""
    login = db.add_user()
    with (
        pymysql.connect(
            **{**mariadb.admin_kwargs(), "user": login.username, "password": login.password}
        ) as conn,
        conn.cursor() as cursor,
        pytest.raises(pymysql.err.OperationalError, match="CREATE USER") as refused,
    ):
        cursor.execute("ALTER USER CURRENT_USER() IDENTIFIED BY %s", ("Not-Used-1",))
    assert refused.value.args[0] == 1227
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)


def test_tls_is_used_by_default(db: Database) -> None:
    rotator = MySQLRotator()
    arn = db.store(db.add_user())
    current = rotator.parse(db.sm.client.get_secret_value(SecretId=arn)["SecretString"], where="test")
    with rotator.connect(current, current.username, current.password) as session:
        status = rotator._rows(session, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", ())
        assert status[0][1], "the session is encrypted"
        assert rotator.transport(session, current).startswith("TLS (TLSv1.")


# -- alternating users: the clone's privileges -------------------------------------------------------
@pytest.fixture
def master(db: Database) -> Login:
    return db.add_master()


@pytest.fixture
def shop(mariadb_admin: MariaDBAdmin, role_name: str, master: Login) -> str:
    """A database with a table, a column whose name holds ' TO ', and a role (the master may grant it)."""
    name = f"shop_{role_name}"
    mariadb_admin.sql(f"CREATE DATABASE `{name}`")
    mariadb_admin.sql(f"CREATE TABLE `{name}`.orders (id int, `ship TO` varchar(20))")
    mariadb_admin.sql(f"CREATE TABLE `{name}`.audit (id int)")
    mariadb_admin.sql(f"CREATE ROLE `reader {role_name}`")
    mariadb_admin.sql(f"GRANT SELECT ON `{name}`.audit TO `reader {role_name}`")
    mariadb_admin.sql(f"GRANT `reader {role_name}` TO %s@%s WITH ADMIN OPTION", (master.username, HOST))
    return name


@pytest.fixture
def app_secret(db: Database, mariadb_admin: MariaDBAdmin, role_name: str, master: Login, shop: str) -> str:
    """An application user with the kinds of grants SHOW GRANTS prints: database and column
    privileges, WITH GRANT OPTION, a role with a default role, REQUIRE SSL and a resource limit."""
    login = db.add_user(role_name, grants=())
    mariadb_admin.sql(f"GRANT SELECT, INSERT ON `{shop}`.* TO %s@%s WITH GRANT OPTION", (role_name, HOST))
    mariadb_admin.sql(f"GRANT UPDATE (id, `ship TO`) ON `{shop}`.orders TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"GRANT `reader {role_name}` TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"SET DEFAULT ROLE `reader {role_name}` FOR %s@%s", (role_name, HOST))
    mariadb_admin.sql("ALTER USER %s@%s REQUIRE SSL WITH MAX_USER_CONNECTIONS 20", (role_name, HOST))
    return db.store(login, masterarn=db.store(master))


def test_the_clone_gets_every_kind_of_grant(
    db: Database, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str
) -> None:
    db.rotate(app_secret)
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
    db: Database, mariadb: MariaDBServer, app_secret: str, shop: str
) -> None:
    clone = db.rotate(app_secret)
    with connect(mariadb, clone["username"], clone["password"]) as conn, conn.cursor() as cursor:
        cursor.execute(f"INSERT INTO `{shop}`.orders VALUES (1, 'Oslo')")
        cursor.execute(f"UPDATE `{shop}`.orders SET `ship TO` = 'Bergen'")
        cursor.execute(f"SELECT count(*) FROM `{shop}`.audit")  # through the default role
        with pytest.raises(pymysql.err.OperationalError, match="DELETE command denied"):
            cursor.execute(f"DELETE FROM `{shop}`.orders")


def test_grants_are_refreshed_so_they_cannot_drift_apart(
    db: Database, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str, shop: str
) -> None:
    """Privileges added to or taken from the original, and stray grants on the clone, are all
    put right the next time the clone's password is set."""
    clone = f"{role_name}_clone"
    db.rotate(app_secret)  # creates the clone
    mariadb_admin.sql(f"GRANT DELETE ON `{shop}`.orders TO %s@%s", (role_name, HOST))
    mariadb_admin.sql(f"REVOKE `reader {role_name}` FROM %s@%s", (role_name, HOST))
    mariadb_admin.sql("ALTER USER %s@%s REQUIRE NONE WITH MAX_USER_CONNECTIONS 0", (role_name, HOST))
    mariadb_admin.sql(f"GRANT DROP ON `{shop}`.* TO %s@%s", (clone, HOST))
    assert mariadb_admin.grants(clone) != mariadb_admin.grants(role_name)

    db.rotate(app_secret)  # back to the original
    assert db.rotate(app_secret)["username"] == clone  # the clone again: refreshed

    # MariaDB keeps printing a default role after the role is revoked; it is not granted again.
    stale = f"SET DEFAULT ROLE `reader {role_name}` FOR <account>"
    granted = mariadb_admin.grants(clone)
    assert granted == mariadb_admin.grants(role_name) - {stale}
    text = "\n".join(granted)
    assert "DELETE ON" in text or ", DELETE" in text, "added to the original: added to the clone"
    assert "reader" not in text and "REQUIRE SSL" not in text, "taken from the original: taken from the clone"
    assert "DROP" not in text, "the stray grant on the clone is gone"


def test_the_clone_is_made_at_the_original_host_part(
    db: Database, mariadb_admin: MariaDBAdmin, master: Login
) -> None:
    login = db.add_user()
    db.rotate(db.store(login, masterarn=db.store(master)))
    hosts = mariadb_admin.sql("SELECT Host FROM mysql.user WHERE User = %s", (f"{login.username}_clone",))
    assert hosts == [(HOST,)], "'app_clone'@'127.0.0.1', not '%'"


def test_accounts_at_several_hosts_are_refused_before_anything_changes(
    db: Database, mariadb_admin: MariaDBAdmin, master: Login
) -> None:
    """The master cannot tell which of 'app'@'127.0.0.1' and 'app'@'%' the application uses."""
    login = db.add_user(grants=())
    mariadb_admin.create_user(login.username, login.password, host="%")
    arn = db.store(login, masterarn=db.store(master))
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    db.fails(arn, token, "setSecret", PasswordChangeError, "several hosts")
    assert not db.admin.user_exists(f"{login.username}_clone")


def test_a_refresh_that_fails_leaves_both_logins_working_and_the_retry_succeeds(
    db: Database, mariadb_admin: MariaDBAdmin, app_secret: str, role_name: str, master: Login
) -> None:
    """The master may grant only the roles it administers; a new role it cannot grant stops the
    refresh before the clone's password changes, so AWSPREVIOUS keeps logging in."""
    db.rotate(app_secret)
    current = db.rotate(app_secret)
    previous = db.sm.value(app_secret, AWSPREVIOUS)
    mariadb_admin.sql(f"CREATE ROLE `auditor {role_name}`")
    mariadb_admin.sql(f"GRANT `auditor {role_name}` TO %s@%s", (role_name, HOST))

    token = db.sm.start_rotation(app_secret)
    db.invoke(app_secret, token, "createSecret")
    db.fails(app_secret, token, "setSecret", PasswordChangeError, "MySQL refused")
    assert db.logs_in(current["username"], current["password"])
    assert db.logs_in(previous["username"], previous["password"]), "the clone's old password works"

    mariadb_admin.sql(f"GRANT `auditor {role_name}` TO %s@%s WITH ADMIN OPTION", (master.username, HOST))
    db.invoke(app_secret, token, "setSecret", "testSecret", "finishSecret")
    assert db.sm.value(app_secret, AWSCURRENT)["username"] == f"{role_name}_clone"
    assert mariadb_admin.grants(f"{role_name}_clone") == mariadb_admin.grants(role_name)
