"""`rotators doctor`: explain a stuck or failed rotation in plain words, and put right what is safe.

It reads a secret's rotation settings, labels and versions, logs in with each version the way a
rotation would (its own user and TLS settings, never weaker than AWSCURRENT's, never at another
server), asks CloudTrail what the last rotation attempt did when it may, and names the fix.
`--fix` only moves labels: it takes a stale AWSPENDING off, or puts a version that logs in back
as AWSCURRENT. It never invents a password, and it never prints a secret value.

Exit codes: 0 healthy, 1 failing, 2 usage error, 3 unreachable, 4 pending (the worst secret's
with --all).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Literal, TypeVar

from rotators.cli.check import Check, engine_of, master_checks, rotator_serving, safe_error
from rotators.database import DatabaseRotator, DatabaseSecret, address, no_weaker
from rotators.errors import DatabaseUnavailableError, RotationError, clipped, shown
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretStore, VersionInfo

Status = Literal["healthy", "pending", "failing", "unreachable"]
SEVERITY: tuple[Status, ...] = ("healthy", "pending", "unreachable", "failing")  # worst last
SUMMARY_ORDER: tuple[Status, ...] = ("healthy", "pending", "failing", "unreachable")
EXIT_CODES: dict[Status, int] = {"healthy": 0, "failing": 1, "unreachable": 3, "pending": 4}
AWS_STAGES = frozenset({AWSCURRENT, AWSPENDING, AWSPREVIOUS})
# Unlabelled versions are tried newest first, this many at most: an abandoned rotation's is recent.
RECENT_UNLABELLED = 5
# What CloudTrail is asked about; the newest page of each (LookupEvents allows two calls a second).
ROTATION_EVENTS = ("RotationSucceeded", "RotationFailed", "RotationAbandoned", "TestRotationFailed")

LOGS_IN, REFUSED, UNREACHABLE = "logs in", "refused", "unreachable"
NOT_TRIED, NO_VALUE, UNREADABLE = "not tried", "no value", "unreadable"

T = TypeVar("T")


@dataclass(frozen=True)
class VersionReport:
    """One version of the secret and what its login did."""

    version_id: str
    stages: list[str]
    created: datetime | None
    username: str | None
    outcome: str
    detail: str = ""

    @property
    def labels(self) -> str:
        """Secrets Manager's labels (a custom one, such as ROTATORS_TESTED, only in --json)."""
        return " ".join(s for s in self.stages if s in AWS_STAGES) or "no label"


@dataclass(frozen=True)
class Finding:
    status: Status
    problem: str
    advice: str = ""  # what a person must do, when --fix may not


@dataclass(frozen=True)
class Fix:
    """One label move --fix may make; no fix ever writes a value."""

    action: str
    stage: str
    remove_from: str
    move_to: str | None = None

    def command(self, arn: str) -> str:
        moves = f" --move-to-version-id {self.move_to}" if self.move_to else ""
        return (
            f"aws secretsmanager update-secret-version-stage --secret-id {shlex.quote(arn)} "
            f"--version-stage {self.stage}{moves} --remove-from-version-id {self.remove_from}"
        )

    def apply(self, store: SecretStore, arn: str) -> None:
        if self.move_to:
            store.move_stage(arn, self.stage, to_version=self.move_to, from_version=self.remove_from)
        else:
            store.remove_stage(arn, self.stage, from_version=self.remove_from)


@dataclass
class Diagnosis:
    secret: str
    arn: str
    rotation: str = ""
    strategy: str = ""
    versions: list[VersionReport] = field(default_factory=list)
    untried: int = 0  # older unlabelled versions, beyond RECENT_UNLABELLED
    master: str = ""
    partner: str = ""
    last_attempt: str = ""
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return max((f.status for f in self.findings), key=SEVERITY.index, default="healthy")

    @property
    def headline(self) -> str:
        worst = [f for f in self.findings if f.status == self.status]
        return worst[0].problem if worst else "AWSCURRENT logs in and no rotation is pending"

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["status"], found["headline"] = self.status, self.headline
        found["fixes"] = [{**asdict(fix), "command": fix.command(self.arn)} for fix in self.fixes]
        return found


# -- CloudTrail: what the last rotation attempt did (optional) ------------------------------------
def cloudtrail_client() -> Any:
    """CloudTrail in the region of the Secrets Manager client."""
    import boto3
    from botocore.config import Config

    region = SecretStore().client.meta.region_name
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=10)
    return boto3.client("cloudtrail", region_name=region, config=config)


@dataclass(frozen=True)
class _Event:
    name: str
    time: datetime
    secret: str
    error: str


class CloudTrailHistory:
    """The newest rotation events CloudTrail holds, looked up once and shared by every secret of a
    run. Without cloudtrail:LookupEvents it says so and the diagnosis goes on without it."""

    def __init__(self, client: Callable[[], Any] | None) -> None:
        self._client = client
        self._events: list[_Event] | None = None
        self._skipped = "" if client else "skipped: --no-cloudtrail"

    def last_attempt(self, arn: str, name: str) -> str:
        if self._client and self._events is None and not self._skipped:
            self._load(self._client)
        if self._skipped or self._events is None:
            return self._skipped
        mine = [e for e in self._events if e.secret in (arn, name)]
        if not mine:
            return f"no {', '.join(ROTATION_EVENTS)} among CloudTrail's latest events"
        last = max(mine, key=lambda e: e.time)
        return f"{last.name} at {_when(last.time)}" + (f": {clipped(last.error, 300)}" if last.error else "")

    def _load(self, client: Callable[[], Any]) -> None:
        events: list[_Event] = []
        try:
            cloudtrail = client()
            for name in ROTATION_EVENTS:
                lookup = [{"AttributeKey": "EventName", "AttributeValue": name}]
                page = cloudtrail.lookup_events(LookupAttributes=lookup, MaxResults=50)
                events += [_event(found) for found in page.get("Events", [])]
        except Exception as exc:  # no permission, no credentials, no network: say so, go on
            reason = safe_error(exc)
            self._skipped = (
                "skipped: no cloudtrail:LookupEvents" if "AccessDenied" in reason else f"skipped: {reason}"
            )
            return
        self._events = events


def _event(found: dict[str, Any]) -> _Event:
    try:
        record = json.loads(found.get("CloudTrailEvent") or "{}")
    except ValueError:
        record = {}
    extra = record.get("additionalEventData") or {}
    return _Event(
        str(found.get("EventName", "")),
        found["EventTime"],
        str(extra.get("SecretId", "")),
        str(record.get("errorMessage", "")),
    )


# -- logging in with each version -------------------------------------------------------------------
class _Prober:
    """Logs in with each version as the rotation would; once the server does not answer, it stops
    trying (every further login would wait for the same timeout)."""

    def __init__(self, rotator: DatabaseRotator[Any], store: SecretStore, arn: str, current: DatabaseSecret):
        self.rotator, self.store, self.arn, self.current = rotator, store, arn, current
        self._tried: dict[tuple[str, str], tuple[str, str]] = {}
        self.down = ""

    def report(self, version: VersionInfo) -> VersionReport:
        def row(outcome: str, detail: str = "", username: str | None = None) -> VersionReport:
            return VersionReport(
                version.version_id, sorted(version.stages), version.created, username, outcome, detail
            )

        if AWSCURRENT in version.stages:
            secret = self.current
        else:
            text = self.store.find_version(self.arn, version.version_id)
            if text is None:
                return row(NO_VALUE, "the version holds no value (createSecret never stored one)")
            try:
                secret = self.rotator.parse(text, where=f"version {version.version_id}")
            except RotationError as exc:
                return row(UNREADABLE, str(exc))
        if secret.target != self.current.target:
            return row(NOT_TRIED, "it points at another server or database than AWSCURRENT", secret.username)
        if self.down:
            return row(NOT_TRIED, "the server did not answer", secret.username)
        login = no_weaker(secret, self.current)
        outcome, detail = self._tried.get((login.username, login.password)) or self._login(login)
        self._tried[(login.username, login.password)] = (outcome, detail)
        return row(outcome, detail, secret.username)

    def _login(self, login: DatabaseSecret) -> tuple[str, str]:
        return self._outcome(lambda: self.rotator.connect(login, login.username, login.password), login)

    def master_login(self, master: DatabaseSecret) -> tuple[str, str]:
        if self.down:
            return NOT_TRIED, "the server did not answer"
        return self._outcome(lambda: self.rotator.master_session(master, self.current), None)

    def _outcome(self, session: Callable[[], Any], probed: DatabaseSecret | None) -> tuple[str, str]:
        try:
            with session() as conn:
                if probed is not None:
                    self.rotator.probe(conn, probed.username)
        except DatabaseUnavailableError as exc:
            self.down = _one_line(exc)
            return UNREACHABLE, self.down
        except RotationError as exc:  # refused, or a login no password can fix (expired, locked)
            return REFUSED, _one_line(exc)
        return LOGS_IN, ""


# -- the diagnosis ----------------------------------------------------------------------------------
def diagnose(
    secret_id: str, store: SecretStore, history: CloudTrailHistory, stale_after: timedelta
) -> Diagnosis:
    try:
        described = store.client.describe_secret(SecretId=secret_id)
    except Exception as exc:
        problem = f"the secret cannot be described: {safe_error(exc)}"
        advice = "check the secret id, the region and secretsmanager:DescribeSecret"
        return Diagnosis(secret_id, secret_id, findings=[Finding("failing", problem, advice)])
    arn = described["ARN"]
    diagnosis = Diagnosis(described["Name"], arn, rotation=_rotation(described))
    diagnosis.last_attempt = history.last_attempt(arn, described["Name"])
    engine = _examine(diagnosis, store, store.versions(arn), stale_after)
    if not described.get("RotationEnabled"):
        diagnosis.findings.append(_rotation_off(arn, described.get("RotationLambdaARN"), engine))
    return diagnosis


def _examine(
    diagnosis: Diagnosis, store: SecretStore, versions: list[VersionInfo], stale_after: timedelta
) -> str | None:
    """Log in with the versions (and the master), judge, and name the fixes; the engine's name."""
    arn = diagnosis.arn
    text = store.find(arn, stage=AWSCURRENT)
    if text is None:
        problem = "no version holds AWSCURRENT"
        advice = (
            "store the working value as AWSCURRENT: aws secretsmanager put-secret-value (README: The secret)"
        )
        diagnosis.findings.append(Finding("failing", problem, advice))
        return None
    try:
        rotator = rotator_serving(engine_of(text) or "")
        current = rotator.parse(text, where=f"the AWSCURRENT version of {diagnosis.secret!r}")
    except RotationError as exc:
        diagnosis.findings.append(Finding("failing", str(exc), "fix the secret's JSON (README: The secret)"))
        return None
    strategy = "alternating users" if current.masterarn else "single user"
    diagnosis.strategy = (
        f"{rotator.kind}, {strategy} {shown(current.username)} at {clipped(address(current), 200)}"
    )
    labelled = [v for v in versions if v.stages & AWS_STAGES]
    unlabelled = [v for v in versions if not v.stages & AWS_STAGES]
    tried = labelled + unlabelled[:RECENT_UNLABELLED]
    prober = _Prober(rotator, store, arn, current)
    first = sorted(tried, key=lambda v: AWSCURRENT not in v.stages)  # AWSCURRENT first: is the server up?
    reports = {v.version_id: prober.report(v) for v in first}
    diagnosis.versions = [reports[v.version_id] for v in tried]
    diagnosis.untried = max(0, len(unlabelled) - RECENT_UNLABELLED)
    _judge(diagnosis, stale_after)
    if current.masterarn:
        _examine_master(diagnosis, rotator, store, prober)
        partner = rotator.partner(current.username)
        named = next((v for v in diagnosis.versions if v.username == partner), None)
        diagnosis.partner = f"{shown(partner)}: " + (
            f"version {named.version_id} ({named.labels}) {named.outcome}"
            if named
            else "no version names it yet (the first rotation creates it)"
        )
    return rotator.kind


def _examine_master(
    diagnosis: Diagnosis, rotator: DatabaseRotator[Any], store: SecretStore, prober: _Prober
) -> None:
    current = prober.current
    rows, master = _drained(master_checks(rotator, store, current))
    if master is None:
        diagnosis.master = rows[-1].detail
        diagnosis.findings.append(Finding("failing", f"the master secret: {rows[-1].detail}", rows[-1].fix))
        return
    outcome, detail = prober.master_login(master)
    diagnosis.master = f"{shown(master.username)} of {shown(current.masterarn)} {outcome}" + (
        f": {detail}" if detail else ""
    )
    if outcome == UNREACHABLE:
        diagnosis.findings.append(Finding("unreachable", f"the master could not log in: {detail}", _NETWORK))
    elif outcome == REFUSED:
        diagnosis.findings.append(
            Finding(
                "failing",
                f"the master secret's AWSCURRENT does not log in as {shown(master.username)}: the next "
                "rotation will fail at setSecret",
                f"put the master's working password in its AWSCURRENT (rotators doctor "
                f"{shlex.quote(str(current.masterarn))} tells which version works), then rotate again",
            )
        )


_NETWORK = (
    "check that the server is up and that the rotator can reach it (security groups, subnets, TLS "
    "settings); nothing is judged or changed until it answers: run rotators doctor again then"
)


def _judge(diagnosis: Diagnosis, stale_after: timedelta) -> None:
    """What is wrong, from the logins: the finding and the label moves that put it right."""
    versions = diagnosis.versions
    current = next(v for v in versions if AWSCURRENT in v.stages)
    pending = next((v for v in versions if AWSPENDING in v.stages and v is not current), None)
    if current.outcome == UNREACHABLE:
        diagnosis.findings.append(
            Finding("unreachable", f"the database did not answer: {current.detail}", _NETWORK)
        )
        return
    running = pending is not None and _age(pending) < stale_after
    if pending is not None and running:
        diagnosis.findings.append(_running(pending))
    if current.outcome == LOGS_IN:
        if pending is not None and not running:
            diagnosis.findings.append(_stuck(pending, diagnosis.arn))
            diagnosis.fixes.append(_take_pending_off(pending))
        return
    working = next((v for v in _candidates(versions, pending) if v.outcome == LOGS_IN), None)
    if working is None:
        _nothing_logs_in(diagnosis, current)
    elif not (running and working is pending):
        diagnosis.findings.append(_recoverable(current, working, pending))
        diagnosis.fixes.append(
            Fix(
                f"move AWSCURRENT to version {working.version_id} ({working.labels}), which logs in",
                AWSCURRENT,
                remove_from=current.version_id,
                move_to=working.version_id,
            )
        )
        if pending is not None:
            diagnosis.fixes.append(_take_pending_off(pending))


def _candidates(versions: list[VersionReport], pending: VersionReport | None) -> list[VersionReport]:
    """AWSPENDING first (a rotation that stopped after setSecret), then AWSPREVIOUS, then the
    unlabelled versions, newest first."""
    previous = [v for v in versions if AWSPREVIOUS in v.stages and AWSCURRENT not in v.stages]
    unlabelled = [v for v in versions if not set(v.stages) & AWS_STAGES]
    return ([pending] if pending else []) + previous + unlabelled


def _running(pending: VersionReport) -> Finding:
    return Finding(
        "pending",
        f"a rotation started {_ago(pending)} (AWSPENDING on version {pending.version_id}) may still "
        "be running",
        "wait, then run rotators doctor again; --stale-after 0 treats it as stuck now",
    )


def _stuck(pending: VersionReport, arn: str) -> Finding:
    stopped = {
        NO_VALUE: "before createSecret stored a value",
        LOGS_IN: "after setSecret and before finishSecret",
    }.get(pending.outcome, "before setSecret changed the password")
    return Finding(
        "pending",
        f"AWSPENDING has been on version {pending.version_id} since {_when(pending.created)} "
        f"({_ago(pending)}) and AWSCURRENT still logs in: a rotation stopped {stopped}, and Secrets "
        "Manager starts no other while AWSPENDING stays",
        f"after the fix, rotate again: aws secretsmanager rotate-secret --secret-id {shlex.quote(arn)}",
    )


def _recoverable(current: VersionReport, working: VersionReport, pending: VersionReport | None) -> Finding:
    if working is pending:
        problem = (
            f"setSecret changed the password to AWSPENDING's (version {working.version_id}, since "
            f"{_when(working.created)}), but the rotation stopped before finishSecret: AWSCURRENT no "
            "longer logs in"
        )
    else:
        problem = (
            f"AWSCURRENT does not log in as {shown(current.username)}, but version {working.version_id} "
            f"({working.labels}, created {_when(working.created)}) does: the password was changed outside "
            "Secrets Manager, or by a rotation that was abandoned"
        )
    return Finding("failing", problem, "the fix below puts the version that logs in back as AWSCURRENT")


def _nothing_logs_in(diagnosis: Diagnosis, current: VersionReport) -> None:
    if any(v.outcome == UNREACHABLE for v in diagnosis.versions):
        diagnosis.findings.append(
            Finding("unreachable", "the server stopped answering during the logins", _NETWORK)
        )
        return
    tried = sum(v.outcome in (LOGS_IN, REFUSED) for v in diagnosis.versions)
    diagnosis.findings.append(
        Finding(
            "failing",
            f"no version logs in as {shown(current.username)} ({tried} tried: {current.detail}): its "
            "password was changed outside Secrets Manager",
            "as a database administrator, set the password back to AWSCURRENT's value, or store the password "
            "that works as the new AWSCURRENT (aws secretsmanager put-secret-value --secret-id "
            f"{shlex.quote(diagnosis.arn)} --secret-string file://secret.json, the AWSCURRENT JSON with that "
            "password); rotators doctor never invents a password",
        )
    )


def _take_pending_off(pending: VersionReport) -> Fix:
    return Fix(
        f"take AWSPENDING off version {pending.version_id}, so that the next rotation starts afresh",
        AWSPENDING,
        remove_from=pending.version_id,
    )


def _rotation_off(arn: str, function: str | None, engine: str | None) -> Finding:
    again = f" --rotation-lambda-arn {shlex.quote(function)}" if function else ""
    return Finding(
        "failing",
        "rotation is off: nothing will rotate this secret"
        + (f" (its function was {function})" if function else ""),
        f"turn it on: rotators wire --secret-id {shlex.quote(arn)} --engine {engine or '<engine>'}{again} "
        "(README: Wire a rotator to a secret)",
    )


def _rotation(described: Any) -> str:
    rules = described.get("RotationRules", {})
    schedule = rules.get("ScheduleExpression") or (
        f"every {rules['AutomaticallyAfterDays']} days" if "AutomaticallyAfterDays" in rules else "none"
    )
    parts = [
        "on" if described.get("RotationEnabled") else "off",
        f"function {described.get('RotationLambdaARN') or 'none'}",
        f"schedule {schedule}",
    ]
    if "LastRotatedDate" in described:
        parts.append(f"last rotated {_when(described['LastRotatedDate'])}")
    if described.get("RotationEnabled") and "NextRotationDate" in described:
        parts.append(f"next {_when(described['NextRotationDate'])}")
    return ", ".join(parts)


def _drained(steps: Generator[Check, None, T]) -> tuple[list[Check], T]:
    """The rows a check generator yields, and what it returns."""
    rows: list[Check] = []
    while True:
        try:
            rows.append(next(steps))
        except StopIteration as done:
            return rows, done.value


def _one_line(exc: Exception) -> str:
    """A driver's message on one line (libpq's has a tab-indented hint on a second)."""
    return " ".join(str(exc).split())


def _age(version: VersionReport) -> timedelta:
    return datetime.now(UTC) - version.created if version.created else timedelta.max


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"


def _ago(version: VersionReport) -> str:
    seconds = _age(version).total_seconds() if version.created else None
    if seconds is None:
        return "at an unknown time"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


# -- output -----------------------------------------------------------------------------------------
def render(diagnosis: Diagnosis) -> str:
    lines = [f"rotators doctor: {diagnosis.secret} ({diagnosis.arn})"]
    for name, value in (
        ("rotation", diagnosis.rotation),
        ("secret", diagnosis.strategy),
        ("master", diagnosis.master),
        ("partner", diagnosis.partner),
        ("last attempt", f"(CloudTrail) {diagnosis.last_attempt}" if diagnosis.last_attempt else ""),
    ):
        if value:
            lines.append(f"  {name:<13}{value}")
    if diagnosis.versions:
        lines.append(
            "  versions     newest first; each logs in as its own user, with TLS no weaker than AWSCURRENT's"
        )
    for v in diagnosis.versions:
        detail = f": {v.detail}" if v.detail and v.outcome != LOGS_IN else ""
        who = f" as {shown(v.username)}" if v.username and v.outcome == LOGS_IN else ""
        lines.append(f"    {v.labels:<24} {v.version_id}  {_when(v.created)}  {v.outcome}{who}{detail}")
    if diagnosis.untried > 0:
        lines.append(f"    ({diagnosis.untried} older unlabelled version(s) not tried)")
    lines.append(f"\n{diagnosis.status.upper()}: {diagnosis.headline}")
    for finding in diagnosis.findings:
        if finding.problem != diagnosis.headline:
            lines.append(f"  also ({finding.status}): {finding.problem}")
        if finding.advice:
            lines.append(f"  fix: {finding.advice}")
    if diagnosis.fixes:
        lines.append("Safe fixes (rotators doctor --fix applies them, after asking):")
        for number, fix in enumerate(diagnosis.fixes, 1):
            lines += [f"  {number}. {fix.action}", f"     {fix.command(diagnosis.arn)}"]
    return "\n".join(lines)


def render_summary(diagnoses: list[Diagnosis]) -> str:
    width = max([len("SECRET"), *(len(d.secret) for d in diagnoses)])
    lines = [f"{'STATUS':<11}  {'SECRET':<{width}}  WHAT"]
    lines += [f"{d.status:<11}  {d.secret:<{width}}  {clipped(d.headline, 160)}" for d in diagnoses]
    counts = Counter(d.status for d in diagnoses)
    totals = ", ".join(f"{counts[status]} {status}" for status in SUMMARY_ORDER)
    lines.append(f"\n{len(diagnoses)} secret(s): {totals}")
    return "\n".join(lines)


def _json(value: object) -> str:
    return json.dumps(value, indent=2, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o))


# -- the command ------------------------------------------------------------------------------------
@dataclass
class Doctor:
    store: SecretStore
    history: CloudTrailHistory
    stale_after: timedelta
    say: Callable[[str], None]
    ask: Callable[[str], bool]

    def examine(self, secret_id: str) -> Diagnosis:
        return diagnose(secret_id, self.store, self.history, self.stale_after)

    def treat(self, diagnosis: Diagnosis, *, yes: bool) -> Diagnosis:
        """Apply the safe fixes once confirmed, and diagnose again."""
        if not diagnosis.fixes:
            self.say(
                f"{diagnosis.secret}: nothing for --fix to change"
                + ("." if diagnosis.status == "healthy" else "; the fix above needs a person.")
            )
            return diagnosis
        if not yes and not self.ask(f"Apply {len(diagnosis.fixes)} fix(es) to {diagnosis.secret}? [y/N] "):
            self.say(f"{diagnosis.secret}: nothing changed.")
            return diagnosis
        for fix in diagnosis.fixes:
            fix.apply(self.store, diagnosis.arn)
            self.say(f"done: {fix.action}")
        after = self.examine(diagnosis.arn)
        after.applied = [fix.action for fix in diagnosis.fixes]
        return after


def secrets_of(store: SecretStore, function: str) -> list[str]:
    """The ARNs of every secret whose rotation function is `function` (an ARN or a name)."""
    pages = store.client.get_paginator("list_secrets").paginate()
    return [
        secret["ARN"]
        for page in pages
        for secret in page["SecretList"]
        if (found := secret.get("RotationLambdaARN"))
        and (found == function or found.endswith(f":function:{function}"))
    ]


def _progress(err: IO[str], index: int, total: int, name: str) -> None:
    if err.isatty():
        done = 20 * index // total
        err.write(f"\r[{'#' * done}{'.' * (20 - done)}] {index}/{total} {clipped(name, 60):<60}")
        err.write("\n" if index == total else "")
    else:
        err.write(f"rotators doctor: {index}/{total} {name}\n")
    err.flush()


def _printer(stream: IO[str]) -> Callable[[str], None]:
    def say(line: str) -> None:
        stream.write(line + "\n")

    return say


def _ask(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in {"y", "yes"}


def run(args: Any, out: Callable[[str], None] = print, err: IO[str] | None = None) -> int:
    err = err or sys.stderr
    if bool(args.secret_id) == bool(args.all) or bool(args.function) != bool(args.all):
        err.write("rotators doctor: name one SECRET, or use --all with --function ARN\n")
        return 2
    doctor = Doctor(
        SecretStore(),
        CloudTrailHistory(None if args.no_cloudtrail else cloudtrail_client),
        timedelta(minutes=args.stale_after),
        say=_printer(err) if args.json else out,
        ask=_ask,
    )
    if args.all:
        return _run_all(doctor, args, out, err)
    diagnosis = doctor.examine(args.secret_id)
    if not args.json:
        out(render(diagnosis))
    if args.fix:
        fixed = doctor.treat(diagnosis, yes=args.yes)
        if fixed is not diagnosis and not args.json:
            out("\nAfter the fix:\n" + render(fixed))
        diagnosis = fixed
    if args.json:
        out(_json(diagnosis.as_dict()))
    return EXIT_CODES[diagnosis.status]


def _run_all(doctor: Doctor, args: Any, out: Callable[[str], None], err: IO[str]) -> int:
    arns = secrets_of(doctor.store, args.function)
    diagnoses: list[Diagnosis] = []
    for index, arn in enumerate(arns, 1):
        _progress(err, index, len(arns), arn.rsplit(":", 1)[-1])
        diagnosis = doctor.examine(arn)
        if args.fix and diagnosis.fixes:
            if not args.yes:
                out(render(diagnosis))
            diagnosis = doctor.treat(diagnosis, yes=args.yes)
        diagnoses.append(diagnosis)
    if args.json:
        counts = Counter(d.status for d in diagnoses)
        out(
            _json(
                {
                    "secrets": [d.as_dict() for d in diagnoses],
                    "summary": {s: counts[s] for s in SUMMARY_ORDER},
                }
            )
        )
    elif diagnoses:
        out(render_summary(diagnoses))
    else:
        out(f"No secret is rotated by {args.function}.")
    return EXIT_CODES[max((d.status for d in diagnoses), key=SEVERITY.index, default="healthy")]
