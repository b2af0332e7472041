"""The fault suite's own plumbing: a World per scenario on the shared fixtures, no retry sleeps,
and the matrix size in the session summary. Servers and Secrets Manager come from tests/conftest.py."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from botocore.retries.standard import ExponentialBackoff

from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import Watched
from tests.engines import Database, bind
from tests.faults.harness import MATRIX, EngineUnderTest, Strategy, World

MakeWorld = Callable[..., World]


@pytest.fixture(autouse=True)
def _no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries injected throttles exactly as in production, without its backoff sleeps
    (up to seconds each): the suite tests what is retried, not how long it waits."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest.fixture
def make_world(
    request: pytest.FixtureRequest,
    local_sm: LocalSecretsManager,
    monkeypatch: pytest.MonkeyPatch,
    leak_check: Watched,
) -> Iterator[MakeWorld]:
    """make_world(engine, strategy, own=False): a fresh user and secret on the engine's shared
    server, or on a server of the test's own that faults may stop. Secrets are deleted when the
    test ends (or earlier by World.close); the leak check keeps watching their passwords."""
    worlds: list[World] = []
    databases: dict[tuple[str, bool], Database] = {}  # the engine on its server, for this test

    def make(subject: EngineUnderTest, strategy: Strategy, own: bool = False) -> World:
        key = (subject.name, own)
        if key not in databases:
            databases[key] = bind(
                subject.engine, request, monkeypatch, leak_check.add, server="own" if own else "shared"
            )
        db = databases[key]
        # The servers are local: a stopped one is found out in a second rather than five.
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
        world = World(subject, db, strategy, on_stopped=db.stop if own else None)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        with contextlib.suppress(local_sm.client.exceptions.ResourceNotFoundException):
            world.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = MATRIX.summary()
    if lines:
        terminalreporter.section("fault matrix")
        for line in lines:
            terminalreporter.write_line(line)
