"""Issue 14 live: master secrets that RDS and Redshift manage, and app secrets on read replicas,
Aurora reader endpoints and reader instances.

moto's RDS and Redshift APIs hold the databases and make the master secrets (tagged as the
services tag them), in the suite's moto server, which the rotator reaches as in Lambda: through
the SDK's endpoint settings (AWS_ENDPOINT_URL_RDS ...). moto names endpoints that do not resolve,
so its models are pointed at the throwaway servers: a primary or writer is the server itself; a
replica or reader instance is a plain TCP forwarder to it on another port (a replica that has
caught up); an Aurora reader endpoint is `localhost` on the cluster's port. Logins are real.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto.rds.models import DBCluster, DBInstance
from moto.redshift.models import Cluster

from rotators import endpoints
from rotators.cli.check import run_checks
from rotators.endpoints import Endpoint
from rotators.errors import TargetMismatchError
from rotators.secrets import AWSCURRENT
from rotators.testing.secretsmanager import REGION, LocalSecretsManager
from tests.engines import MYSQL, POSTGRESQL, REDSHIFT, Database, Engine, Login, engines
from tests.listeners import Listener

# The service's engine names (moto has no defaults for "mariadb": its MySQL stands for it).
RDS_ENGINE = {POSTGRESQL: "postgres", MYSQL: "mysql"}


class Forwarder(Listener):
    """Another address of the same server: each connection is piped to `target` and counted."""

    def __init__(self, target: Endpoint) -> None:
        self.target, self.connections = target, 0
        super().__init__()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port)

    def serve(self, client: socket.socket) -> None:
        self.connections += 1
        upstream = socket.create_connection((self.target.host, self.target.port))
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with source, sink:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # either side hung up


class MotoServices:
    """moto's RDS and Redshift (its server, over HTTP), whose endpoints lead to the test's servers."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.db, self.sm = db, db.sm
        for service in ("RDS", "REDSHIFT", "REDSHIFT_SERVERLESS"):
            monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", db.sm.endpoint_url)
        self.rds, self.redshift = _client(db.sm, "rds"), _client(db.sm, "redshift")
        self.server = Endpoint(db.server.host, db.server.port)
        self.addresses: dict[str, Endpoint] = {}  # instance or cluster id -> where its endpoint leads
        self.readers: dict[str, str] = {}  # cluster id -> its reader endpoint's host
        self.forwarders: list[Forwarder] = []
        instance_endpoint = DBInstance.endpoint.fget  # type: ignore[attr-defined]
        monkeypatch.setattr(
            DBInstance,
            "endpoint",
            property(lambda i: self._led(i.db_instance_identifier) or instance_endpoint(i)),
        )
        monkeypatch.setattr(DBCluster, "endpoint", property(lambda c: self.server.host))
        monkeypatch.setattr(
            DBCluster, "reader_endpoint", property(lambda c: self.readers.get(c.db_cluster_identifier, ""))
        )
        monkeypatch.setattr(Cluster, "address", property(lambda c: self.server.host))

    def _led(self, name: str) -> dict[str, Any] | None:
        found = self.addresses.get(name)
        return None if found is None else {"Address": found.host, "Port": found.port}

    def forwarder(self) -> Forwarder:
        forwarder = Forwarder(self.server)
        self.forwarders.append(forwarder)
        return forwarder

    def instance(self) -> tuple[str, str]:
        """An RDS instance on the test's server, its master password managed: (its id, the master secret)."""
        name = f"db-{uuid.uuid4().hex[:10]}"
        self.addresses[name] = self.server
        made = self.rds.create_db_instance(
            DBInstanceIdentifier=name, Engine=RDS_ENGINE[self.db.engine], DBInstanceClass="db.t3.micro",
            MasterUsername="admin", ManageMasterUserPassword=True, AllocatedStorage=20, Port=self.server.port,
        )["DBInstance"]  # fmt: skip
        return name, self._managed(made["MasterUserSecret"]["SecretArn"])

    def replica(self, of: str) -> Forwarder:
        name, forwarder = f"{of}-ro-{uuid.uuid4().hex[:4]}", self.forwarder()
        self.addresses[name] = forwarder.endpoint
        self.rds.create_db_instance_read_replica(DBInstanceIdentifier=name, SourceDBInstanceIdentifier=of)
        return forwarder

    def cluster(self) -> tuple[str, Forwarder]:
        """An Aurora PostgreSQL cluster: its writer endpoint and writer instance are the server, its
        reader endpoint `localhost` on the same port, its reader instance a forwarder."""
        name, reader = f"cl-{uuid.uuid4().hex[:10]}", self.forwarder()
        self.readers[name] = "localhost"
        made = self.rds.create_db_cluster(
            DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="admin",
            ManageMasterUserPassword=True, Port=self.server.port,
        )["DBCluster"]  # fmt: skip
        for member, leads_to in ((f"{name}-1", self.server), (f"{name}-2", reader.endpoint)):
            self.addresses[member] = leads_to
            self.rds.create_db_instance(
                DBInstanceIdentifier=member, Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
                DBClusterIdentifier=name,
            )  # fmt: skip
        return self._managed(made["MasterUserSecret"]["SecretArn"]), reader

    def redshift_cluster(self) -> str:
        """A Redshift cluster on the test's server (the proxy) and a master secret tagged as Redshift
        tags the one it manages (moto's Redshift makes none)."""
        name = f"rs-{uuid.uuid4().hex[:10]}"
        made = self.redshift.create_cluster(
            ClusterIdentifier=name, NodeType="dc2.large", MasterUsername="admin", ClusterType="single-node",
            MasterUserPassword="Unused-Pass-1", Port=self.server.port,
        )["Cluster"]  # fmt: skip
        arn = f"arn:aws:redshift:{REGION}:123456789012:cluster:{made['ClusterIdentifier']}"
        secret = self.sm.client.create_secret(
            Name=f"redshift!{name}-admin",
            SecretString="{}",
            Tags=[{"Key": "aws:redshift:primaryclusterarn", "Value": arn}],
        )["ARN"]
        return self._managed(secret)

    def _managed(self, secret: str) -> str:
        """The service's secret, just rotated by the service: a master made on the server, as it makes one."""
        self.service_rotates(secret, self.db.add_master())
        return secret

    def service_rotates(self, secret: str, login: Login) -> None:
        """What the service does when it rotates its master: a new value, only username and password."""
        self.sm.client.put_secret_value(
            SecretId=secret, SecretString=json.dumps({"username": login.username, "password": login.password})
        )

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()


def _client(sm: LocalSecretsManager, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=sm.endpoint_url, region_name=REGION,  # type: ignore[call-overload]
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


@pytest.fixture(params=engines(among=tuple(RDS_ENGINE)))
def engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.param
    return engine


@pytest.fixture
def services(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServices]:
    made = MotoServices(db, monkeypatch)
    yield made
    made.close()


@dataclass
class ApiCalls:
    """The rotator's calls to the database services: by operation, and as IAM judges them."""

    names: list[str] = field(default_factory=list)
    iam: list[tuple[str, str]] = field(default_factory=list)  # (action, resource)

    def record(self, service: str, model: Any, params: dict[str, Any]) -> None:
        self.names.append(model.name)
        named = params.get("DBInstanceIdentifier") or params.get("DBClusterIdentifier")
        kind = "cluster" if "Cluster" in model.name else "db"
        if service == "redshift":
            named = f"arn:aws:redshift:{REGION}:123456789012:cluster:{params['ClusterIdentifier']}"
        resource = named or (f"arn:aws:rds:{REGION}:123456789012:{kind}:*" if service == "rds" else "*")
        self.iam.append((f"{service}:{model.name}", resource))


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """The rotator's clients for the database services, each call recorded."""
    calls = ApiCalls()

    def recorded(service: str, region: str | None) -> Any:
        client = endpoints._sdk_client.__wrapped__(service, region, ())
        client.meta.events.register(
            "before-parameter-build.*.*", lambda model, params, **_: calls.record(service, model, params)
        )
        return client

    monkeypatch.setattr(endpoints, "sdk_client", recorded)
    return calls


def app_on(db: Database, where: Endpoint, master: str) -> tuple[str, Login]:
    login = db.add_user()
    value = {**db.secret(login, masterarn=master), "host": where.host, "port": where.port}
    return db.sm.create_secret(f"s-{uuid.uuid4().hex[:12]}", value), login


def rotate_twice(db: Database, arn: str, first: Login) -> None:
    """Alternating users, twice: the clone made, then the original's password set, each logging in."""
    clone = db.rotate(arn)
    assert clone["username"] == f"{first.username}_clone" and db.logs_in(clone["username"], clone["password"])
    again = db.rotate(arn)
    assert again["username"] == first.username and db.logs_in(first.username, again["password"])
    assert db.logs_in(clone["username"], clone["password"]), "the clone keeps working until its next turn"


# -- the master's endpoint from the service's API ----------------------------------------------------------
def test_a_managed_master_rotates_alternating_users_on_the_instance_its_tag_names(
    db: Database, services: MotoServices, api_calls: ApiCalls
) -> None:
    _, master = services.instance()
    arn, login = app_on(db, services.server, master)
    rotate_twice(db, arn, login)
    assert api_calls.names == ["DescribeDBInstances"] * 2, "one call per setSecret, none in the other steps"

    new_master = db.add_master()
    services.service_rotates(master, new_master)  # the service rotated it: new login, same tags
    assert db.rotate(arn)["username"] == f"{login.username}_clone"


def test_a_single_user_secret_on_the_same_instance_asks_no_service(
    db: Database, services: MotoServices, api_calls: ApiCalls
) -> None:
    services.instance()
    login = db.add_user()
    arn = db.store(login)
    db.rotate(arn)
    db.assert_rotated(arn, login.password)
    assert api_calls.names == []


@pytest.mark.parametrize("engine", engines(among=(REDSHIFT,)))
def test_a_redshift_cluster_master_from_the_redshift_api(
    db: Database, services: MotoServices, api_calls: ApiCalls
) -> None:
    """Through moto's Redshift API end to end: the cluster's endpoint is the proxy (tests/engines.py)."""
    master = services.redshift_cluster()
    arn, login = app_on(db, services.server, master)
    rotate_twice(db, arn, login)
    assert api_calls.names == ["DescribeClusters"] * 2


# -- replicas and readers: the master changes the password on the writer; testSecret logs in there ----------
def test_an_app_secret_on_a_read_replica_is_rotated_by_the_master_on_the_primary(
    db: Database, services: MotoServices, api_calls: ApiCalls
) -> None:
    primary, master = services.instance()
    replica = services.replica(primary)
    arn, login = app_on(db, replica.endpoint, master)
    rotate_twice(db, arn, login)
    assert replica.connections >= 4, "AWSCURRENT's proof and testSecret logged in on the replica"
    assert api_calls.names.count("DescribeDBInstances") == 4, "per setSecret: the primary, then its replicas"


@pytest.mark.parametrize("engine", engines(among=(POSTGRESQL,)))
@pytest.mark.parametrize("reader", ["endpoint", "instance"])
def test_an_app_secret_on_an_aurora_reader_is_accepted(
    db: Database, services: MotoServices, reader: str
) -> None:
    master, reader_instance = services.cluster()
    where = Endpoint("localhost", services.server.port) if reader == "endpoint" else reader_instance.endpoint
    arn, login = app_on(db, where, master)
    rotate_twice(db, arn, login)
    assert (reader_instance.connections > 0) == (reader == "instance")


@pytest.mark.parametrize("engine", engines(among=(POSTGRESQL,)))
@pytest.mark.parametrize("elsewhere", ["another instance", "a replica of another instance", "no instance"])
def test_a_host_that_is_neither_the_primary_nor_its_replica_is_refused(
    db: Database, services: MotoServices, elsewhere: str
) -> None:
    _, master = services.instance()
    other, _ = services.instance()
    if elsewhere == "a replica of another instance":
        where = services.replica(other).endpoint
    else:
        where = services.forwarder().endpoint
        if elsewhere == "another instance":
            services.addresses[other] = where
    arn, login = app_on(db, where, master)
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    db.fails(
        arn, token, "setSecret", TargetMismatchError, "same host and port, or the app secret a read replica"
    )
    assert not db.admin.user_exists(f"{login.username}_clone")


# -- `rotators check` says where the master's endpoint came from -------------------------------------------
@pytest.mark.parametrize("engine", engines(among=(POSTGRESQL,)))
def test_check_names_the_call_that_gave_the_masters_endpoint(db: Database, services: MotoServices) -> None:
    primary, master = services.instance()
    arn, _ = app_on(db, services.replica(primary).endpoint, master)
    rows = {check.name: check for check in run_checks(arn)}
    detail = rows["master secret"].detail
    assert rows["master secret"].passed and f"rds:DescribeDBInstances of arn:aws:rds:{REGION}" in detail
    assert "read replica" in detail and rows["master user logs in"].passed
    assert db.sm.value(master, AWSCURRENT)["password"] not in json.dumps([c.detail for c in rows.values()])


# -- IAM: the template grants each of these calls, and nothing they do not use ---------------------------
@pytest.mark.parametrize("engine", engines(among=(POSTGRESQL,)))
def test_the_role_grants_exactly_what_managed_masters_and_readers_call(
    db: Database, services: MotoServices, api_calls: ApiCalls
) -> None:
    """The judge of tests/integration/test_template_permissions.py, over the role's own policies and
    the engine's MasterEndpointPolicy, with the database services' calls added."""
    from rotators.cli.samtemplate import SamTemplate
    from rotators.engines.postgresql import PostgreSQLRotator
    from tests.integration.test_template_permissions import (
        TEMPLATE,
        Call,
        Recorder,
        function_arn,
        role_statements,
    )  # fmt: skip

    primary, master = services.instance()
    on_replica, _ = app_on(db, services.replica(primary).endpoint, master)
    cluster_master, reader = services.cluster()
    on_reader, _ = app_on(db, reader.endpoint, cluster_master)
    template = SamTemplate.load(TEMPLATE, {"MasterSecretArns": f"{master},{cluster_master}"})
    own = function_arn(template, "PostgreSQLRotator")
    recorder = Recorder(db.sm, {on_replica: own, on_reader: own, master: None, cluster_master: None})
    for arn in (on_replica, on_reader):
        recorder.rotate(PostgreSQLRotator, arn)
    calls = recorder.calls + [Call("setSecret", action, resource) for action, resource in api_calls.iam]

    statements = role_statements(template, "PostgreSQLRotatorRole")  # the attached lookup policy too
    lookup = [s for s in statements if s.origin == "PostgreSQLMasterEndpointPolicy"]
    assert lookup, "the role's judge sees the policy attached to it"
    denied = [str(c) for c in calls if not any(s.allows(c) for s in statements)]
    assert denied == [], "calls the role does not allow:\n" + "\n".join(denied)
    # The lookup policy exactly; the role's own statements: test_template_permissions.py (its
    # ListSecretVersionIds serves single-user recovery, which alternating users never needs).
    unused = [a for s in lookup for a in s.actions() if not any(c.action == a and s.allows(c) for c in calls)]
    assert unused == [], "granted but never used"
    assert {c.action for c in calls if c.resource in (master, cluster_master)} == {
        "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
    }, "a managed master secret is read and described, nothing else"  # fmt: skip
