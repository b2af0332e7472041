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
from tests.sqlserver_double import SqlServerDouble, quote

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
    double = SqlServerDouble().admin("CREATE DATABASE [appdb]", "CREATE SERVER ROLE [monitoring]")
    double.admin("CREATE ROLE [reporting]", database="appdb")
    master = "Master-" + uuid.uuid4().hex
    double.sql_login("admin", master).admin("ALTER SERVER ROLE [sysadmin] ADD MEMBER [admin]")
    double.install(monkeypatch)
    extra: dict[str, Any] = {}
    if strategy == "alternating":
        master_secret = {**LOGIN, "username": "admin", "password": master}
        extra["masterarn"] = rotators_local_sm.create_secret(f"master-{uuid.uuid4().hex[:8]}", master_secret)
    debug: list[bool] = []

    def new_secret() -> dict[str, Any]:
        """A fresh login with a user, roles, a server permission, a grant and a DENY to copy."""
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
        database = double.server.databases["appdb"]
        for clone in clones:  # every clone holds what its source holds
            source = clone.removesuffix("_clone")
            assert sorted(r for r, m in double.server.members if m == source) == sorted(
                r for r, m in double.server.members if m == clone
            )
            assert sorted(
                (g.state, g.permission, g.name) for g in database.permissions if g.grantee == source
            ) == (sorted((g.state, g.permission, g.name) for g in database.permissions if g.grantee == clone))
