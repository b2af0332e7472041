"""The Runtime API emulator of bench/runtimes.py against the real runtime client (awslambdaric).

A small module in tmp_path runs as Lambda runs a bundle: `python -m awslambdaric <handler>`,
polling the emulator. The numbers the benchmark reports (INIT, each invocation's time) and the
answers it checks must come from what the runtime client really sent. Where this machine can
make a cgroup (root, a cpu controller), a function also runs at Lambda's CPU share of its memory:
its invocations, not its INIT, must be the slower for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.lambda_runtime import API, CpuShare, RunningFunction, RuntimeAPI, RuntimeFailure, start_function

awslambdaric = pytest.importorskip("awslambdaric", reason="the runtime client comes with the dev extra")

ARN = "arn:aws:lambda:us-east-1:123456789012:function:tiny"
TIMEOUT_S = 30
MODULE = """
import os
import time


def echo(event, context):
    return {
        "got": event["n"],
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID", ""),
    }


def spin(event, context):
    until = time.process_time() + event["cpu_s"]
    while time.process_time() < until:
        pass


def refuse(event, context):
    raise ValueError(f"refused {event['n']}")
"""
# The same CPU work at INIT and in the handler; the handler also says which cgroups it runs in.
BURN_S = 0.08
BURN = f"""
import time


def burn(seconds):
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


burn({BURN_S})


def handler(event, context):
    burn({BURN_S})
    with open("/proc/self/cgroup") as cgroups:
        return cgroups.read()
"""


@contextmanager
def running(
    tmp_path: Path, handler: str, *, sampled: bool = True, memory_mb: int | None = None
) -> Iterator[RunningFunction]:
    """`tiny.<handler>` (or `burn.handler`) under the emulator, on this Python; stopped on the way out."""
    (tmp_path / "tiny.py").write_text(MODULE)
    (tmp_path / "burn.py").write_text(BURN)
    function = start_function(
        tmp_path,
        handler if "." in handler else f"tiny.{handler}",
        python=sys.executable,
        runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
        runtime_client=Path(awslambdaric.__file__).parent.parent,
        environment={"AWS_REGION": "us-east-1"},
        function_arn=ARN,
        timeout_s=TIMEOUT_S,
        sampled=sampled,
        memory_mb=memory_mb,
    )
    with function:
        yield function
    assert function.process.returncode is not None, "the runtime process outlived its function"


def test_init_and_each_response_reach_the_emulator_with_their_request_ids(tmp_path: Path) -> None:
    with running(tmp_path, "echo") as function:
        init_ms = function.wait_for_init()
        cold, warm = function.invoke({"n": 1}), function.invoke({"n": 2})  # one process: warm second

    assert 0 < init_ms < 30_000
    for invocation, n in ((cold, 1), (warm, 2)):
        assert invocation.ok
        # the headers became the context: request id, function ARN and the deadline
        assert invocation.response["got"] == n
        assert invocation.response["request_id"] == invocation.request_id
        assert invocation.response["arn"] == ARN
        assert 0 < invocation.response["remaining_ms"] <= TIMEOUT_S * 1000
        assert invocation.duration_ms > 0
    assert cold.request_id != warm.request_id
    assert cold.response["trace"].endswith(";Sampled=1")  # Tracing: Active, the default


def test_an_unsampled_function_gets_a_trace_header_that_says_so(tmp_path: Path) -> None:
    with running(tmp_path, "echo", sampled=False) as function:
        function.wait_for_init()
        invocation = function.invoke({"n": 1})

    assert invocation.ok
    assert invocation.response["trace"].startswith("Root=1-")
    assert invocation.response["trace"].endswith(";Sampled=0")


def test_cpu_time_counts_what_the_process_spent_on_the_cpu(tmp_path: Path) -> None:
    with running(tmp_path, "spin") as function:
        function.wait_for_init()
        before = function.cpu_ms()
        assert function.invoke({"cpu_s": 0.3}).ok
        after = function.cpu_ms()

    assert before is not None and after is not None
    assert before > 0  # starting the interpreter and the runtime client is CPU work too
    assert 250 <= after - before < 2000  # one clock tick of resolution; the loop spins 300 ms
    # INIT's CPU time, read at the first GET /next: nothing ran between it and `before`
    assert function.init_cpu_ms is not None
    assert 0 < function.init_cpu_ms <= before
    assert function.cpu_share is None  # no memory size: unthrottled


def test_an_error_reaches_it_as_lambdas_error_object_and_the_runtime_goes_on(tmp_path: Path) -> None:
    with running(tmp_path, "refuse") as function:
        function.wait_for_init()
        failed = function.invoke({"n": 1})
        assert function.process.poll() is None  # a handler's exception does not end the environment
        again = function.invoke({"n": 2})

    assert not failed.ok
    assert failed.response is None
    assert failed.error is not None
    assert failed.error["errorType"] == "ValueError"
    assert failed.error["errorMessage"] == "refused 1"
    assert failed.error["requestId"] == failed.request_id
    assert failed.duration_ms > 0
    assert again.error is not None and again.error["errorMessage"] == "refused 2"


def test_an_init_error_fails_the_start_with_its_type(tmp_path: Path) -> None:
    with running(tmp_path, "missing") as function:
        with pytest.raises(RuntimeFailure, match=r"init error: Runtime\.HandlerNotFound"):
            function.wait_for_init()
        assert function.api.first_poll is None


def test_an_answer_for_no_handed_out_event_is_refused() -> None:
    api = RuntimeAPI(ARN)
    try:
        queued = api.submit({"n": 1})  # queued, never handed out: nothing may answer it yet
        for request_id in ("no-such-request", queued.request_id):
            request = urllib.request.Request(
                f"http://{api.address}{API}/invocation/{request_id}/response", data=b"{}", method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 400
            assert json.loads(refused.value.read())["errorType"] == "InvalidRequestID"
        assert not queued.done.is_set()
    finally:
        api.close()


def test_init_ends_before_the_first_event_is_handed_out() -> None:
    """The hook of the first GET /next (where a runtime moves into its cgroup) runs before the event
    queued for it leaves, and before anyone waiting for INIT's end hears of it."""
    api = RuntimeAPI(ARN)
    seen: list[tuple[bool, bool]] = []
    try:
        queued = api.submit({"n": 1})
        api.at_init_end = lambda: seen.append((queued.handed_out is None, api.polled.is_set()))
        poll = threading.Thread(
            target=lambda: urllib.request.urlopen(
                f"http://{api.address}{API}/invocation/next", timeout=5
            ).read()
        )
        poll.start()
        poll.join(5)
        assert not poll.is_alive()
    finally:
        api.close()

    assert seen == [(True, False)]
    assert queued.handed_out is not None
    assert api.first_poll is not None and api.first_poll <= queued.handed_out


# -- Lambda's CPU share -------------------------------------------------------------------------------------
def test_no_share_without_a_cpu_controller_at_the_root(tmp_path: Path) -> None:
    share, why = CpuShare.create(128, root=tmp_path)

    assert share is None
    assert why == f"{tmp_path} is no cgroup cpu controller (no cpu.cfs_quota_us, no cgroup.controllers)"


def test_no_share_where_the_root_only_looks_like_a_cgroup_and_nothing_is_left_behind(tmp_path: Path) -> None:
    """A folder with cgroup v1's file names is no cgroup: the kernel makes no files in a new folder
    there, and the quota is never written into a file of our own making."""
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cgroup.procs").write_text("")

    share, why = CpuShare.create(128, root=tmp_path)

    assert share is None
    assert why.startswith(f"cannot set a CPU quota in {tmp_path}/rotators-bench-")
    assert why.endswith(": No such file or directory")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cgroup.procs", "cpu.cfs_quota_us"]


def test_no_share_under_cgroup_v2_without_cpu_in_the_subtree_control(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")

    share, why = CpuShare.create(128, root=tmp_path)

    assert share is None
    assert why == f"cgroup v2 at {tmp_path}: cpu is not in its cgroup.subtree_control"


# Imports as root, then becomes nobody: the interpreter itself may live where nobody may not read.
CREATE_AS_NOBODY = """
import os
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench.lambda_runtime import CpuShare
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
share, why = CpuShare.create(128, root=Path(sys.argv[2]))
print("made" if share else why)
"""


def test_no_share_where_the_root_is_not_writable() -> None:
    """Not root: the cgroup's folder cannot be made (run as root, the check runs as nobody)."""
    with tempfile.TemporaryDirectory(prefix="rotators-cgroup-") as scratch:
        root = Path(scratch)
        (root / "cpu.cfs_quota_us").write_text("-1\n")
        root.chmod(0o555)  # nobody, or this user, may read it, not write it
        if os.geteuid() != 0:
            share, why = CpuShare.create(128, root=root)
            assert share is None
        else:
            bench = Path(__file__).resolve().parents[2]
            done = subprocess.run(
                [sys.executable, "-c", CREATE_AS_NOBODY, str(bench), str(root)],
                capture_output=True, text=True, check=True, timeout=30,
                env={"PYTHONDONTWRITEBYTECODE": "1"},
            )  # fmt: skip
            why = done.stdout.strip()
        root.chmod(0o755)

    assert why == f"cannot make a cgroup under {root}: Permission denied"


def test_a_share_is_memory_over_1769_mb_of_one_cpu() -> None:
    assert CpuShare(Path("/none"), 256, 1).quota_us == 14471  # 14.5 % of 100 ms
    assert CpuShare(Path("/none"), 128, 1).quota_us == 7236
    assert CpuShare(Path("/none"), 1769, 2).quota_us == 100_000
    assert CpuShare(Path("/none"), 3538, 2).quota_us == 200_000  # two vCPUs
    assert CpuShare(Path("/none"), 16, 1).quota_us == 1000  # the kernel's minimum


@pytest.fixture
def cgroups() -> None:
    """Skips the test where this machine cannot make a cgroup with a CPU quota (not root, no cpu
    controller, read-only)."""
    share, why = CpuShare.create(128)
    if share is None:
        pytest.skip(f"no cgroup here: {why}")
    share.close()


@pytest.mark.usefixtures("cgroups")
def test_at_128_mb_the_handlers_cpu_work_is_slower_and_inits_is_not(tmp_path: Path) -> None:
    with running(tmp_path, "burn.handler") as function:
        free_init_ms = function.wait_for_init()
        free = function.invoke({})
    with running(tmp_path, "burn.handler", memory_mb=128) as function:
        init_ms = function.wait_for_init()
        share = function.cpu_share
        assert share is not None
        # moved at its first GET /next: in the cgroup before it got an event
        assert f"/{share.path.name}\n" in Path(f"/proc/{function.process.pid}/cgroup").read_text()
        throttled = function.invoke({})
        assert function.init_cpu_ms is not None and function.init_cpu_ms >= 1000 * BURN_S - 10

    assert free.ok and throttled.ok
    assert share.path.name not in free.response
    assert f"/{share.path.name}\n" in throttled.response  # the handler ran in the cgroup
    # 80 ms of CPU at 128/1769 of a CPU: ~1.1 s; unthrottled ~80 ms
    assert throttled.duration_ms > 4 * free.duration_ms
    assert throttled.duration_ms > 600
    # INIT's same work (and the interpreter's start) ran unthrottled: throttled, it would take longer
    # than the handler's
    assert init_ms < throttled.duration_ms
    assert init_ms < 3 * free_init_ms + 200
    assert not share.path.exists()  # the cgroup went with the process
