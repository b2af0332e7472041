"""Build one rotator's Lambda bundle: its engine module, the shared core, and Lambda wheels.

`sam build` calls this through sam/Makefile (BuildMethod: makefile), in a scratch copy of
rotators/, with ARTIFACTS_DIR as the output. Nothing here needs Docker or the Lambda runtime's
Python: pip downloads wheels built for the Lambda platform (manylinux, the function's
architecture, the runtime's CPython) and never runs a build of its own (`--only-binary=:all:`).

A bundle holds only what its handler imports, from an allow-list: the runtime (the modules at the
top of rotators/), its own engine module with that module's helpers (`<engine>_*.py` beside it)
and its own extra's packages (one driver); never another engine, the command-line modules
(rotators/cli) or the test support (rotators/testing).

When a CPython of the runtime's version is on the build machine (python3.13 on PATH, one that
uv, mise, asdf or pyenv installed, or $LAMBDA_PRECOMPILE_PYTHON), the bundle also gets bytecode
(`unchecked-hash` .pyc files): Lambda's /var/task is read-only, so without them every cold start
compiles the sources again (bench/bundles.py measures the difference). LAMBDA_PRECOMPILE=no
turns this off.

The AWS SDK is the one Lambda's Python runtime provides (boto3, botocore and their dependencies,
as AWS's own rotation functions use it): a bundle leaves those distributions out, which keeps
about 37 MB and their compilation out of it. ROTATORS_BUNDLE_SDK=bundled puts them in instead,
for a function that must pin its SDK (README: Deploy with SAM).

Installed wheels are kept for the day in .aws-sam/bundle-deps (or $ROTATORS_BUNDLE_CACHE), so a
rebuild after an edit copies them instead of running pip again.

Standard library only (Python 3.11+), so any `python3` with pip can run it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rotators"
# Wheels for Amazon Linux 2023 (glibc 2.34), the OS of the python3.12 and python3.13 runtimes.
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34")
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
ALLOW_MISSING = "ROTATORS_BUNDLE_ALLOW_MISSING"
CACHE_DIR = "ROTATORS_BUNDLE_CACHE"
DONE = ".rotators-deps-done"
# Said on stderr when a bundle gets no bytecode; the cost is bench/coldstart.py's `source` rows.
NO_BYTECODE = """
WARNING: no Python {version} on this machine, so this bundle has NO BYTECODE. Lambda's code
directory is read-only: every cold start then compiles the bundle's modules again, measured at
about +240 ms (PostgreSQL) and +140 ms (MySQL) per cold start (README: Performance).
Fix: install Python {version} (`uv python install {version}`, `pyenv install {version}`, or your
package manager) and build again; or point LAMBDA_PRECOMPILE_PYTHON at one. LAMBDA_PRECOMPILE=no
silences this.
"""
_warned: list[str] = []
SDK_CHOICE = "ROTATORS_BUNDLE_SDK"  # runtime (the default) or bundled
# What Lambda's Python runtime already holds beside its runtime client: boto3 and its dependencies.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")


class BundleError(Exception):
    pass


def requirements(pyproject: Path, extra: str | None) -> list[str]:
    """The project's dependencies plus those of one extra, following `rotators[...]` self-references."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    pending, seen = ([extra] if extra else []), set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current not in optional:
            raise BundleError(f"pyproject.toml has no extra {current!r} (project.optional-dependencies)")
        for requirement in optional[current]:
            self_ref = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", requirement.replace(" ", ""))
            if self_ref:
                pending.extend(self_ref.group(1).split(","))
            else:
                found.append(requirement)
    return list(dict.fromkeys(found))


def handler_file(source: Path, handler: str) -> Path:
    """`rotators.engines.postgresql.handler` -> <source>/engines/postgresql.py (source is rotators/)."""
    module = handler.rsplit(".", 1)[0].split(".")
    if module[0] != PACKAGE or len(module) < 2:
        raise BundleError(f"Handler {handler!r} is not in the {PACKAGE} package")
    return source.joinpath(*module[1:-1], module[-1] + ".py")


def copy_package(source: Path, out: Path, handler_path: Path) -> None:
    """The runtime (the top-level modules), and in sub-packages only the handler's own module and
    its helpers (`<module>_*.py`): rotators/cli and rotators/testing are never copied."""
    target = out / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.py")):
        shutil.copy2(path, target / path.name)
    relative = handler_path.relative_to(source)
    for depth in range(1, len(relative.parts)):
        package = relative.parts[:depth]
        (target.joinpath(*package)).mkdir(parents=True, exist_ok=True)
        init = source.joinpath(*package, "__init__.py")
        if init.exists():
            shutil.copy2(init, target.joinpath(*package, "__init__.py"))
    for path in sorted(handler_path.parent.glob(f"{handler_path.stem}_*.py")):
        shutil.copy2(path, target / relative.parent / path.name)
    shutil.copy2(handler_path, target / relative)


def pip_install(reqs: list[str], out: Path, arch: str, python_version: str) -> None:
    machine = ARCHES[arch]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(out), "--implementation", "cp", "--python-version", python_version,
        "--only-binary=:all:", "--no-compile", "--no-warn-conflicts",
        *(arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{machine}")),
        *reqs,
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError:
        raise BundleError(
            f"pip could not install {' '.join(reqs)} as wheels for CPython {python_version} on "
            f"manylinux {machine}: a package without such a wheel cannot go into a Lambda bundle "
            "built without Docker"
        ) from None
    shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts: useless in Lambda


def sdk_choice() -> str:
    choice = os.environ.get(SDK_CHOICE, "runtime").strip().lower() or "runtime"
    if choice not in {"runtime", "bundled"}:
        raise BundleError(f"{SDK_CHOICE} must be runtime or bundled, not {choice!r}")
    return choice


def drop_distributions(target: Path, names: tuple[str, ...]) -> list[str]:
    """Remove installed distributions by their RECORD (every file pip wrote for them); the names
    and versions of those removed."""
    wanted = {re.sub(r"[-_.]+", "-", name).lower() for name in names}
    dropped = []
    for info in sorted(target.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        if re.sub(r"[-_.]+", "-", name).lower() not in wanted:
            continue
        for line in (info / "RECORD").read_text().splitlines():
            path = target / line.split(",", 1)[0]
            if path.is_file() and target in path.resolve().parents:
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
        dropped.append(f"{name} {version}")
    for folder in sorted(
        (p for p in target.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        if not any(folder.iterdir()):
            folder.rmdir()
    return dropped


# Where version managers keep the Pythons they install (uv's default folder, mise, asdf, pyenv):
# a build finds one there even when it is not on PATH.
MANAGED_PYTHONS = (
    "~/.local/share/uv/python/cpython-{version}.*/bin/python{version}",
    "~/.local/share/mise/installs/python/{version}*/bin/python{version}",
    "~/.asdf/installs/python/{version}*/bin/python{version}",
    "~/.pyenv/versions/{version}*/bin/python{version}",
)


def find_python(version: str) -> str | None:
    """A CPython `version` (e.g. "3.12") on this machine, or None: $LAMBDA_PRECOMPILE_PYTHON, what
    `uv python find` names, a version manager's install, python3.X on PATH."""
    candidates = [os.environ.get("LAMBDA_PRECOMPILE_PYTHON", "")]
    if uv := shutil.which("uv"):
        try:
            named = subprocess.run(
                [uv, "python", "find", "--no-project", version],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            named = None
        if named is not None and named.returncode == 0:
            candidates.append(named.stdout.strip())
    for pattern in MANAGED_PYTHONS:
        candidates += sorted(glob.glob(os.path.expanduser(pattern.format(version=version))))
    candidates.append(shutil.which(f"python{version}") or "")
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    return None


def precompile(target: Path, strip: Path, python_version: str) -> str:
    """Bytecode for the runtime's Python, when that Python is here; says what it did."""
    if os.environ.get("LAMBDA_PRECOMPILE", "auto").lower() in {"no", "0", "false"}:
        return "no bytecode (LAMBDA_PRECOMPILE=no)"
    python = find_python(python_version)
    if python is None:
        if not _warned:  # once per build: the wheels and the package are compiled apart
            print(NO_BYTECODE.format(version=python_version), file=sys.stderr)
            _warned.append(python_version)
        return f"NO BYTECODE: no Python {python_version} here (every cold start compiles the sources)"
    # unchecked-hash: used as they are (zip timestamps do not matter); -s/-p: tracebacks name /var/task
    command = [python, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash"]
    done = subprocess.run(
        [*command, "-s", str(strip), "-p", "/var/task", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:  # a stray file a package never imports; the rest is compiled
        return f"bytecode by {python} (some files did not compile: {done.stdout.strip()[:200]})"
    return f"bytecode by {python}"


def dependencies(reqs: list[str], arch: str, python_version: str) -> tuple[Path, str]:
    """The installed wheels (with bytecode) for these requirements, made at most once a day.

    SAM's own build cache hashes all of rotators/ (even __pycache__), so any edit rebuilds every
    function; this cache keeps the slow part, pip and compileall, out of those rebuilds.
    """
    cache = Path(os.environ.get(CACHE_DIR, ROOT / ".aws-sam" / "bundle-deps"))
    today = date.today().isoformat()
    sdk, compiling = sdk_choice(), os.environ.get("LAMBDA_PRECOMPILE", "auto").lower()
    inputs = [reqs, arch, python_version, MANYLINUX, sdk, compiling]
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]
    final = cache / f"{today}-{key}"
    if (final / DONE).is_file():
        return final, (final / DONE).read_text() + " (cached today)"
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.iterdir():
        if not stale.name.startswith(today):
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"{today}-{key}-", dir=cache))
    try:
        pip_install(reqs, work, arch, python_version)
        if sdk == "runtime":
            drop_distributions(work, RUNTIME_PROVIDED)
        compiled = precompile(work, work, python_version)
        (work / DONE).write_text(compiled)
        try:
            work.rename(final)
        except OSError:  # a parallel build of the same requirements finished first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final, compiled


def _link_or_copy(source: str, target: str) -> None:
    """Hard links: thousands of files appear at once, and nothing ever writes to them in place."""
    try:
        os.link(source, target)
    except OSError:  # another file system (ROTATORS_BUNDLE_CACHE elsewhere)
        shutil.copy2(source, target)


def build(source: Path, out: Path, handler: str, *, extra: str | None, arch: str, python_version: str) -> str:
    """Returns a line that says what went into the bundle (or why it was skipped)."""
    module_file = handler_file(source, handler)
    allow_missing = os.environ.get(ALLOW_MISSING, "") not in {"", "0", "false"}
    if not module_file.exists():
        message = f"{handler}: {PACKAGE}/{module_file.relative_to(source)} does not exist yet"
        if not allow_missing:
            raise BundleError(message + ": write the engine first or remove its function from template.yaml")
        out.mkdir(parents=True, exist_ok=True)
        (out / "SKIPPED").write_text(message + "\n")
        return "SKIPPED " + message
    try:
        reqs = requirements(ROOT / "pyproject.toml", extra)
    except BundleError as exc:
        if not allow_missing:
            raise
        out.mkdir(parents=True, exist_ok=True)
        (out / "SKIPPED").write_text(f"{handler}: {exc}\n")
        return f"SKIPPED {handler}: {exc}"
    installed, compiled = dependencies(reqs, arch, python_version)
    shutil.copytree(
        installed, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(DONE), copy_function=_link_or_copy
    )
    copy_package(source, out, module_file)
    for stale in (out / PACKAGE).rglob("__pycache__"):
        shutil.rmtree(stale, ignore_errors=True)
    precompile(out / PACKAGE, out, python_version)
    sdk = "the SDK bundled" if sdk_choice() == "bundled" else "the runtime's SDK (boto3, botocore)"
    return f"built {handler} with {', '.join(reqs)} for CPython {python_version} {arch}, {sdk}; {compiled}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("."), help="the rotators/ package folder")
    parser.add_argument("--out", type=Path, required=True, help="the function's ARTIFACTS_DIR")
    parser.add_argument("--handler", required=True, help="e.g. rotators.engines.postgresql.handler")
    parser.add_argument("--extra", default=None, help="the extra that holds the function's driver")
    parser.add_argument("--arch", choices=sorted(ARCHES), default="x86_64")
    parser.add_argument("--python-version", default="3.13")
    args = parser.parse_args(argv)
    try:
        line = build(
            args.source.resolve(),
            args.out,
            args.handler,
            extra=args.extra,
            arch=args.arch,
            python_version=args.python_version,
        )
        print(line)
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
