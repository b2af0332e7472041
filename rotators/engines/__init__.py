"""The database engines, one module each, and the one registry every consumer reads.

Import only the engine you need: each module imports its own driver. This file imports none,
so the command, the template checks, the bundler's benchmarks and the tests can list the engines
without loading a driver. A test fails when template.yaml, sam/Makefile, the pip extras or an
engine class disagree with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Engine:
    """What the world outside an engine module knows of it."""

    name: str  # its module under rotators.engines, and its pip extra: rotators[<name>]
    title: str
    secret_engines: frozenset[str]  # the `engine` values of the secrets its handler serves
    drivers: tuple[str, ...]  # the driver's top-level import names, the first one imported
    logical_id: str  # its function in template.yaml, and sam/Makefile's build-<logical_id>
    label: str  # its name in messages: "PostgreSQL refused the login of ..."
    default_port: int  # when the secret has no `port`
    default_dbname: str  # when the secret has no `dbname` ("" logs in without choosing one)

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def handler(self) -> str:
        return f"{self.module}.handler"

    @property
    def driver(self) -> str:
        return self.drivers[0]


ENGINES: tuple[Engine, ...] = (
    Engine(
        "postgresql", "PostgreSQL", frozenset({"postgres", "postgresql", "aurora-postgresql"}),
        ("psycopg", "psycopg_binary"), "PostgreSQLRotator", "PostgreSQL", 5432, "postgres",
    ),
    Engine(
        "mysql", "MySQL and MariaDB", frozenset({"mysql", "aurora-mysql", "mariadb"}),
        ("pymysql",), "MySQLRotator", "MySQL", 3306, "",
    ),
    Engine(
        "redshift", "Redshift", frozenset({"redshift", "redshift-serverless"}),
        ("redshift_connector",), "RedshiftRotator", "Redshift", 5439, "dev",
    ),
    Engine("oracle", "Oracle", frozenset({"oracle"}), ("oracledb",), "OracleRotator", "Oracle", 1521, "ORCL"),
    Engine(
        "documentdb", "DocumentDB and MongoDB", frozenset({"mongo", "mongodb", "documentdb"}),
        # in messages, the dialect of the secret or session where one is known (DocumentDB or MongoDB)
        ("pymongo",), "DocumentDBRotator", "MongoDB", 27017, "admin",
    ),
    Engine(
        "sqlserver", "SQL Server",
        frozenset({"sqlserver", "sqlserver-ee", "sqlserver-se", "sqlserver-ex", "sqlserver-web"}),
        ("pytds",), "SQLServerRotator", "SQL Server", 1433, "master",
    ),
)  # fmt: skip
BY_NAME = {engine.name: engine for engine in ENGINES}


def serving(secret_engine: str) -> Engine | None:
    """The engine whose handler takes a secret with this `engine` value."""
    return next((engine for engine in ENGINES if secret_engine in engine.secret_engines), None)
