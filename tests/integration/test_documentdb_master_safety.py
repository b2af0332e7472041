"""Issue 11's attacks on alternating users, live on SecantusDB: someone who can write one app secret
(or point it at a master) must not get the master to hand out a password or power.

Every command the rotator's clients send is recorded through pymongo's command monitoring (its name,
database and user name, never a password), with the user and TLS of each login. Each test ends by
proving that the master and the victim still log in with their own passwords.
"""

from __future__ import annotations

import json
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from rotators.database import DatabaseSecret
from rotators.engines.documentdb import DocumentDBRotator
from rotators.errors import DatabaseUnavailableError, LoginError, PrivilegeError, TargetMismatchError
from rotators.secrets import AWSCURRENT
from tests.admins import READ_WRITE, MongoAdmin
from tests.conftest import Watched
from tests.engines import DOCUMENTDB, Database, Engine, Login, bind

ATTACKERS_PASSWORD = "Attackers-Own-1"
CHANGES = {"createUser", "updateUser", "dropUser", "grantRolesToUser", "revokeRolesFromUser"}


class Recorder:
    """The rotator's logins (user, authentication database, TLS) and the commands each login sent
    (user, command, database). pymongo hides the body of user and authentication commands from
    its monitoring, so no password and no command document is kept here."""

    def __init__(self) -> None:
        self.logins: list[tuple[str, str, bool]] = []
        self.commands: list[tuple[str, str, str]] = []

    def listener(self, username: str) -> monitoring.CommandListener:
        return _Listener(self, username)

    def changes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.commands if c[1] in CHANGES]

    def users(self) -> list[str]:
        """Who logged in, in order."""
        return [user for user, _, _ in self.logins]

    def sent_by(self, username: str) -> list[str]:
        return [name for user, name, _ in self.commands if user == username]


class _Listener(monitoring.CommandListener):
    def __init__(self, recorder: Recorder, username: str) -> None:
        self.recorder, self.username = recorder, username

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.recorder.commands.append((self.username, event.command_name, event.database_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    found = Recorder()
    options = DocumentDBRotator.client_options

    def recorded(
        self: DocumentDBRotator, secret: DatabaseSecret, username: str, password: str
    ) -> dict[str, Any]:
        chosen = options(self, secret, username, password)
        found.logins.append((username, chosen["authSource"], chosen["tls"]))
        return {**chosen, "event_listeners": [found.listener(username)]}

    monkeypatch.setattr(DocumentDBRotator, "client_options", recorded)
    return found


class Team:
    """Users of one server, made by its root, each with the password only its own secret holds."""

    def __init__(self, db: Database) -> None:
        assert isinstance(db.admin, MongoAdmin)
        self.db, self.sm, self.server, self.admin = db, db.sm, db.server, db.admin
        self.passwords: dict[tuple[str, str], str] = {}  # (user, its database) -> its password

    def user(self, prefix: str, roles: list[Any]) -> str:
        """A new user in `admin` whose name starts with `prefix`; its name."""
        login = self.db.add_user(self.db.name(prefix), grants=tuple(roles))
        self.passwords[(login.username, "admin")] = login.password
        return login.username

    def own_user(self, full: str, roles: list[Any]) -> str:
        """A user of the attacker's own, named as the attack needs, with the attacker's password."""
        self.admin.create_user(full, ATTACKERS_PASSWORD, roles)
        self.passwords[(full, "admin")] = ATTACKERS_PASSWORD
        return full

    def secret(self, name: str, db: str = "admin", **extra: Any) -> str:
        """A secret holding `name`'s own password."""
        return self.db.store(Login(name, self.passwords[(name, db)]), dbname=db, **extra)

    def refused(self, arn: str, error: type[Exception], match: str) -> None:
        """createSecret, then a setSecret that fails with `error` and moves no label."""
        token = self.sm.start_rotation(arn)
        self.db.invoke(arn, token, "createSecret")
        self.db.fails(arn, token, "setSecret", error, match)

    def logs_in(self, name: str, db: str = "admin", password: str | None = None) -> bool:
        try:
            with self.server.client(name, password or self.passwords[(name, db)], authSource=db) as client:
                client[db].command("ping")
                return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, "login failed for another reason"
            return False

    def roles(self, name: str, db: str = "admin") -> list[Any] | None:
        with self.server.client() as client:
            users = client[db].command("usersInfo", name)["users"]
        return [{"role": r["role"], "db": r["db"]} for r in users[0]["roles"]] if users else None

    def all_log_in(self) -> None:
        """Everyone made here still logs in with their own password."""
        refused = [name for (name, db) in self.passwords if not self.logs_in(name, db)]
        assert not refused, f"these users no longer log in with their own password: {refused}"


@pytest.fixture
def engine() -> Engine:
    return DOCUMENTDB


def checked_team(db: Database, request: pytest.FixtureRequest) -> Team:
    """A team on `db`'s server whose users must all still log in with their own passwords when
    the test ends."""
    team = Team(db)
    request.addfinalizer(team.all_log_in)
    return team


@pytest.fixture
def team(db: Database, request: pytest.FixtureRequest) -> Team:
    return checked_team(db, request)


@pytest.fixture
def master(team: Team) -> tuple[str, str]:
    """A master like DocumentDB's: it administers users; (user name, secret ARN)."""
    name = team.user("master", list(DOCUMENTDB.master_grants))
    return name, team.secret(name)


def test_app_user_named_after_the_masters_clone_is_refused(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """Attack 1: the partner of `<master>_clone` is the master itself."""
    master_name, master_arn = master
    bait = team.own_user(f"{master_name}_clone", [READ_WRITE])  # the attacker's own, if it helps
    team.refused(team.secret(bait, masterarn=master_arn), TargetMismatchError, "the master user")
    assert recorder.logins == [], "refused before any login"


def test_app_user_named_the_master_is_refused(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """Attack 2: the master as the app user would get a clone with all the master's roles."""
    master_name, master_arn = master
    team.refused(team.secret(master_name, masterarn=master_arn), TargetMismatchError, "the master user")
    assert recorder.logins == [] and recorder.changes() == []
    assert team.roles(f"{master_name}_clone") is None, "no clone of the master"


def test_a_user_of_the_masters_name_in_another_database_is_another_user(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """MongoDB users are database-qualified: `orders.<master>` is an application user like any other."""
    master_name, master_arn = master
    team.passwords[(master_name, "orders")] = team.db.new_password()
    with team.server.client() as client:
        client.orders.command(
            "createUser", master_name, pwd=team.passwords[(master_name, "orders")], roles=[READ_WRITE]
        )
    current = team.db.rotate(team.secret(master_name, "orders", masterarn=master_arn))
    assert (current["username"], current["dbname"]) == (f"{master_name}_clone", "orders")
    assert team.logs_in(current["username"], "orders", current["password"])
    assert team.roles(current["username"], "orders") == [READ_WRITE]
    assert (master_name, "admin", True) in recorder.logins, "the master logged in to its own database"
    assert (master_name, "createUser", "orders") in recorder.changes(), "run in the app's database"


def test_another_teams_secret_as_master_is_refused(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """Attack 4: `masterarn` names another team's app secret, and the app user is its user's clone."""
    theirs = team.user("theirs", [READ_WRITE])
    their_arn = team.secret(theirs)
    before = team.sm.value(their_arn, AWSCURRENT)
    attacker = team.db.store(Login(f"{theirs}_clone", ATTACKERS_PASSWORD), masterarn=their_arn)
    team.refused(attacker, TargetMismatchError, "the master user")
    assert recorder.changes() == []
    assert team.sm.value(their_arn, AWSCURRENT) == before


def test_an_unrelated_victim_clone_does_not_get_the_victims_password(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """Attack 3: the attacker's own user is called `victim_clone`; its partner is `victim`."""
    master_name, master_arn = master
    victim = team.user("victim", [{"role": "readWrite", "db": "payroll"}])
    own = team.own_user(f"{victim}_clone", [READ_WRITE])
    lacks = f"'{own}' lacks roles '{victim}' holds: 'readWrite' on 'payroll'"
    team.refused(team.secret(own, masterarn=master_arn), PrivilegeError, lacks)
    assert recorder.users() == [own, master_name]
    assert recorder.changes() == [], "no updateUser of the victim"


def test_a_pre_existing_clone_with_more_roles_is_not_taken_over(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """Attack 3b: the app's own user is `ops`; `ops_clone` is someone else's, with more power."""
    _, master_arn = master
    ops = team.user("ops", [READ_WRITE])
    power = [READ_WRITE, {"role": "readWrite", "db": "payroll"}]
    ops_clone = team.own_user(f"{ops}_clone", power)  # someone else's, whatever its password
    holds = f"'{ops_clone}' holds roles '{ops}' does not: 'readWrite' on 'payroll'"
    team.refused(team.secret(ops, masterarn=master_arn), PrivilegeError, holds)
    assert recorder.changes() == []
    assert team.roles(ops_clone) == power, "the clone keeps its roles"


@pytest.fixture
def user_admin_role(team: Team) -> dict[str, str]:
    """A custom role that inherits user administration: found through rolesInfo."""
    name = team.db.name("helpdesk")
    team.admin.command(
        "createRole",
        name,
        privileges=[{"resource": {"db": "orders", "collection": ""}, "actions": ["find"]}],
        roles=[{"role": "userAdminAnyDatabase", "db": "admin"}],
    )
    return {"role": name, "db": "admin"}


@pytest.mark.parametrize("kind", ["root", "userAdmin", "custom"])
def test_an_administrative_source_is_refused_without_the_opt_in(
    team: Team, master: tuple[str, str], recorder: Recorder, kind: str, user_admin_role: dict[str, str]
) -> None:
    _, master_arn = master
    role = {
        "root": {"role": "root", "db": "admin"},
        "userAdmin": {"role": "userAdmin", "db": "orders"},
        "custom": user_admin_role,
    }[kind]
    admin_user = team.user("boss", [READ_WRITE, role])
    expected = "userAdminAnyDatabase" if kind == "custom" else role["role"]
    holds = f"'{admin_user}' holds role '{expected}'.*allow_privileged_user"
    team.refused(team.secret(admin_user, masterarn=master_arn), PrivilegeError, holds)
    assert recorder.changes() == []
    assert team.roles(f"{admin_user}_clone") is None


def test_an_administrative_source_rotates_with_the_opt_in(
    team: Team, master: tuple[str, str], user_admin_role: dict[str, str]
) -> None:
    _, master_arn = master
    admin_user = team.user("boss", [READ_WRITE, user_admin_role])
    current = team.db.rotate(team.secret(admin_user, masterarn=master_arn, allow_privileged_user=True))
    assert current["username"] == f"{admin_user}_clone"
    assert team.logs_in(current["username"], password=current["password"])
    assert team.roles(current["username"]) == [READ_WRITE, user_admin_role]


def test_a_current_version_that_does_not_log_in_stops_the_master(
    team: Team, master: tuple[str, str], recorder: Recorder
) -> None:
    """The confused-deputy guard: a secret that names `victim` with a made-up password."""
    _, master_arn = master
    victim = team.user("victim", [READ_WRITE])
    made_up = team.db.store(Login(victim, "Made-Up-1"), masterarn=master_arn)
    team.refused(made_up, LoginError, f"AWSCURRENT version of .* does not log in as '{victim}'")
    assert recorder.users() == [victim, f"{victim}_clone"], "never the master"
    assert recorder.changes() == []
    assert team.roles(f"{victim}_clone") is None


def test_an_app_secret_without_tls_does_not_take_the_masters_password_with_it(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, leak_check: Watched, recorder: Recorder
) -> None:
    """Attack 5: on a server that speaks plaintext only, an app secret with `"ssl": false` logs the
    app in, but the master keeps to its own secret (TLS): its login fails, its password is not sent."""
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    plain = checked_team(bind(DOCUMENTDB, request, monkeypatch, leak_check.add, server="plain"), request)
    master_name = plain.user("master", list(DOCUMENTDB.master_grants))
    master_arn = plain.secret(master_name)  # "ssl": true, as DocumentDB's secrets have it here
    app = plain.user("app", [READ_WRITE])
    plain.refused(
        plain.secret(app, masterarn=master_arn, ssl=False), DatabaseUnavailableError, "Cannot connect"
    )
    assert recorder.logins == [(app, "admin", False), (master_name, "admin", True)]
    assert "connectionStatus" in recorder.sent_by(app), "the app logged in over plaintext, as its secret says"
    assert recorder.sent_by(master_name) == [], "the master's login never got past TLS"
    assert plain.roles(f"{app}_clone") is None


def test_a_pending_version_without_tls_is_refused_in_single_user_rotation(
    team: Team, recorder: Recorder
) -> None:
    """Attack 5, single user: a staged AWSPENDING with `"ssl": false` would carry AWSCURRENT's password."""
    app = team.user("app", [READ_WRITE])
    arn = team.secret(app)
    token = team.sm.start_rotation(arn)
    current = team.sm.value(arn, AWSCURRENT)
    team.sm.client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=json.dumps({**current, "ssl": False, "password": "Pending-" + token}),
        VersionStages=["AWSPENDING"],
    )
    team.db.fails(arn, token, "setSecret", TargetMismatchError, "weaker TLS")
    assert recorder.logins == []
