"""The README's first command: `rotators demo` must show a real rotation and real login checks."""

from __future__ import annotations

import os

import pytest

from rotators.cli import main
from tests.conftest import Watched


def test_demo_rotates_both_strategies(leak_check: Watched, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")  # the command sets it; restore it after
    endpoint_before = os.environ.get("SECRETS_MANAGER_ENDPOINT")
    assert main(["demo"]) == 0
    out = leak_check.read_output()
    assert out.count("finishSecret  ok") == 2
    assert "AWSPREVIOUS app_single     sha256:" in out and "is refused [ok]" in out
    assert "AWSPREVIOUS app_alt        sha256:" in out and "logs in    [ok]" in out
    assert "UNEXPECTED" not in out
    assert '{"_aws"' not in out, "metric lines only with --verbose"
    assert out.rstrip().endswith("All rotations succeeded.")
    assert os.environ.get("SECRETS_MANAGER_ENDPOINT") == endpoint_before, "the demo restores the environment"
