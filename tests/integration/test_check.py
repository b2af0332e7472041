"""`rotators check` against a real PostgreSQL: good secrets pass, each broken one fails its row."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rotators.cli import main
from rotators.secrets import AWSCURRENT
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Watched
from tests.engines import MYSQL, POSTGRESQL, Database, Engine, Login, engines

ON_MARIADB = pytest.mark.parametrize("engine", engines(among=(MYSQL,)))


def check(leak_check: Watched, arn: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run the command as a user would, and return its exit code and rows by name (from --json)."""
    code = main(["check", "--secret-id", arn, "--json", *extra])
    report = json.loads(leak_check.read_output())
    assert report["passed"] is (code == 0)
    return code, {row["name"]: row for row in report["checks"]}


@pytest.fixture
def engine() -> Engine:
    """PostgreSQL, unless a test names another engine."""
    return POSTGRESQL


@pytest.fixture
def user(db: Database) -> Login:
    return db.add_user()


@pytest.fixture
def master(db: Database) -> str:
    return db.master_secret()


def test_a_good_single_user_secret_passes_and_nothing_changes(
    db: Database, user: Login, leak_check: Watched
) -> None:
    arn = db.store(user)
    before = db.sm.stages(arn)
    assert main(["check", "--secret-id", arn]) == 0
    table = leak_check.read_output()
    assert "FAIL" not in table and table.rstrip().endswith("All checks passed.")
    assert "PASS  user logs in" in table
    assert re.search(r"TLS \(TLSv1\.[23], sslmode=verify-full, certificate verified, PostgreSQL \d+", table)
    assert "INFO  rotation settings" in table and "enabled=False" in table
    assert db.sm.stages(arn) == before
    assert db.logs_in(user.username, user.password)


def test_a_good_alternating_secret_passes(
    db: Database, user: Login, master: str, leak_check: Watched
) -> None:
    code, rows = check(leak_check, db.store(user, masterarn=master))
    assert code == 0
    assert rows["master secret"]["passed"] and rows["master user logs in"]["passed"]
    assert rows["user logs in"]["passed"], "the current credentials themselves are checked too"
    assert rows["privileges"]["detail"] == "can change the password and manage the clone"
    assert "alternating users" in rows["secret format"]["detail"]


def test_the_master_safety_rules_are_checked_before_rotation_is_on(
    db: Database, user: Login, master: str, leak_check: Watched
) -> None:
    """What setSecret would refuse, `check` reports: an administrative user, and the master's
    own user as one of the pair; a master that logs in with its own TLS settings either way."""
    code, rows = check(leak_check, db.store(user, masterarn=master))
    assert code == 0 and rows["master safety"]["passed"]
    ops = db.add_user(f"ops_{user.username}", grants=("CREATEROLE",))
    code, rows = check(leak_check, db.store(ops, masterarn=master))
    assert code == 1 and "is CREATEROLE" in rows["master safety"]["detail"]
    theirs = db.sm.value(master, AWSCURRENT)
    code, rows = check(leak_check, db.store(Login(theirs["username"], theirs["password"]), masterarn=master))
    assert code == 1 and "is the master's own user" in rows["master safety"]["detail"]


def test_a_wrong_password_fails_the_login(db: Database, user: Login, leak_check: Watched) -> None:
    wrong = "Wrong-" + user.password
    leak_check.add(wrong)
    code, rows = check(leak_check, db.store(Login(user.username, wrong)))
    assert code == 1
    assert rows["user logs in"]["passed"] is False and "refused the login" in rows["user logs in"]["detail"]


def test_an_unknown_certificate_authority_fails_the_login(
    db: Database, user: Login, leak_check: Watched, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(CertificateAuthority.create(tmp_path).cert_path))
    code, rows = check(leak_check, db.store(user))
    assert code == 1 and "certificate verify failed" in rows["user logs in"]["detail"]


def test_a_master_without_createrole_fails_the_privileges(
    db: Database, user: Login, leak_check: Watched
) -> None:
    weak = db.store(db.add_user(f"weak_{user.username}"))
    code, rows = check(leak_check, db.store(user, masterarn=weak))
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
    db: Database, user: Login, leak_check: Watched, change: dict[str, Any], row: str, expected: str
) -> None:
    code, rows = check(leak_check, db.store(user, **change), "--engine", "postgresql")
    assert code == 1
    assert rows[row]["passed"] is False and expected in rows[row]["detail"] and rows[row]["fix"]


def test_a_master_on_another_port_is_refused(
    db: Database, user: Login, master: str, leak_check: Watched
) -> None:
    elsewhere = {**db.sm.value(master, AWSCURRENT), "port": db.server.port + 1}
    other = db.sm.create_secret(db.name("other"), elsewhere)
    code, rows = check(leak_check, db.store(user, masterarn=other))
    assert code == 1 and "not 127.0.0.1" in rows["master secret"]["detail"]


def test_a_user_name_whose_clone_does_not_fit_fails(db: Database, master: str, leak_check: Watched) -> None:
    code, rows = check(leak_check, db.store(Login("u" * 60, "Long-User-Pass-1"), masterarn=master))
    assert code == 1 and rows["user names"]["passed"] is False
    assert "longer than 63 bytes" in rows["user names"]["detail"]


def test_excluded_characters_weaker_than_the_engine_needs_fail(
    db: Database, user: Login, leak_check: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "/@")
    code, rows = check(leak_check, db.store(user))
    assert code == 1 and "EXCLUDE_CHARACTERS should keep" in rows["password policy"]["fix"]


def test_a_missing_secret_fails_the_first_row(local_sm: LocalSecretsManager, leak_check: Watched) -> None:
    code, rows = check(leak_check, "no-such-secret")
    assert code == 1 and list(rows) == ["secret readable"]


# -- the same command against a real MariaDB (the MySQL engine) ----------------------------------------
@ON_MARIADB
def test_mariadb_good_secrets_pass_in_both_strategies(db: Database, leak_check: Watched) -> None:
    user = db.add_user()
    code, rows = check(leak_check, db.store(user))
    assert code == 0 and "certificate verified" in rows["user logs in"]["detail"]
    code, rows = check(leak_check, db.store(user, masterarn=db.master_secret()))
    assert code == 0 and rows["privileges"]["detail"] == "can change the password and manage the clone"
    assert rows["user names"]["detail"] == f"'{user.username}' and '{user.username}_clone' alternate"


@ON_MARIADB
def test_mariadb_broken_secrets_fail(db: Database, leak_check: Watched) -> None:
    user = db.add_user(grants=())
    code, rows = check(leak_check, db.store(Login(user.username, "Wrong-" + user.password)))
    assert code == 1 and rows["user logs in"]["passed"] is False
    weak = db.store(db.add_user(db.name("weak"), grants=()))
    code, rows = check(leak_check, db.store(user, masterarn=weak))
    assert code == 1 and rows["privileges"]["passed"] is False and rows["privileges"]["fix"]
    long_name = "u" * 76  # MariaDB takes 80 characters: the clone's 82 do not fit
    code, rows = check(leak_check, db.store(Login(long_name, user.password), masterarn=weak))
    assert code == 1 and "longer than 80 characters" in rows["user names"]["detail"]
