"""Rotations against a real MongoDB or Amazon DocumentDB, when ROTATORS_TEST_MONGODB_URI names one.

SecantusDB stands in for both in the other tests; these check the same engine against the real
thing:

    ROTATORS_TEST_MONGODB_URI='mongodb://admin:<password>@localhost:27017/?tls=false'
    ROTATORS_TEST_MONGODB_URI='mongodb://master:<pw>@docdb-host:27017/?tls=true&tlsCAFile=/path/global-bundle.pem'

The URI's user must administer users (userAdminAnyDatabase, or DocumentDB's master user). The
engine treats a `*.docdb.amazonaws.com` host as DocumentDB (through an SSH tunnel to localhost,
add `engine=documentdb` to the query). Every user the tests create is dropped at the end.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from rotators.engines.documentdb import handler
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Watched
from tests.live import LiveServer, dsn_query, dsn_secret, live_only, serve

URI = "ROTATORS_TEST_MONGODB_URI"
pytestmark = live_only(URI, "no real MongoDB or DocumentDB here; SecantusDB covers the rest")


def master_secret() -> dict[str, Any]:
    """MongoDB's URI words: authSource is the database, tls (or ssl) and tlsCAFile the TLS settings."""
    query = dsn_query(URI)
    value = dsn_secret(URI, engine="mongo", port=27017)
    value["dbname"] = query.get("authSource", "admin")
    value["ssl"] = query.get("tls", query.get("ssl", "true")).lower() == "true"
    if "tlsCAFile" in query:
        value["sslrootcert"] = query["tlsCAFile"]
    return value


class LiveAdmin(LiveServer):
    """The URI's user, through pymongo itself; `made` holds the users a test made."""

    def __init__(self, sm: LocalSecretsManager) -> None:
        super().__init__(master_secret(), sm, handler)

    def client(self, user: str | None = None, password: str | None = None) -> pymongo.MongoClient[Any]:
        options: dict[str, Any] = {"tls": self.admin["ssl"], "retryWrites": False}
        if "sslrootcert" in self.admin:
            options["tlsCAFile"] = self.admin["sslrootcert"]
        return pymongo.MongoClient(
            self.admin["host"],
            self.admin["port"],
            username=user or self.admin["username"],
            password=password or self.admin["password"],
            authSource=self.admin["dbname"],
            serverSelectionTimeoutMS=10_000,
            **options,
        )

    def command(self, *args: Any, **kwargs: Any) -> Any:
        with self.client() as client:
            return client[self.admin["dbname"]].command(*args, **kwargs)

    def undo(self, made: str) -> None:
        for name in (made, f"{made}_clone"):
            with contextlib.suppress(pymongo.errors.OperationFailure):  # not every test makes the clone
                self.command("dropUser", name)

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.client(user, password) as client:
                client[self.admin["dbname"]].command("ping")
                return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, "login failed for another reason"
            return False


@pytest.fixture
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveAdmin]:
    yield from serve(LiveAdmin(local_sm), monkeypatch)


def test_alternating_rotations_against_a_real_server(live: LiveAdmin, leak_check: Watched) -> None:
    user, first = f"rotators_{secrets.token_hex(4)}", "Init-" + secrets.token_hex(8)
    leak_check.add(first)
    roles = [{"role": "read", "db": "rotators_test"}]
    live.command("createUser", user, pwd=first, roles=roles)
    live.made.append(user)
    arn = live.secret(user, first, master=live.master(user))

    for expected in (f"{user}_clone", user, f"{user}_clone"):
        before = live.sm.value(arn, "AWSCURRENT")
        current = live.rotate(arn)
        assert current["username"] == expected
        assert live.logs_in(current["username"], current["password"])
        assert live.logs_in(before["username"], before["password"]), "the previous login keeps working"
    clone = live.command("usersInfo", f"{user}_clone")["users"][0]
    assert [{"role": r["role"], "db": r["db"]} for r in clone["roles"]] == roles
