"""A Lambda Runtime API emulator, and a bundle started under it the way Lambda starts one.

    with start_function(bundle, handler, python=..., runtime="python3.12", runtime_client=ric_dir,
                        environment=variables, function_arn=arn, timeout_s=60) as function:
        init_ms = function.wait_for_init()
        invocation = function.invoke({"SecretId": ..., "Step": "createSecret"})

Lambda's Python image runs `python -m awslambdaric <handler>` in /var/task; the runtime client
then long-polls the Runtime API (2018-06-01) of its sandbox for events and posts each result or
error back. `RuntimeAPI` is that API on 127.0.0.1 (stdlib http.server, one thread per request):
GET /runtime/invocation/next hands out queued events with Lambda's headers, POST
/runtime/invocation/<id>/response and /error and POST /runtime/init/error record what the
runtime sends. `RunningFunction` is one runtime process (one cold start): it records the time
from spawn to the first GET /next (INIT), the process's CPU time at that moment, and, per
invocation, the time from handing out the event to its response or error.

Lambda's CPU rule: INIT runs with a burst of host CPU (up to 10 s, whatever the memory size), an
invocation with a share of one vCPU in proportion to memory (1,769 MB = one vCPU). With
`memory_mb`, `start_function` moves the runtime process into a `CpuShare` (a cgroup whose CPU
quota is that share) while the runtime waits on its first GET /next, before the first event is
handed out: INIT runs unthrottled here, every invocation throttled. That needs a writable cgroup
cpu controller (v1 or v2), in practice root. Standard library only; nothing here prints an event
or a response.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

API = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_INVOCATION_PATH = re.compile(rf"{re.escape(API)}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)")
_POLL_S = 0.02  # how often a waiter looks at the process; the timestamps come from the server
FULL_VCPU_MB = 1769  # "at 1,769 MB, a function has the equivalent of one vCPU" (Lambda Developer Guide)
CFS_PERIOD_US = 100_000  # the quota's period: the kernel's default


class RuntimeFailure(Exception):
    """The runtime process reported an init error, exited, or did not answer in time."""


@dataclass(eq=False)
class Invocation:
    """One event: when it was handed out and answered, and the runtime's answer."""

    request_id: str
    payload: bytes = field(repr=False)  # the event as sent: never shown
    handed_out: float | None = None  # time.perf_counter() when GET /next returned it
    answered: float | None = None  # ... when its response or error arrived
    response: Any = field(default=None, repr=False)  # the handler's result (JSON-decoded)
    error: dict[str, Any] | None = None  # Lambda's error object (errorType, errorMessage, ...)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def ok(self) -> bool:
        return self.done.is_set() and self.error is None

    @property
    def duration_ms(self) -> float:
        if self.handed_out is None or self.answered is None:
            raise RuntimeFailure(f"invocation {self.request_id} has not been answered")
        return 1000 * (self.answered - self.handed_out)


class RuntimeAPI:
    """The Runtime API of one sandbox. Events are handed out in the order they were submitted."""

    def __init__(
        self,
        function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local",
        *,
        timeout_s: float = 60.0,
        sampled: bool = True,
    ) -> None:
        self.function_arn, self.timeout_s, self.sampled = function_arn, timeout_s, sampled
        self.first_poll: float | None = None  # time.perf_counter() of the first GET /next
        # Run at the first GET /next, after its timestamp and before any event is handed out.
        self.at_init_end: Callable[[], None] | None = None
        self.init_error: dict[str, Any] | None = None
        self.polled = threading.Event()  # set by the first GET /next or an init error
        self._pending: queue.Queue[Invocation | None] = queue.Queue()
        self._invocations: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """What AWS_LAMBDA_RUNTIME_API holds: host:port."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def submit(self, event: Any) -> Invocation:
        invocation = Invocation(str(uuid.uuid4()), json.dumps(event).encode())
        with self._lock:
            self._invocations[invocation.request_id] = invocation
        self._pending.put(invocation)
        return invocation

    def close(self) -> None:
        self._pending.put(None)  # wakes a GET /next that is still waiting
        self._server.shutdown()
        self._server.server_close()

    # -- called by the request handler --------------------------------------------------------------
    def next_invocation(self) -> tuple[Invocation, dict[str, str]] | None:
        """Blocks until an event is queued, like Lambda between invocations; None when closing.
        The first call ends INIT: `at_init_end` runs then, and waiters learn of INIT's end after it."""
        with self._lock:
            first = self.first_poll is None
            if first:
                self.first_poll = time.perf_counter()
        if first:
            try:
                if self.at_init_end is not None:
                    self.at_init_end()
            finally:
                self.polled.set()
        invocation = self._pending.get()
        if invocation is None:
            self._pending.put(None)  # for any other waiter
            return None
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int((time.time() + self.timeout_s) * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": _trace_id(self.sampled),
            "Content-Type": "application/json",
        }
        invocation.handed_out = time.perf_counter()
        return invocation, headers

    def answer(self, request_id: str, body: bytes, error_type: str | None = None) -> Invocation | None:
        """Records the response (or, with `error_type`, the error) of a handed-out event; None when
        no such event waits for one. The caller sets the invocation's `done` once it has replied."""
        answered = time.perf_counter()
        with self._lock:
            invocation = self._invocations.get(request_id)
            if invocation is None or invocation.handed_out is None or invocation.answered is not None:
                return None
            invocation.answered = answered
        if error_type is None:
            invocation.response = _json(body)
        else:
            invocation.error = _error_object(body, error_type)
        return invocation

    def fail_init(self, body: bytes, error_type: str) -> None:
        """Records an init error; the caller sets `polled` once it has replied."""
        self.init_error = _error_object(body, error_type)


def _trace_id(sampled: bool) -> str:
    """An X-Ray trace header as Lambda sends it: `Sampled=1` only where X-Ray records the
    invocation (Tracing: Active), and the function may set up its tracer only then."""
    root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled={int(sampled)}"


def _error_object(body: bytes, error_type: str) -> dict[str, Any]:
    """Lambda's error object; its type is the body's, else the Lambda-Runtime-Function-Error-Type
    header (awslambdaric sends that header with init errors only)."""
    decoded = _json(body)
    error = decoded if isinstance(decoded, dict) else {"errorMessage": decoded}
    error.setdefault("errorType", error_type or "Unknown")
    return error


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a GET /next may wait for ever; it must not keep the process alive

    def __init__(self, api: RuntimeAPI) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime stopped while it talked to us is no error of the emulator's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the runtime client keeps its connection open
    disable_nagle_algorithm = True  # else a body waits ~40 ms for the ACK of its headers
    server: _Server

    def do_GET(self) -> None:
        if self.path != f"{API}/invocation/next":
            self._reply(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})
            return
        handed_out = self.server.api.next_invocation()
        if handed_out is None:
            self._reply(HTTPStatus.GONE, {"errorType": "ShuttingDown", "errorMessage": "closing"})
            return
        invocation, headers = handed_out
        self._send(HTTPStatus.OK, invocation.payload, headers)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        error_type = self.headers.get(ERROR_TYPE_HEADER, "")
        api = self.server.api
        # Waiters learn of an answer only after our reply: a runtime stopped right away has read it.
        if self.path == f"{API}/init/error":
            api.fail_init(body, error_type)
            self._accepted(api.polled)
            return
        found = _INVOCATION_PATH.fullmatch(self.path)
        if found is None:
            self._reply(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})
            return
        invocation = api.answer(found["id"], body, error_type if found["kind"] == "error" else None)
        if invocation is None:
            message = f"no invocation {found['id']} is waiting for an answer"
            self._reply(HTTPStatus.BAD_REQUEST, {"errorType": "InvalidRequestID", "errorMessage": message})
        else:
            self._accepted(invocation.done)

    def _accepted(self, done: threading.Event) -> None:
        try:
            self._reply(HTTPStatus.ACCEPTED, {"status": "OK"})
        finally:
            done.set()

    def _reply(self, status: HTTPStatus, document: dict[str, str]) -> None:
        self._send(status, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _send(self, status: HTTPStatus, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request would bury the benchmark's output."""


# -- Lambda's CPU share ---------------------------------------------------------------------------------
class CpuShare:
    """A cgroup whose CPU quota is Lambda's share of one vCPU at `memory_mb`: what an invocation gets.

    `create` makes one under a cpu controller (cgroup v1: cpu.cfs_quota_us and cpu.cfs_period_us;
    v2: cpu.max, with "cpu" in the parent's cgroup.subtree_control); `add` moves a process (all its
    threads) into it; `close` removes it once its processes have exited (any left are moved out)."""

    V1_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))
    V2_ROOT = Path("/sys/fs/cgroup")

    def __init__(self, path: Path, memory_mb: int, version: int) -> None:
        self.path, self.memory_mb, self.version = path, memory_mb, version

    @property
    def quota_us(self) -> int:
        """CPU time per CFS_PERIOD_US: memory_mb / FULL_VCPU_MB of one CPU (the kernel's minimum is 1 ms)."""
        return max(1000, round(CFS_PERIOD_US * self.memory_mb / FULL_VCPU_MB))

    @classmethod
    def create(cls, memory_mb: int, *, root: Path | None = None) -> tuple[CpuShare | None, str]:
        """A new cgroup under `root` (default: this machine's cpu controller, v1 first) and "";
        or None and why none can be made there (no controller, not root, read-only ...)."""
        if root is None:
            found = [r for r in cls.V1_ROOTS if (r / "cpu.cfs_quota_us").is_file()]
            if not found and "cpu" in _words(cls.V2_ROOT / "cgroup.controllers"):
                found = [cls.V2_ROOT]
            if not found:
                where = ", ".join(str(r) for r in (*cls.V1_ROOTS, cls.V2_ROOT))
                return None, f"no cgroup cpu controller is mounted here (looked at {where})"
            root = found[0]
        if (root / "cpu.cfs_quota_us").is_file():
            version = 1
        elif (root / "cgroup.controllers").is_file():
            if "cpu" not in _words(root / "cgroup.subtree_control"):
                return None, f"cgroup v2 at {root}: cpu is not in its cgroup.subtree_control"
            version = 2
        else:
            return None, f"{root} is no cgroup cpu controller (no cpu.cfs_quota_us, no cgroup.controllers)"
        share = cls(root / f"rotators-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}", memory_mb, version)
        try:
            share.path.mkdir()
        except OSError as exc:
            return None, f"cannot make a cgroup under {root}: {exc.strerror or exc}"
        try:
            if version == 1:
                _write(share.path / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(share.path / "cpu.cfs_quota_us", str(share.quota_us))
            else:
                _write(share.path / "cpu.max", f"{share.quota_us} {CFS_PERIOD_US}")
        except OSError as exc:
            share.close()
            return None, f"cannot set a CPU quota in {share.path}: {exc.strerror or exc}"
        return share, ""

    def add(self, pid: int) -> None:
        """Moves the process, all its threads, into the cgroup."""
        _write(self.path / "cgroup.procs", str(pid))

    def holds(self, pid: int) -> bool:
        return str(pid) in _words(self.path / "cgroup.procs")

    def close(self) -> None:
        """Removes the cgroup; a process still in it goes back to the parent first."""
        deadline = time.monotonic() + 2
        while True:
            try:
                for pid in _words(self.path / "cgroup.procs"):
                    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                        _write(self.path.parent / "cgroup.procs", pid)
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY: a process that exited is not reaped yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(_POLL_S)


def _write(path: Path, value: str) -> None:
    """Writes a cgroup file that the kernel made: never creates one (a plain folder is no cgroup)."""
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, value.encode())
    finally:
        os.close(descriptor)


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def process_cpu_ms(pid: int) -> float | None:
    """CPU time the process has used so far (user + system, all its threads) in ms; None where
    /proc cannot say. Resolution: one clock tick."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    ticks = int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of proc(5)
    return 1000 * ticks / os.sysconf("SC_CLK_TCK")


class _InitEnd:
    """What the first GET /next does (the runtime is blocked on it, and no event is out yet): it
    reads the process's CPU time so far, INIT's, and moves the process into its CpuShare."""

    def __init__(self, share: CpuShare | None) -> None:
        self.share = share
        self.cpu_ms: float | None = None
        self.error: str | None = None
        self._pid: int | None = None
        self._spawned = threading.Event()  # a runtime cannot poll before Popen returns; the thread can

    def spawned(self, pid: int) -> None:
        self._pid = pid
        self._spawned.set()

    def __call__(self) -> None:
        if not self._spawned.wait(10) or self._pid is None:
            self.error = "a GET /next came before the runtime process was known"
            return
        self.cpu_ms = process_cpu_ms(self._pid)
        if self.share is not None:
            try:
                self.share.add(self._pid)
            except OSError as exc:
                self.error = f"cannot move the runtime into {self.share.path}: {exc}"


# -- a bundle under the emulator ---------------------------------------------------------------------------
class RunningFunction:
    """One runtime process (one execution environment) polling its own RuntimeAPI."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        spawned: float,
        api: RuntimeAPI,
        xray: socket.socket,
        init_end: _InitEnd | None = None,
    ) -> None:
        self.process, self.spawned, self.api, self._xray = process, spawned, api, xray
        self._init_end = init_end or _InitEnd(None)

    @property
    def cpu_share(self) -> CpuShare | None:
        """The cgroup its invocations run in (from the first GET /next); None: unthrottled."""
        return self._init_end.share

    @property
    def init_cpu_ms(self) -> float | None:
        """The process's CPU time at its first GET /next, INIT's (once wait_for_init returned)."""
        return self._init_end.cpu_ms

    def wait_for_init(self, timeout_s: float = 60.0) -> float:
        """INIT in ms: from spawn to the runtime's first GET /next (imports and module code)."""
        self._wait(self.api.polled, timeout_s, "its first GET /next")
        if self.api.init_error is not None:
            raise RuntimeFailure(f"init error: {_describe(self.api.init_error)}")
        if self._init_end.error is not None:
            raise RuntimeFailure(self._init_end.error)
        assert self.api.first_poll is not None
        return 1000 * (self.api.first_poll - self.spawned)

    def invoke(self, event: Any, timeout_s: float | None = None) -> Invocation:
        """Hands `event` to the runtime and waits for its response or error."""
        invocation = self.api.submit(event)
        self._wait(invocation.done, timeout_s or self.api.timeout_s + 5, "an answer")
        return invocation

    def peak_rss_kib(self) -> int | None:
        """The process's peak resident set (VmHWM) while it runs; None where /proc cannot say."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) if found else None

    def cpu_ms(self) -> float | None:
        """CPU time the process has used so far (user + system, all its threads) in ms: what Lambda's
        share of a vCPU would stretch; None where /proc cannot say. Resolution: one clock tick."""
        return process_cpu_ms(self.process.pid)

    def stop(self) -> None:
        """Ends the process (Lambda's shutdown: SIGTERM, then SIGKILL), the emulator and its cgroup."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            self.api.close()
            self._xray.close()
            if self.cpu_share is not None:
                self.cpu_share.close()

    def _wait(self, done: threading.Event, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done.wait(_POLL_S):
            if self.process.poll() is not None:
                raise RuntimeFailure(f"the runtime exited ({self.process.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"no {what} from the runtime within {timeout_s:.0f} s")

    def __enter__(self) -> RunningFunction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _describe(error: Mapping[str, Any]) -> str:
    return f"{error.get('errorType')}: {error.get('errorMessage')}"


def start_function(
    bundle: Path,
    handler: str,
    *,
    python: str,
    runtime: str,
    runtime_client: Path,
    environment: Mapping[str, str],
    function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local",
    timeout_s: float = 60.0,
    log: Path | None = None,
    sampled: bool = True,
    memory_mb: int | None = None,
) -> RunningFunction:
    """Starts `<python> -m awslambdaric <handler>` in `bundle` as Lambda does, with its own emulator.

    `runtime_client` holds awslambdaric for this Python (pip install --target); `environment` is
    the function's own (template variables, credentials, region). The interpreter runs with -S: its
    site-packages are this machine's, not Lambda's, so the bundle and the runtime client are all
    there is to import (and no .pth file runs). The process's output goes to `log`. `sampled`:
    whether X-Ray samples each invocation (the function's Tracing is Active). `memory_mb`: its
    invocations run at Lambda's CPU share of that memory (INIT does not); RuntimeFailure where no
    CpuShare can be made here (CpuShare.create says why).
    """
    share: CpuShare | None = None
    if memory_mb is not None:
        share, why = CpuShare.create(memory_mb)
        if share is None:
            raise RuntimeFailure(f"cannot run at Lambda's CPU share of {memory_mb} MB: {why}")
    init_end = _InitEnd(share)
    api = RuntimeAPI(function_arn, timeout_s=timeout_s, sampled=sampled)
    api.at_init_end = init_end
    xray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # Tracing: Active sends segments here
    try:
        xray.bind(("127.0.0.1", 0))
        xray_address = "{}:{}".format(*xray.getsockname())
        variables = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(bundle),
            "LAMBDA_RUNTIME_DIR": str(runtime_client),
            "PYTHONPATH": os.pathsep.join((str(bundle), str(runtime_client))),
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only: every cold start is the first
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "AWS_XRAY_DAEMON_ADDRESS": xray_address,
            "_HANDLER": handler,
            **environment,
        }
        with log.open("ab") if log is not None else contextlib.nullcontext(subprocess.DEVNULL) as output:
            spawned = time.perf_counter()
            process = subprocess.Popen(
                [python, "-S", "-m", "awslambdaric", handler],
                cwd=bundle,
                env=variables,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
    except BaseException:
        api.close()
        xray.close()
        if share is not None:
            share.close()
        raise
    init_end.spawned(process.pid)
    return RunningFunction(process, spawned, api, xray, init_end)
