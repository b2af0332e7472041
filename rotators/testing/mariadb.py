"""Throwaway MariaDB servers with password authentication and TLS, for tests and local runs.

`mariadb-install-db` runs once into a template directory; each server is a copy of it, so a new
server starts in a fraction of a second. Every account the tests use logs in with a password:
root is `mysql_native_password` (no unix_socket-only root), the install's password-less extra
root accounts are dropped, and the server skips name resolution, so `'app'@'127.0.0.1'` is the
account a local TCP login matches. As root, the server runs as the `mysql` OS user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotators.testing.postgres import _chown, free_port
from rotators.testing.tls import CertificateAuthority

# Small InnoDB files keep the template (and each copy of it) at about 25 MB.
_COMMON_OPTIONS = ("--innodb-log-file-size=8M", "--innodb-buffer-pool-size=16M", "--skip-name-resolve")


def find_binaries() -> tuple[Path, Path]:
    """`mariadbd` and `mariadb-install-db`, where Debian or a PATH puts them."""
    server = next(
        (Path(p) for p in ("/usr/sbin/mariadbd", shutil.which("mariadbd") or "") if p and Path(p).exists()),
        None,
    )
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if server is None or install is None:
        raise RuntimeError(
            "MariaDB server binaries (mariadbd, mariadb-install-db) are not installed: "
            "run `sudo apt-get install -y mariadb-server` (or `make server-packages`)"
        )
    return server, Path(install)


def _run_as() -> str | None:
    """Who runs the server: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        raise RuntimeError(
            "Running as root needs a `mysql` OS user (installed with mariadb-server)"
        ) from None
    return "mysql"


@dataclass
class MariaDBServer:
    """One server: `host`/`port`, `root` with `password`, TLS signed by `ca` unless `tls` is off."""

    home: Path
    port: int
    password: str = field(repr=False)
    ca: CertificateAuthority
    mariadbd: Path
    user: str | None
    tls: bool = True
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        tls = (
            [
                f"--ssl-cert={self.home.parent / 'server.crt'}",
                f"--ssl-key={self.home.parent / 'server.key'}",
                f"--ssl-ca={self.ca.cert_path}",
            ]
            if self.tls
            else ["--skip-ssl"]
        )
        command = [
            str(self.mariadbd), "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
            f"--bind-address={self.host}", f"--socket={self.home / 'mysqld.sock'}",
            f"--pid-file={self.home / 'mysqld.pid'}", f"--log-error={self.log}", "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0", *_COMMON_OPTIONS, *tls,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"MariaDB exited at start: see {self.log}")
            if self.log.exists():
                with self.log.open("rb") as log:
                    log.seek(offset)
                    if b"ready for connections" in log.read():
                        return
            time.sleep(0.02)
        raise RuntimeError(f"MariaDB did not become ready within 30 s: see {self.log}")

    def stop(self) -> None:
        """A normal shutdown: connections are cut, as when a database really goes away."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def admin_kwargs(self) -> dict[str, Any]:
        """PyMySQL keyword arguments for root, over verified TLS when the server has it."""
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": "root", "password": self.password,
            "autocommit": True, "connect_timeout": 5,
        }  # fmt: skip
        if self.tls:
            kwargs.update(ssl_ca=str(self.ca.cert_path), ssl_verify_cert=True, ssl_verify_identity=True)
        else:
            kwargs.update(ssl_disabled=True)
        return kwargs


class MariaDBFactory:
    """Makes servers from one `mariadb-install-db` template; remove everything with `close()`."""

    def __init__(self) -> None:
        self.mariadbd, self.install_db = find_binaries()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="rotators-mariadb-"))
        self.root.chmod(0o755)
        self.password = secrets.token_urlsafe(24)
        self.ca = CertificateAuthority.create(self.root / "ca")
        self.template = self.root / "template"
        self._servers: list[MariaDBServer] = []
        self._install()

    def _install(self) -> None:
        self.ca.issue_server_cert(self.root / "server.crt", self.root / "server.key")
        setup = self.root / "setup.sql"
        # In bootstrap mode account statements work only after the grant tables are loaded.
        # The password is a token_urlsafe string: no quote can end the literal.
        setup.write_text(
            "FLUSH PRIVILEGES;\n"
            "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1');\n"
            "DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1');\n"
            "FLUSH PRIVILEGES;\n"
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{self.password}';\n"
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{self.password}';\n"
            "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
        )
        _chown(self.root, self.user)
        command = [
            str(self.install_db), "--no-defaults", f"--datadir={self.template}",
            "--auth-root-authentication-method=normal", "--skip-test-db", f"--extra-file={setup}",
            *_COMMON_OPTIONS,
        ]  # fmt: skip
        if self.user is not None:
            command.append(f"--user={self.user}")
        try:
            subprocess.run(command, check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"mariadb-install-db failed: {exc.stdout.decode()[-2000:]}") from None
        finally:
            setup.unlink()
        _chown(self.root, self.user)

    def start(self, *, tls: bool = True) -> MariaDBServer:
        home = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        home.chmod(0o755)
        shutil.copytree(self.template, home / "data")
        (home / "data").chmod(0o700)
        _chown(home, self.user)
        server = MariaDBServer(
            home=home, port=free_port(), password=self.password, ca=self.ca,
            mariadbd=self.mariadbd, user=self.user, tls=tls,
        )  # fmt: skip
        server.start()
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)
