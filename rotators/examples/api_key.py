"""Rotate a key of an HTTP API key service. Handler: rotators.examples.api_key.handler.

The secret: {"endpoint": "https://api.example.com", "key_id": "key_123", "api_key": "sk_..."}.
The service (see rotators/testing/apikeys.py for a local one) authenticates with
`Authorization: Bearer <api_key>` and offers GET /whoami, POST /keys, PUT and DELETE /keys/{id}.

`ApiKeyRotator` is the issuer shape: each rotation mints a new key, and the key before the
previous one is revoked. `ApiKeyUpdater` is the updater shape, for services that let a key
take a new secret: handler rotators.examples.api_key.updater_handler.
"""

from __future__ import annotations

from urllib.parse import quote

from rotators.custom import CredentialRefusedError, IssuerRotator, JsonSecret, UpdaterRotator, call_json


def _url(secret: JsonSecret, path: str) -> str:
    return str(secret["endpoint"]).rstrip("/") + path


def _key_url(secret: JsonSecret, key_id: str) -> str:
    return _url(secret, "/keys/" + quote(key_id, safe=""))


def _authenticates(secret: JsonSecret) -> bool:
    try:
        reply = call_json("GET", _url(secret, "/whoami"), bearer=secret["api_key"])
    except CredentialRefusedError:
        return False
    return reply.status == 200 and reply.body["key_id"] == secret["key_id"]


class ApiKeyRotator(IssuerRotator):
    kind = "api-key"
    required = ("endpoint", "key_id")

    def issue(self, login: JsonSecret, token: str) -> tuple[str, str]:
        headers = {"Idempotency-Key": token}  # a retry after a crash gets the same key back
        reply = call_json("POST", _url(login, "/keys"), bearer=login["api_key"], headers=headers)
        if reply.status != 201:
            raise RuntimeError(f"POST /keys answered HTTP {reply.status}")
        return reply.body["id"], reply.body["secret"]

    def revoke(self, login: JsonSecret, key_id: str) -> None:
        reply = call_json("DELETE", _key_url(login, key_id), bearer=login["api_key"])
        if reply.status not in (204, 404):  # 404: already revoked
            raise RuntimeError(f"DELETE /keys/{key_id} answered HTTP {reply.status}")

    def authenticates(self, value: JsonSecret) -> bool:
        return _authenticates(value)


class ApiKeyUpdater(UpdaterRotator):
    kind = "api-key-updater"
    required = ("endpoint", "key_id")

    def update(self, login: JsonSecret, new: JsonSecret) -> None:
        body = {"secret": new["api_key"]}
        reply = call_json("PUT", _key_url(login, new["key_id"]), bearer=login["api_key"], body=body)
        if reply.status != 204:
            raise RuntimeError(f"PUT /keys/{new['key_id']} answered HTTP {reply.status}")

    def authenticates(self, value: JsonSecret) -> bool:
        return _authenticates(value)


handler = ApiKeyRotator().handle
updater_handler = ApiKeyUpdater().handle
