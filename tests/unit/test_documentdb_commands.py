"""DocumentDBRotator without a server: its dialects, client options and the exact commands it sends.

The commands go through a recording stand-in for pymongo's Database (the driver boundary); the
live behaviour of the same paths is in tests/integration/test_documentdb_*.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pymongo
import pytest
from bson.son import SON
from pymongo.errors import AutoReconnect, OperationFailure

from rotators import errors
from rotators.database import NOT_CHECKED, DatabaseSecret
from rotators.engines.documentdb import DOCUMENTDB, MONGODB, DocumentDBRotator, Session, dialect_of
from rotators.secrets import AWSCURRENT
from tests.offline import NEW_PASSWORD, FakeSecretsManager, create_then_set, refused_change, store

PASSWORD = "New-Pa55word-value"
DOCDB_HOST = "orders.cluster-c0ffee.eu-west-1.docdb.amazonaws.com"


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "mongo", "host": "db.example", "username": "app", "password": "Old-1", **changes}
    return DocumentDBRotator().parse(json.dumps(value), where="the test secret")


# -- dialects and client options (plaintext and the timeout: test_tls_policy, test_password_policy) -----
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
    with pytest.raises(errors.ConfigurationError, match=r"global-bundle\.pem"):
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


def test_auth_mechanism_applies_to_the_user_and_its_clone_only() -> None:
    rotator = DocumentDBRotator()
    value = secret(authMechanism="SCRAM-SHA-1")
    assert rotator.client_options(value, "app", "x")["authMechanism"] == "SCRAM-SHA-1"
    assert rotator.client_options(value, "app_clone", "x")["authMechanism"] == "SCRAM-SHA-1"
    assert "authMechanism" not in rotator.client_options(value, "master", "x"), "the master negotiates"
    assert "authMechanism" not in rotator.client_options(secret(), "app", "x")


def test_unknown_auth_mechanism_is_refused() -> None:
    with pytest.raises(errors.SecretFormatError, match="authMechanism"):
        DocumentDBRotator().client_options(secret(authMechanism="MONGODB-CR"), "app", "x")


# -- the commands, through a recording stand-in for pymongo's Database ----------------------------------
class RecordingDatabase:
    """Records every command document (and the database it ran in); answers usersInfo from
    `users` and rolesInfo from `roles`; fails where told. Views of other databases share it all."""

    def __init__(
        self,
        users: dict[str, dict[str, Any]] | None = None,
        *,
        fail: dict[str, Exception] | None = None,
        status: dict[str, Any] | None = None,
        roles: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.name = "admin"
        self.users = users or {}
        self.roles = roles or {}
        self.fail = fail or {}
        self.status = status
        self.sent: list[dict[str, Any]] = []
        self.where: list[str] = []

    def at(self, name: str, status: dict[str, Any] | None = None) -> RecordingDatabase:
        view = copy.copy(self)
        view.name, view.status = name, status or self.status
        return view

    @property
    def client(self) -> Any:
        """What `Database.client[name]` gives: this recording, in another database."""
        return _Databases(self)

    def command(self, command: SON[str, Any] | str, **kwargs: Any) -> dict[str, Any]:
        document = dict(command) if isinstance(command, SON) else {command: 1, **kwargs}
        self.sent.append(document)
        self.where.append(self.name)
        verb = next(iter(document))
        if verb in self.fail:
            raise self.fail[verb]
        if verb == "usersInfo":
            found = self.users.get(document["usersInfo"])
            return {"users": [found] if found else [], "ok": 1.0}
        if verb == "rolesInfo":
            wanted = [(r["role"], r["db"]) for r in document["rolesInfo"]]
            return {"roles": [self.roles[key] for key in wanted if key in self.roles], "ok": 1.0}
        if verb == "connectionStatus":
            return self.status or {}
        return {"ok": 1.0}

    def session(self, dialect: Any = MONGODB) -> Session:
        return Session(cast(Any, self), dialect)

    def verbs(self) -> list[str]:
        return [next(iter(c)) for c in self.sent]


class _Databases:
    def __init__(self, db: RecordingDatabase) -> None:
        self.db = db

    def __getitem__(self, name: str) -> RecordingDatabase:
        return self.db.at(name)


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
    with pytest.raises(errors.PasswordChangeError, match="no user 'app' in database 'admin'"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)
    assert [next(iter(c)) for c in db.sent] == ["usersInfo"]


@pytest.mark.parametrize(("verb", "call"), [("updateUser", "set_password"), ("createUser", "clone_user")])
def test_a_refused_command_is_a_password_change_error_without_the_password(verb: str, call: str) -> None:
    refusal = OperationFailure(
        f"bad {PASSWORD}", code=2, details={"errmsg": f"pwd {PASSWORD} rejected", "codeName": "BadValue"}
    )
    db = RecordingDatabase({"app": user("app", ROLES)}, fail={verb: refusal})
    message = refused_change(DocumentDBRotator(), db.session(), call, PASSWORD)
    assert f"refused {verb}" in message
    assert "code 2, BadValue" in message


def test_a_master_that_may_not_view_users_gets_a_clear_error() -> None:
    denied = OperationFailure(
        "not authorized", code=13, details={"errmsg": "not authorized", "codeName": "Unauthorized"}
    )
    db = RecordingDatabase(fail={"usersInfo": denied})
    with pytest.raises(errors.PasswordChangeError, match="viewUser"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)


def test_the_server_going_away_mid_command_asks_for_a_retry() -> None:
    db = RecordingDatabase(
        {"app": user("app", ROLES)}, fail={"createUser": AutoReconnect("connection reset")}
    )
    with pytest.raises(errors.DatabaseUnavailableError, match="retry the step"):
        DocumentDBRotator().clone_user(db.session(), "app", "app_clone", PASSWORD)


def test_probe() -> None:
    ok = {"authInfo": {"authenticatedUsers": [{"user": "app", "db": "admin"}]}}
    DocumentDBRotator().probe(RecordingDatabase(status=ok).session(), "app")
    for status in [
        {"authInfo": {"authenticatedUsers": [{"user": "root", "db": "admin"}]}},
        {"authInfo": {"authenticatedUsers": [{"user": "app", "db": "orders"}]}},
        {},
    ]:
        with pytest.raises(errors.SecretTestError, match="'app'"):
            DocumentDBRotator().probe(RecordingDatabase(status=status).session(), "app")


# -- the master's safety rules: what they read, what they conclude ----------------------------------
def custom_role(name: str, db: str, actions: list[str], roles: list[Any] | None = None) -> dict[str, Any]:
    privileges = [{"resource": {"db": db, "collection": ""}, "actions": actions}]
    return {"role": name, "db": db, "isBuiltin": False, "privileges": privileges, "roles": roles or []}


def test_a_user_is_its_name_in_its_database() -> None:
    rotator = DocumentDBRotator()
    assert rotator.user_key("admin", secret(dbname="admin")) == rotator.user_key("admin", secret())
    assert rotator.user_key("admin", secret(dbname="orders")) != rotator.user_key("admin", secret())


@pytest.mark.parametrize(
    "role",
    ["root", "__system", "userAdmin", "userAdminAnyDatabase", "dbOwner", "restore", "backup",
     "clusterAdmin", "clusterManager", "hostManager", "dbAdminAnyDatabase", "readWriteAnyDatabase"],
)  # fmt: skip
def test_administrative_built_in_roles(role: str) -> None:
    db = RecordingDatabase({"app": user("app", [*ROLES, {"role": role, "db": "admin"}])})
    assert DocumentDBRotator().admin_power(db.session(), "app") == [f"'app' holds role {role!r} on 'admin'"]
    assert "rolesInfo" not in db.verbs(), "built-in roles are judged by name"


def test_application_roles_are_not_administrative() -> None:
    roles = [*ROLES, {"role": "dbAdmin", "db": "orders"}, {"role": "readAnyDatabase", "db": "admin"}]
    db = RecordingDatabase({"app": user("app", roles)})
    assert DocumentDBRotator().admin_power(db.session(), "app") == []
    assert db.verbs() == ["usersInfo"]


def test_a_custom_role_with_user_administration_actions_is_administrative() -> None:
    own = custom_role("self", "admin", ["changeOwnPassword", "viewUser"])
    admin = custom_role("helpdesk", "orders", ["find", "changePassword", "createUser"])
    db = RecordingDatabase(
        {"app": user("app", [{"role": "self", "db": "admin"}, {"role": "helpdesk", "db": "orders"}])},
        roles={("self", "admin"): own, ("helpdesk", "orders"): admin},
    )
    assert DocumentDBRotator().admin_power(db.session(), "app") == [
        "'app' holds role 'helpdesk' on 'orders', which may changePassword, createUser"
    ]
    assert db.sent[-1] == {
        "rolesInfo": [{"role": "helpdesk", "db": "orders"}, {"role": "self", "db": "admin"}],
        "showPrivileges": True,
    }


def test_power_inherited_through_custom_roles_is_found() -> None:
    """SecantusDB lists only a role's own roles; a real mongod lists all as inheritedRoles."""
    outer = custom_role("outer", "orders", ["find"], [{"role": "inner", "db": "orders"}])
    inner = custom_role("inner", "orders", ["insert"], [{"role": "userAdminAnyDatabase", "db": "admin"}])
    db = RecordingDatabase(
        {"app": user("app", [{"role": "outer", "db": "orders"}])},
        roles={("outer", "orders"): outer, ("inner", "orders"): inner},
    )
    assert DocumentDBRotator().admin_power(db.session(), "app") == [
        "'app' holds role 'userAdminAnyDatabase' on 'admin'"
    ]
    assert db.verbs() == ["usersInfo", "rolesInfo", "rolesInfo"]


def test_a_role_cycle_ends() -> None:
    a = custom_role("a", "orders", ["find"], [{"role": "b", "db": "orders"}])
    b = custom_role("b", "orders", ["find"], [{"role": "a", "db": "orders"}])
    db = RecordingDatabase(
        {"app": user("app", [{"role": "a", "db": "orders"}])}, roles={("a", "orders"): a, ("b", "orders"): b}
    )
    assert DocumentDBRotator().admin_power(db.session(), "app") == []


@pytest.mark.parametrize(
    ("resource", "found"),
    [
        ({"db": "admin", "collection": "system.users"}, "act on system.users"),
        ({"anyResource": True}, "act on anyResource"),
    ],
)
def test_privileges_on_credentials_or_any_resource_are_administrative(
    resource: dict[str, Any], found: str
) -> None:
    role = {
        "role": "r",
        "db": "admin",
        "privileges": [{"resource": resource, "actions": ["find"]}],
        "roles": [],
    }
    db = RecordingDatabase({"app": user("app", [{"role": "r", "db": "admin"}])}, roles={("r", "admin"): role})
    assert DocumentDBRotator().admin_power(db.session(), "app") == [
        f"'app' holds role 'r' on 'admin', which may {found}"
    ]


def test_a_master_that_may_not_view_roles_gets_a_clear_error() -> None:
    denied = OperationFailure("no", code=13, details={"errmsg": "not authorized", "codeName": "Unauthorized"})
    db = RecordingDatabase(
        {"app": user("app", [{"role": "custom", "db": "orders"}])}, fail={"rolesInfo": denied}
    )
    with pytest.raises(errors.PasswordChangeError, match="viewRole"):
        DocumentDBRotator().admin_power(db.session(), "app")


def test_an_existing_clone_may_hold_no_role_the_source_lacks() -> None:
    rotator = DocumentDBRotator()
    source = user("app", ROLES)
    assert rotator.clone_mismatch(RecordingDatabase({"app": source}).session(), "app", "app_clone") == []
    for fine in (ROLES, ROLES[:1], []):
        db = RecordingDatabase({"app": source, "app_clone": user("app_clone", fine)})
        assert rotator.clone_mismatch(db.session(), "app", "app_clone") == []
    extra = [*ROLES, {"role": "userAdmin", "db": "orders"}]
    db = RecordingDatabase({"app": source, "app_clone": user("app_clone", extra)})
    assert rotator.clone_mismatch(db.session(), "app", "app_clone") == [
        "'app_clone' holds roles 'app' does not: 'userAdmin' on 'orders'"
    ]
    assert set(db.verbs()) == {"usersInfo"}, "it only reads"


def test_an_existing_clone_without_the_sources_restrictions_is_looser() -> None:
    rotator = DocumentDBRotator()
    restricted = user("app", ROLES, authenticationRestrictions=RESTRICTIONS)
    loose = RecordingDatabase({"app": restricted, "app_clone": user("app_clone", ROLES)})
    assert rotator.clone_mismatch(loose.session(), "app", "app_clone") == [
        "'app_clone' has other authentication restrictions than 'app'"
    ]
    same = user("app_clone", ROLES, authenticationRestrictions=RESTRICTIONS)
    assert (
        rotator.clone_mismatch(
            RecordingDatabase({"app": restricted, "app_clone": same}).session(), "app", "app_clone"
        )
        == []
    )
    tighter = RecordingDatabase({"app": user("app", ROLES), "app_clone": same})
    assert rotator.clone_mismatch(tighter.session(), "app", "app_clone") == []


def test_what_the_source_holds_and_the_clone_lacks() -> None:
    rotator = DocumentDBRotator()
    victim = user("victim", ROLES)
    own = user("victim_clone", [{"role": "read", "db": "attacker"}])
    db = RecordingDatabase({"victim": victim, "victim_clone": own})
    assert rotator.clone_lacks(db.session(), "victim", "victim_clone") == [
        "'victim_clone' lacks roles 'victim' holds: 'read' on 'reports', 'readWrite' on 'orders'"
    ]
    more = user("victim_clone", [*ROLES, {"role": "read", "db": "attacker"}])
    assert (
        rotator.clone_lacks(
            RecordingDatabase({"victim": victim, "victim_clone": more}).session(), "victim", "victim_clone"
        )
        == []
    )
    fenced = user("victim_clone", ROLES, authenticationRestrictions=RESTRICTIONS)
    assert rotator.clone_lacks(
        RecordingDatabase({"victim": victim, "victim_clone": fenced}).session(), "victim", "victim_clone"
    ) == ["'victim_clone' has other authentication restrictions than 'victim'"]


# -- setSecret through the real connect(), with pymongo.MongoClient replaced by a recording stand-in ----
class FakeMongoClient:
    """Stands in for pymongo.MongoClient: records its options, checks the password at the first
    command (as pymongo logs in when it checks out a connection), then hands out the recording."""

    def __init__(self, server: FakeServer, options: dict[str, Any]) -> None:
        self.server, self.options = server, options
        self.user = (options["username"], options["authSource"])

    def __enter__(self) -> FakeMongoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getitem__(self, name: str) -> Any:
        if self.server.passwords.get(self.user) != self.options["password"]:
            refused = OperationFailure("Authentication failed.", code=18)
            return RecordingDatabase(fail={"ping": refused, "connectionStatus": refused})
        status = {"authInfo": {"authenticatedUsers": [{"user": self.user[0], "db": self.user[1]}]}}
        return self.server.db.at(name, status)


class FakeServer:
    def __init__(self, db: RecordingDatabase, passwords: dict[tuple[str, str], str]) -> None:
        self.db, self.passwords = db, passwords
        self.clients: list[dict[str, Any]] = []

    def serve(self, users: dict[str, dict[str, Any]], **options: Any) -> RecordingDatabase:
        self.db = RecordingDatabase(users, **options)
        return self.db

    def __call__(self, **options: Any) -> FakeMongoClient:
        self.clients.append(options)
        return FakeMongoClient(self, options)

    @property
    def logins(self) -> list[str]:
        return [c["username"] for c in self.clients]


LOGIN = {"engine": "mongo", "host": "db.example", "port": 27017, "dbname": "admin"}
MASTER = {**LOGIN, "username": "root", "password": "Master-3", "sslrootcert": "/master/ca.pem"}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """pymongo.MongoClient for the test: the master `root` logs in with Master-3."""
    found = FakeServer(RecordingDatabase(), {("root", "admin"): "Master-3"})
    monkeypatch.setattr(pymongo, "MongoClient", found)  # the engine calls pymongo.MongoClient
    return found


def set_as_master(server: FakeServer, app: dict[str, Any], master: dict[str, Any] = MASTER) -> None:
    """createSecret, then setSecret, with the app secret `app` (its user logs in with Old-1
    unless the server says otherwise) and the master secret `master`."""
    app = {**LOGIN, "password": "Old-1", "masterarn": "m", **app}
    server.passwords.setdefault((app["username"], app["dbname"]), "Old-1")
    client = FakeSecretsManager({("demo", AWSCURRENT): app, ("m", AWSCURRENT): master})
    create_then_set(DocumentDBRotator(store(client)), client)


def test_master_rotation_of_a_user_creates_its_clone(server: FakeServer) -> None:
    db = server.serve({"app": user("app", ROLES, ["SCRAM-SHA-256"])})
    set_as_master(server, {"username": "app"})
    assert server.logins == ["app", "root"], "AWSCURRENT proves itself before the master logs in"
    assert db.sent[-1] == {
        "createUser": "app_clone",
        "pwd": NEW_PASSWORD,
        "roles": ROLES,
        "mechanisms": ["SCRAM-SHA-256"],
        "authenticationRestrictions": [],
    }


def test_master_rotation_of_the_clone_sets_the_original_password(server: FakeServer) -> None:
    db = server.serve({"app": user("app", ROLES, ["SCRAM-SHA-256"]), "app_clone": user("app_clone", ROLES)})
    set_as_master(server, {"username": "app_clone"})
    assert server.logins == ["app_clone", "root"]
    assert db.sent[-1] == {"updateUser": "app", "pwd": NEW_PASSWORD, "mechanisms": ["SCRAM-SHA-256"]}


def test_the_master_logs_in_to_its_own_database_and_works_in_the_apps(
    server: FakeServer,
) -> None:
    db = server.serve({"app": user("app", ROLES)})
    set_as_master(server, {"username": "app", "dbname": "orders"})
    master_options = server.clients[-1]
    assert (master_options["username"], master_options["authSource"]) == ("root", "admin")
    assert db.where[db.verbs().index("createUser")] == "orders", "the user commands run in the app's database"


@pytest.mark.parametrize(
    "weaker",
    [{"ssl": False}, {"sslmode": "disable"}, {"sslmode": "require"}, {"sslrootcert": "/evil/ca.pem"}],
)
def test_the_master_logs_in_with_its_own_tls_whatever_the_app_secret_says(
    server: FakeServer, weaker: dict[str, Any]
) -> None:
    """The app secret's TLS settings are the app's; the master's password travels as its secret says."""
    server.serve({"app": user("app", ROLES)})
    set_as_master(server, {"username": "app", **weaker})
    app_options, master_options = server.clients
    assert master_options["password"] == "Master-3"
    assert master_options["tls"] is True
    assert master_options["tlsCAFile"] == "/master/ca.pem"
    assert "tlsAllowInvalidCertificates" not in master_options
    assert "tlsAllowInvalidHostnames" not in master_options
    assert app_options["password"] == "Old-1", "the app's own login uses the app's settings"


def test_a_master_secret_without_tls_is_the_masters_own_choice(server: FakeServer) -> None:
    server.serve({"app": user("app", ROLES)})
    set_as_master(server, {"username": "app"}, master={**MASTER, "ssl": False})
    assert server.clients[-1]["tls"] is False


@pytest.mark.parametrize(("username", "dbname"), [("root_clone", "admin"), ("root", "admin")])
def test_the_master_never_rotates_itself(server: FakeServer, username: str, dbname: str) -> None:
    db = server.serve({"root": user("root", [{"role": "root", "db": "admin"}])})
    with pytest.raises(errors.TargetMismatchError, match="master user"):
        set_as_master(server, {"username": username, "dbname": dbname})
    assert db.sent == [], "nobody logged in, nothing was sent"


def test_a_user_of_the_masters_name_in_another_database_is_another_user(
    server: FakeServer,
) -> None:
    db = server.serve({"root": user("root", ROLES)})
    set_as_master(server, {"username": "root", "dbname": "orders"})
    assert server.logins == ["root", "root"]
    assert db.sent[-1]["createUser"] == "root_clone"
    assert db.where[-1] == "orders"


def test_an_unrelated_victim_clone_does_not_get_the_victims_password(server: FakeServer) -> None:
    db = server.serve(
        {
            "victim": user("victim", ROLES),
            "victim_clone": user("victim_clone", [{"role": "read", "db": "attacker"}]),
        }
    )
    with pytest.raises(errors.PrivilegeError, match="'victim_clone' lacks roles 'victim' holds"):
        set_as_master(server, {"username": "victim_clone"})
    assert "updateUser" not in db.verbs()


def test_a_pre_existing_clone_with_more_roles_is_not_taken_over(server: FakeServer) -> None:
    db = server.serve(
        {
            "ops": user("ops", ROLES),
            "ops_clone": user("ops_clone", [{"role": "clusterManager", "db": "admin"}]),
        }
    )
    with pytest.raises(
        errors.PrivilegeError, match="'ops_clone' holds roles 'ops' does not: 'clusterManager' on 'admin'"
    ):
        set_as_master(server, {"username": "ops"})
    assert not {"updateUser", "createUser"} & set(db.verbs())


def test_an_administrative_source_needs_the_secrets_opt_in(server: FakeServer) -> None:
    roles = [{"role": "userAdmin", "db": "orders"}]
    db = server.serve({"ops": user("ops", roles)})
    with pytest.raises(
        errors.PrivilegeError, match=r"'ops' holds role 'userAdmin' on 'orders'.*allow_privileged_user"
    ):
        set_as_master(server, {"username": "ops"})
    assert "createUser" not in db.verbs()
    set_as_master(server, {"username": "ops", "allow_privileged_user": True})
    assert db.sent[-1]["createUser"] == "ops_clone"
    assert db.sent[-1]["roles"] == roles


def test_a_current_version_that_does_not_log_in_stops_the_master(server: FakeServer) -> None:
    db = server.serve({"victim": user("victim", ROLES)})
    server.passwords[("victim", "admin")] = "Victims-Own-1"
    with pytest.raises(errors.LoginError, match="does not log in as 'victim'"):
        set_as_master(server, {"username": "victim"})
    assert server.logins == ["victim", "victim_clone"], "AWSCURRENT, then AWSPENDING; never the master"
    assert db.sent == []


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
        pytest.raises(errors.ConfigurationError, match="sslrootcert") as caught,
        DocumentDBRotator().connect(value, "app", PASSWORD),
    ):
        pass
    assert PASSWORD not in str(caught.value)
