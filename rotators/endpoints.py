"""Where a master logs in when the database service knows better than the secret.

A master secret that RDS, Aurora or Redshift manage (`ManageMasterUserPassword`) holds only
`username` and `password`; the service tags it with its database's ARN. `Services` asks that
service's read-only API where the database is and which engine it runs, and which other
addresses reach it (read replicas, an Aurora cluster's reader endpoint and its instances), so
that an app secret on one of them can be rotated by the master on the writer.

Nothing here is imported or called unless a rotation needs it: the SDK clients are made on first
use (once per container), through the SDK's own endpoint settings (AWS_ENDPOINT_URL_RDS ...), and
each call is made at most once per `Services`, which lives for one invocation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from botocore import xform_name

from rotators.errors import (
    DatabaseNotFoundError,
    EndpointLookupError,
    ServicePermissionError,
    UnknownDatabaseTagError,
    shown,
)
from rotators.secrets import SDK_CONFIG, error_code, sdk_session

INSTANCE = "RDS instance"
CLUSTER = "RDS cluster"
REDSHIFT = "Redshift cluster"
SERVERLESS = "Redshift Serverless"
# The tags the services put on the master secrets they manage, and what each one names.
MANAGED_TAGS: Mapping[str, str] = {
    "aws:rds:primaryDBInstanceArn": INSTANCE,
    "aws:rds:primaryDBClusterArn": CLUSTER,  # Aurora, Multi-AZ DB clusters, DocumentDB
    "aws:redshift:primaryclusterarn": REDSHIFT,
    "aws:redshift-serverless:namespacearn": SERVERLESS,
}
_KIND_OF_TAG = {tag.lower(): kind for tag, kind in MANAGED_TAGS.items()}
DENIED = {  # the error codes of a call the role may not make
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
}
_NOT_FOUND = {
    "DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault", "DBClusterNotFound",
    "ClusterNotFound", "ClusterNotFoundFault", "ResourceNotFoundException", "InvalidParameterValue",
}  # fmt: skip
# An RDS endpoint: <id>.<hash>.<region>.rds.amazonaws.com, or <id>.cluster-<hash>... for a cluster.
_RDS_HOST = re.compile(r"([a-z][a-z0-9-]*)\.(cluster-)?[a-z0-9]+\.([a-z0-9-]+)\.rds\.amazonaws\.com(\.cn)?")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def reaches(self, host: str, port: int) -> bool:
        return (self.host.lower(), self.port) == (host.lower(), port)


@dataclass(frozen=True)
class Database:
    """What the service says of the master's database: its writer, and where that came from."""

    kind: str
    arn: str
    engine: str  # as the service names it: postgres, aurora-mysql, oracle-ee, docdb, redshift ...
    writer: Endpoint
    origin: str  # the call that said so, for messages and `rotators check`
    detail: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def secret_engine(service_engine: str) -> str:
    """The secret's `engine` value for an engine as the service names it."""
    if service_engine.startswith("oracle"):
        return "oracle"  # oracle-ee, oracle-se2, oracle-ee-cdb ...
    if service_engine.startswith("sqlserver"):
        return service_engine  # sqlserver-ee, -se, -ex, -web: the secret keeps the edition
    return {"docdb": "documentdb"}.get(service_engine, service_engine)


def region_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 5 and parts[0] == "arn" else None


@cache
def _sdk_client(service: str, region: str | None, endpoint_settings: tuple[str | None, ...]) -> Any:
    """One client per container, service, region and endpoint setting (`endpoint_settings` only
    keys the cache: botocore reads AWS_ENDPOINT_URL_<SERVICE> and AWS_ENDPOINT_URL itself)."""
    return sdk_session().create_client(service, region_name=region, config=SDK_CONFIG)


def sdk_client(service: str, region: str | None) -> Any:
    variable = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
    return _sdk_client(service, region, (os.environ.get(variable), os.environ.get("AWS_ENDPOINT_URL")))


class Services:
    """The read-only calls of one invocation, each made at most once."""

    def __init__(self, client: Callable[[str, str | None], Any] | None = None) -> None:
        self._client = client or sdk_client  # (service, region) -> a botocore client
        self._answers: dict[tuple[str, str, str], Any] = {}

    # -- the master's database -------------------------------------------------------------------
    def tagged(self, tags: Mapping[str, str], secret: str) -> Database:
        """The database a managed master secret's tag names."""
        found = [(tag, value) for tag, value in tags.items() if tag.lower() in _KIND_OF_TAG]
        if not found:
            raise UnknownDatabaseTagError(
                f"The master secret {shown(secret)} has no 'host' and none of the tags that RDS, Aurora "
                f"and Redshift put on the master secrets they manage ({', '.join(MANAGED_TAGS)}); its tags: "
                f"{shown(sorted(tags), 300)}. Add host, port and engine to the master secret, or name the "
                "service-managed one"
            )
        tag, arn = found[0]
        return self.database(_KIND_OF_TAG[tag.lower()], arn, why=f"tag {tag!r} of {shown(secret)}")

    def database(self, kind: str, arn: str, *, why: str, region: str | None = None) -> Database:
        """`arn` (or a name, in `region`) of a `kind` of database, as its service describes it."""
        if kind in (INSTANCE, CLUSTER):
            return self._rds(kind, arn, why, region)
        return self._redshift(arn, why) if kind == REDSHIFT else self._serverless(arn, why)

    def named_by(self, host: str, port: int, keys: Mapping[str, Any]) -> Database | None:
        """The RDS instance or cluster a self-managed master secret points at: by its
        `dbClusterIdentifier` or `dbInstanceIdentifier` (as RDS's console writes them), else by its
        host name; only if the service's writer endpoint is that host and port."""
        region = None
        if isinstance(keys.get("dbClusterIdentifier"), str):
            kind, name = CLUSTER, keys["dbClusterIdentifier"]
        elif isinstance(keys.get("dbInstanceIdentifier"), str):
            kind, name = INSTANCE, keys["dbInstanceIdentifier"]
        elif match := _RDS_HOST.fullmatch(host.lower()):
            kind, name, region = (CLUSTER if match[2] else INSTANCE), match[1], match[3]
        else:
            return None
        found = self.database(kind, name, why=f"the master secret's {kind} {shown(name)}", region=region)
        return found if found.writer.reaches(host, port) else None

    # -- the other addresses that reach it ---------------------------------------------------------
    def reader_of(self, database: Database, host: str, port: int) -> str | None:
        """How (host, port) reaches `database` (a read replica, the reader endpoint, a cluster
        instance), in words; None when it does not."""
        if database.kind == INSTANCE:
            replicas = database.detail.get("ReadReplicaDBInstanceIdentifiers", [])
            for instance in self._instances(replicas, database):
                if _instance_endpoint(instance).reaches(host, port):
                    return f"read replica {instance['DBInstanceIdentifier']!r} of {database.arn}"
        if database.kind == CLUSTER:
            reader = database.detail.get("ReaderEndpoint")
            if reader and Endpoint(reader, database.writer.port).reaches(host, port):
                return f"the reader endpoint of {database.arn}"
            cluster = database.detail.get("DBClusterIdentifier", database.arn)
            filters = [{"Name": "db-cluster-id", "Values": [cluster]}]
            members = self._call("rds:DescribeDBInstances", database.arn, Filters=filters)
            for instance in members.get("DBInstances", []):
                if _instance_endpoint(instance).reaches(host, port):
                    return f"instance {instance['DBInstanceIdentifier']!r} of {database.arn}"
        return None

    # -- one service each --------------------------------------------------------------------------
    def _rds(self, kind: str, arn: str, why: str, region: str | None = None) -> Database:
        """An RDS instance (DescribeDBInstances) or cluster (DescribeDBClusters), by ARN or name."""
        noun = "DBInstance" if kind == INSTANCE else "DBCluster"
        action = f"rds:Describe{noun}s"
        found = self._call(action, arn, why=why, region=region, **{f"{noun}Identifier": arn})
        described = self._only(found.get(f"{noun}s", []), arn, why, action)
        arn = described.get(f"{noun}Arn", arn)
        if kind == INSTANCE:
            writer = _instance_endpoint(described)
        else:
            writer = Endpoint(described["Endpoint"], int(described["Port"]))
        return Database(kind, arn, described["Engine"], writer, f"{action} of {arn}", described)

    def _redshift(self, arn: str, why: str) -> Database:
        name = arn.rsplit(":", 1)[-1]
        found = self._call("redshift:DescribeClusters", arn, why=why, ClusterIdentifier=name)
        cluster = self._only(found.get("Clusters", []), arn, why, "redshift:DescribeClusters")
        endpoint = cluster.get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise DatabaseNotFoundError(f"The Redshift cluster {arn} ({why}) has no endpoint: retry later")
        writer = Endpoint(endpoint["Address"], int(endpoint["Port"]))
        return Database(REDSHIFT, arn, "redshift", writer, f"redshift:DescribeClusters of {arn}", cluster)

    def _serverless(self, arn: str, why: str) -> Database:
        """The namespace's ARN holds its id, which no call takes: its name is found in the list."""
        namespaces = self._pages("ListNamespaces", "namespaces", arn, why)
        name = next((n["namespaceName"] for n in namespaces if n.get("namespaceArn") == arn), None)
        workgroups = [] if name is None else self._pages("ListWorkgroups", "workgroups", arn, why)
        ours = [w for w in workgroups if w.get("namespaceName") == name and _address_of(w)]
        if not ours:
            raise DatabaseNotFoundError(
                f"Redshift Serverless knows no {'workgroup of the ' if name else ''}namespace {arn} "
                f"({why}) with an endpoint: fix the master secret's tag or create the workgroup"
            )
        writer = Endpoint(ours[0]["endpoint"]["address"], int(ours[0]["endpoint"]["port"]))
        origin = f"redshift-serverless:ListWorkgroups ({ours[0]['workgroupName']!r}) of {arn}"
        return Database(SERVERLESS, arn, "redshift-serverless", writer, origin, ours[0])

    def _instances(self, identifiers: Iterable[str], database: Database) -> Iterator[Mapping[str, Any]]:
        """The instances of these identifiers (ARNs of other regions among them): one call per region."""
        by_region: dict[str | None, list[str]] = {}
        for identifier in identifiers:
            by_region.setdefault(region_of(identifier) or region_of(database.arn), []).append(identifier)
        for region, names in by_region.items():
            filters = [{"Name": "db-instance-id", "Values": names}]
            found = self._call("rds:DescribeDBInstances", database.arn, region=region, Filters=filters)
            yield from found.get("DBInstances", [])

    # -- the calls ---------------------------------------------------------------------------------
    def _pages(self, operation: str, key: str, arn: str, why: str) -> list[Mapping[str, Any]]:
        """Every item of a Redshift Serverless listing (ListNamespaces, ListWorkgroups)."""
        items: list[Mapping[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"redshift-serverless:{operation}", arn, why=why, **token)
            items += page.get(key, [])
            if not page.get("nextToken"):
                return items
            token = {"nextToken": page["nextToken"]}

    def _call(self, action: str, arn: str, *, why: str = "", region: str | None = None, **params: Any) -> Any:
        """The call of IAM `action` (rds:DescribeDBInstances) with `params`, once per invocation;
        a failure typed, naming the action, `arn` and `why` it was looked up."""
        service, operation = action.split(":")
        region = region or region_of(arn)
        key = (action, str(region), repr(sorted(params.items())))
        if key not in self._answers:
            try:
                client = self._client(service, region)
                self._answers[key] = getattr(client, xform_name(operation))(**params)
            except Exception as exc:
                raise _failure(exc, action, arn, why) from None
        return self._answers[key]

    @staticmethod
    def _only(found: list[Mapping[str, Any]], arn: str, why: str, action: str) -> Mapping[str, Any]:
        if not found:
            raise DatabaseNotFoundError(f"{action} knows no {arn} ({why}): fix the master secret or its tag")
        return found[0]


def _address_of(workgroup: Mapping[str, Any]) -> str | None:
    return (workgroup.get("endpoint") or {}).get("address")


def _instance_endpoint(instance: Mapping[str, Any]) -> Endpoint:
    endpoint = instance.get("Endpoint") or {}
    return Endpoint(str(endpoint.get("Address", "")), int(endpoint.get("Port", 0)))


def _failure(exc: Exception, action: str, arn: str, why: str) -> EndpointLookupError:
    """The SDK's error as a typed one that names the call, the ARN and what to do; only its code."""
    code = error_code(exc)
    about = f"{arn} ({why})" if why else arn
    if code in DENIED:
        return ServicePermissionError(
            f"The function's role may not call {action} on {about}: grant {action} (template.yaml does when "
            "MasterSecretArns is set), then retry the step"
        )
    if code in _NOT_FOUND:
        return DatabaseNotFoundError(
            f"{action} does not know {about} ({code}): the database was deleted or the master secret "
            "names another one"
        )
    return EndpointLookupError(f"{action} on {about} failed ({code or type(exc).__name__}): retry the step")
