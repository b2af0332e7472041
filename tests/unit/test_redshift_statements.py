"""The Redshift engine without a server: password rules, TLS options, error mapping, and the exact
statements setSecret sends, recorded at the driver boundary. The Redshift-only statements (RBAC
roles from SVV_USER_GRANTS, GRANT ROLE) are checked here, since PostgreSQL cannot run them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from redshift_connector.error import InterfaceError, ProgrammingError

from rotators import errors
from rotators.database import DatabaseSecret, LoginRefusedError
from rotators.engines import redshift
from rotators.engines.redshift import RedshiftRotator
from rotators.engines.redshift_sql import (
    ADMIN_PRIVILEGE_ROLES,
    DATABASE_PRIVILEGES,
    DIRECT_ROLES,
    GROUPS,
    ROLE_GRANTS,
    ROLES,
    SCHEMA_PRIVILEGES,
    TABLE_PRIVILEGES,
    USER_FLAGS,
    password_literal,
    password_problems,
)
from rotators.secrets import AWSCURRENT
from tests.offline import FakeSecretsManager, create_then_set, make_pending, redacted, store

NEW = "New-Pass-2Xy!"


def md5(stored_name: str, password: str = NEW) -> str:
    """Redshift's MD5 password string, quoted, as its docs define it: md5(password + user name)."""
    return "'md5" + hashlib.md5((password + stored_name).encode()).hexdigest() + "'"


REDSHIFT_VERSION = (
    "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 "
    "(Red Hat 3.4.2-6.fc3), Redshift 1.0.77467"
)


# -- Redshift's password rules ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("Abcdefg1", []),
        ("A" + "b" * 62 + "1", []),
        ("Abc1!#$%^&*()-_=+[]{}<>?,.;:~`|", []),
        ("Abcdef1", ["8 to 64 characters"]),
        ("A" + "b" * 63 + "1", ["8 to 64 characters"]),
        ("abcdefg1", ["an upper case letter"]),
        ("ABCDEFG1", ["a lower case letter"]),
        ("Abcdefgh", ["a digit"]),
        ("Abcdef1'", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ('Abcdef1"', ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcdef1\\", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcdef1/", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcdef1@", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcd ef1", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcdéf1x", ["only printable ASCII, without ' \" \\ / @ or space"]),
        ("Abcdef1\t", ["only printable ASCII, without ' \" \\ / @ or space"]),
    ],
)
def test_password_rules(password: str, problems: list[str]) -> None:
    assert password_problems(password) == problems


def test_a_literal_is_made_only_of_a_password_that_passed() -> None:
    assert password_literal("Abcdefg1") == "'Abcdefg1'"
    with pytest.raises(errors.SecretFormatError, match="Redshift's rules") as caught:
        password_literal("Abc'; DROP USER x; --1")
    assert "DROP" not in str(caught.value), "the password is never repeated"


def test_the_default_policy_asks_for_what_redshift_requires() -> None:
    policy = RedshiftRotator().password_policy()
    assert policy.length == 32
    assert policy.require_each_included_type
    assert not (policy.exclude_uppercase or policy.exclude_lowercase or policy.exclude_numbers)
    assert set("'\"\\/@ ") <= set(policy.exclude_characters)


def test_excluded_characters_from_the_environment_keep_the_forbidden_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXCLUDE_CHARACTERS", "%&")
    excluded = RedshiftRotator().password_policy().exclude_characters
    assert excluded.startswith("%&") and set("'\"\\/@ ") <= set(excluded)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PASSWORD_LENGTH", "7", "between 8 and"),
        ("PASSWORD_LENGTH", "65", "between 8 and 64"),
        ("EXCLUDE_UPPERCASE", "true", "EXCLUDE_UPPERCASE"),
        ("EXCLUDE_LOWERCASE", "true", "EXCLUDE_LOWERCASE"),
        ("EXCLUDE_NUMBERS", "true", "EXCLUDE_NUMBERS"),
        ("REQUIRE_EACH_INCLUDED_TYPE", "false", "must stay true"),
    ],
)
def test_a_policy_that_could_make_a_refused_password_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(errors.ConfigurationError, match=message):
        RedshiftRotator().password_policy()


# -- a recording double at the driver boundary --------------------------------------------------------
def quote_ident(name: str) -> str:
    """PostgreSQL's (and Redshift's) quote_ident, as the server would answer."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


@dataclass
class FakeRedshift:
    """Answers the engine's catalog queries as Redshift would; records what it was sent. Every
    login opens a session on this one server (`logins`), as the user it names."""

    version: str = REDSHIFT_VERSION
    session_user: str = "app"
    users: set[str] = field(default_factory=lambda: {"app", "admin"})
    superusers: set[str] = field(default_factory=lambda: {"admin"})
    createdb: set[str] = field(default_factory=set)
    passwords: dict[str, str] = field(default_factory=dict)  # logins that are refused otherwise
    groups: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    role_grants: list[tuple[str, str]] = field(default_factory=list)  # (role, role granted to it)
    admin_privilege_roles: list[str] = field(default_factory=list)
    # (holder, other) -> rows, as has_*_privilege(holder) AND NOT has_*_privilege(other) answers
    privileges: dict[str, dict[tuple[str, str], list[tuple[str, str]]]] = field(default_factory=dict)
    case_sensitive: bool = False  # enable_case_sensitive_identifier
    fail_on: str | None = None
    autocommit: bool = False
    closed: bool = False
    features: Any = None  # what the engine read of this session (GuardedConnection.features)
    logins: list[str] = field(default_factory=list)
    sent: list[tuple[str, tuple[Any, ...] | None]] = field(default_factory=list)

    def login(self, **kwargs: Any) -> FakeRedshift:
        user, password = kwargs["user"], kwargs["password"]
        if user in self.passwords and self.passwords[user] != password:
            raise ProgrammingError(
                {"S": "FATAL", "C": "28P01", "M": f'password authentication failed for user "{user}"'}
            )
        self.logins.append(user)
        self.sent.append((f"-- login as {user}", None))
        self.session_user, self.closed, self.features = user, False, None
        return self

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True

    def answer(self, query: str, args: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
        self.sent.append((query, args))
        if self.fail_on and query.startswith(self.fail_on):
            raise ProgrammingError({"S": "ERROR", "C": "42501", "M": f"permission denied; {NEW} refused"})
        values = args or ()
        if re.fullmatch(r"SELECT quote_ident\(%s\)(, quote_ident\(%s\))*", query):
            return [tuple(quote_ident(str(v)) for v in values)]
        if query == USER_FLAGS:
            user = values[0]
            return [(user in self.superusers, user in self.createdb)] if user in self.users else []
        if query == GROUPS:
            return [(quote_ident(g),) for g in self.groups.get(values[0], [])]
        if query == ROLES:
            return [(quote_ident(r), admin) for r, admin in self.roles.get(values[0], [])]
        if query == DIRECT_ROLES:
            return [(r,) for r, _ in self.roles.get(values[0], [])]
        if query == ROLE_GRANTS:
            return list(self.role_grants)
        if query == ADMIN_PRIVILEGE_ROLES:
            return [(r,) for r in self.admin_privilege_roles]
        if query == "SELECT version()":
            return [(self.version,)]
        if query == "SELECT current_setting('enable_case_sensitive_identifier')":
            return [("on" if self.case_sensitive else "off",)]
        if query == "SELECT session_user, 1 + 1":
            return [(self.session_user, 2)]
        for name, text in (
            ("table", TABLE_PRIVILEGES),
            ("schema", SCHEMA_PRIVILEGES),
            ("db", DATABASE_PRIVILEGES),
        ):
            if query == text:
                holder, other = values
                return list(self.privileges.get(name, {}).get((holder, other), []))
        return []


@dataclass
class FakeCursor:
    server: FakeRedshift
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def execute(self, query: str, args: tuple[Any, ...] | None = None) -> None:
        self.rows = self.server.answer(query, args)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def close(self) -> None:
        pass


OLD, MASTER = "Old-Pass-1", "Master-Pass-3"
SOURCE = ("app", "app_clone")  # has_*_privilege(source) AND NOT has_*_privilege(clone)


def rotator_for(
    user: str, master: bool, new: str = NEW, master_user: str = "admin", **app: Any
) -> tuple[RedshiftRotator, FakeSecretsManager]:
    login = {"engine": "redshift", "host": "wg.123.eu-west-1.redshift-serverless.amazonaws.com"}
    current = {**login, "username": user, "password": OLD, **app}
    values = {("demo", AWSCURRENT): {**current, "masterarn": "m"} if master else current}
    values[("m", AWSCURRENT)] = {**login, "username": master_user, "password": MASTER}
    client = FakeSecretsManager(values, new)
    return RedshiftRotator(store(client)), client


def set_secret(
    server: FakeRedshift,
    monkeypatch: pytest.MonkeyPatch,
    user: str = "app",
    master: bool = False,
    **options: Any,
) -> list[str]:
    """createSecret then setSecret through the real engine; the SQL sent (with any arguments)."""
    monkeypatch.setattr(redshift, "GuardedConnection", server.login)
    create_then_set(*rotator_for(user, master, **options))
    assert server.autocommit and server.closed
    return [query if args is None else f"{query} {list(args)}" for query, args in server.sent]


def writes(sent: list[str]) -> list[str]:
    return [s for s in sent if not s.startswith(("SELECT", "\nSELECT", "-- login"))]


def test_single_user_changes_its_own_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_secret(FakeRedshift(), monkeypatch) == [
        "-- login as app",
        "SELECT quote_ident(%s) ['app']",
        "SELECT version()",
        "SELECT current_setting('enable_case_sensitive_identifier')",
        f"ALTER USER app PASSWORD {md5('app')}",
    ]


@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("clone_exists", [False, True])
def test_redshift_is_sent_the_md5_hash_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch, master: bool, clone_exists: bool
) -> None:
    """STL_QUERY and any statement log see what is sent: the MD5 form, not the password."""
    users = {"app", "admin", "app_clone"} if clone_exists else {"app", "admin"}
    sent = set_secret(FakeRedshift(users=users), monkeypatch, master=master)
    assert not any(NEW in statement for statement in sent)
    target = "app_clone" if master else "app"
    assert sum(f"PASSWORD {md5(target)}" in statement for statement in sent) == 1


@pytest.mark.parametrize(
    ("name", "case_sensitive", "stored"),
    [("BI_Team", False, "bi_team"), ("BI_Team", True, "BI_Team"), ("bi_team", False, "bi_team")],
)
def test_the_md5_is_salted_with_the_name_as_redshift_stores_it(
    name: str, case_sensitive: bool, stored: str
) -> None:
    """Redshift folds names, quoted ones too, to lower case unless case-sensitive identifiers are on."""
    server = FakeRedshift(case_sensitive=case_sensitive)
    RedshiftRotator().set_password(cast(Any, server), name, NEW)
    assert server.sent[-1][0].endswith(f"PASSWORD {md5(stored)}")


def test_postgresql_is_sent_a_scram_verifier_of_the_password() -> None:
    """The tests run this engine on PostgreSQL, which stores SCRAM: it gets a verifier, never the
    password (its log is checked in tests/integration/test_statement_logs.py)."""
    server = FakeRedshift(version="PostgreSQL 15.18 (Debian 15.18-0+deb12u1)")
    RedshiftRotator().set_password(cast(Any, server), "app", NEW)
    statement = server.sent[-1][0]
    assert NEW not in statement
    match = re.fullmatch(r"ALTER USER app PASSWORD 'SCRAM-SHA-256\$4096:([^$]+)\$([^:]+):(.+)'", statement)
    assert match is not None
    salt, stored_key, server_key = (base64.b64decode(part) for part in match.groups())
    client_key = hmac.new(hashlib.pbkdf2_hmac("sha256", NEW.encode(), salt, 4096), b"Client Key", "sha256")
    assert stored_key == hashlib.sha256(client_key.digest()).digest(), "RFC 5802's StoredKey of NEW"
    assert len(server_key) == 32


def test_the_master_creates_the_clone_with_groups_roles_and_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        groups={"app": ["analysts", "BI Team"]},
        roles={"app": [("reader", False), ("Ops Admin", True)]},
        privileges={
            "table": {
                SOURCE: [("sales.orders", "INSERT"), ("sales.orders", "SELECT"), ('"Sales"."Q1"', "SELECT")]
            },
            "schema": {SOURCE: [("sales", "USAGE")]},
            "db": {SOURCE: [("dev", "TEMP")]},
        },
        createdb={"app"},
    )
    assert writes(set_secret(server, monkeypatch, master=True)) == [
        f"CREATE USER app_clone PASSWORD {md5('app_clone')}",
        "ALTER USER app_clone CREATEDB",
        "ALTER GROUP analysts ADD USER app_clone",
        'ALTER GROUP "BI Team" ADD USER app_clone',
        "GRANT ROLE reader TO app_clone",
        'GRANT ROLE "Ops Admin" TO app_clone WITH ADMIN OPTION',
        "GRANT INSERT, SELECT ON TABLE sales.orders TO app_clone",
        'GRANT SELECT ON TABLE "Sales"."Q1" TO app_clone',
        "GRANT USAGE ON SCHEMA sales TO app_clone",
        "GRANT TEMP ON DATABASE dev TO app_clone",
    ]
    assert (USER_FLAGS, ("app_clone",)) in server.sent
    assert server.logins == ["app", "admin"], "AWSCURRENT proves itself, then the master acts"


def test_an_existing_clone_gets_its_password_and_only_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        users={"app", "app_clone", "admin"},
        groups={"app": ["analysts", "ops"], "app_clone": ["analysts"]},
        roles={"app": [("reader", False)], "app_clone": [("reader", False)]},
    )
    assert writes(set_secret(server, monkeypatch, master=True)) == [
        "ALTER GROUP ops ADD USER app_clone",
        f"ALTER USER app_clone PASSWORD {md5('app_clone')}",
    ], "the password changes last, so a failure leaves the clone's old one working"


def test_on_postgresql_the_redshift_only_role_statements_are_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeRedshift(
        version="PostgreSQL 15.18 (Debian 15.18-0+deb12u1)", roles={"app": [("reader", False)]}
    )
    sent = set_secret(server, monkeypatch, master=True)
    assert not any(ROLES in s or "GRANT ROLE" in s for s in sent)


def test_rotating_back_sets_the_originals_password(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(users={"app", "app_clone", "admin"})
    assert writes(set_secret(server, monkeypatch, user="app_clone", master=True)) == [
        f"ALTER USER app PASSWORD {md5('app')}"
    ]
    assert server.logins == ["app_clone", "admin"]


def test_names_are_quoted_by_the_server() -> None:
    server = FakeRedshift()
    RedshiftRotator().set_password(cast(Any, server), 'O"Neil BI', NEW)
    assert server.sent[-1] == ('ALTER USER "O""Neil BI" PASSWORD ' + md5('o"neil bi'), None)


def test_refusals_are_typed_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.PasswordChangeError, match="42501") as caught:
        set_secret(FakeRedshift(fail_on="ALTER USER"), monkeypatch)
    redacted(caught.value, NEW)


def test_a_generated_password_redshift_would_refuse_is_never_staged() -> None:
    rotator, _ = rotator_for("app", master=False, new="alllowercase-but-1")
    with pytest.raises(errors.ConfigurationError, match="an upper case letter") as caught:
        make_pending(rotator)
    assert "alllowercase" not in str(caught.value)


def test_probe() -> None:
    RedshiftRotator().probe(cast(Any, FakeRedshift(session_user="app")), "app")
    with pytest.raises(errors.SecretTestError, match="'app'"):
        RedshiftRotator().probe(cast(Any, FakeRedshift(session_user="admin")), "app")


# -- connecting --------------------------------------------------------------------------------------
def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "redshift", "host": "cluster", "username": "app", "password": "Old-Pass-1", **changes}
    return RedshiftRotator().parse(json.dumps(value), where="the test secret")


def connect_kwargs(monkeypatch: pytest.MonkeyPatch, value: DatabaseSecret) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def connect(**kwargs: Any) -> FakeRedshift:
        seen.update(kwargs, ssl_cert_file=os.environ.get("SSL_CERT_FILE"))
        return FakeRedshift()

    monkeypatch.setattr(redshift, "GuardedConnection", connect)
    with RedshiftRotator().connect(value, "app", "Old-Pass-1"):
        pass
    return seen


def test_defaults_port_dbname_and_verified_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    seen = connect_kwargs(monkeypatch, secret())
    assert (seen["port"], seen["database"], seen["ssl"], seen["sslmode"]) == (
        5439,
        "dev",
        True,
        "verify-full",
    )
    assert seen["ssl_cert_file"] is None, "the system store and the driver's Redshift CAs"


def test_tls_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert connect_kwargs(monkeypatch, secret(sslmode="verify-ca"))["sslmode"] == "verify-ca"
    assert connect_kwargs(monkeypatch, secret(sslmode="require"))["sslmode"] == "verify-ca", (
        "the driver always verifies"
    )
    assert connect_kwargs(monkeypatch, secret(ssl=False))["ssl"] is False


def test_a_ca_bundle_is_trusted_while_connecting_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    assert connect_kwargs(monkeypatch, secret(sslrootcert=str(bundle)))["ssl_cert_file"] == str(bundle)
    assert os.environ["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt", "restored"
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        connect_kwargs(monkeypatch, secret(sslrootcert=str(tmp_path / "missing.pem")))


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (
            ProgrammingError(
                {"S": "FATAL", "C": "28P01", "M": 'password authentication failed for user "app"'}
            ),
            LoginRefusedError,
            "refused the login",
        ),
        (
            InterfaceError("communication error", "Old-Pass-1 timed out"),
            errors.DatabaseUnavailableError,
            "Cannot connect to Redshift at cluster:5439",
        ),
        (
            ProgrammingError({"S": "FATAL", "C": "3D000", "M": 'database "dev" does not exist'}),
            errors.DatabaseUnavailableError,
            "does not exist",
        ),
    ],
)
def test_login_failures_are_typed_and_redacted(
    monkeypatch: pytest.MonkeyPatch, error: Exception, raised: type[Exception], message: str
) -> None:
    def connect(**kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(redshift, "GuardedConnection", connect)
    with (
        pytest.raises(raised, match=message) as caught,
        RedshiftRotator().connect(secret(), "app", "Old-Pass-1"),
    ):
        pass
    assert "Old-Pass-1" not in str(caught.value)


# -- the master's safety rules (issue 11), at the driver boundary ---------------------------------------
def refused(
    server: FakeRedshift, monkeypatch: pytest.MonkeyPatch, error: type[Exception], match: str, **options: Any
) -> str:
    """setSecret is refused with `error`, and nothing at all was written."""
    with pytest.raises(error, match=match) as caught:
        set_secret(server, monkeypatch, **options)
    assert writes([query for query, _ in server.sent]) == [], "nothing changed"
    assert MASTER not in str(caught.value) and OLD not in str(caught.value) and NEW not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("user", ["admin_clone", "ADMIN_clone", "admin", "Admin"])
def test_the_masters_own_user_is_never_a_target_in_any_case(
    monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    """`admin_clone`'s partner is the master; `admin`'s clone would be the master's twin. Redshift
    folds names to lower case, so `ADMIN` is `admin`. No login happens at all."""
    server = FakeRedshift(users={"app", "admin", "admin_clone"})
    refused(server, monkeypatch, errors.TargetMismatchError, "master user", user=user, master=True)
    assert server.logins == []


def test_a_master_named_in_mixed_case_is_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(users={"app", "admin"})
    refused(
        server,
        monkeypatch,
        errors.TargetMismatchError,
        "master user",
        user="admin_clone",
        master=True,
        master_user="Admin",
    )


def test_an_awscurrent_that_does_not_log_in_stops_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    """The confused-deputy guard: AWSCURRENT (then AWSPENDING) is tried; the master never logs in."""
    server = FakeRedshift(
        users={"app", "admin", "app_clone"},
        passwords={"app": "Someone-Elses-1", "app_clone": "Someone-Elses-2"},
    )
    refused(server, monkeypatch, errors.LoginError, "does not log in as 'app'", master=True)
    assert "admin" not in server.logins


def test_an_unrelated_victim_clone_does_not_get_the_victims_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker owns `victim_clone`: it logs in, but lacks what `victim` holds."""
    server = FakeRedshift(
        users={"victim", "victim_clone", "admin"},
        groups={"victim": ["payroll"]},
        roles={"victim": [("hr reader", False)]},
        privileges={"table": {("victim", "victim_clone"): [("hr.salaries", "SELECT")]}},
    )
    message = refused(
        server,
        monkeypatch,
        errors.PrivilegeError,
        "lacks what 'victim' holds",
        user="victim_clone",
        master=True,
    )
    assert (
        "group payroll" in message
        and 'role "hr reader"' in message
        and "SELECT ON TABLE hr.salaries" in message
    )
    assert server.logins == ["victim_clone", "admin"]


def test_a_clone_that_lacks_an_attribute_or_admin_option_of_the_original_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeRedshift(
        users={"victim", "victim_clone", "admin"},
        createdb={"victim"},
        roles={"victim": [("etl", True)], "victim_clone": [("etl", False)]},
    )
    message = refused(server, monkeypatch, errors.PrivilegeError, "lacks", user="victim_clone", master=True)
    assert "CREATEDB" in message and "role etl WITH ADMIN OPTION" in message


@pytest.mark.parametrize(
    ("clone", "named"),
    [
        ({"superusers": {"admin", "app_clone"}}, "SUPERUSER"),
        ({"createdb": {"app_clone"}}, "CREATEDB"),
        ({"groups": {"app_clone": ["ops"]}}, "group ops"),
        ({"roles": {"app_clone": [("sys:secadmin", False)]}}, 'role "sys:secadmin"'),
        ({"roles": {"app": [("etl", False)], "app_clone": [("etl", True)]}}, "role etl WITH ADMIN OPTION"),
        (
            {"privileges": {"schema": {("app_clone", "app"): [("finance", "CREATE")]}}},
            "CREATE ON SCHEMA finance",
        ),
        ({"privileges": {"db": {("app_clone", "app"): [("dev", "CREATE")]}}}, "CREATE ON DATABASE dev"),
    ],
)
def test_a_pre_existing_clone_with_more_than_the_original_is_not_taken_over(
    monkeypatch: pytest.MonkeyPatch, clone: dict[str, Any], named: str
) -> None:
    server = FakeRedshift(users={"app", "app_clone", "admin"}, **clone)
    message = refused(
        server, monkeypatch, errors.PrivilegeError, "'app_clone' holds what 'app' does not", master=True
    )
    assert named in message


def test_a_long_list_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = [(f"s.t{n:02}", "SELECT") for n in range(20)]
    server = FakeRedshift(
        users={"app", "app_clone", "admin"}, privileges={"table": {("app_clone", "app"): tables}}
    )
    message = refused(server, monkeypatch, errors.PrivilegeError, "and 12 more", master=True)
    assert "s.t07" in message and "s.t08" not in message


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"superusers": {"admin", "app"}}, "'app' is a superuser (CREATEUSER)"),
        ({"roles": {"app": [("sys:dba", False)]}}, "administrative role 'sys:dba'"),
        ({"roles": {"app": [("ops", False)]}, "admin_privilege_roles": ["ops"]}, "role 'ops'"),
        (
            {
                "roles": {"app": [("team", False)]},
                "role_grants": [("team", "leads"), ("leads", "sys:secadmin")],
            },
            "role 'sys:secadmin'",
        ),
    ],
)
def test_an_administrative_source_is_refused_unless_the_secret_opts_in(
    monkeypatch: pytest.MonkeyPatch, source: dict[str, Any], named: str
) -> None:
    """Superuser (Redshift's CREATEUSER), and RBAC roles held directly or through other roles."""
    message = refused(
        FakeRedshift(**source), monkeypatch, errors.PrivilegeError, "allow_privileged_user", master=True
    )
    assert named in message

    opted_in = FakeRedshift(**source)
    assert writes(set_secret(opted_in, monkeypatch, master=True, allow_privileged_user=True))[0] == (
        f"CREATE USER app_clone PASSWORD {md5('app_clone')}"
    )


def test_an_ordinary_rbac_role_is_not_administrative(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        roles={"app": [("reader", False)]},
        role_grants=[("reader", "sys:monitor")],
        admin_privilege_roles=["ops"],
    )
    assert "GRANT ROLE reader TO app_clone" in writes(set_secret(server, monkeypatch, master=True))


def test_the_power_checks_run_on_the_masters_session_before_any_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeRedshift(roles={"app": [("reader", False)]})
    sent = set_secret(server, monkeypatch, master=True)
    master = sent.index("-- login as admin")
    first_write = sent.index(writes(sent)[0])
    checks = [DIRECT_ROLES, ROLE_GRANTS, ADMIN_PRIVILEGE_ROLES]
    assert all(master < min(i for i, s in enumerate(sent) if s.startswith(q)) < first_write for q in checks)


def test_on_postgresql_no_rbac_view_is_read_for_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        version="PostgreSQL 15.18 (Debian 15.18-0+deb12u1)", users={"app", "app_clone", "admin"}
    )
    sent = set_secret(server, monkeypatch, master=True)
    assert not any(q in s for s in sent for q in (ROLES, DIRECT_ROLES, ROLE_GRANTS, ADMIN_PRIVILEGE_ROLES))


def test_each_login_uses_its_own_secrets_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app secret turned TLS off; the master still logs in with verified TLS, its own setting."""
    seen: list[tuple[str, bool, str]] = []
    server = FakeRedshift()

    def login(**kwargs: Any) -> FakeRedshift:
        seen.append((kwargs["user"], kwargs["ssl"], kwargs["sslmode"]))
        return server.login(**kwargs)

    monkeypatch.setattr(redshift, "GuardedConnection", login)
    create_then_set(*rotator_for("app", master=True, ssl=False))
    assert seen == [("app", False, "verify-ca"), ("admin", True, "verify-full")]


def test_a_pending_version_that_lost_awspending_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift()
    monkeypatch.setattr(FakeSecretsManager, "describe_secret", lambda self, **_: {
        "ARN": "arn:demo", "Name": "demo", "VersionIdsToStages": {"v1": ["AWSCURRENT"], "v3": ["AWSPENDING"]}
    })  # fmt: skip
    refused(server, monkeypatch, errors.VersionStageError, "lost AWSPENDING", master=True)
