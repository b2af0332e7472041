"""sam/bundle.py's choices that decide what a Lambda bundle holds and how fast it wakes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sam import bundle


def installed(target: Path, name: str, version: str, files: dict[str, str]) -> None:
    """A distribution as pip --target leaves it: its files and a dist-info whose RECORD lists them."""
    info = target / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    for path, text in files.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text)
    record = [f"{path},sha256=x,1" for path in files] + [f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_the_runtime_sdk_is_left_out_and_nothing_else(tmp_path: Path) -> None:
    installed(tmp_path, "botocore", "1.40.0", {"botocore/__init__.py": "", "botocore/data/x.json": "{}"})
    installed(tmp_path, "python_dateutil", "2.9.0", {"dateutil/__init__.py": ""})
    installed(tmp_path, "six", "1.17.0", {"six.py": ""})
    installed(tmp_path, "psycopg", "3.3.0", {"psycopg/__init__.py": ""})
    (tmp_path / "outside.txt").write_text("a RECORD line must never reach outside the bundle")
    installed(tmp_path / "bundle", "urllib3", "2.0.0", {"urllib3/__init__.py": "", "../outside.txt": ""})

    dropped = bundle.drop_distributions(tmp_path, bundle.RUNTIME_PROVIDED)

    assert dropped == ["botocore 1.40.0", "python_dateutil 2.9.0", "six 1.17.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bundle",
        "outside.txt",
        "psycopg",
        "psycopg-3.3.0.dist-info",
    ]
    assert bundle.drop_distributions(tmp_path / "bundle", ("urllib3",)) == ["urllib3 2.0.0"]
    assert (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize(("setting", "choice"), [(None, "runtime"), ("", "runtime"), ("Bundled", "bundled")])
def test_the_sdk_choice(monkeypatch: pytest.MonkeyPatch, setting: str | None, choice: str) -> None:
    if setting is None:
        monkeypatch.delenv(bundle.SDK_CHOICE, raising=False)
    else:
        monkeypatch.setenv(bundle.SDK_CHOICE, setting)
    assert bundle.sdk_choice() == choice


def test_an_unknown_sdk_choice_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bundle.SDK_CHOICE, "layer")
    with pytest.raises(bundle.BundleError, match="runtime or bundled"):
        bundle.sdk_choice()


def test_a_build_without_the_runtimes_python_says_so_loudly_and_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bundle, "find_python", lambda version: None)
    monkeypatch.setattr(bundle, "_warned", [])
    monkeypatch.delenv("LAMBDA_PRECOMPILE", raising=False)
    said = bundle.precompile(tmp_path, tmp_path, "3.13")
    assert said.startswith("NO BYTECODE")
    warning = capfd.readouterr().err
    assert "WARNING" in warning and "every cold start" in warning
    assert "uv python install 3.13" in warning and "LAMBDA_PRECOMPILE_PYTHON" in warning
    assert bundle.precompile(tmp_path, tmp_path, "3.13").startswith("NO BYTECODE")
    assert "WARNING" not in capfd.readouterr().err, "said once per build"


def _version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Python of the version on PATH, nothing installed in HOME, no LAMBDA_PRECOMPILE_PYTHON."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LAMBDA_PRECOMPILE_PYTHON", raising=False)
    assert bundle.find_python(_version()) is None
    return tmp_path


@pytest.mark.parametrize(
    "folder",
    [
        ".local/share/uv/python/cpython-{v}.7-linux-x86_64-gnu/bin",
        ".local/share/mise/installs/python/{v}.7/bin",
        ".asdf/installs/python/{v}.7/bin",
        ".pyenv/versions/{v}.7/bin",
    ],
)
def test_a_python_a_version_manager_installed_gives_bytecode_off_path(
    bare_machine: Path, folder: str
) -> None:
    """uv, mise, asdf and pyenv keep their Pythons off PATH: a build still finds them."""
    installed = bare_machine / folder.format(v=_version()) / f"python{_version()}"
    installed.parent.mkdir(parents=True)
    installed.symlink_to(sys.executable)
    assert bundle.find_python(_version()) == str(installed)


@pytest.mark.parametrize(("answer", "found"), [(0, True), (2, False)])
def test_the_python_uv_finds(bare_machine: Path, answer: int, found: bool) -> None:
    """`uv python find` also knows UV_PYTHON_INSTALL_DIR and Pythons it did not install."""
    uv = bare_machine / "bin" / "uv"
    uv.write_text(f"#!/bin/sh\necho {sys.executable}\nexit {answer}\n")
    uv.chmod(0o755)
    assert bundle.find_python(_version()) == (sys.executable if found else None)
