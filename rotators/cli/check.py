"""`rotators check`: preflight a secret before turning rotation on. It changes nothing.

Every check goes through the same store and engine code as a rotation, so a pass here means
the rotator will be able to read the secret, log in and change the password.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from rotators.database import NOT_CHECKED, DatabaseRotator, DatabaseSecret
from rotators.engines import BY_NAME, ENGINES, Engine, serving
from rotators.errors import (
    EndpointLookupError,
    RotationError,
    SecretFormatError,
    TargetMismatchError,
    clipped,
    shown,
)
from rotators.secrets import AWSCURRENT, SecretStore


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: shown for information, never fails the run
    detail: str
    fix: str = ""


def rotator_for(engine: Engine) -> DatabaseRotator[Any]:
    """The very rotator the Lambda handler of that engine uses."""
    try:
        module = importlib.import_module(engine.module)
    except ModuleNotFoundError as exc:
        raise RotationError(
            f"The {engine.title} rotator needs its driver {exc.name}: install rotators[{engine.name}]"
        ) from None
    rotator = module.handler.__self__
    assert isinstance(rotator, DatabaseRotator)
    return rotator


def rotator_serving(engine: str) -> DatabaseRotator[Any]:
    """The rotator whose handler takes a secret with this `engine` value (or an engine module's
    name, as `--engine` takes): the registry's map, which the engine classes use too."""
    found = BY_NAME.get(engine) or serving(engine)
    if found is None:
        raise RotationError(
            f"No rotator serves engine {shown(engine, 60)}: use one of "
            f"{', '.join(sorted(set().union(*(e.secret_engines for e in ENGINES))))}"
        )
    return rotator_for(found)


def run_checks(secret_id: str, engine: str | None = None, store: SecretStore | None = None) -> list[Check]:
    return list(_checks(secret_id, engine, store or SecretStore()))


def _checks(secret_id: str, engine: str | None, store: SecretStore) -> Iterator[Check]:
    try:
        meta = store.describe(secret_id)
        text = store.get(secret_id, stage=AWSCURRENT)
    except Exception as exc:
        yield Check(
            "secret readable", False, safe_error(exc), "check the secret id, region and IAM permissions"
        )
        return
    yield Check("secret readable", True, f"{meta.name}: AWSCURRENT read")
    described = store.client.describe_secret(SecretId=secret_id)
    rules = described.get("RotationRules", {})
    schedule = rules.get("ScheduleExpression") or (
        f"every {rules['AutomaticallyAfterDays']} days" if "AutomaticallyAfterDays" in rules else "none"
    )
    yield Check(
        "rotation settings",
        None,
        f"enabled={meta.rotation_enabled}, lambda={described.get('RotationLambdaARN') or 'none'}, "
        f"schedule={schedule}",
    )

    module = engine or engine_of(text)
    if module is None:
        yield Check("engine", False, "the secret has no known 'engine'", "pass --engine or set 'engine'")
        return
    try:
        rotator = rotator_serving(module)
        secret = rotator.parse(text, where=f"the AWSCURRENT version of {meta.name!r}")
    except RotationError as exc:
        yield Check("secret format", False, str(exc), "fix the secret JSON (see README: The secret)")
        return
    strategy = "alternating users" if secret.masterarn else "single user"
    yield Check(
        "secret format",
        True,
        f"{rotator.kind}, {strategy}, {clipped(secret.host, 200)}:{secret.port}/"
        f"{clipped(secret.dbname, 200)}",
    )
    yield from _name_and_policy(rotator, secret)
    master = None
    if secret.masterarn:
        master = yield from master_checks(rotator, store, secret)
        if master is None:
            return
    found = yield from _logins(rotator, secret, master)
    if found is None:
        return
    problem, safety = found
    if master is not None:
        yield Check(
            "master safety",
            not safety,
            "; ".join(safety) or "not the master's user; no power beyond the user's",
            "see README: Security model" if safety else "",
        )
    if problem is NOT_CHECKED:
        yield Check("privileges", None, f"not checked for {rotator.kind} yet")
    elif problem is None:
        yield Check(
            "privileges", True, "can change the password" + (" and manage the clone" if master else "")
        )
    else:
        yield Check("privileges", False, problem, "grant what is missing (see README: Two strategies)")


def _logins(
    rotator: DatabaseRotator[Any], secret: DatabaseSecret, master: DatabaseSecret | None
) -> Generator[Check, None, tuple[str | None, list[str]] | None]:
    """The user's own login proves AWSCURRENT; the last login is the one that will change
    passwords. Each logs in with its own secret's settings: the master never with the app's.
    Returns what the changing login lacks and what the master's safety rules refuse."""
    logins = [("user", secret)] + ([("master user", master)] if master else [])
    problem: str | None = None
    safety: list[str] = []
    for who, login in logins:
        try:
            if login is master:
                session = rotator.master_session(login, secret)
            else:
                session = rotator.connect(login, login.username, login.password)
            with session as conn:
                yield Check(
                    f"{who} logs in", True, f"{shown(login.username)} over {rotator.transport(conn, login)}"
                )
                if login is logins[-1][1]:
                    problem = rotator.change_privileges(conn, secret.username, as_master=master is not None)
                if login is master:
                    named = rotator.master_user_named(secret, login)
                    safety = [f"{shown(named)} is the master's own user"] if named else []
                    try:
                        admin, drift = rotator.power_problems(conn, secret)
                    except RotationError as exc:  # e.g. a master that may not read the grants
                        safety.append(str(exc))
                    else:
                        safety += admin + drift
        except RotationError as exc:
            yield Check(
                f"{who} logs in", False, str(exc), "fix the password, TLS settings (CA bundle) or network"
            )
            return None
    return problem, safety


def _name_and_policy(rotator: DatabaseRotator[Any], secret: DatabaseSecret) -> Iterator[Check]:
    if secret.masterarn:
        partner = rotator.partner(secret.username)
        try:
            rotator.check_username(partner, current=secret)
        except SecretFormatError as exc:
            yield Check("user names", False, str(exc), "shorten the user name so that its clone name fits")
        else:
            yield Check("user names", True, f"{shown(secret.username)} and {shown(partner)} alternate")
    try:
        policy = rotator.password_policy()
    except RotationError as exc:
        yield Check("password policy", False, str(exc), "fix the Lambda's environment variables")
        return
    missing = sorted(set(rotator.excluded_characters) - set(policy.exclude_characters))
    yield Check(
        "password policy",
        not missing,
        f"length {policy.length}, excluded {policy.exclude_characters!r}",
        f"EXCLUDE_CHARACTERS should keep {''.join(missing)!r}, which break {rotator.kind} clients"
        if missing
        else "",
    )


def master_checks(
    rotator: DatabaseRotator[Any], store: SecretStore, secret: DatabaseSecret
) -> Generator[Check, None, DatabaseSecret | None]:
    """The master's login as setSecret finds it: from its secret, or from the database service's
    API for a master secret the service manages (each call it makes is one the role needs)."""
    assert secret.masterarn is not None
    try:
        text = store.get(secret.masterarn, stage=AWSCURRENT)
    except Exception as exc:
        yield Check("master secret", False, safe_error(exc), "fix 'masterarn' or the Lambda's access to it")
        return None
    try:
        found = rotator.find_master(text, secret, where="the master secret", store=store)
    except EndpointLookupError as exc:
        yield Check("master endpoint", False, str(exc), "grant the permission, or fix the master secret")
        return None
    except TargetMismatchError as exc:
        yield Check(
            "master secret",
            False,
            str(exc),
            "the master secret must name the same host and port, or the app secret a replica or reader",
        )
        return None
    except RotationError as exc:
        yield Check("master secret", False, str(exc), "fix the master secret (see README: The secret)")
        return None
    master = found.secret
    yield Check(
        "master secret",
        True,
        f"{shown(master.username)} at {clipped(master.host, 200)}:{master.port} (from {found.origin}); "
        f"the app secret's host: {found.route}",
    )
    return master


def engine_of(text: str) -> str | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # the rotator's own parse says what is wrong
        return None
    engine = value.get("engine") if isinstance(value, dict) else None
    return engine if isinstance(engine, str) else None


def safe_error(exc: Exception) -> str:
    """Our errors are safe to show; an SDK error is shown by its code only."""
    if isinstance(exc, RotationError):
        return str(exc)
    response: Any = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"{type(exc).__name__}: {code}" if code else type(exc).__name__


def render(checks: list[Check], as_json: bool, out: Callable[[str], None] = print) -> int:
    failed = [c for c in checks if c.passed is False]
    if as_json:
        out(json.dumps({"passed": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = {True: "PASS", False: "FAIL", None: "INFO"}[c.passed]
            out(f"{mark}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                out(f"      {'':<{width}}  fix: {c.fix}")
        out("\nAll checks passed." if not failed else f"\n{len(failed)} check(s) failed.")
    return 1 if failed else 0
