"""Check and measure the bundles `sam build` made: one per function of template.yaml.

    python bench/bundles.py [--build-dir .aws-sam/build] [--runs 3] [--json out.json]

For each function it checks that the bundle holds its handler module and its own driver and no
other engine's driver (nor the local test servers), that every wheel in it is for the
function's runtime and architecture, and it reports the unzipped and zipped size. When a Python
of the runtime's version is found (python3.13 on PATH, pyenv's, or $ROTATORS_LAMBDA_PYTHON) and
the architecture is this machine's, it imports each handler from the bundle alone (no
site-packages, no bytecode cache, as on Lambda's read-only /var/task) in fresh processes and
reports the median cold import time.

A function whose module does not exist yet was built as a SKIPPED marker (sam/bundle.py with
ROTATORS_BUNDLE_ALLOW_MISSING=1): it is reported with the reason and not checked.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "sam"))

import bundle as bundle_module  # noqa: E402  (sam/bundle.py)

from bench.runtimes import install_runtime_client  # noqa: E402
from rotators.cli.samtemplate import FunctionSpec, SamTemplate  # noqa: E402
from rotators.engines import ENGINES  # noqa: E402

# The top-level import names of each engine's driver.
DRIVERS = {engine.name: engine.drivers for engine in ENGINES}
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}


@dataclass
class Report:
    function: str
    handler: str
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    unzipped_bytes: int = 0
    zipped_bytes: int = 0
    import_ms: float | None = None
    note: str = ""


def engine_of(handler: str) -> str | None:
    parts = handler.split(".")
    return parts[2] if len(parts) == 4 and parts[:2] == ["rotators", "engines"] else None


def check_contents(spec: FunctionSpec, bundle: Path) -> list[str]:
    problems = []
    top = {p.name.removesuffix(".py") for p in bundle.iterdir()}
    engine = engine_of(spec.handler)
    for name, modules in DRIVERS.items():
        present = [m for m in modules if m in top]
        if name == engine and modules[0] not in top:
            problems.append(f"its driver {modules[0]} is missing")
        if name != engine and present:
            problems.append(f"holds {name}'s driver ({', '.join(present)})")
    sdk = sorted(top & {"boto3", "botocore", "s3transfer"})
    if sdk and bundle_module.sdk_choice() == "runtime":
        problems.append(
            f"holds the SDK Lambda's runtime provides ({', '.join(sdk)}) without ROTATORS_BUNDLE_SDK=bundled"
        )
    module = bundle.joinpath(*spec.handler.split(".")[:-1]).with_suffix(".py")
    if not module.is_file():
        problems.append(f"its handler module {module.relative_to(bundle)} is missing")
    for audience in ("cli", "testing"):
        if (bundle / "rotators" / audience).exists():
            problems.append(f"holds rotators/{audience}, which no Lambda imports")
    engines_dir = bundle / "rotators" / "engines"
    if engines_dir.is_dir():
        own = {"__init__", engine}
        names = {p.stem for p in engines_dir.glob("*.py")}
        others = sorted(name for name in names - own if not name.startswith(f"{engine}_"))
        if others:
            problems.append(f"holds other engines' modules: {', '.join(others)}")
    return problems


def check_wheels(bundle: Path, runtime: str, arch: str) -> list[str]:
    """Every installed wheel must run on the runtime's CPython and the function's architecture."""
    version = runtime.removeprefix("python").replace(".", "")
    machine = MACHINES.get(arch, arch)
    problems = []
    for wheel_file in bundle.glob("*.dist-info/WHEEL"):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel_file.read_text().splitlines()
            if line.startswith("Tag:")
        ]
        fits = False
        for tag in tags:
            interpreter, abi, plat = tag.split("-")
            python_ok = interpreter.startswith("py") or interpreter == f"cp{version}" or abi == "abi3"
            platform_ok = plat == "any" or (plat.startswith("manylinux") and plat.endswith(machine))
            fits = fits or (python_ok and platform_ok)
        if not fits:
            problems.append(f"{wheel_file.parent.name} is for {', '.join(tags)}, not {runtime} {arch}")
    return problems


def sizes(bundle: Path) -> tuple[int, int]:
    files = [p for p in bundle.rglob("*") if p.is_file()]
    unzipped = sum(p.stat().st_size for p in files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(bundle))
    return unzipped, buffer.tell()


def find_python(runtime: str) -> str | None:
    """A CPython of the runtime's version (the same search as the build's bytecode step)."""
    return os.environ.get("ROTATORS_LAMBDA_PYTHON") or bundle_module.find_python(
        runtime.removeprefix("python")
    )


_IMPORT = """
import sys, time
started = time.perf_counter()
sys.path[:0] = [{bundle!r}, {runtime!r}]  # /var/task, then the runtime's own (its SDK)
import importlib
module = importlib.import_module({module!r})
assert callable(getattr(module, {attribute!r}))
elapsed = time.perf_counter() - started
outside = sorted(
    name for name, m in list(sys.modules.items())
    if getattr(m, "__file__", None) and not m.__file__.startswith(({bundle!r}, {runtime!r}, sys.base_prefix))
)
print(elapsed * 1000, ",".join(outside))
"""


def cold_import_ms(python: str, spec: FunctionSpec, bundle: Path, runs: int) -> tuple[float, str]:
    """Median over fresh processes; -S keeps site-packages out, so only the bundle and what Lambda's
    runtime provides beside it (awslambdaric, boto3 and botocore) can serve imports."""
    module, _, attribute = spec.handler.rpartition(".")
    runtime = install_runtime_client(python, spec.runtime.removeprefix("python"))
    code = _IMPORT.format(bundle=str(bundle), runtime=str(runtime), module=module, attribute=attribute)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "LAMBDA_TASK_ROOT": str(bundle),
        **spec.variables,
    }
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [python, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"import failed under {python}: {last[0]}")
        elapsed, outside = done.stdout.split(" ", 1)
        if outside.strip():
            raise RuntimeError(f"imported modules from outside the bundle: {outside.strip()}")
        times.append(float(elapsed))
    return statistics.median(times), python


def measure(spec: FunctionSpec, bundle: Path, runs: int, python: str | None) -> Report:
    report = Report(spec.logical_id, spec.handler)
    if (bundle / "SKIPPED").is_file():
        report.status = "SKIPPED"
        report.note = (bundle / "SKIPPED").read_text().strip()
        return report
    if not bundle.is_dir():
        report.problems.append(f"no bundle at {bundle}: run `make sam-build` (sam build)")
        return report
    arch = spec.architectures[0] if spec.architectures else "x86_64"
    report.problems += check_contents(spec, bundle)
    report.problems += check_wheels(bundle, spec.runtime, arch)
    report.unzipped_bytes, report.zipped_bytes = sizes(bundle)
    compiled = any(bundle.joinpath("rotators", "__pycache__").glob("*.pyc"))
    report.note = "with bytecode" if compiled else "sources only (compiled at each cold start)"
    if MACHINES.get(arch) != platform.machine():
        report.note += f"; import not timed: built for {arch}, this machine is {platform.machine()}"
    elif python is None:
        report.note += f"; import not timed: no {spec.runtime} here (set ROTATORS_LAMBDA_PYTHON)"
    else:
        try:
            report.import_ms, _ = cold_import_ms(python, spec, bundle, runs)
            report.note += f"; imported alone under {spec.runtime}"
        except RuntimeError as exc:
            report.problems.append(str(exc))
    return report


def print_table(reports: list[Report]) -> None:
    print(f"{'function':<22} {'status':<8} {'unzipped':>9} {'zipped':>8} {'cold import':>11}  notes")
    for r in reports:
        status = "FAILED" if r.problems else r.status
        if r.status == "SKIPPED":
            print(f"{r.function:<22} {status:<8} {'-':>9} {'-':>8} {'-':>11}  {r.note}")
            continue
        timed = f"{r.import_ms:.0f} ms" if r.import_ms is not None else "-"
        print(
            f"{r.function:<22} {status:<8} {r.unzipped_bytes / 2**20:7.1f}MB {r.zipped_bytes / 2**20:6.1f}MB "
            f"{timed:>11}  {r.note}"
        )
        for problem in r.problems:
            print(f"    problem: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / ".aws-sam" / "build")
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per cold import (median)")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON")
    args = parser.parse_args(argv)

    template = SamTemplate.load(args.template)
    pythons: dict[str, str | None] = {}
    reports = []
    for logical_id in template.function_ids():
        spec = template.function(logical_id)
        if spec.runtime not in pythons:
            pythons[spec.runtime] = find_python(spec.runtime)
        reports.append(measure(spec, args.build_dir / logical_id, args.runs, pythons[spec.runtime]))
    print_table(reports)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    failed = [r.function for r in reports if r.problems]
    if failed:
        print(f"Bundle checks failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    checked = sum(1 for r in reports if r.status == "ok")
    skipped = sum(1 for r in reports if r.status == "SKIPPED")
    print(f"{checked} bundles checked (own driver only, wheels for the runtime), {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
