"""Cold INIT and rotation time of the Lambda bundles on Python 3.12 and 3.13, under Lambda's runtime client.

    python bench/runtimes.py [--runs 5] [--pythons 3.12 3.13] [--engines postgresql mysql] [--json out.json]

Chooses the template's runtime by measurement (issue 18). For each Python found (pyenv's, or
python3.X on PATH; a missing one is said so) and each engine, it builds the function's bundle
with sam/bundle.py for that Python (Lambda wheels, bytecode by that Python), installs
awslambdaric (the runtime client of Lambda's Python image) for that Python, and runs the bundle
as Lambda does: `python -m awslambdaric <handler>` in the bundle, polling the Runtime API
emulator of bench/lambda_runtime.py, with the function's variables from template.yaml. The
databases are throwaway local servers (PostgreSQL; MariaDB for the mysql engine) with TLS, and
Secrets Manager is moto over HTTP.

Each run is one execution environment: a fresh process (INIT: spawn to its first GET /next),
one rotation (createSecret, setSecret, testSecret, finishSecret) cold, then a second one warm
in the same process. Every step must succeed and the new AWSCURRENT must log in, or the
benchmark fails. Runs go round-robin over the Pythons and engines, after one untimed run of each
(so all read the same warm page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lambda_runtime import RunningFunction, start_function  # noqa: E402
from rotators.cli.invoke import lambda_variables  # noqa: E402
from rotators.cli.samtemplate import LOCAL_ACCOUNT_ID, FunctionSpec, SamTemplate  # noqa: E402
from rotators.engines import BY_NAME, Engine  # noqa: E402
from rotators.rotation import STEPS  # noqa: E402
from rotators.testing.secretsmanager import REGION, LocalSecretsManager  # noqa: E402
from sam import bundle as bundler  # noqa: E402

PYTHONS = ("3.12", "3.13")
ENGINES = ("postgresql", "mysql")
ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64"}  # this machine's, as template.yaml names it
CLIENT_CACHE = ROOT / ".aws-sam" / "runtime-clients"  # awslambdaric per Python (pip --target)
LOGS = ROOT / ".aws-sam" / "runtimes-logs"  # each function's output (Powertools logs, EMF lines)
# Distributions whose versions the report names (from each bundle's own dist-info).
REPORTED = (
    "awslambdaric",
    "boto3",
    "botocore",
    "aws-lambda-powertools",
    "aws-xray-sdk",
    "psycopg",
    "psycopg-binary",
    "pymysql",
)


class BenchFailure(Exception):
    """A check failed: the benchmark stops and says which."""


# -- the databases ------------------------------------------------------------------------------------
class Database(ABC):
    """A throwaway server of one engine: its logins, its secrets and the login check."""

    engine_value = ""  # the secret's `engine`

    def __init__(self, host: str, port: int, ca_bundle: Path) -> None:
        self.host, self.port, self.ca_bundle = host, port, ca_bundle

    def secret(self, username: str, password: str) -> dict[str, Any]:
        """A single-user secret, as someone's script would store it."""
        return {
            "engine": self.engine_value, "host": self.host, "port": self.port,
            "username": username, "password": password,
        }  # fmt: skip

    @abstractmethod
    def add_login(self, username: str, password: str) -> None: ...

    @abstractmethod
    def logs_in(self, username: str, password: str) -> bool: ...

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def close(self) -> None: ...


class PostgreSQL(Database):
    engine_value = "postgres"

    def __init__(self) -> None:
        from rotators.testing.postgres import PostgresFactory

        self.factory = PostgresFactory()
        self.server = self.factory.start()
        super().__init__(self.server.host, self.server.port, self.factory.ca.cert_path)

    def secret(self, username: str, password: str) -> dict[str, Any]:
        return {**super().secret(username, password), "dbname": "postgres"}

    def add_login(self, username: str, password: str) -> None:
        from psycopg import sql

        create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(username), sql.Literal(password)
        )
        with self._connect(**self.server.admin_dsn()) as conn:
            conn.execute(create)

    def logs_in(self, username: str, password: str) -> bool:
        import psycopg

        login = {**self.server.admin_dsn(), "user": username, "password": password}
        try:
            with self._connect(**login):
                return True
        except psycopg.OperationalError:
            return False

    def version(self) -> str:
        with self._connect(**self.server.admin_dsn()) as conn:
            found = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {found[0] if found else '?'}"

    def close(self) -> None:
        self.factory.close()

    @staticmethod
    def _connect(**dsn: Any) -> Any:
        import psycopg

        return psycopg.connect(**dsn, autocommit=True, connect_timeout=5)


class MariaDB(Database):
    engine_value = "mariadb"
    login_host = "127.0.0.1"  # the account a local TCP login matches (the server skips name resolution)

    def __init__(self) -> None:
        from rotators.testing.mariadb import MariaDBFactory

        self.factory = MariaDBFactory()
        self.server = self.factory.start()
        super().__init__(self.server.host, self.server.port, self.factory.ca.cert_path)

    def add_login(self, username: str, password: str) -> None:
        self._query("CREATE USER %s@%s IDENTIFIED BY %s", (username, self.login_host, password))

    def logs_in(self, username: str, password: str) -> bool:
        import pymysql

        login = {**self.server.admin_kwargs(), "user": username, "password": password}
        try:
            pymysql.connect(**login).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def version(self) -> str:
        return f"MariaDB {self._query('SELECT VERSION()')[0][0]}"

    def close(self) -> None:
        self.factory.close()

    def _query(self, statement: str, params: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        import pymysql

        with pymysql.connect(**self.server.admin_kwargs()) as conn, conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            return list(cursor.fetchall())


DATABASES: dict[str, Callable[[], Database]] = {"postgresql": PostgreSQL, "mysql": MariaDB}


# -- what runs ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One execution environment's numbers."""

    init_ms: float
    cold_rotation_ms: float
    warm_rotation_ms: float
    peak_rss_mb: float | None


@dataclass
class Result:
    """One Python and engine: its bundle and the numbers of each timed run."""

    python: str
    engine: str
    bundle_mb: float
    init_ms: list[float] = field(default_factory=list)
    cold_rotation_ms: list[float] = field(default_factory=list)
    warm_rotation_ms: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.init_ms.append(run.init_ms)
        self.cold_rotation_ms.append(run.cold_rotation_ms)
        self.warm_rotation_ms.append(run.warm_rotation_ms)
        if run.peak_rss_mb is not None:
            self.peak_rss_mb.append(run.peak_rss_mb)


@dataclass
class Runtime:
    """A Python found here, with awslambdaric installed for it."""

    version: str  # "3.12"
    python: str
    full_version: str
    client: Path  # the pip --target directory of awslambdaric

    @property
    def name(self) -> str:
        return f"python{self.version}"


@dataclass
class Function:
    """A built bundle of one engine for one runtime, ready to start."""

    runtime: Runtime
    engine: Engine
    spec: FunctionSpec
    bundle: Path
    result: Result

    @property
    def label(self) -> str:
        return f"{self.runtime.name} {self.engine.name}"


def find_runtime(version: str) -> Runtime | None:
    """The Python `version` (sam/bundle.py's search: pyenv's, then python3.X), with awslambdaric."""
    python = bundler.find_python(version)
    if python is None:
        return None
    full = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    return Runtime(version, python, full, install_runtime_client(python, version))


def install_runtime_client(python: str, version: str) -> Path:
    """awslambdaric for this Python, installed once with its own pip (its wheels are per version)."""
    target = CLIENT_CACHE / f"python{version}"
    done = target / ".installed"
    if not done.is_file():
        command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*command, "--upgrade", "--target", str(target), "awslambdaric"], check=True)
        done.touch()
    return target


def build(runtime: Runtime, engine: Engine, template: SamTemplate, into: Path) -> Function:
    """The engine's bundle for this runtime, as `sam build` would make it with LAMBDA_PYTHON set."""
    arch = ARCHITECTURES.get(platform.machine())
    if arch is None:
        raise BenchFailure(f"Lambda has no architecture for this machine ({platform.machine()})")
    out = into / f"{runtime.name}-{engine.name}"
    line = bundler.build(
        ROOT / "rotators", out, engine.handler, extra=engine.name, arch=arch, python_version=runtime.version
    )
    print(f"  {line}")
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    result = Result(runtime.name, engine.name, size / 2**20)
    return Function(runtime, engine, template.function(engine.logical_id), out, result)


def function_environment(spec: FunctionSpec, sm: LocalSecretsManager, ca_bundle: Path) -> dict[str, str]:
    """What Lambda gives the function: its template variables, the runtime's own variables and its
    role's credentials (here moto's fake ones, with the local endpoint)."""
    variables = {**spec.variables, **lambda_variables(spec, REGION)}
    del variables["AWS_SAM_LOCAL"]  # SAM's marker, not Lambda's: it would turn Powertools' tracer off
    return {**variables, **sm.environment(), "ROTATORS_CA_BUNDLE": str(ca_bundle)}


# -- one run ---------------------------------------------------------------------------------------------
def rotate(running: RunningFunction, sm: LocalSecretsManager, arn: str) -> float:
    """One rotation, the four steps as Secrets Manager invokes them; the sum of their times."""
    token = sm.start_rotation(arn)
    total = 0.0
    for step in STEPS:
        invocation = running.invoke({"SecretId": arn, "ClientRequestToken": token, "Step": step.value})
        if not invocation.ok:
            error = invocation.error or {}
            raise BenchFailure(f"{step.value} failed: {error.get('errorType')}: {error.get('errorMessage')}")
        total += invocation.duration_ms
    if "AWSCURRENT" not in sm.stages(arn).get(token, []):
        raise BenchFailure("the rotation ended without its version as AWSCURRENT")
    return total


def run_once(function: Function, database: Database, sm: LocalSecretsManager) -> Run:
    """A fresh execution environment: INIT, a cold rotation, a warm one; the new password must log in."""
    log = LOGS / f"{function.runtime.name}-{function.engine.name}.log"
    try:
        return _run(function, database, sm, log)
    except Exception as exc:
        raise BenchFailure(f"{function.label}: {exc} (the function's output: {log})") from exc


def _run(function: Function, database: Database, sm: LocalSecretsManager, log: Path) -> Run:
    username, password = f"rt_{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(18)
    database.add_login(username, password)
    arn = sm.create_secret(f"runtimes/{username}", database.secret(username, password))
    spec = function.spec
    with start_function(
        function.bundle,
        spec.handler,
        python=function.runtime.python,
        runtime=function.runtime.name,
        runtime_client=function.runtime.client,
        environment=function_environment(spec, sm, database.ca_bundle),
        function_arn=f"arn:aws:lambda:{REGION}:{LOCAL_ACCOUNT_ID}:function:{spec.function_name}",
        timeout_s=spec.timeout,
        log=log,
    ) as running:
        init_ms = running.wait_for_init()
        cold_ms = rotate(running, sm, arn)
        warm_ms = rotate(running, sm, arn)
        peak_kib = running.peak_rss_kib()
    current = sm.value(arn, "AWSCURRENT")
    if current["password"] == password or not database.logs_in(current["username"], current["password"]):
        raise BenchFailure("the rotated AWSCURRENT does not log in (or did not change)")
    return Run(init_ms, cold_ms, warm_ms, peak_kib / 1024 if peak_kib is not None else None)


# -- the report ------------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    """Median (min-max), or - when nothing was measured."""
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def print_table(results: list[Result], runs: int) -> None:
    print(
        "\n| Python | engine | bundle MB (unzipped) | INIT ms | first rotation ms (4 steps, cold) "
        "| warm rotation ms | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.python} | {r.engine} | {r.bundle_mb:.1f} | {spread(r.init_ms)} | "
            f"{spread(r.cold_rotation_ms)} | {spread(r.warm_rotation_ms)} | {spread(r.peak_rss_mb)} |"
        )
    print(f"\nmedian (min-max) of {runs} runs; each run a fresh runtime process")


def versions(functions: list[Function], databases: Mapping[str, Database]) -> dict[str, str]:
    """Interpreters, servers, and the runtime client, SDKs and drivers each bundle holds (its
    dist-info); a version that differs between bundles is named with the bundles that hold it."""
    found = {f.runtime.name: f"{f.runtime.full_version} ({f.runtime.python})" for f in functions}
    found.update({f"{name} server": database.version() for name, database in databases.items()})
    holders: dict[str, dict[str, list[str]]] = {}
    for function in functions:
        for path in (function.runtime.client, function.bundle):
            for dist in metadata.distributions(path=[str(path)]):
                name = dist.metadata["Name"].lower().replace("_", "-")
                if name in REPORTED:
                    holders.setdefault(name, {}).setdefault(dist.version, []).append(function.label)
    for name, by_version in sorted(holders.items()):
        if len(by_version) == 1:
            found[name] = next(iter(by_version))
        else:
            found[name] = "; ".join(f"{v} ({', '.join(labels)})" for v, labels in by_version.items())
    return found


def measure(runtimes: list[Runtime], engines: list[Engine], runs: int) -> tuple[list[Result], dict[str, str]]:
    """Builds every bundle, starts the servers, then runs round-robin; the first round is untimed."""
    template = SamTemplate.load(ROOT / "template.yaml")
    LOGS.mkdir(parents=True, exist_ok=True)
    for stale in LOGS.glob("*.log"):
        stale.unlink()
    databases: dict[str, Database] = {}
    sm = LocalSecretsManager()
    try:
        with tempfile.TemporaryDirectory(prefix="rotators-runtimes-") as scratch:
            print("Building the bundles (sam/bundle.py):")
            functions = [build(rt, engine, template, Path(scratch)) for rt in runtimes for engine in engines]
            for engine in engines:
                databases[engine.name] = DATABASES[engine.name]()
            for timed in (False, *([True] * runs)):  # untimed first: the page cache holds every bundle
                for function in functions:
                    run = run_once(function, databases[function.engine.name], sm)
                    if timed:
                        function.result.add(run)
            return [function.result for function in functions], versions(functions, databases)
    finally:
        sm.close()
        for database in databases.values():
            database.close()


def find_runtimes(versions: list[str]) -> tuple[list[Runtime], list[str]]:
    """The Pythons found (with awslambdaric), and the versions that are not installed."""
    found, missing = [], []
    for version in versions:
        runtime = find_runtime(version)
        if runtime is None:
            missing.append(version)
            print(
                f"MISSING: Python {version} is not installed (no ~/.pyenv/versions/{version}.*, "
                f"no python{version}): it is left out of the table"
            )
        else:
            found.append(runtime)
    return found, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per Python and engine")
    parser.add_argument("--pythons", nargs="+", default=list(PYTHONS), help="default: 3.12 3.13")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--json", type=Path, help="also write the numbers and versions as JSON")
    args = parser.parse_args(argv)

    runtimes, missing = find_runtimes(args.pythons)
    if not runtimes:
        print("FAILED: none of the Pythons is installed", file=sys.stderr)
        return 1
    try:
        results, found = measure(runtimes, [BY_NAME[name] for name in args.engines], args.runs)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\nLambda runtimes benchmark, {date.today()}, {machine}, awslambdaric under a local Runtime API")
    print_table(results, args.runs)
    print("\nVersions:")
    for name, version in found.items():
        print(f"- {name}: {version}")
    if missing:
        print(f"\nNot measured (not installed): Python {', '.join(missing)}")
    if args.json:
        document = {
            "date": str(date.today()), "machine": machine, "runs": args.runs, "missing": missing,
            "versions": found, "results": [asdict(r) for r in results],
        }  # fmt: skip
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
