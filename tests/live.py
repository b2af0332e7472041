"""What the live tests share: a server named by a connection string in the environment, read as
the secret of its admin user. Without the variable the tests skip and say how to run them."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest


def live_only(variable: str, reason: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.environ.get(variable), reason=reason)


def dsn_query(variable: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(os.environ[variable]).query).items()}


def dsn_secret(
    variable: str, *, engine: str, port: int, dbname: str | None = None, user: str = ""
) -> dict[str, Any]:
    """scheme://user:password@host:port/dbname?sslmode=..&sslrootcert=..&ssl=false as a secret."""
    url = urlsplit(os.environ[variable])
    query = dsn_query(variable)
    value: dict[str, Any] = {
        "engine": query.get("engine", engine),
        "host": url.hostname,
        "port": url.port or port,
        "username": unquote(url.username or user),
        "password": unquote(url.password or ""),
    }
    if dbname is not None:
        value["dbname"] = url.path.lstrip("/") or dbname
    value.update({key: query[key] for key in ("sslmode", "sslrootcert") if key in query})
    if query.get("ssl", "").lower() == "false":
        value["ssl"] = False
    return value
