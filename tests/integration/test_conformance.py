"""The built-in engines through the conformance kit custom rotators use (so the kit stays honest):
crashes after each hook, retries, failing hooks, and that exactly the labelled passwords log in
afterwards, for every engine and both strategies."""

from __future__ import annotations

from typing import Any

import pytest

from rotators.database import DatabaseSecret
from rotators.testing.conformance import SCENARIOS, RotatorConformance
from tests.engines import STRATEGIES, Database, Engine, engines


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("engine", engines())
def test_the_engine_conforms(
    rotator_conformance: RotatorConformance, engine: Engine, db: Database, strategy: str, scenario: str
) -> None:
    """Single user: after a rotation only AWSCURRENT logs in. Alternating users: AWSPREVIOUS keeps
    logging in until the next rotation."""
    extra = {"masterarn": db.master_secret()} if strategy == "alternating" else {}

    def new_secret() -> dict[str, Any]:
        return db.secret(db.add_user(), **extra)

    def accepts(secret: DatabaseSecret) -> bool:
        return db.logs_in(secret.username, secret.password)

    rotator_conformance.check(
        engine.rotator,
        new_secret=new_secret,
        accepts=accepts,
        keeps_previous=strategy == "alternating",
        scenarios=[scenario],
    )
