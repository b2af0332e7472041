"""Cold INIT and rotation time of the Lambda bundles on Python 3.12 and 3.13, under Lambda's runtime client.

    python bench/runtimes.py [--runs 5] [--pythons 3.12 3.13] [--engines postgresql mysql] [--json out.json]

Chooses the template's runtime by measurement (issue 18). For each Python found (pyenv's, or
python3.X on PATH; a missing one is said so) and each engine, it builds the function's bundle
with sam/bundle.py for that Python (Lambda wheels, bytecode by that Python), installs what
Lambda's Python image holds beside the bundle for that Python (its runtime client awslambdaric,
and boto3 with botocore, which the bundles leave out), and runs the bundle
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
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lambda_runtime import RunningFunction, start_function  # noqa: E402
from rotators.cli.invoke import lambda_variables  # noqa: E402
from rotators.cli.samtemplate import LOCAL_ACCOUNT_ID, FunctionSpec, SamTemplate, merge_globals  # noqa: E402
from rotators.engines import BY_NAME, Engine  # noqa: E402
from rotators.rotation import STEPS  # noqa: E402
from rotators.testing.secretsmanager import REGION, LocalSecretsManager  # noqa: E402
from sam import bundle as bundler  # noqa: E402

PYTHONS = ("3.12", "3.13")
ENGINES = ("postgresql", "mysql")
ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64"}  # this machine's, as template.yaml names it
CLIENT_CACHE = ROOT / ".aws-sam" / "runtime-clients"  # the runtime's own packages per Python (pip --target)
# What Lambda's Python image provides beside the bundle: its runtime client and the AWS SDK. The
# marker file holds this line: a directory installed with another one is installed again.
RUNTIME_PACKAGES = ("awslambdaric", "boto3")
CLIENT_MARKER = ".installed"
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
    "pygresql",  # the driver of AWS's PostgreSQL sample (bench/coldstart.py --sample)
)


class BenchFailure(Exception):
    """A check failed: the benchmark stops and says which."""


# -- the databases ------------------------------------------------------------------------------------
def with_a_store(ca: Path) -> Path:
    """The functions' CA bundle: the throwaway CA and this machine's trust store behind it, as big
    as a real one (RDS's global bundle holds a CA per region and key type). A login pays for
    loading every certificate of it (~20 ms of CPU here for 140), which a one-certificate bundle hides."""
    store = ssl.get_default_verify_paths().cafile
    if store is None or not Path(store).is_file():
        return ca
    bundle = ca.with_name(f"{ca.stem}-and-store.pem")
    bundle.write_bytes(ca.read_bytes() + b"\n" + Path(store).read_bytes())
    return bundle


class Database(ABC):
    """A throwaway server of one engine: its logins, its secrets and the login check."""

    engine_value = ""  # the secret's `engine`

    def __init__(self, host: str, port: int, ca_bundle: Path) -> None:
        self.host, self.port, self.ca_bundle = host, port, with_a_store(ca_bundle)

    def secret(self, username: str, password: str) -> dict[str, Any]:
        """A single-user secret, as someone's script would store it."""
        return {
            "engine": self.engine_value, "host": self.host, "port": self.port,
            "username": username, "password": password,
        }  # fmt: skip

    @abstractmethod
    def add_login(self, username: str, password: str, *, master: bool = False) -> None:
        """A login user; a `master` as the managed service makes it: it may manage other users."""

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

    def add_login(self, username: str, password: str, *, master: bool = False) -> None:
        from psycopg import sql

        create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}" + (" CREATEROLE" if master else "")).format(
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

    def add_login(self, username: str, password: str, *, master: bool = False) -> None:
        self._query("CREATE USER %s@%s IDENTIFIED BY %s", (username, self.login_host, password))
        if master:  # RDS's master: every privilege with the grant option, not root
            self._query("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (username, self.login_host))

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
    """One execution environment's numbers; no rotation ones for a function measured at INIT only."""

    init_ms: float
    cold_rotation_ms: float | None
    warm_rotation_ms: float | None
    peak_rss_mb: float | None
    cpu_ms: float | None = None  # the process's CPU time for INIT and the first rotation
    init_cpu_ms: float | None = None  # ... for INIT alone (at its first GET /next)


@dataclass
class Result:
    """One Python, engine and bundle variant: its bundle and the numbers of each timed run."""

    python: str
    engine: str
    bundle_mb: float
    variant: str = "bytecode"
    init_ms: list[float] = field(default_factory=list)
    cold_rotation_ms: list[float] = field(default_factory=list)
    warm_rotation_ms: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    init_and_first_ms: list[float] = field(default_factory=list)  # wall time, run by run
    cpu_ms: list[float] = field(default_factory=list)  # CPU time of the same span, run by run
    init_cpu_ms: list[float] = field(default_factory=list)  # CPU time of INIT, run by run
    first_cpu_ms: list[float] = field(default_factory=list)  # ... of the first rotation (the rest)

    def add(self, run: Run) -> None:
        self.init_ms.append(run.init_ms)
        if run.init_cpu_ms is not None:
            self.init_cpu_ms.append(run.init_cpu_ms)
        if run.cold_rotation_ms is not None:
            self.cold_rotation_ms.append(run.cold_rotation_ms)
            self.init_and_first_ms.append(run.init_ms + run.cold_rotation_ms)
            if run.cpu_ms is not None:
                self.cpu_ms.append(run.cpu_ms)
                if run.init_cpu_ms is not None:
                    self.first_cpu_ms.append(run.cpu_ms - run.init_cpu_ms)
        if run.warm_rotation_ms is not None:
            self.warm_rotation_ms.append(run.warm_rotation_ms)
        if run.peak_rss_mb is not None:
            self.peak_rss_mb.append(run.peak_rss_mb)


@dataclass
class Runtime:
    """A Python found here, with the runtime's own packages installed for it."""

    version: str  # "3.12"
    python: str
    full_version: str
    client: Path  # the pip --target directory of RUNTIME_PACKAGES

    @property
    def name(self) -> str:
        return f"python{self.version}"


@dataclass
class Function:
    """A built bundle of one engine for one runtime, ready to start."""

    runtime: Runtime
    engine: Engine
    spec: FunctionSpec  # handler, name, memory, timeout and variables
    bundle: Path
    result: Result
    sampled: bool = True  # X-Ray samples its invocations (Tracing: Active)
    secret_extra: Mapping[str, Any] = field(default_factory=dict)  # what its secrets hold beyond ours
    init_only: str | None = None  # why it cannot rotate here: then only INIT is measured
    # With a memory size its invocations run at Lambda's CPU share of it (INIT unthrottled, as
    # Lambda's burst); None: all of it on this machine's CPUs.
    memory_mb: int | None = None

    @property
    def label(self) -> str:
        at = f" {self.memory_mb}MB" if self.memory_mb is not None else ""
        return f"{self.runtime.name} {self.engine.name} {self.result.variant}{at}"

    def secret(self, database: Database, username: str, password: str) -> dict[str, Any]:
        return {**database.secret(username, password), **self.secret_extra}


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
    """What Lambda's image holds for this Python beside the bundle (RUNTIME_PACKAGES), installed once
    with its own pip: its wheels are per version, and pip writes bytecode, as the image has it."""
    target = CLIENT_CACHE / f"python{version}"
    done, wanted = target / CLIENT_MARKER, " ".join(RUNTIME_PACKAGES)
    if not done.is_file() or done.read_text() != wanted:
        shutil.rmtree(target, ignore_errors=True)  # installed for another list: nothing stale stays
        command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        installed = subprocess.run(
            [*command, "--target", str(target), *RUNTIME_PACKAGES],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0:
            raise BenchFailure(
                f"pip could not install {wanted} for {python}: {installed.stderr.strip()[-500:]}"
            )
        done.write_text(wanted)
    return target


def machine_architecture() -> str:
    """This machine's architecture as template.yaml names it: the only one a bundle can run on here."""
    arch = ARCHITECTURES.get(platform.machine())
    if arch is None:
        raise BenchFailure(f"Lambda has no architecture for this machine ({platform.machine()})")
    return arch


def tracing_active(template: SamTemplate, logical_id: str) -> bool:
    """Whether the function's Tracing (Globals merged, parameters resolved) is Active."""
    resource = template.data["Resources"][logical_id]
    properties = merge_globals(template.data.get("Globals", {}).get("Function", {}), resource["Properties"])
    return bool(template.resolve(properties.get("Tracing", "PassThrough")) == "Active")


def bundle_mb(bundle: Path) -> float:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file()) / 2**20


# What sam/bundle.py is told for each variant of a bundle. `source` is what a build machine without
# the runtime's Python makes; its own wheel cache, since that cache keeps the wheels' bytecode.
VARIANTS: dict[str, dict[str, str]] = {
    "bytecode": {"LAMBDA_PRECOMPILE": "auto"},
    "source": {"LAMBDA_PRECOMPILE": "no", bundler.CACHE_DIR: str(ROOT / ".aws-sam" / "bundle-deps-source")},
}


@contextmanager
def environ(variables: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `variables` set, as it was afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build(
    runtime: Runtime, engine: Engine, template: SamTemplate, into: Path, variant: str = "bytecode"
) -> Function:
    """The engine's bundle for this runtime, as `sam build` would make it with LAMBDA_PYTHON set
    (and, for the `source` variant, without that Python at hand)."""
    arch = machine_architecture()
    out = into / f"{runtime.name}-{engine.name}-{variant}"
    with environ(VARIANTS[variant]):
        line = bundler.build(
            ROOT / "rotators", out, engine.handler, extra=engine.name, arch=arch,
            python_version=runtime.version,
        )  # fmt: skip
    print(f"  {variant}: {line}")
    if variant == "source" and any(out.rglob("*.pyc")):
        raise BenchFailure(f"the {variant} bundle of {engine.name} holds bytecode: {out}")
    result = Result(runtime.name, engine.name, bundle_mb(out), variant)
    sampled = tracing_active(template, engine.logical_id)
    return Function(runtime, engine, template.function(engine.logical_id), out, result, sampled)


def function_environment(spec: FunctionSpec, sm: LocalSecretsManager, ca_bundle: Path) -> dict[str, str]:
    """What Lambda gives the function: its template variables, the runtime's own variables and its
    role's credentials (here moto's fake ones, with the local endpoint)."""
    variables = {**spec.variables, **lambda_variables(spec, REGION)}
    del variables["AWS_SAM_LOCAL"]  # SAM's marker, not Lambda's: it would turn Powertools' tracer off
    return {**variables, **sm.environment(), "ROTATORS_CA_BUNDLE": str(ca_bundle)}


# -- one run ---------------------------------------------------------------------------------------------
def new_secret(
    function: Function, database: Database, sm: LocalSecretsManager, **extra: Any
) -> tuple[str, str, str]:
    """A new login on the server and its secret (with `extra` in it): the ARN, user and password."""
    username, password = f"rt_{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(18)
    database.add_login(username, password)
    arn = sm.create_secret(f"runtimes/{username}", {**function.secret(database, username, password), **extra})
    return arn, username, password


@contextmanager
def started(
    function: Function,
    database: Database,
    sm: LocalSecretsManager,
    log: Path,
    extra_environment: Mapping[str, str] | None = None,
) -> Iterator[RunningFunction]:
    """The function in a fresh runtime process, as Lambda starts it; stopped on the way out."""
    spec = function.spec
    with start_function(
        function.bundle,
        spec.handler,
        python=function.runtime.python,
        runtime=function.runtime.name,
        runtime_client=function.runtime.client,
        environment={**function_environment(spec, sm, database.ca_bundle), **(extra_environment or {})},
        function_arn=f"arn:aws:lambda:{REGION}:{LOCAL_ACCOUNT_ID}:function:{spec.function_name}",
        timeout_s=spec.timeout,
        log=log,
        sampled=function.sampled,
        memory_mb=function.memory_mb,
    ) as running:
        yield running


def log_path(function: Function) -> Path:
    return LOGS / f"{function.label.replace(' ', '-')}.log"


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
    stages = sm.stages(arn).get(token, [])
    if "AWSCURRENT" not in stages:
        raise BenchFailure("the rotation ended without its version as AWSCURRENT")
    if "AWSPENDING" in stages:
        # AWS's own functions leave AWSPENDING on the new AWSCURRENT version, which Secrets Manager
        # takes as a finished rotation; moto would refuse the next RotateSecret, so it goes here.
        sm.client.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=token
        )
    return total


def run_once(function: Function, database: Database, sm: LocalSecretsManager) -> Run:
    """A fresh execution environment: INIT, a cold rotation, a warm one; the new password must log in."""
    log = log_path(function)
    try:
        return _run(function, database, sm, log)
    except Exception as exc:
        raise BenchFailure(f"{function.label}: {exc} (the function's output: {log})") from exc


def logs_in_changed(database: Database, sm: LocalSecretsManager, arn: str, old_password: str) -> None:
    """The rotated AWSCURRENT must differ from `old_password` and log in."""
    current = sm.value(arn, "AWSCURRENT")
    if current["password"] == old_password or not database.logs_in(current["username"], current["password"]):
        raise BenchFailure("the rotated AWSCURRENT does not log in (or did not change)")


def _run(function: Function, database: Database, sm: LocalSecretsManager, log: Path) -> Run:
    arn, _, password = new_secret(function, database, sm)
    with started(function, database, sm, log) as running:
        init_ms = running.wait_for_init()
        init_cpu_ms = running.init_cpu_ms
        if function.init_only is not None:
            peak_kib = running.peak_rss_kib()
            peak_mb = peak_kib / 1024 if peak_kib is not None else None
            return Run(init_ms, None, None, peak_mb, init_cpu_ms=init_cpu_ms)
        cold_ms = rotate(running, sm, arn)
        cpu_ms = running.cpu_ms()
        warm_ms = rotate(running, sm, arn)
        peak_kib = running.peak_rss_kib()
    logs_in_changed(database, sm, arn, password)
    peak_mb = peak_kib / 1024 if peak_kib is not None else None
    return Run(init_ms, cold_ms, warm_ms, peak_mb, cpu_ms, init_cpu_ms)


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
    """Interpreters, servers, what the runtime provides (its client and SDK) and the SDKs and drivers
    each bundle holds (its dist-info); a version that differs between bundles is named with the
    bundles that hold it."""
    found = {f.runtime.name: f"{f.runtime.full_version} ({f.runtime.python})" for f in functions}
    found.update({f"{name} server": database.version() for name, database in databases.items()})
    holders: dict[str, dict[str, list[str]]] = {}
    for function in functions:
        for path, where in ((function.runtime.client, " (the runtime's)"), (function.bundle, "")):
            for dist in metadata.distributions(path=[str(path)]):
                name = dist.metadata["Name"].lower().replace("_", "-")
                if name in REPORTED:
                    holders.setdefault(name + where, {}).setdefault(dist.version, []).append(function.label)
    for name, by_version in sorted(holders.items()):
        if len(by_version) == 1:
            found[name] = next(iter(by_version))
        else:
            found[name] = "; ".join(f"{v} ({', '.join(labels)})" for v, labels in by_version.items())
    return found


@contextmanager
def servers(engines: list[Engine]) -> Iterator[tuple[dict[str, Database], LocalSecretsManager]]:
    """A throwaway server per engine and a local Secrets Manager; a fresh log folder."""
    LOGS.mkdir(parents=True, exist_ok=True)
    for stale in LOGS.glob("*.log"):
        stale.unlink()
    databases: dict[str, Database] = {}
    sm = LocalSecretsManager()
    try:
        for engine in engines:
            databases[engine.name] = DATABASES[engine.name]()
        yield databases, sm
    finally:
        sm.close()
        for database in databases.values():
            database.close()


def run_rounds(
    functions: list[Function],
    databases: Mapping[str, Database],
    sm: LocalSecretsManager,
    runs: int,
    *,
    warm_up: bool = True,
) -> None:
    """Runs round-robin, into each function's result; with `warm_up` the first round is untimed
    (then the page cache holds every bundle)."""
    for timed in (*([False] if warm_up else []), *([True] * runs)):
        for function in functions:
            run = run_once(function, databases[function.engine.name], sm)
            if timed:
                function.result.add(run)


def measure(runtimes: list[Runtime], engines: list[Engine], runs: int) -> tuple[list[Result], dict[str, str]]:
    """Builds every bundle, starts the servers, then runs round-robin; the first round is untimed."""
    template = SamTemplate.load(ROOT / "template.yaml")
    with tempfile.TemporaryDirectory(prefix="rotators-runtimes-") as scratch, servers(engines) as running:
        databases, sm = running
        print("Building the bundles (sam/bundle.py):")
        functions = [build(rt, engine, template, Path(scratch)) for rt in runtimes for engine in engines]
        run_rounds(functions, databases, sm, runs)
        return [function.result for function in functions], versions(functions, databases)


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

    try:
        runtimes, missing = find_runtimes(args.pythons)
        if not runtimes:
            print("FAILED: none of the Pythons is installed", file=sys.stderr)
            return 1
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
