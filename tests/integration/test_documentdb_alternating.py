"""Alternating users against SecantusDB: a master secret rotates `user` and `user_clone` in turns,
and the clone gets the original's roles (and SCRAM mechanisms) afresh on every rotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from rotators.engines.documentdb import handler
from rotators.errors import LoginError, PasswordChangeError, SecretNotFoundError, TargetMismatchError
from rotators.testing.secantus import SecantusServer
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import MongoAdmin, invoke, mongo_secret

READ_WRITE = {"role": "readWrite", "db": "orders"}


@pytest.fixture
def master_arn(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
) -> str:
    """A master like DocumentDB's: it administers users, it is not `root`."""
    name, password = f"master_{role_name}", new_password()
    mongo_admin.create_user(name, password, [{"role": "userAdminAnyDatabase", "db": "admin"}])
    return mongo_sm.create_secret(name, mongo_secret(mongo, name, password))


def make_app(
    sm: LocalSecretsManager,
    admin: MongoAdmin,
    server: SecantusServer,
    name: str,
    password: str,
    master_arn: str,
    **options: Any,
) -> str:
    admin.create_user(name, password, [READ_WRITE], **options)
    extra = {"authMechanism": options["mechanisms"][0]} if "mechanisms" in options else {}
    return sm.create_secret(name, mongo_secret(server, name, password, masterarn=master_arn, **extra))


@pytest.fixture
def app_secret(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    master_arn: str,
    new_password: Callable[[], str],
) -> str:
    return make_app(mongo_sm, mongo_admin, mongo, role_name, new_password(), master_arn)


def test_two_alternating_rotations_keep_both_logins_working(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, app_secret: str, role_name: str
) -> None:
    first = mongo_sm.value(app_secret, "AWSCURRENT")

    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))
    second = mongo_sm.value(app_secret, "AWSCURRENT")
    assert second["username"] == f"{role_name}_clone"
    assert mongo_sm.value(app_secret, "AWSPREVIOUS") == first
    assert mongo_admin.logs_in(first["username"], first["password"]), "the previous login keeps working"
    assert mongo_admin.logs_in(second["username"], second["password"])
    clone = mongo_admin.user(second["username"])
    assert clone is not None
    assert clone["roles"] == [READ_WRITE]
    assert clone["mechanisms"] == ["SCRAM-SHA-256"]

    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))
    third = mongo_sm.value(app_secret, "AWSCURRENT")
    assert third["username"] == role_name
    assert third["password"] not in (first["password"], second["password"])
    assert mongo_sm.value(app_secret, "AWSPREVIOUS") == second
    assert mongo_admin.logs_in(second["username"], second["password"]), "the clone keeps working"
    assert mongo_admin.logs_in(third["username"], third["password"])
    assert not mongo_admin.logs_in(role_name, first["password"])
    assert sorted(mongo_sm.stages(app_secret).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]


def test_the_clone_can_do_what_the_original_can(
    mongo_sm: LocalSecretsManager, mongo: SecantusServer, app_secret: str
) -> None:
    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))
    clone = mongo_sm.value(app_secret, "AWSCURRENT")
    with mongo.client(clone["username"], clone["password"]) as client:
        client.orders.items.insert_one({"by": "clone"})
    original = mongo_sm.value(app_secret, "AWSPREVIOUS")
    with mongo.client(original["username"], original["password"]) as client:
        assert client.orders.items.count_documents({"by": "clone"}) >= 1


def test_the_clone_follows_the_originals_roles_on_every_rotation(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, app_secret: str, role_name: str
) -> None:
    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))  # creates the clone
    reporting = {"role": "read", "db": "reports"}
    mongo_admin.command("updateUser", role_name, roles=[reporting])  # readWrite taken away
    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))  # the original's turn
    invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))  # the clone's turn: refreshed
    clone = mongo_admin.user(f"{role_name}_clone")
    assert clone is not None
    assert clone["roles"] == [reporting], "a role taken from the original is taken from the clone"


def test_repeated_steps_and_a_retried_rotation_leave_one_clone(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, app_secret: str, role_name: str
) -> None:
    token = mongo_sm.start_rotation(app_secret)
    invoke(handler, app_secret, token, "createSecret", "setSecret", "setSecret")
    invoke(handler, app_secret, token)  # a whole retry with the same token
    current = mongo_sm.value(app_secret, "AWSCURRENT")
    assert current["username"] == f"{role_name}_clone"
    assert mongo_admin.logs_in(current["username"], current["password"])
    assert [u["user"] for u in mongo_admin.command("usersInfo", 1)["users"]].count(current["username"]) == 1


def test_a_scram_sha_1_original_gets_a_scram_sha_1_clone(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    master_arn: str,
    new_password: Callable[[], str],
) -> None:
    """DocumentDB's default mechanism, live: the clone mirrors it and logs in with it."""
    arn = make_app(
        mongo_sm, mongo_admin, mongo, role_name, new_password(), master_arn, mechanisms=["SCRAM-SHA-1"]
    )
    for expected in (f"{role_name}_clone", role_name):
        invoke(handler, arn, mongo_sm.start_rotation(arn))
        current = mongo_sm.value(arn, "AWSCURRENT")
        assert current["username"] == expected
        user = mongo_admin.user(expected)
        assert user is not None
        assert user["mechanisms"] == ["SCRAM-SHA-1"]
        assert mongo_admin.logs_in(expected, current["password"], "SCRAM-SHA-1")


def test_documentdb_dialect_alternates(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, app_secret: str, role_name: str
) -> None:
    current = mongo_sm.value(app_secret, "AWSCURRENT")
    mongo_sm.client.put_secret_value(
        SecretId=app_secret, SecretString=json.dumps({**current, "engine": "documentdb"})
    )
    for expected in (f"{role_name}_clone", role_name):
        invoke(handler, app_secret, mongo_sm.start_rotation(app_secret))
        value = mongo_sm.value(app_secret, "AWSCURRENT")
        assert value["username"] == expected
        assert mongo_admin.logs_in(expected, value["password"])


def test_a_missing_original_does_not_log_in_and_nothing_is_created(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    master_arn: str,
) -> None:
    arn = mongo_sm.create_secret(
        role_name, mongo_secret(mongo, role_name, "Never-Created-1", masterarn=master_arn)
    )
    token = mongo_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mongo_sm.stages(arn)
    with pytest.raises(LoginError, match=f"does not log in as '{role_name}'"):
        invoke(handler, arn, token, "setSecret")
    assert mongo_sm.stages(arn) == labels
    assert mongo_admin.user(f"{role_name}_clone") is None


def test_a_master_without_user_admin_rights_fails_clearly_and_changes_nothing(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    weak, weak_password = f"weak_{role_name}", new_password()
    mongo_admin.create_user(weak, weak_password, [READ_WRITE])
    weak_arn = mongo_sm.create_secret(weak, mongo_secret(mongo, weak, weak_password))
    password = new_password()
    arn = make_app(mongo_sm, mongo_admin, mongo, role_name, password, weak_arn)
    token = mongo_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mongo_sm.stages(arn)
    with pytest.raises(PasswordChangeError, match="viewUser"):
        invoke(handler, arn, token, "setSecret")
    assert mongo_sm.stages(arn) == labels
    assert mongo_admin.logs_in(role_name, password)
    assert mongo_admin.user(f"{role_name}_clone") is None


def test_missing_master_secret_is_a_clear_error(
    mongo_sm: LocalSecretsManager,
    mongo_admin: MongoAdmin,
    mongo: SecantusServer,
    role_name: str,
    new_password: Callable[[], str],
) -> None:
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-master-AbCdEf"
    password = new_password()
    arn = make_app(mongo_sm, mongo_admin, mongo, role_name, password, missing)
    token = mongo_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    labels = mongo_sm.stages(arn)
    with pytest.raises(SecretNotFoundError, match="masterarn"):
        invoke(handler, arn, token, "setSecret")
    assert mongo_sm.stages(arn) == labels
    assert mongo_admin.logs_in(role_name, password)


def test_a_pending_version_naming_another_user_is_refused(
    mongo_sm: LocalSecretsManager, mongo_admin: MongoAdmin, app_secret: str, master_arn: str
) -> None:
    """Whoever can write AWSPENDING must not get the master to reset any user's password."""
    token = mongo_sm.start_rotation(app_secret)
    master = mongo_sm.value(master_arn, "AWSCURRENT")
    current = mongo_sm.value(app_secret, "AWSCURRENT")
    evil = {**current, "username": master["username"], "password": "Evil-" + token}
    mongo_sm.client.put_secret_value(
        SecretId=app_secret,
        ClientRequestToken=token,
        SecretString=json.dumps(evil),
        VersionStages=["AWSPENDING"],
    )
    with pytest.raises(TargetMismatchError, match="partner"):
        invoke(handler, app_secret, token, "setSecret")
    assert mongo_admin.logs_in(master["username"], master["password"]), "the master was not touched"
