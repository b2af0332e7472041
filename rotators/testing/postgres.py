"""Throwaway PostgreSQL servers with password (SCRAM) authentication and TLS, for tests and the demo.

`initdb` runs once into a template directory; each server is a copy of it, so a new server
starts in well under a second. As root, the server runs as the `postgres` OS user, because
`initdb` and `postgres` refuse to run as root.
"""

from __future__ import annotations

import glob
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rotators.testing.servers import ServerFactory, ServerProcess, chown, free_port, run_as


def find_bindir() -> Path:
    """The newest installed server, wherever Debian or a PATH puts it."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres) are not installed: "
        "run `sudo apt-get install -y postgresql` (or `make deps`)"
    )


@dataclass
class PostgresServer(ServerProcess):
    """One server: `host`/`port`, the superuser `postgres` with `password`, TLS signed by `ca`."""

    name: ClassVar[str] = "PostgreSQL"
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT  # "fast": connections are cut

    datadir: Path
    bindir: Path
    user: str | None

    def start(self) -> None:
        command = [
            str(self.bindir / "postgres"), "-D", str(self.datadir),
            "-c", f"port={self.port}", "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.datadir.parent}",
            "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "log_statement=all",  # so tests can prove no password reaches the server's log
            "-c", "log_connections=on",  # so benchmarks can count the connections a rotation opens
        ]  # fmt: skip
        self._spawn(command, log=self.log_path, user=self.user)
        pidfile = self.datadir / "postmaster.pid"
        self._wait_until(lambda: pidfile.exists() and "ready" in pidfile.read_text(), self.log_path)

    @property
    def log_path(self) -> Path:
        return self.datadir.parent / "server.log"

    def admin_dsn(self) -> dict[str, str | int]:
        """psycopg keyword arguments for the superuser, over verified TLS."""
        return {
            "host": self.host, "port": self.port, "dbname": "postgres", "user": "postgres",
            "password": self.password, "sslmode": "verify-full", "sslrootcert": str(self.ca.cert_path),
        }  # fmt: skip


class PostgresFactory(ServerFactory[PostgresServer]):
    """Makes servers from one `initdb` template; remove everything with `close()`."""

    prefix = "rotators-pg-"

    def __init__(self) -> None:
        super().__init__()
        self.bindir = find_bindir()
        self.user = run_as("postgres", "postgresql")
        self._initdb()

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        chown(self.root, self.user)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.template), "-U", "postgres",
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        pwfile.unlink()
        (self.template / "pg_hba.conf").write_text(
            "# TLS or not, every login needs its password.\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        self.ca.issue_server_cert(self.template / "server.crt", self.template / "server.key")
        chown(self.template, self.user)

    def start(self) -> PostgresServer:
        home = self._new_home()
        datadir = home / "data"
        shutil.copytree(self.template, datadir)
        datadir.chmod(0o700)
        chown(home, self.user)
        server = PostgresServer(
            datadir=datadir, port=free_port(), password=self.password, ca=self.ca,
            bindir=self.bindir, user=self.user,
        )  # fmt: skip
        self._started(server)
        server.start()
        return server
