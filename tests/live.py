"""What the live tests share: a server named by a connection string in the environment, read as
the secret of its admin user, and one flow on it: make a user, store its secret in the local
Secrets Manager, rotate it through the engine's own handler, and check which logins work.
Without the variable the tests skip and say how to run them."""

from __future__ import annotations

import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from rotators.database import DatabaseRotator
from rotators.errors import LoginError
from rotators.secrets import AWSCURRENT
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import invoke


def live_only(variable: str, why: str) -> pytest.MarkDecorator:
    """Skips the module's tests unless `variable` is set, saying `why` there is no server here."""
    reason = f"{variable} is not set: {why} (this module's docstring shows how to name a server)"
    return pytest.mark.skipif(not os.environ.get(variable), reason=reason)


def dsn_query(variable: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(os.environ[variable]).query).items()}


def dsn_secret(
    variable: str, *, engine: str, port: int, dbname: str | None = None, user: str = ""
) -> dict[str, Any]:
    """scheme://user:password@host:port/dbname?sslmode=..&sslrootcert=..&ssl=false as a secret."""
    url = urlsplit(os.environ[variable])
    query = dsn_query(variable)
    value: dict[str, Any] = {
        "engine": query.get("engine", engine),
        "host": url.hostname,
        "port": url.port or port,
        "username": unquote(url.username or user),
        "password": unquote(url.password or ""),
    }
    if dbname is not None:
        value["dbname"] = url.path.lstrip("/") or dbname
    value.update({key: query[key] for key in ("sslmode", "sslrootcert") if key in query})
    if query.get("ssl", "").lower() == "false":
        value["ssl"] = False
    return value


def fresh_names(*kinds: str) -> list[str]:
    """Names for what one test makes, with one random tag: `rot_<tag>`, or `rot_<kind>_<tag>` for
    a kind; tests never collide, and anything left behind is plainly the tests'."""
    tag = uuid.uuid4().hex[:8]
    return [f"rot_{kind}_{tag}" if kind else f"rot_{tag}" for kind in kinds]


class LiveServer(ABC):
    """The DSN's admin account on a real server, and secrets of users there that the local Secrets
    Manager rotates through the engine's own handler. `made` names what a test made, for `undo`."""

    def __init__(self, admin: dict[str, Any], sm: LocalSecretsManager, handler: Callable[..., Any]) -> None:
        self.admin, self.sm, self.handler = admin, sm, handler
        self.made: list[str] = []

    @abstractmethod
    def logs_in(self, user: str, password: str) -> bool:
        """Whether `user` logs in with `password`; any failure but a refused login fails the test."""

    @abstractmethod
    def undo(self, made: str) -> None:
        """Drops one thing a test made, as `made` names it."""

    def clean_up(self) -> list[str]:
        """Undoes all of `made`, last first, each even after another failed; what failed, with the
        error's type only (its message could quote a password)."""
        failed = []
        for made in reversed(self.made):
            try:
                self.undo(made)
            except Exception as exc:
                failed.append(f"{made}: {type(exc).__name__}")
        return failed

    def master(self, user: str) -> str:
        """The DSN's account stored as the master secret for `user`'s rotations: its ARN."""
        return self.sm.create_secret(f"{user}-master", self.admin)

    def secret(self, username: str, password: str, *, master: str | None = None, name: str = "") -> str:
        """A secret of `username` on this server (the DSN's address and TLS), alternating users
        with the master secret `master` when given: its ARN."""
        value = {**self.admin, "username": username, "password": password}
        if master is not None:
            value["masterarn"] = master
        return self.sm.create_secret(name or username, value)

    def rotate(self, arn: str) -> dict[str, Any]:
        """A whole rotation with a new token; the new AWSCURRENT value."""
        invoke(self.handler, arn, self.sm.start_rotation(arn))
        return self.sm.value(arn, AWSCURRENT)

    def assert_rotates_alone(self, arn: str, username: str) -> None:
        """Two single-user rotations: each new password logs in and the one before it no longer does."""
        for _ in range(2):
            before = self.sm.value(arn, AWSCURRENT)["password"]
            after = self.rotate(arn)["password"]
            assert after != before
            assert self.logs_in(username, after)
            assert not self.logs_in(username, before)


Rotator = TypeVar("Rotator", bound=DatabaseRotator[Any])


class EngineServer(LiveServer, Generic[Rotator]):
    """A server the engine's own rotator logs in to, as the DSN's account (`parsed`) or any user;
    `made` holds the statements that drop what a test made."""

    def __init__(
        self, sm: LocalSecretsManager, handler: Callable[..., Any], rotator: Rotator, dsn: str, **default: Any
    ) -> None:
        super().__init__(dsn_secret(dsn, **default), sm, handler)
        self.rotator = rotator
        self.parsed = rotator.parse(json.dumps(self.admin), where=dsn)

    @abstractmethod
    def sql(self, statement: str) -> list[Any]:
        """Runs `statement` as the DSN's account; the rows it answers."""

    def undo(self, made: str) -> None:
        self.sql(made)

    def logs_in(self, user: str, password: str) -> bool:
        """A refused login is the engine's LoginError; any other failure fails the test."""
        try:
            with self.rotator.connect(self.parsed, user, password):
                return True
        except LoginError:
            return False


Server = TypeVar("Server", bound=LiveServer)


def serve(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """`server` for one test, with the DSN's own TLS settings; then everything the test made is
    dropped, and the test fails if anything is left behind."""
    monkeypatch.delenv("ROTATORS_CA_BUNDLE", raising=False)
    yield server
    failed = server.clean_up()
    assert not failed, f"clean-up left objects behind: {failed}"
