"""Rotation benchmarks against local servers: API calls, connections, wall time, a fleet run.

    python bench/rotation.py [--fleet 200] [--workers 8] [--runs 10]

Prints markdown tables. Everything runs locally: a throwaway PostgreSQL (SCRAM, TLS) and
moto's Secrets Manager over HTTP, as in the tests. Connections are counted by the server
itself (log_connections), API calls through botocore's event hooks.
"""

from __future__ import annotations

import os

# Per-step logs are Lambda's business, not the benchmark's (metrics are silenced in rotate()).
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"

import argparse
import contextlib
import io
import json
import multiprocessing
import platform
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from typing import Any

import boto3
import psycopg
from psycopg import sql

from rotators import endpoints
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.secrets import SecretStore
from rotators.testing.postgres import PostgresFactory, PostgresServer
from rotators.testing.secretsmanager import REGION, LocalSecretsManager

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class Bench:
    def __init__(self, server: PostgresServer, sm: LocalSecretsManager) -> None:
        self.server, self.sm = server, sm
        self.calls: Counter[str] = Counter()
        client = boto3.client("secretsmanager", endpoint_url=sm.endpoint_url)
        client.meta.events.register("before-call.secretsmanager.*", self._count)
        self.rotator = PostgreSQLRotator(SecretStore(client))  # one warm container
        self._service_clients: dict[tuple[str, str | None], Any] = {}
        endpoints.sdk_client = self._service_client  # RDS's calls are counted too
        with self._admin() as conn:
            conn.execute("CREATE ROLE bench_master LOGIN CREATEROLE PASSWORD 'Bench-Master-1'")
        self.master_arn = sm.create_secret("bench/master", self._value("bench_master", "Bench-Master-1"))

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _service_client(self, service: str, region: str | None) -> Any:
        """The rotator's client of a database service (one per container, as in Lambda), counted."""
        if (service, region) not in self._service_clients:
            client = boto3.client(service, region_name=region)  # type: ignore[call-overload]
            client.meta.events.register(
                f"before-call.{client.meta.service_model.endpoint_prefix}.*", self._count
            )
            self._service_clients[(service, region)] = client
        return self._service_clients[(service, region)]

    def managed_master(self) -> str:
        """A master secret as RDS manages it (moto's RDS): username and password only, tagged with an
        instance whose endpoint (moto's model, pointed here) is the bench's server."""
        from moto.rds.models import DBInstance

        server = self.server
        DBInstance.endpoint = property(lambda _: {"Address": server.host, "Port": server.port})  # type: ignore[method-assign, assignment]
        rds = boto3.client("rds", endpoint_url=self.sm.endpoint_url, region_name=REGION)
        made = rds.create_db_instance(
            DBInstanceIdentifier="bench", Engine="postgres", DBInstanceClass="db.t3.micro",
            MasterUsername="admin", ManageMasterUserPassword=True, AllocatedStorage=20,
        )["DBInstance"]  # fmt: skip
        arn: str = made["MasterUserSecret"]["SecretArn"]
        login = {"username": "bench_master", "password": "Bench-Master-1"}  # the service rotated it
        self.sm.client.put_secret_value(SecretId=arn, SecretString=json.dumps(login))
        return arn

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**self.server.admin_dsn(), autocommit=True)  # type: ignore[arg-type]

    def _value(self, user: str, password: str, **extra: Any) -> dict[str, Any]:
        return {
            "engine": "postgres", "host": self.server.host, "port": self.server.port,
            "username": user, "password": password, "dbname": "postgres", **extra,
        }  # fmt: skip

    def new_secret(self, alternating: bool, master: str | None = None) -> str:
        user, password = f"b_{uuid.uuid4().hex[:12]}", "Initial-" + uuid.uuid4().hex
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
        extra = {"masterarn": master or self.master_arn} if alternating else {}
        return self.sm.create_secret(user, self._value(user, password, **extra))

    def rotate(self, arn: str, rotator: PostgreSQLRotator | None = None) -> None:
        token = self.sm.start_rotation(arn)
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric lines of each step
            for step in STEPS:
                (rotator or self.rotator).handle({"SecretId": arn, "ClientRequestToken": token, "Step": step})

    def connections(self) -> int:
        return self.server.log_path.read_text(errors="replace").count("connection authorized")


def per_rotation(bench: Bench, alternating: bool, master: str | None = None) -> tuple[Counter[str], int]:
    arn = bench.new_secret(alternating, master)
    bench.rotate(arn)  # the first alternating rotation creates the clone; measure the steady state
    bench.calls.clear()
    before = bench.connections()
    bench.rotate(arn)
    return Counter(bench.calls), bench.connections() - before


def wall_times(bench: Bench, alternating: bool, runs: int, master: str | None = None) -> list[float]:
    arn = bench.new_secret(alternating, master)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        bench.rotate(arn)
        times.append(1000 * (time.perf_counter() - started))
    return times


_worker: Bench | None = None


def _rotate_in_container(arn: str) -> tuple[int, str | None]:
    """One worker process is one Lambda container: it rotates secrets one at a time."""
    assert _worker is not None
    _worker.calls.clear()
    try:
        _worker.rotate(arn, PostgreSQLRotator(_worker.rotator.store))
    except Exception as exc:  # a failure is counted and named, never printed with values
        return sum(_worker.calls.values()), type(exc).__name__
    return sum(_worker.calls.values()), None


def fleet(bench: Bench, secrets: int, workers: int) -> dict[str, Any]:
    global _worker  # noqa: PLW0603 - inherited by the forked workers
    arns = [bench.new_secret(alternating=i % 2 == 1) for i in range(secrets)]
    _worker = bench
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_rotate_in_container, arns))
    elapsed = time.perf_counter() - started
    return {
        "secrets": secrets, "workers": workers, "seconds": elapsed, "per_second": secrets / elapsed,
        "failures": sum(1 for _, failure in results if failure),
        "calls_per_secret": sum(calls for calls, _ in results) / secrets,
    }  # fmt: skip


AWS_SAMPLE = (
    "| AWS sample function, single user (reference from its code, not measured here) | 14 | "
    "DescribeSecret 5, GetSecretValue 6, GetRandomPassword 1, PutSecretValue 1, "
    "UpdateSecretVersionStage 1 | 3-4 | - |"
)
# What the Security model (README) adds to the counts above, and the attack each closes.
SAFETY_COSTS = [
    ("1 `DescribeSecret`", "both", "setSecret, right before the change",
     "a superseded setSecret changing the password"),
    ("1 `UpdateSecretVersionStage` (`ROTATORS_TESTED`)", "both", "testSecret",
     "finishSecret moving AWSCURRENT to an untested version"),
    ("1 connection (AWSCURRENT logs in)", "alternating", "setSecret, before the master acts",
     "the master acting for a user the writer cannot log in as"),
    ("0: queries on the master's connection", "alternating", "setSecret",
     "the master's own user, a clone with more power, an unrelated `_clone`"),
    ("1 connection, only when privileges drifted", "alternating", "setSecret",
     "(AWSPREVIOUS proves the user before the drift is put right)"),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="rotations timed per strategy (median)")
    parser.add_argument("--fleet", type=int, default=200, help="secrets in the fleet run")
    parser.add_argument(
        "--workers", type=int, default=8, help="worker processes (containers) in the fleet run"
    )
    args = parser.parse_args()

    factory, sm = PostgresFactory(), LocalSecretsManager()
    try:
        ca_bundle = str(factory.ca.cert_path)
        with sm.environ(ROTATORS_CA_BUNDLE=ca_bundle, AWS_ENDPOINT_URL_RDS=sm.endpoint_url):
            bench = Bench(factory.start(), sm)
            machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
            print(
                f"Rotation benchmark, {date.today()}, {machine}, PostgreSQL {bench.server.bindir.parent.name}"
            )
            print("(throwaway PostgreSQL with SCRAM and TLS, moto over HTTP, one warm container)\n")
            header = "| strategy | API calls per rotation | by operation | DB connections | wall time"
            print(f"{header}, median of {args.runs} |")
            print("|---|---|---|---|---|")
            strategies = [
                ("single user", False, None),
                ("alternating users", True, None),
                ("alternating users, master secret managed by RDS", True, bench.managed_master()),
            ]
            for name, alternating, master in strategies:
                calls, conns = per_rotation(bench, alternating, master)
                median = statistics.median(wall_times(bench, alternating, args.runs, master))
                by_op = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
                print(f"| {name} | {sum(calls.values())} | {by_op} | {conns} | {median:.1f} ms |")
            print(AWS_SAMPLE)
            print("\n| added by the Security model | strategy | step | closes |\n|---|---|---|---|")
            for row in SAFETY_COSTS:
                print(f"| {' | '.join(row)} |")
            result = fleet(bench, args.fleet, args.workers)
            print("\n| fleet | secrets | workers | seconds | rotations/s | failures | API calls per secret |")
            print("|---|---|---|---|---|---|---|")
            print(
                f"| half single, half alternating | {result['secrets']} | {result['workers']} | "
                f"{result['seconds']:.1f} | {result['per_second']:.1f} | {result['failures']} | "
                f"{result['calls_per_secret']:.1f} |"
            )
            return 0 if result["failures"] == 0 else 1
    finally:
        sm.close()
        factory.close()


if __name__ == "__main__":
    sys.exit(main())
