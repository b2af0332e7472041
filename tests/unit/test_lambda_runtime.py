"""The Runtime API emulator of bench/runtimes.py against the real runtime client (awslambdaric).

A two-function module in tmp_path runs as Lambda runs a bundle: `python -m awslambdaric
<handler>`, polling the emulator. The numbers the benchmark reports (INIT, each invocation's
time) and the answers it checks must come from what the runtime client really sent.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.lambda_runtime import API, RunningFunction, RuntimeAPI, RuntimeFailure, start_function

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


@contextmanager
def running(tmp_path: Path, handler: str, *, sampled: bool = True) -> Iterator[RunningFunction]:
    """`tiny.<handler>` under the emulator, on this Python; stopped on the way out."""
    (tmp_path / "tiny.py").write_text(MODULE)
    function = start_function(
        tmp_path,
        f"tiny.{handler}",
        python=sys.executable,
        runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
        runtime_client=Path(awslambdaric.__file__).parent.parent,
        environment={"AWS_REGION": "us-east-1"},
        function_arn=ARN,
        timeout_s=TIMEOUT_S,
        sampled=sampled,
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
