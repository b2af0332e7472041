"""`rotators local`: what the sample events in events/ need, kept running in the background.

`start` launches a detached process (`serve`, below) that runs a throwaway PostgreSQL (and with
`--mariadb` a MariaDB), both with password logins and TLS from a local CA, and moto's Secrets
Manager on the address events/env.json names. It stores the demo secrets, turns rotation on and
starts a rotation with the token the events carry, then waits for `stop`, which ends it and
removes every file it made. `restart-rotation` starts that rotation again, so the events replay.

The events name their secret by name (`demo/app`), not by ARN: Secrets Manager takes either as
SecretId, and an ARN ends in a random suffix that a new local endpoint never reproduces.
Passwords are never printed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from rotators.secrets import AWSCURRENT
from rotators.testing.secretsmanager import LocalSecretsManager

# The ClientRequestToken of every sample event (a version id, not a password).
EVENTS_TOKEN = "11111111-2222-4333-8444-555555555555"  # noqa: S105
HOST, PORT = "127.0.0.1", 5000  # SECRETS_MANAGER_ENDPOINT in events/env.json
ENDPOINT = f"http://{HOST}:{PORT}"
STATE_DIR = Path(tempfile.gettempdir()) / f"rotators-local-{os.getuid()}"
STATE_FILE = STATE_DIR / "state.json"
LOG_FILE = STATE_DIR / "local.log"
READY_SECONDS = 120
SAM_CA = "rotators-local-ca.crt"  # with --sam, in each built function: /var/task/<this> in the container


@dataclass(frozen=True)
class EventSet:
    """A folder of sample events: the function they invoke and the secret they rotate."""

    folder: str
    function: str
    secret: str
    username: str
    master: str | None = None  # the master secret's name, for alternating users

    def commands(self) -> list[str]:
        from rotators.rotation import STEPS

        return [
            f"rotators invoke {self.function} -e {self.folder}/{step.value}.json --env-vars events/env.json"
            for step in STEPS
        ]


@dataclass(frozen=True)
class LocalEngine:
    """An engine with a local server: its secrets' `engine` value and its events' places."""

    secret_engine: str
    function: str
    folder: str
    prefix: str  # of the secret names

    def event_sets(self) -> tuple[EventSet, EventSet]:
        alternating = f"{self.prefix}/alternating"
        return (
            EventSet(self.folder, self.function, f"{self.prefix}/app", "app"),
            EventSet(
                f"{self.folder}/alternating", self.function, f"{alternating}/app", "alt_app",
                master=f"{alternating}/master",
            ),
        )  # fmt: skip


POSTGRESQL = LocalEngine("postgres", "PostgreSQLRotator", "events", "demo")
MARIADB = LocalEngine("mariadb", "MySQLRotator", "events/mysql", "demo/mysql")


class EventsEndpoint(LocalSecretsManager):
    """The Secrets Manager the sample events talk to: moto on the fixed address events/env.json
    names, in the region `rotators invoke` signs its calls for (moto keeps one state per region)."""

    def __init__(self, region: str, rotation_lambda_arn: str | None = None, server: Any = None) -> None:
        # Not LocalSecretsManager's: that one starts its own server on a free port.
        self.endpoint_url = ENDPOINT
        self.region = region
        self._server = server
        self.client = self._client("secretsmanager")
        self.rotation_lambda_arn = rotation_lambda_arn or self._placeholder_lambda()

    @classmethod
    def serve(cls, region: str) -> EventsEndpoint:
        """Start moto's server here; RotateSecret calls the placeholder function without Docker."""
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        default_user_config["lambda"] = {"use_docker": False}
        server = ThreadedMotoServer(ip_address=HOST, port=PORT, verbose=False)
        server.start()
        return cls(region, server=server)

    def _client(self, service: str) -> Any:
        import boto3

        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto takes any
        endpoint = {"endpoint_url": self.endpoint_url, "region_name": self.region}
        return boto3.client(service, **endpoint, **keys)  # type: ignore[call-overload]

    def restart_rotation(self, secret_id: str) -> None:
        """Start the events' rotation again. moto, unlike Secrets Manager, accepts a token that is
        already a version and replaces that version with an empty AWSPENDING one; were it still
        AWSCURRENT, the secret would lose its current value. So first its value moves to a new
        version that takes AWSCURRENT, and every label leaves the token's version."""
        held = self.stages(secret_id, marks=True).get(EVENTS_TOKEN, [])
        if AWSCURRENT in held:
            value = self.client.get_secret_value(SecretId=secret_id, VersionStage=AWSCURRENT)["SecretString"]
            self.client.put_secret_value(
                SecretId=secret_id, ClientRequestToken=str(uuid.uuid4()), SecretString=value,
                VersionStages=[AWSCURRENT],
            )  # fmt: skip
            held = self.stages(secret_id, marks=True).get(EVENTS_TOKEN, [])
        for label in held:
            self.client.update_secret_version_stage(
                SecretId=secret_id, VersionStage=label, RemoveFromVersionId=EVENTS_TOKEN
            )
        self.start_rotation(secret_id, EVENTS_TOKEN)


# -- the accounts of the demo secrets, on each engine's server ----------------------------------
def _postgres_accounts(server: Any, passwords: dict[str, str]) -> None:
    """`app`, the master (CREATEROLE, as RDS makes it) and `alt_app`, which the master may manage."""
    import psycopg
    from psycopg import sql

    create = "CREATE ROLE {} LOGIN {} PASSWORD {}"
    with psycopg.connect(**server.admin_dsn(), autocommit=True) as conn:
        for user, option in (("app", ""), ("demo_master", "CREATEROLE"), ("alt_app", "")):
            password = sql.Literal(passwords[user])
            conn.execute(sql.SQL(create).format(sql.Identifier(user), sql.SQL(option), password))
        # From PostgreSQL 16 on, CREATEROLE alone no longer lets the master set alt_app's password.
        conn.execute("GRANT alt_app TO demo_master WITH ADMIN OPTION")


def _mariadb_accounts(server: Any, passwords: dict[str, str]) -> None:
    """`app` and `alt_app` with a database's rights, the master with all (as RDS makes it)."""
    import pymysql

    app = "SELECT, INSERT ON `app`.* TO %s@%s"
    grants = {"app": app, "alt_app": app, "demo_master": "ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION"}
    with pymysql.connect(**server.admin_kwargs()) as conn, conn.cursor() as cursor:
        for user, grant in grants.items():
            cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, HOST, passwords[user]))
            cursor.execute(f"GRANT {grant}", (user, HOST))


ACCOUNTS: dict[str, Callable[[Any, dict[str, str]], None]] = {
    "postgres": _postgres_accounts,
    "mariadb": _mariadb_accounts,
}


def _factory(engine: LocalEngine) -> Any:
    if engine is MARIADB:
        from rotators.testing.mariadb import MariaDBFactory

        return MariaDBFactory()
    from rotators.testing.postgres import PostgresFactory

    return PostgresFactory()


def _store_secrets(engine: LocalEngine, server: Any, endpoint: EventsEndpoint, ca: str) -> None:
    """The accounts, their secrets and, for each event set, rotation on with the events' token."""
    users = ("app", "alt_app", "demo_master")
    passwords = {user: secrets.token_urlsafe(18) for user in users}
    ACCOUNTS[engine.secret_engine](server, passwords)
    common: dict[str, Any] = {"engine": engine.secret_engine, "host": server.host, "port": server.port}
    common |= {"sslrootcert": ca} | ({"dbname": "postgres"} if engine is POSTGRESQL else {})
    for event_set in engine.event_sets():
        value = {**common, "username": event_set.username, "password": passwords[event_set.username]}
        if event_set.master is not None:
            master = {**common, "username": "demo_master", "password": passwords["demo_master"]}
            value["masterarn"] = endpoint.create_secret(event_set.master, master)
        endpoint.create_secret(event_set.secret, value)
        endpoint.start_rotation(event_set.secret, EVENTS_TOKEN)


def _sam_build(engine: LocalEngine) -> Path:
    return Path(".aws-sam", "build", engine.function)


def _sam_ca(engine: LocalEngine, ca: Path, copies: list[str]) -> str:
    """The CA copied into the function's `sam build` output, where its container finds it."""
    built = _sam_build(engine)
    shutil.copyfile(ca, built / SAM_CA)
    copies.append(str((built / SAM_CA).resolve()))
    return f"/var/task/{SAM_CA}"


# -- the background process ----------------------------------------------------------------------
def serve(engines: list[LocalEngine], region: str, sam: bool) -> None:
    """Run everything until SIGTERM, then stop it and remove every file it made."""
    stopping = threading.Event()
    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, lambda *_: stopping.set())
    copies: list[str] = []
    with ExitStack() as stack:
        stack.callback(_remove, copies)
        endpoint = EventsEndpoint.serve(region)
        stack.callback(endpoint.close)
        servers = []
        for engine in engines:
            factory = _factory(engine)
            stack.callback(factory.close)
            server = factory.start()
            ca = _sam_ca(engine, factory.ca.cert_path, copies) if sam else str(factory.ca.cert_path)
            _store_secrets(engine, server, endpoint, ca)
            servers.append(
                {"name": server.name, "address": f"{server.host}:{server.port}", "pid": server.process.pid,
                 "ca": ca, "root": str(factory.root)}
            )  # fmt: skip
        state = {
            "pid": os.getpid(), "region": region, "rotation_lambda_arn": endpoint.rotation_lambda_arn,
            "servers": servers, "event_sets": [asdict(s) for e in engines for s in e.event_sets()],
            "sam_copies": copies,
        }  # fmt: skip
        partial = STATE_DIR / "state.partial"
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(STATE_FILE)  # whole or absent: `start` waits for it
        while not stopping.wait(0.2):
            pass
    shutil.rmtree(STATE_DIR, ignore_errors=True)


# -- the commands ----------------------------------------------------------------------------------
def is_running(pid: int) -> bool:
    """A process that exists and has not exited (an exited one no parent reaps is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not Path("/proc").is_dir()  # no /proc (macOS): kill(pid, 0) said it exists


def read_state() -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return None
    return found


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens there (a bind as the server would do it, reusing TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _clean_up(state: dict[str, Any] | None) -> None:
    """What a background process that did not stop cleanly left: it and the database servers it
    started, their files and the state directory."""
    if state is not None:
        with_servers = [state["pid"], *(server["pid"] for server in state["servers"])]
        for pid in with_servers:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        _remove([*(server["root"] for server in state["servers"]), *state["sam_copies"]])
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def _remove(paths: list[str]) -> None:
    for each in map(Path, paths):
        if each.is_dir():
            shutil.rmtree(each, ignore_errors=True)
        else:
            each.unlink(missing_ok=True)


def _log_tail(lines: int = 25) -> str:
    try:
        return "\n".join(LOG_FILE.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start(args: Any, out: IO[str], err: IO[str]) -> int:
    from rotators.cli.invoke import default_region

    state = read_state()
    if state is not None and is_running(state["pid"]):
        print(
            f"rotators local: already running (process {state['pid']}, Secrets Manager {ENDPOINT}); "
            "`rotators local stop` ends it",
            file=err,
        )
        return 1
    _clean_up(state)  # what a process killed without `stop` left
    if port_in_use(HOST, PORT):
        print(
            f"rotators local: {HOST}:{PORT}, the Secrets Manager address events/env.json names, is in use "
            "by another process: stop it (a moto_server?) and start again",
            file=err,
        )
        return 1
    unbuilt = [str(_sam_build(engine)) for engine in _engines(args) if not _sam_build(engine).is_dir()]
    if args.sam and unbuilt:
        print(f"rotators local: --sam needs `sam build` first: no {', '.join(unbuilt)}", file=err)
        return 1
    region = default_region(args.region)
    STATE_DIR.mkdir(mode=0o700)
    command = [sys.executable, "-m", "rotators.cli.local", "--region", region]
    command += ["--mariadb"] * args.mariadb + ["--sam"] * args.sam
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + READY_SECONDS
    while (state := read_state()) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"rotators local: the servers did not start:\n{_log_tail()}", file=err)
            if process.poll() is None:  # too slow: end it and the servers it started (its own group)
                os.killpg(process.pid, signal.SIGKILL)
            _clean_up(None)
            return 1
        time.sleep(0.1)
    _print_started(state, out)
    return 0


def _print_started(state: dict[str, Any], out: IO[str]) -> None:
    print(f"Running in the background as process {state['pid']} (log: {LOG_FILE}):", file=out)
    print(f"  Secrets Manager  {ENDPOINT} (moto, region {state['region']}): events/env.json's", file=out)
    for server in state["servers"]:
        print(f"  {server['name']:<16} {server['address']}, password logins, TLS: {server['ca']}", file=out)
    print(f"\nRotation on and started with the events' token {EVENTS_TOKEN} for:", file=out)
    event_sets = [EventSet(**found) for found in state["event_sets"]]
    for each in event_sets:
        master = f", master {each.master}" if each.master else ""
        print(f"  {each.folder + '/':<28} {each.secret} (user {each.username}{master})", file=out)
    _print_next(event_sets[0], out)


def _print_next(first: EventSet, out: IO[str]) -> None:
    import boto3

    print("\nNext, the four steps (other folders: their -e path; MySQLRotator for events/mysql/):", file=out)
    for command in first.commands():
        print(f"  {command}", file=out)
    if boto3.session.Session().get_credentials() is None:
        print(
            "  (no AWS credentials here; the local endpoint takes any: "
            "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
            file=out,
        )
    print("Replay them:    rotators local restart-rotation", file=out)
    print("Stop it all:    rotators local stop", file=out)


def restart_rotation(args: Any, out: IO[str], err: IO[str]) -> int:
    state = read_state()
    if state is None or not is_running(state["pid"]):
        print("rotators local: nothing is running: `rotators local start` first", file=err)
        return 1
    endpoint = EventsEndpoint(state["region"], state["rotation_lambda_arn"])
    event_sets = [EventSet(**found) for found in state["event_sets"]]
    for each in event_sets:
        endpoint.restart_rotation(each.secret)
    names = ", ".join(each.secret for each in event_sets)
    print(f"Started the rotation again with the events' token {EVENTS_TOKEN}: {names}", file=out)
    _print_next(event_sets[0], out)
    return 0


def stop(args: Any, out: IO[str], err: IO[str]) -> int:
    state = read_state()
    if state is None:
        _clean_up(None)  # a start that failed half-way
        print("Nothing to stop: no local servers are running.", file=out)
        return 0
    pid = state["pid"]
    if is_running(pid):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 60):
        print(f"rotators local: process {pid} did not stop within 60 s: killing it", file=err)
    _clean_up(state if STATE_DIR.exists() else None)
    print("Stopped: the servers, the Secrets Manager endpoint and their files are gone.", file=out)
    return 0


def _engines(args: Any) -> list[LocalEngine]:
    return [POSTGRESQL, MARIADB] if args.mariadb else [POSTGRESQL]


COMMANDS: dict[str, Callable[[Any, IO[str], IO[str]], int]] = {
    "start": start,
    "restart-rotation": restart_rotation,
    "stop": stop,
}


def add_arguments(parser: Any) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    begin = actions.add_parser("start", help="start the servers and secrets the sample events need")
    begin.add_argument("--mariadb", action="store_true", help="a MariaDB too, for events/mysql/")
    begin.add_argument(
        "--sam",
        action="store_true",
        help="for sam local invoke: copy the CA into each built function (run sam build first)",
    )
    begin.add_argument("--region", help="the region of the secrets (default: the one rotators invoke uses)")
    actions.add_parser("restart-rotation", help="start the events' rotation again, to replay them")
    actions.add_parser("stop", help="stop everything `start` started and remove its files")


def run(args: Any, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """The `rotators local` command."""
    return COMMANDS[args.action](args, out or sys.stdout, err or sys.stderr)


def _serve_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="rotators.cli.local")
    parser.add_argument("--region", required=True)
    parser.add_argument("--mariadb", action="store_true")
    parser.add_argument("--sam", action="store_true")
    args = parser.parse_args(argv)
    try:
        serve(_engines(args), args.region, args.sam)
    except RuntimeError as exc:  # a missing server binary, say: `start` shows this line
        print(f"rotators local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_serve_main(sys.argv[1:]))
