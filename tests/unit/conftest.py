"""Every unit test starts from the engines' defaults: no setting a developer's shell may hold."""

from __future__ import annotations

import pytest

from rotators.testing.secretsmanager import LocalSecretsManager
from rotators.testing.tls import CertificateAuthority

SETTINGS = (
    "ROTATORS_SSLMODE", "ROTATORS_CA_BUNDLE", "DB_CONNECT_TIMEOUT", "PASSWORD_LENGTH", "EXCLUDE_CHARACTERS",
    "EXCLUDE_NUMBERS", "EXCLUDE_PUNCTUATION", "EXCLUDE_UPPERCASE", "EXCLUDE_LOWERCASE",
    "REQUIRE_EACH_INCLUDED_TYPE",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, CertificateAuthority]:
    """Two throwaway CAs: the one a master secret names, and an impostor's."""
    root = tmp_path_factory.mktemp("cas")
    return CertificateAuthority.create(root / "ours"), CertificateAuthority.create(root / "impostor")


@pytest.fixture
def local_sm(_sm_server: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> LocalSecretsManager:
    """tests/conftest.py's moto endpoint, without the PostgreSQL its own fixture starts for a CA
    bundle: unit tests start no database (the name keeps the leak check reading every value)."""
    for key, value in _sm_server.environment().items():
        monkeypatch.setenv(key, value)
    for name in ("ROTATORS_SSLMODE", "ROTATORS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return _sm_server
