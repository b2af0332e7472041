"""The live tests read their server from a connection string: each engine's form, as a secret."""

from __future__ import annotations

import pytest

from tests.live import dsn_secret


def test_a_dsn_with_tls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "X_DSN",
        "redshift://admin:p%40ss@cluster.example:5439/analytics?sslmode=verify-ca&sslrootcert=/ca.pem",
    )
    assert dsn_secret("X_DSN", engine="redshift", port=5439, dbname="dev") == {
        "engine": "redshift", "host": "cluster.example", "port": 5439, "username": "admin",
        "password": "p@ss", "dbname": "analytics", "sslmode": "verify-ca", "sslrootcert": "/ca.pem",
    }  # fmt: skip


def test_defaults_and_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_DSN", "oracle://:secret@localhost/?ssl=false")
    assert dsn_secret("X_DSN", engine="oracle", port=1521, dbname="FREEPDB1", user="system") == {
        "engine": "oracle", "host": "localhost", "port": 1521, "username": "system",
        "password": "secret", "dbname": "FREEPDB1", "ssl": False,
    }  # fmt: skip
    monkeypatch.setenv("X_DSN", "mysql://admin:pw@db:3306/?engine=mariadb")
    assert dsn_secret("X_DSN", engine="mysql", port=3306)["engine"] == "mariadb"
