"""Issue 11's attacks on alternating Oracle rotation, at the statement level: the real handler
through all its steps, Secrets Manager as moto serves it, and the recording double in place of
Oracle (no Oracle server runs here). The double keeps who logs in with which password and what
GRANT and REVOKE did, so every refused attack ends by proving that no password-changing
statement was sent and that the master and the victim still log in with their own secrets.
"""

from __future__ import annotations

import re
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotators.engines.oracle import OracleRotator, handler
from rotators.errors import LoginError, PrivilegeError, RotationError, TargetMismatchError
from rotators.secrets import AWSCURRENT, ROTATORS_TESTED
from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority
from tests.conftest import invoke
from tests.offline import ca_names, current_logs_in
from tests.oracle_double import Dictionary, OracleDouble, RecordingCursor, ora_error, stored

LOGIN = {"engine": "oracle", "host": "db.example", "port": 2484, "dbname": "ORCLPDB1"}
PASSWORD_CHANGE = re.compile(r"(CREATE|ALTER) USER .* IDENTIFIED BY ")


@dataclass
class Oracle:
    """One database behind the double, its master secret, and users made as an admin would."""

    sm: LocalSecretsManager
    double: OracleDouble
    master: str = "admin"
    master_password: str = field(default="", repr=False)
    master_arn: str = ""
    during: list[str] = field(default_factory=list)  # who logged in during the refused rotation

    @property
    def dictionary(self) -> Dictionary:
        return self.double.dictionary

    def secret_of(self, username: str, password: str, **extra: Any) -> dict[str, Any]:
        return {**LOGIN, "username": username, "password": password, **extra}

    def user(self, name: str, *privileges: str) -> str:
        """A user (stored name) with CREATE SESSION and `privileges`; returns its password."""
        password = "Init" + uuid.uuid4().hex[:20]
        self.double.passwords[name] = password
        self.dictionary.user(name)
        self.dictionary.sys_privs += [(name, p, "NO") for p in ("CREATE SESSION", *privileges)]
        return password

    def secret(self, username: str, password: str, **extra: Any) -> str:
        name = f"{stored(username)}-{uuid.uuid4().hex[:6]}"
        return self.sm.create_secret(name, self.secret_of(username, password, **extra))

    def app(self, username: str, password: str, **extra: Any) -> str:
        return self.secret(username, password, masterarn=self.master_arn, **extra)

    def logs_in(self, arn: str) -> bool:
        return current_logs_in(self.sm, OracleRotator(), arn)

    def attempt(self, arn: str, error: type[RotationError]) -> RotationError:
        """A whole rotation that must stop at setSecret with `error`, having changed nothing."""
        before = self.sm.value(arn, AWSCURRENT)
        with pytest.raises(error) as caught:
            invoke(handler, arn, self.sm.start_rotation(arn))
        self.during = list(self.double.logins)
        assert [s for s in self.double.statements if PASSWORD_CHANGE.match(s)] == [], "no password set"
        assert [s for s in self.double.statements if not s.startswith(("SELECT", "WITH"))] == []
        assert self.sm.value(arn, AWSCURRENT) == before
        self.assert_master_intact()
        return caught.value

    def assert_master_intact(self) -> None:
        assert self.sm.value(self.master_arn, AWSCURRENT)["password"] == self.master_password
        assert self.logs_in(self.master_arn), "the master still logs in with its own secret"


@pytest.fixture
def oracle(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Oracle:
    """A master ADMIN with DBA (as on RDS): its power is the prize, never a reason to refuse."""
    db = Oracle(local_sm, OracleDouble(dictionary=Dictionary(), passwords={}).install(monkeypatch))
    db.master_password = db.user("ADMIN", "CREATE USER", "ALTER USER")
    db.dictionary.role_privs.append(("ADMIN", "DBA", "NO", "YES"))
    db.master_arn = db.secret("admin", db.master_password)
    return db


def add(found: Dictionary, grants: dict[str, Any]) -> None:
    """Rows for the named views of the dictionary (`objects`: owner -> how many)."""
    for view, rows in grants.items():
        target = getattr(found, view)
        if isinstance(target, dict):
            target.update(rows)
        else:
            target.extend(rows)


def master_named(db: Oracle, spelled: str) -> None:
    """The master secret spells its user `spelled` (the same user ADMIN, or another one)."""
    name = stored(spelled)
    if name not in db.double.passwords:
        db.master_password = db.user(name)
    db.master, db.master_arn = spelled, db.secret(spelled, db.double.passwords[name])


# -- 1, 2, 4: the master's own user, under any spelling, through any master secret --------------------------
@pytest.mark.parametrize(
    ("master", "username"),
    [
        ("admin", "admin_clone"),  # its partner is the master
        ("admin", "ADMIN_CLONE"),
        ("admin", '"ADMIN_clone"'),
        ('"ADMIN"', "Admin_Clone"),
        ("admin", "admin"),  # the master itself, to be cloned
        ("admin", "ADMIN"),
        ("admin", '"ADMIN"'),
        ('"ADMIN"', "Admin"),
        ("bob", "BOB_clone"),  # `masterarn` names another team's app secret (user BOB)
    ],
)
def test_the_master_is_never_one_of_the_alternating_users(oracle: Oracle, master: str, username: str) -> None:
    master_named(oracle, master)
    arn = oracle.app(username, "Guess-pass-1")
    error = oracle.attempt(arn, TargetMismatchError)
    assert "master user" in str(error)
    assert oracle.during == [], "refused before any login, the master's included"


def test_a_quoted_lower_case_name_is_another_user_and_is_rotated(oracle: Oracle) -> None:
    """`"admin"` is not ADMIN to Oracle: the rule compares names as Oracle stores them."""
    password = oracle.user("admin")
    arn = oracle.app('"admin"', password)
    invoke(handler, arn, oracle.sm.start_rotation(arn))
    assert oracle.sm.value(arn, AWSCURRENT)["username"] == '"admin_clone"'
    assert oracle.logs_in(arn)
    oracle.assert_master_intact()


# -- 3: `victim_clone` that is no clone of `victim` ---------------------------------------------------------
@pytest.fixture
def victim(oracle: Oracle) -> str:
    """VICTIM, with its own single-user secret, may read salaries."""
    password = oracle.user("VICTIM")
    oracle.dictionary.tab_privs.append(("VICTIM", "HR", "SALARIES", "SELECT", "NO", "TABLE"))
    return oracle.secret("victim", password)


def test_an_unrelated_victim_clone_does_not_get_the_victims_password(oracle: Oracle, victim: str) -> None:
    """Mallory owns a user that happens to be called VICTIM_CLONE and knows its password:
    AWSCURRENT logs in, but VICTIM_CLONE lacks what VICTIM holds, so VICTIM is not touched."""
    mallory = oracle.user("VICTIM_CLONE")
    arn = oracle.app("victim_clone", mallory)
    error = oracle.attempt(arn, PrivilegeError)
    assert "'victim_clone' lacks what 'victim' holds: SELECT ON \"HR\".\"SALARIES\"" in str(error)
    assert oracle.logs_in(victim), "the victim keeps its password"
    assert oracle.double.passwords["VICTIM_CLONE"] == mallory


def test_a_clone_the_rotator_made_hands_back_to_the_original(oracle: Oracle, victim: str) -> None:
    """The control: with VICTIM's grants, VICTIM_CLONE is what the rotator makes, and the
    rotation back to VICTIM goes through."""
    clone = oracle.user("VICTIM_CLONE")
    oracle.dictionary.tab_privs.append(("VICTIM_CLONE", "HR", "SALARIES", "SELECT", "NO", "TABLE"))
    arn = oracle.app("victim_clone", clone)
    invoke(handler, arn, oracle.sm.start_rotation(arn))
    assert oracle.sm.value(arn, AWSCURRENT)["username"] == "victim"
    assert [s for s in oracle.double.statements if PASSWORD_CHANGE.match(s)] == [
        f'ALTER USER "VICTIM" IDENTIFIED BY "{oracle.sm.value(arn, AWSCURRENT)["password"]}"'
    ]


# -- 3: a pre-existing clone with more power than the original ----------------------------------------------
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"role_privs": [("OPS_CLONE", "DBA", "NO", "YES")]}, "role DBA"),
        ({"sys_privs": [("OPS_CLONE", "CREATE USER", "NO")]}, "CREATE USER"),
        ({"sys_privs": [("OPS_CLONE", "CREATE SESSION", "YES")]}, "CREATE SESSION WITH ADMIN OPTION"),
        (
            {"tab_privs": [("OPS_CLONE", "HR", "SALARIES", "SELECT", "NO", "TABLE")]},
            'SELECT ON "HR"."SALARIES"',
        ),
        (
            {"col_privs": [("OPS_CLONE", "HR", "STAFF", "PAY", "UPDATE", "NO")]},
            'UPDATE ("PAY") ON "HR"."STAFF"',
        ),
        ({"administrative": [("OPS_CLONE", "SYSDBA")]}, "SYSDBA"),
        ({"proxies": [("OPS_CLONE", "HR")]}, "proxy rights for 'HR'"),
        ({"objects": {"OPS_CLONE": 4}}, "'ops_clone' owns 4 objects"),
    ],
)
def test_a_pre_existing_clone_with_more_than_the_original_is_not_taken_over(
    oracle: Oracle, extra: dict[str, Any], named: str
) -> None:
    """Mallory knows OPS's password (AWSCURRENT logs in); OPS_CLONE was made by someone else
    with more power, and its password must not land in Mallory's secret."""
    ops = oracle.user("OPS")
    oracle.user("OPS_CLONE")
    add(oracle.dictionary, extra)
    before = dict(oracle.double.passwords)
    error = oracle.attempt(oracle.app("ops", ops), PrivilegeError)
    assert named in str(error)
    assert oracle.double.passwords == before, "OPS_CLONE keeps its password"


# -- the source's own power ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("grant", "named"),
    [
        ({"role_privs": [("APP", "DBA", "NO", "YES")]}, "role DBA"),
        (
            {"role_privs": [("APP", "APP_ROLE", "NO", "YES"), ("APP_ROLE", "DBA", "NO", "YES")]},
            "role DBA (through role APP_ROLE)",
        ),
        ({"sys_privs": [("APP", "ALTER USER", "NO")]}, "ALTER USER"),
        ({"sys_privs": [("APP", "GRANT ANY PRIVILEGE", "NO")]}, "GRANT ANY PRIVILEGE"),
        ({"administrative": [("APP", "SYSDBA")]}, "SYSDBA"),
    ],
)
def test_a_source_with_administrative_power_needs_the_opt_in(
    oracle: Oracle, grant: dict[str, list[Any]], named: str
) -> None:
    password = oracle.user("APP")
    add(oracle.dictionary, grant)
    error = oracle.attempt(oracle.app("app", password), PrivilegeError)
    assert f"'app' holds {named}" in str(error)
    assert "allow_privileged_user" in str(error)
    assert "APP_CLONE" not in oracle.double.passwords

    opted_in = oracle.app("app", password, allow_privileged_user=True)
    invoke(handler, opted_in, oracle.sm.start_rotation(opted_in))
    assert oracle.sm.value(opted_in, AWSCURRENT)["username"] == "app_clone"
    assert oracle.logs_in(opted_in)


# -- the confused-deputy guard ------------------------------------------------------------------------------
def test_a_current_version_that_does_not_log_in_stops_before_the_master(oracle: Oracle) -> None:
    oracle.user("APP")  # its real password is not the one in the secret
    error = oracle.attempt(oracle.app("app", "Guess-pass-1"), LoginError)
    assert "AWSCURRENT" in str(error)
    assert oracle.during == ["app", "app_clone"], "AWSCURRENT, then AWSPENDING; never the master"
    assert oracle.double.statements == []


# -- 5: the master's password travels only as the master secret says ----------------------------------------
@pytest.mark.parametrize(
    "weaker", [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}, {"sslrootcert": "impostor"}]
)
def test_the_master_logs_in_with_its_own_tls_settings(
    oracle: Oracle, cas: tuple[CertificateAuthority, CertificateAuthority], weaker: dict[str, Any]
) -> None:
    """Whatever the app secret says about TLS, the master's login is TCPS verified against the
    master secret's own CA and host name; the app's logins follow the app secret."""
    ours, impostor = cas
    app_tls = {k: str(impostor.cert_path) if v == "impostor" else v for k, v in weaker.items()}
    oracle.master_arn = oracle.secret(
        "admin", oracle.master_password, sslmode="verify-full", sslrootcert=str(ours.cert_path)
    )
    password = oracle.user("APP")
    arn = oracle.app("app", password, **app_tls)
    invoke(handler, arn, oracle.sm.start_rotation(arn))
    assert oracle.sm.value(arn, AWSCURRENT)["username"] == "app_clone"

    by_user = [(c["user"], c) for c in oracle.double.connects]
    assert [user for user, _ in by_user] == ["app", "admin", "app_clone"]
    master = by_user[1][1]
    assert (master["protocol"], master["ssl_server_dn_match"]) == ("tcps", True)
    assert master["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert ca_names(master["ssl_context"]) == [ours.name]
    for _, app in (by_user[0], by_user[2]):
        if weaker.get("ssl") is False or weaker.get("sslmode") == "disable":
            assert app["protocol"] == "tcp" and "ssl_context" not in app
        elif "sslrootcert" in weaker:
            assert ca_names(app["ssl_context"]) == [impostor.name]
        else:
            assert app["ssl_context"].verify_mode == ssl.CERT_NONE


# -- 6 and the whole flow -----------------------------------------------------------------------------------
def test_two_rotations_are_tested_marked_and_finished(oracle: Oracle) -> None:
    """testSecret marks the version it tested; finishSecret moves AWSCURRENT to it. The clone the
    first rotation made passes the checks of the second, which hands back to the original."""
    password = oracle.user("APP", "CREATE TABLE")
    oracle.dictionary.role_privs.append(("APP", "REPORTING", "NO", "YES"))
    oracle.dictionary.tab_privs.append(("APP", "SALES", "ORDERS", "SELECT", "YES", "TABLE"))
    arn = oracle.app("app", password)
    for expected in ("app_clone", "app"):
        token = oracle.sm.start_rotation(arn)
        invoke(handler, arn, token)
        assert oracle.sm.value(arn, AWSCURRENT)["username"] == expected
        assert set(oracle.sm.stages(arn, marks=True)[token]) == {AWSCURRENT, ROTATORS_TESTED}
        assert oracle.logs_in(arn)
    assert [s for s in oracle.double.statements if s.startswith("GRANT")] == [
        'GRANT CREATE SESSION TO "APP_CLONE"',
        'GRANT CREATE TABLE TO "APP_CLONE"',
        'GRANT "REPORTING" TO "APP_CLONE"',
        'GRANT SELECT ON "SALES"."ORDERS" TO "APP_CLONE" WITH GRANT OPTION',
    ]
    oracle.assert_master_intact()


def test_finish_right_after_create_moves_nothing(oracle: Oracle) -> None:
    password = oracle.user("APP")
    arn = oracle.app("app", password)
    token = oracle.sm.start_rotation(arn)
    with pytest.raises(LoginError):
        invoke(handler, arn, token, "createSecret", "finishSecret")
    assert oracle.sm.value(arn, AWSCURRENT)["password"] == password
    assert oracle.double.statements == []
    assert oracle.logs_in(arn)


def test_a_clone_created_meanwhile_by_another_run_is_checked_and_adopted(
    oracle: Oracle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Oracle has no lock the master could take on a user: when an overlapping run of setSecret
    creates the clone between this run's lookup and its CREATE USER (ORA-01920), this run checks
    that clone like any other, then changes it."""
    password = oracle.user("APP", "CREATE TABLE")
    arn = oracle.app("app", password)
    token = oracle.sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    execute = RecordingCursor.execute

    def raced(self: RecordingCursor, statement: str, parameters: dict[str, Any] | None = None) -> None:
        execute(self, statement, parameters)  # on the first CREATE: the other run's, which lands first
        if statement.startswith('CREATE USER "APP_CLONE"'):
            raise ora_error(1920, "user name 'APP_CLONE' conflicts with another user or role name")

    monkeypatch.setattr(RecordingCursor, "execute", raced)
    invoke(handler, arn, token, "setSecret", "testSecret", "finishSecret")

    assert oracle.sm.value(arn, AWSCURRENT)["username"] == "app_clone"
    assert oracle.logs_in(arn)
    changes = [s.split(" IDENTIFIED")[0] for s in oracle.double.statements if "IDENTIFIED BY" in s]
    assert changes == ['CREATE USER "APP_CLONE"', 'ALTER USER "APP_CLONE"']
    assert 'GRANT CREATE TABLE TO "APP_CLONE"' in oracle.double.statements
    oracle.assert_master_intact()
