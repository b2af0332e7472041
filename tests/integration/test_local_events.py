"""The sample events as the README runs them (issue 19): `rotators local start`, the four
`rotators invoke` commands read out of README.md, a replay, then `rotators local stop`, each one
the installed `rotators` script run from the repository root, as a user would.

Every test here needs 127.0.0.1:5000, the address events/env.json names: one xdist group.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rotators.cli.local import ENDPOINT, EVENTS_TOKEN, HOST, MARIADB, PORT, POSTGRESQL, STATE_DIR, EventSet
from rotators.secrets import AWSCURRENT, AWSPREVIOUS

ROOT = Path(__file__).resolve().parents[2]
ROTATORS = Path(sys.executable).with_name("rotators")
REGION = "eu-west-1"  # not the default one: the secrets must be where `rotators invoke` looks
STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]


@dataclass(frozen=True)
class Readme:
    """The commands of the first sh block of "## Run a rotator locally", as printed there."""

    start: str
    invokes: list[str]
    restart: str
    stop: str

    @classmethod
    def read(cls) -> Readme:
        section = (ROOT / "README.md").read_text().split("\n## Run a rotator locally\n", 1)[1]
        block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
        start, *invokes, restart, stop = [line.partition("  #")[0].strip() for line in block.splitlines()]
        steps = [re.findall(r" -e events/(\w+)\.json ", command) for command in invokes]
        assert steps == [[step] for step in STEPS], "the four steps, in order"
        return cls(start, invokes, restart, stop)


@dataclass(frozen=True)
class Scenario:
    """A folder of events (its function and secret), what `start` needs for it, and whether the
    test replays it."""

    events: EventSet
    start_options: str = ""
    replayed: bool = True

    @property
    def alternating(self) -> bool:
        return self.events.master is not None

    def invokes(self, readme: Readme) -> list[str]:
        """The README's four commands, aimed at this folder and function."""
        folder, function = self.events.folder, self.events.function
        return [
            command.replace(" -e events/", f" -e {folder}/").replace("PostgreSQLRotator", function)
            for command in readme.invokes
        ]


SINGLE_USER, ALTERNATING_USERS = POSTGRESQL.event_sets()
SCENARIOS = [
    Scenario(SINGLE_USER),
    Scenario(ALTERNATING_USERS),
    # Its replay is the PostgreSQL one's code: once keeps this file under a minute.
    Scenario(MARIADB.event_sets()[0], " --mariadb", replayed=False),
]


def user_environment() -> dict[str, str]:
    """A user's shell: made-up credentials (the README's export), a region, no AWS config files and
    none of the suite's own endpoint settings."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "SECRETS_MANAGER_", "ROTATORS_", "POWERTOOLS_"))
    }
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    return {**kept, **aws, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@dataclass
class Shell:
    """Runs `rotators ...` command lines from the repository root and keeps what they printed."""

    printed: list[str] = field(default_factory=list)

    def run(self, command: str, *, code: int = 0) -> subprocess.CompletedProcess[str]:
        program, *arguments = shlex.split(command)
        assert program == "rotators", command
        done = subprocess.run(
            [str(ROTATORS), *arguments], cwd=ROOT, env=user_environment(), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        self.printed += [done.stdout, done.stderr]
        assert done.returncode == code, f"{command}: exit {done.returncode}\n{done.stderr[-3000:]}"
        return done


@pytest.fixture
def shell() -> Iterator[Shell]:
    """Nothing of `rotators local` before; whatever a test started is stopped after, pass or fail.
    One test at a time holds the events' port, whichever pytest-xdist worker runs it."""
    with (Path(tempfile.gettempdir()) / "rotators-local-tests.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert not STATE_DIR.exists(), f"`rotators local` is running already ({STATE_DIR}): stop it first"
        shell = Shell()
        try:
            yield shell
        finally:
            if STATE_DIR.exists():
                shell.run("rotators local stop")


# -- what the servers and the endpoint hold -------------------------------------------------------
def secrets_manager() -> Any:
    """The endpoint `start` runs, in the region the user's shell names."""
    import boto3

    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    endpoint = {"endpoint_url": ENDPOINT, "region_name": REGION}
    return boto3.client("secretsmanager", **endpoint, **keys)  # type: ignore[call-overload]


def secret_value(secret: str, stage: str) -> dict[str, Any]:
    found = secrets_manager().get_secret_value(SecretId=secret, VersionStage=stage)
    value: dict[str, Any] = json.loads(found["SecretString"])
    return value


def token_stages(secret: str) -> list[str]:
    """The labels of the version the events' token names."""
    return sorted(secrets_manager().describe_secret(SecretId=secret)["VersionIdsToStages"][EVENTS_TOKEN])


def logs_in(value: dict[str, Any]) -> bool:
    """A login with the secret's own TLS settings (verify-full against its sslrootcert)."""
    where = {key: value[key] for key in ("host", "port", "password")} | {"user": value["username"]}
    if value["engine"] == "postgres":
        import psycopg

        try:
            tls = {"sslmode": "verify-full", "sslrootcert": value["sslrootcert"]}
            psycopg.connect(dbname=value["dbname"], connect_timeout=5, **where, **tls).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
            return False
        return True
    import pymysql

    try:
        tls = {"ssl_ca": value["sslrootcert"], "ssl_verify_identity": True}
        pymysql.connect(connect_timeout=5, **where, **tls).close()
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 1045, "refused for its password"
        return False
    return True


# -- what `start` leaves running, and that `stop` leaves nothing --------------------------------
@dataclass(frozen=True)
class Started:
    """What `rotators local start` said it runs: its process (with all below it), ports, files."""

    processes: frozenset[int]
    ports: tuple[int, ...]
    directories: tuple[Path, ...]

    @classmethod
    def from_output(cls, printed: str) -> Started:
        found = re.search(r"in the background as process (\d+)", printed)
        assert found, printed
        ports = (PORT, *map(int, re.findall(rf"{re.escape(HOST)}:(\d+), password logins", printed)))
        roots = [Path(ca).parents[1] for ca in re.findall(r"TLS: (\S+)", printed)]
        return cls(family(int(found[1])), ports, (STATE_DIR, *roots))

    def assert_gone(self) -> None:
        assert not [pid for pid in self.processes if running(pid)], "a process is left"
        assert not [port for port in self.ports if listening(port)], "a port is left"
        assert not [path for path in self.directories if path.exists()], "a file is left"


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, parent, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def family(pid: int) -> frozenset[int]:
    """`pid` and every process below it (the database servers and their workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # gone meanwhile
    found, todo = set(), [pid]
    while todo:
        found.add(current := todo.pop())
        todo += children.get(current, [])
    return frozenset(found)


def running(pid: int) -> bool:
    """Exists and has not exited (nothing reaps an orphan here: an exited one stays a zombie)."""
    try:
        return _proc_stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


# -- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.events.folder)
def test_readme_commands_rotate_with_the_sample_events_and_replay(shell: Shell, scenario: Scenario) -> None:
    """Start, the four steps, a replay of them, stop: each round's new password logs in, the
    ones before it are refused (with alternating users the previous one still logs in), and
    after `stop` no process, port or file is left."""
    readme, secret = Readme.read(), scenario.events.secret
    started = shell.run(readme.start + scenario.start_options)
    assert all(command in started.stdout for command in readme.invokes), "start prints the README's steps"
    assert "already running" in shell.run(readme.start, code=1).stderr
    leftovers = Started.from_output(started.stdout)

    seen = [secret_value(secret, AWSCURRENT)]
    for round_number in range(2 if scenario.replayed else 1):
        if round_number > 0:
            shell.run(readme.restart)
        for command in scenario.invokes(readme):
            assert shell.run(command).stdout.strip() == "null", "the handler's result"
        current, previous = secret_value(secret, AWSCURRENT), secret_value(secret, AWSPREVIOUS)
        assert AWSCURRENT in token_stages(secret), "the events' rotation finished"
        assert previous == seen[-1]
        assert current["password"] != previous["password"]
        assert logs_in(current)
        assert logs_in(previous) is scenario.alternating, "the old login lasts with alternating users only"
        assert not any(logs_in(older) for older in seen[:-1])
        seen.append(current)

    shell.run(readme.stop)
    leftovers.assert_gone()
    passwords = [value["password"] for value in seen]
    assert not [p for p in passwords if any(p in printed for printed in shell.printed)], "a password printed"


def test_start_names_the_port_in_use_and_leaves_nothing(shell: Shell) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, PORT))
        taken.listen()
        refused = shell.run(Readme.read().start, code=1)
    assert f"{HOST}:{PORT}" in refused.stderr and "in use" in refused.stderr
    assert not STATE_DIR.exists()
