"""Typed errors. Every message says what is wrong and how to fix it, and never holds a secret."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "<redacted>"
# A value quoted in a message (a SecretId, token, user name, host) is cut to this many characters,
# and a whole message to MAX_MESSAGE: hostile input must not make a megabyte error or log line.
SHOWN_CHARS = 200
MAX_MESSAGE = 1000


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """The repr of a value to quote in a message, cut to about `limit` characters with an
    ellipsis and the original length. repr escapes control characters, so a newline in a host
    name cannot forge a second log line."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def clipped(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message cut to `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    tail = f"… ({len(text)} characters)"
    return text[: limit - len(tail)] + tail


def redact(text: str, secrets: Iterable[str]) -> str:
    """Hide every known secret value in a driver message before it is logged or re-raised.

    Occurrences are found in the original text first, so overlapping secrets are hidden whole.
    """
    hidden = [False] * len(text)
    for secret in {s for s in secrets if s}:
        start = text.find(secret)
        while start != -1:
            hidden[start : start + len(secret)] = [True] * len(secret)
            start = text.find(secret, start + 1)
    parts: list[str] = []
    for index, char in enumerate(text):
        if not hidden[index]:
            parts.append(char)
        elif index == 0 or not hidden[index - 1]:
            parts.append(REDACTED)
    return "".join(parts)


class RotationError(Exception):
    """Base of every error this framework raises on purpose; its message is at most
    MAX_MESSAGE characters, whatever the values it quotes."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(clipped(str(message)), *args)


class EventError(RotationError):
    """The Lambda event is not a Secrets Manager rotation event."""


class SecretNotFoundError(RotationError):
    """The secret or one of its versions does not exist."""


class RotationNotEnabledError(RotationError):
    """Rotation is off for the secret, so Secrets Manager did not start this rotation."""


class VersionStageError(RotationError):
    """The event's token is not the version being rotated."""


class SecretFormatError(RotationError):
    """A secret value lacks a key, has a wrong type, or belongs to another engine."""


class TargetMismatchError(SecretFormatError):
    """Two secrets of one rotation point at different servers; we refuse to touch either."""


class PrivilegeError(RotationError):
    """Alternating rotation would hand out more power than the user proven by AWSCURRENT has."""


class ConfigurationError(RotationError):
    """An environment setting of the rotator is invalid."""


class DatabaseUnavailableError(RotationError):
    """The database could not be reached (network, TLS, server down): retry later."""


class LoginError(RotationError):
    """The database refused every credential we hold for the user."""


class PasswordChangeError(RotationError):
    """The database refused to change a password or create the clone user."""


class UserExistsError(PasswordChangeError):
    """The user to create exists: another run of the same step made it meanwhile."""


class SecretTestError(RotationError):
    """The pending secret did not pass the test step."""


class EndpointLookupError(RotationError):
    """A database service's API could not say where the master's database is, or which
    addresses reach it: each subclass names what to fix."""


class UnknownDatabaseTagError(EndpointLookupError):
    """A master secret without `host` carries none of the tags RDS, Aurora and Redshift put on
    the secrets they manage."""


class DatabaseNotFoundError(EndpointLookupError):
    """The service does not know the database that a master secret's tag names."""


class ServicePermissionError(EndpointLookupError):
    """The function's role may not make a read-only call the lookup needs."""
