"""Throwaway MariaDB servers with password authentication and TLS, for tests and local runs.

`mariadb-install-db` runs once into a template directory; each server is a copy of it, so a new
server starts in a fraction of a second. Every account the tests use logs in with a password:
root is `mysql_native_password` (no unix_socket-only root), the install's password-less extra
root accounts are dropped, and the server skips name resolution, so `'app'@'127.0.0.1'` is the
account a local TCP login matches. As root, the server runs as the `mysql` OS user.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rotators.errors import redact
from rotators.testing.servers import ServerFactory, ServerProcess, chown, free_port, run_as

# Small InnoDB files keep the template (and each copy of it) at about 25 MB. Each install and server
# has its own --tmpdir: in the shared /tmp, parallel bootstraps failed now and then deleting their
# temporary tables (Errcode 2).
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


@dataclass
class MariaDBServer(ServerProcess):
    """One server: `host`/`port`, `root` with `password`, TLS signed by `ca` unless `tls` is off."""

    name: ClassVar[str] = "MariaDB"

    home: Path
    mariadbd: Path
    user: str | None
    tls: bool = True

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
            "--innodb-flush-log-at-trx-commit=0", f"--tmpdir={self.home}", *_COMMON_OPTIONS, *tls,
        ]  # fmt: skip
        self._spawn(command, log=self.home / "console.log", user=self.user)

        def ready() -> bool:
            if not self.log.exists():
                return False
            with self.log.open("rb") as log:
                log.seek(offset)
                return b"ready for connections" in log.read()

        self._wait_until(ready, self.log)

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


class MariaDBFactory(ServerFactory[MariaDBServer]):
    """Makes servers from one `mariadb-install-db` template; remove everything with `close()`."""

    prefix = "rotators-mariadb-"

    def __init__(self) -> None:
        super().__init__()
        self.mariadbd, self.install_db = find_binaries()
        self.user = run_as("mysql", "mariadb-server")
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
        chown(self.root, self.user)
        command = [
            str(self.install_db), "--no-defaults", f"--datadir={self.template}",
            "--auth-root-authentication-method=normal", "--skip-test-db", f"--extra-file={setup}",
            f"--tmpdir={self.root}", *_COMMON_OPTIONS,
        ]  # fmt: skip
        if self.user is not None:
            command.append(f"--user={self.user}")
        try:
            subprocess.run(command, check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            said = redact(f"{exc.stdout.decode()[-1500:]}\n{exc.stderr.decode()[-1500:]}", [self.password])
            raise RuntimeError(f"mariadb-install-db failed: {said}") from None
        finally:
            setup.unlink()
        chown(self.root, self.user)

    def start(self, *, tls: bool = True) -> MariaDBServer:
        home = self._new_home()
        shutil.copytree(self.template, home / "data")
        (home / "data").chmod(0o700)
        chown(home, self.user)
        server = MariaDBServer(
            home=home, port=free_port(), password=self.password, ca=self.ca,
            mariadbd=self.mariadbd, user=self.user, tls=tls,
        )  # fmt: skip
        self._started(server)
        server.start()
        return server
