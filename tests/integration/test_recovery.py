"""Single user after AWS's advice for a stuck rotation (take AWSPENDING off, rotate again): the
database holds the abandoned version's password and no label names it. setSecret finds it among
the newest unlabelled versions, and says what to do when it is not among them."""

from __future__ import annotations

import json
import time

import pytest

from rotators.errors import LoginError
from rotators.secrets import AWSPENDING
from tests.engines import ENGINES, Database, Engine, engines

RECOVERABLE = engines(among=tuple(e for e in ENGINES if e.name in ("postgresql", "mysql")))


def abandon(db: Database, arn: str) -> str:
    """createSecret and setSecret of a rotation, then its AWSPENDING taken off by hand."""
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret", "setSecret")
    db.sm.client.update_secret_version_stage(SecretId=arn, VersionStage=AWSPENDING, RemoveFromVersionId=token)
    return token


@pytest.mark.parametrize("engine", RECOVERABLE)
def test_the_next_rotation_changes_the_password_from_the_abandoned_version(
    engine: Engine, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    login = db.add_user()
    arn = db.store(login)
    abandoned = abandon(db, arn)
    assert not db.logs_in(login.username, login.password), "the database holds the abandoned password"

    db.rotate(arn)
    db.assert_rotated(arn, login.password)
    assert f"unlabelled version {abandoned}" in caplog.text, "the log names the version that worked"


@pytest.mark.parametrize("engine", RECOVERABLE)
def test_beyond_the_newest_unlabelled_versions_the_error_names_rotators_doctor(
    engine: Engine, db: Database
) -> None:
    login = db.add_user()
    arn = db.store(login)
    abandon(db, arn)
    time.sleep(1.1)  # newer by the clock Secrets Manager stamps versions with
    for _ in range(6):  # more than the bound: unlabelled versions made after the abandoned one
        value = {**db.secret(login), "password": db.new_password()}
        db.sm.client.put_secret_value(SecretId=arn, SecretString=json.dumps(value), VersionStages=["junk"])
    junk = next(version for version, stages in db.sm.stages(arn).items() if "junk" in stages)
    db.sm.client.update_secret_version_stage(SecretId=arn, VersionStage="junk", RemoveFromVersionId=junk)
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    # The abandoned version and the first junk one are beyond the five newest.
    untried = r"2 older unlabelled versions were not tried.*rotators doctor"
    db.fails(arn, token, "setSecret", LoginError, untried)
