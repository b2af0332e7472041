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
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rotators.testing.servers import ServerFactory, ServerProcess, free_port

ROOT_USER = "root"


def _require_secantus() -> None:
    if importlib.util.find_spec("secantus") is None:
        raise RuntimeError("SecantusDB is not installed: run `pip install -e '.[dev]'`, which brings it")


@dataclass
class SecantusServer(ServerProcess):
    """One server: `host`/`port`, the `root` user with `password`, TLS signed by `ca`."""

    name: ClassVar[str] = "SecantusDB"

    home: Path
    tls: bool = True

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
        self._spawn(command, log=self.home / "server.log", cwd=self.home)
        self._wait_until(self._answers, self.home / "server.log")

    def _answers(self) -> bool:
        import pymongo

        try:
            with pymongo.MongoClient(**self._tls(), serverSelectionTimeoutMS=200) as client:
                client.admin.command("hello")
        except pymongo.errors.PyMongoError:
            return False
        return True

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


class SecantusFactory(ServerFactory[SecantusServer]):
    """Makes servers from one provisioned template; remove everything with `close()`."""

    prefix = "rotators-secantus-"
    crash_on_close = True

    def __init__(self) -> None:
        _require_secantus()
        super().__init__()
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
        home = self._new_home()
        shutil.copytree(self.template, home, dirs_exist_ok=True)
        server = SecantusServer(home=home, port=free_port(), password=self.password, ca=self.ca, tls=tls)
        self._started(server)
        server.start()
        return server
