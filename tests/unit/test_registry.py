"""The engine registry (rotators.engines.ENGINES) against everything that names the engines
again: the engine modules and classes, template.yaml, sam/Makefile and the pip extras (which
driver each handler imports: tests/unit/test_cold_imports.py, from the registry too)."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from rotators.cli.samtemplate import SamTemplate
from rotators.database import DatabaseRotator
from rotators.engines import BY_NAME, ENGINES, Engine, serving

ROOT = Path(__file__).resolve().parents[2]
ENGINE_DIR = ROOT / "rotators" / "engines"


def test_every_engine_module_is_registered() -> None:
    """A module under rotators/engines is an engine or the helper of one (`<engine>_*.py`)."""
    modules = {path.stem for path in ENGINE_DIR.glob("*.py")} - {"__init__"}
    engines = {name for name in modules if not any(name.startswith(f"{e}_") for e in BY_NAME)}
    assert engines == set(BY_NAME)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda engine: engine.name)
def test_the_engine_class_serves_what_the_registry_says(engine: Engine) -> None:
    module = importlib.import_module(engine.module)
    rotator = module.handler.__self__
    assert isinstance(rotator, DatabaseRotator)
    assert rotator.engine is engine
    assert (rotator.kind, rotator.label, rotator.engines) == (
        engine.name,
        engine.label,
        engine.secret_engines,
    )
    value = {"engine": min(engine.secret_engines), "host": "h", "username": "u", "password": "p"}
    secret = rotator.parse(json.dumps(value), where="a secret without port or dbname")
    assert (secret.port, secret.dbname) == (engine.default_port, engine.default_dbname)


def test_secret_engine_values_belong_to_one_engine_each() -> None:
    values = [value for engine in ENGINES for value in engine.secret_engines]
    assert len(values) == len(set(values))
    assert serving("aurora-mysql") is BY_NAME["mysql"]
    assert serving("mongodb") is BY_NAME["documentdb"]
    assert serving("sqlite") is None


def test_template_yaml_has_one_function_per_engine_and_no_other() -> None:
    template = SamTemplate.load(ROOT / "template.yaml")
    specs = [template.function(logical_id) for logical_id in template.function_ids()]
    handlers = {
        spec.logical_id: spec.handler for spec in specs if spec.handler.startswith("rotators.engines.")
    }
    assert handlers == {engine.logical_id: engine.handler for engine in ENGINES}


def test_sam_makefile_builds_each_engine_with_its_extra() -> None:
    makefile = (ROOT / "sam" / "Makefile").read_text()
    targets = dict(re.findall(r"^build-(\w+):\n\t\$\(BUNDLE\) (.+)$", makefile, re.MULTILINE))
    for engine in ENGINES:
        assert targets.get(engine.logical_id) == f"--handler {engine.handler} --extra {engine.name}"


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_each_engine_has_a_pip_extra_that_installs_its_driver() -> None:
    """The import name is not always the distribution's: `pytds` comes from python-tds."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = packages_distributions()
    for engine in ENGINES:
        names = (re.split(r"[\[<>=!~ ]", item, maxsplit=1)[0] for item in extras[engine.name])
        requirements = {canonical(name) for name in names}
        distributions = {canonical(name) for name in providers.get(engine.driver, [engine.driver])}
        assert distributions & requirements, (engine.name, distributions, requirements)
