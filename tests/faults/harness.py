"""The world of one fault scenario: an engine under test, a user (and a master) on a real server, its
secret in the local Secrets Manager, a rotator whose boundaries pass through an Injector, and the
invariants checked after every single call.

The engines, their servers' superusers and their secrets are tests/engines.py's, as in the scenario
suite; an engine joins the matrix with one `EngineUnderTest` entry (see ENGINES): how to tick on
its driver's statements, and whether it runs the whole matrix.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from rotators.database import DatabaseRotator
from rotators.errors import RotationError
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from tests.engines import DOCUMENTDB, MYSQL, POSTGRESQL, REDSHIFT, STEPS, Database, Engine, Login
from tests.faults.injection import (
    Injector,
    ProcessDied,
    TickingDbApi,
    TickingPsycopg,
    Wrap,
    instrument,
    ticking_mongo_session,
    ticking_mysql_session,
)

Strategy = Literal["single", "alternating"]
STRATEGIES: tuple[Strategy, ...] = ("single", "alternating")
OK = "ok"
DIED = "died"
Outcome = str | RotationError  # OK, DIED, or the typed error the step raised


# -- engines ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EngineUnderTest:
    engine: Engine
    wrap: Wrap  # the driver's connection, ticking after each statement and commit
    # A slow engine runs the matrix with one resolution per fault and no state machine, unless
    # ROTATORS_FAULTS_FULL=1: the default test run stays within its time budget.
    quick: bool = False

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def full(self) -> bool:
        return not self.quick or os.environ.get("ROTATORS_FAULTS_FULL", "") not in ("", "0")


# The engines with a live server here (Redshift: PostgreSQL behind its test proxy). Another one
# plugs in with an entry like these: its Engine, and a wrapper of its driver's connection that
# ticks after every statement and commit (tests/faults/injection.py).
ENGINES: list[EngineUnderTest] = [
    EngineUnderTest(POSTGRESQL, TickingPsycopg),
    EngineUnderTest(MYSQL, ticking_mysql_session),
    # Quick, to stay within the time budget: the database-side faults reach its own code; the
    # Secrets Manager side is the base class's, proven on the engines above.
    EngineUnderTest(REDSHIFT, TickingDbApi, quick=True),
    # SecantusDB is a Python server: a rotation costs about three times PostgreSQL's.
    EngineUnderTest(DOCUMENTDB, ticking_mongo_session, quick=True),
]


# -- the matrix, as it ran ---------------------------------------------------------------------------
@dataclass
class Matrix:
    """Every injection point that ran to its end state, for the session summary."""

    # (engine, strategy, scenario, step) -> injection points that ran to their end state
    cells: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    resolutions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # scenario, outcome of the fault
    calls: int = 0
    stateful_examples: int = 0
    stateful_steps: int = 0

    def record(
        self, world: World, scenario: str, step: str, resolution: str, outcome: Outcome | None = None
    ) -> None:
        self.cells[(world.subject.name, world.strategy, scenario, step)] += 1
        self.resolutions[resolution] += 1
        if outcome is not None:
            self.outcomes[(scenario, outcome if isinstance(outcome, str) else type(outcome).__name__)] += 1

    def summary(self) -> list[str]:
        stateful = (
            [
                f"state machine: {self.stateful_examples} random sequences, {self.stateful_steps} steps, "
                "invariants checked after each; every sequence ended rotated"
            ]
            if self.stateful_examples
            else []
        )
        if not self.cells:
            return stateful
        engines = sorted({c[0] for c in self.cells})
        strategies = sorted({c[1] for c in self.cells})
        scenarios = sorted({c[2] for c in self.cells})
        steps = [s for s in STEPS if any(c[3] == s for c in self.cells)]
        points = sum(self.cells.values())
        lines = [
            f"fault matrix: {len(scenarios)} scenarios x {len(steps)} steps x {len(engines)} engine(s) "
            f"({', '.join(engines)}) x {len(strategies)} strategies = {len(self.cells)} cells, "
            f"{points} injection points, {self.calls} rotator calls, invariants checked after each",
            "  resolutions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.resolutions.items())),
        ]
        for scenario in scenarios:
            counts = Counter[str]()
            for c, n in self.cells.items():
                if c[2] == scenario:
                    counts[c[3]] += n
            outcomes = ", ".join(f"{o} {n}" for (sc, o), n in sorted(self.outcomes.items()) if sc == scenario)
            lines.append(
                f"  {scenario}: "
                + ", ".join(f"{s} {counts[s]}" for s in STEPS if counts[s])
                + (f" (the faulted step: {outcomes})" if outcomes else "")
            )
        return lines + stateful


MATRIX = Matrix()


# -- the world of one scenario -------------------------------------------------------------------------
class World:
    """A user on a real server, its secret, and the containers that rotate it."""

    def __init__(
        self,
        subject: EngineUnderTest,
        db: Database,
        strategy: Strategy,
        *,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        self.subject, self.db, self.strategy = subject, db, strategy
        self.engine, self.server, self.sm, self.admin = subject.engine, db.server, db.sm, db.admin
        self.hand_set: set[str] = set()
        self.changed_by_hand = False  # a test reset a password outside Secrets Manager
        self.cold = False  # every invocation in a fresh container (no values cached)
        self.name = f"f_{uuid.uuid4().hex[:12]}"
        self.injector = Injector()
        self.injector.stop_server = on_stopped
        self.master_arn: str | None = None
        self.master_good: dict[str, object] = {}  # the master's value before a test broke it
        extra: dict[str, object] = {}
        if strategy == "alternating":
            master = Login(f"m_{self.name}", self.new_password())
            self.admin.add_user(master.username, master.password, *self.engine.master_grants)
            self.master_arn = self.sm.create_secret(master.username, db.secret(master))
            extra["masterarn"] = self.master_arn
        self.original = Login(self.name, self.new_password())
        self.admin.add_user(self.original.username, self.original.password, *self.engine.user_grants)
        self.arn = self.sm.create_secret(self.name, db.secret(self.original, **extra))
        self.token: str | None = None  # the version being rotated
        self.tokens: list[str] = []
        self.last_outcome: Outcome = OK
        self._values: dict[str, Login | None] = {}
        self._stages: dict[str, list[str]] | None = None
        self._logins: dict[tuple[Login, object], bool] = {}
        self.rotator = self.container()

    def new_password(self) -> str:
        """A password set by hand; the leak check watches it (generated ones it watches anyway)."""
        password = self.db.new_password()
        self.hand_set.add(password)
        return password

    def close(self) -> None:
        """Delete the secrets: a lean moto keeps every later call (and the leak check's listing)
        fast. Their passwords stay watched by the leak check until the test ends."""
        for arn in (self.arn, self.master_arn):
            if arn:
                self.sm.client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)

    def container(self, injector: Injector | None = None) -> DatabaseRotator[Any]:
        """A fresh Lambda container: a new rotator, with its own client and caches."""
        injector = injector or self.injector
        return instrument(self.engine.rotator, self.sm.endpoint_url, injector, self.subject.wrap)

    # -- Secrets Manager's side ------------------------------------------------------------------------
    def in_progress(self) -> str | None:
        """The version of a rotation that has not finished: AWSPENDING on another than AWSCURRENT."""
        stages = self._stages if self._stages is not None else self.observe()
        return next((v for v, s in stages.items() if AWSPENDING in s and AWSCURRENT not in s), None)

    def start(self) -> str:
        """RotateSecret as AWS documents it: refused while another rotation is in progress, and
        allowed when a finished one left AWSPENDING on AWSCURRENT's version. moto does the
        opposite of both, so the harness refuses the first itself and clears the second."""
        assert self.in_progress() is None, "AWS refuses RotateSecret while a rotation is in progress"
        return self.supersede()

    def supersede(self) -> str:
        """moto's RotateSecret: a fresh token staged as an empty AWSPENDING version, taking the
        label from wherever it was (on AWS: an operator who removed AWSPENDING, then rotated)."""
        stages = self._stages if self._stages is not None else self.observe()
        for version, labels in stages.items():
            if AWSPENDING in labels and AWSCURRENT in labels:
                self.sm.client.update_secret_version_stage(
                    SecretId=self.arn, VersionStage=AWSPENDING, RemoveFromVersionId=version
                )
        self.token = self.sm.start_rotation(self.arn)
        self.tokens.append(self.token)
        self.observe()
        return self.token

    def call(
        self,
        step: str,
        token: str | None = None,
        *,
        rotator: DatabaseRotator[Any] | None = None,
        check: bool = True,
    ) -> Outcome:
        """One invocation; a failed step must move no label and say nothing secret, and the
        invariants must hold after it (unless the test checks its own, `check=False`)."""
        token = token or self.token
        assert token is not None, "start a rotation first"
        before = self._stages or self.observe()
        if self.cold and rotator is None:
            self.rotator = self.container()
        outcome = self._invoke(rotator or self.rotator, self.injector, step, token)
        self.last_outcome = outcome
        if outcome == DIED and rotator is None:
            self.rotator = self.container()  # the container died with the process
        self.restart_if_stopped()
        after = self.observe()
        if isinstance(outcome, RotationError):
            self.assert_no_label_moved(before, after, step, token)
            self.assert_says_nothing_secret(outcome)
        if check:
            self.check(after)
        return outcome

    def secrets(self) -> set[str]:
        """Every password this world knows: set by hand, read from a version, or generated."""
        from tests.conftest import _generated

        known = {login.password for login in self._values.values() if login is not None}
        return known | self.hand_set | _generated.values

    def assert_says_nothing_secret(self, error: BaseException) -> None:
        message = str(error)
        assert not any(secret in message for secret in self.secrets()), "an error message holds a secret"

    def observe(self) -> dict[str, list[str]]:
        """The labels now (one DescribeSecret), remembered as the state before the next call.
        Whatever changes labels outside a call must call this again (start and supersede do)."""
        self._stages = self.sm.stages(self.arn)
        return self._stages

    def _invoke(self, rotator: DatabaseRotator[Any], injector: Injector, step: str, token: str) -> Outcome:
        MATRIX.calls += 1
        injector.begin(step)
        injector.before_step()
        event = {"SecretId": self.arn, "ClientRequestToken": token, "Step": step}
        try:
            rotator.handle(event, None)
        except ProcessDied:
            return DIED
        except RotationError as exc:
            return exc
        return OK

    def concurrently(self, step: str, count: int = 2, timeout: float = 60) -> list[Outcome]:
        """The same step in `count` containers at once (Lambda retried while the first still ran)."""
        containers = [(self.container(injector), injector) for injector in (Injector() for _ in range(count))]
        barrier = threading.Barrier(count)
        outcomes: list[Outcome | BaseException] = [OK] * count
        token = self.token
        assert token is not None

        def run(index: int) -> None:
            rotator, injector = containers[index]
            barrier.wait()
            try:
                outcomes[index] = self._invoke(rotator, injector, step, token)
            except BaseException as exc:  # an untyped error: reported by the test, not lost
                outcomes[index] = exc

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in threads), f"concurrent {step} hung for {timeout} s"
        untyped = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, RotationError)]
        assert not untyped, f"concurrent {step} raised an untyped error: {untyped[0]!r}"
        self.check()
        return [o for o in outcomes if not isinstance(o, BaseException) or isinstance(o, RotationError)]

    def restart_if_stopped(self) -> None:
        if getattr(self.server, "process", True) is None:
            self.server.start()

    # -- reading the secret as an auditor would -------------------------------------------------------------
    def version_login(self, version: str) -> Login | None:
        """A version's login; a version's value never changes once it has one."""
        if version in self._values:
            return self._values[version]
        try:
            text = self.sm.client.get_secret_value(SecretId=self.arn, VersionId=version)["SecretString"]
        except self.sm.client.exceptions.ResourceNotFoundException:
            return None  # an AWSPENDING version RotateSecret staged before createSecret gave it a value
        value = json.loads(text)
        self._values[version] = Login(value["username"], value["password"])
        return self._values[version]

    def labelled(self, stages: dict[str, list[str]] | None = None) -> dict[str, Login | None]:
        """Each label's login (None for an empty pending version)."""
        stages = stages if stages is not None else self.observe()
        return {
            label: self.version_login(version)
            for version, labels in stages.items()
            for label in labels
            if label in (AWSCURRENT, AWSPENDING, AWSPREVIOUS)
        }

    def logs_in(self, login: Login | None) -> bool:
        """A real login, made again whenever what the server decides it on has changed since."""
        if login is None:
            return False
        state = self.admin.auth_state(login.username)
        key = (login, state)
        if state is None or key not in self._logins:
            self._logins[key] = self.admin.logs_in(login.username, login.password)
        return self._logins[key]

    # -- the invariants -------------------------------------------------------------------------------------
    def check_labels(self, stages: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
        """Exactly one AWSCURRENT; AWSPENDING only on the version being rotated, or gone."""
        stages = stages if stages is not None else self.observe()
        with_label = {
            label: [v for v, labels in stages.items() if label in labels]
            for label in (AWSCURRENT, AWSPENDING, AWSPREVIOUS)
        }
        assert len(with_label[AWSCURRENT]) == 1, f"AWSCURRENT on {len(with_label[AWSCURRENT])} versions"
        assert len(with_label[AWSPREVIOUS]) <= 1
        assert with_label[AWSPENDING] in ([], [self.token]), "AWSPENDING on a version not being rotated"
        return stages

    def check(self, stages: dict[str, list[str]] | None = None) -> None:
        """Some staged version logs in: AWSCURRENT, or in single-user rotation between setSecret and
        finishSecret AWSPENDING. With alternating users AWSCURRENT itself must always log in."""
        stages = self.check_labels(stages)
        labels = self.labelled(stages)
        if self.logs_in(labels.get(AWSCURRENT)):
            return
        if self.changed_by_hand:  # someone else broke AWSCURRENT: any staged version will do
            assert self.logs_in(labels.get(AWSPENDING)) or self.logs_in(labels.get(AWSPREVIOUS)), (
                "no staged version logs in: a credential was lost"
            )
            return
        assert self.strategy == "single", "alternating users: AWSCURRENT stopped logging in"
        assert self.logs_in(labels.get(AWSPENDING)), "no staged version logs in: a credential was lost"

    @staticmethod
    def assert_no_label_moved(
        before: dict[str, list[str]], after: dict[str, list[str]], step: str, token: str
    ) -> None:
        """A failed step moves no label. finishSecret's two label moves are two calls: failing
        between them leaves AWSCURRENT on the token (and AWSPENDING with it), which the next
        finishSecret completes."""
        if after == before:
            return
        assert step == "finishSecret", f"a failed {step} moved labels: {before} -> {after}"
        assert AWSCURRENT in after.get(token, []), f"a failed finishSecret moved labels: {before} -> {after}"

    def check_rotated(self, *, expect_previous_login: bool | None = None) -> None:
        """The end state: the rotated version is AWSCURRENT and logs in, AWSPENDING is gone,
        the version it replaced is AWSPREVIOUS; single-user: the original password is dead."""
        stages = self.check_labels(self.observe())
        assert sorted(stages.values()) == [[AWSCURRENT], [AWSPREVIOUS]], f"labels at the end: {stages}"
        assert stages.get(self.token or "") == [AWSCURRENT], "the rotated version is not AWSCURRENT"
        labels = self.labelled(stages)
        current, previous = labels[AWSCURRENT], labels[AWSPREVIOUS]
        assert current is not None and previous is not None
        assert current.password != self.original.password, "the password did not change"
        assert self.logs_in(current), "AWSCURRENT does not log in at the end"
        if self.strategy == "single":
            assert current.username == self.original.username
            assert not self.admin.logs_in(self.original.username, self.original.password)
        else:
            assert current.username != previous.username, "alternating users must alternate"
            if expect_previous_login is not False:
                assert self.logs_in(previous), "the previous user of the pair stopped logging in"

    # -- Secrets Manager's behaviour after a failure ---------------------------------------------------
    def run(self, steps: tuple[str, ...] | list[str], token: str | None = None) -> str | None:
        """Invoke steps in order, as Secrets Manager does, until one does not succeed: its name."""
        for step in steps:
            outcome = self.call(step, token)
            if outcome != OK:
                return step
        return None

    def resolve(self, resolution: str, failed_at: str | None) -> None:
        """Let Secrets Manager's behaviour play out; every call must now succeed."""
        if resolution == "same_token":
            steps = list(STEPS[STEPS.index(failed_at) :]) if failed_at else []
        elif resolution == "whole_rotation":
            steps = list(STEPS)
        elif resolution == "new_token":
            # A later RotateSecret: AWS refuses it while this rotation is unfinished, and
            # Secrets Manager retries that one with its token; then the new rotation runs.
            if self.in_progress():
                self._succeed(STEPS, resolution)
            self.start()
            steps = list(STEPS)
        else:
            raise AssertionError(f"unknown resolution {resolution}")
        self._succeed(steps, resolution)

    def _succeed(self, steps: tuple[str, ...] | list[str], resolution: str) -> None:
        for step in steps:
            outcome = self.call(step)
            assert outcome == OK, f"{resolution}: {step} did not succeed after the fault: {outcome!r}"


RESOLUTIONS = ("same_token", "whole_rotation", "new_token")


def iter_points(first: int = 1) -> Iterator[int]:
    """1, 2, 3, ...: every injection point of a step, until the step has no more of them."""
    n = first
    while True:
        yield n
        n += 1
