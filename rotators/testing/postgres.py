"""Throwaway PostgreSQL servers with password (SCRAM) authentication and TLS, for tests and the demo.

`initdb` runs once into a template directory; each server is a copy of it, so a new server
starts in well under a second. As root, the server runs as the `postgres` OS user, because
`initdb` and `postgres` refuse to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rotators.testing.tls import CertificateAuthority


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _run_as() -> str | None:
    """Who runs the server: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("Running as root needs a `postgres` OS user (installed with postgresql)") from None
    return "postgres"


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class PostgresServer:
    """One server: `host`/`port`, the superuser `postgres` with `password`, TLS signed by `ca`."""

    datadir: Path
    port: int
    password: str = field(repr=False)
    ca: CertificateAuthority
    bindir: Path
    user: str | None
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        command = [
            str(self.bindir / "postgres"), "-D", str(self.datadir),
            "-c", f"port={self.port}", "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.datadir.parent}",
            "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "log_statement=all",  # so tests can prove no password reaches the server's log
            "-c", "log_connections=on",  # so benchmarks can count the connections a rotation opens
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=logfile, stderr=logfile, user=self.user)
        logfile.close()
        deadline = time.monotonic() + 30
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start: see {self.log_path}")
            if pidfile.exists() and "ready" in pidfile.read_text():
                return
            time.sleep(0.02)
        raise RuntimeError("PostgreSQL did not become ready within 30 s")

    def stop(self) -> None:
        """A fast shutdown: connections are cut, as when a database really goes away."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def log_path(self) -> Path:
        return self.datadir.parent / "server.log"

    def admin_dsn(self) -> dict[str, str | int]:
        """psycopg keyword arguments for the superuser, over verified TLS."""
        return {
            "host": self.host, "port": self.port, "dbname": "postgres", "user": "postgres",
            "password": self.password, "sslmode": "verify-full", "sslrootcert": str(self.ca.cert_path),
        }  # fmt: skip


class PostgresFactory:
    """Makes servers from one `initdb` template; remove everything with `close()`."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="rotators-pg-"))
        self.root.chmod(0o755)
        self.password = secrets.token_urlsafe(24)
        self.ca = CertificateAuthority.create(self.root / "ca")
        self.template = self.root / "template"
        self._servers: list[PostgresServer] = []
        self._initdb()

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        _chown(self.root, self.user)
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
        _chown(self.template, self.user)

    def start(self) -> PostgresServer:
        home = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        home.chmod(0o755)
        datadir = home / "data"
        shutil.copytree(self.template, datadir)
        datadir.chmod(0o700)
        _chown(home, self.user)
        server = PostgresServer(
            datadir=datadir, port=free_port(), password=self.password, ca=self.ca,
            bindir=self.bindir, user=self.user,
        )  # fmt: skip
        server.start()
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)
