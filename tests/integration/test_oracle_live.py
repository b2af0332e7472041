"""Rotations against a real Oracle database, when ROTATORS_TEST_ORACLE_DSN names one.

No Oracle server can run on the development machine, so these tests skip unless given one:

    ROTATORS_TEST_ORACLE_DSN='oracle://system:<password>@localhost:1521/FREEPDB1?ssl=false'

(the user must be able to create users, roles and profiles, and read the DBA_ views; add
`&sslrootcert=/path/ca.pem` and drop `ssl=false` for a TCPS listener). The README shows how to
start Oracle Database Free in Docker for this. Every user, role and profile the tests create
has a random name and is dropped at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotators.engines.oracle import OracleRotator, handler
from rotators.errors import PrivilegeError, TargetMismatchError
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Watched
from tests.live import EngineServer, live_only

DSN = "ROTATORS_TEST_ORACLE_DSN"
pytestmark = live_only(DSN, "no Oracle server can run here (the README starts one in Docker)")


class OracleAdmin(EngineServer[OracleRotator]):
    """The DSN's user: makes users, roles and profiles, and checks which passwords log in."""

    def __init__(self, sm: LocalSecretsManager) -> None:
        super().__init__(
            sm, handler, OracleRotator(), DSN, engine="oracle", port=1521, dbname="FREEPDB1", user="system"
        )

    def sql(self, statement: str, **binds: Any) -> list[tuple[Any, ...]]:
        login = self.rotator.connect(self.parsed, self.parsed.username, self.parsed.password)
        with login as session, session.conn.cursor() as cursor:
            cursor.execute(statement, binds)
            return list(cursor.fetchall()) if cursor.description else []

    def grants(self, user: str) -> set[tuple[str, ...]]:
        rows = self.sql("SELECT privilege, admin_option FROM dba_sys_privs WHERE grantee = :u", u=user)
        rows += self.sql("SELECT granted_role, admin_option FROM dba_role_privs WHERE grantee = :u", u=user)
        rows += self.sql(
            "SELECT owner || '.' || table_name, privilege FROM dba_tab_privs WHERE grantee = :u", u=user
        )
        return {tuple(row) for row in rows}


@pytest.fixture
def oracle(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[OracleAdmin]:
    admin = OracleAdmin(local_sm)
    if "sslrootcert" in admin.admin:
        monkeypatch.setenv("ROTATORS_CA_BUNDLE", admin.admin["sslrootcert"])
    else:
        monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)
    yield admin
    # Reported, not failed: Oracle has no DROP USER IF EXISTS before 23ai, and not every test
    # makes the clone it drops; a failed clean-up must not hide the test's own failure either.
    for failure in admin.clean_up():
        print(f"cleanup failed: {failure}")


@pytest.fixture
def names() -> Callable[[str], str]:
    tag = secrets.token_hex(3).upper()
    return lambda prefix: f"ROT_{prefix}_{tag}"


def make_user(oracle: OracleAdmin, name: str, password: str, *clauses: str) -> None:
    oracle.sql(f'CREATE USER "{name}" IDENTIFIED BY "{password}" {" ".join(clauses)}')
    oracle.made.append(f'DROP USER "{name}" CASCADE')
    oracle.made.append(f'DROP USER "{name}_CLONE" CASCADE')
    oracle.sql(f'GRANT CREATE SESSION TO "{name}"')


def test_single_user_rotations_under_a_password_verify_function(
    oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    """ALTER USER ... REPLACE: without it a profile's verify function refuses the change."""
    profile, user, first = names("VERIFY"), names("APP"), "Init-pass-7x"
    leak_check.add(first)
    try:
        oracle.sql(f'CREATE PROFILE "{profile}" LIMIT PASSWORD_VERIFY_FUNCTION ORA12C_VERIFY_FUNCTION')
    except Exception as exc:
        pytest.skip(f"this database has no ORA12C_VERIFY_FUNCTION ({type(exc).__name__}): run utlpwdmg.sql")
    oracle.made.insert(0, f'DROP PROFILE "{profile}" CASCADE')
    make_user(oracle, user, first, f'PROFILE "{profile}"')
    oracle.assert_rotates_alone(oracle.secret(user.lower(), first), user.lower())


def test_alternating_users_copy_and_refresh_the_grants(
    oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    user, role, first = names("ALT"), names("ROLE"), "Init-pass-8y"
    leak_check.add(first)
    oracle.sql(f'CREATE ROLE "{role}"')
    oracle.made.insert(0, f'DROP ROLE "{role}"')
    make_user(oracle, user, first)
    oracle.sql(f'GRANT "{role}" TO "{user}"')
    oracle.sql(f'GRANT CREATE TABLE TO "{user}"')
    oracle.sql(f'GRANT SELECT ON "SYS"."DUAL" TO "{user}"')
    arn = oracle.secret(user, first, master=oracle.master(user))

    clone = oracle.rotate(arn)
    assert clone["username"] == f"{user}_CLONE"
    assert oracle.logs_in(clone["username"], clone["password"])
    assert oracle.logs_in(user, first), "the original keeps working"
    assert oracle.grants(f"{user}_CLONE") == oracle.grants(user)

    oracle.sql(f'REVOKE CREATE TABLE FROM "{user}"')
    original = oracle.rotate(arn)  # the original's turn: the clone has more
    assert original["username"] == user

    # The clone's turn: it now holds what the original lost, and is not taken over as it is.
    with pytest.raises(PrivilegeError, match="CREATE TABLE"):
        oracle.rotate(arn)
    assert oracle.sm.value(arn, "AWSCURRENT") == original
    assert oracle.logs_in(clone["username"], clone["password"]), "the clone's password is unchanged"

    oracle.sql(f'REVOKE CREATE TABLE FROM "{user}_CLONE"')  # the administrator's fix
    oracle.rotate(arn)
    oracle.sql(f'GRANT CREATE VIEW TO "{user}"')  # gained while the clone is current ...
    with pytest.raises(PrivilegeError, match="lacks what"):
        oracle.rotate(arn)  # ... so the clone is no proven copy
    assert oracle.grants(f"{user}_CLONE") == oracle.grants(user) - {("CREATE VIEW", "NO")}
    current = oracle.sm.value(arn, "AWSCURRENT")
    assert oracle.logs_in(current["username"], current["password"])


def test_the_master_and_administrative_users_are_refused(
    oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    """Issue 11 against a real dictionary: the master's own name in another spelling, and a
    source holding DBA, are refused before any change; the master still logs in."""
    user, first = names("DBA"), "Init-pass-9z"
    leak_check.add(first)
    make_user(oracle, user, first)
    oracle.sql(f'GRANT DBA TO "{user}"')
    master = oracle.master(user)
    master_name = oracle.admin["username"]
    spelled = f'"{master_name.upper()}_clone"' if master_name.isalnum() else master_name
    attacks = [
        (spelled, "Guess-pass-1", TargetMismatchError),
        (user.lower(), first, PrivilegeError),
    ]
    for number, (username, password, error) in enumerate(attacks):
        arn = oracle.secret(username, password, master=master, name=f"{user}-attack-{number}")
        with pytest.raises(error):
            oracle.rotate(arn)
        assert oracle.sm.value(arn, "AWSCURRENT")["password"] == password
    assert oracle.logs_in(master_name, oracle.admin["password"])
    assert oracle.logs_in(user, first)
    assert not oracle.sql("SELECT 1 FROM dba_users WHERE username = :u", u=f"{user}_CLONE")
