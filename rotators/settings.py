"""Every setting the rotators read from the environment, parsed in one place.

A setting is read when it is used (tests and `rotators invoke` change the environment between
calls), always through the one function here, so a bad value fails the step with a
ConfigurationError that names the variable and never a driver's ValueError.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from rotators.errors import ConfigurationError, shown

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# ASCII digits only: str.isdigit() and int() accept Arabic-Indic and other Unicode digits.
_WHOLE = re.compile(r"[0-9]{1,9}")
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

TLS_MODES = ("require", "verify-ca", "verify-full")
DEFAULT_CONNECT_TIMEOUT = 5.0
MAX_CONNECT_TIMEOUT = 900.0  # a Lambda function's own limit: a longer wait could never end


def _raw(name: str) -> str | None:
    """The variable's value; None when it is unset or empty (the default applies)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    if _CONTROL.search(value.strip()):
        raise ConfigurationError(f"Environment variable {name} holds a control character")
    return value.strip()


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigurationError(f"Environment variable {name} must be true or false, not {shown(value, 40)}")


def env_int(name: str, default: int, *, low: int, high: int) -> int:
    value = _raw(name)
    if value is None:
        return default
    if not _WHOLE.fullmatch(value):
        raise ConfigurationError(
            f"Environment variable {name} must be a whole number from {low} to {high}, not {shown(value, 40)}"
        )
    number = int(value)
    if not low <= number <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, not {number}")
    return number


@dataclass(frozen=True)
class ConnectTimeout:
    """DB_CONNECT_TIMEOUT; each engine takes it in its driver's unit."""

    seconds: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def whole_seconds(self) -> int:
        """For drivers that take whole seconds (libpq, redshift-connector): rounded up."""
        return math.ceil(self.seconds)

    @property
    def milliseconds(self) -> int:
        return math.ceil(self.seconds * 1000)


def connect_timeout() -> ConnectTimeout:
    """DB_CONNECT_TIMEOUT: seconds, a positive number (`5`, `2.5`), at most 900."""
    value = _raw("DB_CONNECT_TIMEOUT")
    if value is None:
        return ConnectTimeout()
    seconds = float(value) if _DECIMAL.fullmatch(value) else math.nan
    if not 0 < seconds <= MAX_CONNECT_TIMEOUT:
        raise ConfigurationError(
            f"Environment variable DB_CONNECT_TIMEOUT must be a number of seconds above 0 and at most "
            f"{MAX_CONNECT_TIMEOUT:g} (e.g. 5 or 2.5), not {shown(value, 40)}"
        )
    return ConnectTimeout(seconds)


def password_length(default: int) -> int:
    """PASSWORD_LENGTH, within what GetRandomPassword accepts."""
    return env_int("PASSWORD_LENGTH", default, low=8, high=4096)


def exclude_characters(default: str) -> str:
    """EXCLUDE_CHARACTERS; set and empty means exclude nothing, as in AWS's functions."""
    value = os.environ.get("EXCLUDE_CHARACTERS")
    if value is None:
        return default
    if len(value) > 4096:  # GetRandomPassword's limit
        raise ConfigurationError("Environment variable EXCLUDE_CHARACTERS is longer than 4096 characters")
    return value


def sslmode() -> str | None:
    """ROTATORS_SSLMODE: the TLS mode when a secret sets none; None means verify-full."""
    value = _raw("ROTATORS_SSLMODE")
    if value is None or value in TLS_MODES:
        return value
    raise ConfigurationError(
        f"ROTATORS_SSLMODE {shown(value, 40)} is not accepted: use require, verify-ca or verify-full, "
        'or put "ssl": false in the secret to connect without TLS'
    )


def ca_bundle() -> str | None:
    """ROTATORS_CA_BUNDLE: a CA bundle path, `system`, or None when unset."""
    return _raw("ROTATORS_CA_BUNDLE")


def in_lambda_runtime() -> bool:
    """Whether this process is a Lambda runtime (Lambda, or an emulator of its Runtime API, sets
    AWS_LAMBDA_RUNTIME_API): the module code that runs at import is then its INIT."""
    return _raw("AWS_LAMBDA_RUNTIME_API") is not None
