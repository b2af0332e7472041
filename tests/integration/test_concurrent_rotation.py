"""Two runs of one setSecret at once (a retried step that overlaps the first), on the first
rotation of an alternating secret, when both would create the clone.

PostgreSQL and MariaDB have a lock the master takes on the user, so the second run waits and then
finds the clone made: the tests hold the first run inside its change and see the second wait on
the server. Redshift and DocumentDB have none: there the second run's create fails because the
user exists, and it checks the clone like any other before it adopts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotators.secrets import AWSCURRENT, AWSPENDING
from tests.engines import DOCUMENTDB, MYSQL, POSTGRESQL, REDSHIFT, Database, Login, engines, invoke

# Sessions the server shows waiting for the master's lock on a user.
WAITING = {
    "postgresql": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
    "mysql": "SELECT count(*) FROM information_schema.processlist WHERE state LIKE '%user lock%'",
}
# Where each lockless engine looks whether the clone exists before it creates it.
LOOKUP = {"redshift": "_attributes", "documentdb": "user_record"}


@pytest.fixture
def first_rotation(db: Database) -> Iterator[tuple[str, Login, str]]:
    """An alternating pair whose clone does not exist yet, staged up to createSecret."""
    login = db.add_user()
    arn = db.store(login, masterarn=db.master_secret())
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    yield arn, login, token


def _finish(db: Database, arn: str, token: str) -> None:
    """The rest of the rotation; then AWSCURRENT is the clone and logs in."""
    db.invoke(arn, token, "testSecret", "finishSecret")
    current = db.sm.value(arn, AWSCURRENT)
    assert current["username"].endswith("_clone")
    assert db.logs_in(current["username"], current["password"])


def _waiting(db: Database) -> int:
    admin: Any = db.admin  # Admin or MariaDBAdmin: both answer sql()
    return int(admin.sql(WAITING[db.engine.name])[0][0])


def _until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("engine", engines(among=(POSTGRESQL, MYSQL)))
def test_an_overlapping_run_waits_for_the_first_and_finds_its_clone(
    db: Database, first_rotation: tuple[str, Login, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, login, token = first_rotation
    inside, release = threading.Event(), threading.Event()
    create = db.engine.rotator.clone_user

    def held(self: Any, conn: Any, source: str, clone: str, password: str) -> None:
        if threading.current_thread().name == "first":
            inside.set()
            assert release.wait(60)
        create(self, conn, source, clone, password)

    monkeypatch.setattr(db.engine.rotator, "clone_user", held)
    failures: dict[str, BaseException] = {}

    def run() -> None:  # each run its own rotator, as each Lambda invocation would be
        try:
            invoke(db.engine.rotator().handle, arn, token, "setSecret")
        except BaseException as exc:  # reported by the assertion below
            failures[threading.current_thread().name] = exc

    first = threading.Thread(target=run, name="first")
    second = threading.Thread(target=run, name="second")
    first.start()
    assert inside.wait(60), "the first run reached the clone's creation"
    second.start()
    try:
        _until(lambda: _waiting(db) == 1, "the second run wait for the lock on the server")
        assert second.is_alive(), "the second run waits while the first holds the lock"
    finally:
        release.set()
        first.join(60)
        second.join(60)
    assert failures == {}
    assert db.admin.user_exists(f"{login.username}_clone")
    _finish(db, arn, token)


@pytest.mark.parametrize("engine", engines(among=(REDSHIFT, DOCUMENTDB)))
def test_a_clone_created_meanwhile_is_checked_and_adopted(
    db: Database,
    first_rotation: tuple[str, Login, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn, login, token = first_rotation
    clone = f"{login.username}_clone"
    rotator = db.engine.rotator
    lookup, create = getattr(rotator, LOOKUP[db.engine.name]), rotator.clone_user
    creating, raced = threading.Event(), threading.Event()

    def late(self: Any, conn: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """In the loser's clone_user: the other run makes the clone right after this lookup."""
        if name == clone and creating.is_set() and not raced.is_set():
            raced.set()
            seen = lookup(self, conn, name, *args, **kwargs)
            invoke(rotator().handle, arn, token, "setSecret")  # the other run, start to finish
            return seen
        return lookup(self, conn, name, *args, **kwargs)

    def tracked(self: Any, conn: Any, source: str, clone_name: str, password: str) -> None:
        creating.set()
        try:
            create(self, conn, source, clone_name, password)
        finally:
            creating.clear()

    monkeypatch.setattr(rotator, LOOKUP[db.engine.name], late)
    monkeypatch.setattr(rotator, "clone_user", tracked)
    invoke(rotator().handle, arn, token, "setSecret")

    assert raced.is_set(), "the other run created the clone between this run's lookup and its create"
    assert any("created meanwhile by another run" in r.getMessage() for r in caplog.records)
    assert db.sm.stages(arn)[token] == [AWSPENDING], "no label moved"
    _finish(db, arn, token)
