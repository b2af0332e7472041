"""Fault injection at the two boundaries a rotator has: Secrets Manager calls and database events.

Secrets Manager faults go through botocore's event hooks on a dedicated client (built exactly as
production builds its own, retries included), so the rotator's code runs unchanged:
`before-send` answers an attempt with an error as if the service had sent it (botocore then
retries or gives up as in production), `needs-retry` makes botocore send a call again after the
service carried it out (its answer lost), and `after-call` kills the process right after a call
the service has carried out. Database faults wrap the engine's `connect` and its connection: a
tick after the login, after every statement and after every commit, at which the process dies
or the server is really stopped.

"The process dies" is `ProcessDied`, a BaseException: no `except Exception` in the package sees
it, as no code of a real crashed Lambda runs afterwards.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from rotators.database import DatabaseRotator
from rotators.secrets import SecretStore

Where = Literal["sm", "db"]
Kind = Literal["crash", "error", "repeat", "stop"]


class ProcessDied(BaseException):
    """The Lambda process died at an injected point."""


@dataclass(frozen=True)
class Fault:
    """One injected fault: `kind` at the `at`-th Secrets Manager call or database event of `step`.

    - crash: the process dies right after that call or event;
    - error: that Secrets Manager call answers `code` (HTTP `status`) to its first `attempts`
      attempts, so botocore's retries see it as production would;
    - repeat: that call is carried out, its response is lost, and botocore sends it again;
    - stop: the database is really stopped right after that event (`at=0`: before the step).
    `only` narrows which Secrets Manager calls count (operation name, API parameters).
    """

    kind: Kind
    where: Where
    step: str
    at: int
    code: str = ""
    status: int = 400
    attempts: int = 1
    only: Callable[[str, dict[str, Any]], bool] | None = field(default=None, compare=False)

    def describe(self) -> str:
        what = {
            "crash": "process dies after",
            "error": f"{self.code} on",
            "repeat": "response lost, SDK repeats",
            "stop": "database stopped after",
        }
        unit = "Secrets Manager call" if self.where == "sm" else "database event"
        return f"{what[self.kind]} {unit} {self.at} of {self.step}"


class Injector:
    """Counts calls and events per step and fires the armed fault when its point comes."""

    def __init__(self) -> None:
        self.step = ""
        self.fault: Fault | None = None
        self.fired = 0
        self.stop_server: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._sm_calls = 0
        self._db_events = 0
        self._call_failures = 0
        self._call: tuple[str, int] = ("", 0)

    def begin(self, step: str) -> None:
        """A new invocation: counts restart, as the points of a fault are per step."""
        with self._lock:
            self.step = step
            self._sm_calls = self._db_events = 0

    def arm(self, fault: Fault | None) -> None:
        with self._lock:
            self.fault, self.fired = fault, 0

    # -- Secrets Manager (botocore hooks) ---------------------------------------------------------
    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build.secrets-manager", self._before_call)
        events.register("before-send.secrets-manager", self._before_send)
        events.register("after-call.secrets-manager", self._after_call)
        events.register("needs-retry.secrets-manager", self._needs_retry)
        return client

    def _armed(self, where: Where, count: int, kind: Kind) -> Fault | None:
        fault = self.fault
        if fault and fault.where == where and fault.kind == kind and fault.step == self.step:
            return fault if fault.at == count else None
        return None

    def _before_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            fault = self.fault
            if fault and fault.only and not fault.only(model.name, params):
                self._call = (model.name, 0)  # not a call this fault counts
            else:
                self._sm_calls += 1
                self._call = (model.name, self._sm_calls)
            self._call_failures = 0

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        with self._lock:
            name, count = self._call
            fault = self._armed("sm", count, "error") if count else None
            if fault is None or self._call_failures >= fault.attempts:
                return None
            self._call_failures += 1
            self.fired += 1
        body = json.dumps({"__type": fault.code, "message": f"injected {fault.code} on {name}"}).encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        headers["x-amzn-RequestId"] = "injected-fault"
        return AWSResponse(request.url, fault.status, headers, _Body(body))

    def _needs_retry(self, attempts: int, response: Any = None, **_: Any) -> float | None:
        """After the service answered the first attempt: pretend the answer was lost."""
        with self._lock:
            _name, count = self._call
            fault = self._armed("sm", count, "repeat") if count else None
            if fault is None or attempts != 1 or response is None:
                return None
            self.fired += 1
        return 0.0  # retry now, as botocore would after a read timeout

    def _after_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            name, count = self._call
            fault = self._armed("sm", count, "crash") if count else None
            if fault is None:
                return
            self.fired += 1
        raise ProcessDied(f"injected: the process died after {name}, call {count} of {self.step}")

    # -- the database ---------------------------------------------------------------------------
    def db_event(self, what: str) -> None:
        with self._lock:
            self._db_events += 1
            count = self._db_events
            crash = self._armed("db", count, "crash")
            stop = self._armed("db", count, "stop")
            if crash or stop:
                self.fired += 1
        if crash:
            raise ProcessDied(f"injected: the process died after {what}, event {count} of {self.step}")
        if stop:
            assert self.stop_server is not None, "a stop fault needs the server's stop"
            self.stop_server()

    def before_step(self) -> None:
        """`stop` at 0: the database is down before the step begins."""
        fault = self.fault
        if fault and fault.kind == "stop" and fault.step == self.step and fault.at == 0:
            assert self.stop_server is not None, "a stop fault needs the server's stop"
            self.fired += 1
            self.stop_server()


class _Body:
    """The raw body of a made-up HTTP response, as botocore reads one."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def production_client(endpoint_url: str) -> Any:
    """A fresh client with production's configuration (retries, timeouts), not the cached one.

    The package builds its client in `rotators.secrets._client` (cached per endpoint); its
    undecorated function gives an identical, private one that hooks can be attached to.
    """
    from rotators.secrets import _client

    return _client.__wrapped__(endpoint_url)


Wrap = Callable[[Any, Callable[[str], None]], Any]


def instrument(
    rotator_cls: type[DatabaseRotator[Any]], endpoint_url: str, injector: Injector, wrap: Wrap
) -> DatabaseRotator[Any]:
    """A fresh rotator (a fresh Lambda container) whose Secrets Manager calls and database events
    pass through `injector`."""
    rotator = rotator_cls(SecretStore(injector.attach(production_client(endpoint_url))))
    engine_connect = rotator.connect

    @contextmanager
    def connect(secret: Any, username: str, password: str) -> Iterator[Any]:
        with engine_connect(secret, username, password) as conn:
            injector.db_event("login")
            yield wrap(conn, injector.db_event)

    rotator.connect = connect  # type: ignore[method-assign]
    return rotator


# -- connection wrappers, one per driver --------------------------------------------------------------
class _Ticking:
    """A driver's object, ticking after the calls a subclass names; everything else passes through."""

    def __init__(self, wrapped: Any, tick: Callable[[str], None]) -> None:
        self._wrapped = wrapped
        self._tick = tick

    def _ticked(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self._wrapped, method)(*args, **kwargs)
        self._tick(what)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class TickingPsycopg(_Ticking):
    """A psycopg connection that ticks after every statement and every committed transaction."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._ticked("statement", "execute", *args, **kwargs)

    def transaction(self) -> AbstractContextManager[Any]:
        @contextmanager
        def committed() -> Iterator[Any]:
            with self._wrapped.transaction() as tx:
                yield tx
            self._tick("commit")

        return committed()


class _TickingCursor(_Ticking):
    """A DB-API cursor that ticks after every statement."""

    def __enter__(self) -> _TickingCursor:
        self._wrapped.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._wrapped.__exit__(*exc)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._ticked("statement", "execute", *args, **kwargs)


class TickingDbApi(_Ticking):
    """A DB-API connection (PyMySQL's, redshift-connector's) whose cursors tick after every
    statement (both run in autocommit)."""

    def cursor(self, *args: Any, **kwargs: Any) -> _TickingCursor:
        return _TickingCursor(self._wrapped.cursor(*args, **kwargs), self._tick)


class _TickingDatabase(_Ticking):
    """A pymongo Database that ticks after every command."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._ticked("command", "command", *args, **kwargs)


def ticking_mysql_session(session: Any, tick: Callable[[str], None]) -> Any:
    """The MySQL engine's Session (connection, server, account), its connection ticking."""
    return replace(session, conn=TickingDbApi(session.conn, tick))


def ticking_mongo_session(session: Any, tick: Callable[[str], None]) -> Any:
    """The DocumentDB engine's Session (database, dialect), its database ticking."""
    return replace(session, db=_TickingDatabase(session.db, tick))
