"""SQLServerRotator through the conformance kit (rotators.testing.conformance), both strategies,
every scenario, against the stateful double (tests/sqlserver_double.py) in place of SQL Server:
crashes after each hook, retries, failing hooks, and that exactly the labelled passwords log in
afterwards, as the double's server decides who logs in. The kit runs the package's logger at
DEBUG and fails if any secret value reached a log line, the output or an error message."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from rotators.database import DatabaseSecret
from rotators.engines.sqlserver import SQLServerRotator
from rotators.log import logger
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.sqlserver_double import SqlServerDouble, fold, quote

LOGIN = {"engine": "sqlserver", "host": "db.example", "port": 1433, "dbname": "appdb"}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("strategy", ["single_user", "alternating"])
def test_sqlserver_conforms(
    rotator_conformance: RotatorConformance,
    rotators_local_sm: LocalSecretsManager,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    scenario: str,
) -> None:
    """Single user: after a rotation only AWSCURRENT logs in. Alternating users: AWSPREVIOUS (the
    other login) keeps logging in until the next rotation."""
    double = SqlServerDouble().admin(
        "CREATE DATABASE [appdb]", "CREATE DATABASE [sales]", "CREATE SERVER ROLE [monitoring]"
    )
    double.admin("CREATE ROLE [reporting]", database="appdb")
    double.admin("CREATE ROLE [clerks]", database="sales")
    master = "Master-" + uuid.uuid4().hex
    double.sql_login("admin", master).admin("ALTER SERVER ROLE [sysadmin] ADD MEMBER [admin]")
    double.install(monkeypatch)
    extra: dict[str, Any] = {}
    if strategy == "alternating":
        master_secret = {**LOGIN, "username": "admin", "password": master}
        extra["masterarn"] = rotators_local_sm.create_secret(f"master-{uuid.uuid4().hex[:8]}", master_secret)
    debug: list[bool] = []

    def new_secret() -> dict[str, Any]:
        """A fresh login with a server role and permission, and users in appdb and in sales with
        roles, grants and DENYs to copy (the clone's in sales are made after USE [sales])."""
        name, password = f"app_{uuid.uuid4().hex[:8]}", "Init-" + uuid.uuid4().hex
        double.sql_login(name, password, database="appdb", policy=True)
        double.admin(f"ALTER SERVER ROLE [monitoring] ADD MEMBER {quote(name)}")
        double.admin(f"GRANT VIEW SERVER STATE TO {quote(name)}")
        double.admin(
            f"ALTER ROLE [reporting] ADD MEMBER {quote(name)}",
            f"GRANT SELECT ON OBJECT::[sales].[orders] TO {quote(name)} WITH GRANT OPTION",
            f"DENY DELETE ON OBJECT::[sales].[orders] TO {quote(name)}",
            database="appdb",
        )
        double.admin(
            f"CREATE USER {quote(name)} FOR LOGIN {quote(name)} WITH DEFAULT_SCHEMA = [ledger]",
            f"ALTER ROLE [clerks] ADD MEMBER {quote(name)}",
            f"GRANT INSERT ON OBJECT::[ledger].[entries] TO {quote(name)}",
            f"DENY UPDATE ON OBJECT::[ledger].[entries] TO {quote(name)}",
            database="sales",
        )
        return {**LOGIN, "username": name, "password": password, **extra}

    def accepts(secret: DatabaseSecret) -> bool:
        debug.append(logging.getLogger(logger.name).isEnabledFor(logging.DEBUG))
        return double.accepts(secret.username, secret.password)

    rotator_conformance.check(
        SQLServerRotator,
        new_secret=new_secret,
        accepts=accepts,
        keeps_previous=strategy == "alternating",
        scenarios=[scenario],
    )
    assert debug and all(debug), "the kit checked the logs at DEBUG"
    assert double.executed, "the rotations went through the double"
    if strategy == "alternating":
        assert any(s.startswith("CREATE LOGIN [app_") for s in double.statements)
        clones = [p.name for p in double.server.principals.values() if p.name.endswith("_clone")]
        assert clones
        for clone in clones:  # every clone holds what its source holds, in the server and both databases
            source = clone.removesuffix("_clone")
            assert sorted(r for r, m in double.server.members if m == source) == sorted(
                r for r, m in double.server.members if m == clone
            )
            for database in (double.server.databases["appdb"], double.server.databases["sales"]):
                user = database.user_of(clone)
                assert (
                    user is not None
                    and user.default_schema == database.principals[fold(source)].default_schema
                )
                assert {
                    (g.state, g.permission, g.name) for g in database.permissions if g.grantee == source
                } == {(g.state, g.permission, g.name) for g in database.permissions if g.grantee == user.name}
                assert {r for r, m in database.members if m == source} == {
                    r for r, m in database.members if m == user.name
                }
