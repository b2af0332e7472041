"""Issue 11's attacks on alternating Redshift users, live: the real engine and redshift-connector
against PostgreSQL through the test shims, where the SQL is common (what only Redshift has, RBAC
roles, is in tests/unit/test_redshift_statements.py).

The attacker writes one app secret (or creates one and attaches the shared rotator). Each test
runs the whole rotation and then proves that the master and the victim still log in with their own
passwords and that no user, membership, attribute or grant was made.

The last tests put a hostile listener of our own on the host and port: it refuses TLS, asks for
the password in clear text, and records every byte it receives.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import pytest
from redshift_connector.core import Connection
from redshift_connector.error import InterfaceError

from rotators.engines.redshift import CleartextPasswordRefusedError, RedshiftRotator, handler
from rotators.errors import (
    DatabaseUnavailableError,
    LoginError,
    PrivilegeError,
    TargetMismatchError,
)
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import STEPS, Admin, Watched, invoke, redshift_secret
from tests.listeners import Listener, read_exactly
from tests.redshift_shims import SSL_REQUEST, StartupParameterProxy

pytestmark = pytest.mark.usefixtures("redshift_shims")


# -- the cast: a superuser master, a victim with privileges, and what the attacker can log in as -----
class Cast:
    def __init__(
        self,
        sm: LocalSecretsManager,
        admin: Admin,
        proxy: StartupParameterProxy,
        tag: str,
        new_password: Callable[[], str],
    ) -> None:
        self.sm, self.admin, self.proxy, self.tag = sm, admin, proxy, tag
        self.new_password = new_password
        self.passwords: dict[str, str] = {}
        self.schema = f"wh_{tag}"
        self.master = f"Master_{tag}"  # mixed case, as Redshift's folding meets PostgreSQL's
        self.user(self.master, "SUPERUSER")
        self.master_arn = sm.create_secret(
            self.master, redshift_secret(proxy, self.master, self.passwords[self.master])
        )
        admin.sql(f'CREATE SCHEMA "{self.schema}"')
        admin.sql(f'CREATE TABLE "{self.schema}".payroll (id int)')
        admin.sql(f'CREATE TABLE "{self.schema}".public_notes (id int)')

    def user(self, name: str, *attributes: str) -> str:
        self.passwords[name] = self.new_password()
        self.admin.create_role(name, self.passwords[name], *attributes)
        return name

    def app_secret(self, username: str, password: str, **extra: Any) -> str:
        value = redshift_secret(self.proxy, username, password, masterarn=self.master_arn, **extra)
        return self.sm.create_secret(f"attack-{username}-{len(extra)}", value)

    def snapshot(self) -> list[Any]:
        """Every role of this test with its attributes, every membership, and every grant on the
        test's schema, its tables and the database."""
        like = f"%{self.tag.lower()}%"
        return [
            self.admin.sql(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles "
                "WHERE lower(rolname) LIKE %s ORDER BY 1",
                (like,),
            ),
            self.admin.sql(
                "SELECT r.rolname, m.rolname, a.admin_option FROM pg_auth_members a "
                "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
                "WHERE lower(r.rolname) LIKE %s OR lower(m.rolname) LIKE %s ORDER BY 1, 2",
                (like, like),
            ),
            self.admin.sql(
                "SELECT c.relname, c.relowner::regrole::text, c.relacl::text FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1",
                (self.schema,),
            ),
            self.admin.sql("SELECT nspacl::text FROM pg_namespace WHERE nspname = %s", (self.schema,)),
            self.admin.sql("SELECT datacl::text FROM pg_database WHERE datname = current_database()"),
        ]

    def assert_everyone_logs_in(self, *names: str) -> None:
        """The master (with its secret's password) and each named user, with their own password."""
        master = self.sm.value(self.master_arn, "AWSCURRENT")
        assert master["password"] == self.passwords[self.master], "the master secret is unchanged"
        for name in (self.master, *names):
            assert self.admin.logs_in(name, self.passwords[name]), f"{name} still logs in"

    def attack_changes_nothing(
        self, username: str, password: str, error: type[Exception], match: str, *logs_in: str
    ) -> None:
        """The attack on an app secret of `username` fails (see `attack`), no user, membership,
        attribute or grant was made, and the master and `logs_in` still log in as before."""
        before = self.snapshot()
        self.attack(self.app_secret(username, password), error, match)
        assert self.snapshot() == before, "no user, membership, attribute or grant was made"
        self.assert_everyone_logs_in(*logs_in)

    def attack(self, arn: str, error: type[Exception], match: str) -> None:
        """The whole rotation, as Secrets Manager would run it: it stops with `error` at setSecret
        (or before), changes no label, and the pending password logs in as nobody it names."""
        token = self.sm.start_rotation(arn)
        labels = self.sm.stages(arn)
        with pytest.raises(error, match=match):
            invoke(handler, arn, token, *STEPS)
        assert self.sm.stages(arn) == labels, "AWSCURRENT stays where it was"
        staged = json.loads(self.sm.client.get_secret_value(SecretId=arn, VersionId=token)["SecretString"])
        for name in {staged["username"], self.master}:
            assert not self.admin.logs_in(name, staged["password"]), "no user took the pending password"


@pytest.fixture
def cast(
    local_sm: LocalSecretsManager,
    admin: Admin,
    redshift_proxy: StartupParameterProxy,
    role_name: str,
    new_password: Callable[[], str],
) -> Cast:
    return Cast(local_sm, admin, redshift_proxy, role_name[4:], new_password)


# -- 1 and 2: the master's own user, by its clone's name or its own, in any case --------------------------
@pytest.mark.parametrize("spelling", [str, str.lower, str.upper])
def test_the_masters_clone_name_does_not_reach_the_masters_password(
    cast: Cast, spelling: Callable[[str], str]
) -> None:
    """`<master>_clone`'s partner is the master. Even a user of that name that the attacker can
    log in as (here: made for the test) does not make the master change its own password."""
    name = cast.user(spelling(cast.master) + "_clone")
    cast.attack_changes_nothing(name, cast.passwords[name], TargetMismatchError, "master user", name)


@pytest.mark.parametrize("spelling", [str, str.lower, str.upper])
def test_the_masters_own_name_makes_no_superuser_clone(cast: Cast, spelling: Callable[[str], str]) -> None:
    """Not even a `<master>_clone` appears: the snapshot sees every role of the test."""
    cast.attack_changes_nothing(spelling(cast.master), "Guessed-Pass-1", TargetMismatchError, "master user")


# -- 3: an unrelated `victim_clone`, and a pre-existing privileged clone ---------------------------------
def test_an_unrelated_victim_clone_does_not_get_the_victims_password(cast: Cast) -> None:
    victim = cast.user(f"victim_{cast.tag}")
    cast.admin.sql(f'GRANT USAGE ON SCHEMA "{cast.schema}" TO "{victim}"')
    cast.admin.sql(f'GRANT SELECT ON "{cast.schema}".payroll TO "{victim}"')
    mine = cast.user(f"{victim}_clone")  # the attacker's own user, which happens to have that name
    lacks = rf"'{mine}' lacks what '{victim}' holds: .*SELECT ON TABLE"
    cast.attack_changes_nothing(mine, cast.passwords[mine], PrivilegeError, lacks, victim, mine)


def test_a_pre_existing_privileged_clone_is_not_taken_over(cast: Cast) -> None:
    """`ops_clone` exists with CREATEDB, a group and a grant that `ops` lacks: the owner of the
    `ops` secret would get it, attributes and all."""
    ops = cast.user(f"ops_{cast.tag}")
    cast.admin.sql(f'GRANT SELECT ON "{cast.schema}".public_notes TO "{ops}"')
    group = f"dba_{cast.tag}"
    cast.admin.sql(f'CREATE ROLE "{group}" NOLOGIN')
    privileged = cast.user(f"{ops}_clone", "CREATEDB")
    cast.admin.sql(f'ALTER GROUP "{group}" ADD USER "{privileged}"')
    cast.admin.sql(f'GRANT SELECT ON "{cast.schema}".payroll TO "{privileged}"')
    holds = rf"'{privileged}' holds what '{ops}' does not: CREATEDB, group {group}"
    cast.attack_changes_nothing(ops, cast.passwords[ops], PrivilegeError, holds, ops, privileged)


def test_a_pre_existing_clone_with_less_is_completed_as_before(cast: Cast) -> None:
    """The other side of the rule: a clone that holds only some of what the original holds is
    the rotator's to complete."""
    app = cast.user(f"app_{cast.tag}")
    cast.admin.sql(f'GRANT USAGE ON SCHEMA "{cast.schema}" TO "{app}"')
    cast.admin.sql(f'GRANT SELECT ON "{cast.schema}".payroll TO "{app}"')
    clone = cast.user(f"{app}_clone")
    arn = cast.app_secret(app, cast.passwords[app])
    invoke(handler, arn, cast.sm.start_rotation(arn))
    current = cast.sm.value(arn, "AWSCURRENT")
    assert current["username"] == clone and cast.admin.logs_in(clone, current["password"])
    held = cast.admin.sql(f"SELECT has_table_privilege(%s, '\"{cast.schema}\".payroll', 'SELECT')", (clone,))
    assert held == [(True,)]


# -- administrative power: refused unless the secret opts in ---------------------------------------------
def test_a_superuser_source_is_refused_unless_the_secret_opts_in(cast: Cast) -> None:
    boss = cast.user(f"boss_{cast.tag}", "SUPERUSER")
    refused = rf"'{boss}' is a superuser \(CREATEUSER\).*allow_privileged_user"
    cast.attack_changes_nothing(boss, cast.passwords[boss], PrivilegeError, refused, boss)

    opted_in = cast.app_secret(f"{boss}", cast.passwords[boss], allow_privileged_user=True)
    invoke(handler, opted_in, cast.sm.start_rotation(opted_in))
    current = cast.sm.value(opted_in, "AWSCURRENT")
    assert current["username"] == f"{boss}_clone" and cast.admin.logs_in(
        current["username"], current["password"]
    )
    cast.assert_everyone_logs_in(boss)


# -- the confused-deputy guard: an AWSCURRENT that does not log in -----------------------------------------
def test_an_awscurrent_that_does_not_log_in_makes_the_master_change_nothing(cast: Cast) -> None:
    victim = cast.user(f"victim_{cast.tag}")
    cast.attack_changes_nothing(
        victim, "Guessed-Pass-1", LoginError, f"does not log in as '{victim}'", victim
    )


# -- a hostile listener: refuses TLS, asks for the password in clear text, records what arrives -----------
class HostileListener(Listener):
    """127.0.0.1:`port`. Answers 'N' to every SSLRequest and AuthenticationCleartextPassword to every
    startup, then records every byte until the client hangs up. A startup for `relay_user` is sent
    on to `relay` instead, so that user's plaintext login works (a man in the middle)."""

    def __init__(self, relay_user: str | None = None, relay: tuple[str, int] | None = None) -> None:
        self.relay_user, self.relay = relay_user, relay
        self.ssl_requests = 0
        self.startups: list[str] = []  # the user name of each startup it answered itself
        self.received = b""  # everything the clients sent after the request for the password
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            try:
                length, code = struct.unpack("!ii", read_exactly(client, 8))
                if code == SSL_REQUEST:
                    self.ssl_requests += 1
                    client.sendall(b"N")
                    length, code = struct.unpack("!ii", read_exactly(client, 8))
                body = read_exactly(client, length - 8)
                fields = body.split(b"\0")
                user = dict(zip(fields[0::2], fields[1::2], strict=False)).get(b"user", b"").decode()
                if self.relay and user == self.relay_user:
                    self._forward(client, struct.pack("!ii", length, code) + body)
                    return
                self.startups.append(user)
                client.sendall(b"R" + struct.pack("!ii", 8, 3))
                client.settimeout(2)
                while chunk := client.recv(65536):
                    self.received += chunk
            except (OSError, struct.error):
                pass  # the client hung up

    def _forward(self, client: socket.socket, startup: bytes) -> None:
        assert self.relay is not None
        with socket.create_connection(self.relay, timeout=5) as upstream:
            upstream.sendall(startup)
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
            _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def listener() -> Iterator[HostileListener]:
    with HostileListener() as found:
        yield found


def hostile_secret(listener: HostileListener, username: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "redshift",
        "host": listener.host,
        "port": listener.port,
        "username": username,
        "password": password,
        "dbname": "dev",
        **extra,
    }


def test_the_listener_does_get_the_password_from_the_unguarded_driver(listener: HostileListener) -> None:
    """The control: redshift-connector as shipped answers the request with the password."""
    with pytest.raises(InterfaceError):
        Connection(
            user="someone", password="Control-Pass-1", database="dev", host=listener.host,
            port=listener.port, ssl=False, timeout=5,
        )  # fmt: skip
    assert b"p" + struct.pack("!i", 4 + len("Control-Pass-1") + 1) + b"Control-Pass-1\0" in listener.received


def test_a_login_without_tls_never_sends_the_password_in_clear(
    listener: HostileListener, leak_check: Watched
) -> None:
    password = "Never-Sent-2x"
    leak_check.add(password)
    value = RedshiftRotator().parse(
        json.dumps(hostile_secret(listener, "app", password, ssl=False)), where="test"
    )
    with (
        pytest.raises(
            CleartextPasswordRefusedError,
            match="in clear text on a connection without TLS, and nothing was sent",
        ) as caught,
        RedshiftRotator().connect(value, "app", password),
    ):
        pass
    assert isinstance(caught.value, DatabaseUnavailableError)
    assert listener.startups == ["app"], "it did ask"
    assert listener.received == b"", "and got nothing: not the password, not any message"


def test_the_master_password_never_reaches_a_listener_named_by_the_app_secret(
    local_sm: LocalSecretsManager, admin: Admin, redshift_proxy: StartupParameterProxy, role_name: str,
    new_password: Callable[[], str],
) -> None:  # fmt: skip
    """The attacker's app secret says "ssl": false and names its own listener; the master secret
    names the same host and port (the rotator insists on it). The app's plaintext login is relayed
    to the real server, so the guard lets the master act; the master then logs in with its own
    secret's TLS, which the listener refuses: the master password is never sent."""
    app, app_password = role_name, new_password()
    admin.create_role(app, app_password)
    master, master_password = f"master_{role_name}", new_password()
    admin.create_role(master, master_password, "SUPERUSER")
    with HostileListener(relay_user=app, relay=(redshift_proxy.host, redshift_proxy.port)) as listener:
        master_arn = local_sm.create_secret(master, hostile_secret(listener, master, master_password))
        arn = local_sm.create_secret(
            app,
            hostile_secret(listener, app, app_password, ssl=False, masterarn=master_arn, dbname="postgres"),
        )
        token = local_sm.start_rotation(arn)
        invoke(handler, arn, token, "createSecret")
        labels = local_sm.stages(arn)
        with pytest.raises(DatabaseUnavailableError, match="Server refuses SSL"):
            invoke(handler, arn, token, "setSecret")
        assert listener.ssl_requests == 1, "the master asked for TLS, its own setting"
        assert master.encode() not in listener.received and master_password.encode() not in listener.received
        assert listener.startups == [], "no startup, let alone a password, for the master"

        # The same master secret with TLS off by its own choice: the listener asks for the
        # password in clear, and gets nothing.
        local_sm.client.put_secret_value(
            SecretId=master_arn,
            SecretString=json.dumps(hostile_secret(listener, master, master_password, ssl=False)),
        )
        with pytest.raises(CleartextPasswordRefusedError, match="nothing was sent"):
            invoke(handler, arn, token, "setSecret")
        assert listener.startups == [master]
        assert master_password.encode() not in listener.received and listener.received == b""
        assert local_sm.stages(arn) == labels
        assert admin.logs_in(master, master_password) and admin.logs_in(app, app_password)


def test_a_single_user_without_tls_never_sends_its_password_in_clear(
    local_sm: LocalSecretsManager, listener: HostileListener, new_password: Callable[[], str]
) -> None:
    password = new_password()
    arn = local_sm.create_secret("plain", hostile_secret(listener, "app", password, ssl=False))
    token = local_sm.start_rotation(arn)
    invoke(handler, arn, token, "createSecret")
    with pytest.raises(CleartextPasswordRefusedError, match="nothing was sent"):
        invoke(handler, arn, token, "setSecret")
    assert listener.startups == ["app"] and listener.received == b""


def test_a_pending_version_without_tls_is_refused_before_any_connection(
    local_sm: LocalSecretsManager, listener: HostileListener, new_password: Callable[[], str]
) -> None:
    """Single user: a staged AWSPENDING with "ssl": false would have logged in with AWSCURRENT's
    password the way it says; it is refused before anything connects."""
    arn = local_sm.create_secret("weaker", hostile_secret(listener, "app", new_password()))
    token = local_sm.start_rotation(arn)
    staged = hostile_secret(listener, "app", "Pending-Pass-1x", ssl=False)
    local_sm.client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(staged),
        VersionStages=["AWSPENDING"],
    )  # fmt: skip
    with pytest.raises(TargetMismatchError, match="weaker TLS"):
        invoke(handler, arn, token, "setSecret")
    assert listener.ssl_requests == 0 and listener.startups == [] and listener.received == b""
