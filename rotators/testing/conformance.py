"""The conformance kit: prove any `Rotator` subclass against the standard scenarios.

Against a local Secrets Manager (moto's server, over HTTP) and your real service, the kit
plays Secrets Manager through: two rotations, every step repeated, an abandoned rotation, a
crash right after each hook (and between finishSecret's two label moves) followed by a retry,
and a failure in each hook. After each it checks the labels, that a failure moved none, and
that exactly the labelled values work: AWSCURRENT (and AWSPREVIOUS when the rotator keeps
it), nothing older, no value a failed attempt made. At the end it checks that no secret value
reached a log line (at DEBUG), stdout, stderr or an error message.

    # conftest.py
    pytest_plugins = ["rotators.testing.conformance"]

    # test_my_rotator.py
    def test_my_rotator(rotator_conformance):
        rotator_conformance.check(
            MyRotator,                          # a class, a factory, or an instance
            new_secret=make_fresh_credential,   # -> a working secret value (dict or str)
            accepts=lambda s: my_service_accepts(s["key_id"], s["api_key"]),
        )

Install with `pip install 'rotators[testing]'`. This module imports pytest and moto; the
runtime modules never import it, so a Lambda bundle carries neither.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Generic, TypeVar

import pytest

from rotators.errors import RotationError, VersionStageError, redact
from rotators.log import logger
from rotators.rotation import STEPS, RotationContext, Rotator
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS
from rotators.testing.secretsmanager import LocalSecretsManager

S = TypeVar("S")

HOOKS = {"make_pending": "createSecret", "set_pending": "setSecret", "test_pending": "testSecret"}
SCENARIOS = ("two_rotations", "repeated_steps", "abandoned_pending", "crash_and_retry", "failing_hooks")


class InjectedFault(Exception):
    """Raised by the kit inside a hook, as a target's error would be; it quotes the secret."""


class SimulatedCrash(BaseException):
    """Raised by the kit right after a hook did its work: the process died there. A
    BaseException, because no `except Exception` in a rotator can catch a process's death."""


class RotatorConformance:
    """Drives rotators through the standard scenarios; the `rotator_conformance` fixture makes one."""

    def __init__(
        self,
        sm: LocalSecretsManager,
        *,
        read_output: Callable[[], str] | None = None,
        records: Callable[[], Sequence[logging.LogRecord]] | None = None,
    ) -> None:
        self.sm = sm
        self._read_output = read_output
        self._records = records

    def check(
        self,
        rotator: Rotator[S] | Callable[[], Rotator[S]],
        *,
        new_secret: Callable[[], str | Mapping[str, Any]],
        accepts: Callable[[S], bool],
        keeps_previous: bool | None = None,
        scenarios: Iterable[str] = SCENARIOS,
    ) -> None:
        """Run the scenarios; an AssertionError names the scenario and what broke.

        `new_secret` makes a fresh credential on the target and returns its secret value (each
        scenario rotates its own). `accepts` says whether the target accepts a parsed value.
        `keeps_previous`: does AWSPREVIOUS keep working after a rotation (issuer shapes,
        alternating users) or not (one value at a time)? Defaults to the rotator's own
        `keeps_previous` attribute, which `rotators.custom`'s shapes set.
        """
        rot = rotator if isinstance(rotator, Rotator) else rotator()
        keeps = keeps_previous if keeps_previous is not None else getattr(rot, "keeps_previous", None)
        if not isinstance(keeps, bool):
            raise TypeError(
                "Say whether AWSPREVIOUS keeps working after a rotation: keeps_previous=True or False"
            )
        run = _Run(self.sm, rot, new_secret, accepts, keeps)
        wanted = list(scenarios)
        unknown = sorted(set(wanted) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"Unknown scenarios {unknown}: choose from {list(SCENARIOS)}")
        with run.instrumented():
            for name in wanted:
                try:
                    getattr(run, name)()
                except AssertionError as exc:
                    raise AssertionError(run.scrub(f"[{name}] {exc}")) from None
        output = self._read_output() if self._read_output else ""
        records = self._records() if self._records else []
        run.assert_nothing_leaked([output, *(f"{r.getMessage()} {r.__dict__}" for r in records)])


class JsonLines(logging.Handler):
    """The package's records as Lambda would print them (the Powertools JSON formatter)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logger.registered_formatter)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _Run(Generic[S]):
    """One `check`: the rotator under test, its secrets, and what the kit has seen."""

    def __init__(
        self,
        sm: LocalSecretsManager,
        rotator: Rotator[S],
        new_secret: Callable[[], str | Mapping[str, Any]],
        accepts: Callable[[S], bool],
        keeps_previous: bool,
    ) -> None:
        self.sm, self.rot, self.new_secret, self.accepts = sm, rotator, new_secret, accepts
        self.keeps = keeps_previous
        self.arn = ""
        self.arns: list[str] = []
        self.made: dict[str, list[str]] = {}  # per secret: every value make_pending returned
        self.plan: dict[str, str] = {}  # hook -> "before" (fail) or "after" (crash), fired once
        self.secrets: set[str] = set()
        self.errors: list[str] = []
        self.lines: list[str] = []

    # -- instrumentation ---------------------------------------------------------------------------
    @contextmanager
    def instrumented(self) -> Iterator[None]:
        package_logger = logging.getLogger(logger.name)
        handler = JsonLines(self.lines)
        level = logger.log_level
        package_logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        for hook in HOOKS:
            setattr(self.rot, hook, self._wrap(hook, getattr(self.rot, hook)))
        store = self.rot.store
        store.move_stage = self._wrap_move_stage(store.move_stage)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for hook in HOOKS:
                delattr(self.rot, hook)
            del store.move_stage
            logger.setLevel(level)
            package_logger.removeHandler(handler)

    def _wrap(self, hook: str, original: Callable[[RotationContext[S]], Any]) -> Callable[..., Any]:
        def instrumented(ctx: RotationContext[S]) -> Any:
            mode = self.plan.pop(hook, None)
            if mode == "before":
                held = ctx.current if hook == "make_pending" else ctx.pending
                quoted = [self.rot.render(held), *self.rot.sensitive_values(held)]
                raise InjectedFault(f"the target refused {' / '.join(quoted)}")
            result = original(ctx)
            if hook == "make_pending":
                text = self.rot.render(result)
                self.made[self.arn].append(text)
                self._note(text)
            if mode == "after":
                raise SimulatedCrash(f"the process died right after {hook}")
            return result

        return instrumented

    def _wrap_move_stage(self, original: Callable[..., None]) -> Callable[..., None]:
        def instrumented(secret_id: str, stage: str, **kwargs: Any) -> None:
            original(secret_id, stage, **kwargs)
            if stage == AWSCURRENT and self.plan.pop("move_stage", None) == "after":
                raise SimulatedCrash("the process died between finishSecret's two label moves")

        return instrumented

    def _note(self, text: str) -> None:
        self.secrets.add(text)
        with suppress(RotationError):  # not the rotator's format: the whole string is watched anyway
            self.secrets.update(
                s for s in self.rot.sensitive_values(self.rot.parse(text, where="a value")) if s
            )

    def scrub(self, text: str) -> str:
        return redact(text, self.secrets)

    # -- playing Secrets Manager -------------------------------------------------------------------
    def new(self) -> None:
        value = self.new_secret()
        text = value if isinstance(value, str) else json.dumps(dict(value))
        self._note(text)
        name = f"conformance-{uuid.uuid4().hex[:12]}"
        self.arn = self.sm.client.create_secret(Name=name, SecretString=text)["ARN"]
        self.arns.append(self.arn)
        self.made[self.arn] = []

    def start(self) -> str:
        return self.sm.start_rotation(self.arn)

    def step(self, token: str, step: str, *, fails: bool = False) -> RotationError | None:
        event = {"SecretId": self.arn, "ClientRequestToken": token, "Step": step}
        try:
            self.rot.handle(event, None)
        except RotationError as exc:
            self.errors.append(str(exc))
            if not fails:
                raise AssertionError(f"{step} failed: {type(exc).__name__}: {exc}") from None
            return exc
        except SimulatedCrash:
            if not fails:
                raise
            return None
        except Exception as exc:
            raise AssertionError(f"{step} raised {type(exc).__name__}, not a RotationError: {exc}") from None
        if fails:
            raise AssertionError(f"{step} succeeded where it had to fail")
        return None

    def rotate(self, token: str | None = None) -> None:
        token = token or self.start()
        for step in STEPS:
            self.step(token, step)

    def labels(self) -> dict[str, frozenset[str]]:
        found = self.sm.client.describe_secret(SecretId=self.arn)["VersionIdsToStages"]
        return {version: frozenset(stages) for version, stages in found.items() if stages}

    def text(self, stage: str, version_id: str | None = None) -> str | None:
        kwargs = {"SecretId": self.arn, "VersionStage": stage}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return self.sm.client.get_secret_value(**kwargs)["SecretString"]
        except self.sm.client.exceptions.ResourceNotFoundException:
            return None

    def current(self) -> str:
        text = self.text(AWSCURRENT)
        assert text is not None, "the secret has no AWSCURRENT value"
        return text

    def values(self, arn: str) -> dict[str, str]:
        """Every value this secret ever held or the rotator made for it, and where it came from."""
        found: dict[str, str] = {}
        listed = self.sm.client.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]
        for version in listed:
            try:
                got = self.sm.client.get_secret_value(SecretId=arn, VersionId=version["VersionId"])
            except self.sm.client.exceptions.ResourceNotFoundException:
                continue  # an empty version RotateSecret staged
            stages = ", ".join(version.get("VersionStages", [])) or "no label"
            found.setdefault(got["SecretString"], f"version {version['VersionId']} ({stages})")
        for text in self.made.get(arn, []):
            found.setdefault(text, "a value make_pending returned that was never stored")
        return found

    def works(self, text: str) -> bool:
        return bool(self.accepts(self.rot.parse(text, where="the conformance kit's check")))

    # -- the invariants ------------------------------------------------------------------------------
    def assert_finished(self, before: str) -> None:
        labels = self.labels()
        for stage, count in ((AWSCURRENT, 1), (AWSPREVIOUS, 1), (AWSPENDING, 0)):
            holders = [v for v, stages in labels.items() if stage in stages]
            assert len(holders) == count, f"{len(holders)} versions hold {stage} after a finished rotation"
        assert self.text(AWSPREVIOUS) == before, "AWSPREVIOUS is not the value AWSCURRENT held before"
        assert self.current() != before, "AWSCURRENT did not change"

    def assert_only_labelled_values_work(self, when: str) -> None:
        current, previous = self.current(), self.text(AWSPREVIOUS)
        allowed = {current: AWSCURRENT}
        if self.keeps and previous is not None:
            allowed[previous] = AWSPREVIOUS
        for text, where in self.values(self.arn).items():
            works = self.works(text)
            if text in allowed:
                assert works, f"after {when}, {allowed[text]} ({where}) does not work"
            elif works:
                hint = (
                    "a key minted and then lost: pass the rotation token to the service as an "
                    "idempotency key, so a retry gets the same key back"
                    if "never stored" in where
                    else "declare keeps_previous=True if the service keeps the old value valid"
                    if text == previous
                    else "a value no label holds must not work: revoke it"
                )
                raise AssertionError(f"after {when}, {where} still works: {hint}")

    def assert_nothing_leaked(self, outputs: Sequence[str]) -> None:
        for arn in self.arns:
            for text in self.values(arn):
                self._note(text)
        seen = "\n".join([*self.lines, *self.errors, *outputs])
        leaked = sum(1 for s in self.secrets if s and s in seen)
        assert not leaked, (
            f"[no_secret_in_logs] {leaked} secret value(s) appeared in a log line, an error message "
            "or the output: log key ids and names, never values"
        )

    # -- the scenarios ---------------------------------------------------------------------------
    def two_rotations(self) -> None:
        self.new()
        for number in (1, 2):
            before = self.current()
            self.rotate()
            self.assert_finished(before)
            self.assert_only_labelled_values_work(f"rotation {number}")

    def repeated_steps(self) -> None:
        self.new()
        before, token = self.current(), self.start()
        for step in STEPS:
            self.step(token, step)
            first = self.text(AWSPENDING, token) if step == "createSecret" else None
            self.step(token, step)
            if step == "createSecret":
                assert self.text(AWSPENDING, token) == first, "a repeated createSecret changed AWSPENDING"
        assert len(self.made[self.arn]) == 1, "a repeated createSecret made a new value"
        self.assert_finished(before)
        self.assert_only_labelled_values_work("every step run twice")

    def abandoned_pending(self) -> None:
        self.new()
        self.rotate()
        abandoned = self.start()
        self.step(abandoned, "createSecret")
        # An operator cancels it (CancelRotateSecret leaves AWSPENDING behind; they remove it).
        self.sm.client.update_secret_version_stage(
            SecretId=self.arn, VersionStage=AWSPENDING, RemoveFromVersionId=abandoned
        )
        before = self.current()
        self.rotate()
        self.assert_finished(before)
        self.assert_only_labelled_values_work("a rotation that followed an abandoned one")
        labels = self.labels()
        for step in STEPS:
            error = self.step(abandoned, step, fails=True)
            assert isinstance(error, VersionStageError), f"a stale token's {step} raised {error!r}"
        assert self.labels() == labels, "a stale token moved a label"

    def crash_and_retry(self) -> None:
        self.new()
        for hook, failing in [*HOOKS.items(), ("move_stage", "finishSecret")]:
            before, token = self.current(), self.start()
            labels = self.labels()
            self.plan[hook] = "after"
            for step in STEPS[: STEPS.index(failing)]:
                self.step(token, step)
            self.step(token, failing, fails=True)
            if hook != "move_stage":
                assert self.labels() == labels, f"a crash after {hook} moved a label"
            # Secrets Manager reattempts the rotation with the same token.
            for step in STEPS:
                self.step(token, step)
            self.assert_finished(before)
            self.assert_only_labelled_values_work(f"a crash right after {hook} and a retry")

    def failing_hooks(self) -> None:
        self.new()
        for hook, failing in HOOKS.items():
            before, token = self.current(), self.start()
            done = STEPS.index(failing)
            for step in STEPS[:done]:
                self.step(token, step)
            labels, pending = self.labels(), self.text(AWSPENDING, token)
            self.plan[hook] = "before"
            error = self.step(token, failing, fails=True)
            assert error is not None
            assert self.labels() == labels, f"a failure in {hook} moved a label"
            assert self.text(AWSPENDING, token) == pending, f"a failure in {hook} changed AWSPENDING"
            assert self.scrub(str(error)) == str(error), f"the error of a failing {hook} quotes a secret"
            if self.keeps or hook != "test_pending":
                assert self.works(before), f"AWSCURRENT stopped working after a failure in {hook}"
            else:
                assert self.works(before) or (pending is not None and self.works(pending)), (
                    f"no staged version works after a failure in {hook}"
                )
            for step in STEPS[done:]:  # the retry
                self.step(token, step)
            self.assert_finished(before)
            self.assert_only_labelled_values_work(f"a failure in {hook} and a retry")


@pytest.fixture(scope="session")
def rotators_local_sm() -> Iterator[LocalSecretsManager]:
    """One local Secrets Manager for the session; override this fixture to share your own."""
    sm = LocalSecretsManager()
    yield sm
    sm.close()


@pytest.fixture
def rotator_conformance(
    rotators_local_sm: LocalSecretsManager,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> RotatorConformance:
    """The kit, with the environment pointing rotators at the local Secrets Manager."""
    for key, value in rotators_local_sm.environment().items():
        monkeypatch.setenv(key, value)

    def read_output() -> str:
        out, err = capfd.readouterr()
        sys.stdout.write(out)  # written back, so other checks of the test still see it
        sys.stderr.write(err)
        return out + err

    return RotatorConformance(rotators_local_sm, read_output=read_output, records=lambda: caplog.records)
