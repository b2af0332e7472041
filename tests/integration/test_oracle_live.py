"""Rotations against a real Oracle database, when ROTATORS_TEST_ORACLE_DSN names one.

No Oracle server can run on the development machine, so these tests skip unless given one:

    ROTATORS_TEST_ORACLE_DSN='oracle://system:<password>@localhost:1521/FREEPDB1?ssl=false'

(the user must be able to create users, roles and profiles, and read the DBA_ views; add
`&sslrootcert=/path/ca.pem` and drop `ssl=false` for a TCPS listener). The README shows how to
start Oracle Database Free in Docker for this. Every user, role and profile the tests create
has a random name and is dropped at the end.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotators.engines.oracle import OracleRotator, handler
from rotators.errors import LoginError, PrivilegeError, TargetMismatchError
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Watched, invoke
from tests.live import dsn_secret, live_only

pytestmark = live_only(
    "ROTATORS_TEST_ORACLE_DSN",
    "no Oracle server here: set ROTATORS_TEST_ORACLE_DSN=oracle://system:<pw>@host:1521/SERVICE"
    "?ssl=false to run these against one (README: Oracle in Docker)",
)


def admin_secret() -> dict[str, Any]:
    return dsn_secret(
        "ROTATORS_TEST_ORACLE_DSN", engine="oracle", port=1521, dbname="FREEPDB1", user="system"
    )


class OracleAdmin:
    """The DSN's user: makes users, roles and profiles, and checks which passwords log in."""

    def __init__(self) -> None:
        self.rotator = OracleRotator()
        self.value = admin_secret()
        self.secret = self.rotator.parse(json.dumps(self.value), where="ROTATORS_TEST_ORACLE_DSN")
        self.dropped: list[str] = []

    def sql(self, statement: str, **binds: Any) -> list[tuple[Any, ...]]:
        login = self.rotator.connect(self.secret, self.secret.username, self.secret.password)
        with login as session, session.conn.cursor() as cursor:
            cursor.execute(statement, binds)
            return list(cursor.fetchall()) if cursor.description else []

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.rotator.connect(self.secret, user, password):
                return True
        except LoginError:
            return False

    def grants(self, user: str) -> set[tuple[str, ...]]:
        rows = self.sql("SELECT privilege, admin_option FROM dba_sys_privs WHERE grantee = :u", u=user)
        rows += self.sql("SELECT granted_role, admin_option FROM dba_role_privs WHERE grantee = :u", u=user)
        rows += self.sql(
            "SELECT owner || '.' || table_name, privilege FROM dba_tab_privs WHERE grantee = :u", u=user
        )
        return {tuple(row) for row in rows}


@pytest.fixture
def oracle(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[OracleAdmin]:
    admin = OracleAdmin()
    if "sslrootcert" in admin.value:
        monkeypatch.setenv("ROTATORS_CA_BUNDLE", admin.value["sslrootcert"])
    else:
        monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)
    yield admin
    for statement in reversed(admin.dropped):
        try:
            admin.sql(statement)
        except Exception as exc:  # cleanup must not hide the test's own failure
            print(f"cleanup failed: {type(exc).__name__}")


@pytest.fixture
def names() -> Callable[[str], str]:
    tag = secrets.token_hex(3).upper()
    return lambda prefix: f"ROT_{prefix}_{tag}"


def make_user(oracle: OracleAdmin, name: str, password: str, *clauses: str) -> None:
    oracle.sql(f'CREATE USER "{name}" IDENTIFIED BY "{password}" {" ".join(clauses)}')
    oracle.dropped.append(f'DROP USER "{name}" CASCADE')
    oracle.dropped.append(f'DROP USER "{name}_CLONE" CASCADE')
    oracle.sql(f'GRANT CREATE SESSION TO "{name}"')


def test_single_user_rotations_under_a_password_verify_function(
    local_sm: LocalSecretsManager, oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    """ALTER USER ... REPLACE: without it a profile's verify function refuses the change."""
    profile, user, first = names("VERIFY"), names("APP"), "Init-pass-7x"
    leak_check.add(first)
    try:
        oracle.sql(f'CREATE PROFILE "{profile}" LIMIT PASSWORD_VERIFY_FUNCTION ORA12C_VERIFY_FUNCTION')
    except Exception as exc:
        pytest.skip(f"this database has no ORA12C_VERIFY_FUNCTION ({type(exc).__name__}): run utlpwdmg.sql")
    oracle.dropped.insert(0, f'DROP PROFILE "{profile}" CASCADE')
    make_user(oracle, user, first, f'PROFILE "{profile}"')
    arn = local_sm.create_secret(user, {**oracle.value, "username": user.lower(), "password": first})
    for _ in range(2):
        before = local_sm.value(arn, "AWSCURRENT")["password"]
        invoke(handler, arn, local_sm.start_rotation(arn))
        after = local_sm.value(arn, "AWSCURRENT")["password"]
        assert after != before
        assert oracle.logs_in(user.lower(), after)
        assert not oracle.logs_in(user.lower(), before)


def test_alternating_users_copy_and_refresh_the_grants(
    local_sm: LocalSecretsManager, oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    user, role, first = names("ALT"), names("ROLE"), "Init-pass-8y"
    leak_check.add(first)
    oracle.sql(f'CREATE ROLE "{role}"')
    oracle.dropped.insert(0, f'DROP ROLE "{role}"')
    make_user(oracle, user, first)
    oracle.sql(f'GRANT "{role}" TO "{user}"')
    oracle.sql(f'GRANT CREATE TABLE TO "{user}"')
    oracle.sql(f'GRANT SELECT ON "SYS"."DUAL" TO "{user}"')
    master = local_sm.create_secret(f"{user}-master", oracle.value)
    arn = local_sm.create_secret(
        user, {**oracle.value, "username": user, "password": first, "masterarn": master}
    )

    invoke(handler, arn, local_sm.start_rotation(arn))
    clone = local_sm.value(arn, "AWSCURRENT")
    assert clone["username"] == f"{user}_CLONE"
    assert oracle.logs_in(clone["username"], clone["password"])
    assert oracle.logs_in(user, first), "the original keeps working"
    assert oracle.grants(f"{user}_CLONE") == oracle.grants(user)

    oracle.sql(f'REVOKE CREATE TABLE FROM "{user}"')
    invoke(handler, arn, local_sm.start_rotation(arn))  # the original's turn: the clone has more
    original = local_sm.value(arn, "AWSCURRENT")
    assert original["username"] == user

    # The clone's turn: it now holds what the original lost, and is not taken over as it is.
    with pytest.raises(PrivilegeError, match="CREATE TABLE"):
        invoke(handler, arn, local_sm.start_rotation(arn))
    assert local_sm.value(arn, "AWSCURRENT") == original
    assert oracle.logs_in(clone["username"], clone["password"]), "the clone's password is unchanged"

    oracle.sql(f'REVOKE CREATE TABLE FROM "{user}_CLONE"')  # the administrator's fix
    invoke(handler, arn, local_sm.start_rotation(arn))
    oracle.sql(f'GRANT CREATE VIEW TO "{user}"')  # gained while the clone is current ...
    with pytest.raises(PrivilegeError, match="lacks what"):
        invoke(handler, arn, local_sm.start_rotation(arn))  # ... so the clone is no proven copy
    assert oracle.grants(f"{user}_CLONE") == oracle.grants(user) - {("CREATE VIEW", "NO")}
    current = local_sm.value(arn, "AWSCURRENT")
    assert oracle.logs_in(current["username"], current["password"])


def test_the_master_and_administrative_users_are_refused(
    local_sm: LocalSecretsManager, oracle: OracleAdmin, names: Callable[[str], str], leak_check: Watched
) -> None:
    """Issue 11 against a real dictionary: the master's own name in another spelling, and a
    source holding DBA, are refused before any change; the master still logs in."""
    user, first = names("DBA"), "Init-pass-9z"
    leak_check.add(first)
    make_user(oracle, user, first)
    oracle.sql(f'GRANT DBA TO "{user}"')
    master = local_sm.create_secret(f"{user}-master", oracle.value)
    master_name = oracle.value["username"]
    spelled = f'"{master_name.upper()}_clone"' if master_name.isalnum() else master_name
    attacks = [
        (spelled, "Guess-pass-1", TargetMismatchError),
        (user.lower(), first, PrivilegeError),
    ]
    for number, (username, password, error) in enumerate(attacks):
        arn = local_sm.create_secret(
            f"{user}-attack-{number}",
            {**oracle.value, "username": username, "password": password, "masterarn": master},
        )
        with pytest.raises(error):
            invoke(handler, arn, local_sm.start_rotation(arn))
        assert local_sm.value(arn, "AWSCURRENT")["password"] == password
    assert oracle.logs_in(master_name, oracle.value["password"])
    assert oracle.logs_in(user, first)
    assert not oracle.sql("SELECT 1 FROM dba_users WHERE username = :u", u=f"{user}_CLONE")
