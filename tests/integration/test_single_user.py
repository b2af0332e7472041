"""Single-user rotation, the same scenarios for every engine: each against its real server
(PostgreSQL, MariaDB, Redshift through its shims, SecantusDB) and moto over HTTP.

What only one engine has is in its own file (test_postgresql.py, test_mysql.py, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    TargetMismatchError,
    VersionStageError,
)
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from rotators.testing.tls import CertificateAuthority
from tests.conftest import Watched
from tests.engines import ENGINES, STEPS, Database, Engine, Login, bind, engines

ALL = engines()


def _without_password(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "password"}


def _created(db: Database, arn: str) -> str:
    """A new rotation of `arn`, as far as its pending value (createSecret): its token."""
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    return token


@pytest.mark.parametrize("engine", ALL)
def test_rotation_changes_the_password_and_moves_the_labels(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    before = db.sm.value(arn, AWSCURRENT)
    privileges = db.admin.privileges(login.username)
    after = db.rotate(arn)

    db.assert_rotated(arn, before["password"])
    assert _without_password(after) == _without_password(before)
    assert after["owner"] == "team-a", "unknown keys are carried into the new version"
    assert db.admin.privileges(login.username) == privileges, "the user keeps its privileges"


@pytest.mark.parametrize("engine", ALL)
def test_two_rotations_in_a_row(db: Database, app: tuple[str, Login]) -> None:
    arn, _ = app
    for _ in range(2):
        before = db.sm.value(arn, AWSCURRENT)["password"]
        db.rotate(arn)
        db.assert_rotated(arn, before)


@pytest.mark.parametrize("engine", ALL)
def test_every_step_repeated_is_harmless(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    token = db.sm.start_rotation(arn)
    for step in STEPS:
        db.invoke(arn, token, step)
        db.invoke(arn, token, step)
    db.assert_rotated(arn, login.password)


@pytest.mark.parametrize("engine", ALL)
def test_repeated_create_keeps_the_first_pending_value(db: Database, app: tuple[str, Login]) -> None:
    arn, _ = app
    token = _created(db, arn)
    first = db.sm.value(arn, AWSPENDING)
    db.invoke(arn, token, "createSecret")
    assert db.sm.value(arn, AWSPENDING) == first


@pytest.mark.parametrize("engine", ALL)
def test_crash_after_set_then_full_retry_with_the_same_token(db: Database, app: tuple[str, Login]) -> None:
    """The server already has the pending password, so AWSCURRENT no longer logs in: setSecret
    must see that AWSPENDING does, and change nothing."""
    arn, login = app
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret", "setSecret")
    assert not db.logs_in(login.username, login.password)
    db.invoke(arn, token)  # the process died; Secrets Manager retries the whole rotation
    db.assert_rotated(arn, login.password)


@pytest.mark.parametrize("engine", ALL)
def test_abandoned_rotation_with_another_token(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    abandoned = _created(db, arn)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)
    db.fails(arn, abandoned, "setSecret", VersionStageError, "not AWSPENDING")  # a stale token moves nothing


@pytest.mark.parametrize("engine", ALL)
def test_recovers_through_previous_after_a_half_finished_rotation(
    db: Database, app: tuple[str, Login]
) -> None:
    """The database still has the AWSPREVIOUS password (e.g. restored from a snapshot):
    setSecret logs in with it instead of locking the user out."""
    arn, _ = app
    db.rotate(arn)
    previous = db.sm.value(arn, AWSPREVIOUS)
    db.admin.set_password(previous["username"], previous["password"])
    current = db.rotate(arn)
    assert db.logs_in(current["username"], current["password"])


@pytest.mark.parametrize("engine", ALL)
def test_password_changed_behind_our_back_fails_clearly_and_moves_nothing(
    db: Database, app: tuple[str, Login]
) -> None:
    arn, login = app
    by_hand = db.new_password()
    db.admin.set_password(login.username, by_hand)
    token = _created(db, arn)
    db.fails(arn, token, "setSecret", LoginError, r"No version of .* logs in")
    assert db.logs_in(login.username, by_hand), "the working password was not touched"


@pytest.mark.parametrize("engine", ALL)
def test_server_down_during_set_raises_and_the_retry_succeeds(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")  # pymongo waits this long for a server to appear
    db = own_db
    login = db.add_user()
    arn = db.store(login)
    token = _created(db, arn)

    db.stop()
    db.fails(arn, token, "setSecret", DatabaseUnavailableError, db.engine.unavailable)

    db.server.start()
    assert db.logs_in(login.username, login.password), "the old password still works after the failure"
    db.invoke(arn, token, "setSecret", "testSecret", "finishSecret")
    db.assert_rotated(arn, login.password)


@pytest.mark.parametrize(
    ("engine", "name"),
    [
        pytest.param(engine, name, id=f"{engine.name}-{name}")
        for engine in ENGINES
        for name in engine.awkward_names
    ],
)
def test_user_names_that_need_quoting(db: Database, name: str) -> None:
    """Quoted by the driver's tools, or sent as data (MongoDB's BSON strings), never spliced in."""
    login = db.add_user(f"{name}_{db.name()[-6:]}")
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)


@pytest.mark.parametrize("engine", ALL)
def test_a_certificate_that_does_not_verify_fails_without_plaintext_fallback(
    db: Database, app: tuple[str, Login], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn, login = app
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(stranger.cert_path))
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    token = _created(db, arn)
    seen = len(db.client_tls()) if db.engine.features.tls_witness else 0
    db.fails(arn, token, "setSecret", DatabaseUnavailableError, "certificate verify failed")
    if db.engine.features.tls_witness:
        assert all(db.client_tls()[seen:]), "no plaintext attempt followed"
    assert db.logs_in(login.username, login.password), "nothing changed"


@pytest.mark.parametrize("engine", ALL)
def test_plaintext_only_when_the_secret_says_so(
    engine: Engine,
    db: Database,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    leak_check: Watched,
) -> None:
    """Where a server without TLS can run here, a secret that does not turn TLS off is refused
    there (no plaintext fallback); with `"ssl": false` the rotation runs without TLS."""
    if engine.plain_server:
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
        db = bind(engine, request, monkeypatch, leak_check.add, server="plain")
    login = db.add_user()
    if engine.plain_server:
        unsaid = {k: v for k, v in db.secret(login).items() if k != "ssl"}
        silent = db.sm.create_secret(db.name("silent"), unsaid)
        token = _created(db, silent)
        db.fails(silent, token, "setSecret", DatabaseUnavailableError, engine.no_tls_error)
        assert db.logs_in(login.username, login.password), "no plaintext fallback: nothing changed"

    arn = db.store(login, ssl=False)
    seen = len(db.client_tls()) if engine.features.tls_witness else 0
    current = db.rotate(arn)
    db.assert_rotated(arn, login.password)
    assert current["ssl"] is False
    if engine.features.tls_witness:
        assert db.client_tls()[seen:] and not any(db.client_tls()[seen:]), "no connection asked for TLS"


@pytest.mark.parametrize("engine", ALL)
def test_pending_that_points_at_another_server_is_refused(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    token = db.sm.start_rotation(arn)
    current = db.sm.value(arn, AWSCURRENT)
    evil = {**current, "host": "localhost", "port": db.server.port + 1, "password": "Evil-" + token}
    db.sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(evil), VersionStages=[AWSPENDING]
    )
    db.invoke(arn, token, "createSecret")  # keeps the staged value, as a retry would
    db.fails(arn, token, "setSecret", TargetMismatchError, "another server")
    assert db.logs_in(login.username, login.password)


def _bad_secrets(engine: Engine) -> list[tuple[dict[str, Any], str]]:
    own = {"engine": engine.secret_engine, "host": "h", "username": "u", "password": "Any-Pass-1"}
    return [
        ({**own, "engine": engine.foreign_engine}, f"engine '{engine.foreign_engine}'"),
        ({k: v for k, v in own.items() if k != "username"}, "lacks 'username'"),
        ({**own, "port": "x"}, "'port'"),
        ({**own, "ssl": "maybe"}, "'ssl'"),
        ({**own, "sslmode": "preferred"}, "'preferred'"),
    ]


@pytest.mark.parametrize(
    ("engine", "value", "message"),
    [
        pytest.param(engine, value, message, id=f"{engine.name}-{message}")
        for engine in ENGINES
        for value, message in _bad_secrets(engine)
    ],
)
def test_a_bad_secret_is_a_typed_error_and_stages_nothing(
    db: Database, value: dict[str, Any], message: str
) -> None:
    arn = db.sm.create_secret(db.name("bad"), value)
    token = db.sm.start_rotation(arn)
    before = db.sm.stages(arn, marks=True)
    with pytest.raises(SecretFormatError, match=message):
        db.invoke(arn, token, "createSecret")
    assert db.sm.stages(arn, marks=True) == before, "no label moved"
    with pytest.raises(db.sm.client.exceptions.ResourceNotFoundException):
        db.sm.client.get_secret_value(SecretId=arn, VersionId=token)  # no value was staged


@pytest.mark.parametrize("engine", ALL)
def test_a_secret_that_is_not_json_is_a_typed_error(db: Database) -> None:
    arn = db.sm.client.create_secret(Name=db.name("plain"), SecretString="Plain-Password-Only")["ARN"]
    db.fails(arn, db.sm.start_rotation(arn), "createSecret", SecretFormatError, "not valid JSON")
