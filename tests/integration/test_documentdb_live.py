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
from tests.conftest import Watched, invoke
from tests.live import dsn_query, dsn_secret, live_only

URI = "ROTATORS_TEST_MONGODB_URI"
pytestmark = live_only(
    URI,
    "no real MongoDB/DocumentDB here (SecantusDB covers the rest): set ROTATORS_TEST_MONGODB_URI="
    "mongodb://user:pw@host:27017/?tls=false to run these against one",
)


def master_secret() -> dict[str, Any]:
    """MongoDB's URI words: authSource is the database, tls (or ssl) and tlsCAFile the TLS settings."""
    query = dsn_query(URI)
    value = dsn_secret(URI, engine="mongo", port=27017)
    value["dbname"] = query.get("authSource", "admin")
    value["ssl"] = query.get("tls", query.get("ssl", "true")).lower() == "true"
    if "tlsCAFile" in query:
        value["sslrootcert"] = query["tlsCAFile"]
    return value


class LiveAdmin:
    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.made: list[str] = []

    def client(self, user: str | None = None, password: str | None = None) -> pymongo.MongoClient[Any]:
        options: dict[str, Any] = {"tls": self.value["ssl"], "retryWrites": False}
        if "sslrootcert" in self.value:
            options["tlsCAFile"] = self.value["sslrootcert"]
        return pymongo.MongoClient(
            self.value["host"],
            self.value["port"],
            username=user or self.value["username"],
            password=password or self.value["password"],
            authSource=self.value["dbname"],
            serverSelectionTimeoutMS=10_000,
            **options,
        )

    def command(self, *args: Any, **kwargs: Any) -> Any:
        with self.client() as client:
            return client[self.value["dbname"]].command(*args, **kwargs)

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.client(user, password) as client:
                client[self.value["dbname"]].command("ping")
                return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, "login failed for another reason"
            return False


@pytest.fixture
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveAdmin]:
    admin = LiveAdmin(master_secret())
    monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)
    yield admin
    for user in admin.made:
        for name in (user, f"{user}_clone"):
            with contextlib.suppress(pymongo.errors.OperationFailure):
                admin.command("dropUser", name)


def test_alternating_rotations_against_a_real_server(
    local_sm: LocalSecretsManager, live: LiveAdmin, leak_check: Watched
) -> None:
    user, first = f"rotators_{secrets.token_hex(4)}", "Init-" + secrets.token_hex(8)
    leak_check.add(first)
    roles = [{"role": "read", "db": "rotators_test"}]
    live.command("createUser", user, pwd=first, roles=roles)
    live.made.append(user)
    master = local_sm.create_secret(f"{user}-master", live.value)
    app = {**live.value, "username": user, "password": first, "masterarn": master}
    arn = local_sm.create_secret(user, app)

    for expected in (f"{user}_clone", user, f"{user}_clone"):
        before = local_sm.value(arn, "AWSCURRENT")
        invoke(handler, arn, local_sm.start_rotation(arn))
        current = local_sm.value(arn, "AWSCURRENT")
        assert current["username"] == expected
        assert live.logs_in(current["username"], current["password"])
        assert live.logs_in(before["username"], before["password"]), "the previous login keeps working"
    clone = live.command("usersInfo", f"{user}_clone")["users"][0]
    assert [{"role": r["role"], "db": r["db"]} for r in clone["roles"]] == roles
