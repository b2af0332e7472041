"""The exact statements OracleRotator sends, scenario by scenario, through the recording double.

setSecret and testSecret run the real engine and the real DatabaseRotator strategies; only
`oracledb.connect` is the double (tests/oracle_double.py) and Secrets Manager a table.
Alternating setSecret first proves AWSCURRENT logs in (the test query, on a connection of its
own), then the master reads what the users hold before it changes anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from rotators import errors
from rotators.engines.oracle import OracleRotator
from rotators.engines.oracle_grants import ACCOUNT_SQL, ADMIN_POWER_SQL
from rotators.rotation import Step
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from tests.offline import NEW_PASSWORD, FakeSecretsManager, context, create_then_set, store
from tests.oracle_double import Dictionary, OracleDouble, ora_error

LOGIN = {"engine": "oracle", "host": "db.example", "port": 2484, "dbname": "ORCLPDB1"}
OLD, PREVIOUS, MASTER = "Old-pass-1", "Previous-pass-0", "Master-pass-3"
N = f'"{NEW_PASSWORD}"'


def rotation(
    user: str,
    *,
    master: bool = False,
    previous: str | None = None,
    master_user: str = "admin",
    app: dict[str, Any] | None = None,
    **pending: Any,
) -> tuple[OracleRotator, FakeSecretsManager]:
    """Secrets Manager's table for `user` (with `app`'s extra keys); with `pending` keys, an
    AWSPENDING already staged."""
    values = {("demo", AWSCURRENT): {**LOGIN, "username": user, "password": OLD, **(app or {})}}
    if master:
        values[("demo", AWSCURRENT)]["masterarn"] = "m"
        values[("m", AWSCURRENT)] = {**LOGIN, "username": master_user, "password": MASTER}
    if previous is not None:
        values[("demo", AWSPREVIOUS)] = {**LOGIN, "username": user, "password": previous}
    if pending:
        values[("demo", AWSPENDING)] = {**values[("demo", AWSCURRENT)], **pending}
    client = FakeSecretsManager(values)
    return OracleRotator(store(client)), client


def set_secret(rotator: OracleRotator, client: FakeSecretsManager) -> None:
    if ("demo", AWSPENDING) in client.values:
        rotator.set_pending(context(rotator, Step.SET, previous=("demo", AWSPREVIOUS) in client.values))
    else:
        create_then_set(rotator, client)


# -- single user ---------------------------------------------------------------------------------------
def test_single_user_changes_its_own_password_with_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(passwords={"APP": OLD}).install(monkeypatch)
    set_secret(*rotation("app"))
    assert double.logins == ["app"]
    assert double.statements == [f'ALTER USER "APP" IDENTIFIED BY {N} REPLACE "{OLD}"']
    assert double.executed[0][1] is None, "nothing bound: ALTER USER takes no binds"
    assert double.passwords["APP"] == NEW_PASSWORD


def test_single_user_later_rotation_is_the_same_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(passwords={"APP": OLD}).install(monkeypatch)
    set_secret(*rotation("app", previous=PREVIOUS))
    assert double.statements == [f'ALTER USER "APP" IDENTIFIED BY {N} REPLACE "{OLD}"']


def test_single_user_repeated_set_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a crash the database already has the pending password: AWSCURRENT is refused,
    AWSPENDING logs in, and no statement is sent."""
    double = OracleDouble(passwords={"APP": NEW_PASSWORD}).install(monkeypatch)
    set_secret(*rotation("app", password=NEW_PASSWORD))
    assert double.logins == ["app", "app"]
    assert double.statements == []


def test_single_user_recovers_through_previous_and_replaces_that(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(passwords={"APP": PREVIOUS}).install(monkeypatch)
    set_secret(*rotation("app", previous=PREVIOUS, password=NEW_PASSWORD))
    assert double.logins == ["app", "app", "app"]
    assert double.statements == [f'ALTER USER "APP" IDENTIFIED BY {N} REPLACE "{PREVIOUS}"']


def test_single_user_with_no_working_password_fails_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(passwords={"APP": "Set-by-hand-9"}).install(monkeypatch)
    with pytest.raises(errors.LoginError, match=r"No version of .* logs in"):
        set_secret(*rotation("app", previous=PREVIOUS, password=NEW_PASSWORD))
    assert double.statements == []


@pytest.mark.parametrize(
    ("username", "stored"),
    [('"App User"', "App User"), ("app$x#1", "APP$X#1"), ("select", "SELECT"), ('"O\'Neil"', "O'Neil")],
)
def test_single_user_names_that_need_quoting(
    username: str, stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    double = OracleDouble(passwords={stored: OLD}).install(monkeypatch)
    set_secret(*rotation(username))
    assert double.logins == [username]
    assert double.statements == [f'ALTER USER "{stored}" IDENTIFIED BY {N} REPLACE "{OLD}"']


def test_a_verify_function_refusal_is_clear_and_hides_both_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = ora_error(
        28003, f"password verification for the specified password failed {NEW_PASSWORD} {OLD}"
    )
    double = OracleDouble(passwords={"APP": OLD}, fail_at={0: refusal}).install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app"))
    message = str(caught.value)
    assert message.startswith('Oracle refused ALTER USER "APP": ORA-28003')
    assert "verify function" in message and "PASSWORD_LENGTH" in message
    assert NEW_PASSWORD not in message and OLD not in message
    assert double.passwords["APP"] == OLD


def test_a_password_longer_than_the_server_accepts_fails_before_any_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long_password = "A" + "b1" * 20
    double = OracleDouble(passwords={"APP": OLD}).install(monkeypatch)
    with pytest.raises(errors.ConfigurationError, match=r"longer than 30 bytes, the limit of Oracle 19\.3"):
        set_secret(*rotation("app", password=long_password))
    assert double.statements == []


def test_oracle_23_accepts_long_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    long_password = "A" + "b1" * 40
    double = OracleDouble(version="23.4.0.24.5", passwords={"APP": OLD}).install(monkeypatch)
    set_secret(*rotation("app", password=long_password))
    assert double.statements == [f'ALTER USER "APP" IDENTIFIED BY "{long_password}" REPLACE "{OLD}"']


def test_a_name_over_30_bytes_fails_on_oracle_12_1_before_any_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "A" * 31
    double = OracleDouble(version="12.1.0.2.0", passwords={name: OLD}).install(monkeypatch)
    with pytest.raises(errors.SecretFormatError, match=r"longer than 30 bytes, the limit of Oracle 12\.1"):
        set_secret(*rotation(name))
    assert double.statements == []


def test_the_same_name_is_fine_on_12_2(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "A" * 31
    double = OracleDouble(version="12.2.0.1.0", passwords={name: OLD}).install(monkeypatch)
    set_secret(*rotation(name))
    assert len(double.statements) == 1


def test_an_illegal_name_in_a_pending_version_is_refused_before_any_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(passwords={"APP": OLD}).install(monkeypatch)
    rotator, client = rotation('"a"b"', password=NEW_PASSWORD)
    with pytest.raises(errors.SecretFormatError, match="cannot be quoted"):
        set_secret(rotator, client)
    assert double.connects == [] and double.statements == []


# -- alternating users ---------------------------------------------------------------------------------
def app_dictionary() -> Dictionary:
    found = Dictionary()
    found.user("ADMIN")
    found.user("APP", profile="APP_PROFILE", tablespace="DATA", temp="TEMP")
    found.sys_privs += [("APP", "CREATE SESSION", "NO"), ("APP", "CREATE TABLE", "NO")]
    found.role_privs += [("APP", "REPORTING", "NO", "YES"), ("APP", "SECRET_ROLE", "NO", "NO")]
    found.tab_privs += [
        ("APP", "SALES", "ORDERS", "SELECT", "NO", "TABLE"),
        ("APP", "SALES", "ORDERS", "UPDATE", "YES", "TABLE"),
        ("APP", "SYS", "EXPORTS", "READ", "NO", "DIRECTORY"),
        ("APP", "SALES", "PKG_ORDERS", "EXECUTE", "NO", "PACKAGE"),
    ]
    found.col_privs += [("APP", "SALES", "CUSTOMERS", "EMAIL", "UPDATE", "NO")]
    return found


def with_clone(found: Dictionary) -> Dictionary:
    """The dictionary after the rotator made APP_CLONE: the same grants as APP."""
    found.user("APP_CLONE")
    found.sys_privs += [("APP_CLONE", *row[1:]) for row in found.sys_privs if row[0] == "APP"]
    found.role_privs += [("APP_CLONE", *row[1:]) for row in found.role_privs if row[0] == "APP"]
    found.tab_privs += [("APP_CLONE", *row[1:]) for row in found.tab_privs if row[0] == "APP"]
    found.col_privs += [("APP_CLONE", *row[1:]) for row in found.col_privs if row[0] == "APP"]
    return found


PROBE = "SELECT USER, 1 + 1 FROM dual"
EXISTS = "SELECT 1 FROM dba_users WHERE username = :name"
PRIVILEGES = [
    "SELECT grantee, privilege, admin_option FROM dba_sys_privs WHERE grantee IN (:source, :clone)",
    "SELECT grantee, granted_role, admin_option, default_role FROM dba_role_privs "
    "WHERE grantee IN (:source, :clone)",
    "SELECT grantee, owner, table_name, privilege, grantable, type FROM dba_tab_privs "
    "WHERE grantee IN (:source, :clone)",
    "SELECT grantee, owner, table_name, column_name, privilege, grantable FROM dba_col_privs "
    "WHERE grantee IN (:source, :clone)",
]
READS = [
    "SELECT profile, default_tablespace, temporary_tablespace FROM dba_users WHERE username = :name",
    EXISTS,
    *PRIVILEGES,
]
# The guard (AWSCURRENT's own login and test query), then the master's checks before any change:
# the source's power, and whether a clone exists (and if so, what it holds beyond the source).
CHECKS_NEW_CLONE = [PROBE, ADMIN_POWER_SQL, ACCOUNT_SQL, EXISTS]
CHECKS_EXISTING_CLONE = [*CHECKS_NEW_CLONE, *PRIVILEGES, ACCOUNT_SQL]
# Back to the original: its power, then what it holds that the clone (AWSCURRENT) does not.
CHECKS_ORIGINAL = [PROBE, ADMIN_POWER_SQL, ACCOUNT_SQL, *PRIVILEGES, ACCOUNT_SQL, ACCOUNT_SQL]
FIRST_CLONE = [
    f'CREATE USER "APP_CLONE" IDENTIFIED BY {N} DEFAULT TABLESPACE "DATA" TEMPORARY TABLESPACE "TEMP" '
    'PROFILE "APP_PROFILE"',
    'GRANT CREATE SESSION TO "APP_CLONE"',
    'GRANT CREATE TABLE TO "APP_CLONE"',
    'GRANT "REPORTING" TO "APP_CLONE"',
    'GRANT "SECRET_ROLE" TO "APP_CLONE"',
    'GRANT SELECT ON "SALES"."ORDERS" TO "APP_CLONE"',
    'GRANT UPDATE ON "SALES"."ORDERS" TO "APP_CLONE" WITH GRANT OPTION',
    'GRANT EXECUTE ON "SALES"."PKG_ORDERS" TO "APP_CLONE"',
    'GRANT READ ON DIRECTORY "EXPORTS" TO "APP_CLONE"',
    'GRANT UPDATE ("EMAIL") ON "SALES"."CUSTOMERS" TO "APP_CLONE"',
    'ALTER USER "APP_CLONE" DEFAULT ROLE "REPORTING"',
]


def changes(double: OracleDouble) -> list[str]:
    """Every statement that is not a query: DDL, password changes included."""
    return [s for s in double.statements if not s.startswith(("SELECT", "WITH"))]


def test_first_alternating_rotation_creates_the_clone_with_the_originals_grants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(dictionary=app_dictionary()).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.logins == ["app", "admin"], "AWSCURRENT proves its login before the master acts"
    assert double.statements == CHECKS_NEW_CLONE + READS + FIRST_CLONE
    assert [binds for _, binds in double.executed[: len(CHECKS_NEW_CLONE) + len(READS)]] == [
        {},
        {"name": "APP", "grantee": "APP"},
        {"name": "APP", "proxy": "APP", "owner": "APP"},
        {"name": "APP_CLONE"},
        {"name": "APP"},
        {"name": "APP_CLONE"},
        *[{"source": "APP", "clone": "APP_CLONE"}] * 4,
    ]


def test_an_opted_in_administrative_user_is_cloned_with_its_admin_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`"allow_privileged_user": true`: the power check is skipped, the grant copied as held."""
    found = app_dictionary()
    found.sys_privs[1] = ("APP", "CREATE TABLE", "YES")
    double = OracleDouble(dictionary=found).install(monkeypatch)
    set_secret(*rotation("app", master=True, app={"allow_privileged_user": True}))
    assert double.statements[:2] == [PROBE, EXISTS], "no power check"
    assert 'GRANT CREATE TABLE TO "APP_CLONE" WITH ADMIN OPTION' in double.statements


def test_a_later_rotation_of_the_clone_adds_what_the_original_gained(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clone exists with less than the original: what is missing (a privilege, a role, a
    grant option, a column) is granted; nothing is taken over."""
    found = app_dictionary()
    found.col_privs.append(("APP", "SALES", "CUSTOMERS", "PHONE", "UPDATE", "NO"))
    found.user("APP_CLONE")
    found.sys_privs += [("APP_CLONE", "CREATE SESSION", "NO")]
    found.role_privs += [("APP_CLONE", "REPORTING", "NO", "YES")]
    found.tab_privs += [
        ("APP_CLONE", "SALES", "ORDERS", "SELECT", "NO", "TABLE"),
        ("APP_CLONE", "SALES", "ORDERS", "UPDATE", "NO", "TABLE"),  # the original may grant it on
        ("APP_CLONE", "SYS", "EXPORTS", "READ", "NO", "DIRECTORY"),
        ("APP_CLONE", "SALES", "PKG_ORDERS", "EXECUTE", "NO", "PACKAGE"),
    ]
    found.col_privs += [("APP_CLONE", "SALES", "CUSTOMERS", "EMAIL", "UPDATE", "NO")]
    double = OracleDouble(dictionary=found).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.statements == [
        *CHECKS_EXISTING_CLONE,
        *READS,
        f'ALTER USER "APP_CLONE" IDENTIFIED BY {N} DEFAULT TABLESPACE "DATA" TEMPORARY TABLESPACE "TEMP" '
        'PROFILE "APP_PROFILE"',
        'REVOKE UPDATE ON "SALES"."ORDERS" FROM "APP_CLONE"',  # granted again WITH GRANT OPTION
        'REVOKE UPDATE ON "SALES"."CUSTOMERS" FROM "APP_CLONE"',  # columns: only table-wide
        'GRANT CREATE TABLE TO "APP_CLONE"',
        'GRANT "SECRET_ROLE" TO "APP_CLONE"',
        'GRANT UPDATE ON "SALES"."ORDERS" TO "APP_CLONE" WITH GRANT OPTION',
        'GRANT UPDATE ("EMAIL", "PHONE") ON "SALES"."CUSTOMERS" TO "APP_CLONE"',
        'ALTER USER "APP_CLONE" DEFAULT ROLE "REPORTING"',
    ]


def test_a_clone_holding_more_than_the_original_is_not_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grants the original never had (or lost) stay the administrator's to remove: the error
    lists each, and nothing is changed."""
    found = with_clone(app_dictionary())
    found.sys_privs += [("APP_CLONE", "CREATE TABLE", "YES")]
    found.role_privs += [("APP_CLONE", "DBA", "NO", "YES")]
    found.tab_privs += [("APP_CLONE", "SALES", "OLD_TABLE", "DELETE", "NO", "TABLE")]
    found.col_privs += [("APP_CLONE", "SALES", "CUSTOMERS", "PHONE", "UPDATE", "NO")]
    double = OracleDouble(dictionary=found).install(monkeypatch)
    with pytest.raises(errors.PrivilegeError) as caught:
        set_secret(*rotation("app", master=True))
    assert (
        "'app_clone' holds what 'app' does not: CREATE TABLE WITH ADMIN OPTION, role DBA, "
        'DELETE ON "SALES"."OLD_TABLE", UPDATE ("PHONE") ON "SALES"."CUSTOMERS"'
    ) in str(caught.value)
    assert double.statements == CHECKS_EXISTING_CLONE
    assert changes(double) == []


def test_a_repeated_set_of_an_up_to_date_clone_only_sets_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(dictionary=with_clone(app_dictionary())).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.statements[: len(CHECKS_EXISTING_CLONE)] == CHECKS_EXISTING_CLONE
    assert double.statements[len(CHECKS_EXISTING_CLONE) + len(READS) :] == [
        FIRST_CLONE[0].replace("CREATE", "ALTER", 1),
        FIRST_CLONE[-1],
    ]


def test_rotation_back_to_the_original_sets_its_password_without_replace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(dictionary=with_clone(app_dictionary())).install(monkeypatch)
    set_secret(*rotation("app_clone", master=True))
    assert double.logins == ["app_clone", "admin"]
    assert double.statements == [*CHECKS_ORIGINAL, f'ALTER USER "APP" IDENTIFIED BY {N}']
    assert double.executed[1][1] == {"name": "APP", "grantee": "APP"}, "the power of the user to be set"


def test_quoted_names_alternate_as_quoted_names(monkeypatch: pytest.MonkeyPatch) -> None:
    found = Dictionary()
    found.user("App User")
    found.sys_privs.append(("App User", "CREATE SESSION", "NO"))
    double = OracleDouble(dictionary=found).install(monkeypatch)
    set_secret(*rotation('"App User"', master=True))
    assert double.executed[1][1] == {"name": "App User", "grantee": "App User"}
    assert double.executed[len(CHECKS_NEW_CLONE) - 1] == (EXISTS, {"name": "App User_clone"})
    assert double.statements[len(CHECKS_NEW_CLONE) + len(READS) :] == [
        f'CREATE USER "App User_clone" IDENTIFIED BY {N} DEFAULT TABLESPACE "USERS" TEMPORARY TABLESPACE '
        '"TEMP" PROFILE "DEFAULT"',
        'GRANT CREATE SESSION TO "App User_clone"',
    ]


@pytest.mark.parametrize(
    ("roles", "statement"),
    [
        ([("R1", "YES"), ("R2", "YES")], 'ALTER USER "APP_CLONE" DEFAULT ROLE ALL'),
        ([("R1", "NO"), ("R2", "NO")], 'ALTER USER "APP_CLONE" DEFAULT ROLE NONE'),
        ([("R2", "YES"), ("R1", "NO"), ("R0", "YES")], 'ALTER USER "APP_CLONE" DEFAULT ROLE "R0", "R2"'),
    ],
)
def test_default_roles_follow_the_original(
    roles: list[tuple[str, str]], statement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = Dictionary()
    found.user("APP")
    found.role_privs += [("APP", role, "NO", default) for role, default in roles]
    double = OracleDouble(dictionary=found).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.statements[-1] == statement


@pytest.mark.parametrize(
    ("row", "grant"),
    [
        (("SYS", "EXPORTS", "WRITE", "NO", "DIRECTORY"), 'GRANT WRITE ON DIRECTORY "EXPORTS"'),
        (
            ("SYS", "APP_OWNER", "INHERIT PRIVILEGES", "NO", "USER"),
            'GRANT INHERIT PRIVILEGES ON USER "APP_OWNER"',
        ),
        (("SYS", "ORA$BASE", "USE", "NO", "EDITION"), 'GRANT USE ON EDITION "ORA$BASE"'),
        (("JS", "Hello", "EXECUTE", "NO", "JAVA SOURCE"), 'GRANT EXECUTE ON JAVA SOURCE "JS"."Hello"'),
        (("SALES", "my view", "SELECT", "NO", "VIEW"), 'GRANT SELECT ON "SALES"."my view"'),
        (("SALES", "SEQ", "SELECT", "NO", None), 'GRANT SELECT ON "SALES"."SEQ"'),
    ],
)
def test_object_grants_name_their_object_as_oracle_wants(
    row: tuple[Any, ...], grant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = Dictionary()
    found.user("APP")
    found.tab_privs.append(("APP", *row))
    double = OracleDouble(dictionary=found).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.statements[-1] == f'{grant} TO "APP_CLONE"'


def test_an_unexpected_privilege_name_is_refused_before_any_change(monkeypatch: pytest.MonkeyPatch) -> None:
    found = Dictionary()
    found.user("APP")
    found.sys_privs.append(("APP", "CREATE SESSION TO PUBLIC; --", "NO"))
    double = OracleDouble(dictionary=found).install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError, match="Unexpected privilege name"):
        set_secret(*rotation("app", master=True))
    assert changes(double) == []


def test_a_missing_original_fails_before_any_change(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(dictionary=Dictionary()).install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError, match="no user 'APP' to clone"):
        set_secret(*rotation("app", master=True))
    assert double.statements == CHECKS_NEW_CLONE + READS[:1]


@pytest.mark.parametrize(
    ("refused", "views", "sent"),
    [
        ("WITH held_roles", "dba_role_privs, dba_sys_privs", 2),
        ("SELECT 'ADMINISTRATIVE'", "v$pwfile_users, dba_proxies, dba_objects", 3),
        ("SELECT profile", "dba_users", len(CHECKS_NEW_CLONE) + 1),
    ],
)
def test_a_master_without_dictionary_access_gets_a_clear_error(
    refused: str, views: str, sent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = ora_error(942, "table or view does not exist")
    double = OracleDouble(dictionary=app_dictionary(), fail_on={refused: denied}).install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app", master=True))
    assert str(caught.value).startswith(f"Oracle refused a query of {views}: ORA-00942")
    assert "SELECT_CATALOG_ROLE" in str(caught.value)
    assert len(double.statements) == sent


def test_a_failure_midway_names_the_statement_and_a_retry_converges(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDL commits as it goes: the clone exists after CREATE USER even though a GRANT failed.
    The retried step reads the dictionary again and sends only what is still missing."""
    found = app_dictionary()
    refusal = ora_error(1031, "insufficient privileges")
    failing = len(CHECKS_NEW_CLONE) + len(READS) + 3  # CREATE USER, two GRANTs, then the role grant fails
    double = OracleDouble(dictionary=found, fail_at={failing: refusal}).install(monkeypatch)
    rotator, client = rotation("app", master=True)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(rotator, client)
    message = str(caught.value)
    assert message.startswith('Oracle refused GRANT "REPORTING" TO "APP_CLONE": ORA-01031')
    assert "master user lacks a privilege" in message
    assert NEW_PASSWORD not in message
    assert double.statements[len(CHECKS_NEW_CLONE) + len(READS) :] == FIRST_CLONE[:4]

    # what the database now holds: the clone and the two system privileges granted before the failure
    found.user("APP_CLONE")
    found.sys_privs += [("APP_CLONE", "CREATE SESSION", "NO"), ("APP_CLONE", "CREATE TABLE", "NO")]
    retry = OracleDouble(dictionary=found).install(monkeypatch)
    rotator.set_pending(context(rotator, Step.SET))
    assert retry.statements[len(CHECKS_EXISTING_CLONE) + len(READS) :] == [
        FIRST_CLONE[0].replace("CREATE", "ALTER", 1),
        *FIRST_CLONE[3:],
    ]


def test_the_master_may_only_set_the_partner_of_the_current_user(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(dictionary=app_dictionary()).install(monkeypatch)
    rotator, client = rotation("app", master=True, username="admin", password=NEW_PASSWORD)
    with pytest.raises(errors.TargetMismatchError, match="partner"):
        set_secret(rotator, client)
    assert double.connects == []


def test_connections_and_cursors_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(dictionary=app_dictionary()).install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.closed_connections == 2, "AWSCURRENT's own, then the master's"
    assert double.closed_cursors == len(CHECKS_NEW_CLONE) + len(READS) + 1


# -- what the master reads before it changes anything ---------------------------------------------------
def power(found: Dictionary, monkeypatch: pytest.MonkeyPatch, user: str = "app") -> list[str]:
    rotator, login = session(OracleDouble(dictionary=found), monkeypatch)
    with login as conn:
        return cast(list[str], rotator.admin_power(conn, user))


def test_an_application_user_has_no_administrative_power(monkeypatch: pytest.MonkeyPatch) -> None:
    found = app_dictionary()
    found.role_privs += [
        ("REPORTING", "CONNECT", "NO", "YES"),
        ("CONNECT", "SELECT_CATALOG_ROLE", "NO", "YES"),
    ]
    found.sys_privs += [("REPORTING", "CREATE VIEW", "NO"), ("CONNECT", "CREATE SESSION", "NO")]
    found.objects["APP"] = 12  # its own schema is not power over others
    assert power(found, monkeypatch) == []


@pytest.mark.parametrize(
    ("grants", "held"),
    [
        ({"role_privs": [("APP", "DBA", "NO", "YES")]}, "role DBA"),
        (
            {"role_privs": [("APP", "DATAPUMP_IMP_FULL_DATABASE", "NO", "YES")]},
            "role DATAPUMP_IMP_FULL_DATABASE",
        ),
        ({"role_privs": [("APP", "RDS_MASTER_ROLE", "NO", "YES")]}, "role RDS_MASTER_ROLE"),
        ({"role_privs": [("APP", "REPORTING", "YES", "YES")]}, "role REPORTING WITH ADMIN OPTION"),
        ({"sys_privs": [("APP", "ALTER USER", "NO")]}, "ALTER USER"),
        ({"sys_privs": [("APP", "GRANT ANY ROLE", "NO")]}, "GRANT ANY ROLE"),
        ({"sys_privs": [("APP", "BECOME USER", "NO")]}, "BECOME USER"),
        ({"sys_privs": [("APP", "CREATE TABLE", "YES")]}, "CREATE TABLE WITH ADMIN OPTION"),
        ({"sys_privs": [("REPORTING", "CREATE USER", "NO")]}, "CREATE USER (through role REPORTING)"),
        ({"administrative": [("APP", "SYSDBA")]}, "SYSDBA"),
        ({"proxies": [("APP", "HR")]}, "proxy rights for 'HR'"),
    ],
)
def test_administrative_power_in_any_form_is_named(
    grants: dict[str, list[Any]], held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = app_dictionary()
    for view, rows in grants.items():
        getattr(found, view).extend(rows)
    assert power(found, monkeypatch) == [f"'app' holds {held}"]


def test_roles_granted_through_roles_are_found_and_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP -> APP_ROLE -> OPS -> DBA (which holds EXP_FULL_DATABASE and ALTER USER): the role that
    brings the power is named, not each privilege it carries."""
    found = app_dictionary()
    found.role_privs += [
        ("APP", "APP_ROLE", "NO", "YES"),
        ("APP_ROLE", "OPS", "NO", "YES"),
        ("OPS", "DBA", "NO", "YES"),
        ("DBA", "EXP_FULL_DATABASE", "NO", "YES"),
        ("DBA", "OPS", "NO", "YES"),  # a cycle the query must survive
    ]
    found.sys_privs += [("DBA", "ALTER USER", "YES"), ("EXP_FULL_DATABASE", "SELECT ANY DICTIONARY", "NO")]
    assert power(found, monkeypatch) == ["'app' holds role DBA (through role OPS)"]


# -- testSecret -----------------------------------------------------------------------------------------
def answering(row: tuple[Any, ...]) -> Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]:
    """Rows for the double: `row`, whatever the query."""
    return lambda sql, binds: [row]


def test_probe_checks_the_session_user(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble(passwords={"App": NEW_PASSWORD}, rows=lambda sql, binds: [("App", 2)]).install(
        monkeypatch
    )
    rotator, _ = rotation('"App"', password=NEW_PASSWORD)
    rotator.test_pending(context(rotator, Step.TEST))
    assert double.statements == ["SELECT USER, 1 + 1 FROM dual"]
    for row in [("APP", 2), ("App", 3)]:
        OracleDouble(passwords={"App": NEW_PASSWORD}, rows=answering(row)).install(monkeypatch)
        with pytest.raises(errors.SecretTestError, match="'\"App\"'"):
            rotator.test_pending(context(rotator, Step.TEST))


def test_the_pending_secret_is_valid_json_with_the_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    OracleDouble(dictionary=app_dictionary()).install(monkeypatch)
    rotator, client = rotation("app", master=True)
    set_secret(rotator, client)
    pending = client.values[("demo", AWSPENDING)]
    assert json.loads(json.dumps(pending))["username"] == "app_clone"
    assert pending["password"] == NEW_PASSWORD


# -- `rotators check` ---------------------------------------------------------------------------------
def session(double: OracleDouble, monkeypatch: pytest.MonkeyPatch, user: str = "admin") -> Any:
    double.install(monkeypatch)
    rotator, _ = rotation("app")
    secret = rotator.parse(json.dumps({**LOGIN, "username": user, "password": MASTER}), where="x")
    return rotator, rotator.connect(secret, user, MASTER)


@pytest.mark.parametrize(
    ("held", "problem"),
    [
        ([("ALTER USER",), ("CREATE USER",)], None),
        ([("ALTER USER",)], "the master user lacks CREATE USER"),
        ([], "the master user lacks ALTER USER, CREATE USER"),
    ],
)
def test_check_of_a_master(
    held: list[tuple[str]], problem: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = Dictionary()
    found.user("APP")
    double = OracleDouble(dictionary=found, rows=lambda sql, binds: held if "session_privs" in sql else [])
    rotator, login = session(double, monkeypatch)
    with login as conn:
        assert rotator.change_privileges(conn, "app", as_master=True) == problem
        assert rotator.change_privileges(conn, "nobody", as_master=True) == "Oracle has no user 'NOBODY'"
        assert rotator.change_privileges(conn, "app", as_master=False) is None
        assert rotator.transport(
            conn, rotator.parse(json.dumps({**LOGIN, "username": "a", "password": "p"}), where="x")
        ) == ("TLS (sslmode=verify-full, certificate verified, Oracle 19.3)")
