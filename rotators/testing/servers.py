"""What every throwaway server shares: a free port, the OS user it runs as, a process started,
waited for and stopped, and a factory that prepares one template and copies it per server, so
that a new server starts in well under a second and `close()` leaves nothing behind."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from rotators.testing.tls import CertificateAuthority

READY_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_as(os_user: str, package: str) -> str | None:
    """Who runs a server: ourselves, unless we are root (database servers refuse to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(os_user)
    except KeyError:
        raise RuntimeError(
            f"Running as root needs a `{os_user}` OS user (installed with {package})"
        ) from None
    return os_user


def chown(path: Path, user: str | None) -> None:
    """Hand a tree to the server's OS user (nothing to do when we run it ourselves)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class ServerProcess:
    """A server's process: started, waited for until it says it is ready, and stopped the way a
    database really goes away (its connections cut). Every server answers on `host`/`port` to its
    superuser with `password`, over TLS signed by `ca`."""

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    port: int
    password: str = field(repr=False)
    ca: CertificateAuthority
    _: KW_ONLY
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def _spawn(
        self, command: Sequence[str], *, log: Path, user: str | None = None, cwd: Path | None = None
    ) -> None:
        with log.open("ab") as logfile:
            self.process = subprocess.Popen(command, stdout=logfile, stderr=logfile, user=user, cwd=cwd)

    def _wait_until(self, ready: Callable[[], bool], log: Path) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"{self.name} exited at start: see {log}")
            if ready():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not become ready within {READY_SECONDS} s: see {log}")

    def stop(self, *, crash: bool = False) -> None:
        """The server's own fast shutdown, or with `crash` a SIGKILL."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if crash else self.stop_signal)
        try:
            self.process.wait(timeout=READY_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class Stoppable(Protocol):
    def stop(self, *, crash: bool = False) -> None: ...


S = TypeVar("S", bound=Stoppable)


class ServerFactory(Generic[S]):
    """One temporary root holding a CA, a template the subclass prepares, and a copy of it per
    server; every server shares the admin `password`."""

    prefix: ClassVar[str]
    crash_on_close: ClassVar[bool] = False  # the data is thrown away: a clean stop may be skipped

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.root.chmod(0o755)
        self.password = secrets.token_urlsafe(24)  # no quote or backslash: safe in a SQL literal
        self.ca = CertificateAuthority.create(self.root / "ca")
        self.template = self.root / "template"
        self._servers: list[S] = []

    def _new_home(self) -> Path:
        home = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        home.chmod(0o755)
        return home

    def _started(self, server: S) -> S:
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            server.stop(crash=self.crash_on_close)
        shutil.rmtree(self.root, ignore_errors=True)
