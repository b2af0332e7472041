"""The live tests read their server from a connection string (each engine's form, as a secret),
skip without one, and drop what they made on it: checked here, where no live server runs."""

from __future__ import annotations

import json
import os
from typing import Any, cast

import pytest

from rotators.database import DatabaseSecret
from tests.live import LiveServer, dsn_secret, fresh_names, live_only, serve


def test_a_dsn_with_tls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "X_DSN",
        "redshift://admin:p%40ss@cluster.example:5439/analytics?sslmode=verify-ca&sslrootcert=/ca.pem",
    )
    assert dsn_secret("X_DSN", engine="redshift", port=5439, dbname="dev") == {
        "engine": "redshift", "host": "cluster.example", "port": 5439, "username": "admin",
        "password": "p@ss", "dbname": "analytics", "sslmode": "verify-ca", "sslrootcert": "/ca.pem",
    }  # fmt: skip


def test_defaults_and_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_DSN", "oracle://:secret@localhost/?ssl=false")
    assert dsn_secret("X_DSN", engine="oracle", port=1521, dbname="FREEPDB1", user="system") == {
        "engine": "oracle", "host": "localhost", "port": 1521, "username": "system",
        "password": "secret", "dbname": "FREEPDB1", "ssl": False,
    }  # fmt: skip
    monkeypatch.setenv("X_DSN", "mysql://admin:pw@db:3306/?engine=mariadb")
    assert dsn_secret("X_DSN", engine="mysql", port=3306)["engine"] == "mariadb"


def test_without_the_variable_the_tests_skip_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_DSN", raising=False)
    mark = live_only("X_DSN", "no X can run here")
    assert mark.args == (True,)
    assert mark.kwargs["reason"].startswith("X_DSN is not set: no X can run here")
    monkeypatch.setenv("X_DSN", "x://admin:pw@db/")
    assert live_only("X_DSN", "no X can run here").args == (False,)


def test_fresh_names_share_one_tag() -> None:
    name, role = fresh_names("", "role")
    assert role == f"rot_role_{name.removeprefix('rot_')}"
    assert fresh_names("")[0] != name


class Leftovers(LiveServer):
    """Records what it drops; a DROP of `stuck` fails with a message that quotes a password."""

    def __init__(self, stuck: str) -> None:
        super().__init__({}, sm=cast(Any, None), handler=cast(Any, None))  # nothing is rotated
        self.stuck = stuck
        self.dropped: list[str] = []

    def logs_in(self, user: str, password: str) -> bool:
        return False

    def undo(self, made: str) -> None:
        self.dropped.append(made)
        if made == self.stuck:
            raise RuntimeError("refused: pw=Leaked-1")


def test_clean_up_drops_everything_last_first_and_fails_on_leftovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/ca.pem")
    server = Leftovers(stuck="DROP ROLE r")
    served = serve(server, monkeypatch)
    assert next(served) is server
    assert "ROTATORS_CA_BUNDLE" not in os.environ, "the DSN's own TLS settings apply"
    server.made += ["DROP ROLE r", "DROP USER u"]
    with pytest.raises(
        AssertionError, match=r"left objects behind: \['DROP ROLE r: RuntimeError'\]"
    ) as caught:
        next(served)
    assert server.dropped == ["DROP USER u", "DROP ROLE r"]
    assert "Leaked-1" not in str(caught.value)


def test_a_sqlserver_dsn_is_a_secret_the_engine_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/integration/test_sqlserver_live.py's form: the container's self-signed certificate
    needs sslmode=require; the database defaults to master, the user to sa."""
    from rotators.database import ca_bundle, tls_mode
    from rotators.engines.sqlserver import SQLServerRotator

    monkeypatch.delenv("ROTATORS_SSLMODE", raising=False)

    def read(dsn: str) -> tuple[dict[str, Any], DatabaseSecret]:
        monkeypatch.setenv("X_DSN", dsn)
        value = dsn_secret("X_DSN", engine="sqlserver", port=1433, dbname="master", user="sa")
        return value, SQLServerRotator().parse(json.dumps(value), where="X_DSN")

    value, secret = read("sqlserver://sa:Str0ng%21Pass%40@localhost:1433/master?sslmode=require")
    assert value == {
        "engine": "sqlserver", "host": "localhost", "port": 1433, "username": "sa",
        "password": "Str0ng!Pass@", "dbname": "master", "sslmode": "require",
    }  # fmt: skip
    assert tls_mode(secret) == "require"
    _, secret = read("sqlserver://:pw@db.example/?sslrootcert=/ca.pem")
    assert (secret.username, secret.port, secret.dbname) == ("sa", 1433, "master")
    assert tls_mode(secret) == "verify-full" and ca_bundle(secret).path == "/ca.pem"
    _, secret = read("sqlserver://app:pw@db.example:14330/appdb?ssl=false")
    assert (secret.port, secret.dbname, tls_mode(secret)) == (14330, "appdb", None)
