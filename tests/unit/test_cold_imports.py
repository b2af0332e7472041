"""Cold start: each engine's handler module imports its own driver and no other's.

Every driver is installed in the test environment, so only the code can keep them out.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rotators.engines import ENGINES

DRIVERS = {engine.name: engine.driver for engine in ENGINES}
NEVER_AT_RUNTIME = ("pytest", "moto", "rotators.testing", "rotators.cli", "hypothesis")


@pytest.mark.parametrize("engine", sorted(DRIVERS))
def test_a_handler_imports_only_its_own_driver(engine: str) -> None:
    code = (
        f"import json, sys; import rotators.engines.{engine} as m; assert callable(m.handler);"
        "print(json.dumps(sorted(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(run.stdout))
    assert DRIVERS[engine] in loaded
    others = {driver for name, driver in DRIVERS.items() if name != engine and driver in loaded}
    assert not others, f"{engine} also imports {others}"
    assert not [m for m in NEVER_AT_RUNTIME if m in loaded]
