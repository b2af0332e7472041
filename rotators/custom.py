"""Write your own rotator: rotate any credential by filling in what talks to its service.

Subclass one of two shapes; the four steps, the guards, every label move, the logging and
the secret hygiene come from `Rotator` unchanged.

* `UpdaterRotator`: the service lets us set a new value for the same credential. We make the
  value (GetRandomPassword) and store it as AWSPENDING *before* the service hears of it, so a
  crash anywhere leaves the value that works stored in Secrets Manager. One value works at a
  time: the old one stops working at setSecret. (A service that makes up the new value itself
  and drops the old one at once cannot be rotated safely this way: a crash between its reply
  and PutSecretValue loses the only working key. Use the issuer shape if the old key survives.)
* `IssuerRotator`: the service mints a new key (an id and a secret) and revokes keys by id.
  The key that was AWSCURRENT keeps working until the next rotation; each rotation revokes the
  key before it. `IssuerRotator.set_pending` says where that happens and why.

Both keep the secret as a JSON object: the rotating value under `secret_key` (`api_key`), the
configuration (`endpoint`, ...) beside it; keys the rotator does not know are carried forward.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rotators.errors import (
    LoginError,
    RotationError,
    SecretFormatError,
    SecretTestError,
    TargetMismatchError,
    redact,
)
from rotators.log import logger
from rotators.rotation import RotationContext, Rotator
from rotators.secrets import AWSCURRENT, AWSPENDING, AWSPREVIOUS, PasswordPolicy

__all__ = [
    "CredentialRefusedError",
    "CustomRotator",
    "HttpReply",
    "IssuerRotator",
    "JsonSecret",
    "RotationContext",
    "Rotator",
    "ServiceUnavailableError",
    "UpdaterRotator",
    "call_json",
]


class CredentialRefusedError(LoginError):
    """The service refused the credential we logged in with (wrong, revoked, no permission)."""


class ServiceUnavailableError(RotationError):
    """The service could not be reached or failed (network, TLS, 5xx, 429): retry later."""


class JsonSecret(Mapping[str, Any]):
    """A secret value that is a JSON object. Its repr names the keys and never a value."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"JsonSecret(keys={sorted(self._data)})"

    def replace(self, **changes: Any) -> JsonSecret:
        return JsonSecret({**self._data, **changes})

    def to_json(self) -> str:
        return json.dumps(self._data)


class CustomRotator(Rotator[JsonSecret]):
    """What both shapes share: the JSON secret format and the check that a pending version
    points at the same service as AWSCURRENT (a rotator must not be talked into sending a
    credential elsewhere)."""

    kind = "custom"
    #: The key whose value rotates. It is never logged, and scrubbed from every error message.
    secret_key: ClassVar[str] = "api_key"  # noqa: S105 - the name of a JSON key, not its value
    #: Other keys every version must hold as non-empty strings (e.g. "endpoint").
    required: ClassVar[tuple[str, ...]] = ()
    #: Whether AWSPREVIOUS still works after a rotation (the conformance kit reads this).
    keeps_previous: ClassVar[bool]

    def rotated_keys(self) -> tuple[str, ...]:
        """The keys a rotation changes; every other required key must stay the same."""
        return (self.secret_key,)

    def parse(self, text: str, *, where: str) -> JsonSecret:
        try:
            raw = json.loads(text)
        except ValueError:
            raise SecretFormatError(f"{where} is not valid JSON: store a JSON object") from None
        if not isinstance(raw, dict):
            raise SecretFormatError(f"{where} must be a JSON object")
        for key in dict.fromkeys((*self.required, *self.rotated_keys())):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise SecretFormatError(f"{where} needs {key!r} as a non-empty string")
        return JsonSecret(raw)

    def render(self, value: JsonSecret) -> str:
        return value.to_json()

    def sensitive_values(self, value: JsonSecret) -> list[str]:
        secret = value.get(self.secret_key)
        return [secret] if isinstance(secret, str) else []

    def same_target(self, a: JsonSecret, b: JsonSecret) -> bool:
        return all(a.get(k) == b.get(k) for k in self.required if k not in self.rotated_keys())

    def checked_pending(self, ctx: RotationContext[JsonSecret]) -> JsonSecret:
        pending = ctx.pending
        if not self.same_target(pending, ctx.current):
            differs = [k for k in self.required if pending.get(k) != ctx.current.get(k)]
            raise TargetMismatchError(
                f"The AWSPENDING version of {ctx.secret_id!r} has another {', '.join(map(repr, differs))} "
                "than AWSCURRENT: cancel this rotation and fix the pending version"
            )
        return pending

    @abstractmethod
    def authenticates(self, value: JsonSecret) -> bool:
        """True when the service accepts `value`, False when it refuses it. Raise (e.g.
        ServiceUnavailableError) when it cannot tell: a refusal must mean a refusal."""

    def test_pending(self, ctx: RotationContext[JsonSecret]) -> None:
        if not self.authenticates(ctx.pending):
            raise SecretTestError(
                f"The service refuses the AWSPENDING value of {ctx.secret_id!r}: setSecret did not "
                "take effect, or someone changed the credential since; retry the rotation"
            )


class UpdaterRotator(CustomRotator):
    """The service sets a new value for the same credential. Fill in `update` and `authenticates`."""

    keeps_previous = False
    #: How new values are made (GetRandomPassword); letters and digits suit most APIs.
    policy: ClassVar[PasswordPolicy] = PasswordPolicy(length=40, exclude_punctuation=True)

    @abstractmethod
    def update(self, login: JsonSecret, new: JsonSecret) -> None:
        """Logged in as `login`, make the service accept `new[secret_key]` for the same
        credential. Raise CredentialRefusedError when the service refuses `login`."""

    def new_value(self, current: JsonSecret) -> str:
        return self.store.random_password(self.policy)

    def make_pending(self, ctx: RotationContext[JsonSecret]) -> JsonSecret:
        return ctx.current.replace(**{self.secret_key: self.new_value(ctx.current)})

    def set_pending(self, ctx: RotationContext[JsonSecret]) -> None:
        """AWSCURRENT does the work. If it is refused, an earlier attempt may have set the value
        already (AWSPENDING works: done), or a half-finished rotation left AWSPREVIOUS working."""
        pending = self.checked_pending(ctx)
        for label, login in self._logins(ctx, pending):
            if login is pending:
                if self.authenticates(pending):
                    logger.info("the service already accepts AWSPENDING: nothing to set")
                    return
                continue
            try:
                self.update(login, pending)
            except CredentialRefusedError:
                logger.info(f"{label} is refused: trying the next staged version")
                continue
            logger.info(f"new value set by logging in with {label}")
            return
        raise LoginError(
            f"The service refuses every staged version of {ctx.secret_id!r} (AWSCURRENT, AWSPENDING, "
            "AWSPREVIOUS): the credential was changed outside Secrets Manager; put the working value "
            "as AWSCURRENT and rotate again"
        )

    def _logins(
        self, ctx: RotationContext[JsonSecret], pending: JsonSecret
    ) -> Iterator[tuple[str, JsonSecret]]:
        yield AWSCURRENT, ctx.current
        yield AWSPENDING, pending
        previous = ctx.previous
        if (
            previous is not None
            and self.same_target(previous, pending)
            and previous.get(self.secret_key) != ctx.current[self.secret_key]
        ):
            yield AWSPREVIOUS, previous


class IssuerRotator(CustomRotator):
    """The service mints keys and revokes them by id. Fill in `issue`, `revoke`, `authenticates`.

    createSecret mints the new key (it must be in the pending value, and a version's value
    cannot change once stored). setSecret, once the new key is stored *and* proven to work,
    revokes the key that was AWSPREVIOUS when the rotation started, and the keys of rotations
    abandoned since the last one finished. Why there:

    * createSecret is too early: the new key is not stored yet, and until it is proven, revoking
      would leave fewer working keys for nothing.
    * finishSecret is too late: once AWSCURRENT has moved, Secrets Manager treats the token as
      done and a retry does nothing, so a revocation that failed there would never be retried;
      and the retired key no longer has a label to find it by.
    * In setSecret a failure moves no label and the step is retried until it succeeds; revoking
      a key that is already gone counts as success, so a retry repeats nothing harmful.
    * Never revoked: a key that AWSCURRENT or AWSPENDING holds. The key that was AWSCURRENT when
      the rotation started (AWSPREVIOUS after it) keeps working until the next rotation.

    A crash between minting and PutSecretValue: Secrets Manager reattempts the rotation with the
    same token, and `issue` receives that token, so pass it to the service as an idempotency key
    (or the key's name): the retry then gets the same key back instead of leaving one nobody
    holds. The conformance kit's crash scenario tells you if a minted key is left working.
    """

    keeps_previous = True
    #: The key holding the id of the service's key (not secret: it appears in log lines).
    id_key: ClassVar[str] = "key_id"

    @abstractmethod
    def issue(self, login: JsonSecret, token: str) -> tuple[str, str]:
        """Logged in as `login`, mint a new key; return its (id, secret). Pass `token` to the
        service as an idempotency key so that a retry with the same token returns the same key."""

    @abstractmethod
    def revoke(self, login: JsonSecret, key_id: str) -> None:
        """Logged in as `login`, revoke key `key_id`. A key that is already gone is a success."""

    def rotated_keys(self) -> tuple[str, ...]:
        return (self.id_key, self.secret_key)

    def make_pending(self, ctx: RotationContext[JsonSecret]) -> JsonSecret:
        try:
            key_id, secret = self.issue(ctx.current, ctx.event.token)
        except CredentialRefusedError:
            raise CredentialRefusedError(
                f"The service refuses the AWSCURRENT key of {ctx.secret_id!r}: it was revoked or "
                "changed outside Secrets Manager; put a working key as AWSCURRENT and rotate again"
            ) from None
        ctx.remember(secret)
        return ctx.current.replace(**{self.id_key: key_id, self.secret_key: secret})

    def set_pending(self, ctx: RotationContext[JsonSecret]) -> None:
        pending = self.checked_pending(ctx)
        if pending[self.id_key] == ctx.current[self.id_key]:
            raise TargetMismatchError(
                f"The AWSPENDING version of {ctx.secret_id!r} holds the same key as AWSCURRENT: "
                "cancel this rotation and rotate again"
            )
        if not self.authenticates(pending):
            raise SecretTestError(
                f"The service refuses the key minted for this rotation of {ctx.secret_id!r} "
                f"(id {pending[self.id_key]!r}); nothing was revoked. Remove AWSPENDING from version "
                f"{ctx.event.token} and rotate again"
            )
        for key_id in self._retired_keys(ctx, pending):
            self.revoke(pending, key_id)
            logger.info("retired key revoked", extra={"key_id": key_id})

    def _retired_keys(self, ctx: RotationContext[JsonSecret], pending: JsonSecret) -> list[str]:
        """The AWSPREVIOUS key, and keys of unlabelled versions no older than AWSCURRENT (minted by
        rotations abandoned since the last one finished). One ListSecretVersionIds call."""
        keep = {ctx.current[self.id_key], pending[self.id_key]}
        versions = self.store.versions(ctx.secret_id)
        since = next((v.created for v in versions if AWSCURRENT in v.stages), None)
        wanted = [
            v.version_id
            for v in versions
            if AWSPREVIOUS in v.stages
            or (not v.stages and since is not None and v.created is not None and v.created >= since)
        ]
        retired: list[str] = []
        for version_id in wanted:
            text = self.store.find_version(ctx.secret_id, version_id)
            if text is None:  # an empty version RotateSecret staged and nobody filled
                continue
            ctx.remember(text)
            try:
                value = self.parse(text, where=f"version {version_id} of {ctx.secret_id!r}")
            except SecretFormatError:
                logger.info(
                    "skipping a version that is not this rotator's format", extra={"version": version_id}
                )
                continue
            ctx.remember(*self.sensitive_values(value))
            key_id = value[self.id_key]
            if key_id not in keep and key_id not in retired and self.same_target(value, pending):
                retired.append(key_id)
        return retired


# -- a small HTTPS client for the common case: a JSON API with bearer keys ----------------------
@dataclass(frozen=True)
class HttpReply:
    status: int
    body: Any


def call_json(
    method: str,
    url: str,
    *,
    bearer: str | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> HttpReply:
    """One HTTPS request with a JSON body and a JSON reply.

    TLS is verified against ROTATORS_CA_BUNDLE, else the system trust store; http:// is refused.
    401 and 403 raise CredentialRefusedError; 429, 5xx, network and TLS failures raise
    ServiceUnavailableError; any other status (2xx, 404, 409, ...) is returned for the caller to
    judge. No message holds the bearer credential or a response body.
    """
    if urllib.parse.urlsplit(url).scheme != "https":
        raise SecretFormatError(f"{url!r} is not an https:// URL: keys are sent over verified TLS only")
    sent = {"Accept": "application/json", **(headers or {})}
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=sent, method=method)  # noqa: S310 - https only
    context = ssl.create_default_context(cafile=os.environ.get("ROTATORS_CA_BUNDLE") or None)
    where = f"{method} {url}"
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            status, payload = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailableError(
            f"Cannot reach {where}: {redact(str(reason), [bearer or ''])}"
        ) from None
    if status in (401, 403):
        raise CredentialRefusedError(f"{where} was refused with HTTP {status}: wrong, revoked or not allowed")
    if status == 429 or status >= 500:
        raise ServiceUnavailableError(f"{where} failed with HTTP {status}: the service is busy or down")
    try:
        return HttpReply(status, json.loads(payload) if payload else None)
    except ValueError:
        raise ServiceUnavailableError(
            f"{where} replied with HTTP {status} and a body that is not JSON"
        ) from None
