"""Amazon DocumentDB and MongoDB with pymongo. Handler: rotators.engines.documentdb.handler.

Both speak the same wire protocol and user commands (`updateUser`, `createUser`, `usersInfo`);
where they accept different options, a `Dialect` says which, and the engine sends only what the
server understands. DocumentDB is recognised by its endpoint name or by `"engine": "documentdb"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pymongo
from bson.son import SON
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from rotators.database import NOT_CHECKED, DatabaseRotator, DatabaseSecret, ca_bundle, tls_mode
from rotators.engines import BY_NAME
from rotators.errors import ConfigurationError, PasswordChangeError, RotationError, SecretFormatError, shown
from rotators.log import logger

_AUTHENTICATION_FAILED = 18
_UNAUTHORIZED = 13
_USER_EXISTS = 51003  # createUser of a user that exists
_MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
# Cluster, instance and elastic-cluster endpoints of Amazon DocumentDB, in every partition.
_DOCUMENTDB_DOMAINS = (".docdb.amazonaws.com", ".docdb.amazonaws.com.cn", ".docdb-elastic.amazonaws.com")

# Built-in roles that administer users or the server, or reach every application's data, rather
# than serve one application. User administration (userAdmin, userAdminAnyDatabase, and dbOwner,
# which includes userAdmin) can grant itself any role; restore writes admin.system.users and
# backup reads every user's credentials; root and __system may do anything; the cluster roles run
# the server itself; the *AnyDatabase roles administer or write every database (DocumentDB gave
# them to every user made before 2020-03-26, so such users must be looked at before alternating).
ADMIN_ROLES = frozenset({
    "root", "__system", "userAdmin", "userAdminAnyDatabase", "dbOwner", "restore", "backup",
    "__queryableBackup", "clusterAdmin", "clusterManager", "hostManager", "dbAdminAnyDatabase",
    "readWriteAnyDatabase",
})  # fmt: skip
# The other built-in roles: no custom role may share their names, so they need no rolesInfo.
_PLAIN_BUILTIN_ROLES = frozenset({
    "read", "readWrite", "dbAdmin", "readAnyDatabase", "clusterMonitor", "enableSharding",
    "directShardOperations", "searchCoordinator",
})  # fmt: skip
# Actions in a custom role that administer users, roles or the server (or do anything at all).
ADMIN_ACTIONS = frozenset({
    "anyAction", "internal", "impersonate", "createUser", "dropUser", "changePassword",
    "grantRole", "revokeRole", "createRole", "dropRole", "setAuthenticationRestriction",
    "shutdown", "setParameter", "replSetConfigure", "applyOps",
})  # fmt: skip
# Collections that hold users and roles: any privilege on them reads credentials or forges users.
_CREDENTIAL_COLLECTIONS = ("system.users", "system.roles")
Role = tuple[str, str]  # (role, db): MongoDB roles are database-qualified, like its users


@dataclass(frozen=True)
class Dialect:
    """What one server family accepts, where DocumentDB and MongoDB differ: the features of a
    session, chosen from the secret (the endpoint name or its engine value)."""

    name: str
    # DocumentDB before 8.0.2 refuses retryable writes; MongoDB drivers turn them on by default.
    retry_writes: bool
    # MongoDB can tie a user to client addresses; a clone must carry the same restrictions.
    # DocumentDB has no such field and rejects the usersInfo option that shows it.
    authentication_restrictions: bool
    # DocumentDB's certificates chain to the Amazon RDS CA, which no system trust store holds.
    needs_ca_bundle: bool


DOCUMENTDB = Dialect("Amazon DocumentDB", False, authentication_restrictions=False, needs_ca_bundle=True)
MONGODB = Dialect("MongoDB", True, authentication_restrictions=True, needs_ca_bundle=False)


def dialect_of(secret: DatabaseSecret) -> Dialect:
    """AWS's own DocumentDB secrets say `"engine": "mongo"`, so the endpoint name decides too."""
    host = secret.host.lower().rstrip(".")
    return DOCUMENTDB if secret.engine == "documentdb" or host.endswith(_DOCUMENTDB_DOMAINS) else MONGODB


@dataclass(frozen=True)
class Session:
    """A logged-in client: the authentication database and the server's dialect."""

    db: Database[Any]
    features: Dialect


@dataclass(frozen=True)
class UserRecord:
    """The parts of a `usersInfo` entry a clone copies (mechanisms only where the server says)."""

    roles: list[Any]
    mechanisms: list[str] | None = None
    restrictions: list[Any] = field(default_factory=list)

    @property
    def role_keys(self) -> set[Role]:
        return set(_role_keys(self.roles))


class DocumentDBRotator(DatabaseRotator[Session]):
    engine = BY_NAME["documentdb"]  # kind, label, secret engines, default port and dbname
    driver_errors = (PyMongoError,)
    max_username_bytes = 1024  # MongoDB's only bound is the document size; this is a sanity guard

    @contextmanager
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> Iterator[Session]:
        dialect = dialect_of(secret)
        options = self.client_options(secret, username, password)
        try:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(**options)
        except (PyMongoError, OSError) as exc:  # a CA bundle that cannot be read is an OSError
            raise ConfigurationError(
                f"Invalid {dialect.name} connection options: {self.scrubbed(exc, [password])}: check "
                "'sslrootcert' in the secret or ROTATORS_CA_BUNDLE"
            ) from None
        with client:
            db = client[secret.dbname]
            with self.login_errors(secret, username, password, label=dialect.name):
                db.command("ping")  # checks out a connection, which logs in
            yield Session(db, dialect)

    def refused_login(self, exc: Exception) -> bool:
        return isinstance(exc, OperationFailure) and exc.code == _AUTHENTICATION_FAILED

    def lost_connection(self, exc: Exception) -> bool:
        return isinstance(exc, ConnectionFailure)

    def user_exists(self, exc: Exception) -> bool:
        return isinstance(exc, OperationFailure) and exc.code == _USER_EXISTS

    def error_text(self, exc: Exception) -> str:
        """The server's own words without pymongo's topology dump."""
        if isinstance(exc, OperationFailure) and isinstance(exc.details, Mapping):
            return f"{exc.details.get('errmsg', exc)} (code {exc.code}, {exc.details.get('codeName', '?')})"
        return str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]

    def client_options(self, secret: DatabaseSecret, username: str, password: str) -> dict[str, Any]:
        """Keyword arguments of MongoClient for one login; nothing here opens a socket."""
        dialect = dialect_of(secret)
        timeout_ms = self.connect_timeout().milliseconds
        options: dict[str, Any] = {
            "host": secret.host,
            "port": secret.port,
            "username": username,
            "password": password,
            "authSource": secret.dbname,
            "appname": "rotators",
            "retryWrites": dialect.retry_writes,
            "connectTimeoutMS": timeout_ms,
            "serverSelectionTimeoutMS": timeout_ms,
            "socketTimeoutMS": 30_000,
            **self.tls_options(secret),
        }
        mechanism = self._mechanism(secret, username)
        if mechanism:
            options["authMechanism"] = mechanism
        return options

    @staticmethod
    def tls_options(secret: DatabaseSecret) -> dict[str, Any]:
        """Verified TLS unless the secret says otherwise; never a silent plaintext fallback."""
        mode = tls_mode(secret)
        if mode is None:
            return {"tls": False}
        if mode == "require":
            return {"tls": True, "tlsAllowInvalidCertificates": True}
        options: dict[str, Any] = {"tls": True}
        bundle = ca_bundle(secret)
        if bundle.path:
            options["tlsCAFile"] = bundle.path
        elif dialect_of(secret).needs_ca_bundle and not bundle.named:
            raise ConfigurationError(
                "Amazon DocumentDB's certificate is signed by the Amazon RDS CA, which the system "
                "trust store lacks: ship global-bundle.pem (https://truststore.pki.rds.amazonaws.com/"
                "global/global-bundle.pem) with the function and give its path as 'sslrootcert' in "
                'the secret or ROTATORS_CA_BUNDLE (or "system" if your trust store holds it)'
            )
        if mode == "verify-ca":
            options["tlsAllowInvalidHostnames"] = True
        return options

    def _mechanism(self, secret: DatabaseSecret, username: str) -> str | None:
        """The secret's `authMechanism` applies to its user and clone; a master negotiates its own."""
        mechanism = secret.raw.get("authMechanism")
        if mechanism is None or username not in (secret.username, self.partner(secret.username)):
            return None
        if mechanism not in _MECHANISMS:
            raise SecretFormatError(f"Key 'authMechanism' must be one of {', '.join(_MECHANISMS)}")
        return str(mechanism)

    @contextmanager
    def master_session(self, master: DatabaseSecret, target: DatabaseSecret) -> Iterator[Session]:
        """The master authenticates against its own database with its own secret's TLS settings;
        the user commands then run in the target's database, where the app's users live."""
        with self.connect(master, master.username, master.password) as session:
            dialect = DOCUMENTDB if DOCUMENTDB in (session.features, dialect_of(target)) else MONGODB
            yield replace(session, db=session.db.client[target.dbname], features=dialect)

    # -- the master's safety rules ------------------------------------------------------------
    def user_key(self, username: str, secret: DatabaseSecret) -> tuple[str, str]:
        """A MongoDB user is its name in its authentication database: `orders.admin` is not `admin.admin`."""
        return (username, secret.dbname)

    def admin_power(self, conn: Session, username: str) -> list[str]:
        """Administrative built-in roles, and custom roles whose privileges (or inherited roles)
        administer users or the server, followed through role inheritance."""
        record = self.user_record(conn, username)
        if record is None:
            return []  # clone_user and updateUser say so
        found: list[str] = []
        seen: set[Role] = set()
        level = record.role_keys
        while level:
            seen |= level
            custom = []
            for role, db in sorted(level):
                if role in ADMIN_ROLES:
                    found.append(f"role {role!r} on {db!r}")
                elif role not in _PLAIN_BUILTIN_ROLES:
                    custom.append((role, db))
            level = set()
            for entry in self._roles_info(conn, custom):
                powers = _admin_privileges(entry)
                if powers:
                    found.append(
                        f"role {entry.get('role')!r} on {entry.get('db')!r}, which may {', '.join(powers)}"
                    )
                inherited = [*entry.get("roles", []), *entry.get("inheritedRoles", [])]
                level |= set(_role_keys(inherited)) - seen
        return [f"{shown(username)} holds {'; '.join(found)}"] if found else []

    def clone_mismatch(self, conn: Session, source: str, clone: str) -> list[str]:
        """An existing clone may hold only roles the source holds, and, where the server has them,
        no authentication restrictions other than the source's (fewer would be looser)."""
        existing = self.user_record(conn, clone)
        if existing is None:
            return []
        original = self.user_record(conn, source)
        if original is None:
            return []  # clone_user says there is no source
        found = []
        extra = existing.role_keys - original.role_keys
        if extra:
            found.append(f"{shown(clone)} holds roles {shown(source)} does not: {_roles_text(extra)}")
        if original.restrictions and existing.restrictions != original.restrictions:
            found.append(f"{shown(clone)} has other authentication restrictions than {shown(source)}")
        return found

    def clone_lacks(self, conn: Session, source: str, clone: str) -> list[str]:
        """Roles of the source the clone does not hold, and restrictions that keep the clone from
        logging in where the source may."""
        original = self.user_record(conn, source)
        if original is None:
            return []  # updateUser says so; nothing is handed out
        existing = self.user_record(conn, clone)
        if existing is None:
            return [f"no user {shown(clone)} in database {conn.db.name!r}"]
        found = []
        missing = original.role_keys - existing.role_keys
        if missing:
            found.append(f"{shown(clone)} lacks roles {shown(source)} holds: {_roles_text(missing)}")
        if existing.restrictions and existing.restrictions != original.restrictions:
            found.append(f"{shown(clone)} has other authentication restrictions than {shown(source)}")
        return found

    def _roles_info(self, conn: Session, roles: list[Role]) -> list[Mapping[str, Any]]:
        """Custom roles with their privileges and inherited roles, in one command."""
        if not roles:
            return []
        command: SON[str, Any] = SON(
            [("rolesInfo", [{"role": role, "db": db} for role, db in roles]), ("showPrivileges", True)]
        )
        hint = "the master needs the viewRole action (userAdmin or userAdminAnyDatabase) on the database"
        with self.statement_errors(what="rolesInfo", hint=hint, label=conn.features.name):
            reply = conn.db.command(command)
        return [entry for entry in reply.get("roles", []) if isinstance(entry, Mapping)]

    # -- the user commands ------------------------------------------------------------------
    def set_password(self, conn: Session, username: str, password: str) -> None:
        """MongoDB's updateUser with a password and no mechanisms gives the user every default
        mechanism; the user's own list keeps a SCRAM-SHA-256-only user that way."""
        record = self.user_record(conn, username, optional=True)
        command: SON[str, Any] = SON([("updateUser", username), ("pwd", password)])
        if record is not None and record.mechanisms:
            command["mechanisms"] = record.mechanisms
        self._command(conn, command, password)

    def clone_user(self, conn: Session, source: str, clone: str, password: str) -> None:
        """The clone gets the source's roles (and mechanisms and address restrictions, where the
        server has them), read afresh on every rotation, so it can do what the source can."""
        original = self.user_record(conn, source)
        if original is None:
            raise PasswordChangeError(
                f"{conn.features.name} has no user {shown(source)} in database {conn.db.name!r} to clone: "
                "check 'username' and 'dbname' in the secret"
            )
        verb = "updateUser" if self.user_record(conn, clone) is not None else "createUser"
        command: SON[str, Any] = SON([(verb, clone), ("pwd", password), ("roles", original.roles)])
        if original.mechanisms:
            command["mechanisms"] = original.mechanisms
        if conn.features.authentication_restrictions:
            command["authenticationRestrictions"] = original.restrictions
        self._command(conn, command, password)

    def user_record(self, conn: Session, username: str, *, optional: bool = False) -> UserRecord | None:
        """`usersInfo` for one user of the authentication database; None if there is none, or,
        when `optional`, if the login may not read it (a user that changes its own password)."""
        command: SON[str, Any] = SON([("usersInfo", username)])
        if conn.features.authentication_restrictions:
            command["showAuthenticationRestrictions"] = True
        try:
            reply = conn.db.command(command)
        except PyMongoError as exc:
            if optional and isinstance(exc, OperationFailure) and exc.code == _UNAUTHORIZED:
                logger.info("no viewUser on the user's record: updateUser without its mechanisms list")
                return None
            hint = "the login needs the viewUser action (userAdmin or userAdminAnyDatabase) on the database"
            what, label = f"usersInfo for {shown(username)}", conn.features.name
            raise self.statement_failure(exc, (), what=what, hint=hint, label=label) from None
        users = [u for u in reply.get("users", []) if u.get("user") == username]
        if not users:
            return None
        user = users[0]
        mechanisms = user.get("mechanisms")
        return UserRecord(
            roles=list(user.get("roles", [])),
            mechanisms=list(mechanisms) if mechanisms else None,
            restrictions=list(user.get("authenticationRestrictions", [])),
        )

    def server_name(self, conn: Session) -> str:
        return conn.features.name

    def change_privileges(self, conn: Session, username: str, *, as_master: bool) -> str | None:
        """A master must see the user's record to clone it; whether a user may change its own
        password (MongoDB: the changeOwnPassword action) shows only when it tries."""
        if not as_master:
            return NOT_CHECKED
        try:
            record = self.user_record(conn, username)
        except RotationError as exc:
            return str(exc)
        return None if record else f"no user {shown(username)} in database {conn.db.name!r}"

    def session_user(self, conn: Session) -> str | None:
        """The user authenticated against the session's database (connectionStatus)."""
        with self.statement_errors(what="the test command", label=conn.features.name):
            status = conn.db.command("connectionStatus")
        users = status.get("authInfo", {}).get("authenticatedUsers", [])
        found = [u.get("user") for u in users if isinstance(u, Mapping) and u.get("db") == conn.db.name]
        return str(found[0]) if found else None

    def _command(self, conn: Session, command: SON[str, Any], password: str) -> None:
        verb, name = next(iter(command.items()))
        with self.statement_errors(password, what=f"{verb} for {shown(name)}", label=conn.features.name):
            conn.db.command(command)


def _role_keys(roles: Iterable[Any]) -> list[Role]:
    """`{role, db}` documents as pairs; anything else (a server's oddity) is left out."""
    return [
        (role["role"], role["db"])
        for role in roles
        if isinstance(role, Mapping) and isinstance(role.get("role"), str) and isinstance(role.get("db"), str)
    ]


def _roles_text(roles: Iterable[Role]) -> str:
    return ", ".join(f"{role!r} on {db!r}" for role, db in sorted(roles))


def _admin_privileges(entry: Mapping[str, Any]) -> list[str]:
    """What a custom role's privileges may do that administers users or the server."""
    found: set[str] = set()
    for privilege in [*entry.get("privileges", []), *entry.get("inheritedPrivileges", [])]:
        if not isinstance(privilege, Mapping):
            continue
        actions = {a for a in privilege.get("actions", []) if isinstance(a, str)}
        found |= actions & ADMIN_ACTIONS
        resource = privilege.get("resource")
        if not isinstance(resource, Mapping) or not actions:
            continue
        if resource.get("anyResource"):
            found.add("act on anyResource")
        elif resource.get("collection") in _CREDENTIAL_COLLECTIONS:
            found.add(f"act on {resource['collection']}")
    return sorted(found)


handler = DocumentDBRotator().handle
