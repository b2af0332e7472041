"""The exact statements SQLServerRotator sends, scenario by scenario, through the recording double.

setSecret and testSecret run the real engine and the real DatabaseRotator strategies; only
`pytds.connect` and the engine's `open_socket` are the double (tests/sqlserver_double.py), whose
server applies what is sent, and Secrets Manager is a table. Password DDL must go out as a plain
batch (`cursor.execute(sql)`, no params argument at all): with params the driver %-formats the
text and runs it through sp_executesql, whose text SQL Server's traces do not mask.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytds
import pytest

from rotators import errors
from rotators.database import LoginRefusedError, other_user
from rotators.engines.sqlserver import SQLServerRotator
from rotators.engines.sqlserver_sql import (
    DATABASE_PERMISSIONS_SQL,
    DATABASE_POWER_SQL,
    DATABASE_ROLES_SQL,
    DATABASES_SQL,
    LOGIN_SQL,
    OWNED_SQL,
    PRINCIPAL_SQL,
    SERVER_PERMISSIONS_SQL,
    SERVER_POWER_SQL,
    SERVER_ROLES_SQL,
    mapped_users_sql,
)
from rotators.rotation import Step
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from tests.offline import NEW_PASSWORD, FakeSecretsManager, context, create_then_set, redacted, store
from tests.sqlserver_double import (
    LOCK_SQL,
    MY_PERMISSIONS_SQL,
    NO_PARAMS,
    PROBE_SQL,
    UNLOCK_SQL,
    Grant,
    RecordingCursor,
    SqlServerDouble,
    fold,
    quote,
    server_error,
    tds_error,
)

LOGIN = {"engine": "sqlserver", "host": "db.example", "port": 1433, "dbname": "appdb"}
OLD, PREVIOUS, MASTER = "Old-pass-1", "Previous-pass-0", "Master-pass-3"
N = f"N'{NEW_PASSWORD}'"
IN_MASTER = "EXEC [master].[sys].[sp_executesql] N'{}'"
QUERIES = ("SELECT", "WITH", "DECLARE", "EXEC sp_")  # catalog queries, the lock, the test query


def server() -> SqlServerDouble:
    """A server with the database `appdb` and the master login `admin` (sysadmin)."""
    double = SqlServerDouble().admin("CREATE DATABASE [appdb]")
    double.sql_login("admin", MASTER).admin("ALTER SERVER ROLE [sysadmin] ADD MEMBER [admin]")
    return double


def rotation(
    user: str,
    *,
    master: bool = False,
    previous: dict[str, Any] | None = None,
    app: dict[str, Any] | None = None,
    **pending: Any,
) -> tuple[SQLServerRotator, FakeSecretsManager]:
    """Secrets Manager's table for `user` (with `app`'s extra keys); `previous`: the AWSPREVIOUS
    value's username and password; with `pending` keys, an AWSPENDING already staged (for the
    partner, in alternating rotation)."""
    values = {("demo", AWSCURRENT): {**LOGIN, "username": user, "password": OLD, **(app or {})}}
    if master:
        values[("demo", AWSCURRENT)]["masterarn"] = "m"
        values[("m", AWSCURRENT)] = {**LOGIN, "username": "admin", "password": MASTER}
    if previous is not None:
        values[("demo", AWSPREVIOUS)] = {**values[("demo", AWSCURRENT)], **previous}
    if pending:
        partner = {"username": other_user(user)} if master else {}
        values[("demo", AWSPENDING)] = {**values[("demo", AWSCURRENT)], **partner, **pending}
    client = FakeSecretsManager(values)
    return SQLServerRotator(store(client)), client


def set_secret(rotator: SQLServerRotator, client: FakeSecretsManager) -> None:
    if ("demo", AWSPENDING) in client.values:
        rotator.set_pending(context(rotator, Step.SET, previous=("demo", AWSPREVIOUS) in client.values))
    else:
        create_then_set(rotator, client)


def alter(user: str, password: str = NEW_PASSWORD, old: str | None = OLD) -> str:
    literal = "N'" + password.replace("'", "''") + "'"
    statement = f"ALTER LOGIN {quote(user)} WITH PASSWORD = {literal}"
    return statement + (" OLD_PASSWORD = N'" + old.replace("'", "''") + "'" if old else "")


# -- single user ---------------------------------------------------------------------------------------
def test_single_user_changes_its_own_password_with_old_password(monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("app", OLD, database="appdb").install(monkeypatch)
    set_secret(*rotation("app"))
    assert double.logins == ["app"]
    assert double.statements == [f"ALTER LOGIN [app] WITH PASSWORD = {N} OLD_PASSWORD = N'{OLD}'"]
    assert double.executed[0].params is NO_PARAMS, "a plain batch: execute() got no params argument"
    assert (double.executed[0].login, double.executed[0].database) == ("app", "appdb")
    assert double.accepts("app", NEW_PASSWORD) and not double.accepts("app", OLD)
    assert double.connects[0]["database"] == "appdb" and double.connects[0]["sock"] is double.sockets[0]
    assert double.closed_connections == 1 and double.closed_sockets == 1 and double.closed_cursors == 1


def test_single_user_repeated_set_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a crash the server already has the pending password: AWSCURRENT is refused (18456),
    AWSPENDING logs in, and no statement is sent."""
    double = server().sql_login("app", NEW_PASSWORD, database="appdb").install(monkeypatch)
    set_secret(*rotation("app", password=NEW_PASSWORD))
    assert double.logins == ["app", "app"]
    assert double.statements == []


def test_single_user_recovers_through_previous(monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("app", PREVIOUS, database="appdb").install(monkeypatch)
    set_secret(*rotation("app", previous={"password": PREVIOUS}, password=NEW_PASSWORD))
    assert double.logins == ["app", "app", "app"]
    assert double.statements == [alter("app", old=PREVIOUS)]
    assert double.accepts("app", NEW_PASSWORD)


def test_single_user_with_no_working_password_fails_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = server().sql_login("app", "Set-by-hand-9", database="appdb").install(monkeypatch)
    with pytest.raises(errors.LoginError, match=r"No version of .* logs in"):
        set_secret(*rotation("app", previous={"password": PREVIOUS}, password=NEW_PASSWORD))
    assert double.statements == []
    assert double.closed_sockets == len(double.sockets) == 3, "each refused login's socket is closed"


@pytest.mark.parametrize(
    ("username", "quoted"),
    [
        ("a]b", "[a]]b]"),
        ("O'Neil", "[O'Neil]"),
        ("app user", "[app user]"),
        ("[app]", "[[app]]]"),
        ("Zoë-日本", "[Zoë-日本]"),
        ("x" * 128, f"[{'x' * 128}]"),
    ],
)
def test_single_user_names_that_need_quoting(
    username: str, quoted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    double = server().sql_login(username, OLD).install(monkeypatch)
    set_secret(*rotation(username, app={"dbname": "master"}))
    assert double.statements == [f"ALTER LOGIN {quoted} WITH PASSWORD = {N} OLD_PASSWORD = N'{OLD}'"]
    assert double.accepts(username, NEW_PASSWORD)


def test_a_name_in_another_case_is_the_same_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """`APP ` is `app` to SQL Server: it logs in, and changes its own password with OLD_PASSWORD."""
    double = server().sql_login("app", OLD, database="appdb").install(monkeypatch)
    set_secret(*rotation("APP "))
    assert double.statements == [f"ALTER LOGIN [APP ] WITH PASSWORD = {N} OLD_PASSWORD = N'{OLD}'"]
    assert double.accepts("app", NEW_PASSWORD)


def test_the_user_key_folds_what_some_collation_ignores() -> None:
    """Case and trailing spaces (every default collation), accents and width (accent- and
    width-insensitive ones): all of these are the master `admin`. Leading spaces, other
    characters and other letters are other logins."""
    rotator, _ = rotation("app")
    secret = rotator.parse(json.dumps({**LOGIN, "username": "admin", "password": MASTER}), where="x")
    same = [
        "admin",
        "ADMIN ",
        "Admin  ",
        "Admín",
        "Admi\u0301n",
        "ÁDMÏN",
        "\uff21dmin",
        "\uff41\uff44\uff4d\uff49\uff4e ",
    ]
    assert {rotator.user_key(name, secret) for name in same} == {"admin"}
    others = [" admin", "admin\t", "admin_", "adm in", "admim", "admin_clone", "\u0430dmin"]  # a Cyrillic a
    assert all(rotator.user_key(name, secret) != "admin" for name in others)


@pytest.mark.parametrize(
    ("old", "new"),
    [("it's-Old-1", "it's-New-2''"), ("100%-Old-1", "%(name)s-%s-New-2"), ("Zoë-Old-1", "日本-New-2")],
)
def test_passwords_are_quoted_literals_of_a_plain_batch(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`'` is doubled; `%` stays as it is, because no params go with the statement (the driver
    would %-format it otherwise); the server then accepts exactly the new password."""
    double = server().sql_login("app", old, database="appdb").install(monkeypatch)
    rotator, client = rotation("app", password=new)
    client.values[("demo", AWSCURRENT)]["password"] = old
    set_secret(rotator, client)
    assert double.statements == [alter("app", new, old)]
    assert double.executed[0].params is NO_PARAMS
    assert double.accepts("app", new)


def test_make_pending_draws_again_while_the_password_holds_the_login_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CHECK_POLICY refuses a password that holds the login name (15118): such a draw is not used."""
    rotator, _ = rotation("app")
    client = FakeSecretsManager(
        {("demo", AWSCURRENT): {**LOGIN, "username": "app", "password": OLD}},
        passwords=["x-APP-Pass-1", "y-app-Pass-2", "Good-Pass-3"],
    )
    rotator = SQLServerRotator(store(client))
    pending = rotator.make_pending(context(rotator, Step.CREATE))
    assert pending.password == "Good-Pass-3" and len(client.policies) == 3

    stuck = FakeSecretsManager(
        {("demo", AWSCURRENT): {**LOGIN, "username": "app", "password": OLD}}, passwords=["app-Pass"] * 11
    )
    rotator = SQLServerRotator(store(stuck))
    with pytest.raises(errors.ConfigurationError, match="without the login name in 10 tries"):
        rotator.make_pending(context(rotator, Step.CREATE))


# -- errors, worded ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (18486, "locked out: unlock it"),
        (18487, "expired or must be changed"),
        (18488, "expired or must be changed"),
    ],
)
def test_a_login_no_version_can_fix_stops_with_advice(
    number: int, advice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    double = server().sql_login("app", OLD, database="appdb")
    double.login_errors["app"] = server_error(number, "app")
    double.install(monkeypatch)
    with pytest.raises(errors.LoginError) as caught:
        set_secret(*rotation("app", previous={"password": PREVIOUS}))
    assert not isinstance(caught.value, LoginRefusedError)
    assert str(caught.value).startswith("Did not log in as 'app' at db.example:1433/appdb: Login failed")
    assert advice in str(caught.value)
    assert double.logins == ["app"], "no other version is tried"
    assert double.statements == []


def test_a_refused_login_is_the_cue_for_the_next_version(monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("app", OLD, database="appdb").install(monkeypatch)
    rotator, _ = rotation("app")
    secret = rotator.parse(json.dumps({**LOGIN, "username": "app", "password": "Wrong-pass-1"}), where="x")
    with pytest.raises(LoginRefusedError) as caught, rotator.connect(secret, "app", "Wrong-pass-1"):
        pass
    assert str(caught.value) == "SQL Server refused the login of 'app'"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert double.closed_sockets == 1


def test_a_database_that_does_not_exist_is_not_a_refused_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQL Server answers 4060 then 18456, and python-tds raises the last with the text of both:
    the password was right, so no other version is tried, and the message names `dbname`."""
    double = server().sql_login("app", OLD, database="appdb").install(monkeypatch)
    with pytest.raises(errors.DatabaseUnavailableError) as caught:
        set_secret(*rotation("app", app={"dbname": "nodb"}))
    assert 'Cannot open database "nodb"' in str(caught.value) and "'dbname'" in str(caught.value)
    assert double.logins == ["app"]


@pytest.mark.parametrize(
    ("number", "args", "hint"),
    [
        (15151, ("alter the login", "app"), "it needs ALTER ANY LOGIN"),
        (15247, (), "lacks the permission for this"),
        (15118, (), "CHECK_POLICY"),
        (15116, (), "raise PASSWORD_LENGTH"),
        (15114, (), "forbids reusing this password"),
    ],
)
def test_a_refused_password_change_is_worded_with_its_hint_once(
    number: int, args: tuple[str, ...], hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = (
        server_error(number, *args)
        if number != 15114
        else tds_error((15114, "Password validation failed. The password cannot be used at this time."))
    )
    double = server().sql_login("app", OLD, database="appdb")
    double.fail_on["ALTER LOGIN"] = refusal
    double.install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app"))
    message = str(caught.value)
    assert message.startswith(f"SQL Server refused ALTER LOGIN [app]: {refusal.text}; ")
    assert message.count(hint) == 1
    assert NEW_PASSWORD not in message and OLD not in message
    assert double.accepts("app", OLD)


def test_a_server_error_quoting_the_passwords_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = tds_error((15118, f"Password validation failed for {NEW_PASSWORD} (was {OLD})."))
    double = server().sql_login("app", OLD, database="appdb")
    double.fail_at[0] = refusal
    double.install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app"))
    assert redacted(caught.value, NEW_PASSWORD, OLD).startswith("SQL Server refused ALTER LOGIN [app]: ")


@pytest.mark.parametrize(
    "failure",
    [
        pytds.ClosedConnectionError(),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
)
def test_a_connection_lost_during_the_change_is_unavailable_not_refused(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    double = server().sql_login("app", OLD, database="appdb")
    double.fail_on["ALTER LOGIN"] = failure
    double.install(monkeypatch)
    with pytest.raises(errors.DatabaseUnavailableError) as caught:
        set_secret(*rotation("app"))
    message = str(caught.value)
    assert message.startswith("SQL Server went away during ALTER LOGIN [app]: ")
    assert message.endswith("; retry the step")
    assert NEW_PASSWORD not in message and OLD not in message


def test_a_connection_lost_during_a_query_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("app", OLD, database="appdb")
    double.fail_on["DECLARE @result"] = pytds.ClosedConnectionError()
    double.install(monkeypatch)
    with pytest.raises(errors.DatabaseUnavailableError, match="went away during a query of the catalog"):
        set_secret(*rotation("app", master=True))
    assert double.changes() == []


# -- alternating users ---------------------------------------------------------------------------------
def app_server() -> SqlServerDouble:
    """`app`, with a policy, a default database and language, a server role, server permissions,
    and in appdb a user with a default schema, roles, object and column permissions, a DENY and a
    grant WITH GRANT OPTION."""
    double = server()
    double.sql_login(
        "app", OLD, database="appdb", schema="sales", policy=True, expiration=True,
        default_database="appdb", language="Deutsch",
    )  # fmt: skip
    double.sql_login("reporter", "Reporter-pass-4")
    double.admin(
        "CREATE SERVER ROLE [monitoring]",
        "ALTER SERVER ROLE [monitoring] ADD MEMBER [app]",
        "GRANT VIEW SERVER STATE TO [app]",
        "GRANT VIEW DEFINITION ON LOGIN::[reporter] TO [app]",
    )
    double.admin(
        "CREATE ROLE [reporting]",
        "ALTER ROLE [reporting] ADD MEMBER [app]",
        "ALTER ROLE [db_datareader] ADD MEMBER [app]",
        "GRANT SELECT ON OBJECT::[sales].[orders] TO [app]",
        "GRANT UPDATE ([email]) ON OBJECT::[sales].[customers] TO [app]",
        "DENY DELETE ON OBJECT::[sales].[orders] TO [app]",
        "GRANT EXECUTE ON SCHEMA::[sales] TO [app] WITH GRANT OPTION",
        "GRANT VIEW DEFINITION ON ROLE::[reporting] TO [app]",
        "GRANT REFERENCES ON TYPE::[sales].[money2] TO [app]",
        database="appdb",
    )
    return double


def mapped(*databases: str) -> list[str]:
    """Which databases the master can open (DATABASES_SQL, in name order), then in each the users
    of the source and the clone (a three-part name: the session stays where it is)."""
    return [DATABASES_SQL, *map(mapped_users_sql, databases)]


# The databases of server(): appdb, and master, model and msdb (tempdb is never looked at).
MAPPED = mapped("appdb", "master", "model", "msdb")
# The guard (AWSCURRENT's own login and test query), then the master's checks before any change,
# under the lock: the source's power (in the server and in each database where it has a user)
# and whether a clone exists (and if so, how it differs).
SERVER_READS = [SERVER_ROLES_SQL, SERVER_PERMISSIONS_SQL]
DATABASE_READS = [DATABASE_ROLES_SQL, DATABASE_PERMISSIONS_SQL]  # in appdb, the session's: no USE
CHECKS_NEW_CLONE = [PROBE_SQL, LOCK_SQL, SERVER_POWER_SQL, *MAPPED, DATABASE_POWER_SQL, PRINCIPAL_SQL]
# The databases are looked at once under the lock (SqlServerSession.known): the checks and the change
# share what the first look found.
CHECKS_EXISTING_CLONE = [*CHECKS_NEW_CLONE, *SERVER_READS, *DATABASE_READS, OWNED_SQL, SERVER_POWER_SQL]
READS = [LOGIN_SQL, PRINCIPAL_SQL, *SERVER_READS, *DATABASE_READS]
# Where the checks compared an existing clone, the change takes their privileges as they were read.
READS_KNOWN = [LOGIN_SQL, PRINCIPAL_SQL]
# Back to the original: its power, then what it holds that the clone (AWSCURRENT) does not.
CHECKS_ORIGINAL = [*CHECKS_NEW_CLONE[:-1], *SERVER_READS, *DATABASE_READS]
CLONE_SETTINGS = (
    "DEFAULT_DATABASE = [appdb], DEFAULT_LANGUAGE = [Deutsch], CHECK_POLICY = ON, CHECK_EXPIRATION = ON"
)
FIRST_CLONE = [
    f"CREATE LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}",
    "ALTER SERVER ROLE [monitoring] ADD MEMBER [app_clone]",
    IN_MASTER.format("GRANT VIEW DEFINITION ON LOGIN::[reporter] TO [app_clone]"),
    IN_MASTER.format("GRANT VIEW SERVER STATE TO [app_clone]"),
    "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [sales]",
    "ALTER ROLE [db_datareader] ADD MEMBER [app_clone]",
    "ALTER ROLE [reporting] ADD MEMBER [app_clone]",
    "DENY DELETE ON OBJECT::[sales].[orders] TO [app_clone]",
    "GRANT REFERENCES ON TYPE::[sales].[money2] TO [app_clone]",
    "GRANT SELECT ON OBJECT::[sales].[orders] TO [app_clone]",
    "GRANT UPDATE ([email]) ON OBJECT::[sales].[customers] TO [app_clone]",
    "GRANT VIEW DEFINITION ON ROLE::[reporting] TO [app_clone]",
    "GRANT EXECUTE ON SCHEMA::[sales] TO [app_clone] WITH GRANT OPTION",
]


def held(double: SqlServerDouble, name: str, where: str = "appdb") -> tuple[set[Any], set[Any]]:
    """What `name` holds, as the catalog says it: server roles and permissions, then those of its
    user in the database `where` (and its default schema)."""
    database = double.server.databases[fold(where)]
    user = database.user_of(name)
    server_side = {("role", r) for r, m in double.server.members if m == name} | {
        (g.state, g.permission, g.kind, g.name) for g in double.server.permissions if g.grantee == name
    }
    database_side = (
        {("role", r) for r, m in database.members if m == user.name}
        | {
            (g.state, g.permission, g.kind, g.schema, g.name, g.column)
            for g in database.permissions
            if g.grantee == user.name
        }
        | {("schema", user.default_schema)}
        if user
        else set()
    )
    return server_side, database_side


def test_first_alternating_rotation_creates_the_clone_with_the_originals_privileges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = app_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.logins == ["app", "admin"], "AWSCURRENT proves its login before the master acts"
    assert double.statements == [*CHECKS_NEW_CLONE, *READS, *FIRST_CLONE, UNLOCK_SQL]
    pair = {"source": "app", "clone": "app_clone"}
    assert [e.params for e in double.executed[: len(CHECKS_NEW_CLONE) + len(READS)]] == [
        NO_PARAMS,
        {"resource": "rotators:app_clone", "timeout": 20000},
        {"name": "app"},
        NO_PARAMS,
        *[pair] * 4,  # the users of the source and the clone: one look, for the checks and the change
        {"name": "app"},
        {"name": "app_clone"},
        {"name": "app"},
        {"name": "app_clone"},
        pair,
        pair,
        {"source": "app", "clone": ""},  # the clone has no user yet: it holds nothing
        {"source": "app", "clone": ""},
    ]
    changes = double.executed[len(CHECKS_NEW_CLONE) + len(READS) : -1]
    assert all(e.params is NO_PARAMS for e in changes), "every change is a plain batch"
    assert {(e.login, e.database) for e in double.executed[1:]} == {("admin", "appdb")}
    assert double.accepts("app_clone", NEW_PASSWORD) and double.accepts("app", OLD)
    clone = double.server.login("app_clone")
    assert clone is not None
    assert (clone.default_database, clone.default_language, clone.check_policy, clone.check_expiration) == (
        "appdb", "Deutsch", True, True,
    )  # fmt: skip
    source_server, source_database = held(double, "app")
    clone_server, clone_database = held(double, "app_clone")
    assert clone_server == source_server and clone_database == source_database


def test_an_opted_in_administrative_login_is_cloned_with_its_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    """`"allow_privileged_user": true`: no power check; the roles are copied as held."""
    double = app_server().admin("ALTER SERVER ROLE [securityadmin] ADD MEMBER [app]").install(monkeypatch)
    set_secret(*rotation("app", master=True, app={"allow_privileged_user": True}))
    assert SERVER_POWER_SQL not in double.statements
    assert "ALTER SERVER ROLE [securityadmin] ADD MEMBER [app_clone]" in double.statements
    assert double.accepts("app_clone", NEW_PASSWORD)


def test_a_later_rotation_sets_the_originals_password_without_old_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = app_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    set_secret(*rotation("app_clone", master=True, app={"password": NEW_PASSWORD}, password="Newer-Value-3"))
    second = double.statements[len([*CHECKS_NEW_CLONE, *READS, *FIRST_CLONE, UNLOCK_SQL]) :]
    assert second == [*CHECKS_ORIGINAL, "ALTER LOGIN [app] WITH PASSWORD = N'Newer-Value-3'", UNLOCK_SQL]
    assert double.logins == ["app", "admin", "app_clone", "admin"]
    assert double.accepts("app", "Newer-Value-3") and double.accepts("app_clone", NEW_PASSWORD)


def test_a_repeated_set_of_an_up_to_date_clone_only_sets_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = app_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    first = len(double.executed)
    set_secret(*rotation("app", master=True, password="Newer-Value-3"))
    assert double.statements[first:] == [
        *CHECKS_EXISTING_CLONE,
        *READS_KNOWN,
        f"ALTER LOGIN [app_clone] WITH PASSWORD = N'Newer-Value-3', {CLONE_SETTINGS}",
        UNLOCK_SQL,
    ]
    assert double.accepts("app_clone", "Newer-Value-3")


def test_a_refresh_takes_what_the_source_lost_before_it_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotator's own clone (AWSPREVIOUS logs in as it) holds what the source has since lost:
    it is taken (a grantable permission with CASCADE), then what the source gained is given."""
    double = app_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    double.admin("ALTER SERVER ROLE [monitoring] DROP MEMBER [app]", "REVOKE VIEW SERVER STATE FROM [app]")
    double.admin(
        "ALTER ROLE [reporting] DROP MEMBER [app]",
        "REVOKE EXECUTE ON SCHEMA::[sales] FROM [app] CASCADE",
        "GRANT EXECUTE ON SCHEMA::[sales] TO [app]",
        "REVOKE DELETE ON OBJECT::[sales].[orders] FROM [app]",
        "GRANT DELETE ON OBJECT::[sales].[orders] TO [app]",
        "ALTER ROLE [db_datawriter] ADD MEMBER [app]",
        database="appdb",
    )
    first = len(double.executed)
    set_secret(
        *rotation(
            "app", master=True, previous={"username": "app_clone", "password": NEW_PASSWORD},
            password="Newer-Value-3",
        )
    )  # fmt: skip
    assert double.changes()[len(FIRST_CLONE) :] == [
        f"ALTER LOGIN [app_clone] WITH PASSWORD = N'Newer-Value-3', {CLONE_SETTINGS}",
        "ALTER SERVER ROLE [monitoring] DROP MEMBER [app_clone]",
        IN_MASTER.format("REVOKE VIEW SERVER STATE FROM [app_clone]"),
        "ALTER ROLE [reporting] DROP MEMBER [app_clone]",
        "REVOKE DELETE ON OBJECT::[sales].[orders] FROM [app_clone]",
        "REVOKE EXECUTE ON SCHEMA::[sales] FROM [app_clone] CASCADE",
        "ALTER ROLE [db_datawriter] ADD MEMBER [app_clone]",
        "GRANT DELETE ON OBJECT::[sales].[orders] TO [app_clone]",
        "GRANT EXECUTE ON SCHEMA::[sales] TO [app_clone]",
    ]
    assert double.logins[2:] == ["app", "admin", "app_clone"], "AWSPREVIOUS proved the clone"
    assert held(double, "app_clone") == held(double, "app")
    assert double.executed[-1].statement == UNLOCK_SQL and first < len(double.executed)


def test_a_clone_holding_more_than_the_source_is_not_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server().install(monkeypatch)
    double.sql_login("app_clone", "Someone-elses-1", database="appdb")
    double.admin("ALTER SERVER ROLE [bulkadmin] ADD MEMBER [app_clone]", "GRANT ALTER TRACE TO [app_clone]")
    double.admin("GRANT SELECT ON OBJECT::[hr].[salaries] TO [app_clone]", database="appdb")
    with pytest.raises(errors.PrivilegeError) as caught:
        set_secret(*rotation("app", master=True))
    assert (
        "'app_clone' holds what 'app' does not: role bulkadmin, GRANT ALTER TRACE, "
        "GRANT SELECT ON OBJECT::[hr].[salaries] in database appdb, "
        "not DENY DELETE ON OBJECT::[sales].[orders] in database appdb"
    ) in str(caught.value)
    assert double.statements == [*CHECKS_EXISTING_CLONE, UNLOCK_SQL]
    assert double.changes() == [] and double.accepts("app_clone", "Someone-elses-1")


# -- every database where the source has a user ------------------------------------------------------------
SALES = [  # the clone's statements in sales, as sync orders them: its user, roles, then permissions
    "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [ledger]",
    "ALTER ROLE [clerks] ADD MEMBER [app_clone]",
    "DENY UPDATE ON OBJECT::[ledger].[entries] TO [app_clone]",
    "GRANT INSERT ON OBJECT::[ledger].[entries] TO [app_clone]",
]
MAPPED_SALES = mapped("appdb", "master", "model", "msdb", "sales")
# The next rotation to the clone, which AWSPREVIOUS (the clone's password) proves is the rotator's.
NEWER: dict[str, Any] = {
    "previous": {"username": "app_clone", "password": NEW_PASSWORD},
    "password": "Newer-Value-3",
}


def sales_server() -> SqlServerDouble:
    """app_server(), and the database `sales` where `app` has a user too: another default schema,
    a role, a grant and a DENY."""
    double = app_server().admin("CREATE DATABASE [sales]")
    double.admin(
        "CREATE USER [app] FOR LOGIN [app] WITH DEFAULT_SCHEMA = [ledger]",
        "CREATE ROLE [clerks]",
        "ALTER ROLE [clerks] ADD MEMBER [app]",
        "GRANT INSERT ON OBJECT::[ledger].[entries] TO [app]",
        "DENY UPDATE ON OBJECT::[ledger].[entries] TO [app]",
        database="sales",
    )
    return double


def elsewhere(database: str, *statements: str) -> list[str]:
    """`statements` in another database than the session's (appdb), then back."""
    return [f"USE {quote(database)}", *statements, "USE [appdb]"]


def test_the_clone_gets_a_user_in_every_database_where_the_source_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source's user in sales is copied as the one in appdb is: default schema, roles, grants
    and the DENY. Reads and changes there run after USE [sales], and the session comes back
    before the lock (taken in appdb) is released."""
    double = sales_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.statements == [
        PROBE_SQL, LOCK_SQL, SERVER_POWER_SQL, *MAPPED_SALES, DATABASE_POWER_SQL,
        *elsewhere("sales", DATABASE_POWER_SQL), PRINCIPAL_SQL,
        LOGIN_SQL, PRINCIPAL_SQL, *SERVER_READS, *DATABASE_READS,  # the databases as the checks found them
        *elsewhere("sales", *DATABASE_READS),
        *FIRST_CLONE, *elsewhere("sales", *SALES), UNLOCK_SQL,
    ]  # fmt: skip
    tail = double.executed[-len(SALES) - 3 :]
    assert [e.database for e in tail] == ["appdb", *["sales"] * (len(SALES) + 1), "appdb"]
    assert all(e.params is NO_PARAMS for e in tail[:-1]), "USE and the changes are plain batches"
    assert held(double, "app_clone", "sales") == held(double, "app", "sales")
    assert {("schema", "ledger"), ("role", "clerks")} <= held(double, "app_clone", "sales")[1]
    assert held(double, "app_clone") == held(double, "app")

    # The source changes in both databases; the next rotation to the clone follows it in both.
    double.admin("ALTER ROLE [reporting] DROP MEMBER [app]", database="appdb")
    double.admin(
        "ALTER ROLE [clerks] DROP MEMBER [app]",
        "GRANT SELECT ON OBJECT::[ledger].[entries] TO [app]",
        database="sales",
    )
    done = len(double.changes())
    set_secret(*rotation("app", master=True, **NEWER))
    assert double.changes()[done:] == [
        f"ALTER LOGIN [app_clone] WITH PASSWORD = N'Newer-Value-3', {CLONE_SETTINGS}",
        "ALTER ROLE [reporting] DROP MEMBER [app_clone]",
        *elsewhere(
            "sales",
            "ALTER ROLE [clerks] DROP MEMBER [app_clone]",
            "GRANT SELECT ON OBJECT::[ledger].[entries] TO [app_clone]",
        ),
    ]
    for where in ("appdb", "sales"):
        assert held(double, "app_clone", where) == held(double, "app", where)


def test_where_the_source_lost_its_user_the_clones_user_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source's user in sales was dropped; the rotator's clone (AWSPREVIOUS proves it) still
    has one there: its roles and permissions are taken, CONNECT too, so it cannot open sales."""
    double = sales_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    double.admin("DROP USER [app]", database="sales")
    done = len(double.changes())
    set_secret(*rotation("app", master=True, **NEWER))
    assert double.changes()[done:] == [
        f"ALTER LOGIN [app_clone] WITH PASSWORD = N'Newer-Value-3', {CLONE_SETTINGS}",
        *elsewhere(
            "sales",
            "ALTER ROLE [clerks] DROP MEMBER [app_clone]",
            "REVOKE UPDATE ON OBJECT::[ledger].[entries] FROM [app_clone]",
            "REVOKE CONNECT FROM [app_clone]",
            "REVOKE INSERT ON OBJECT::[ledger].[entries] FROM [app_clone]",
        ),
    ]
    assert held(double, "app_clone", "sales")[1] == {("schema", "ledger")}, "a user that holds nothing"
    assert not double.server.may_enter("app_clone", double.server.databases["sales"])
    assert held(double, "app_clone") == held(double, "app")


def test_a_database_the_master_cannot_open_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A master that is no sysadmin (securityadmin, and db_owner in appdb) cannot open hr, where
    the source has a user, nor model (guest is disabled there: a template, neither warned about
    nor counted); an offline database is not listed. No clone exists yet, so nothing it holds is
    unknown: the rotation completes with what the master can open, and a warning names hr."""
    double = SqlServerDouble().admin(
        "CREATE DATABASE [appdb]", "CREATE DATABASE [hr]", "CREATE DATABASE [old]"
    )
    double.sql_login("admin", MASTER, database="appdb")
    double.admin("ALTER SERVER ROLE [securityadmin] ADD MEMBER [admin]")
    double.admin("ALTER ROLE [db_owner] ADD MEMBER [admin]", database="appdb")
    double.sql_login("app", OLD, database="appdb")
    double.admin("ALTER ROLE [db_datareader] ADD MEMBER [app]", database="appdb")
    for database in ("hr", "old"):
        double.admin(
            "CREATE USER [app] FOR LOGIN [app]", "GRANT SELECT ON SCHEMA::[dbo] TO [app]", database=database
        )
    double.server.databases["old"].online = False
    double.install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.changes() == [
        f"CREATE LOGIN [app_clone] WITH PASSWORD = {N}, DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF",
        "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [dbo]",
        "ALTER ROLE [db_datareader] ADD MEMBER [app_clone]",
    ]
    assert mapped("appdb", "master", "msdb") == double.statements[3:7], "hr and model are not looked into"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "The master user cannot open 1 databases (hr): if 'app' has a user there, 'app_clone' gets none"
    ]
    assert double.accepts("app_clone", NEW_PASSWORD) and held(double, "app_clone") == held(double, "app")
    assert held(double, "app_clone", "hr")[1] == set()


def test_a_source_without_its_own_connect_sql_gets_a_clone_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CREATE LOGIN grants CONNECT SQL; this source connects through a server role's instead, its
    own revoked: the clone's own is revoked as well, and it connects as the source does."""
    double = app_server().admin(
        "CREATE SERVER ROLE [apps]",
        "GRANT CONNECT SQL TO [apps]",
        "ALTER SERVER ROLE [apps] ADD MEMBER [app]",
        "REVOKE CONNECT SQL FROM [app]",
    )
    double.install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.changes()[:4] == [
        FIRST_CLONE[0],
        IN_MASTER.format("REVOKE CONNECT SQL FROM [app_clone]"),
        "ALTER SERVER ROLE [apps] ADD MEMBER [app_clone]",
        "ALTER SERVER ROLE [monitoring] ADD MEMBER [app_clone]",
    ]
    assert held(double, "app_clone") == held(double, "app")
    assert not any(
        g.permission == "CONNECT SQL" for g in double.server.permissions if g.grantee == "app_clone"
    )
    assert double.accepts("app_clone", NEW_PASSWORD), "through the role, as the source"


def test_a_source_without_connect_in_a_database_gets_a_clone_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CREATE USER grants CONNECT; the source's user in sales has it revoked (it cannot open
    sales): the clone's user there is made the same."""
    double = app_server().admin("CREATE DATABASE [sales]")
    double.admin(
        "CREATE USER [app] FOR LOGIN [app]",
        "GRANT SELECT ON SCHEMA::[dbo] TO [app]",
        "REVOKE CONNECT FROM [app]",
        database="sales",
    )
    double.install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.changes() == [
        *FIRST_CLONE,
        *elsewhere(
            "sales",
            "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [dbo]",
            "REVOKE CONNECT FROM [app_clone]",
            "GRANT SELECT ON SCHEMA::[dbo] TO [app_clone]",
        ),
    ]
    sales = double.server.databases["sales"]
    assert held(double, "app_clone", "sales") == held(double, "app", "sales")
    assert not double.server.may_enter("app_clone", sales) and not double.server.may_enter("app", sales)


@pytest.mark.parametrize("name", ["a]b", "100%(clone)s %", "O'Neil db", "%%"])
def test_databases_whose_names_need_quoting(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`]` doubled in USE and in the three-part name; `%` doubled in the three-part name, which
    goes with parameters (the driver %-formats it back), and not in USE, which goes without."""
    double = server().sql_login("app", OLD, database="appdb").admin(f"CREATE DATABASE {quote(name)}")
    double.admin(
        "CREATE USER [app] FOR LOGIN [app] WITH DEFAULT_SCHEMA = [it's]",
        "GRANT SELECT ON SCHEMA::[it's] TO [app]",
        database=name,
    )
    double.install(monkeypatch)
    set_secret(*rotation("app", master=True))
    order = sorted(["appdb", "master", "model", "msdb", name], key=str.casefold)
    quoted = "[" + name.replace("]", "]]") + "]"

    appdb = ["CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [dbo]"]
    other = [
        f"USE {quoted}",
        "CREATE USER [app_clone] FOR LOGIN [app_clone] WITH DEFAULT_SCHEMA = [it's]",
        "GRANT SELECT ON SCHEMA::[it's] TO [app_clone]",
        "USE [appdb]",
    ]
    first = order.index("appdb") < order.index(name)
    power = [DATABASE_POWER_SQL], [f"USE {quoted}", DATABASE_POWER_SQL, "USE [appdb]"]
    reads = DATABASE_READS, [f"USE {quoted}", *DATABASE_READS, "USE [appdb]"]
    assert double.statements == [
        PROBE_SQL, LOCK_SQL, SERVER_POWER_SQL, *mapped(*order),
        *(power[0] + power[1] if first else power[1] + power[0]), PRINCIPAL_SQL,
        LOGIN_SQL, PRINCIPAL_SQL, *SERVER_READS,
        *(reads[0] + reads[1] if first else reads[1] + reads[0]),
        f"CREATE LOGIN [app_clone] WITH PASSWORD = {N}, DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF",
        *(appdb + other if first else other + appdb), UNLOCK_SQL,
    ]  # fmt: skip
    assert f"FROM {quoted.replace('%', '%%')}.sys.database_principals" in mapped_users_sql(name)
    assert held(double, "app_clone", name) == held(double, "app", name)
    assert double.server.may_enter("app_clone", double.server.databases[fold(name)])


def test_a_failure_in_another_database_returns_the_session_before_the_lock_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CREATE USER in sales is refused: the session goes back to appdb, where the lock was taken,
    releases it there, and the error names the statement. A retry sends only what is missing."""
    double = sales_server()
    double.fail_on[SALES[0]] = server_error(15247)
    double.install(monkeypatch)
    rotator, client = rotation("app", master=True)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(rotator, client)
    assert str(caught.value).startswith(f"SQL Server refused {SALES[0]}: User does not have permission")
    assert double.locks == [("lock", "rotators:app_clone"), ("unlock", "rotators:app_clone")]
    assert double.statements[-3:] == [SALES[0], "USE [appdb]", UNLOCK_SQL]
    assert double.executed[-1].database == "appdb"

    del double.fail_on[SALES[0]]
    done = len(double.changes())
    rotator.set_pending(context(rotator, Step.SET))
    assert double.changes()[done:] == [
        f"ALTER LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}",
        *elsewhere("sales", *SALES),
    ]
    for where in ("appdb", "sales"):
        assert held(double, "app_clone", where) == held(double, "app", where)


def sales_server_with_a_race(monkeypatch: pytest.MonkeyPatch) -> SqlServerDouble:
    """sales_server(), where another run's CREATE USER of the clone in sales lands just before
    ours (which then fails with 15023, as on SQL Server)."""
    double = sales_server().install(monkeypatch)
    execute = RecordingCursor.execute

    def racing(self: RecordingCursor, statement: str, params: Any = NO_PARAMS) -> RecordingCursor:
        if statement == SALES[0] and not double.fail_at:
            double.admin(*SALES, database="sales")
            double.fail_at[len(double.executed)] = server_error(15023, "app_clone")
        return execute(self, statement, params)

    monkeypatch.setattr(RecordingCursor, "execute", racing)
    return double


def test_a_user_created_meanwhile_in_another_database_is_checked_and_adopted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another run's CREATE USER in sales lands first (15023, UserExistsError): the session is back
    in appdb for the release of the lock and for the checks made again under it."""
    double = sales_server_with_a_race(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.locks == [("lock", "rotators:app_clone"), ("unlock", "rotators:app_clone")] * 2
    assert double.changes() == [
        *FIRST_CLONE,
        *elsewhere("sales", SALES[0]),
        f"ALTER LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}",
    ]
    retry = double.executed[double.statements.index(UNLOCK_SQL) + 1 :]
    assert [e.statement for e in retry] == [
        LOCK_SQL, SERVER_POWER_SQL, *MAPPED_SALES, DATABASE_POWER_SQL,
        *elsewhere("sales", DATABASE_POWER_SQL), PRINCIPAL_SQL,
        *SERVER_READS, *DATABASE_READS, *elsewhere("sales", *DATABASE_READS),
        OWNED_SQL, *elsewhere("sales", OWNED_SQL), SERVER_POWER_SQL,
        *READS_KNOWN,
        f"ALTER LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}", UNLOCK_SQL,
    ]  # fmt: skip
    where = "appdb"  # the checks made again start where the lock is, and read appdb from there
    for executed in retry:
        assert executed.database == where
        where = executed.statement[5:-1] if executed.statement.startswith("USE ") else where
    assert double.accepts("app_clone", NEW_PASSWORD)
    for where in ("appdb", "sales"):
        assert held(double, "app_clone", where) == held(double, "app", where)


def test_the_double_opens_databases_as_sql_server_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """HAS_DBACCESS and USE for a login that is no sysadmin: its own user (with CONNECT), guest where
    it is enabled (master, msdb), nothing else; 911 and 916 as the server words them."""
    double = server().sql_login("app", OLD, database="appdb").admin("CREATE DATABASE [hr]")
    _, login = session(double, monkeypatch, "app", OLD)
    with login as conn, conn.conn.cursor() as cursor:
        cursor.execute(DATABASES_SQL)
        assert cursor.fetchall() == [
            ("appdb", 1),
            ("hr", 0),
            ("master", 1),
            ("model", 0),
            ("msdb", 1),
        ]
        for name, number in (("hr", 916), ("nodb", 911), ("model", 916)):
            with pytest.raises(pytds.Error) as caught:
                cursor.execute(f"USE [{name}]")
            assert caught.value.msg_no == number
        cursor.execute("USE [msdb]")
        assert conn.conn.database == "msdb" and double.executed[-1].database == "appdb"
        with pytest.raises(pytds.Error, match="Permissions at the server scope"):
            cursor.execute("GRANT VIEW SERVER STATE TO [app]")
        assert double.executed[-1].database == "msdb"


READ_ONLY_HINT = (
    "that database is read-only (or a readable secondary): give the clone its user there by hand, "
    "or rotate this secret as a single user"
)


def test_a_read_only_database_stops_the_change_with_its_hint_and_the_session_comes_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sales is read-only: its catalog reads as before, and CREATE USER there fails with 3906. The
    error names the statement and the hint once; the session goes back to appdb, where the lock
    was taken, and releases it there; nothing is made in sales."""
    double = sales_server()
    double.server.databases["sales"].read_only = True
    double.install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app", master=True))
    assert str(caught.value) == (
        f'SQL Server refused {SALES[0]}: Failed to update database "sales" because the database is '
        f"read-only.; {READ_ONLY_HINT}"
    )
    assert double.statements[-3:] == [SALES[0], "USE [appdb]", UNLOCK_SQL]
    assert double.executed[-1].database == "appdb", "released where it was taken (1223 elsewhere)"
    assert double.locks == [("lock", "rotators:app_clone"), ("unlock", "rotators:app_clone")]
    assert double.server.databases["sales"].user_of("app_clone") is None
    assert double.changes() == [*FIRST_CLONE, *elsewhere("sales", SALES[0])]


# -- the lock --------------------------------------------------------------------------------------------
def test_the_lock_is_taken_before_the_checks_and_released_after_the_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = app_server().install(monkeypatch)
    set_secret(*rotation("APP ", master=True))
    assert double.locks == [("lock", "rotators:app _clone"), ("unlock", "rotators:app _clone")]
    assert double.statements[1] == LOCK_SQL and double.statements[-1] == UNLOCK_SQL
    assert double.executed[1].login == "admin"


def test_the_lock_is_released_when_the_change_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server()
    double.fail_on["CREATE USER"] = server_error(15247)
    double.install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError, match=r"refused CREATE USER \[app_clone\] FOR LOGIN"):
        set_secret(*rotation("app", master=True))
    assert double.locks == [("lock", "rotators:app_clone"), ("unlock", "rotators:app_clone")]
    assert double.statements[-1] == UNLOCK_SQL


def test_a_lock_held_elsewhere_stops_before_any_check(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server()
    double.lock_result = -1
    double.install(monkeypatch)
    with pytest.raises(
        errors.PasswordChangeError, match=r"Another run holds the rotation lock of 'app_clone'"
    ):
        set_secret(*rotation("app", master=True))
    assert double.statements == [PROBE_SQL, LOCK_SQL]


# -- names and passwords that need quoting -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "quoted"),
    [("a]b", "[a]]b_clone]"), ("O'Neil", "[O'Neil_clone]"), ("Zoë 日本", "[Zoë 日本_clone]")],
)
def test_alternating_names_that_need_quoting(name: str, quoted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login(name, OLD, database="appdb", schema="o'neil]s")
    double.admin(f"GRANT VIEW SERVER STATE TO {quote(name)}")
    double.admin(f"GRANT SELECT ON OBJECT::[a]]b].[it's] TO {quote(name)}", database="appdb")
    double.install(monkeypatch)
    set_secret(*rotation(name, master=True, password="it's-New-2"))
    in_master = quoted.replace("'", "''")
    assert double.changes() == [
        f"CREATE LOGIN {quoted} WITH PASSWORD = N'it''s-New-2', DEFAULT_DATABASE = [master], "
        "DEFAULT_LANGUAGE = [us_english], CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF",
        IN_MASTER.format(f"GRANT VIEW SERVER STATE TO {in_master}"),
        f"CREATE USER {quoted} FOR LOGIN {quoted} WITH DEFAULT_SCHEMA = [o'neil]]s]",
        f"GRANT SELECT ON OBJECT::[a]]b].[it's] TO {quoted}",
    ]
    assert double.accepts(name + "_clone", "it's-New-2")
    assert held(double, name + "_clone") == held(double, name)


def test_a_source_spelled_in_another_case_is_cloned_with_its_privileges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The catalog answers with the stored names (`app`, `app_clone`), the secret says `APP`: its
    roles and permissions are still the source's and the clone's."""
    double = app_server().install(monkeypatch)
    set_secret(*rotation("APP", master=True))
    assert "ALTER SERVER ROLE [monitoring] ADD MEMBER [APP_clone]" in double.statements
    assert held(double, "APP_clone") == held(double, "app")
    set_secret(*rotation("APP", master=True, password="Newer-Value-3"))
    assert (
        double.changes()[-1] == f"ALTER LOGIN [APP_clone] WITH PASSWORD = N'Newer-Value-3', {CLONE_SETTINGS}"
    )


def test_a_source_without_a_default_language_leaves_the_clones_to_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sys.sql_logins may hold NULL as the default language: CREATE LOGIN then names none (the
    server's default applies), rather than DEFAULT_LANGUAGE = [None] or an error."""
    double = server().sql_login("app", OLD, database="appdb")
    login = double.server.login("app")
    assert login is not None
    login.default_language = None
    double.install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.changes()[0] == (
        f"CREATE LOGIN [app_clone] WITH PASSWORD = {N}, DEFAULT_DATABASE = [master], "
        "CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF"
    )
    assert double.accepts("app_clone", NEW_PASSWORD)


# -- another run got there first, or this one failed midway -------------------------------------------------
@pytest.mark.parametrize(("verb", "number"), [("CREATE LOGIN", 15025), ("CREATE USER", 15023)])
def test_a_principal_created_meanwhile_is_checked_and_adopted(
    verb: str, number: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run's CREATE lands first, with all it grants (15025 for the login, 15023 for the
    user): the error is UserExistsError, and the base checks the clone again under the lock,
    then changes its password."""
    double = app_server().install(monkeypatch)
    execute = RecordingCursor.execute
    raced: list[str] = []

    def racing(self: RecordingCursor, statement: str, params: Any = NO_PARAMS) -> RecordingCursor:
        if statement.startswith(verb) and not raced:
            raced.append(statement)
            for change in FIRST_CLONE[FIRST_CLONE.index(statement) :]:
                double.admin(change.replace(N, "N'Other-runs-1'"), database="appdb")
            raise server_error(number, "app_clone")
        return execute(self, statement, params)

    monkeypatch.setattr(RecordingCursor, "execute", racing)
    set_secret(*rotation("app", master=True))
    assert double.locks == [("lock", "rotators:app_clone"), ("unlock", "rotators:app_clone")] * 2
    assert double.accepts("app_clone", NEW_PASSWORD)
    assert held(double, "app_clone") == held(double, "app")
    assert double.changes() == [
        *FIRST_CLONE[: FIRST_CLONE.index(raced[0])],  # this run's, up to the CREATE that lost the race
        f"ALTER LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}",  # the retry's
    ]


def test_a_failure_midway_names_the_statement_and_a_retry_converges(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDL commits as it goes: the clone login exists after CREATE LOGIN though CREATE USER failed.
    The retried step reads the catalog again and sends only what is still missing."""
    double = app_server()
    double.fail_on["CREATE USER"] = server_error(15247)
    double.install(monkeypatch)
    rotator, client = rotation("app", master=True)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(rotator, client)
    message = str(caught.value)
    assert message.startswith("SQL Server refused CREATE USER [app_clone] FOR LOGIN [app_clone] WITH ")
    assert "lacks the permission" in message and NEW_PASSWORD not in message
    assert double.changes() == FIRST_CLONE[: FIRST_CLONE.index(double.changes()[-1]) + 1]

    del double.fail_on["CREATE USER"]
    done = len(double.changes())
    rotator.set_pending(context(rotator, Step.SET))
    assert double.changes()[done:] == [
        f"ALTER LOGIN [app_clone] WITH PASSWORD = {N}, {CLONE_SETTINGS}",
        *FIRST_CLONE[FIRST_CLONE.index(double.changes()[done - 1]) :],
    ]
    assert held(double, "app_clone") == held(double, "app")


# -- one look at the databases per pass of checks and change ------------------------------------------------
def passes(double: SqlServerDouble) -> list[list[str]]:
    """The statements of each pass under the lock: from a LOCK_SQL to its UNLOCK_SQL."""
    found: list[list[str]] = []
    current: list[str] | None = None
    for statement in double.statements:
        if statement == LOCK_SQL:
            current = []
        if current is not None:
            current.append(statement)
        if statement == UNLOCK_SQL and current is not None:
            found.append(current)
            current = None
    return found


def looks(statements: list[str]) -> list[str]:
    """The lookups of the databases among `statements`: DATABASES_SQL and each database's users."""
    users = {mapped_users_sql(name) for name in ("appdb", "master", "model", "msdb", "sales")}
    return [s for s in statements if s == DATABASES_SQL or s in users]


def test_the_databases_are_looked_at_once_per_pass_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The source's power, the clone's differences (both ways) and the change each need the
    databases where the two logins have users: one look serves them all, taken under the lock,
    before any change. To the clone (new), back to the original, and to the clone again (it
    exists: every check runs)."""
    double = sales_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    set_secret(*rotation("app_clone", master=True, app={"password": NEW_PASSWORD}, password="Newer-Value-3"))
    set_secret(
        *rotation(
            "app", master=True, app={"password": "Newer-Value-3"},
            previous={"username": "app_clone", "password": NEW_PASSWORD}, password="Newest-Value-4",
        )
    )  # fmt: skip
    assert double.accepts("app_clone", "Newest-Value-4") and double.accepts("app", "Newer-Value-3")
    assert len(passes(double)) == 3
    assert looks(double.statements) == [*MAPPED_SALES] * 3, "nothing looked outside a pass"
    for under_lock in passes(double):
        assert looks(under_lock) == MAPPED_SALES
        first_change = next(i for i, s in enumerate(under_lock) if not s.startswith((*QUERIES, "USE ")))
        assert under_lock.index(DATABASES_SQL) < first_change
    third = passes(double)[2]
    assert OWNED_SQL in third and SERVER_POWER_SQL in third[third.index(OWNED_SQL) :], "every check ran"


def test_the_databases_are_looked_at_again_after_another_run_made_the_clone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another run's CREATE USER in sales lands first (15023): the second pass under the lock looks
    at the databases again, and so sees the clone's user there (its schemas are counted, its
    roles compared) rather than create it a second time."""
    double = sales_server_with_a_race(monkeypatch)
    set_secret(*rotation("app", master=True))
    first, second = passes(double)
    assert looks(first) == looks(second) == MAPPED_SALES
    assert OWNED_SQL not in first and second.count(OWNED_SQL) == 2, "in appdb and in sales"
    assert SALES[0] not in second, "the clone's user in sales is adopted, not made again"
    assert double.accepts("app_clone", NEW_PASSWORD)


def test_the_lock_and_a_change_make_the_databases_be_looked_at_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within a pass the look is kept; a change (which alters the users) forgets it, and so does
    taking the lock (what a concurrent run made meanwhile is looked at)."""
    double = app_server()
    rotator, login = session(double, monkeypatch, "admin", MASTER)
    with login as conn:
        assert rotator.admin_power(conn, "app") == []
        rotator.clone_user(conn, "app", "app_clone", NEW_PASSWORD)
        assert double.statements.count(DATABASES_SQL) == 1, "the change used the look of the check"
        double.admin("ALTER ROLE [db_owner] ADD MEMBER [app_clone]", database="appdb")
        assert rotator.clone_mismatch(conn, "app", "app_clone") == [
            "'app_clone' holds what 'app' does not: role db_owner in database appdb"
        ], "the change forgot the look that found no user of the clone"
        assert double.statements.count(DATABASES_SQL) == 2

        double.admin("CREATE DATABASE [hr]")
        double.admin(
            "CREATE USER [app_clone] FOR LOGIN [app_clone]",
            "ALTER ROLE [db_ddladmin] ADD MEMBER [app_clone]",
            database="hr",
        )
        assert "in database hr" not in " ".join(rotator.clone_mismatch(conn, "app", "app_clone"))
        assert double.statements.count(DATABASES_SQL) == 2, "kept within the pass"
        with rotator.exclusive(conn, "app_clone"):
            found = rotator.clone_mismatch(conn, "app", "app_clone")
        assert "role db_ddladmin in database hr" in found[0], "the lock forgot the look"
        assert double.statements.count(DATABASES_SQL) == 3


# -- what the catalog holds that the rotator does not copy ---------------------------------------------------
@pytest.mark.parametrize(
    ("grant", "database", "named"),
    [
        ("GRANT CONNECT ON ENDPOINT::[mirroring] TO [app]", "master", "CONNECT on a ENDPOINT"),
        ("GRANT CONTROL ON CERTIFICATE::[signing] TO [app]", "appdb", "CONTROL on a CERTIFICATE"),
        ("GRANT EXECUTE ON ASSEMBLY::[clr] TO [app]", "appdb", "EXECUTE on a ASSEMBLY"),
        ("GRANT CONTROL ON CERTIFICATE::[signing] TO [app]", "sales", "CONTROL on a CERTIFICATE"),
    ],
)
def test_a_permission_of_a_class_the_rotator_does_not_copy_stops_before_any_change(
    grant: str, database: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in sales, the refusal brings the session back to appdb to release the lock there."""
    double = sales_server().admin(grant, database=database).install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError) as caught:
        set_secret(*rotation("app", master=True))
    assert f"'app' holds {named}, which the rotator does not copy" in str(caught.value)
    assert double.changes() == [] and double.statements[-1] == UNLOCK_SQL
    assert double.executed[-1].database == "appdb"


def test_an_unexpected_permission_name_is_refused_before_any_change(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server()
    double.server.permissions.append(Grant("app", "G", "CONNECT SQL TO [x]; --"))
    double.install(monkeypatch)
    with pytest.raises(errors.PasswordChangeError, match="Unexpected permission name"):
        set_secret(*rotation("app", master=True))
    assert double.changes() == []


def test_the_master_may_only_set_the_partner_of_the_current_user(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server().install(monkeypatch)
    with pytest.raises(errors.TargetMismatchError, match="partner"):
        set_secret(*rotation("app", master=True, username="admin", password=NEW_PASSWORD))
    assert double.connects == []


def test_connections_cursors_and_sockets_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    double = app_server().install(monkeypatch)
    set_secret(*rotation("app", master=True))
    assert double.closed_connections == double.closed_sockets == 2, "AWSCURRENT's own, then the master's"
    queries = len(double.executed) - len(double.changes())
    assert double.closed_cursors == queries + 1, "one cursor per query, one for all the changes"


# -- testSecret ------------------------------------------------------------------------------------------
def test_probe_checks_the_session_login_as_sql_server_compares_names(monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("App", NEW_PASSWORD, database="appdb").install(monkeypatch)
    rotator, _ = rotation("aPP ", password=NEW_PASSWORD)
    rotator.test_pending(context(rotator, Step.TEST))
    assert double.statements == [PROBE_SQL] and double.executed[0].params is NO_PARAMS


@pytest.mark.parametrize("row", [("someone", 2), ("App", 3), (None, 2)])
def test_probe_refuses_another_login_or_answer(row: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    double = server().sql_login("App", NEW_PASSWORD, database="appdb")
    double.rows = lambda sql, binds: [row] if sql == PROBE_SQL else None
    double.install(monkeypatch)
    rotator, _ = rotation("aPP ", password=NEW_PASSWORD)
    with pytest.raises(errors.SecretTestError, match="did not run as 'aPP '"):
        rotator.test_pending(context(rotator, Step.TEST))


# -- `rotators check` ---------------------------------------------------------------------------------
def session(double: SqlServerDouble, monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> Any:
    double.install(monkeypatch)
    rotator, _ = rotation("app")
    secret = rotator.parse(json.dumps({**LOGIN, "username": user, "password": password}), where="x")
    return rotator, rotator.connect(secret, user, password)


@pytest.mark.parametrize(
    ("in_server", "in_database", "problem"),
    [
        ("ALTER SERVER ROLE [sysadmin] ADD MEMBER [ops]", "", None),
        (
            "ALTER SERVER ROLE [securityadmin] ADD MEMBER [ops]",
            "ALTER ROLE [db_owner] ADD MEMBER [ops]",
            None,
        ),
        ("GRANT ALTER ANY LOGIN TO [ops]", "", "the master user lacks ALTER ANY ROLE, ALTER ANY USER"),
        (
            "GRANT ALTER ANY LOGIN TO [ops]",
            "ALTER ROLE [db_accessadmin] ADD MEMBER [ops]",
            "the master user lacks ALTER ANY ROLE",
        ),
        ("", "ALTER ROLE [db_owner] ADD MEMBER [ops]", "the master user lacks ALTER ANY LOGIN"),
    ],
)
def test_check_of_a_master(
    in_server: str, in_database: str, problem: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    double = server().sql_login("app", OLD, database="appdb").sql_login("ops", "Ops-pass-5", database="appdb")
    double.admin(*[in_server] if in_server else [])
    double.admin(*[in_database] if in_database else [], database="appdb")
    rotator, login = session(double, monkeypatch, "ops", "Ops-pass-5")
    app = rotator.parse(json.dumps({**LOGIN, "username": "a", "password": "p"}), where="x")
    with login as conn:
        assert rotator.change_privileges(conn, "app", as_master=True) == problem
        assert (
            rotator.change_privileges(conn, "nobody", as_master=True)
            == "SQL Server has no SQL login 'nobody'"
        )
        assert rotator.change_privileges(conn, "app", as_master=False) is None
        assert (
            rotator.transport(conn, app)
            == "TLS (sslmode=verify-full, certificate verified, SQL Server 16.0.4135.4)"
        )
    assert MY_PERMISSIONS_SQL in double.statements


def test_check_of_a_master_looks_in_every_database_where_the_login_has_a_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ops may change users in appdb (the secret's) but not in sales, where app has a user too, and
    cannot open hr: `rotators check` says both."""
    double = server().sql_login("app", OLD, database="appdb").sql_login("ops", "Ops-pass-5", database="appdb")
    double.admin("GRANT ALTER ANY LOGIN TO [ops]", "CREATE DATABASE [sales]", "CREATE DATABASE [hr]")
    double.admin("ALTER ROLE [db_owner] ADD MEMBER [ops]", database="appdb")
    double.admin("CREATE USER [app] FOR LOGIN [app]", "CREATE USER [ops] FOR LOGIN [ops]", database="sales")
    double.admin("ALTER ROLE [db_accessadmin] ADD MEMBER [ops]", database="sales")
    rotator, login = session(double, monkeypatch, "ops", "Ops-pass-5")
    with login as conn:
        assert rotator.change_privileges(conn, "app", as_master=True) == (
            "the master user lacks ALTER ANY ROLE in database sales; the master user cannot open database hr"
        )
        double.admin("ALTER ROLE [db_securityadmin] ADD MEMBER [ops]", database="sales")
        double.admin("CREATE USER [ops] FOR LOGIN [ops]", database="hr")
        conn.known.clear()
        assert rotator.change_privileges(conn, "app", as_master=True) is None
        assert conn.conn.database == "appdb", "back in the secret's database"


def test_the_pending_secret_is_valid_json_with_the_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    app_server().install(monkeypatch)
    rotator, client = rotation("app", master=True)
    set_secret(rotator, client)
    pending = client.values[("demo", AWSPENDING)]
    assert json.loads(json.dumps(pending))["username"] == "app_clone"
    assert pending["password"] == NEW_PASSWORD
    assert cast(str, pending["masterarn"]) == "m"
