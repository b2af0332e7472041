"""Test-only shims that let redshift-connector talk to a vanilla PostgreSQL server.

There is no Redshift here, but redshift-connector speaks PostgreSQL's wire protocol, so the
Redshift engine runs for real against the throwaway PostgreSQL wherever the SQL is common.
Three things stand in the way, and each shim removes exactly one of them:

1. `StartupParameterProxy`: redshift-connector sends startup parameters that only Redshift
   knows (`client_protocol_version`, `driver_version`, `os_version`,
   `driver_discovery_version`), and PostgreSQL refuses the connection over them. The proxy
   terminates TLS with a certificate from the tests' CA, drops those four parameters, and
   forwards everything else to PostgreSQL over verified TLS. The engine's own TLS settings
   (verify-full against ROTATORS_CA_BUNDLE) are exercised against the proxy's certificate.
2. `patch_parsing` (SASL): the driver keeps an empty mechanism name after PostgreSQL's list
   terminator, and scramp refuses the list; the patch drops empty names.
3. `patch_parsing` (version): the driver parses `server_version` with packaging, which cannot
   read a Debian build such as `15.18 (Debian 15.18-0+deb12u1)`; the patch reads the number.

None of this is in the package: the engine imports redshift-connector as it is.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rotators.testing.tls import CertificateAuthority

SSL_REQUEST = 80877103
REDSHIFT_ONLY_PARAMETERS = frozenset(
    {"client_protocol_version", "driver_version", "os_version", "driver_discovery_version"}
)


class StartupParameterProxy:
    """127.0.0.1:`port` -> PostgreSQL at `backend`, TLS on both legs, Redshift-only parameters dropped."""

    def __init__(self, backend_host: str, backend_port: int, ca: CertificateAuthority, workdir: Path) -> None:
        self.backend = (backend_host, backend_port)
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = workdir / "proxy.crt", workdir / "proxy.key"
        ca.issue_server_cert(cert, key)
        self.client_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.client_side.load_cert_chain(cert, key)
        self.backend_side = ssl.create_default_context(cafile=str(ca.cert_path))
        self.dropped: list[str] = []  # every parameter the proxy took out, for the tests to see
        self.client_tls: list[bool] = []  # per connection: did the client ask for TLS?
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="redshift-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self.host = "127.0.0.1"
        self.port: int = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend: asyncio.StreamWriter | None = None
        try:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            self.client_tls.append(length == 8 and code == SSL_REQUEST)
            if self.client_tls[-1]:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self.client_side)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
            else:
                body = struct.pack("!i", code) + await reader.readexactly(length - 8)
            startup = self._without_redshift_parameters(body)
            backend_reader, backend = await asyncio.open_connection(*self.backend)
            backend.write(struct.pack("!ii", 8, SSL_REQUEST))
            await backend.drain()
            if await backend_reader.readexactly(1) != b"S":
                raise ConnectionError("the PostgreSQL server refused TLS")
            await backend.start_tls(self.backend_side, server_hostname=self.backend[0])
            backend.write(startup)
            await backend.drain()
            await asyncio.gather(self._pump(reader, backend), self._pump(backend_reader, writer))
        except ssl.SSLError as exc:
            # The client sees only EOF ("BrokenPipe: server socket closed"): say why in the test's log.
            # (Python 3.13 refused the backend's certificate this way before the test CA set key identifiers.)
            logging.getLogger(__name__).warning("the Redshift test proxy's TLS failed: %s", exc)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the server is down, a side hung up, or the proxy closes: the client sees EOF
        finally:
            for stream in (writer, backend):
                if stream is not None:
                    stream.close()

    def _without_redshift_parameters(self, body: bytes) -> bytes:
        protocol, fields = body[:4], body[4:].split(b"\0")
        kept: list[bytes] = []
        for key, value in zip(fields[0::2], fields[1::2], strict=False):
            if not key:
                break
            if key.decode() in REDSHIFT_ONLY_PARAMETERS:
                self.dropped.append(key.decode())
            else:
                kept += [key, value]
        payload = protocol + b"".join(part + b"\0" for part in kept) + b"\0"
        return struct.pack("!i", len(payload) + 4) + payload

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def patch_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two parsing fixes (SASL mechanism list, Debian server_version), for one test."""
    import redshift_connector.core as core
    from packaging import version

    scram_client = vars(core)["ScramClient"]  # imported there from scramp, which has no types

    def without_empty_mechanisms(mechanisms: list[str], *args: Any, **kwargs: Any) -> Any:
        return scram_client([m for m in mechanisms if m], *args, **kwargs)

    def parse_number(text: str) -> version.Version:
        return version.parse(text.split(" ", 1)[0])

    monkeypatch.setattr(core, "ScramClient", without_empty_mechanisms)
    monkeypatch.setattr(core, "version", SimpleNamespace(parse=parse_number, Version=version.Version))
