"""Rotator: the four-step state machine of a Secrets Manager rotation and every label move.

It knows nothing about databases. A subclass says how to read and write its secret value
and fills three hooks: make the pending value, apply it to the target, test it.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import SecretsManagerEvent

from rotators.errors import (
    EventError,
    RotationError,
    RotationNotEnabledError,
    SecretNotFoundError,
    VersionStageError,
    clipped,
    redact,
    shown,
)
from rotators.log import logger, metrics, tracer
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, ROTATORS_TESTED, SecretMeta, SecretStore
from rotators.settings import in_lambda_runtime

S = TypeVar("S")

# Bounds of what a rotator reads: JSON nesting (a secret or the event) and the event's fields,
# as Secrets Manager's API bounds them (SecretId 2,048 characters, ClientRequestToken 64).
MAX_DEPTH = 32
MAX_SECRET_ID = 2048
MAX_TOKEN = 64
MAX_ROTATION_TOKEN = 4096
MAX_EVENT_CHARS = 16_384
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


def deeper_than(value: object, limit: int) -> bool:
    """Whether parsed JSON nests more than `limit` arrays or objects; iterative, so a hostile
    value cannot raise RecursionError here."""
    todo: list[tuple[object, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            todo.extend((child, depth + 1) for child in children)
    return False


def _size(value: object) -> int:
    """About how many characters the value takes as JSON (strings and keys counted)."""
    total, todo = 0, [value]
    while todo and total <= MAX_EVENT_CHARS:
        item = todo.pop()
        if isinstance(item, Mapping):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
        total += len(item) if isinstance(item, str) else 1
    return total


class Step(StrEnum):
    CREATE = "createSecret"
    SET = "setSecret"
    TEST = "testSecret"
    FINISH = "finishSecret"

    @property
    def snake_case(self) -> str:
        """`create_secret`: the spelling some AWS documentation shows."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.value).lower()

    @classmethod
    def parse(cls, raw: object) -> Step:
        """Exactly as Secrets Manager sends it (`createSecret`), or the documented `create_secret`;
        any other spelling is refused, so no two spellings of one event run different code."""
        for step in cls:
            if raw in (step.value, step.snake_case):
                return step
        choices = ", ".join(s.value for s in cls)
        raise EventError(
            f"Unknown rotation Step {shown(raw, 40)}: expected one of {choices} (as Secrets Manager "
            "sends it; create_secret and the like are accepted too)"
        )


STEPS: tuple[Step, ...] = tuple(Step)  # in the order Secrets Manager calls them


@dataclass(frozen=True)
class RotationEvent:
    """The event Secrets Manager sends, parsed once. RotationToken is sensitive: never shown."""

    secret_id: str
    token: str
    step: Step
    rotation_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RotationEvent:
        if not isinstance(raw, Mapping):
            raise EventError("The event is not a JSON object: expected SecretId, ClientRequestToken, Step")
        if deeper_than(raw, MAX_DEPTH):
            raise EventError(f"The event is nested more than {MAX_DEPTH} levels deep: not a rotation event")
        if _size(raw) > MAX_EVENT_CHARS:
            raise EventError(
                f"The event is larger than {MAX_EVENT_CHARS} characters: a rotation event holds "
                "SecretId, ClientRequestToken, Step and RotationToken only"
            )
        missing = [k for k in ("SecretId", "ClientRequestToken", "Step") if not raw.get(k)]
        if missing:
            raise EventError(
                f"The rotation event lacks {', '.join(missing)}: Secrets Manager sends "
                "SecretId, ClientRequestToken and Step (see events/ for samples)"
            )
        event = SecretsManagerEvent(dict(raw))
        limits = {"SecretId": MAX_SECRET_ID, "ClientRequestToken": MAX_TOKEN, "Step": 40}
        if raw.get("RotationToken") is not None:
            limits["RotationToken"] = MAX_ROTATION_TOKEN
        for key, limit in limits.items():
            value = raw[key]
            if not isinstance(value, str):
                raise EventError(f"The event's {key} must be a string")
            if len(value) > limit:
                raise EventError(f"The event's {key} is longer than {limit} characters ({len(value)})")
            if _CONTROL.search(value):
                raise EventError(f"The event's {key} holds a control character (NUL, newline ...)")
        rotation_token = raw.get("RotationToken")
        return cls(
            secret_id=event.secret_id,
            token=event.client_request_token,
            step=Step.parse(event.step),
            rotation_token=rotation_token,
        )


class RotationContext(Generic[S]):
    """One invocation: the event, the secret's metadata, and its staged values read on demand."""

    def __init__(self, rotator: Rotator[S], event: RotationEvent, meta: SecretMeta) -> None:
        self.rotator = rotator
        self.event = event
        self.meta = meta
        self.store = rotator.store
        self._seen: list[str] = []

    @property
    def secret_id(self) -> str:
        return self.event.secret_id

    @cached_property
    def current(self) -> S:
        return self._read(AWSCURRENT, self.meta.version_with(AWSCURRENT))

    @cached_property
    def pending(self) -> S:
        return self._read(AWSPENDING, self.event.token)

    @cached_property
    def previous(self) -> S | None:
        """AWSPREVIOUS, or None on a secret that was never rotated."""
        version = self.meta.version_with(AWSPREVIOUS)
        return None if version is None else self._read(AWSPREVIOUS, version)

    def _read(self, stage: str, version_id: str | None = None) -> S:
        text = self.store.get(self.secret_id, stage=stage, version_id=version_id)
        self.remember(text)
        value = self.rotator.parse(text, where=f"the {stage} version of {shown(self.secret_id)}")
        self.remember(*self.rotator.sensitive_values(value))
        return value

    def confirm_pending(self) -> None:
        """Called right before a change the target cannot take back: a newer rotation may have
        taken AWSPENDING since this step began, and its password must not be overwritten."""
        meta = self.store.describe(self.secret_id)
        if AWSPENDING not in meta.stages_of(self.event.token):
            raise VersionStageError(
                f"Version {shown(self.event.token)} of {shown(meta.name)} lost AWSPENDING while this "
                "step ran: a newer rotation superseded it, so nothing was changed"
            )

    def remember(self, *sensitive: str) -> None:
        """Note secret values so that error messages can be scrubbed of them."""
        self._seen.extend(sensitive)

    def scrub(self, text: str) -> str:
        return redact(text, self._seen)


class Rotator(ABC, Generic[S]):
    """Owns the rotation protocol; subclasses own only their secret format and three hooks."""

    kind: str = "custom"

    def __init__(self, store: SecretStore | None = None) -> None:
        self.store = store or SecretStore()
        # Flush EMF metrics after every invocation (and a ColdStart metric on the first); trace
        # the invocation without capturing its response or error, either of which may hold a secret.
        self._instrumented = metrics.log_metrics(capture_cold_start_metric=True)(tracer.handler(self._handle))
        if in_lambda_runtime():
            self.prepare()

    # -- the secret value format -------------------------------------------------------
    @abstractmethod
    def parse(self, text: str, *, where: str) -> S:
        """Turn a SecretString into the typed value; raise SecretFormatError naming `where`."""

    @abstractmethod
    def render(self, value: S) -> str:
        """Turn the typed value back into a SecretString."""

    def sensitive_values(self, value: S) -> list[str]:
        """The parts of a value (e.g. a password) that must never be shown, beyond its string."""
        return []

    # -- the three hooks ---------------------------------------------------------------
    @abstractmethod
    def make_pending(self, ctx: RotationContext[S]) -> S:
        """Build the next value from ctx.current (createSecret)."""

    @abstractmethod
    def set_pending(self, ctx: RotationContext[S]) -> None:
        """Make the target accept ctx.pending; succeed if it already does (setSecret)."""

    @abstractmethod
    def test_pending(self, ctx: RotationContext[S]) -> None:
        """Prove ctx.pending works against the target (testSecret)."""

    def prepare(self) -> None:
        """Work that every invocation needs, done at INIT: Lambda runs INIT with a burst of host
        CPU and an invocation at the memory's share of one vCPU (a seventh at 256 MB). Best
        effort: what fails here fails again in the step that needs it, with that step's error."""
        self.store.prepare()

    # -- the protocol ----------------------------------------------------------------------
    def handle(self, raw_event: Mapping[str, Any], context: object = None) -> None:
        """The Lambda entry point: Secrets Manager calls it once per step."""
        self._instrumented(raw_event, context)

    def _handle(self, raw_event: Mapping[str, Any], context: object) -> None:
        metrics.add_dimension(name="engine", value=self.kind)
        try:
            event = RotationEvent.parse(raw_event)
        except EventError as exc:
            metrics.add_dimension(name="step", value="invalid")
            metrics.add_metric(name="StepFailed", unit=MetricUnit.Count, value=1)
            logger.error(f"rejected the event: {exc}", extra={"error": type(exc).__name__})
            raise
        logger.set_correlation_id(event.token)
        metrics.add_dimension(name="step", value=event.step.value)
        started = time.perf_counter()
        with logger.append_context_keys(secret_id=event.secret_id, step=event.step.value, engine=self.kind):
            try:
                self._handle_event(event)
                elapsed_ms = 1000 * (time.perf_counter() - started)
                metrics.add_metric(name="StepSucceeded", unit=MetricUnit.Count, value=1)
                logger.info(f"{event.step.value} succeeded", extra={"duration_ms": round(elapsed_ms, 1)})
            except Exception:
                metrics.add_metric(name="StepFailed", unit=MetricUnit.Count, value=1)
                raise
            finally:
                # Measured here, so that a BaseException (SystemExit, KeyboardInterrupt) ending the
                # step is not replaced by an UnboundLocalError.
                elapsed_ms = 1000 * (time.perf_counter() - started)
                metrics.add_metric(name="StepDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
                logger.remove_keys(["strategy"])  # learnt from the secret; not carried to the next call

    def _handle_event(self, event: RotationEvent) -> None:
        ctx: RotationContext[S] | None = None
        try:
            meta = self.store.describe(event.secret_id)
            logger.append_keys(secret_id=meta.arn)
            ctx = RotationContext(self, event, meta)
            if self._guard(ctx):
                self._run(ctx)
        except RotationError as exc:
            logger.error(f"{event.step.value} failed: {exc}", extra={"error": type(exc).__name__})
            raise
        except Exception as exc:  # a driver or SDK error: scrub it, then raise it typed
            message = clipped(ctx.scrub(str(exc)) if ctx else redact(str(exc), []), 600)
            logger.error(f"{event.step.value} failed: {message}", extra={"error": type(exc).__name__})
            raise RotationError(f"{event.step.value} failed: {type(exc).__name__}: {message}") from None

    def _guard(self, ctx: RotationContext[S]) -> bool:
        """Secrets Manager's contract; False when there is nothing left to do."""
        meta, token = ctx.meta, ctx.event.token
        if not meta.rotation_enabled:
            raise RotationNotEnabledError(
                f"Rotation is not enabled for {shown(meta.name)}: turn it on with "
                "`aws secretsmanager rotate-secret --rotation-lambda-arn ...` before invoking steps"
            )
        if token not in meta.versions:
            raise VersionStageError(
                f"Version {shown(token)} is not a version of {shown(meta.name)}: the ClientRequestToken "
                "must be the version Secrets Manager created when the rotation started"
            )
        stages = meta.stages_of(token)
        if AWSCURRENT in stages:
            if AWSPENDING in stages:  # a finishSecret that stopped between its two label moves
                self._drop_pending(ctx)
            logger.info("version is already AWSCURRENT: nothing to do")
            return False
        if AWSPENDING not in stages:
            raise VersionStageError(
                f"Version {shown(token)} of {shown(meta.name)} is not AWSPENDING: this rotation was "
                "superseded or abandoned; start a new one with `aws secretsmanager rotate-secret`"
            )
        return True

    def _run(self, ctx: RotationContext[S]) -> None:
        step = ctx.event.step
        if step is Step.CREATE:
            self._create(ctx)
        elif step is Step.SET:
            self.set_pending(ctx)
            logger.info("pending secret set on the target")
        elif step is Step.TEST:
            self.test_pending(ctx)
            self._mark_tested(ctx)
            logger.info("pending secret tested")
        else:
            self._finish(ctx)

    def _create(self, ctx: RotationContext[S]) -> None:
        ctx.current  # noqa: B018 - read and validate AWSCURRENT before anything else
        token = ctx.event.token
        if self.store.find(ctx.secret_id, stage=AWSPENDING, version_id=token) is not None:
            logger.info("pending secret already staged for this token: nothing to create")
            return
        pending = self.make_pending(ctx)
        ctx.remember(*self.sensitive_values(pending))
        value = self.render(pending)
        ctx.remember(value)
        try:
            self.store.put_pending(ctx.secret_id, token, value, ctx.event.rotation_token)
        except Exception:
            # A concurrent createSecret for the same token may have won the race: its value stands.
            if self.store.find(ctx.secret_id, stage=AWSPENDING, version_id=token) is None:
                raise
            logger.info("pending secret was staged by a concurrent invocation")
            return
        logger.info("pending secret staged")

    def _mark_tested(self, ctx: RotationContext[S]) -> None:
        """Label the version testSecret passed; the label leaves the version it marked before."""
        token = ctx.event.token
        if ROTATORS_TESTED in ctx.meta.stages_of(token):
            return
        marked = ctx.meta.version_with(ROTATORS_TESTED)
        try:
            self.store.move_stage(ctx.secret_id, ROTATORS_TESTED, to_version=token, from_version=marked)
        except Exception:
            if ROTATORS_TESTED not in self.store.describe(ctx.secret_id).stages_of(token):
                raise  # not a concurrent testSecret that marked it first

    def _finish(self, ctx: RotationContext[S]) -> None:
        token = ctx.event.token
        current = ctx.meta.version_with(AWSCURRENT)
        if current is None:
            raise SecretNotFoundError(f"Secret {shown(ctx.meta.name)} has no AWSCURRENT version")
        if ROTATORS_TESTED not in ctx.meta.stages_of(token):
            # finishSecret without a passed testSecret (called out of order, or a rotation begun
            # by an older release): AWSCURRENT moves only to a version that was tested.
            logger.info(f"the pending version carries no {ROTATORS_TESTED} label: testing it first")
            self.test_pending(ctx)
        # A concurrent finishSecret, or a call the SDK sent again after its answer was lost, may
        # have made either move already: then the label is where it should be, and the step is done.
        try:
            self.store.move_stage(ctx.secret_id, AWSCURRENT, to_version=token, from_version=current)
        except Exception:
            if AWSCURRENT not in self.store.describe(ctx.secret_id).stages_of(token):
                raise
        self._drop_pending(ctx)
        logger.info("AWSCURRENT moved to the new version", extra={"previous_version": current})

    def _drop_pending(self, ctx: RotationContext[S]) -> None:
        """AWSPENDING off the event's version. A concurrent step, or a call the SDK sent again after
        its answer was lost, may have taken it off already: then the step is done, not failed."""
        try:
            self.store.remove_stage(ctx.secret_id, AWSPENDING, from_version=ctx.event.token)
        except Exception:
            if AWSPENDING in self.store.describe(ctx.secret_id).stages_of(ctx.event.token):
                raise
