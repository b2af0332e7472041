"""DatabaseRotator: the password logic every database shares; engines only add their SQL."""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

from rotators.errors import (
    ConfigurationError,
    LoginError,
    SecretFormatError,
    SecretNotFoundError,
    TargetMismatchError,
)
from rotators.log import logger, tracer
from rotators.rotation import RotationContext, Rotator
from rotators.secrets import AWSCURRENT, PasswordPolicy

Conn = TypeVar("Conn")

CLONE_SUFFIX = "_clone"
NOT_CHECKED = "not checked"  # change_privileges of an engine that cannot tell
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class LoginRefusedError(LoginError):
    """The server is up and refused this user name and password."""


@dataclass(frozen=True)
class TlsSettings:
    """TLS is on unless the secret turns it off in so many words (`"ssl": false`)."""

    enabled: bool = True
    mode: str | None = None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class DatabaseSecret:
    """The JSON secret AWS's rotation functions use; unknown keys are carried forward unchanged."""

    engine: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    dbname: str
    tls: TlsSettings = TlsSettings()
    masterarn: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def target(self) -> tuple[str, int, str]:
        return (self.host.lower(), self.port, self.dbname)

    def with_login(self, username: str, password: str) -> DatabaseSecret:
        raw = {**self.raw, "username": username, "password": password}
        return replace(self, username=username, password=password, raw=raw)

    def to_json(self) -> str:
        return json.dumps(dict(self.raw))


def _as_bool(value: object, *, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SecretFormatError(f"Key {key!r} in {where} must be true or false")


def parse_database_secret(
    text: str,
    *,
    where: str,
    engines: frozenset[str],
    default_port: int,
    default_dbname: str,
    handler_hint: str,
) -> DatabaseSecret:
    """Validate a secret string; every message names the key and never the value."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise SecretFormatError(f"{where} is not valid JSON: store a JSON object") from None
    if not isinstance(raw, dict):
        raise SecretFormatError(f"{where} must be a JSON object with host, username and password")
    missing = [k for k in ("engine", "host", "username", "password") if not raw.get(k)]
    if missing:
        raise SecretFormatError(f"{where} lacks {', '.join(repr(k) for k in missing)}")
    for key in ("engine", "host", "username", "password", "dbname", "masterarn"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise SecretFormatError(f"Key {key!r} in {where} must be a string")
    engine = raw["engine"]
    if engine not in engines:
        raise SecretFormatError(
            f"{where} is for engine {engine!r}, but this rotator serves {sorted(engines)}: {handler_hint}"
        )
    port_value = raw.get("port", default_port)
    try:
        if isinstance(port_value, bool) or not isinstance(port_value, int | str):
            raise ValueError
        port = int(port_value)
    except (TypeError, ValueError):
        raise SecretFormatError(f"Key 'port' in {where} must be a number") from None
    if not 0 < port < 65536:
        raise SecretFormatError(f"Key 'port' in {where} must be between 1 and 65535")
    tls = TlsSettings(
        enabled=_as_bool(raw.get("ssl", True), key="ssl", where=where),
        mode=_optional_str(raw, "sslmode", where),
        ca_bundle=_optional_str(raw, "sslrootcert", where),
    )
    return DatabaseSecret(
        engine=engine,
        host=raw["host"],
        port=port,
        username=raw["username"],
        password=raw["password"],
        dbname=raw.get("dbname") or default_dbname,
        tls=tls,
        masterarn=raw.get("masterarn") or None,
        raw=raw,
    )


def _optional_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise SecretFormatError(f"Key {key!r} in {where} must be a string")


TLS_MODES = ("require", "verify-ca", "verify-full")


def tls_mode(secret: DatabaseSecret) -> str | None:
    """The TLS mode of a login, in libpq's words; None (plaintext) only when the secret says so.

    The secret's `sslmode`, else ROTATORS_SSLMODE, else verify-full. For engines whose driver
    does not speak libpq's sslmode: `require` encrypts, `verify-ca` checks the chain, and
    `verify-full` checks the chain and the host name.
    """
    if not secret.tls.enabled or secret.tls.mode == "disable":
        return None
    mode = secret.tls.mode or os.environ.get("ROTATORS_SSLMODE") or "verify-full"
    if mode not in TLS_MODES:
        raise ConfigurationError(
            f"sslmode {mode!r} is not accepted: use require, verify-ca or verify-full, or put "
            '"ssl": false in the secret to connect without TLS'
        )
    return mode


def ca_bundle(secret: DatabaseSecret) -> str | None:
    """The CA bundle path (`sslrootcert`, else ROTATORS_CA_BUNDLE); None means the system store."""
    path = secret.tls.ca_bundle or os.environ.get("ROTATORS_CA_BUNDLE") or None
    return None if path == "system" else path


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"Environment variable {name} must be true or false")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"Environment variable {name} must be a whole number") from None


def _log_strategy(secret: DatabaseSecret) -> None:
    logger.append_keys(strategy="alternating_users" if secret.masterarn else "single_user")


def other_user(username: str) -> str:
    """The alternating partner: `app` <-> `app_clone`."""
    if username.endswith(CLONE_SUFFIX) and len(username) > len(CLONE_SUFFIX):
        return username[: -len(CLONE_SUFFIX)]
    return username + CLONE_SUFFIX


class DatabaseRotator(Rotator[DatabaseSecret], Generic[Conn]):
    """Single user, or alternating users when the secret names a master secret (`masterarn`)."""

    engines: ClassVar[frozenset[str]]
    default_port: ClassVar[int]
    default_dbname: ClassVar[str]
    max_username_bytes: ClassVar[int]
    excluded_characters: ClassVar[str] = "/@\"'\\ "
    password_length: ClassVar[int] = 32

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Trace every engine call, never capturing its result or error (either may hold a secret)."""
        super().__init_subclass__(**kwargs)
        for name in ("connect", "set_password", "clone_user", "probe"):
            if name in cls.__dict__:
                method = cls.__dict__[name]
                setattr(cls, name, tracer.capture_method(method, capture_response=False, capture_error=False))

    # -- what an engine declares -------------------------------------------------------
    @abstractmethod
    def connect(self, secret: DatabaseSecret, username: str, password: str) -> AbstractContextManager[Conn]:
        """Open a connection; raise LoginRefusedError for bad credentials,
        DatabaseUnavailableError when the server cannot be reached."""

    @abstractmethod
    def set_password(self, conn: Conn, username: str, password: str) -> None:
        """Give `username` the new password (its own, or another user's as master)."""

    @abstractmethod
    def clone_user(self, conn: Conn, source: str, clone: str, password: str) -> None:
        """Create `clone` (or refresh it) so that it can do what `source` can, with `password`."""

    @abstractmethod
    def probe(self, conn: Conn, username: str) -> None:
        """Run a test query; raise SecretTestError unless logged in as `username`."""

    # -- what `rotators check` asks an engine (optional) ----------------------------------
    def transport(self, conn: Conn, secret: DatabaseSecret) -> str:
        """How the connection is protected, in words."""
        return "TLS" if secret.tls.enabled else "plaintext"

    def change_privileges(self, conn: Conn, username: str, *, as_master: bool) -> str | None:
        """What the logged-in user lacks to rotate `username` (None: nothing)."""
        return NOT_CHECKED

    # -- the secret format ----------------------------------------------------------------
    def parse(self, text: str, *, where: str) -> DatabaseSecret:
        return parse_database_secret(
            text,
            where=where,
            engines=self.engines,
            default_port=self.default_port,
            default_dbname=self.default_dbname,
            handler_hint=f"attach the rotator for that engine, not {self.kind}",
        )

    def render(self, value: DatabaseSecret) -> str:
        return value.to_json()

    def sensitive_values(self, value: DatabaseSecret) -> list[str]:
        return [value.password]

    def password_policy(self) -> PasswordPolicy:
        """The engine's defaults, overridden by the variables AWS's own functions read."""
        policy = PasswordPolicy(
            length=_env_int("PASSWORD_LENGTH", self.password_length),
            exclude_characters=os.environ.get("EXCLUDE_CHARACTERS", self.excluded_characters),
            exclude_numbers=_env_bool("EXCLUDE_NUMBERS", False),
            exclude_punctuation=_env_bool("EXCLUDE_PUNCTUATION", False),
            exclude_uppercase=_env_bool("EXCLUDE_UPPERCASE", False),
            exclude_lowercase=_env_bool("EXCLUDE_LOWERCASE", False),
            require_each_included_type=_env_bool("REQUIRE_EACH_INCLUDED_TYPE", True),
        )
        if not 8 <= policy.length <= 4096:
            raise ConfigurationError("PASSWORD_LENGTH must be between 8 and 4096")
        return policy

    # -- the hooks ------------------------------------------------------------------------
    def make_pending(self, ctx: RotationContext[DatabaseSecret]) -> DatabaseSecret:
        current = ctx.current
        _log_strategy(current)
        username = self.partner(current.username) if current.masterarn else current.username
        self.check_username(username, current=current)
        return current.with_login(username, self.store.random_password(self.password_policy()))

    # -- user names: engines whose names carry quoting or case rules override these ---------
    def clone_name(self, username: str) -> str:
        """The clone of an original user in alternating rotation: `app` -> `app_clone`."""
        return username + CLONE_SUFFIX

    def partner(self, username: str) -> str:
        """The other user of an alternating pair: `app` <-> `app_clone`."""
        return other_user(username)

    def check_username(self, username: str, *, current: DatabaseSecret) -> None:
        """Refuse, at createSecret and so before anything changes, a name the engine cannot use
        (`current` says which server flavour the name is for)."""
        if len(username.encode()) > self.max_username_bytes:
            raise SecretFormatError(
                f"User name {username!r} is longer than {self.max_username_bytes} bytes, the limit "
                f"of {self.kind}: shorten {current.username!r} so that its clone name fits"
            )

    def set_pending(self, ctx: RotationContext[DatabaseSecret]) -> None:
        pending = self._checked_pending(ctx)
        if pending.masterarn:
            self._set_as_master(ctx, pending)
        else:
            self._set_as_user(ctx, pending)

    def test_pending(self, ctx: RotationContext[DatabaseSecret]) -> None:
        """Only the pending version is needed: it logs in as itself, wherever it points."""
        pending = ctx.pending
        _log_strategy(pending)
        with self.connect(pending, pending.username, pending.password) as conn:
            self.probe(conn, pending.username)

    # -- the strategies -------------------------------------------------------------------
    def _checked_pending(self, ctx: RotationContext[DatabaseSecret]) -> DatabaseSecret:
        """A rotator must not be tricked into changing passwords on another server."""
        pending, current = ctx.pending, ctx.current
        _log_strategy(pending)
        if pending.target != current.target or pending.masterarn != current.masterarn:
            raise TargetMismatchError(
                f"The AWSPENDING version of {ctx.secret_id!r} points at another server, database or "
                "master secret than AWSCURRENT: cancel this rotation and fix the pending version"
            )
        if not pending.masterarn and pending.username != current.username:
            raise TargetMismatchError(
                f"The AWSPENDING version of {ctx.secret_id!r} names another user than AWSCURRENT "
                "in single-user rotation: cancel this rotation and fix the pending version"
            )
        if pending.masterarn and pending.username != self.partner(current.username):
            raise TargetMismatchError(
                f"The AWSPENDING version of {ctx.secret_id!r} names another user than the partner "
                f"of {current.username!r} in alternating rotation: cancel this rotation and fix the "
                "pending version"
            )
        return pending

    def _set_as_user(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> None:
        """Log in as the user itself and change its password; fall back only when refused."""
        for label, login in self._single_user_logins(ctx, pending):
            try:
                with self.connect(pending, login.username, login.password) as conn:
                    if login.password == pending.password:
                        logger.info("pending already accepted by the database: nothing to set")
                        return
                    self.set_password(conn, pending.username, pending.password)
                    logger.info(f"password changed by logging in with {label}")
                    return
            except LoginRefusedError:
                logger.info(f"{label} does not log in: trying the next staged version")
        raise LoginError(
            f"No staged version of {ctx.secret_id!r} (AWSCURRENT, AWSPENDING, AWSPREVIOUS) logs in "
            f"as {pending.username!r}: the password was changed outside Secrets Manager; reset it "
            "to the AWSCURRENT value (or put the working one as AWSCURRENT) and rotate again"
        )

    def _single_user_logins(
        self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret
    ) -> Iterator[tuple[str, DatabaseSecret]]:
        """AWSCURRENT does the work; AWSPENDING says it was already done; AWSPREVIOUS recovers
        a half-finished earlier rotation. Later ones are read only when needed."""
        yield AWSCURRENT, ctx.current
        yield "AWSPENDING", pending
        previous = ctx.previous
        if (
            previous is not None
            and previous.target == pending.target
            and previous.username == pending.username
            and previous.password != ctx.current.password
        ):
            yield "AWSPREVIOUS", previous

    def _set_as_master(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> None:
        master = self._master(ctx, pending)
        try:
            with self.connect(pending, master.username, master.password) as conn:
                source = ctx.current.username
                if pending.username == self.clone_name(source):
                    self.clone_user(conn, source, pending.username, pending.password)
                else:
                    self.set_password(conn, pending.username, pending.password)
        except LoginRefusedError:
            raise LoginError(
                f"The master secret {pending.masterarn!r} (AWSCURRENT) does not log in as "
                f"{master.username!r}: fix the master secret, then retry the rotation"
            ) from None
        logger.info(f"password of {pending.username!r} set by the master user")

    def _master(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> DatabaseSecret:
        assert pending.masterarn is not None
        where = f"the master secret {pending.masterarn!r}"
        try:
            text = self.store.get(pending.masterarn, stage=AWSCURRENT)
        except SecretNotFoundError:
            raise SecretNotFoundError(
                f"{where}, named by 'masterarn' in {ctx.secret_id!r}, does not exist or has no "
                "AWSCURRENT value: fix 'masterarn' or create the master secret"
            ) from None
        except Exception as exc:  # deleted, access denied: the SDK's message holds no secret
            raise SecretNotFoundError(
                f"{where}, named by 'masterarn' in {ctx.secret_id!r}, cannot be read ({exc}): restore "
                "it or let this rotator read it"
            ) from None
        ctx.remember(text)
        master = self.parse(text, where=where)
        ctx.remember(master.password)
        if (master.host.lower(), master.port) != (pending.host.lower(), pending.port):
            raise TargetMismatchError(
                f"{where} points at another server than {ctx.secret_id!r}: the master secret must "
                "name the same host and port"
            )
        return master
