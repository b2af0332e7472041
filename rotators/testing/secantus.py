"""Throwaway MongoDB-wire servers (SecantusDB) with SCRAM authentication and TLS, for the tests.

No MongoDB or DocumentDB server is packaged for this machine. SecantusDB (PyPI `secantusdb`, a
beta) speaks the same wire protocol on WiredTiger, with real SCRAM-SHA-256 and SCRAM-SHA-1,
`createUser`, `updateUser`, `usersInfo` and built-in roles. It only enforces authentication
when started with `--auth`, and users are provisioned before that: the factory does it once
into a template directory (start without `--auth`, create `root`, stop cleanly) and every
server starts from a copy of it, with `--auth` and a certificate from a throwaway CA.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotators.testing.postgres import free_port
from rotators.testing.tls import CertificateAuthority

ROOT_USER = "root"


def _require_secantus() -> None:
    if importlib.util.find_spec("secantus") is None:
        raise RuntimeError("SecantusDB is not installed: run `pip install -e '.[dev]'`, which brings it")


@dataclass
class SecantusServer:
    """One server: `host`/`port`, the `root` user with `password`, TLS signed by `ca`."""

    home: Path
    port: int
    password: str = field(repr=False)
    ca: CertificateAuthority
    host: str = "127.0.0.1"
    tls: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    def start(self, *, auth: bool = True) -> None:
        command = [
            sys.executable, "-m", "secantus", "--host", self.host, "--port", str(self.port),
            "--storage-path", str(self.datadir), "--standalone", "--log-level", "WARNING",
            "--sync-on-commit",  # a user created just before a crash survives it, as on mongod
        ]  # fmt: skip
        if self.tls:
            command += ["--tls-cert-file", str(self.home / "server.crt")]
            command += ["--tls-key-file", str(self.home / "server.key")]
        if auth:
            command.append("--auth")
        logfile = open(self.home / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(command, stdout=logfile, stderr=logfile, cwd=self.home)
        logfile.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import pymongo

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited at start: see {self.home / 'server.log'}")
            try:
                with pymongo.MongoClient(**self._tls(), serverSelectionTimeoutMS=200) as client:
                    client.admin.command("hello")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.05)
        raise RuntimeError("SecantusDB did not become ready within 30 s")

    def stop(self, *, crash: bool = False) -> None:
        """A clean shutdown (SIGTERM, a few seconds), or with `crash` a SIGKILL, as when a
        server really goes away; WiredTiger recovers from its log at the next start."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _tls(self) -> dict[str, Any]:
        if not self.tls:
            return {"host": self.host, "port": self.port, "tls": False}
        return {"host": self.host, "port": self.port, "tls": True, "tlsCAFile": str(self.ca.cert_path)}

    def client(self, username: str = ROOT_USER, password: str | None = None, **options: Any) -> Any:
        """A pymongo client (over verified TLS unless the server has none), as `root` by default."""
        import pymongo

        return pymongo.MongoClient(
            **self._tls(),
            username=username,
            password=self.password if password is None else password,
            authSource=options.pop("authSource", "admin"),
            serverSelectionTimeoutMS=5000,
            retryWrites=False,
            **options,
        )


class SecantusFactory:
    """Makes servers from one provisioned template; remove everything with `close()`."""

    def __init__(self) -> None:
        _require_secantus()
        self.root = Path(tempfile.mkdtemp(prefix="rotators-secantus-"))
        self.password = secrets.token_urlsafe(24)
        self.ca = CertificateAuthority.create(self.root / "ca")
        self.template = self.root / "template"
        self._servers: list[SecantusServer] = []
        self._provision()

    def _provision(self) -> None:
        """`root` is created while auth is off, then the server stops cleanly so it can be copied."""
        self.template.mkdir()
        self.ca.issue_server_cert(self.template / "server.crt", self.template / "server.key")
        server = SecantusServer(home=self.template, port=free_port(), password=self.password, ca=self.ca)
        server.start(auth=False)
        try:
            import pymongo

            with pymongo.MongoClient(**server._tls(), serverSelectionTimeoutMS=5000) as client:
                client.admin.command("createUser", ROOT_USER, pwd=self.password, roles=["root"])
        finally:
            server.stop()
        (self.template / "server.log").unlink(missing_ok=True)

    def start(self, *, tls: bool = True) -> SecantusServer:
        """A server with `--auth`; with `tls=False` it speaks plaintext only (tests of `"ssl": false`)."""
        home = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        shutil.copytree(self.template, home, dirs_exist_ok=True)
        server = SecantusServer(home=home, port=free_port(), password=self.password, ca=self.ca, tls=tls)
        self._servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in self._servers:
            server.stop(crash=True)  # the data is thrown away: no need to wait for a clean stop
        shutil.rmtree(self.root, ignore_errors=True)
