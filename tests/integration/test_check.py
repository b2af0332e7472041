"""`rotators check` against a real PostgreSQL: good secrets pass, each broken one fails its row."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotators.cli import main
from rotators.testing.mariadb import MariaDBServer
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Admin, MariaDBAdmin, Watched, mysql_secret, pg_secret


def check(leak_check: Watched, arn: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run the command as a user would, and return its exit code and rows by name (from --json)."""
    code = main(["check", "--secret-id", arn, "--json", *extra])
    report = json.loads(leak_check.read_output())
    assert report["passed"] is (code == 0)
    return code, {row["name"]: row for row in report["checks"]}


@pytest.fixture
def user(admin: Admin, role_name: str, new_password: Callable[[], str]) -> tuple[str, str]:
    password = new_password()
    admin.create_role(role_name, password)
    return role_name, password


@pytest.fixture
def master(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    name, password = f"m_{role_name}", new_password()
    admin.create_role(name, password, "CREATEROLE")
    return local_sm.create_secret(name, pg_secret(pg, name, password))


def test_a_good_single_user_secret_passes_and_nothing_changes(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    user: tuple[str, str],
    leak_check: Watched,
) -> None:
    arn = local_sm.create_secret(user[0], pg_secret(pg, *user))
    before = local_sm.stages(arn)
    assert main(["check", "--secret-id", arn]) == 0
    table = leak_check.read_output()
    assert "FAIL" not in table and table.rstrip().endswith("All checks passed.")
    assert "PASS  user logs in" in table
    assert re.search(r"TLS \(TLSv1\.[23], sslmode=verify-full, certificate verified, PostgreSQL \d+", table)
    assert "INFO  rotation settings" in table and "enabled=False" in table
    assert local_sm.stages(arn) == before
    assert admin.logs_in(*user)


def test_a_good_alternating_secret_passes(
    local_sm: LocalSecretsManager, pg: PostgresServer, user: tuple[str, str], master: str, leak_check: Watched
) -> None:
    arn = local_sm.create_secret(user[0], pg_secret(pg, *user, masterarn=master))
    code, rows = check(leak_check, arn)
    assert code == 0
    assert rows["master secret"]["passed"] and rows["master user logs in"]["passed"]
    assert rows["user logs in"]["passed"], "the current credentials themselves are checked too"
    assert rows["privileges"]["detail"] == "can change the password and manage the clone"
    assert "alternating users" in rows["secret format"]["detail"]


def test_the_master_safety_rules_are_checked_before_rotation_is_on(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    user: tuple[str, str],
    master: str,
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    """What setSecret would refuse, `check` reports: an administrative user, and the master's
    own user as one of the pair; a master that logs in with its own TLS settings either way."""
    arn = local_sm.create_secret(user[0], pg_secret(pg, *user, masterarn=master))
    code, rows = check(leak_check, arn)
    assert code == 0 and rows["master safety"]["passed"]
    ops, password = f"ops_{user[0]}", new_password()
    admin.create_role(ops, password, "CREATEROLE")
    code, rows = check(
        leak_check, local_sm.create_secret(ops, pg_secret(pg, ops, password, masterarn=master))
    )
    assert code == 1 and "is CREATEROLE" in rows["master safety"]["detail"]
    theirs = local_sm.value(master, "AWSCURRENT")
    itself = pg_secret(pg, theirs["username"], theirs["password"], masterarn=master)
    code, rows = check(leak_check, local_sm.create_secret(f"self-{user[0]}", itself))
    assert code == 1 and "is the master's own user" in rows["master safety"]["detail"]


def test_a_wrong_password_fails_the_login(
    local_sm: LocalSecretsManager, pg: PostgresServer, user: tuple[str, str], leak_check: Watched
) -> None:
    wrong = "Wrong-" + user[1]
    leak_check.add(wrong)
    code, rows = check(leak_check, local_sm.create_secret(user[0], pg_secret(pg, user[0], wrong)))
    assert code == 1
    assert rows["user logs in"]["passed"] is False and "refused the login" in rows["user logs in"]["detail"]


def test_an_unknown_certificate_authority_fails_the_login(
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    user: tuple[str, str],
    leak_check: Watched,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(CertificateAuthority.create(tmp_path).cert_path))
    code, rows = check(leak_check, local_sm.create_secret(user[0], pg_secret(pg, *user)))
    assert code == 1 and "certificate verify failed" in rows["user logs in"]["detail"]


def test_a_master_without_createrole_fails_the_privileges(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    user: tuple[str, str],
    new_password: Callable[[], str],
    leak_check: Watched,
) -> None:
    name, password = f"weak_{user[0]}", new_password()
    admin.create_role(name, password)
    weak = local_sm.create_secret(name, pg_secret(pg, name, password))
    code, rows = check(leak_check, local_sm.create_secret(user[0], pg_secret(pg, *user, masterarn=weak)))
    assert code == 1 and "lacks CREATEROLE" in rows["privileges"]["detail"]


@pytest.mark.parametrize(
    ("change", "row", "expected"),
    [
        ({"engine": "mysql"}, "secret format", "engine 'mysql'"),
        ({"host": None}, "secret format", "lacks 'host'"),
        ({"port": 70000}, "secret format", "between 1 and 65535"),
        (
            {"masterarn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf"},
            "master secret",
            "has no value labelled AWSCURRENT",
        ),
    ],
)
def test_a_broken_secret_fails_its_row(
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    user: tuple[str, str],
    leak_check: Watched,
    change: dict[str, Any],
    row: str,
    expected: str,
) -> None:
    value = {**pg_secret(pg, *user), **change}
    code, rows = check(leak_check, local_sm.create_secret(user[0], value), "--engine", "postgresql")
    assert code == 1
    assert rows[row]["passed"] is False and expected in rows[row]["detail"] and rows[row]["fix"]


def test_a_master_on_another_port_is_refused(
    local_sm: LocalSecretsManager,
    admin: Admin,
    pg: PostgresServer,
    user: tuple[str, str],
    master: str,
    leak_check: Watched,
) -> None:
    elsewhere = {**local_sm.value(master, "AWSCURRENT"), "port": pg.port + 1}
    other = local_sm.create_secret(f"other_{user[0]}", elsewhere)
    code, rows = check(leak_check, local_sm.create_secret(user[0], pg_secret(pg, *user, masterarn=other)))
    assert code == 1 and "not 127.0.0.1" in rows["master secret"]["detail"]


def test_a_user_name_whose_clone_does_not_fit_fails(
    local_sm: LocalSecretsManager, pg: PostgresServer, master: str, leak_check: Watched
) -> None:
    value = pg_secret(pg, "u" * 60, "Long-User-Pass-1", masterarn=master)
    code, rows = check(leak_check, local_sm.create_secret(f"long-{master[-6:]}", value))
    assert code == 1 and rows["user names"]["passed"] is False
    assert "longer than 63 bytes" in rows["user names"]["detail"]


def test_excluded_characters_weaker_than_the_engine_needs_fail(
    local_sm: LocalSecretsManager,
    pg: PostgresServer,
    user: tuple[str, str],
    leak_check: Watched,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "/@")
    code, rows = check(leak_check, local_sm.create_secret(user[0], pg_secret(pg, *user)))
    assert code == 1 and "EXCLUDE_CHARACTERS should keep" in rows["password policy"]["fix"]


def test_a_missing_secret_fails_the_first_row(local_sm: LocalSecretsManager, leak_check: Watched) -> None:
    code, rows = check(leak_check, "no-such-secret")
    assert code == 1 and list(rows) == ["secret readable"]


# -- the same command against a real MariaDB (the MySQL engine) ----------------------------------------
def test_mariadb_good_secrets_pass_in_both_strategies(
    mysql_sm: LocalSecretsManager,
    mariadb: MariaDBServer,
    mariadb_admin: MariaDBAdmin,
    role_name: str,
    leak_check: Watched,
) -> None:
    user, password = role_name, "Init-" + role_name
    master, master_password = f"m_{role_name}", "Master-" + role_name
    mariadb_admin.create_user(user, password, f"SELECT ON `{role_name}`.*")
    mariadb_admin.create_user(master, master_password, "ALL PRIVILEGES ON *.*")
    mariadb_admin.sql("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (master, "127.0.0.1"))
    single = mysql_sm.create_secret(user, mysql_secret(mariadb, user, password))
    code, rows = check(leak_check, single)
    assert code == 0 and "certificate verified" in rows["user logs in"]["detail"]
    master_arn = mysql_sm.create_secret(master, mysql_secret(mariadb, master, master_password))
    alternating = mysql_sm.create_secret(
        f"alt-{user}", mysql_secret(mariadb, user, password, masterarn=master_arn)
    )
    code, rows = check(leak_check, alternating)
    assert code == 0 and rows["privileges"]["detail"] == "can change the password and manage the clone"
    assert rows["user names"]["detail"] == f"'{user}' and '{user}_clone' alternate"


def test_mariadb_broken_secrets_fail(
    mysql_sm: LocalSecretsManager,
    mariadb: MariaDBServer,
    mariadb_admin: MariaDBAdmin,
    role_name: str,
    leak_check: Watched,
) -> None:
    user, password = role_name, "Init-" + role_name
    weak, weak_password = f"w_{role_name}", "Weak-" + role_name
    mariadb_admin.create_user(user, password)
    mariadb_admin.create_user(weak, weak_password)
    wrong = mysql_sm.create_secret(user, mysql_secret(mariadb, user, "Wrong-" + password))
    code, rows = check(leak_check, wrong)
    assert code == 1 and rows["user logs in"]["passed"] is False
    weak_arn = mysql_sm.create_secret(weak, mysql_secret(mariadb, weak, weak_password))
    code, rows = check(
        leak_check,
        mysql_sm.create_secret(f"alt-{user}", mysql_secret(mariadb, user, password, masterarn=weak_arn)),
    )
    assert code == 1 and rows["privileges"]["passed"] is False and rows["privileges"]["fix"]
    long_name = "u" * 76  # MariaDB takes 80 characters: the clone's 82 do not fit
    code, rows = check(
        leak_check,
        mysql_sm.create_secret(
            f"long-{user}", mysql_secret(mariadb, long_name, password, masterarn=weak_arn)
        ),
    )
    assert code == 1 and "longer than 80 characters" in rows["user names"]["detail"]
