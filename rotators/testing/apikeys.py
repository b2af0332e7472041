"""A throwaway HTTP API key service on 127.0.0.1, over verified TLS, for tests and trying examples.

It behaves like a small real one: keys belong to an account, a request authenticates with
`Authorization: Bearer <secret>`, only a hash of each secret is kept, and a revoked key stops
working at once. The API (every call authenticated by any live key of the account):

    GET    /whoami        -> 200 {"key_id", "account"}          who am I (401 if refused)
    POST   /keys          -> 201 {"id", "secret"}                mint a key; an Idempotency-Key
                                                                header replays the first reply
    PUT    /keys/{id}     {"secret": "..."} -> 204               set a new secret for the same key
    DELETE /keys/{id}     -> 204, or 404 if unknown or already revoked
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rotators.testing.tls import CertificateAuthority

MIN_SECRET_LENGTH = 20


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class _Key:
    account: str
    digest: bytes = field(repr=False)
    revoked: bool = False


@dataclass(frozen=True)
class Request:
    """What the service saw: never a header or a body, so never a secret."""

    method: str
    path: str
    status: int
    key_id: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, service: ApiKeyService, context: ssl.SSLContext) -> None:
        self.service = service
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """The TLS handshake happens in the request's thread, not in the accept loop."""
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that refuses our certificate or hangs up is the client's business."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        except OSError:
            request.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the service's own request log is `ApiKeyService.requests`."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        status, reply, key_id = self.server.service.handle(
            self.command, self.path, bearer, body, self.headers.get("Idempotency-Key")
        )
        payload = json.dumps(reply).encode() if reply is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.service.requests.append(Request(self.command, self.path, status, key_id))


class ApiKeyService:
    """Start with `ApiKeyService()`; `endpoint` is its https:// URL, `ca_bundle` the CA to trust."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="rotators-apikeys-"))
        self.ca = CertificateAuthority.create(self._root / "ca")
        cert, key = self._root / "server.crt", self._root / "server.key"
        self.ca.issue_server_cert(cert, key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._by_digest: dict[bytes, str] = {}
        self._replies: dict[tuple[str, str], tuple[str, str]] = {}
        self.max_live: dict[str, int] = {}
        self.requests: list[Request] = []
        self.outage = False
        self._server = _Server(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-key-service", daemon=True
        )
        self._thread.start()
        self.endpoint = f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_bundle(self) -> str:
        return str(self.ca.cert_path)

    # -- what an administrator does, in process ------------------------------------------------------
    def create_account(self) -> tuple[str, str]:
        """A new account with one key: (key id, secret)."""
        with self._lock:
            return self._mint("acct_" + secrets.token_hex(6))

    def live_keys(self, account: str) -> set[str]:
        with self._lock:
            return {k for k, v in self._keys.items() if v.account == account and not v.revoked}

    def account_of(self, key_id: str) -> str:
        with self._lock:
            return self._keys[key_id].account

    def accepts(self, key_id: str, secret: str) -> bool:
        """Asks the service over HTTPS, as a client would: does this key id and secret work?"""
        request = urllib.request.Request(  # noqa: S310 - our own https:// endpoint
            self.endpoint + "/whoami", headers={"Authorization": f"Bearer {secret}"}
        )
        context = ssl.create_default_context(cafile=self.ca_bundle)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
                return bool(json.loads(response.read())["key_id"] == key_id)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return False
            raise

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        shutil.rmtree(self._root, ignore_errors=True)

    # -- the HTTP API ------------------------------------------------------------------------------
    def handle(  # noqa: PLR0911 - one return per route reads plainest
        self, method: str, path: str, bearer: str | None, body: bytes, idempotency_key: str | None
    ) -> tuple[int, Any, str | None]:
        if self.outage:
            return 503, {"error": "unavailable"}, None
        with self._lock:
            caller = self._authenticate(bearer)
            if caller is None:
                return 401, {"error": "unauthorized"}, None
            account = self._keys[caller].account
            parts = path.strip("/").split("/")
            if method == "GET" and parts == ["whoami"]:
                return 200, {"key_id": caller, "account": account}, caller
            if method == "POST" and parts == ["keys"]:
                return 201, self._issue(account, idempotency_key), caller
            if len(parts) == 2 and parts[0] == "keys":
                target = self._keys.get(parts[1])
                if target is None or target.revoked or target.account != account:
                    return 404, {"error": "no such key"}, caller
                if method == "DELETE":
                    target.revoked = True
                    return 204, None, caller
                if method == "PUT":
                    return self._set_secret(parts[1], target, body), None, caller
            return 404, {"error": "no such route"}, caller

    def _authenticate(self, bearer: str | None) -> str | None:
        if not bearer:
            return None
        key_id = self._by_digest.get(_digest(bearer))
        if key_id is None:
            return None
        key = self._keys[key_id]
        if key.revoked or not hmac.compare_digest(key.digest, _digest(bearer)):
            return None
        return key_id

    def _issue(self, account: str, idempotency_key: str | None) -> dict[str, str]:
        if idempotency_key and (account, idempotency_key) in self._replies:
            key_id, secret = self._replies[(account, idempotency_key)]
        else:
            key_id, secret = self._mint(account)
            if idempotency_key:
                self._replies[(account, idempotency_key)] = (key_id, secret)
        return {"id": key_id, "secret": secret}

    def _mint(self, account: str) -> tuple[str, str]:
        key_id, secret = "key_" + secrets.token_hex(8), "sk_" + secrets.token_urlsafe(32)
        self._keys[key_id] = _Key(account, _digest(secret))
        self._by_digest[_digest(secret)] = key_id
        live = sum(1 for k in self._keys.values() if k.account == account and not k.revoked)
        self.max_live[account] = max(self.max_live.get(account, 0), live)
        return key_id, secret

    def _set_secret(self, key_id: str, key: _Key, body: bytes) -> int:
        try:
            secret = json.loads(body)["secret"]
        except (ValueError, KeyError, TypeError):
            return 400
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            return 400
        self._by_digest.pop(key.digest, None)
        key.digest = _digest(secret)
        self._by_digest[key.digest] = key_id
        return 204
