"""Cold start of the Lambda bundles under Lambda's runtime client, beside AWS's sample functions.

    python bench/coldstart.py [--runs 10] [--pythons 3.13] [--engines postgresql mysql]
                              [--variants bytecode source] [--sample DIR] [--build-dir DIR]
                              [--check] [--json out.json]

Issue 16: every rotation starts cold, so the cold path is the common path. For the runtime of
template.yaml (or each of --pythons) and each engine, it builds the function's bundle with
sam/bundle.py in two variants: `bytecode` (what `sam build` makes with the runtime's Python at
hand) and `source` (LAMBDA_PRECOMPILE=no: what a build machine without that Python makes, and so
what Lambda's read-only /var/task compiles at every cold start). With --build-dir it takes the
bundles `sam build` made there instead (no rebuild). Each run is a fresh process under
awslambdaric, as bench/runtimes.py starts it: INIT, a first rotation (four steps, cold), a second
one (warm) against throwaway PostgreSQL and MariaDB servers and moto; runs go round-robin after
one untimed round. One more untimed start per function lists the modules imported at INIT.

--sample DIR (a checkout of aws-samples/aws-secrets-manager-rotation-lambdas) adds AWS's
single-user PostgreSQL and MySQL functions, built into a scratch folder with their drivers from
PyPI, run the same way against the same servers, and the ratio ours / sample.

All of that runs on this machine's CPUs. Lambda does not: INIT runs with a burst of host CPU (up
to 10 s, whatever the memory size), an invocation with memory / 1,769 MB of one vCPU (14.5 % at
the template's 256 MB), so CPU work in the handler costs ~7x the wall time of the same work at
INIT. Where this machine lets it make a cgroup (root, a cpu controller: bench/lambda_runtime.py's
CpuShare), every function also runs so, at the template's memory size: a second table, round-robin
with the others, the same --runs. Where it cannot, one line says why and that table is left out.

Then an estimate of what a rotation costs at 128, 256 and 512 MB on x86_64 and arm64, from the
unthrottled runs: INIT's wall time as measured (its burst CPU does not stretch), the first
rotation's waiting as measured and its CPU time (the process's CPU after INIT) stretched by
Lambda's CPU-per-memory rule.

--check (sam-check: fast, one variant, one timed run, no sample, no run at Lambda's CPU share)
also runs, in ONE runtime process per engine, a single-user rotation and an alternating-users one
(the latter makes the `_clone` user), and the new AWSCURRENT must log in after each. With
--build-dir, every function `sam build` made must also start under awslambdaric and answer a
malformed event with EventError, --runs times each: a table gives their INIT (and size), also of
the engines no server here can rotate.
Exit status 1 when anything fails. Without a Python of the runtime's version it prints SKIPPED and
exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lambda_runtime import FULL_VCPU_MB, CpuShare, RuntimeFailure, start_function  # noqa: E402
from bench.runtimes import (  # noqa: E402
    ENGINES,
    LOGS,
    BenchFailure,
    Database,
    Function,
    Result,
    Runtime,
    build,
    bundle_mb,
    find_runtime,
    function_environment,
    log_path,
    logs_in_changed,
    machine_architecture,
    new_secret,
    rotate,
    run_rounds,
    servers,
    spread,
    started,
    tracing_active,
    versions,
)
from rotators.cli.samtemplate import DEFAULT_RUNTIME, SamTemplate  # noqa: E402
from rotators.database import other_user  # noqa: E402
from rotators.engines import BY_NAME, Engine  # noqa: E402
from rotators.testing.secretsmanager import LocalSecretsManager  # noqa: E402
from sam import bundle as bundler  # noqa: E402

# -- Lambda's price and CPU rule ------------------------------------------------------------------------
# FULL_VCPU_MB (bench/lambda_runtime.py): "Lambda allocates CPU power in proportion to the amount of
# memory configured ... at 1,769 MB, a function has the equivalent of one vCPU" (AWS Lambda
# Developer Guide, "Configure Lambda function memory"). INIT is not held to it: "Lambda managed
# runtimes offer up to 10 seconds for function initialization with burst CPU" (awslabs' Lambda Web
# Adapter docs; measured on python3.12 at 128 MB, dev.classmethod.jp/articles/
# lambda-boost-host-cpu-in-init-phase/, 2024-01-22).
# aws.amazon.com/lambda/pricing, US East (N. Virginia), the first tier (first 6 billion GB-seconds a
# month); INIT is billed as duration too (on-demand functions of managed runtimes, since 2025-08-01).
PRICE_PER_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICE_PER_REQUEST = 0.20 / 1_000_000
INVOCATIONS_PER_ROTATION = 4  # createSecret, setSecret, testSecret, finishSecret
MEMORY_SIZES = (128, 256, 512)

# Modules whose presence at INIT is worth naming: the heavy ones issue 16 found in a cold start.
HEAVY = (
    "asyncio", "cryptography", "aws_xray_sdk", "wrapt", "boto3", "botocore", "psycopg", "pymysql",
    "nacl", "s3transfer",
)  # fmt: skip
VARIANTS = ("bytecode", "source")


# -- pure parts: modules, cost, tables --------------------------------------------------------------------
_LOADED = re.compile(r"^import '([^']+)' # ")  # python -v: a module that was loaded, and its loader


def parse_importtime(text: str) -> list[str]:
    """The modules imported, in the order `python -X importtime` reported them, once each.

    Its lines are `import time: <self us> | <cumulative us> | <indented name>` after a header, but
    it reports an import that failed too (PyMySQL tries `cryptography`, which may be absent), so a
    module counts only where `python -v` in the same stream says it was loaded (`import 'name' #`).
    Any other line (the function's own output shares the stream) is passed over."""
    timed, loaded = [], set()
    for line in text.splitlines():
        if line.startswith("import time:"):
            name = line.rpartition("|")[2].strip()
            if name and name != "imported package":
                timed.append(name)
        elif found := _LOADED.match(line):
            loaded.add(found[1])
    return [name for name in dict.fromkeys(timed) if name in loaded]


def heavy_modules(modules: Sequence[str]) -> list[str]:
    """Which of HEAVY are loaded (as the top-level package of any module), in HEAVY's order."""
    tops = {module.split(".", 1)[0] for module in modules}
    return [name for name in HEAVY if name in tops]


@dataclass(frozen=True)
class Estimate:
    """What one rotation (INIT and the four steps in one execution environment) would cost."""

    memory_mb: int
    duration_ms: float
    gb_s: float
    usd_per_1000: Mapping[str, float]  # by architecture


def estimate(init_ms: float, first_ms: float, first_cpu_ms: float, memory_mb: int) -> Estimate:
    """INIT runs with Lambda's burst of host CPU, so its wall time stands. Below FULL_VCPU_MB an
    invocation gets a share of one vCPU, so the CPU part of the first rotation stretches by
    FULL_VCPU_MB / memory and its waiting (network, the database) does not. CPU time above the wall
    time (threads on two cores here) cannot overlap on one share: it all stretches."""
    stretch = max(1.0, FULL_VCPU_MB / memory_mb)
    duration_ms = init_ms + max(0.0, first_ms - first_cpu_ms) + first_cpu_ms * stretch
    gb_s = memory_mb / 1024 * duration_ms / 1000
    requests = INVOCATIONS_PER_ROTATION * PRICE_PER_REQUEST
    usd = {arch: 1000 * (gb_s * price + requests) for arch, price in PRICE_PER_GB_S.items()}
    return Estimate(memory_mb, duration_ms, gb_s, usd)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int = 1) -> str:
    """A markdown table: the first `text_columns` left-aligned, the numbers after them right-aligned."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    rule = ["---"] * text_columns + ["---:"] * (len(headers) - text_columns)
    lines = [f"| {' | '.join(headers)} |", f"|{'|'.join(rule)}|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def ratio(ours: Sequence[float], reference: Sequence[float]) -> str:
    """Median over median, or - when either side has nothing."""
    if not ours or not reference:
        return "-"
    return f"{statistics.median(ours) / statistics.median(reference):.2f}"


# -- what is measured ----------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One function and variant in the tables: its runs (in `function.result`) and what one start shows."""

    function: Function
    name: str  # the table's name for it: its LogicalId, or the sample's folder
    zipped_mb: float
    sample: bool = False
    modules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def zipped_mb(bundle: Path) -> float:
    """The size of the bundle zipped as `sam deploy` uploads it (deflate)."""
    with tempfile.TemporaryDirectory(prefix="rotators-zip-") as scratch:
        archive = shutil.make_archive(str(Path(scratch) / "bundle"), "zip", root_dir=bundle)
        return Path(archive).stat().st_size / 2**20


def modules_at_init(function: Function, database: Database, sm: LocalSecretsManager) -> list[str]:
    """The modules imported at INIT, from a start of its own that is never timed.

    PYTHONPROFILEIMPORTTIME=1 and PYTHONVERBOSE=1 (`-X importtime -v` as variables, which only this
    start gets) make the interpreter report each import on stderr; the process is stopped at its
    first GET /next, so the report holds INIT's imports. Nothing goes into the bundle or onto
    PYTHONPATH, so they are exactly those of a real cold start, and the reports' own cost (lines
    per import) stays out of the timed runs."""
    log = log_path(function).with_suffix(".importtime.log")
    log.unlink(missing_ok=True)
    reports = {"PYTHONPROFILEIMPORTTIME": "1", "PYTHONVERBOSE": "1"}
    try:
        with started(function, database, sm, log, reports) as running:
            running.wait_for_init()
    except Exception as exc:
        raise BenchFailure(f"{function.label}: {exc} (the function's output: {log})") from exc
    return parse_importtime(log.read_text(errors="replace"))


# -- AWS's sample functions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    folder: str  # in aws-samples/aws-secrets-manager-rotation-lambdas
    driver: str  # its driver's distribution on PyPI
    secret_extra: Mapping[str, Any]  # what its secret holds beyond ours


# Its secrets say `ssl: false`: the sample verifies the server against /etc/pki/tls/cert.pem,
# Amazon Linux's CA store, which knows nothing of the throwaway servers' CA; so it connects without
# TLS where ours verifies the server's certificate (verify-full). The MySQL one takes `mysql` only.
SAMPLES = {
    "postgresql": Sample("SecretsManagerRDSPostgreSQLRotationSingleUser", "PyGreSQL", {"ssl": False}),
    "mysql": Sample("SecretsManagerRDSMySQLRotationSingleUser", "PyMySQL", {"engine": "mysql", "ssl": False}),
}
SAMPLE_TLS_NOTE = (
    "secrets of AWS's sample hold ssl: false (its CA file /etc/pki/tls/cert.pem is Amazon Linux's): "
    "it connects without TLS, ours with verify-full"
)


def build_sample(
    runtime: Runtime, engine: Engine, checkout: Path, template: SamTemplate, into: Path
) -> Entry | str:
    """AWS's single-user function of this engine with its driver, as a zip for Lambda would hold
    them (bytecode when the runtime's Python is here); or why it cannot be built."""
    sample = SAMPLES[engine.name]
    source = checkout / sample.folder / "lambda_function.py"
    if not source.is_file():
        return f"{source} does not exist: is --sample a checkout of aws-secrets-manager-rotation-lambdas?"
    out = into / f"{runtime.name}-aws-sample-{engine.name}"
    out.mkdir(parents=True)
    shutil.copy2(source, out / source.name)
    notes = [f"{sample.driver} from PyPI as a Lambda wheel"]
    try:
        bundler.pip_install([sample.driver], out, machine_architecture(), runtime.version)
    except bundler.BundleError:
        # No manylinux wheel (PyGreSQL ships none): build it here, against this machine's libpq, with
        # the runtime's Python. AWS's own zip carries a build of its own and its libpq.
        command = [runtime.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*command, "--no-compile", "--target", str(out), sample.driver],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"{sample.driver} has no Lambda wheel and did not build here: {last}"
        notes = [f"{sample.driver}: no Lambda wheel on PyPI, built here from its source against this libpq"]
    notes.append(bundler.precompile(out, out, runtime.version))
    ours = template.function(engine.logical_id)
    spec = dataclasses.replace(
        ours,
        logical_id=sample.folder,
        handler="lambda_function.lambda_handler",
        function_name=f"aws-sample-{engine.name}",
        variables={},  # its SECRETS_MANAGER_ENDPOINT comes with the local endpoint's variables
    )
    result = Result(runtime.name, engine.name, bundle_mb(out), "AWS sample")
    function = Function(runtime, engine, spec, out, result, sampled=False, secret_extra=sample.secret_extra)
    return Entry(function, sample.folder, zipped_mb(out), sample=True, notes=notes)


def try_sample_rotation(entry: Entry, database: Database, sm: LocalSecretsManager) -> None:
    """One rotation of the sample before the runs: where it cannot rotate here, INIT only is measured
    for it, and the table says why."""
    function = entry.function
    arn, _, password = new_secret(function, database, sm)
    try:
        with started(function, database, sm, log_path(function)) as running:
            running.wait_for_init()
            rotate(running, sm, arn)
        logs_in_changed(database, sm, arn, password)
    except Exception as exc:
        function.init_only = f"{type(exc).__name__}: {exc}"
        entry.notes.append(f"INIT only: its rotation failed here ({function.init_only})")


# -- the check ------------------------------------------------------------------------------------------
def check_rotations(function: Function, database: Database, sm: LocalSecretsManager) -> str:
    """In ONE runtime process: a single-user rotation, then an alternating-users one (an app user
    and a master secret: it makes the `_clone` user); AWSCURRENT must log in after each."""
    single_arn, single_user, single_password = new_secret(function, database, sm)
    master, master_password = f"{single_user}_m", secrets.token_urlsafe(18)
    database.add_login(master, master_password, master=True)
    master_arn = sm.create_secret(f"runtimes/{master}", function.secret(database, master, master_password))
    app_arn, app_user, app_password = new_secret(function, database, sm, masterarn=master_arn)
    log = log_path(function).with_suffix(".check.log")
    try:
        with started(function, database, sm, log) as running:
            running.wait_for_init()
            rotate(running, sm, single_arn)
            logs_in_changed(database, sm, single_arn, single_password)
            rotate(running, sm, app_arn)
            logs_in_changed(database, sm, app_arn, app_password)
            if sm.value(app_arn, "AWSCURRENT")["username"] != other_user(app_user):
                raise BenchFailure("alternating users: AWSCURRENT is not the clone user")
            if running.process.poll() is not None:
                raise BenchFailure("the runtime process did not outlive its rotations")
    except Exception as exc:
        raise BenchFailure(f"{function.label}: {exc} (the function's output: {log})") from exc
    return f"ok: {function.label}: single user and alternating users (clone made) in one runtime process"


def check_every_bundle_answers(
    runtime: Runtime,
    template: SamTemplate,
    build_dir: Path,
    sm: LocalSecretsManager,
    ca_bundle: Path,
    *,
    rounds: int = 1,
) -> tuple[list[str], dict[str, list[float]]]:
    """Every function `sam build` made, started under awslambdaric, answers a malformed event with
    its own typed error (EventError): each bundle loads in Lambda's runtime client with its driver,
    also those no server here can rotate (Redshift, Oracle, DocumentDB, SQL Server, the example).
    Each start's INIT is kept: `rounds` starts per function, round-robin."""
    lines: list[str] = []
    inits: dict[str, list[float]] = {}
    for logical_id in template.function_ids():
        spec, bundle = template.function(logical_id), build_dir / logical_id
        arch = spec.architectures[0] if spec.architectures else "x86_64"
        if (bundle / "SKIPPED").is_file() or not bundle.is_dir() or arch != machine_architecture():
            lines.append(f"SKIPPED: {logical_id}: no bundle for this machine in {build_dir}")
        else:
            inits[logical_id] = []
    for _ in range(rounds):
        for logical_id, timed in inits.items():
            timed.append(_answers_malformed_event(runtime, template, build_dir / logical_id, sm, ca_bundle))
    lines += [
        f"ok: {runtime.name} {logical_id}: loads under awslambdaric, a malformed event gets EventError"
        for logical_id in inits
    ]
    return lines, inits


def _answers_malformed_event(
    runtime: Runtime, template: SamTemplate, bundle: Path, sm: LocalSecretsManager, ca_bundle: Path
) -> float:
    """One cold start of a bundle and a malformed event; its INIT in ms."""
    logical_id = bundle.name
    spec, log = template.function(logical_id), LOGS / f"{logical_id}.malformed.log"
    try:
        with start_function(
            bundle,
            spec.handler,
            python=runtime.python,
            runtime=runtime.name,
            runtime_client=runtime.client,
            environment=function_environment(spec, sm, ca_bundle),
            timeout_s=spec.timeout,
            log=log,
            sampled=False,
        ) as running:
            init_ms = running.wait_for_init()
            answer = running.invoke({"Step": "notAStep"})
    except RuntimeFailure as exc:
        raise BenchFailure(f"{logical_id} did not start under awslambdaric: {exc} (see {log})") from exc
    kind = (answer.error or {}).get("errorType")
    if kind != "EventError":
        raise BenchFailure(f"{logical_id} answered a malformed event with {kind or 'a success'} (see {log})")
    return init_ms


def init_table(runtime: Runtime, build_dir: Path, inits: Mapping[str, Sequence[float]]) -> str:
    """INIT of every bundle `sam build` made, rotatable here or not, with its size."""
    rows = [
        [logical_id, runtime.name, spread(list(timed)), f"{bundle_mb(build_dir / logical_id):.1f}",
         f"{zipped_mb(build_dir / logical_id):.1f}"]
        for logical_id, timed in inits.items()
    ]  # fmt: skip
    headers = ["function", "Python", "INIT ms (malformed event)", "bundle MB unzipped", "zipped MB"]
    return markdown_table(headers, rows, text_columns=2)


# -- the report ----------------------------------------------------------------------------------------
def with_samples(entries: Sequence[Entry]) -> Iterator[tuple[Entry, Result, Result | None]]:
    """Each entry with its result and, for ours, the result of AWS's sample of its Python and engine."""
    samples = {
        (e.function.runtime.name, e.function.engine.name): e.function.result for e in entries if e.sample
    }
    for entry in entries:
        r = entry.function.result
        yield entry, r, None if entry.sample else samples.get((r.python, r.engine))


def main_table(entries: Sequence[Entry]) -> str:
    headers = [
        "function", "Python", "variant", "INIT ms", "first rotation ms (4 steps, cold)",
        "INIT + first rotation ms", "CPU ms (INIT + first)", "warm rotation ms", "peak RSS MB",
        "bundle MB unzipped (zipped)",
        "modules at INIT", "heavy modules at INIT", "INIT ÷ sample", "INIT + first ÷ sample",
    ]  # fmt: skip
    rows = []
    for entry, r, reference in with_samples(entries):
        rows.append([
            entry.name, r.python, r.variant, spread(r.init_ms), spread(r.cold_rotation_ms),
            spread(r.init_and_first_ms), spread(r.cpu_ms), spread(r.warm_rotation_ms), spread(r.peak_rss_mb),
            f"{r.bundle_mb:.1f} ({entry.zipped_mb:.1f})", str(len(entry.modules)),
            ", ".join(heavy_modules(entry.modules)) or "none",
            ratio(r.init_ms, reference.init_ms) if reference else "-",
            ratio(r.init_and_first_ms, reference.init_and_first_ms) if reference else "-",
        ])  # fmt: skip
    return markdown_table(headers, rows, text_columns=3)


def cost_table(entries: Sequence[Entry], template_memory: int) -> str:
    headers = [
        "function", "Python", "variant", "memory MB", "duration ms (INIT + 4 steps)", "GB-s",
        *(f"{arch} $ per 1,000 rotations" for arch in PRICE_PER_GB_S),
    ]  # fmt: skip
    rows = []
    for entry in entries:
        r = entry.function.result
        if not r.cold_rotation_ms or not r.first_cpu_ms:
            continue
        init, first = statistics.median(r.init_ms), statistics.median(r.cold_rotation_ms)
        first_cpu = statistics.median(r.first_cpu_ms)
        for memory in MEMORY_SIZES:
            cost = estimate(init, first, first_cpu, memory)
            rows.append([
                entry.name, r.python, r.variant,
                f"{memory}{' (template)' if memory == template_memory else ''}",
                f"{cost.duration_ms:.0f}", f"{cost.gb_s:.3f}",
                *(f"{cost.usd_per_1000[arch]:.4f}" for arch in PRICE_PER_GB_S),
            ])  # fmt: skip
    return markdown_table(headers, rows, text_columns=3)


def cpu_share_title(memory_mb: int) -> str:
    return (
        f"As Lambda runs it at {memory_mb} MB (INIT with burst CPU, invocations at "
        f"{100 * min(1.0, memory_mb / FULL_VCPU_MB):.1f} % of a CPU)"
    )


def lambda_cpu_table(entries: Sequence[Entry]) -> str:
    """The runs at Lambda's CPU share, each row with its ratio to the sample's row measured so."""
    headers = [
        "function", "Python", "variant", "INIT ms", "first rotation ms (4 steps, cold)",
        "INIT + first rotation ms", "INIT + first ÷ sample",
    ]  # fmt: skip
    rows = []
    for entry, r, reference in with_samples(entries):
        rows.append([
            entry.name, r.python, r.variant, spread(r.init_ms), spread(r.cold_rotation_ms),
            spread(r.init_and_first_ms),
            ratio(r.init_and_first_ms, reference.init_and_first_ms) if reference else "-",
        ])  # fmt: skip
    return markdown_table(headers, rows, text_columns=3)


def at_lambda_cpu(entries: Sequence[Entry], memory_mb: int) -> list[Entry] | str:
    """A copy of every entry that runs at Lambda's CPU share of `memory_mb`, each with a result of
    its own; or why this machine cannot run them so (no cgroup can be made)."""
    share, why = CpuShare.create(memory_mb)
    if share is None:
        return why
    share.close()
    throttled = []
    for entry in entries:
        r = entry.function.result
        result = Result(r.python, r.engine, r.bundle_mb, r.variant)
        function = dataclasses.replace(entry.function, result=result, memory_mb=memory_mb)
        throttled.append(dataclasses.replace(entry, function=function, notes=[]))
    return throttled


def print_report(
    entries: Sequence[Entry],
    found: Mapping[str, str],
    runs: int,
    template_memory: int,
    throttled: Sequence[Entry] | str | None = None,
) -> None:
    """`throttled`: the runs at Lambda's CPU share, why there are none, or None (not asked for)."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\nCold start benchmark, {date.today()}, {machine}, awslambdaric under a local Runtime API\n")
    print(main_table(entries))
    print(
        f"\nmedian (min-max) of {runs} timed run{'s' if runs != 1 else ''}, round-robin; each a fresh "
        "runtime process (python -S, PYTHONDONTWRITEBYTECODE); modules at INIT from one more untimed start "
        "(-X importtime)"
    )
    for entry in entries:
        for note in entry.notes:
            print(f"- {entry.name} ({entry.function.result.variant}): {note}")
    if any(entry.sample for entry in entries):
        print(f"- {SAMPLE_TLS_NOTE}")
    if isinstance(throttled, str):
        print(f"\nNot measured as Lambda runs it at {template_memory} MB: {throttled}")
    elif throttled:
        print(f"\n{cpu_share_title(template_memory)}:\n")
        print(lambda_cpu_table(throttled))
        print(
            f"\nmedian (min-max) of {runs} timed run{'s' if runs != 1 else ''}, round-robin with the above; "
            f"from its first GET /next each runtime process is in a cgroup whose CPU quota is "
            f"{template_memory} / {FULL_VCPU_MB} of one CPU (CFS, 100 ms period); INIT runs unthrottled"
        )
    print("\nEstimated cost per rotation (INIT + first rotation, one execution environment):\n")
    print(cost_table(entries, template_memory))
    print(
        f"\nduration = INIT + (first - first CPU) + first CPU x max(1, {FULL_VCPU_MB} / memory MB), from "
        "the medians of INIT's wall time, the first rotation's wall time and its CPU time (utime + stime "
        "after INIT) here: INIT runs with Lambda's burst CPU, so it does not stretch; "
        f"$ = GB-s x price per GB-s + {INVOCATIONS_PER_ROTATION} requests (us-east-1, first tier)."
    )
    print("The arm64 column assumes the same per-vCPU speed as this machine (not measured here).")
    print("\nVersions:")
    for name, version in found.items():
        print(f"- {name}: {version}")


# -- putting it together -----------------------------------------------------------------------------------
def template_python(template: SamTemplate, engines: Sequence[Engine]) -> str:
    """The Python version of the functions' runtime in template.yaml ("3.13")."""
    runtime = template.function(engines[0].logical_id).runtime or DEFAULT_RUNTIME
    return runtime.removeprefix("python")


def from_build_dir(runtime: Runtime, engine: Engine, template: SamTemplate, build_dir: Path) -> Entry | str:
    """The bundle `sam build` made for the engine's function, as it is; or why it cannot run here."""
    spec = template.function(engine.logical_id)
    bundle = build_dir / engine.logical_id
    if (bundle / "SKIPPED").is_file():
        return f"{engine.logical_id}: {(bundle / 'SKIPPED').read_text().strip()}"
    if not bundle.is_dir():
        raise BenchFailure(f"no bundle at {bundle}: run `make sam-build` (sam build)")
    arch = spec.architectures[0] if spec.architectures else "x86_64"
    if arch != machine_architecture():
        return f"{engine.logical_id} is built for {arch}, this machine is {platform.machine()}"
    compiled = any(bundle.joinpath("rotators", "__pycache__").glob("*.pyc"))
    variant = "sam build" + ("" if compiled else ", sources only")
    print(f"  {variant}: {bundle}")
    result = Result(runtime.name, engine.name, bundle_mb(bundle), variant)
    function = Function(runtime, engine, spec, bundle, result, tracing_active(template, engine.logical_id))
    return Entry(function, engine.logical_id, zipped_mb(bundle))


def prepare(
    args: argparse.Namespace,
    runtimes: list[Runtime],
    engines: list[Engine],
    template: SamTemplate,
    scratch: Path,
) -> list[Entry]:
    """Every function of the tables, ours (built, or from --build-dir) and AWS's samples."""
    entries: list[Entry] = []
    print("Bundles:")
    for runtime in runtimes:
        for engine in engines:
            if args.build_dir:
                found = from_build_dir(runtime, engine, template, args.build_dir)
                if isinstance(found, str):
                    print(f"SKIPPED: {found}")
                else:
                    entries.append(found)
                continue
            for variant in args.variants:
                function = build(runtime, engine, template, scratch, variant)
                entries.append(Entry(function, engine.logical_id, zipped_mb(function.bundle)))
    if args.sample:
        for runtime in runtimes:
            for engine in engines:
                sample = build_sample(runtime, engine, args.sample, template, scratch)
                if isinstance(sample, str):
                    print(f"AWS sample for {engine.name} left out: {sample}")
                else:
                    print(f"  AWS sample {sample.name}: {'; '.join(sample.notes)}")
                    entries.append(sample)
    return entries


def run(args: argparse.Namespace, runtimes: list[Runtime], engines: list[Engine]) -> int:
    template = SamTemplate.load(ROOT / "template.yaml")
    memory = template.function(engines[0].logical_id).memory  # Lambda's CPU share is of this
    with tempfile.TemporaryDirectory(prefix="rotators-coldstart-") as scratch:
        entries = prepare(args, runtimes, engines, template, Path(scratch))
        if not entries:
            print("SKIPPED: no bundle to run here (see above)")
            return 0
        engines_used = list({e.function.engine.name: e.function.engine for e in entries}.values())
        with servers(engines_used) as (databases, sm):
            if args.check:
                for entry in entries:
                    print(check_rotations(entry.function, databases[entry.function.engine.name], sm))
            if args.build_dir:
                ca_bundle = next(iter(databases.values())).ca_bundle
                for runtime in runtimes:
                    answers, inits = check_every_bundle_answers(
                        runtime, template, args.build_dir, sm, ca_bundle, rounds=args.runs
                    )
                    print("\n".join(answers))
                    print(f"\nEvery bundle of {args.build_dir}, {args.runs} cold start(s) each:\n")
                    print(init_table(runtime, args.build_dir, inits))
            for entry in entries:
                database = databases[entry.function.engine.name]
                if entry.sample:
                    try_sample_rotation(entry, database, sm)
                entry.modules = modules_at_init(entry.function, database, sm)
            throttled = None if args.check else at_lambda_cpu(entries, memory)
            functions = [entry.function for entry in entries]
            also = [entry.function for entry in throttled] if isinstance(throttled, list) else []
            run_rounds(functions + also, databases, sm, args.runs, warm_up=not args.check)
            found = versions(functions, databases)
        print_report(entries, found, args.runs, memory, throttled)
        if args.json:
            document = {
                "date": str(date.today()), "machine": platform.machine(), "runs": args.runs,
                "versions": found,
                "results": [
                    {**dataclasses.asdict(e.function.result), "name": e.name, "zipped_mb": e.zipped_mb,
                     "modules": e.modules, "notes": e.notes}
                    for e in entries
                ],
            }  # fmt: skip
            if throttled is not None:
                document["lambda_cpu_share"] = {
                    "memory_mb": memory, "cpu_share": min(1.0, memory / FULL_VCPU_MB),
                    "not_measured": throttled if isinstance(throttled, str) else None,
                    "results": [
                        {**dataclasses.asdict(e.function.result), "name": e.name}
                        for e in (throttled if isinstance(throttled, list) else [])
                    ],
                }  # fmt: skip
            args.json.write_text(json.dumps(document, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, help="timed runs per function (default 10; 1 with --check)")
    parser.add_argument("--pythons", nargs="+", help="default: the runtime of template.yaml")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, help="default: both (bytecode with --check)"
    )
    parser.add_argument("--sample", type=Path, help="a checkout of aws-secrets-manager-rotation-lambdas")
    parser.add_argument("--build-dir", type=Path, help="run the bundles `sam build` made here (no rebuild)")
    parser.add_argument(
        "--check", action="store_true", help="both strategies in one process; fast; exit 1 on failure"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.check else 10)
    args.variants = args.variants or (["bytecode"] if args.check else list(VARIANTS))
    if args.check and args.sample:
        parser.error("--check runs no sample")

    engines = [BY_NAME[name] for name in args.engines]
    wanted = args.pythons or [template_python(SamTemplate.load(ROOT / "template.yaml"), engines)]
    try:
        runtimes = []
        for version in wanted:
            runtime = find_runtime(version)
            if runtime is None:
                print(
                    f"SKIPPED: Python {version}: no ~/.pyenv/versions/{version}.*, no python{version} on PATH"
                )
            else:
                runtimes.append(runtime)
        return run(args, runtimes, engines) if runtimes else 0
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
