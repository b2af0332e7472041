"""The fault matrix: for each engine with a live server here and both strategies, a fault at every
point of a rotation, then Secrets Manager's behaviour (the same token retried, the whole rotation
retried, or a later rotation with a new token). After every single call some staged version logs
in to the real database and the labels are valid; at the end the secret is rotated.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    RotationError,
    SecretFormatError,
    SecretNotFoundError,
    TargetMismatchError,
)
from rotators.secrets import AWSCURRENT
from tests.engines import STEPS, Login
from tests.faults.conftest import MakeWorld
from tests.faults.harness import (
    DIED,
    ENGINES,
    MATRIX,
    OK,
    RESOLUTIONS,
    STRATEGIES,
    EngineUnderTest,
    Outcome,
    Strategy,
    World,
    iter_points,
)
from tests.faults.injection import Fault

DB_STEPS = ("setSecret", "testSecret")


@dataclass(frozen=True)
class PointScenario:
    """A fault at the n-th point (Secrets Manager call or database event) of a step, for every n."""

    name: str
    steps: tuple[str, ...]
    fault: Callable[[str, int], Fault]
    resolutions: tuple[str, ...]
    expect: Callable[[Outcome], bool]
    first: int = 1
    own_server: bool = False
    cold: bool = False  # every invocation in a fresh container: more reads, so more points

    @property
    def at_the_database(self) -> bool:
        """Faults of the engine's own code; a quick engine runs only these (the Secrets Manager
        side is the base class's, proven on the other engines)."""
        return self.steps == DB_STEPS


def _died(outcome: Outcome) -> bool:
    return outcome == DIED


def _succeeded(outcome: Outcome) -> bool:
    return outcome == OK


def _failed_typed(outcome: Outcome) -> bool:
    return isinstance(outcome, RotationError)


def _unavailable_or_ok(outcome: Outcome) -> bool:
    """A database that went away is reported as such (retry later), not as a refusal."""
    return outcome == OK or isinstance(outcome, DatabaseUnavailableError)


def _sm_error(code: str, status: int, attempts: int) -> Callable[[str, int], Fault]:
    return lambda step, n: Fault("error", "sm", step, n, code=code, status=status, attempts=attempts)


ALL_ATTEMPTS = 1000  # every attempt botocore makes (production: 1 + 5 retries)

_FAILING = (
    ("ThrottlingException", 400, ALL_ATTEMPTS),
    ("InternalServiceError", 500, ALL_ATTEMPTS),
    ("AccessDeniedException", 400, 1),
)


def _sm_failing(step: str, n: int) -> Fault:
    code, status, attempts = _FAILING[(n - 1) % len(_FAILING)]
    return Fault("error", "sm", step, n, code=code, status=status, attempts=attempts)


POINT_SCENARIOS = [
    PointScenario(
        "crash_after_sm_call", STEPS, lambda step, n: Fault("crash", "sm", step, n), RESOLUTIONS, _died
    ),
    PointScenario(
        "crash_after_sm_call_cold",
        STEPS,
        lambda step, n: Fault("crash", "sm", step, n),
        ("same_token",),
        _died,
        cold=True,
    ),
    PointScenario(
        "crash_after_db_event", DB_STEPS, lambda step, n: Fault("crash", "db", step, n), RESOLUTIONS, _died
    ),
    # A throttle or a 500 on one attempt: the SDK's retries absorb it and the step succeeds.
    PointScenario(
        "sm_throttled_once", STEPS, _sm_error("ThrottlingException", 400, 1), ("same_token",), _succeeded
    ),
    # Failing for good: on every attempt (a throttle, a 500) or refused outright (not retried).
    # The step fails with a typed error and moves no label; the code changes with the point.
    PointScenario("sm_error_throughout", STEPS, _sm_failing, ("same_token",), _failed_typed),
    # The service did the work, its answer was lost, and the SDK sent the same call again: the
    # step still succeeds (a repeated label move finds the label where it should be).
    PointScenario(
        "sm_response_lost",
        STEPS,
        lambda step, n: Fault("repeat", "sm", step, n),
        ("same_token",),
        _succeeded,
    ),
    # The database really stopped before the step (n=0) or right after its n-th event, then started.
    PointScenario(
        "db_stopped",
        DB_STEPS,
        lambda step, n: Fault("stop", "db", step, n),
        ("same_token", "whole_rotation"),
        _unavailable_or_ok,
        first=0,
        own_server=True,
    ),
]


def _point_cases() -> list[object]:
    return [
        pytest.param(
            engine,
            strategy,
            scenario,
            step,
            resolution,
            id=f"{engine.name}-{strategy}-{scenario.name}-{step}-{resolution}",
        )
        for engine in ENGINES
        for strategy in STRATEGIES
        for scenario in POINT_SCENARIOS
        if engine.full or scenario.at_the_database
        for step in scenario.steps
        for resolution in (scenario.resolutions if engine.full else scenario.resolutions[:1])
    ]


@pytest.mark.parametrize(("engine", "strategy", "scenario", "step", "resolution"), _point_cases())
def test_fault_at_every_point(
    make_world: MakeWorld,
    engine: EngineUnderTest,
    strategy: Strategy,
    scenario: PointScenario,
    step: str,
    resolution: str,
) -> None:
    """For n = 1, 2, ... until the step has no n-th point: a fresh secret, a rotation with the
    fault at point n (invariants after every call), then the resolution, and a rotated end."""
    for n in iter_points(scenario.first):
        world = make_world(engine, strategy, own=scenario.own_server)
        world.cold = scenario.cold
        fault = scenario.fault(step, n)
        try:
            world.injector.arm(fault)
            world.start()
            failed_at = world.run(STEPS)
            fired = world.injector.fired
            world.injector.arm(None)
            if not fired:
                assert n > max(scenario.first, 1), f"{step} has no point for {scenario.name}"
                world.close()
                break
            outcome = OK if failed_at is None else world.last_outcome
            assert scenario.expect(outcome), f"unexpected outcome {outcome!r}"
            world.resolve(resolution, failed_at)
            world.check_rotated()
        except AssertionError as exc:
            raise AssertionError(f"{fault.describe()}, then {resolution}: {exc}") from exc
        MATRIX.record(world, scenario.name, step, resolution, outcome)
        world.close()


def _cases(*dimensions: tuple[str, tuple[object, ...]]) -> list[object]:
    """engine x strategy x the given dimensions, with readable ids."""
    return [
        pytest.param(engine, strategy, *rest, id="-".join([engine.name, strategy, *(str(v) for v in rest)]))
        for engine, strategy in itertools.product(ENGINES, STRATEGIES)
        for rest in itertools.product(*(values for _, values in dimensions))
    ]


# -- the same step twice, one after the other or at the same time -----------------------------------
@pytest.mark.parametrize(
    ("engine", "strategy", "step", "container"), _cases(("step", STEPS), ("container", ("warm", "cold")))
)
def test_duplicate_invocation(
    make_world: MakeWorld, engine: EngineUnderTest, strategy: Strategy, step: str, container: str
) -> None:
    """Lambda may deliver an invocation twice: in the same container, or in a fresh one."""
    world = make_world(engine, strategy)
    world.start()
    index = STEPS.index(step)
    assert world.run(STEPS[:index]) is None
    assert world.call(step) == OK
    again = world.container() if container == "cold" else None
    outcome = world.call(step, rotator=again)
    assert outcome == OK, f"a repeated {step} failed: {outcome!r}"
    assert world.run(STEPS[index + 1 :]) is None
    world.check_rotated()
    MATRIX.record(world, f"duplicate_{container}", step, "none", outcome)


@pytest.mark.parametrize(("engine", "strategy", "step"), _cases(("step", STEPS)))
def test_concurrent_invocations(
    make_world: MakeWorld, engine: EngineUnderTest, strategy: Strategy, step: str
) -> None:
    """Two containers run the same step at once (a retry while the first still runs). Each ends
    or fails typed, none hangs, at least one does the work, and a retry completes the rotation."""
    world = make_world(engine, strategy)
    world.start()
    index = STEPS.index(step)
    assert world.run(STEPS[:index]) is None
    outcomes = world.concurrently(step)
    assert OK in outcomes, f"both concurrent {step} failed: {outcomes!r}"
    if strategy == "alternating" and step == "setSecret":
        assert outcomes == [OK, OK], "the first rotation's two runs take turns on the clone (or adopt it)"
    for outcome in outcomes:
        if isinstance(outcome, RotationError):
            world.assert_says_nothing_secret(outcome)
    failed = next((o for o in outcomes if o != OK), None)
    if failed is not None:
        assert world.call(step) == OK, "the retry after a lost race failed"
    assert world.run(STEPS[index + 1 :]) is None
    world.check_rotated()
    MATRIX.record(world, "concurrent", step, "same_token" if failed else "none", failed or OK)


# -- an AWSPENDING left by an abandoned rotation ------------------------------------------------------
@pytest.mark.parametrize(
    ("engine", "strategy", "database", "then"),
    _cases(("database", ("unchanged", "changed")), ("then", ("retried", "superseded"))),
)
def test_abandoned_pending(
    make_world: MakeWorld, engine: EngineUnderTest, strategy: Strategy, database: str, then: str
) -> None:
    """A rotation stopped after createSecret (the database unchanged) or after setSecret (the
    database already on the pending password), then either Secrets Manager retried it, or a
    later rotation with another token took the AWSPENDING label (moto's RotateSecret does; on
    AWS, an operator who removes the label and rotates). A late call with the abandoned token
    then moves nothing."""
    world = make_world(engine, strategy)
    abandoned = world.start()
    steps = ("createSecret",) if database == "unchanged" else ("createSecret", "setSecret")
    assert world.run(steps) is None
    if then == "retried":
        world.resolve("whole_rotation", None)
        world.check_rotated()
        MATRIX.record(world, f"abandoned_pending_db_{database}", steps[-1], "retried")
        return

    abandoned_login = world.version_login(abandoned)
    assert abandoned_login is not None
    world.supersede()
    if strategy == "single" and database == "changed":
        _superseded_after_set_single_user(world, abandoned_login)
    else:
        world.resolve("same_token", "createSecret")
        world.check_rotated()
    labels = world.observe()
    for step in STEPS:
        outcome = world.call(step, abandoned)
        assert isinstance(outcome, RotationError) and "not AWSPENDING" in str(outcome), outcome
    assert world.observe() == labels
    world.check_rotated()
    MATRIX.record(world, f"abandoned_pending_db_{database}", steps[-1], "superseded")


def _superseded_after_set_single_user(world: World, abandoned: Login) -> None:
    """Only the abandoned version (now unlabelled) holds the database's password: setSecret finds
    it among the newest unlabelled versions and changes the password from it; nothing is lost."""
    assert world.logs_in(abandoned), "the abandoned password is the one the database has"
    assert world.call("createSecret", check=False) == OK
    assert world.call("setSecret", check=False) == OK, "recovered from the unlabelled version"
    world.resolve("same_token", "testSecret")
    world.check_rotated()


# -- the master secret of alternating users ---------------------------------------------------------
@dataclass(frozen=True)
class MasterFault:
    """Break the master secret before the rotation; `fix` repairs it as an operator would."""

    name: str
    error: type[RotationError]
    message: str
    break_it: Callable[[World], None]
    fix: Callable[[World], None]
    resolutions: tuple[str, ...] = RESOLUTIONS


def _put_master(world: World, value: object) -> None:
    """A new AWSCURRENT version of the master secret (the previous one keeps its value)."""
    assert world.master_arn is not None
    text = value if isinstance(value, str) else json.dumps(value)
    world.sm.client.put_secret_value(SecretId=world.master_arn, SecretString=text)


def _master_value(world: World, **changes: object) -> dict[str, object]:
    assert world.master_arn is not None
    return {**world.sm.value(world.master_arn, AWSCURRENT), **changes}


def _restore_master(world: World) -> None:
    _put_master(world, world.master_good)


def _deny_master_reads(world: World) -> None:
    world.injector.arm(
        Fault(
            "error",
            "sm",
            "setSecret",
            1,
            code="AccessDeniedException",
            attempts=ALL_ATTEMPTS,
            only=lambda op, params: op == "GetSecretValue" and params.get("SecretId") == world.master_arn,
        )
    )


def _break_master(world: World, how: str) -> None:
    world.master_good = _master_value(world)
    if how == "missing":
        world.sm.client.delete_secret(SecretId=str(world.master_arn), ForceDeleteWithoutRecovery=True)
    elif how == "deleted":
        world.sm.client.delete_secret(SecretId=str(world.master_arn), RecoveryWindowInDays=7)
    elif how == "malformed":
        _put_master(world, "not json")
    elif how == "elsewhere":
        _put_master(world, _master_value(world, port=int(str(world.master_good["port"])) + 1))
    elif how == "wrong_password":
        _put_master(world, _master_value(world, password=world.new_password()))


def _undelete(world: World) -> None:
    world.sm.client.restore_secret(SecretId=str(world.master_arn))


def _missing_master_fix(world: World) -> None:
    """The master secret is gone for good: make it again (a new ARN), cancel the rotation, point
    the secret at the new master, and rotate again."""
    assert world.token is not None
    world.master_arn = world.sm.create_secret(f"m2_{world.name}", world.master_good)
    world.sm.client.update_secret_version_stage(
        SecretId=world.arn, VersionStage="AWSPENDING", RemoveFromVersionId=world.token
    )
    current = next(v for v, labels in world.observe().items() if AWSCURRENT in labels)
    fixed = {**world.sm.value(world.arn, AWSCURRENT), "masterarn": world.master_arn}
    # Staged, then made current by moving the label: after a RotateSecret, moto's PutSecretValue
    # would label a second version AWSCURRENT.
    version = world.sm.client.put_secret_value(
        SecretId=world.arn, SecretString=json.dumps(fixed), VersionStages=["FIXED"]
    )["VersionId"]
    world.sm.client.update_secret_version_stage(
        SecretId=world.arn, VersionStage=AWSCURRENT, MoveToVersionId=version, RemoveFromVersionId=current
    )
    world.sm.client.update_secret_version_stage(
        SecretId=world.arn, VersionStage="FIXED", RemoveFromVersionId=version
    )
    world.observe()


MASTER_FAULTS = [
    MasterFault(
        "missing",
        SecretNotFoundError,
        "masterarn",
        lambda w: _break_master(w, "missing"),
        _missing_master_fix,
        ("operator_fix",),
    ),
    MasterFault("deleted", RotationError, "marked", lambda w: _break_master(w, "deleted"), _undelete),
    MasterFault(
        "unreadable",
        RotationError,
        "AccessDeniedException",
        _deny_master_reads,
        lambda w: w.injector.arm(None),
    ),
    MasterFault(
        "malformed",
        SecretFormatError,
        "not valid JSON",
        lambda w: _break_master(w, "malformed"),
        _restore_master,
    ),
    MasterFault(
        "elsewhere",
        TargetMismatchError,
        "same host and port",
        lambda w: _break_master(w, "elsewhere"),
        _restore_master,
    ),
    MasterFault(
        "wrong_password",
        LoginError,
        "does not log in",
        lambda w: _break_master(w, "wrong_password"),
        _restore_master,
    ),
]


def _master_cases() -> list[object]:
    return [
        pytest.param(
            engine, fault, resolution, id=f"{engine.name}-alternating-master_{fault.name}-{resolution}"
        )
        for engine in ENGINES
        for fault in MASTER_FAULTS
        for resolution in (fault.resolutions if engine.full else fault.resolutions[:1])
    ]


@pytest.mark.parametrize(("engine", "fault", "resolution"), _master_cases())
def test_master_secret_fault(
    make_world: MakeWorld, engine: EngineUnderTest, fault: MasterFault, resolution: str
) -> None:
    """setSecret fails with a typed error that says what to fix, moves no label and changes no
    user; AWSCURRENT keeps logging in; once fixed, the rotation completes."""
    world = make_world(engine, "alternating")
    partner = f"{world.name}_clone"
    if fault.name != "unreadable":
        fault.break_it(world)
    world.start()
    if fault.name == "unreadable":
        fault.break_it(world)
    failed_at = world.run(STEPS)
    assert failed_at == "setSecret"
    outcome = world.last_outcome
    assert isinstance(outcome, fault.error) and fault.message in str(outcome), repr(outcome)
    assert not world.admin.user_exists(partner), "a user was made with a broken master secret"
    fault.fix(world)
    if resolution == "operator_fix":
        world.start()
        world.resolve("same_token", "createSecret")
    else:
        world.resolve(resolution, failed_at)
    world.check_rotated()
    MATRIX.record(world, f"master_{fault.name}", "setSecret", resolution, outcome)


# -- the password changed behind our back ---------------------------------------------------------------
BEHIND_OUR_BACK = {
    # (strategy, when, to): what the next step does
    ("single", "before_set", "unknown"): "fails",
    ("single", "before_set", "previous"): "recovers",
    ("single", "before_test", "unknown"): "fails",
    ("single", "before_test", "previous"): "fails",
    # The master acts only for a user whose AWSCURRENT logs in (the confused-deputy guard).
    ("alternating", "before_set", "unknown"): "fails",
    ("alternating", "before_test", "unknown"): "fails",
}


@pytest.mark.parametrize(
    ("engine", "strategy", "when", "to"),
    [
        pytest.param(engine, *key, id=f"{engine.name}-{'-'.join(key)}")
        for engine in ENGINES
        for key in BEHIND_OUR_BACK
    ],
)
def test_password_changed_behind_our_back(
    make_world: MakeWorld, engine: EngineUnderTest, strategy: Strategy, when: str, to: str
) -> None:
    """Someone resets a password by hand: to an unknown value, or back to AWSPREVIOUS (a restored
    snapshot). Before setSecret that is the current user's password; before testSecret, after
    setSecret, the pending one's. The rotation fails clearly and touches nothing, or recovers
    through AWSPREVIOUS; it never locks the user out further. Once an operator resets the
    password to AWSCURRENT (what the error says to do), the rotation completes."""
    world = make_world(engine, strategy)
    world.start()
    assert world.run(STEPS) is None  # a first rotation, so that AWSPREVIOUS exists
    world.start()
    stop = "setSecret" if when == "before_set" else "testSecret"
    assert world.run(STEPS[: STEPS.index(stop)]) is None
    labels = world.labelled()
    target = labels[AWSCURRENT] if when == "before_set" else labels["AWSPENDING"]
    assert target is not None
    if to == "previous":
        previous = labels["AWSPREVIOUS"]
        assert previous is not None and previous.username == target.username
        by_hand = previous
    else:
        by_hand = Login(target.username, world.new_password())
    world.admin.set_password(by_hand.username, by_hand.password)
    world.changed_by_hand = True

    expected = BEHIND_OUR_BACK[(strategy, when, to)]
    outcome = world.call(stop, check=False)
    if expected == "recovers":
        assert outcome == OK, outcome
        assert world.run(STEPS[STEPS.index(stop) + 1 :]) is None
        world.check_rotated()
    else:
        assert isinstance(outcome, LoginError), outcome
        assert world.logs_in(by_hand), "the failed step must not lock the user out further"
        if to == "unknown":  # the operator's fix; AWSPREVIOUS recovers by itself
            current = world.labelled()[AWSCURRENT]
            assert current is not None
            if current.username == by_hand.username:
                world.admin.set_password(current.username, current.password)
        world.resolve("whole_rotation", stop)
        world.check_rotated()
    MATRIX.record(world, f"changed_behind_our_back_{to}", stop, expected, outcome)
