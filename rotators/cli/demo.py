"""`rotators demo`: a full rotation against a throwaway PostgreSQL and a local Secrets Manager.

Everything it starts lives in a temporary directory and is gone when it ends. Passwords are
never printed: each version shows a short fingerprint, so you can see that it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from rotators.rotation import STEPS
from rotators.testing.postgres import PostgresServer
from rotators.testing.secretsmanager import LocalSecretsManager


def fingerprint(password: str) -> str:
    return "sha256:" + hashlib.sha256(password.encode()).hexdigest()[:10]


def run(strategies: list[str], out: Callable[[str], None] = print, verbose: bool = False) -> int:
    from rotators.testing.postgres import PostgresFactory

    out("Starting a throwaway PostgreSQL (SCRAM passwords, TLS) and a local Secrets Manager (moto)...")
    factory = PostgresFactory()
    sm = LocalSecretsManager()
    try:
        server = factory.start()
        out(f"  PostgreSQL {server.host}:{server.port}, Secrets Manager {sm.endpoint_url}")
        with sm.environ(ROTATORS_CA_BUNDLE=str(factory.ca.cert_path)):
            ok = all(_rotate(strategy, server, sm, out, verbose) for strategy in strategies)
    finally:
        sm.close()
        factory.close()
    out("\nAll rotations succeeded." if ok else "\nA check FAILED: see above.")
    return 0 if ok else 1


def _rotate(
    strategy: str, server: PostgresServer, sm: LocalSecretsManager, out: Callable[[str], None], verbose: bool
) -> bool:
    import psycopg
    from psycopg import sql

    from rotators.engines.postgresql import handler

    user = "app_single" if strategy == "single" else "app_alt"
    password = secrets.token_urlsafe(18)
    value: dict[str, Any] = {
        "engine": "postgres", "host": server.host, "port": server.port,
        "username": user, "password": password, "dbname": "postgres",
    }  # fmt: skip
    with psycopg.connect(**server.admin_dsn(), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
        )
        if strategy == "alternating":
            master_password = secrets.token_urlsafe(18)
            conn.execute(
                sql.SQL("CREATE ROLE demo_master LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Literal(master_password)
                )
            )
            value["masterarn"] = sm.create_secret(
                "demo/master", {**value, "username": "demo_master", "password": master_password}
            )
    arn = sm.create_secret(f"demo/{user}", value)
    title = "single user" if strategy == "single" else "alternating users (master secret demo/master)"
    out(f"\n== {title}: secret demo/{user} ==")
    _table(sm, arn, "before", out)

    token = sm.start_rotation(arn)
    out(f"\nRotating with token {token} (RotateSecret, then the four steps, as Secrets Manager does):")
    for step in STEPS:
        started = time.perf_counter()
        # Each step prints its EMF metrics line, as in Lambda; only --verbose shows them here.
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
            handler({"SecretId": arn, "ClientRequestToken": token, "Step": step}, None)
        out(f"  {step:<13} ok  {1000 * (time.perf_counter() - started):6.1f} ms")
    _table(sm, arn, "after", out)

    current, previous = sm.value(arn, "AWSCURRENT"), sm.value(arn, "AWSPREVIOUS")
    expect_previous = strategy == "alternating"  # the old login keeps working until the next rotation
    checks = [
        ("AWSCURRENT", current, True),
        ("AWSPREVIOUS", previous, expect_previous),
    ]
    out("\nLogin check against the database:")
    ok = True
    for label, version, expected in checks:
        works = _logs_in(server, version)
        verdict = "ok" if works == expected else "UNEXPECTED"
        ok = ok and works == expected
        state = "logs in" if works else "is refused"
        shown = f"{version['username']:<14} {fingerprint(version['password'])}"
        out(f"  {label:<11} {shown}  {state:<10} [{verdict}]")
    return ok


def _logs_in(server: PostgresServer, version: dict[str, Any]) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=server.host, port=server.port, dbname="postgres", user=version["username"],
            password=version["password"], sslmode="verify-full", sslrootcert=str(server.ca.cert_path),
        ):  # fmt: skip
            return True
    except psycopg.OperationalError:
        return False


def _table(sm: LocalSecretsManager, arn: str, when: str, out: Callable[[str], None]) -> None:
    out(f"\nVersions {when}:")
    out(f"  {'version':<38} {'stages':<24} {'username':<14} password")
    for version, stages in sm.stages(arn).items():
        text = sm.client.get_secret_value(SecretId=arn, VersionId=version)["SecretString"]
        found = json.loads(text)
        out(
            f"  {version:<38} {','.join(stages):<24} {found['username']:<14} {fingerprint(found['password'])}"
        )
