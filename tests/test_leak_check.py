"""The leak check guards every test; prove that it catches a secret in each kind of output."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent
# The suite's own conftest, loaded as a plugin into a scratch project, leak check included.
CONFTEST = 'pytest_plugins = ["tests.conftest"]\n'


@pytest.mark.parametrize(
    "leak",
    [
        'print("password is", SECRET)',
        "import sys; sys.stderr.write(SECRET)",
        'from rotators.log import logger; logger.info("got " + SECRET)',
        'from rotators.log import logger; logger.info("ok", extra={"value": SECRET})',
        'import logging; logging.getLogger("psycopg").warning(SECRET)',
    ],
)
def test_a_leaked_secret_fails_the_test(
    pytester: pytest.Pytester, leak: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        f"""
        SECRET = "Leaky-Password-123"

        def test_leaky(leak_check):
            leak_check.add(SECRET)
            {leak}

        def test_clean(leak_check):
            leak_check.add(SECRET)
            print("nothing to see")
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*1 secret value(s) appeared in logs or output*"])
