"""What only the DocumentDB/MongoDB engine has, on a real MongoDB-wire server (SecantusDB: SCRAM,
TLS): users keep their SCRAM mechanisms, the `documentdb` dialect, a user that may not read its
own record, and a clone that follows the original's roles.

MongoDB lets a user change its own password only with the `changeOwnPassword` action, which no
built-in role grants; application users get it through a custom role (tests/engines.py). The
scenarios every engine shares are in test_single_user.py and test_alternating_users.py.
"""

from __future__ import annotations

import json

import pytest

from rotators.engines.documentdb import DocumentDBRotator
from rotators.secrets import AWSCURRENT, AWSPREVIOUS
from rotators.testing.secantus import SecantusServer
from tests.admins import READ_WRITE, MongoAdmin
from tests.conftest import Watched
from tests.engines import DOCUMENTDB, Database, Engine, Login

SCRAM_SHA_1 = "SCRAM-SHA-1"


@pytest.fixture
def engine() -> Engine:
    return DOCUMENTDB


def _as_documentdb(db: Database, arn: str) -> dict[str, object]:
    """`"engine": "documentdb"`: retryWrites off, no MongoDB-only options, a CA bundle by path."""
    current = {**db.sm.value(arn, AWSCURRENT), "engine": "documentdb"}
    db.sm.client.put_secret_value(SecretId=arn, SecretString=json.dumps(current))
    return current


# -- single user --------------------------------------------------------------------------------------------
def test_a_user_that_may_not_read_its_own_record_still_rotates(
    db: Database, mongo_admin: MongoAdmin, role_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """MongoDB always shows users their own record; where a server does not, updateUser goes
    without the mechanisms list rather than failing."""
    mongo_admin.command(
        "createRole",
        f"own_{role_name}",
        privileges=[{"resource": {"db": "admin", "collection": ""}, "actions": ["changeOwnPassword"]}],
        roles=[],
    )
    login = db.add_user(grants=({"role": f"own_{role_name}", "db": "admin"},))
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)
    assert any("no viewUser" in r.getMessage() for r in caplog.records), "the fallback path ran"


def test_scram_sha_1_user_keeps_scram_sha_1(db: Database, mongo_admin: MongoAdmin) -> None:
    """DocumentDB's default: a SCRAM-SHA-1 user, named as such in the secret."""
    login = Login(db.name(), db.new_password())
    mongo_admin.create_user(
        login.username, login.password, list(DOCUMENTDB.user_grants), mechanisms=[SCRAM_SHA_1]
    )
    arn = db.store(login, authMechanism=SCRAM_SHA_1)
    current = db.rotate(arn)
    assert sorted(db.sm.stages(arn).values()) == [[AWSCURRENT], [AWSPREVIOUS]]
    assert db.sm.value(arn, AWSPREVIOUS)["password"] == login.password
    assert mongo_admin.logs_in(login.username, current["password"], SCRAM_SHA_1)
    assert not mongo_admin.logs_in(login.username, login.password, SCRAM_SHA_1)
    user = mongo_admin.user(login.username)
    assert user is not None
    assert user["mechanisms"] == [SCRAM_SHA_1]


def test_documentdb_dialect_rotates(db: Database, app: tuple[str, Login]) -> None:
    arn, login = app
    _as_documentdb(db, arn)
    assert db.rotate(arn)["engine"] == "documentdb"
    db.assert_rotated(arn, login.password)


def test_tls_is_used_by_default(db: Database, app: tuple[str, Login]) -> None:
    """The shared server speaks TLS only; a secret without `ssl` logs in over verified TLS."""
    arn, _ = app
    rotator = DocumentDBRotator()
    value = {k: v for k, v in db.sm.value(arn, AWSCURRENT).items() if k != "ssl"}
    current = rotator.parse(json.dumps(value), where="test")
    assert rotator.client_options(current, current.username, current.password)["tls"] is True
    with rotator.connect(current, current.username, current.password) as conn:
        rotator.probe(conn, current.username)


def test_rotators_check_passes_a_good_secret_and_changes_nothing(
    db: Database, app: tuple[str, Login], leak_check: Watched
) -> None:
    from rotators.cli import main

    arn, _ = app
    before = db.sm.stages(arn)
    assert main(["check", "--secret-id", arn]) == 0
    table = leak_check.read_output()
    assert "FAIL" not in table
    assert "TLS (sslmode=verify-full, certificate verified, MongoDB)" in table
    assert db.sm.stages(arn) == before


# -- alternating users: the clone's roles and mechanisms ---------------------------------------------
@pytest.fixture
def pair(db: Database) -> tuple[str, Login]:
    login = db.add_user(grants=(READ_WRITE,))
    return db.store(login, masterarn=db.master_secret()), login


def test_the_clone_can_do_what_the_original_can(
    db: Database, mongo: SecantusServer, pair: tuple[str, Login]
) -> None:
    arn, _ = pair
    clone = db.rotate(arn)
    with mongo.client(clone["username"], clone["password"]) as client:
        client.orders.items.insert_one({"by": "clone"})
    original = db.sm.value(arn, AWSPREVIOUS)
    with mongo.client(original["username"], original["password"]) as client:
        assert client.orders.items.count_documents({"by": "clone"}) >= 1


def test_the_clone_follows_the_originals_roles_on_every_rotation(
    db: Database, mongo_admin: MongoAdmin, pair: tuple[str, Login]
) -> None:
    arn, login = pair
    db.rotate(arn)  # creates the clone
    reporting = {"role": "read", "db": "reports"}
    mongo_admin.command("updateUser", login.username, roles=[reporting])  # readWrite taken away
    db.rotate(arn)  # the original's turn
    db.rotate(arn)  # the clone's turn: refreshed
    clone = mongo_admin.user(f"{login.username}_clone")
    assert clone is not None
    assert clone["roles"] == [reporting], "a role taken from the original is taken from the clone"


def test_repeated_steps_and_a_retried_rotation_leave_one_clone(
    db: Database, mongo_admin: MongoAdmin, pair: tuple[str, Login]
) -> None:
    arn, login = pair
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret", "setSecret", "setSecret")
    db.invoke(arn, token)  # a whole retry with the same token
    current = db.sm.value(arn, AWSCURRENT)
    assert current["username"] == f"{login.username}_clone"
    assert db.logs_in(current["username"], current["password"])
    assert [u["user"] for u in mongo_admin.command("usersInfo", 1)["users"]].count(current["username"]) == 1


def test_a_scram_sha_1_original_gets_a_scram_sha_1_clone(db: Database, mongo_admin: MongoAdmin) -> None:
    """DocumentDB's default mechanism, live: the clone mirrors it and logs in with it."""
    login = Login(db.name(), db.new_password())
    mongo_admin.create_user(login.username, login.password, [READ_WRITE], mechanisms=[SCRAM_SHA_1])
    arn = db.store(login, masterarn=db.master_secret(), authMechanism=SCRAM_SHA_1)
    for expected in (f"{login.username}_clone", login.username):
        current = db.rotate(arn)
        assert current["username"] == expected
        user = mongo_admin.user(expected)
        assert user is not None
        assert user["mechanisms"] == [SCRAM_SHA_1]
        assert mongo_admin.logs_in(expected, current["password"], SCRAM_SHA_1)


def test_documentdb_dialect_alternates(db: Database, pair: tuple[str, Login]) -> None:
    arn, login = pair
    _as_documentdb(db, arn)
    for expected in (f"{login.username}_clone", login.username):
        value = db.rotate(arn)
        assert value["username"] == expected
        assert db.logs_in(expected, value["password"])
