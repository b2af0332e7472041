"""Alternating users, the same scenarios for every engine: a master secret changes the passwords
of `user` and `user_clone` in turns, on each engine's real server, with moto over HTTP.

How each engine's clone gets the original's privileges is in its own file (test_mysql.py, ...).
"""

from __future__ import annotations

import json

import pytest

from rotators.errors import (
    LoginError,
    PasswordChangeError,
    SecretFormatError,
    SecretNotFoundError,
    TargetMismatchError,
)
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from tests.engines import ENGINES, Database, Login, LongName, engines

ALL = engines()
MISSING = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-master-AbCdEf"


@pytest.fixture
def master_arn(db: Database) -> str:
    return db.master_secret()


@pytest.fixture
def pair(db: Database, master_arn: str) -> tuple[str, Login]:
    """An application user and its secret, which names the master."""
    login = db.add_user()
    return db.store(login, masterarn=master_arn), login


def _created(db: Database, arn: str) -> str:
    """A new rotation of `arn`, as far as its pending value (createSecret): its token."""
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    return token


def _fails_at_set(db: Database, arn: str, error: type[Exception], message: str) -> None:
    """createSecret, then a setSecret that fails with `error` and moves no label."""
    db.fails(arn, _created(db, arn), "setSecret", error, message)


@pytest.mark.parametrize("engine", ALL)
def test_two_alternating_rotations_keep_both_logins_working(db: Database, pair: tuple[str, Login]) -> None:
    arn, login = pair
    first = db.sm.value(arn, AWSCURRENT)

    second = db.rotate(arn)
    clone = f"{login.username}_clone"
    assert second["username"] == clone
    assert db.sm.value(arn, AWSPREVIOUS) == first
    assert db.logs_in(first["username"], first["password"]), "the previous login keeps working"
    assert db.logs_in(second["username"], second["password"])
    if db.engine.features.copies_grants:
        assert db.admin.privileges(clone) == db.admin.privileges(login.username)

    third = db.rotate(arn)
    assert third["username"] == login.username
    assert third["password"] not in (first["password"], second["password"])
    assert db.sm.value(arn, AWSPREVIOUS) == second
    assert db.logs_in(second["username"], second["password"]), "the clone keeps working"
    assert db.logs_in(third["username"], third["password"])
    assert not db.logs_in(login.username, first["password"])
    assert sorted(db.sm.stages(arn).values()) == [[AWSCURRENT], [AWSPREVIOUS]]
    if db.engine.features.statement_log:
        log = db.statement_log()
        assert clone in log, "the server logged the rotation's statements"
        assert second["password"] not in log and third["password"] not in log


@pytest.mark.parametrize("engine", ALL)
def test_names_that_need_quoting(db: Database, master_arn: str) -> None:
    login = db.add_user(f"{db.engine.pair_name} {db.name()[-4:]}")
    arn = db.store(login, masterarn=master_arn)
    for _ in range(2):
        current = db.rotate(arn)
        assert db.logs_in(current["username"], current["password"])
    if db.engine.features.copies_grants:
        assert db.admin.privileges(f"{login.username}_clone") == db.admin.privileges(login.username)


@pytest.mark.parametrize("engine", ALL)
def test_missing_master_secret_is_a_clear_error(db: Database) -> None:
    login = db.add_user()
    _fails_at_set(db, db.store(login, masterarn=MISSING), SecretNotFoundError, "masterarn")
    assert db.logs_in(login.username, login.password)


@pytest.mark.parametrize("engine", ALL)
def test_a_master_secret_marked_for_deletion_is_named_in_the_error(
    db: Database, pair: tuple[str, Login], master_arn: str
) -> None:
    arn, _ = pair
    token = _created(db, arn)
    db.sm.client.delete_secret(SecretId=master_arn, RecoveryWindowInDays=7)
    db.fails(arn, token, "setSecret", SecretNotFoundError, r"named by 'masterarn'.*marked")
    db.sm.client.restore_secret(SecretId=master_arn)
    db.invoke(arn, token, "setSecret", "testSecret", "finishSecret")
    current = db.sm.value(arn, AWSCURRENT)
    assert db.logs_in(current["username"], current["password"])


@pytest.mark.parametrize("engine", ALL)
def test_master_on_another_host_is_refused(db: Database) -> None:
    login, master = db.add_user(), db.add_master()
    elsewhere = db.sm.create_secret(db.name("master"), {**db.secret(master), "port": db.server.port + 1})
    _fails_at_set(db, db.store(login, masterarn=elsewhere), TargetMismatchError, "same host and port")
    assert not db.admin.user_exists(f"{login.username}_clone")


@pytest.mark.parametrize("engine", ALL)
def test_a_missing_original_does_not_log_in_and_nothing_is_created(db: Database, master_arn: str) -> None:
    """The master acts only for a user whose AWSCURRENT logs in (the confused-deputy guard)."""
    never = Login(db.name(), "Never-Created-1")
    _fails_at_set(
        db, db.store(never, masterarn=master_arn), LoginError, f"does not log in as '{never.username}'"
    )
    assert not db.admin.user_exists(f"{never.username}_clone")


@pytest.mark.parametrize("engine", ALL)
def test_a_pending_version_naming_another_user_is_refused(
    db: Database, pair: tuple[str, Login], master_arn: str
) -> None:
    """Whoever can write AWSPENDING must not get the master to reset any user's password."""
    arn, _ = pair
    token = db.sm.start_rotation(arn)
    master = db.sm.value(master_arn, AWSCURRENT)
    evil = {**db.sm.value(arn, AWSCURRENT), "username": master["username"], "password": "Evil-" + token}
    db.sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=[AWSPENDING]
    )
    db.fails(arn, token, "setSecret", TargetMismatchError, "partner")
    assert db.logs_in(master["username"], master["password"]), "the master was not touched"


@pytest.mark.parametrize(
    ("engine", "weak_grants", "message"),
    [
        pytest.param(engine, *engine.weak_master, id=engine.name)
        for engine in ENGINES
        if engine.weak_master is not None
    ],
)
def test_a_master_short_of_privileges_fails_clearly_and_changes_nothing(
    db: Database, weak_grants: tuple[object, ...], message: str
) -> None:
    login, weak = db.add_user(), db.add_master(weak_grants)
    _fails_at_set(db, db.store(login, masterarn=db.store(weak)), PasswordChangeError, message)
    assert db.logs_in(login.username, login.password)
    assert not db.admin.user_exists(f"{login.username}_clone")


@pytest.mark.parametrize(
    ("engine", "long"),
    [
        pytest.param(engine, long, id=f"{engine.name}-{long.flavour or engine.secret_engine}-{long.length}")
        for engine in ENGINES
        for long in engine.long_names
    ],
)
def test_a_clone_name_that_does_not_fit_fails_at_create_before_anything_changes(
    db: Database, master_arn: str, long: LongName
) -> None:
    login = db.add_user(long.name()) if long.on_server else Login(long.name(), "Long-Name-Pass-1")
    arn = db.store(login, masterarn=master_arn, **({"engine": long.flavour} if long.flavour else {}))
    token = db.sm.start_rotation(arn)
    db.fails(arn, token, "createSecret", SecretFormatError, long.error)
    with pytest.raises(db.sm.client.exceptions.ResourceNotFoundException):
        db.sm.client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=AWSPENDING)
    if long.on_server:
        assert db.logs_in(login.username, login.password)
        assert not db.admin.user_exists(f"{login.username}_clone")
