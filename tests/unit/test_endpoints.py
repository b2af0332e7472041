"""Master secrets that RDS, Aurora, DocumentDB and Redshift manage, against the services' APIs as
botocore's Stubber answers them (tests/integration/test_managed_master.py runs RDS and Redshift
for real, through moto's server): each tag leads to its service and engine, each failure is a
typed error that names the tag, the ARN and the permission, and no call is made twice or when
the secret already says where the master is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.stub import Stubber

from rotators import endpoints
from rotators.database import DatabaseRotator, DatabaseSecret, MasterLogin, tls_mode
from rotators.endpoints import Services
from rotators.engines.documentdb import DocumentDBRotator
from rotators.engines.mysql import MySQLRotator
from rotators.engines.oracle import OracleRotator
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.engines.redshift import RedshiftRotator
from rotators.engines.sqlserver import SQLServerRotator
from rotators.errors import (
    DatabaseNotFoundError,
    SecretFormatError,
    ServicePermissionError,
    TargetMismatchError,
    UnknownDatabaseTagError,
)
from tests.offline import FakeSecretsManager, store

ACCOUNT = "arn:aws:{service}:us-east-1:123456789012"
MASTER = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1234-AbCdEf"
INSTANCE = "arn:aws:rds:us-east-1:123456789012:db:orders"
CLUSTER = "arn:aws:rds:us-east-1:123456789012:cluster:orders"
REDSHIFT = "arn:aws:redshift:us-east-1:123456789012:cluster:warehouse"
NAMESPACE = (
    "arn:aws:redshift-serverless:us-east-1:123456789012:namespace/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
)
MANAGED = {"username": "admin", "password": "Managed-Master-1"}


class TaggedSecretsManager(FakeSecretsManager):
    """The offline fake, whose DescribeSecret also gives the master secret's tags (or refuses)."""

    def __init__(self, tags: dict[str, str], *, refuse: str | None = None) -> None:
        super().__init__({})
        self.tags, self.refuse = tags, refuse

    def describe_secret(self, *, SecretId: str) -> Any:
        if self.refuse:
            raise _client_error(self.refuse, "DescribeSecret")
        return {
            **super().describe_secret(SecretId=SecretId),
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()],
        }


def _client_error(code: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "no"}}, operation)


class StubbedServices:
    """The services' clients, each answered by a Stubber from what the test queued: a call not
    queued fails the test, so each test says exactly which calls a lookup makes."""

    def __init__(self) -> None:
        self.stubs: dict[str, Stubber] = {}

    def client(self, service: str, region: str | None) -> Any:
        if service not in self.stubs:
            made = boto3.client(
                service, region_name=region or "us-east-1", config=Config(signature_version=UNSIGNED)
            )  # type: ignore[call-overload]
            self.stubs[service] = Stubber(made)
            self.stubs[service].activate()
        return self.stubs[service].client

    def answer(self, service: str, operation: str, response: dict[str, Any], **expected: Any) -> None:
        self.client(service, None)
        self.stubs[service].add_response(operation, response, expected or None)

    def refuse(self, service: str, operation: str, code: str) -> None:
        self.client(service, None)
        self.stubs[service].add_client_error(operation, code)

    def all_made(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubbedServices]:
    stubbed = StubbedServices()
    monkeypatch.setattr(endpoints, "sdk_client", stubbed.client)
    yield stubbed
    stubbed.all_made()


def instance(
    name: str, host: str, port: int = 5432, engine: str = "postgres", **extra: Any
) -> dict[str, Any]:
    return {
        "DBInstanceIdentifier": name,
        "DBInstanceArn": f"{ACCOUNT.format(service='rds')}:db:{name}",
        "Engine": engine,
        "Endpoint": {"Address": host, "Port": port},
        **extra,
    }


def app(rotator: DatabaseRotator[Any], host: str, port: int, **extra: Any) -> DatabaseSecret:
    engine = sorted(rotator.engines)[0]
    value = {"engine": engine, "host": host, "port": port, "username": "app", "password": "App-Pass-1"}
    return rotator.parse(json.dumps({**value, "masterarn": MASTER, **extra}), where="the app secret")


def find(
    rotator: DatabaseRotator[Any],
    app_secret: DatabaseSecret,
    tags: dict[str, str],
    master: dict[str, Any] = MANAGED,
) -> MasterLogin:
    secrets = store(TaggedSecretsManager(tags))
    return rotator.find_master(json.dumps(master), app_secret, where="the master secret", store=secrets)


# -- each tag, its service, its engine --------------------------------------------------------------------
def test_an_oracle_instance_is_found_through_describe_db_instances(api: StubbedServices) -> None:
    host = "orders.abc.us-east-1.rds.amazonaws.com"
    api.answer(
        "rds", "describe_db_instances", {"DBInstances": [instance("orders", host, 1521, "oracle-ee")]},
        DBInstanceIdentifier=INSTANCE,
    )  # fmt: skip
    found = find(
        OracleRotator(), app(OracleRotator(), host, 1521), {"aws:rds:primaryDBInstanceArn": INSTANCE}
    )
    assert (found.secret.host, found.secret.port, found.secret.engine) == (host, 1521, "oracle")
    assert found.origin == f"rds:DescribeDBInstances of {INSTANCE}" and found.route == "the same host"
    assert found.secret.username == "admin"


def test_a_sqlserver_instance_is_found_through_describe_db_instances(api: StubbedServices) -> None:
    """RDS names the edition (sqlserver-se); the secret keeps it, and the SQL Server rotator serves it."""
    host = "orders.abc.us-east-1.rds.amazonaws.com"
    api.answer(
        "rds", "describe_db_instances", {"DBInstances": [instance("orders", host, 1433, "sqlserver-se")]},
        DBInstanceIdentifier=INSTANCE,
    )  # fmt: skip
    found = find(
        SQLServerRotator(), app(SQLServerRotator(), host, 1433), {"aws:rds:primaryDBInstanceArn": INSTANCE}
    )
    assert (found.secret.host, found.secret.port, found.secret.engine) == (host, 1433, "sqlserver-se")
    assert found.origin == f"rds:DescribeDBInstances of {INSTANCE}" and found.route == "the same host"
    assert found.secret.username == "admin"


def test_a_redshift_cluster_is_found_through_describe_clusters(api: StubbedServices) -> None:
    host = "warehouse.abc.us-east-1.redshift.amazonaws.com"
    cluster = {"ClusterIdentifier": "warehouse", "Endpoint": {"Address": host, "Port": 5439}}
    api.answer("redshift", "describe_clusters", {"Clusters": [cluster]}, ClusterIdentifier="warehouse")
    found = find(
        RedshiftRotator(), app(RedshiftRotator(), host, 5439), {"aws:redshift:primaryclusterarn": REDSHIFT}
    )
    assert (found.secret.host, found.secret.port, found.secret.engine) == (host, 5439, "redshift")
    assert found.origin == f"redshift:DescribeClusters of {REDSHIFT}"


def test_a_redshift_serverless_namespace_is_found_through_its_workgroup(api: StubbedServices) -> None:
    """The tag holds the namespace's ARN; its name (which the workgroup lists) comes from the list."""
    host = "sales.123456789012.us-east-1.redshift-serverless.amazonaws.com"
    other = {"namespaceName": "other", "namespaceArn": NAMESPACE.replace("0a1b", "ffff")}
    ours = {"namespaceName": "sales", "namespaceArn": NAMESPACE}
    api.answer("redshift-serverless", "list_namespaces", {"namespaces": [other], "nextToken": "page-2"})
    api.answer("redshift-serverless", "list_namespaces", {"namespaces": [ours]}, nextToken="page-2")
    workgroups = [
        {
            "workgroupName": "elsewhere",
            "namespaceName": "other",
            "endpoint": {"address": "x.example", "port": 5439},
        },
        {"workgroupName": "sales-wg", "namespaceName": "sales", "endpoint": {"address": host, "port": 5439}},
    ]
    api.answer("redshift-serverless", "list_workgroups", {"workgroups": workgroups})
    rotator = RedshiftRotator()
    found = find(rotator, app(rotator, host, 5439), {"aws:redshift-serverless:namespacearn": NAMESPACE})
    assert (found.secret.host, found.secret.engine) == (host, "redshift-serverless")
    assert "'sales-wg'" in found.origin and NAMESPACE in found.origin


@pytest.mark.parametrize(
    ("rotator", "engine", "secret_engine"),
    [
        (PostgreSQLRotator(), "aurora-postgresql", "aurora-postgresql"),
        (DocumentDBRotator(), "docdb", "documentdb"),
    ],
    ids=["aurora", "documentdb"],
)
def test_a_cluster_is_found_through_describe_db_clusters(
    api: StubbedServices, rotator: DatabaseRotator[Any], engine: str, secret_engine: str
) -> None:
    """Aurora and DocumentDB (whose clusters the RDS API describes too) tag the cluster's ARN."""
    host = "orders.cluster-abc.us-east-1.rds.amazonaws.com"
    cluster = {"DBClusterArn": CLUSTER, "Engine": engine, "Endpoint": host, "Port": 27017}
    api.answer("rds", "describe_db_clusters", {"DBClusters": [cluster]}, DBClusterIdentifier=CLUSTER)
    found = find(rotator, app(rotator, host, 27017), {"aws:rds:primaryDBClusterArn": CLUSTER})
    assert (found.secret.host, found.secret.port, found.secret.engine) == (host, 27017, secret_engine)


# -- each failure names the tag, the ARN and what to grant ------------------------------------------
def test_a_master_secret_without_host_or_known_tag_is_refused(api: StubbedServices) -> None:
    with pytest.raises(UnknownDatabaseTagError) as caught:
        find(PostgreSQLRotator(), app(PostgreSQLRotator(), "db", 5432), {"team": "orders"})
    assert "aws:rds:primaryDBInstanceArn" in str(caught.value) and "'team'" in str(caught.value)
    assert "Managed-Master-1" not in str(caught.value)


@pytest.mark.parametrize(
    ("operation", "code", "error", "tag", "arn", "named"),
    [
        ("describe_db_instances", "DBInstanceNotFound", DatabaseNotFoundError,
         "aws:rds:primaryDBInstanceArn", INSTANCE, "rds:DescribeDBInstances"),
        ("describe_db_clusters", "AccessDenied", ServicePermissionError,
         "aws:rds:primaryDBClusterArn", CLUSTER, "grant rds:DescribeDBClusters"),
    ],
    ids=["an ARN the service does not know", "a call the role may not make"],
)  # fmt: skip
def test_a_failed_call_names_the_tag_the_arn_and_the_action(
    api: StubbedServices, operation: str, code: str, error: type[Exception], tag: str, arn: str, named: str
) -> None:
    api.refuse("rds", operation, code)
    with pytest.raises(error) as caught:
        find(PostgreSQLRotator(), app(PostgreSQLRotator(), "db", 5432), {tag: arn})
    assert arn in str(caught.value) and tag in str(caught.value) and named in str(caught.value)


def test_a_master_secret_the_role_may_not_describe_names_describe_secret(api: StubbedServices) -> None:
    secrets = store(TaggedSecretsManager({}, refuse="AccessDeniedException"))
    with pytest.raises(ServicePermissionError, match="secretsmanager:DescribeSecret"):
        PostgreSQLRotator().find_master(
            json.dumps(MANAGED),
            app(PostgreSQLRotator(), "db", 5432),
            where="the master secret",
            store=secrets,
        )


def test_a_managed_master_of_another_engine_is_refused(api: StubbedServices) -> None:
    api.answer("rds", "describe_db_instances", {"DBInstances": [instance("orders", "db", 3306, "mysql")]})
    with pytest.raises(SecretFormatError, match="'mysql' database"):
        find(
            PostgreSQLRotator(),
            app(PostgreSQLRotator(), "db", 3306),
            {"aws:rds:primaryDBInstanceArn": INSTANCE},
        )


# -- TLS: the app secret's, never below the function's own -------------------------------------------
@pytest.mark.parametrize(
    ("app_tls", "expected"),
    [
        ({"ssl": False}, "verify-full"),
        ({"sslmode": "require"}, "verify-full"),
        ({"sslmode": "verify-full"}, "verify-full"),
    ],
)
def test_the_master_never_logs_in_with_weaker_tls_than_the_functions(
    api: StubbedServices, app_tls: dict[str, Any], expected: str
) -> None:
    """A managed master secret has no TLS settings: an app secret may raise the function's, not lower them."""
    api.answer("rds", "describe_db_instances", {"DBInstances": [instance("orders", "db")]})
    found = find(
        PostgreSQLRotator(),
        app(PostgreSQLRotator(), "db", 5432, **app_tls),
        {"aws:rds:primaryDBInstanceArn": INSTANCE},
    )
    assert tls_mode(found.secret) == expected


def test_an_app_secret_cannot_choose_the_masters_ca_bundle(
    api: StubbedServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/opt/rds-global-bundle.pem")
    api.answer("rds", "describe_db_instances", {"DBInstances": [instance("orders", "db")]})
    found = find(
        PostgreSQLRotator(),
        app(PostgreSQLRotator(), "db", 5432, sslrootcert="/tmp/mine.pem"),
        {"aws:rds:primaryDBInstanceArn": INSTANCE},
    )
    assert found.secret.tls.ca_bundle is None, "the function's bundle (ROTATORS_CA_BUNDLE), not the app's"


# -- replicas of a self-managed master: found by its host name, checked against the API -----------
PRIMARY = "orders.abc123.us-east-1.rds.amazonaws.com"
REPLICA = "orders-ro.abc123.us-east-1.rds.amazonaws.com"
SELF_MANAGED = {"engine": "postgres", "host": PRIMARY, "port": 5432, **MANAGED}


def _primary_with_replica(api: StubbedServices) -> None:
    primary = instance("orders", PRIMARY, ReadReplicaDBInstanceIdentifiers=["orders-ro"])
    api.answer("rds", "describe_db_instances", {"DBInstances": [primary]}, DBInstanceIdentifier="orders")
    api.answer(
        "rds", "describe_db_instances", {"DBInstances": [instance("orders-ro", REPLICA)]},
        Filters=[{"Name": "db-instance-id", "Values": ["orders-ro"]}],
    )  # fmt: skip


def test_a_read_replica_of_a_self_managed_masters_instance_is_accepted(api: StubbedServices) -> None:
    _primary_with_replica(api)
    found = find(PostgreSQLRotator(), app(PostgreSQLRotator(), REPLICA, 5432), {}, SELF_MANAGED)
    assert found.route == f"read replica 'orders-ro' of {ACCOUNT.format(service='rds')}:db:orders"
    assert found.secret.host == PRIMARY and found.origin == "the master secret"


def test_a_host_named_like_a_replica_elsewhere_is_refused(api: StubbedServices) -> None:
    """AWS's function compares the first label of the host only; here the whole endpoint counts."""
    _primary_with_replica(api)
    lookalike = "orders-ro.abc123.us-east-1.rds.amazonaws.com.example.net"
    with pytest.raises(TargetMismatchError, match="same host and port"):
        find(PostgreSQLRotator(), app(PostgreSQLRotator(), lookalike, 5432), {}, SELF_MANAGED)


def test_a_master_host_that_is_not_the_instances_writer_is_not_trusted(api: StubbedServices) -> None:
    elsewhere = instance("orders", "orders.other.us-east-1.rds.amazonaws.com")
    api.answer("rds", "describe_db_instances", {"DBInstances": [elsewhere]})
    with pytest.raises(TargetMismatchError):
        find(PostgreSQLRotator(), app(PostgreSQLRotator(), REPLICA, 5432), {}, SELF_MANAGED)


def test_the_same_host_asks_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_call(service: str, region: str | None) -> Any:
        raise AssertionError(f"a {service} client was made")

    monkeypatch.setattr(endpoints, "sdk_client", no_call)
    found = find(MySQLRotator(), app(MySQLRotator(), PRIMARY, 5432), {}, {**SELF_MANAGED, "engine": "mysql"})
    assert (found.origin, found.route) == ("the master secret", "the same host")


def test_each_call_is_made_once_per_invocation(api: StubbedServices) -> None:
    """One Services lives for one invocation: asking again is answered from what it learnt."""
    cluster = {"DBClusterArn": CLUSTER, "DBClusterIdentifier": "orders", "Engine": "aurora-mysql",
               "Endpoint": PRIMARY, "ReaderEndpoint": "orders.cluster-ro-abc", "Port": 3306}  # fmt: skip
    api.answer("rds", "describe_db_clusters", {"DBClusters": [cluster]})
    api.answer(
        "rds", "describe_db_instances", {"DBInstances": [instance("orders-2", REPLICA, 3306)]},
        Filters=[{"Name": "db-cluster-id", "Values": ["orders"]}],
    )  # fmt: skip
    services = Services()
    database = services.tagged({"aws:rds:primaryDBClusterArn": CLUSTER}, MASTER)
    assert services.reader_of(database, "ORDERS.cluster-ro-abc", 3306) == f"the reader endpoint of {CLUSTER}"
    for _ in range(2):
        assert services.reader_of(database, REPLICA, 3306) == f"instance 'orders-2' of {CLUSTER}"
        assert services.reader_of(database, "elsewhere", 3306) is None
