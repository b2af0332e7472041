"""DocumentDBRotator without a server: its dialects, client options and the exact commands it sends.

The commands go through a recording stand-in for pymongo's Database (the driver boundary); the
live behaviour of the same paths is in tests/integration/test_documentdb_*.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from bson.son import SON
from pymongo.errors import AutoReconnect, OperationFailure

from rotators.database import NOT_CHECKED, DatabaseSecret
from rotators.engines.documentdb import DOCUMENTDB, MONGODB, DocumentDBRotator, Session, dialect_of
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    PasswordChangeError,
    SecretFormatError,
    SecretTestError,
)
from rotators.secrets import AWSCURRENT, SecretStore
from tests.offline import NEW_PASSWORD, FakeSecretsManager, create_then_set

PASSWORD = "New-Pa55word-value"
DOCDB_HOST = "orders.cluster-c0ffee.eu-west-1.docdb.amazonaws.com"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROTATORS_SSLMODE", "ROTATORS_CA_BUNDLE", "DB_CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "mongo", "host": "db.example", "username": "app", "password": "Old-1", **changes}
    return DocumentDBRotator().parse(json.dumps(value), where="the test secret")


# -- dialects and client options ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("engine", "host", "dialect"),
    [
        ("mongo", DOCDB_HOST, DOCUMENTDB),
        ("mongo", DOCDB_HOST.upper() + ".", DOCUMENTDB),
        ("mongodb", "orders-123.eu-west-1.docdb-elastic.amazonaws.com", DOCUMENTDB),
        ("mongo", "orders.cluster-1.cn-north-1.docdb.amazonaws.com.cn", DOCUMENTDB),
        ("documentdb", "127.0.0.1", DOCUMENTDB),
        ("mongo", "mongo.internal", MONGODB),
        ("mongodb", "docdb.amazonaws.com.evil.example", MONGODB),
    ],
)
def test_dialect(engine: str, host: str, dialect: object) -> None:
    assert dialect_of(secret(engine=engine, host=host)) is dialect


def test_defaults_are_admin_and_27017() -> None:
    value = secret()
    assert (value.port, value.dbname) == (27017, "admin")


def test_documentdb_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/opt/global-bundle.pem")
    value = secret(host=DOCDB_HOST, dbname="admin")
    assert DocumentDBRotator().client_options(value, "app", "Old-1") == {
        "host": DOCDB_HOST,
        "port": 27017,
        "username": "app",
        "password": "Old-1",
        "authSource": "admin",
        "appname": "rotators",
        "retryWrites": False,
        "connectTimeoutMS": 5000.0,
        "serverSelectionTimeoutMS": 5000.0,
        "socketTimeoutMS": 30000,
        "tls": True,
        "tlsCAFile": "/opt/global-bundle.pem",
    }


def test_mongodb_keeps_retryable_writes_and_the_system_store() -> None:
    options = DocumentDBRotator().client_options(secret(dbname="users"), "app", "Old-1")
    assert options["retryWrites"] is True
    assert options["authSource"] == "users"
    assert options["tls"] is True
    assert "tlsCAFile" not in options, "verified against the system trust store"
    assert "tlsAllowInvalidCertificates" not in options
    assert "tlsAllowInvalidHostnames" not in options


def test_documentdb_without_a_ca_bundle_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match=r"global-bundle\.pem"):
        DocumentDBRotator().client_options(secret(host=DOCDB_HOST), "app", "Old-1")


def test_documentdb_with_the_system_store_named_explicitly() -> None:
    options = DocumentDBRotator.tls_options(secret(host=DOCDB_HOST, sslrootcert="system"))
    assert options == {"tls": True}


def test_ca_bundle_from_the_secret_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/env/ca.pem")
    assert DocumentDBRotator.tls_options(secret(sslrootcert="/own/ca.pem"))["tlsCAFile"] == "/own/ca.pem"


def test_tls_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    options = DocumentDBRotator.tls_options
    assert options(secret(sslmode="verify-ca")) == {"tls": True, "tlsAllowInvalidHostnames": True}
    assert options(secret(sslmode="require")) == {"tls": True, "tlsAllowInvalidCertificates": True}
    monkeypatch.setenv("ROTATORS_SSLMODE", "verify-ca")
    assert options(secret())["tlsAllowInvalidHostnames"] is True
    assert options(secret(sslmode="verify-full")) == {"tls": True}, "the secret wins"


@pytest.mark.parametrize("changes", [{"ssl": False}, {"ssl": "false"}, {"sslmode": "disable"}])
def test_plaintext_only_when_the_secret_says_so(
    changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATORS_SSLMODE", "verify-full")
    assert DocumentDBRotator.tls_options(secret(**changes)) == {"tls": False}


@pytest.mark.parametrize("mode", ["prefer", "allow", "verify_full"])
def test_weak_or_unknown_sslmode_is_refused(mode: str) -> None:
    with pytest.raises(ConfigurationError, match='"ssl": false'):
        DocumentDBRotator.tls_options(secret(sslmode=mode))


def test_auth_mechanism_applies_to_the_user_and_its_clone_only() -> None:
    rotator = DocumentDBRotator()
    value = secret(authMechanism="SCRAM-SHA-1")
    assert rotator.client_options(value, "app", "x")["authMechanism"] == "SCRAM-SHA-1"
    assert rotator.client_options(value, "app_clone", "x")["authMechanism"] == "SCRAM-SHA-1"
    assert "authMechanism" not in rotator.client_options(value, "master", "x"), "the master negotiates"
    assert "authMechanism" not in rotator.client_options(secret(), "app", "x")


def test_unknown_auth_mechanism_is_refused() -> None:
    with pytest.raises(SecretFormatError, match="authMechanism"):
        DocumentDBRotator().client_options(secret(authMechanism="MONGODB-CR"), "app", "x")


def test_connect_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "2")
    options = DocumentDBRotator().client_options(secret(), "app", "x")
    assert (options["connectTimeoutMS"], options["serverSelectionTimeoutMS"]) == (2000.0, 2000.0)


# -- the commands, through a recording stand-in for pymongo's Database ----------------------------------
class RecordingDatabase:
    """Records every command document; answers usersInfo from `users`; fails where told."""

    def __init__(
        self,
        users: dict[str, dict[str, Any]] | None = None,
        *,
        fail: dict[str, Exception] | None = None,
        status: dict[str, Any] | None = None,
    ) -> None:
        self.name = "admin"
        self.users = users or {}
        self.fail = fail or {}
        self.status = status
        self.sent: list[dict[str, Any]] = []

    def command(self, command: SON[str, Any] | str, **kwargs: Any) -> dict[str, Any]:
        document = dict(command) if isinstance(command, SON) else {command: 1, **kwargs}
        self.sent.append(document)
        verb = next(iter(document))
        if verb in self.fail:
            raise self.fail[verb]
        if verb == "usersInfo":
            found = self.users.get(document["usersInfo"])
            return {"users": [found] if found else [], "ok": 1.0}
        if verb == "connectionStatus":
            return self.status or {}
        return {"ok": 1.0}

    def session(self, dialect: Any = MONGODB) -> Session:
        return Session(cast(Any, self), dialect)


def user(name: str, roles: list[Any], mechanisms: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"_id": f"admin.{name}", "user": name, "db": "admin", "roles": roles, **extra}
    if mechanisms is not None:
        found["mechanisms"] = mechanisms
    return found


ROLES = [{"role": "readWrite", "db": "orders"}, {"role": "read", "db": "reports"}]
RESTRICTIONS = [{"clientSource": ["10.0.0.0/8"]}]


def test_set_password_keeps_the_users_mechanisms_on_mongodb() -> None:
    """MongoDB's updateUser with a bare pwd resets the mechanisms to both SCRAM variants."""
    db = RecordingDatabase({"app": user("app", ROLES, ["SCRAM-SHA-256"])})
    DocumentDBRotator().set_password(db.session(), "app", PASSWORD)
    assert db.sent == [
        {"usersInfo": "app", "showAuthenticationRestrictions": True},
        {"updateUser": "app", "pwd": PASSWORD, "mechanisms": ["SCRAM-SHA-256"]},
    ]


def test_set_password_of_a_scram_sha_1_user_keeps_scram_sha_1() -> None:
    db = RecordingDatabase({"app": user("app", ROLES, ["SCRAM-SHA-1"])})
    DocumentDBRotator().set_password(db.session(DOCUMENTDB), "app", PASSWORD)
    assert db.sent == [
        {"usersInfo": "app"},
        {"updateUser": "app", "pwd": PASSWORD, "mechanisms": ["SCRAM-SHA-1"]},
    ]


def test_set_password_on_a_documentdb_that_does_not_report_mechanisms() -> None:
    """DocumentDB before SCRAM-SHA-256 support lists no mechanisms: its default (SHA-1) stays."""
    db = RecordingDatabase({"app": user("app", ROLES)})
    DocumentDBRotator().set_password(db.session(DOCUMENTDB), "app", PASSWORD)
    assert db.sent == [{"usersInfo": "app"}, {"updateUser": "app", "pwd": PASSWORD}]


def test_set_password_when_the_user_may_not_read_its_own_record() -> None:
    denied = OperationFailure("not authorized on admin to execute command", code=13)
    db = RecordingDatabase(fail={"usersInfo": denied})
    DocumentDBRotator().set_password(db.session(DOCUMENTDB), "app", PASSWORD)
    assert db.sent[-1] == {"updateUser": "app", "pwd": PASSWORD}


def test_clone_is_created_with_the_originals_roles_mechanisms_and_restrictions_on_mongodb() -> None:
    original = user("app", ROLES, ["SCRAM-SHA-256"], authenticationRestrictions=RESTRICTIONS)
    db = RecordingDatabase({"app": original})
    DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)
    assert db.sent == [
        {"usersInfo": "app", "showAuthenticationRestrictions": True},
        {"usersInfo": "app_clone", "showAuthenticationRestrictions": True},
        {
            "createUser": "app_clone",
            "pwd": PASSWORD,
            "roles": ROLES,
            "mechanisms": ["SCRAM-SHA-256"],
            "authenticationRestrictions": RESTRICTIONS,
        },
    ]


def test_existing_clone_is_refreshed_with_the_originals_current_roles() -> None:
    db = RecordingDatabase(
        {
            "app": user("app", ROLES[:1], ["SCRAM-SHA-1", "SCRAM-SHA-256"]),
            "app_clone": user("app_clone", ROLES, ["SCRAM-SHA-256"], authenticationRestrictions=RESTRICTIONS),
        }
    )
    DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)
    assert db.sent[-1] == {
        "updateUser": "app_clone",
        "pwd": PASSWORD,
        "roles": ROLES[:1],
        "mechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
        "authenticationRestrictions": [],
    }, "roles and restrictions the original lost are taken from the clone too"


def test_clone_on_documentdb_sends_no_mongodb_only_options() -> None:
    db = RecordingDatabase({"app": user("app", ROLES)})
    DocumentDBRotator().clone_user(db.session(DOCUMENTDB), "app", "app_clone", PASSWORD)
    assert db.sent == [
        {"usersInfo": "app"},
        {"usersInfo": "app_clone"},
        {"createUser": "app_clone", "pwd": PASSWORD, "roles": ROLES},
    ]


def test_clone_of_a_scram_sha_1_user_on_documentdb_is_scram_sha_1() -> None:
    db = RecordingDatabase({"app": user("app", ROLES, ["SCRAM-SHA-1"])})
    DocumentDBRotator().clone_user(db.session(DOCUMENTDB), "app", "app_clone", PASSWORD)
    assert db.sent[-1] == {
        "createUser": "app_clone",
        "pwd": PASSWORD,
        "roles": ROLES,
        "mechanisms": ["SCRAM-SHA-1"],
    }


def test_clone_of_a_missing_user_fails_before_any_change() -> None:
    db = RecordingDatabase()
    with pytest.raises(PasswordChangeError, match="no user 'app' in database 'admin'"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)
    assert [next(iter(c)) for c in db.sent] == ["usersInfo"]


@pytest.mark.parametrize("verb", ["updateUser", "createUser"])
def test_a_refused_command_is_a_password_change_error_without_the_password(verb: str) -> None:
    refusal = OperationFailure(
        f"bad {PASSWORD}", code=2, details={"errmsg": f"pwd {PASSWORD} rejected", "codeName": "BadValue"}
    )
    db = RecordingDatabase({"app": user("app", ROLES)}, fail={verb: refusal})
    rotator = DocumentDBRotator()
    with pytest.raises(PasswordChangeError) as caught:
        if verb == "updateUser":
            rotator.set_password(db.session(), "app", PASSWORD)
        else:
            rotator.clone_user(db.session(), "app", "app_clone", PASSWORD)
    message = str(caught.value)
    assert f"refused {verb}" in message
    assert "code 2, BadValue" in message
    assert PASSWORD not in message
    assert "<redacted>" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_master_that_may_not_view_users_gets_a_clear_error() -> None:
    denied = OperationFailure(
        "not authorized", code=13, details={"errmsg": "not authorized", "codeName": "Unauthorized"}
    )
    db = RecordingDatabase(fail={"usersInfo": denied})
    with pytest.raises(PasswordChangeError, match="viewUser"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)


def test_the_server_going_away_mid_command_asks_for_a_retry() -> None:
    db = RecordingDatabase(
        {"app": user("app", ROLES)}, fail={"createUser": AutoReconnect("connection reset")}
    )
    with pytest.raises(DatabaseUnavailableError, match="retry the step"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)


def test_probe() -> None:
    ok = {"authInfo": {"authenticatedUsers": [{"user": "app", "db": "admin"}]}}
    DocumentDBRotator().probe(RecordingDatabase(status=ok).session(), "app")
    for status in [
        {"authInfo": {"authenticatedUsers": [{"user": "root", "db": "admin"}]}},
        {"authInfo": {"authenticatedUsers": [{"user": "app", "db": "orders"}]}},
        {},
    ]:
        with pytest.raises(SecretTestError, match="'app'"):
            DocumentDBRotator().probe(RecordingDatabase(status=status).session(), "app")


# -- which commands setSecret sends as the master, from createSecret's pending value ------------------
class OfflineRotator(DocumentDBRotator):
    """The real engine, whose connect() hands out the recording database instead of a socket."""

    def __init__(self, client: FakeSecretsManager, db: RecordingDatabase) -> None:
        super().__init__(SecretStore(cast(Any, client)))
        self.db = db
        self.logins: list[str] = []

    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Session]:
        self.logins.append(username)
        yield self.db.session(dialect_of(secret))


def master_set_commands(current_user: str, db: RecordingDatabase) -> list[dict[str, Any]]:
    login = {"engine": "mongo", "host": "db.example", "port": 27017, "dbname": "admin"}
    client = FakeSecretsManager(
        {
            ("demo", AWSCURRENT): {**login, "username": current_user, "password": "Old-1", "masterarn": "m"},
            ("m", AWSCURRENT): {**login, "username": "root", "password": "Master-3"},
        }
    )
    rotator = OfflineRotator(client, db)
    create_then_set(rotator, client)
    assert rotator.logins == ["root"]
    return db.sent


def test_master_rotation_of_a_user_creates_its_clone() -> None:
    db = RecordingDatabase({"app": user("app", ROLES, ["SCRAM-SHA-256"])})
    assert master_set_commands("app", db)[-1] == {
        "createUser": "app_clone",
        "pwd": NEW_PASSWORD,
        "roles": ROLES,
        "mechanisms": ["SCRAM-SHA-256"],
        "authenticationRestrictions": [],
    }


def test_master_rotation_of_the_clone_sets_the_original_password() -> None:
    db = RecordingDatabase({"app": user("app", ROLES, ["SCRAM-SHA-256"])})
    assert master_set_commands("app_clone", db)[-1] == {
        "updateUser": "app",
        "pwd": NEW_PASSWORD,
        "mechanisms": ["SCRAM-SHA-256"],
    }


# -- `rotators check` ---------------------------------------------------------------------------------
def test_check_of_a_master_reads_the_users_record() -> None:
    rotator = DocumentDBRotator()
    assert (
        rotator.change_privileges(
            RecordingDatabase({"app": user("app", ROLES)}).session(), "app", as_master=True
        )
        is None
    )
    assert rotator.change_privileges(RecordingDatabase().session(), "app", as_master=True) == (
        "no user 'app' in database 'admin'"
    )
    denied = OperationFailure("not authorized", code=13, details={"errmsg": "no", "codeName": "Unauthorized"})
    problem = rotator.change_privileges(
        RecordingDatabase(fail={"usersInfo": denied}).session(), "app", as_master=True
    )
    assert problem is not None and "viewUser" in problem


def test_check_of_a_single_user_cannot_tell_in_advance() -> None:
    assert (
        DocumentDBRotator().change_privileges(RecordingDatabase().session(), "app", as_master=False)
        == NOT_CHECKED
    )


def test_transport_in_words() -> None:
    session = RecordingDatabase().session()
    assert DocumentDBRotator().transport(session, secret(ssl=False)) == "plaintext, as the secret asks"
    assert (
        DocumentDBRotator().transport(session, secret())
        == "TLS (sslmode=verify-full, certificate verified, MongoDB)"
    )
    assert "NOT verified" in DocumentDBRotator().transport(session, secret(sslmode="require"))


def test_a_ca_bundle_that_cannot_be_read_is_a_configuration_error(tmp_path: Any) -> None:
    value = secret(host="127.0.0.1", sslrootcert=str(tmp_path / "missing.pem"))
    with (
        pytest.raises(ConfigurationError, match="sslrootcert") as caught,
        DocumentDBRotator().connect(value, "app", PASSWORD),
    ):
        pass
    assert PASSWORD not in str(caught.value)
