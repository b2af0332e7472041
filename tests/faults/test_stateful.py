"""Property-based test of the rotation state machine against the real database server and moto.

Hypothesis drives random sequences of step invocations (with or without an injected fault),
retries, duplicates, concurrent invocations, cold containers, stale tokens and new rotations, as
Secrets Manager and Lambda may deliver them: within one rotation a step is only invoked once the
one before it has succeeded at least once (any earlier step may come again). After every call
some staged version logs in and the labels are valid; at the end the rotation in progress,
retried without faults, completes.

The default run is modest (ROTATORS_STATEFUL_EXAMPLES examples, default 10, of up to
ROTATORS_STATEFUL_STEPS steps, default 40); raise them for a longer hunt.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rotators.errors import RotationError, VersionStageError
from tests.engines import STEPS
from tests.faults.conftest import MakeWorld
from tests.faults.harness import ENGINES, MATRIX, OK, STRATEGIES, EngineUnderTest, Outcome, World
from tests.faults.injection import Fault

EXAMPLES = int(os.environ.get("ROTATORS_STATEFUL_EXAMPLES", "10"))
STEPS_PER_EXAMPLE = int(os.environ.get("ROTATORS_STATEFUL_STEPS", "40"))
SHRINK = os.environ.get("ROTATORS_STATEFUL_SHRINK", "") not in ("", "0")

_CODES = (("ThrottlingException", 400), ("InternalServiceError", 500), ("AccessDeniedException", 400))


FaultSpec = tuple[str, int, int, int]  # kind, point, code, attempts


POINTS = st.sampled_from([1, 1, 2, 2, 3, 3, 4, 5])  # most steps make 1 to 5 calls or events


@st.composite
def crashes(draw: st.DrawFn) -> FaultSpec:
    """The process dies right after a Secrets Manager call or a database event of the step."""
    return (draw(st.sampled_from(["crash_sm", "crash_db"])), draw(POINTS), 0, 1)


@st.composite
def sdk_faults(draw: st.DrawFn) -> FaultSpec:
    """A call fails (absorbed by the SDK's retries, or for good), or is carried out twice."""
    kind = draw(st.sampled_from(["error", "error", "repeat"]))
    code = draw(st.integers(min_value=0, max_value=len(_CODES) - 1))
    return (kind, draw(POINTS), code, draw(st.sampled_from([1, 1000])))


def _fault(spec: FaultSpec | None, step: str) -> Fault | None:
    if spec is None:
        return None
    kind, point, code, attempts = spec
    if kind == "crash_db" and step in ("setSecret", "testSecret"):
        return Fault("crash", "db", step, point)
    if kind in ("crash_sm", "crash_db"):  # createSecret and finishSecret touch no database
        return Fault("crash", "sm", step, point)
    if kind == "repeat":
        return Fault("repeat", "sm", step, point)
    name, status = _CODES[code]
    return Fault("error", "sm", step, point, code=name, status=status, attempts=attempts)


class RotationMachine(RuleBasedStateMachine):
    """One secret; Secrets Manager and Lambda as an adversary that still keeps the protocol."""

    make_world: MakeWorld
    engine: EngineUnderTest

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.progress = -1  # the last step of the active rotation that has succeeded

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    @initialize(strategy=st.sampled_from(STRATEGIES))
    def a_secret_and_a_rotation(self, strategy: Any) -> None:
        self.world = self.make_world(self.engine, strategy)
        self.w.start()

    def _after(self, step: str, outcome: Outcome) -> None:
        assert outcome in (OK, "died") or isinstance(outcome, RotationError), outcome
        if outcome == OK:
            self.progress = max(self.progress, STEPS.index(step))

    def _next(self) -> str:
        """The step after the last that succeeded; after finishSecret, the next rotation begins."""
        if self.progress == len(STEPS) - 1:
            self.a_new_rotation()
        return STEPS[self.progress + 1]

    def _invoke(self, step: str, fault: FaultSpec | None) -> None:
        self.w.injector.arm(_fault(fault, step))
        try:
            outcome = self.w.call(step)
        finally:
            self.w.injector.arm(None)
        self._after(step, outcome)

    @rule()
    def the_next_step(self) -> None:
        self._invoke(self._next(), None)

    @rule(fault=crashes())
    def the_next_step_with_a_crash(self, fault: FaultSpec) -> None:
        self._invoke(self._next(), fault)

    @rule(fault=sdk_faults())
    def the_next_step_with_a_failing_call(self, fault: FaultSpec) -> None:
        self._invoke(self._next(), fault)

    @rule(data=st.data(), fault=st.none() | crashes() | sdk_faults())
    def an_earlier_step_again(self, data: st.DataObject, fault: FaultSpec | None) -> None:
        """A retry or a late duplicate of a step that has already succeeded."""
        step = data.draw(st.sampled_from(STEPS[: self.progress + 1] or STEPS[:1]), label="step")
        self._invoke(step, fault)

    @rule(data=st.data())
    def the_same_step_twice_at_once(self, data: st.DataObject) -> None:
        step = data.draw(st.sampled_from(STEPS[: self.progress + 2]), label="step")
        for outcome in self.w.concurrently(step):
            self._after(step, outcome)

    @rule()
    def a_cold_container(self) -> None:
        """The next invocation runs in a fresh container: nothing cached."""
        self.w.rotator = self.w.container()

    @rule()
    def secrets_manager_retries_the_rotation(self) -> None:
        """All four steps again, with the same token, without faults: they succeed."""
        for step in STEPS:
            outcome = self.w.call(step)
            assert outcome == OK, f"{step} of a retried rotation failed: {outcome!r}"
            self._after(step, outcome)

    def a_new_rotation(self) -> None:
        """RotateSecret with a new token (AWS refuses it while one is in progress)."""
        assert self.w.in_progress() is None
        self.w.start()
        self.progress = -1
        self.w.check()

    @precondition(lambda self: self.world is not None and len(self.world.tokens) > 1)
    @rule(data=st.data())
    def a_late_call_with_an_old_token(self, data: st.DataObject) -> None:
        """An old rotation's step, delivered late: it changes nothing."""
        token = data.draw(st.sampled_from(self.w.tokens[:-1]), label="old token")
        step = data.draw(st.sampled_from(STEPS), label="step")
        labels = self.w.observe()
        outcome = self.w.call(step, token)
        assert outcome == OK or isinstance(outcome, VersionStageError), outcome
        assert self.w.observe() == labels, "a call with an old token moved a label"

    @invariant()
    def some_staged_version_logs_in(self) -> None:
        if self.world is not None:
            MATRIX.stateful_steps += 1
            self.w.check(self.w.observe())

    def teardown(self) -> None:
        if self.world is None:
            return
        try:
            if any("AWSPENDING" in labels for labels in self.w.observe().values()):
                # Unfinished, or a finishSecret that failed between its two label moves (AWSPENDING
                # left on AWSCURRENT's version): Secrets Manager retries it.
                self.secrets_manager_retries_the_rotation()
            self.w.check_rotated()
            MATRIX.stateful_examples += 1
        finally:
            self.w.close()


@pytest.mark.parametrize("engine", [pytest.param(e, id=e.name) for e in ENGINES if e.full])
def test_random_sequences_keep_a_working_credential(make_world: MakeWorld, engine: EngineUnderTest) -> None:
    machine = type("Machine", (RotationMachine,), {"make_world": staticmethod(make_world), "engine": engine})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            database=None,
            # Shrinking replays sequences against the servers for minutes; the failing call and
            # its fault are in the assertion anyway. ROTATORS_STATEFUL_SHRINK=1 turns it on.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if SHRINK else [])],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
