"""The Redshift engine without a server: password rules, TLS options, error mapping, and the exact
statements setSecret sends, recorded at the driver boundary. The Redshift-only statements (RBAC
roles from SVV_USER_GRANTS, GRANT ROLE) are checked here, since PostgreSQL cannot run them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redshift_connector

from rotators.database import DatabaseSecret, LoginRefusedError
from rotators.engines.redshift import (
    DATABASE_PRIVILEGES,
    GROUPS,
    ROLES,
    SCHEMA_PRIVILEGES,
    TABLE_PRIVILEGES,
    RedshiftRotator,
    password_literal,
    password_problems,
)
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    PasswordChangeError,
    SecretFormatError,
    SecretTestError,
)
from rotators.rotation import RotationContext, RotationEvent, Step
from rotators.secrets import AWSCURRENT, AWSPENDING, SecretMeta, SecretStore

NEW = "New-Pass-2Xy!"
REDSHIFT_VERSION = (
    "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 "
    "(Red Hat 3.4.2-6.fc3), Redshift 1.0.77467"
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROTATORS_SSLMODE", "ROTATORS_CA_BUNDLE", "PASSWORD_LENGTH", "EXCLUDE_CHARACTERS"):
        monkeypatch.delenv(name, raising=False)


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
    with pytest.raises(SecretFormatError, match="Redshift's rules") as caught:
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
    with pytest.raises(ConfigurationError, match=message):
        RedshiftRotator().password_policy()


# -- a recording double at the driver boundary --------------------------------------------------------
def quote_ident(name: str) -> str:
    """PostgreSQL's (and Redshift's) quote_ident, as the server would answer."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


@dataclass
class FakeRedshift:
    """Answers the engine's catalog queries as Redshift would; records what it was sent."""

    version: str = REDSHIFT_VERSION
    session_user: str = "app"
    users: set[str] = field(default_factory=lambda: {"app", "admin"})
    groups: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    privileges: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    fail_on: str | None = None
    autocommit: bool = False
    closed: bool = False
    sent: list[tuple[str, tuple[Any, ...] | None]] = field(default_factory=list)

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True

    def answer(self, query: str, args: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
        self.sent.append((query, args))
        if self.fail_on and query.startswith(self.fail_on):
            raise redshift_connector.ProgrammingError(
                {"S": "ERROR", "C": "42501", "M": f"permission denied; {NEW} refused"}
            )
        values = args or ()
        if re.fullmatch(r"SELECT quote_ident\(%s\)(, quote_ident\(%s\))*", query):
            return [tuple(quote_ident(str(v)) for v in values)]
        if query == "SELECT 1 FROM pg_user WHERE usename = %s":
            return [(1,)] if values[0] in self.users else []
        if query == GROUPS:
            return [(quote_ident(g),) for g in self.groups.get(values[0], [])]
        if query == ROLES:
            return [(quote_ident(r), admin) for r, admin in self.roles.get(values[0], [])]
        if query == "SELECT version()":
            return [(self.version,)]
        if query == "SELECT session_user, 1 + 1":
            return [(self.session_user, 2)]
        for name, text in (
            ("table", TABLE_PRIVILEGES),
            ("schema", SCHEMA_PRIVILEGES),
            ("db", DATABASE_PRIVILEGES),
        ):
            if query == text:
                assert values == ("app", "app_clone"), "the source, then the clone"
                return list(self.privileges.get(name, []))
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


class FakeSecretsManager:
    def __init__(self, values: dict[tuple[str, str], dict[str, Any]], new: str = NEW) -> None:
        self.values, self.new = values, new

    def get_secret_value(self, *, SecretId: str, VersionStage: str, VersionId: str | None = None) -> Any:
        version = VersionId or f"{SecretId}-{VersionStage}"
        return {"SecretString": json.dumps(self.values[(SecretId, VersionStage)]), "VersionId": version}

    def get_random_password(self, **policy: Any) -> Any:
        return {"RandomPassword": self.new}


META = SecretMeta("arn:demo", "demo", True, {"v1": frozenset({AWSCURRENT}), "v2": frozenset({AWSPENDING})})


def rotator_for(user: str, master: bool, new: str = NEW) -> tuple[RedshiftRotator, FakeSecretsManager]:
    login = {"engine": "redshift", "host": "wg.123.eu-west-1.redshift-serverless.amazonaws.com"}
    current = {**login, "username": user, "password": "Old-Pass-1"}
    values = {("demo", AWSCURRENT): {**current, "masterarn": "m"} if master else current}
    values[("m", AWSCURRENT)] = {**login, "username": "admin", "password": "Master-Pass-3"}
    client = FakeSecretsManager(values, new)
    return RedshiftRotator(SecretStore(cast(Any, client))), client


def set_secret(
    server: FakeRedshift, monkeypatch: pytest.MonkeyPatch, user: str = "app", master: bool = False
) -> list[str]:
    """createSecret then setSecret through the real engine; the SQL sent (with any arguments)."""
    monkeypatch.setattr(redshift_connector, "connect", lambda **kwargs: server)
    rotator, client = rotator_for(user, master)
    pending = rotator.make_pending(RotationContext(rotator, RotationEvent("demo", "v2", Step.CREATE), META))
    client.values[("demo", AWSPENDING)] = json.loads(pending.to_json())
    rotator.set_pending(RotationContext(rotator, RotationEvent("demo", "v2", Step.SET), META))
    assert server.autocommit and server.closed
    return [query if args is None else f"{query} {list(args)}" for query, args in server.sent]


def writes(sent: list[str]) -> list[str]:
    return [s for s in sent if not s.startswith("SELECT") and not s.startswith("\nSELECT")]


def test_single_user_changes_its_own_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_secret(FakeRedshift(), monkeypatch) == [
        "SELECT quote_ident(%s) ['app']",
        f"ALTER USER app PASSWORD '{NEW}'",
    ]


def test_the_master_creates_the_clone_with_groups_roles_and_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        groups={"app": ["analysts", "BI Team"]},
        roles={"app": [("reader", False), ("Ops Admin", True)]},
        privileges={
            "table": [("sales.orders", "INSERT"), ("sales.orders", "SELECT"), ('"Sales"."Q1"', "SELECT")],
            "schema": [("sales", "USAGE")],
            "db": [("dev", "TEMP")],
        },
    )
    assert writes(set_secret(server, monkeypatch, master=True)) == [
        f"CREATE USER app_clone PASSWORD '{NEW}'",
        "ALTER GROUP analysts ADD USER app_clone",
        'ALTER GROUP "BI Team" ADD USER app_clone',
        "GRANT ROLE reader TO app_clone",
        'GRANT ROLE "Ops Admin" TO app_clone WITH ADMIN OPTION',
        "GRANT INSERT, SELECT ON TABLE sales.orders TO app_clone",
        'GRANT SELECT ON TABLE "Sales"."Q1" TO app_clone',
        "GRANT USAGE ON SCHEMA sales TO app_clone",
        "GRANT TEMP ON DATABASE dev TO app_clone",
    ]
    assert ("SELECT 1 FROM pg_user WHERE usename = %s", ("app_clone",)) in server.sent


def test_an_existing_clone_gets_its_password_and_only_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeRedshift(
        users={"app", "app_clone", "admin"},
        groups={"app": ["analysts", "ops"], "app_clone": ["analysts"]},
        roles={"app": [("reader", False)], "app_clone": [("reader", False)]},
    )
    assert writes(set_secret(server, monkeypatch, master=True)) == [
        "ALTER GROUP ops ADD USER app_clone",
        f"ALTER USER app_clone PASSWORD '{NEW}'",
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
    assert writes(set_secret(FakeRedshift(), monkeypatch, user="app_clone", master=True)) == [
        f"ALTER USER app PASSWORD '{NEW}'"
    ]


def test_names_are_quoted_by_the_server() -> None:
    server = FakeRedshift()
    RedshiftRotator().set_password(cast(Any, server), 'O"Neil BI', NEW)
    assert server.sent[-1] == (f'ALTER USER "O""Neil BI" PASSWORD \'{NEW}\'', None)


def test_refusals_are_typed_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PasswordChangeError, match="42501") as caught:
        set_secret(FakeRedshift(fail_on="ALTER USER"), monkeypatch)
    assert NEW not in str(caught.value) and "<redacted>" in str(caught.value)


def test_a_generated_password_redshift_would_refuse_is_never_staged() -> None:
    rotator, _ = rotator_for("app", master=False, new="alllowercase-but-1")
    with pytest.raises(ConfigurationError, match="an upper case letter") as caught:
        rotator.make_pending(RotationContext(rotator, RotationEvent("demo", "v2", Step.CREATE), META))
    assert "alllowercase" not in str(caught.value)


def test_probe() -> None:
    RedshiftRotator().probe(cast(Any, FakeRedshift(session_user="app")), "app")
    with pytest.raises(SecretTestError, match="'app'"):
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

    monkeypatch.setattr(redshift_connector, "connect", connect)
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
    with pytest.raises(ConfigurationError, match="does not exist"):
        connect_kwargs(monkeypatch, secret(sslrootcert=str(tmp_path / "missing.pem")))


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (
            redshift_connector.ProgrammingError(
                {"S": "FATAL", "C": "28P01", "M": 'password authentication failed for user "app"'}
            ),
            LoginRefusedError,
            "refused the login",
        ),
        (
            redshift_connector.InterfaceError("communication error", "Old-Pass-1 timed out"),
            DatabaseUnavailableError,
            "Cannot connect to Redshift at cluster:5439",
        ),
        (
            redshift_connector.ProgrammingError(
                {"S": "FATAL", "C": "3D000", "M": 'database "dev" does not exist'}
            ),
            DatabaseUnavailableError,
            "does not exist",
        ),
    ],
)
def test_login_failures_are_typed_and_redacted(
    monkeypatch: pytest.MonkeyPatch, error: Exception, raised: type[Exception], message: str
) -> None:
    def connect(**kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(redshift_connector, "connect", connect)
    with (
        pytest.raises(raised, match=message) as caught,
        RedshiftRotator().connect(secret(), "app", "Old-Pass-1"),
    ):
        pass
    assert "Old-Pass-1" not in str(caught.value)
