"""Cold start: each engine's handler module imports its own driver and no other's.

Every driver is installed in the test environment, so only the code can keep them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotators.engines import ENGINES
from rotators.testing.tls import CertificateAuthority

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


# Lambda runs INIT with a burst of host CPU and each invocation at the memory's share of a vCPU,
# so the Secrets Manager client (~50 ms of CPU) is made at import when the process is a runtime.
CLIENTS_MADE = (
    "import os, rotators.engines.{engine}, rotators.secrets as s;"
    "print(s._client.cache_info().currsize, os.environ.get('SECRETS_MANAGER_ENDPOINT'))"
)


def clients_made_at_import(engine: str, **environment: str) -> str:
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SECRETS_MANAGER_ENDPOINT"
    }
    env = {**keep, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **environment}
    code = CLIENTS_MADE.format(engine=engine)
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_a_lambda_runtime_makes_the_secrets_manager_client_at_init(engine: str) -> None:
    runtime = {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert clients_made_at_import(engine, **runtime) == "1 None"
    vpc_endpoint = {**runtime, "SECRETS_MANAGER_ENDPOINT": "https://vpce.example"}
    assert clients_made_at_import(engine, **vpc_endpoint) == "1 https://vpce.example"


def test_no_client_at_import_outside_a_lambda_runtime() -> None:
    """Tests and the command line import the engines too: nothing is made until it is used."""
    assert clients_made_at_import("postgresql", AWS_DEFAULT_REGION="eu-west-1") == "0 None"


def test_a_client_that_cannot_be_made_at_init_does_not_stop_the_runtime() -> None:
    """No region: the module still imports, and the step that needs the client says why."""
    assert clients_made_at_import("postgresql", AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001") == "0 None"


@pytest.mark.parametrize(("engine", "contexts"), [("mysql", "1"), ("postgresql", "0")])
def test_mysql_loads_the_environments_ca_bundle_at_init(engine: str, contexts: str, tmp_path: Path) -> None:
    """PyMySQL takes our SSLContext (libpq loads its own file, so PostgreSQL has nothing to load)."""
    bundle = CertificateAuthority.create(tmp_path).cert_path
    code = (
        f"import rotators.engines.{engine}, rotators.database as d;"
        "print(d._shared_context.cache_info().currsize)"
    )
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "ROTATORS_CA_BUNDLE": str(bundle)}
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip() == contexts
