"""DatabaseRotator: the password logic every database shares; engines only add their SQL."""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
from abc import abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from rotators.endpoints import DENIED, Database, Services, secret_engine
from rotators.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    LoginError,
    PasswordChangeError,
    PrivilegeError,
    RotationError,
    SecretFormatError,
    SecretNotFoundError,
    SecretTestError,
    ServicePermissionError,
    TargetMismatchError,
    UserExistsError,
    clipped,
    redact,
    shown,
)
from rotators.log import logger, tracer
from rotators.rotation import MAX_DEPTH, RotationContext, Rotator, deeper_than
from rotators.secrets import AWSCURRENT, PasswordPolicy, SecretStore, error_code
from rotators.settings import TLS_MODES, ConnectTimeout, env_bool, exclude_characters, password_length
from rotators.settings import ca_bundle as ca_bundle_setting
from rotators.settings import connect_timeout as connect_timeout_setting
from rotators.settings import sslmode as sslmode_setting

if TYPE_CHECKING:
    from rotators.engines import Engine

Conn = TypeVar("Conn")

CLONE_SUFFIX = "_clone"
_TRACED = ("connect", "set_password", "clone_user", "probe")
# The app secret's opt-in to alternate a user with administrative power (see README, Security model).
ALLOW_PRIVILEGED_KEY = "allow_privileged_user"
NOT_CHECKED = "not checked"  # change_privileges of an engine that cannot tell
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
# The keys the rotator reads: a control character in any of them is refused (a NUL cut libpq's
# connection string short, dropping the password and TLS settings after it). Other keys are
# carried forward unread: there only tab and line breaks pass, for multi-line text such as a PEM.
_READ_KEYS = (
    "engine", "host", "port", "username", "password", "dbname", "masterarn",
    "ssl", "sslmode", "sslrootcert", ALLOW_PRIVILEGED_KEY,
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# libpq's sslmode values the rotator takes: `disable` is "ssl": false; allow and prefer fall back
# to plaintext without a word, so a secret cannot ask for them.
_SSLMODES = ("disable", *TLS_MODES)
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: int() also reads Arabic-Indic digits
# OpenSSL's words when a chain fails RFC 5280's profile, which Python 3.13 checks (VERIFY_X509_STRICT).
_NOT_STRICT_X509 = re.compile(
    r"Missing (?:Authority|Subject) Key Identifier|CA cert not marked critical|does not include key usage"
)
STRICT_X509_HINT = (
    "the server's certificate chain lacks X.509 extensions that Python 3.13 and later require "
    "(RFC 5280: key identifiers, key usage, critical basic constraints): reissue the database's "
    "CA and certificate with them; until then, only a function on "
    "python3.12 or older accepts it"
)


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
    allow_privileged: bool = False
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
    except RecursionError:
        raise SecretFormatError(f"{where} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:
        raise SecretFormatError(f"{where} is not valid JSON: store a JSON object") from None
    if deeper_than(raw, MAX_DEPTH):
        raise SecretFormatError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(raw, dict):
        raise SecretFormatError(f"{where} must be a JSON object with host, username and password")
    _refuse_control_characters(raw, where)
    missing = [k for k in ("engine", "host", "username", "password") if not raw.get(k)]
    if missing:
        raise SecretFormatError(f"{where} lacks {', '.join(repr(k) for k in missing)}")
    for key in ("engine", "host", "username", "password", "dbname", "masterarn"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise SecretFormatError(f"Key {key!r} in {where} must be a string")
    engine = raw["engine"]
    if engine not in engines:
        raise SecretFormatError(
            f"{where} is for engine {shown(engine, 60)}, but this rotator serves {sorted(engines)}: "
            f"{handler_hint}"
        )
    port = _port(raw.get("port", default_port), where)
    mode = _optional_str(raw, "sslmode", where)
    if mode is not None and mode not in _SSLMODES:
        raise SecretFormatError(
            f"Key 'sslmode' in {where} is {shown(mode, 40)}: use verify-full (the default), verify-ca "
            'or require, or put "ssl": false to connect without TLS'
        )
    tls = TlsSettings(
        enabled=_as_bool(raw.get("ssl", True), key="ssl", where=where),
        mode=mode,
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
        allow_privileged=_as_bool(
            raw.get(ALLOW_PRIVILEGED_KEY, False), key=ALLOW_PRIVILEGED_KEY, where=where
        ),
        raw=raw,
    )


def _refuse_control_characters(raw: Mapping[str, Any], where: str) -> None:
    """Control characters in any string of the secret, keys and nested values too; in keys the
    rotator does not read, tab and line breaks are text (a PEM block beside the password)."""

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item_key, item in value.items():
                yield item_key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    for key, value in raw.items():
        pattern = _CONTROL if key in _READ_KEYS else _CONTROL_BUT_LINES
        if any(pattern.search(text) for text in strings({key: value})):
            raise SecretFormatError(
                f"Key {shown(key, 60)} in {where} holds a control character (NUL, escape"
                f"{', newline, tab' if key in _READ_KEYS else ''} ...): remove it"
            )


def _port(value: object, where: str) -> int:
    """A JSON number, or a string of ASCII digits (int() would also read Arabic-Indic ones)."""
    if isinstance(value, str) and _PORT.fullmatch(value):
        port = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        port = value
    else:
        raise SecretFormatError(f"Key 'port' in {where} must be a number (ASCII digits)")
    if not 0 < port < 65536:
        raise SecretFormatError(f"Key 'port' in {where} must be between 1 and 65535")
    return port


def _optional_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise SecretFormatError(f"Key {key!r} in {where} must be a string")


def tls_mode(secret: DatabaseSecret) -> str | None:
    """The TLS mode of a login, in libpq's words; None (plaintext) only when the secret says so.

    The secret's `sslmode`, else ROTATORS_SSLMODE, else verify-full. For engines whose driver
    does not speak libpq's sslmode: `require` encrypts, `verify-ca` checks the chain, and
    `verify-full` checks the chain and the host name.
    """
    if not secret.tls.enabled or secret.tls.mode == "disable":
        return None
    return secret.tls.mode or _environment_mode()


def _environment_mode() -> str:
    """The mode of a secret that names none: ROTATORS_SSLMODE (checked where it is read), else verify-full."""
    return sslmode_setting() or "verify-full"


@dataclass(frozen=True)
class CaBundle:
    """What a verified login trusts: a CA bundle file, or the system store (`path` None).
    `named` tells a choice (a path, or "system" in so many words) from nothing set at all."""

    path: str | None = None
    named: bool = False


def ca_bundle(secret: DatabaseSecret) -> CaBundle:
    """The secret's `sslrootcert`, else ROTATORS_CA_BUNDLE: a path, or `system`."""
    chosen = secret.tls.ca_bundle or ca_bundle_setting()
    return CaBundle(_bundle_path(chosen), named=chosen is not None)


def _bundle_path(chosen: str | None) -> str | None:
    """A named bundle's path; None for the system store (`system`, or nothing named)."""
    return None if chosen in (None, "system") else chosen


def ssl_context(secret: DatabaseSecret) -> ssl.SSLContext | None:
    """The TLS policy of a login as an SSLContext, for drivers that take one; None for plaintext.
    `require` encrypts without checking, `verify-ca` checks the chain, `verify-full` the host
    name too. A CA bundle that cannot be read is an error, never a fallback to the system store.
    A new context each call: for drivers that change the context they are given."""
    mode = tls_mode(secret)
    return None if mode is None else _new_context(ca_bundle(secret).path, mode)


def shared_ssl_context(secret: DatabaseSecret) -> ssl.SSLContext | None:
    """ssl_context(), made once per CA bundle file (as it is now) and mode, for drivers that only
    read the context: loading a bundle the size of RDS's costs ~20 ms of CPU, a seventh of a vCPU
    at 256 MB stretches that to ~140 ms, and a rotation logs in three to five times."""
    mode = tls_mode(secret)
    return None if mode is None else _shared_for(ca_bundle(secret).path, mode)


def prepare_shared_ssl_context() -> None:
    """At INIT: the context of a secret that sets no TLS of its own (the environment's choice, as
    tls_mode() and ca_bundle() make it), so that the first login need not load the bundle."""
    _shared_for(_bundle_path(ca_bundle_setting()), _environment_mode())


def _shared_for(path: str | None, mode: str) -> ssl.SSLContext:
    try:
        found = os.stat(path) if path is not None else None
    except OSError:
        return _new_context(path, mode)  # raises the ConfigurationError that names the bundle
    identity = None if found is None else (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    return _shared_context(path, mode, identity)


@functools.lru_cache(maxsize=8)
def _shared_context(path: str | None, mode: str, identity: Hashable) -> ssl.SSLContext:
    """`identity` (the file's device, inode, size and modification time) keys a bundle replaced in place."""
    return _new_context(path, mode)


def _new_context(path: str | None, mode: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=path)
    except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
        raise ConfigurationError(
            f"The CA bundle {shown(path)} cannot be read ({type(exc).__name__}): fix 'sslrootcert' "
            "in the secret or ROTATORS_CA_BUNDLE"
        ) from None
    context.check_hostname = mode == "verify-full"
    if mode == "require":
        context.verify_mode = ssl.CERT_NONE
    return context


# Unlabelled versions a single-user setSecret tries, newest first, when no labelled one logs in.
RECOVERABLE_VERSIONS = 5

_TLS_STRENGTH = {None: 0, "require": 1, "verify-ca": 2, "verify-full": 3}


def weaker_tls(secret: DatabaseSecret, than: DatabaseSecret) -> bool:
    """Would a login with `secret`'s TLS settings be less protected than with `than`'s? Verifying
    against another CA bundle counts as weaker: it may trust an impostor's certificate."""
    mode, floor = tls_mode(secret), tls_mode(than)
    if _TLS_STRENGTH[mode] < _TLS_STRENGTH[floor]:
        return True
    verified = _TLS_STRENGTH[floor] >= _TLS_STRENGTH["verify-ca"]
    return verified and ca_bundle(secret).path != ca_bundle(than).path


def _log_strategy(secret: DatabaseSecret) -> None:
    logger.append_keys(strategy="alternating_users" if secret.masterarn else "single_user")


def other_user(username: str) -> str:
    """The alternating partner: `app` <-> `app_clone`."""
    if username.endswith(CLONE_SUFFIX) and len(username) > len(CLONE_SUFFIX):
        return username[: -len(CLONE_SUFFIX)]
    return username + CLONE_SUFFIX


def no_weaker(login: DatabaseSecret, floor: DatabaseSecret) -> DatabaseSecret:
    """`login` with `floor`'s TLS settings when its own are weaker (an older version's)."""
    return replace(login, tls=floor.tls) if weaker_tls(login, floor) else login


def address(secret: DatabaseSecret) -> str:
    """host:port/dbname, for messages."""
    return f"{secret.host}:{secret.port}" + (f"/{secret.dbname}" if secret.dbname else "")


def _named_for(cls: type, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` of the base as a method of `cls`, so that its trace names the engine."""

    @functools.wraps(function)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **kwargs)

    method.__qualname__ = f"{cls.__qualname__}.{function.__name__}"
    method.__module__ = cls.__module__
    return method


class DatabaseRotator(Rotator[DatabaseSecret], Generic[Conn]):
    """Single user, or alternating users when the secret names a master secret (`masterarn`)."""

    engine: ClassVar[Engine]  # its registry entry: kind, label, secret engines and defaults come from it
    engines: ClassVar[frozenset[str]]
    default_port: ClassVar[int]
    default_dbname: ClassVar[str]
    max_username_bytes: ClassVar[int]
    excluded_characters: ClassVar[str] = "/@\"'\\ "
    password_length: ClassVar[int] = 32

    label: ClassVar[str] = "the database"  # the engine's name in messages: "PostgreSQL"
    driver_errors: ClassVar[tuple[type[Exception], ...]] = ()  # what its driver raises

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Trace every engine call under the engine's name (the base's test query too), never
        capturing its result or error (either may hold a secret)."""
        super().__init_subclass__(**kwargs)
        if "engine" in cls.__dict__:
            entry = cls.engine
            cls.kind, cls.label, cls.engines = entry.name, entry.label, entry.secret_engines
            cls.default_port, cls.default_dbname = entry.default_port, entry.default_dbname
        traced = {name: cls.__dict__[name] for name in _TRACED if name in cls.__dict__}
        if "probe" not in traced and cls.probe is DatabaseRotator.probe:
            traced["probe"] = _named_for(cls, DatabaseRotator.probe)
        for name, method in traced.items():
            setattr(cls, name, tracer.method(method))

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
    def session_user(self, conn: Conn) -> str | None:
        """Run the test query: the user the session runs as, as the server names it; None when
        the query's answer is not the one it must give."""

    def session_name(self, username: str) -> str:
        """`username` as session_user() names it (Oracle: its stored form)."""
        return username

    def probe(self, conn: Conn, username: str) -> None:
        """The test query runs, and as `username`."""
        if self.session_user(conn) != self.session_name(username):
            raise SecretTestError(f"The test query did not run as {shown(username)}")

    # -- what the master's safety rules ask an engine (alternating users) -------------------
    def exclusive(self, conn: Conn, username: str) -> AbstractContextManager[None]:
        """The server's lock on `username` for the master's checks and change, where the server
        has one (two overlapping runs of setSecret take turns); without it, `user_exists` lets the
        second run adopt what the first created."""
        return nullcontext()

    def user_exists(self, exc: Exception) -> bool:
        """Whether the driver error says that the user being created exists already."""
        return False

    def user_key(self, username: str, secret: DatabaseSecret) -> Hashable:
        """Who `username` of `secret` is to the server: two names with one key are one user."""
        return username

    @abstractmethod
    def admin_power(self, conn: Conn, username: str) -> list[str]:
        """The administrative powers `username` holds, in words (superuser, CREATE USER, DBA ...)."""

    @abstractmethod
    def clone_mismatch(self, conn: Conn, source: str, clone: str) -> list[str]:
        """Why an existing `clone` is not what the rotator makes of `source` (e.g. privileges the
        source lacks); [] when it does not exist or when it is such a clone."""

    @abstractmethod
    def clone_lacks(self, conn: Conn, source: str, clone: str) -> list[str]:
        """What `source` may do that `clone` may not; [] when the clone holds all of it."""

    def master_session(self, master: DatabaseSecret, target: DatabaseSecret) -> AbstractContextManager[Conn]:
        """The master logs in with its own secret's TLS settings, into the target's database."""
        return self.connect(replace(master, dbname=target.dbname), master.username, master.password)

    # -- what `rotators check` asks an engine (optional) ----------------------------------
    def transport(self, conn: Conn, secret: DatabaseSecret) -> str:
        """How the connection is protected, in words: the secret's TLS policy (no engine falls
        back to plaintext), the version the session negotiated and the server, where known."""
        mode = tls_mode(secret)
        if mode is None:
            return "plaintext, as the secret asks"
        verified = "certificate verified" if mode.startswith("verify") else "certificate NOT verified"
        parts = (self.tls_version(conn), f"sslmode={mode}", verified, self.server_name(conn))
        return f"TLS ({', '.join(part for part in parts if part)})"

    def tls_version(self, conn: Conn) -> str | None:
        """The TLS version the session negotiated (TLSv1.3), where the driver tells."""
        return None

    def server_name(self, conn: Conn) -> str | None:
        """What the session says the server is (MariaDB 10.11.6), where the engine knows."""
        return None

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
        return PasswordPolicy(
            length=password_length(self.password_length),
            exclude_characters=exclude_characters(self.excluded_characters),
            exclude_numbers=env_bool("EXCLUDE_NUMBERS", False),
            exclude_punctuation=env_bool("EXCLUDE_PUNCTUATION", False),
            exclude_uppercase=env_bool("EXCLUDE_UPPERCASE", False),
            exclude_lowercase=env_bool("EXCLUDE_LOWERCASE", False),
            require_each_included_type=env_bool("REQUIRE_EACH_INCLUDED_TYPE", True),
        )

    @staticmethod
    def connect_timeout() -> ConnectTimeout:
        """DB_CONNECT_TIMEOUT, parsed by rotators.settings; an engine takes it in its driver's unit."""
        return connect_timeout_setting()

    # -- the driver's errors, worded by the base (Django's DatabaseErrorWrapper) ----------------
    def refused_login(self, exc: Exception) -> bool:
        """Whether the server refused the user name and password (the next staged version may
        log in), rather than failing to serve."""
        return False

    def login_error(self, exc: Exception) -> str | None:
        """Why a failed login is one no staged version can fix (an expired or locked account, a
        password method the rotator does not answer) and what to do; None when it is not one."""
        return None

    def lost_connection(self, exc: Exception) -> bool:
        """Whether a statement failed because the connection did (retry later), not the server."""
        return False

    def error_text(self, exc: Exception) -> str:
        """The driver's own words for `exc` (the base redacts them)."""
        return str(exc)

    def error_hint(self, exc: Exception, login: DatabaseSecret | None) -> str:
        """What to do about `exc`, where the engine knows better (`login`: when logging in)."""
        return ""

    @contextmanager
    def login_errors(
        self, secret: DatabaseSecret, username: str, password: str, *, label: str | None = None
    ) -> Iterator[None]:
        """Around the driver's login: its errors become LoginRefusedError, LoginError or
        DatabaseUnavailableError, worded here, without the password."""
        try:
            yield
        except self.driver_errors as exc:
            raise self.login_failure(exc, secret, username, password, label=label) from None

    def login_failure(
        self, exc: Exception, secret: DatabaseSecret, username: str, password: str, *, label: str | None
    ) -> RotationError:
        """A refused login (the next staged version may log in), one no version can fix, or a
        server that could not be reached (retry later)."""
        label = label or self.label
        if self.refused_login(exc):
            return LoginRefusedError(f"{label} refused the login of {shown(username)}")
        text = self.scrubbed(exc, [password])
        if advice := self.login_error(exc):
            where = address(secret)
            return LoginError(f"Did not log in as {shown(username)} at {where}: {text.rstrip('.')}. {advice}")
        hint = STRICT_X509_HINT if _NOT_STRICT_X509.search(text) else self.error_hint(exc, secret)
        return DatabaseUnavailableError(
            f"Cannot connect to {label} at {address(secret)}: {text}" + (f"; {hint}" if hint else "")
        )

    @contextmanager
    def statement_errors(
        self, *secrets: str, what: str = "the change", hint: str = "", label: str | None = None
    ) -> Iterator[None]:
        """Around statements: the driver's errors become DatabaseUnavailableError (the connection
        failed: retry the step) or PasswordChangeError (the server refused), without `secrets`."""
        try:
            yield
        except self.driver_errors as exc:
            raise self.statement_failure(exc, secrets, what=what, hint=hint, label=label) from None

    def statement_failure(
        self,
        exc: Exception,
        secrets: Iterable[str],
        *,
        what: str = "the change",
        hint: str = "",
        label: str | None = None,
    ) -> RotationError:
        """A lost connection (retry the step) or a refusal, in the server's words and the hints."""
        label = label or self.label
        text = self.scrubbed(exc, secrets)
        if self.lost_connection(exc):
            return DatabaseUnavailableError(f"{label} went away during {what}: {text}; retry the step")
        hints = "; ".join(found for found in (self.error_hint(exc, None), hint) if found)
        failure = UserExistsError if self.user_exists(exc) else PasswordChangeError
        return failure(f"{label} refused {what}: {text}" + (f"; {hints}" if hints else ""))

    def scrubbed(self, exc: Exception, secrets: Iterable[str]) -> str:
        """The driver's words without any of `secrets`."""
        return redact(self.error_text(exc), secrets).strip()

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
                f"User name {shown(username)} is longer than {self.max_username_bytes} bytes, the limit "
                f"of {self.kind}: shorten {shown(current.username)} so that its clone name fits"
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
                f"The AWSPENDING version of {shown(ctx.secret_id)} points at another server, database or "
                "master secret than AWSCURRENT: cancel this rotation and fix the pending version"
            )
        if weaker_tls(pending, current):
            raise TargetMismatchError(
                f"The AWSPENDING version of {shown(ctx.secret_id)} asks for weaker TLS than AWSCURRENT "
                "(ssl, sslmode or sslrootcert): cancel this rotation and fix the pending version"
            )
        if not pending.masterarn and pending.username != current.username:
            raise TargetMismatchError(
                f"The AWSPENDING version of {shown(ctx.secret_id)} names another user than AWSCURRENT "
                "in single-user rotation: cancel this rotation and fix the pending version"
            )
        if pending.masterarn and pending.username != self.partner(current.username):
            raise TargetMismatchError(
                f"The AWSPENDING version of {shown(ctx.secret_id)} names another user than the partner "
                f"of {shown(current.username)} in alternating rotation: cancel this rotation and fix the "
                "pending version"
            )
        return pending

    def _set_as_user(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> None:
        """Log in as the user itself and change its password; fall back only when refused."""
        untried: list[str] = []  # unlabelled versions beyond the bound, for the error
        for label, login in self._single_user_logins(ctx, pending, untried):
            try:
                with self.connect(login, login.username, login.password) as conn:
                    if login.password == pending.password:
                        logger.info("pending already accepted by the database: nothing to set")
                        return
                    ctx.confirm_pending()
                    self.set_password(conn, pending.username, pending.password)
                    logger.info(f"password changed by logging in with {label}")
                    return
            except LoginRefusedError:
                logger.info(f"{label} does not log in: trying the next staged version")
        beyond = f" ({len(untried)} older unlabelled versions were not tried)" if untried else ""
        raise LoginError(
            f"No version of {shown(ctx.secret_id)} (AWSCURRENT, AWSPENDING, AWSPREVIOUS, the "
            f"{RECOVERABLE_VERSIONS} newest unlabelled) logs in as {shown(pending.username)}{beyond}: the "
            "password was changed outside Secrets Manager. `rotators doctor` shows what logs in and the "
            "fix; or reset the password to the AWSCURRENT value and rotate again"
        )

    def _single_user_logins(
        self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret, untried: list[str]
    ) -> Iterator[tuple[str, DatabaseSecret]]:
        """AWSCURRENT does the work; AWSPENDING says it was already done; AWSPREVIOUS recovers
        a half-finished earlier rotation; then versions without a label. Later ones are read only
        when needed. Each logs in with its own TLS settings, never weaker than AWSCURRENT's."""
        current = ctx.current
        yield AWSCURRENT, current
        yield "AWSPENDING", pending
        previous = ctx.previous
        if (
            previous is not None
            and previous.target == pending.target
            and previous.username == pending.username
            and previous.password != current.password
        ):
            yield (
                "AWSPREVIOUS",
                no_weaker(previous, current),
            )
        yield from self._unlabelled_logins(ctx, pending, untried)

    def _unlabelled_logins(
        self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret, untried: list[str]
    ) -> Iterator[tuple[str, DatabaseSecret]]:
        """A rotation abandoned after its setSecret (AWSPENDING taken off by hand, as AWS's advice
        for a stuck rotation goes) left the database on a version that no label names: the newest
        few such versions, for this user on this server. Ids are logged, never values."""
        versions = [v for v in self.store.versions(ctx.secret_id) if not v.stages]  # newest first
        untried += [v.version_id for v in versions[RECOVERABLE_VERSIONS:]]
        for version in versions[:RECOVERABLE_VERSIONS]:
            text = self.store.find_version(ctx.secret_id, version.version_id)
            if text is None:
                continue
            ctx.remember(text)
            try:
                login = self.parse(text, where=f"version {version.version_id} of {shown(ctx.secret_id)}")
            except SecretFormatError:
                continue
            ctx.remember(login.password)
            tried = login.password in (ctx.current.password, pending.password)
            if login.target == pending.target and login.username == pending.username and not tried:
                yield f"unlabelled version {version.version_id}", no_weaker(login, ctx.current)

    def _set_as_master(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> None:
        """The master acts only for a user that AWSCURRENT proves it can log in as (AWS's
        confused-deputy guard), never on itself, and never to hand out more power than that user
        has. Whoever writes the app secret is not trusted with the master."""
        current = ctx.current
        master = self._master(ctx, pending)
        if name := self.master_user_named(current, master):
            raise TargetMismatchError(
                f"{shown(ctx.secret_id)} names {shown(name)}, the master user of "
                f"{shown(pending.masterarn)}, as one of its alternating users: a master never changes "
                "its own password this way; give the application its own user"
            )
        if not self._current_logs_in(ctx, pending):
            return
        with self._as_master(master, pending) as conn:
            try:
                self._check_and_set(ctx, conn, pending)
            except UserExistsError:
                # Another run of this step (a retry that overlapped) created the user first, on a
                # server without a lock for it: its work is checked like any clone, then adopted.
                logger.info(f"{shown(pending.username)} was created meanwhile by another run: checked again")
                self._check_and_set(ctx, conn, pending)
        logger.info(f"password of {shown(pending.username)} set by the master user")

    def _check_and_set(
        self, ctx: RotationContext[DatabaseSecret], conn: Conn, pending: DatabaseSecret
    ) -> None:
        """The safety checks and the change, under the server's lock on the user: a concurrent
        run waits, then checks what the first one made before it acts."""
        current = ctx.current
        with self.exclusive(conn, pending.username):
            admin, drift = self.power_problems(conn, current)
            if drift and self._previous_proves(ctx, pending):
                logger.info(f"AWSPREVIOUS logs in as {shown(pending.username)}: its privileges are put right")
                drift = []
            if admin or drift:
                raise PrivilegeError(
                    f"Alternating rotation of {shown(ctx.secret_id)} refused, nothing changed: "
                    f"{'; '.join(admin + drift)[:600]}. Fix the users, rotate this secret as a single "
                    f'user, or, for a user that is meant to be administrative, put "{ALLOW_PRIVILEGED_KEY}'
                    '": true in the secret (README: Security model)'
                )
            ctx.confirm_pending()
            if pending.username == self.clone_name(current.username):
                self.clone_user(conn, current.username, pending.username, pending.password)
            else:
                self.set_password(conn, pending.username, pending.password)

    # -- the master's safety rules, shared with `rotators check` ---------------------------------
    def master_user_named(self, current: DatabaseSecret, master: DatabaseSecret) -> str | None:
        """The alternating user of `current` that is the master's own user, if any."""
        theirs = self.user_key(master.username, master)
        for name in (current.username, self.partner(current.username)):
            if self.user_key(name, current) == theirs:
                return name
        return None

    def power_problems(self, conn: Conn, current: DatabaseSecret) -> tuple[list[str], list[str]]:
        """(administrative power of the original user, unless the secret opts in; how the clone
        differs from what the rotator makes of it), for the partner of `current` to be set."""
        partner = self.partner(current.username)
        cloning = partner == self.clone_name(current.username)
        source, clone = (current.username, partner) if cloning else (partner, current.username)
        admin = [] if current.allow_privileged else self.admin_power(conn, source)
        drift = self.clone_mismatch(conn, source, clone) if cloning else self.clone_lacks(conn, source, clone)
        return admin, drift

    def _current_logs_in(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> bool:
        """Prove AWSCURRENT logs in as its user; False when there is nothing to do because the
        pending version already logs in (a repeated setSecret after a refused AWSCURRENT)."""
        current = ctx.current
        for label, login in ((AWSCURRENT, current), ("AWSPENDING", pending)):
            try:
                with self.connect(login, login.username, login.password) as conn:
                    self.probe(conn, login.username)
            except (LoginRefusedError, SecretTestError):
                logger.info(f"{label} does not log in as {shown(login.username)}")
                continue
            if login is pending:
                logger.info("pending already accepted by the database: nothing to set")
            return login is current
        raise LoginError(
            f"The AWSCURRENT version of {shown(ctx.secret_id)} does not log in as "
            f"{shown(current.username)}, so the master changes nothing (a master acts only for a "
            "user whose current password is proven): put the working password in AWSCURRENT, then "
            "rotate again"
        )

    def _previous_proves(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> bool:
        """Whether AWSPREVIOUS logs in as the user whose password the master is about to set: then
        the secret already held that user (the rotator's own clone, or the original of the last
        rotation), and the privileges that drifted since are the rotator's to put right. Read only
        when the privileges differ, so the usual rotation pays nothing for it."""
        previous = ctx.previous
        if previous is None or previous.target != pending.target:
            return False
        if self.user_key(previous.username, previous) != self.user_key(pending.username, pending):
            return False
        login = no_weaker(previous, ctx.current)
        try:
            with self.connect(login, login.username, login.password) as conn:
                self.probe(conn, login.username)
        except (LoginRefusedError, SecretTestError):
            return False
        return True

    @contextmanager
    def _as_master(self, master: DatabaseSecret, pending: DatabaseSecret) -> Iterator[Conn]:
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(self.master_session(master, pending))
            except LoginRefusedError:
                raise LoginError(
                    f"The master secret {shown(pending.masterarn)} (AWSCURRENT) does not log in as "
                    f"{shown(master.username)}: fix the master secret, then retry the rotation"
                ) from None
            yield conn

    def _master(self, ctx: RotationContext[DatabaseSecret], pending: DatabaseSecret) -> DatabaseSecret:
        assert pending.masterarn is not None
        where = f"the master secret {shown(pending.masterarn)}"
        try:
            text = self.store.get(pending.masterarn, stage=AWSCURRENT)
        except SecretNotFoundError:
            raise SecretNotFoundError(
                f"{where}, named by 'masterarn' in {shown(ctx.secret_id)}, does not exist or has no "
                "AWSCURRENT value: fix 'masterarn' or create the master secret"
            ) from None
        except Exception as exc:  # deleted, access denied: the SDK's message holds no secret
            raise SecretNotFoundError(
                f"{where}, named by 'masterarn' in {shown(ctx.secret_id)}, cannot be read ({exc}): restore "
                "it or let this rotator read it"
            ) from None
        ctx.remember(text)
        found = self.find_master(text, pending, where=where, app_name=shown(ctx.secret_id))
        ctx.remember(found.secret.password)
        return found.secret

    def find_master(
        self,
        text: str,
        app: DatabaseSecret,
        *,
        where: str,
        app_name: str = "the app secret",
        store: SecretStore | None = None,
    ) -> MasterLogin:
        """The master's login from its secret's AWSCURRENT `text`, and how `app` reaches the master's
        database: the same host and port, or (asking the service, at most once a call) a read
        replica, reader endpoint or reader instance of it. Anything else: TargetMismatchError."""
        assert app.masterarn is not None
        services = Services()
        database = None
        if (managed := _without_host(text)) is not None:
            database = services.tagged(self._tags(app.masterarn, store or self.store), app.masterarn)
            master = self._managed_master(managed, database, app, where)
        else:
            master = self.parse(text, where=where)
        origin = database.origin if database else "the master secret"
        if (master.host.lower(), master.port) == (app.host.lower(), app.port):
            return MasterLogin(master, origin, "the same host")
        database = database or services.named_by(master.host, master.port, master.raw)
        route = services.reader_of(database, app.host, app.port) if database else None
        if route is None:
            raise TargetMismatchError(
                f"{where} points at {clipped(master.host, 200)}:{master.port}, not "
                f"{clipped(app.host, 200)}:{app.port} as {app_name} does: the master secret must name the "
                "same host and port, or the app secret a read replica, reader endpoint or reader "
                "instance of the master's database (README: Master secrets managed by RDS, Aurora and "
                "Redshift)"
            )
        logger.info(f"the app secret's host is {route}: the master changes the password on the writer")
        return MasterLogin(master, origin, route)

    @staticmethod
    def _tags(masterarn: str, store: SecretStore) -> Mapping[str, str]:
        try:
            return store.describe(masterarn).tags
        except RotationError:
            raise
        except Exception as exc:
            if error_code(exc) in DENIED:
                raise ServicePermissionError(
                    f"The function's role may not call secretsmanager:DescribeSecret on the master secret "
                    f"{shown(masterarn)}, which has no 'host': its tags name the database. Grant it "
                    "(template.yaml does for MasterSecretArns), then retry the step"
                ) from None
            raise

    def _managed_master(
        self, value: Mapping[str, Any], database: Database, app: DatabaseSecret, where: str
    ) -> DatabaseSecret:
        """A service-managed master secret holds only username and password: the service gives the
        endpoint and engine. It has no TLS settings: the app secret's are taken where they are no
        weaker than the function's own (ROTATORS_SSLMODE, ROTATORS_CA_BUNDLE), so an app secret can
        ask for more (verify-full) but never less, nor another CA."""
        engine = secret_engine(database.engine)
        if engine not in self.engines:
            raise SecretFormatError(
                f"{where} belongs to {database.arn}, a {shown(database.engine, 60)} database "
                f"({database.origin}), but this rotator serves {sorted(self.engines)}: attach the "
                "rotator for that engine"
            )
        tls = {key: app.raw[key] for key in ("ssl", "sslmode", "sslrootcert") if key in app.raw}
        login = {key: value.get(key) for key in ("username", "password")}
        raw = {"engine": engine, "host": database.writer.host, "port": database.writer.port, **login, **tls}
        master = self.parse(json.dumps(raw), where=where)
        return no_weaker(master, replace(master, tls=TlsSettings()))


@dataclass(frozen=True)
class MasterLogin:
    """The master's login; where its endpoint came from (the secret, or which service call); and
    how the app secret reaches the master's database (the same host, a read replica ...)."""

    secret: DatabaseSecret
    origin: str
    route: str


def _without_host(text: str) -> dict[str, Any] | None:
    """The JSON object, when it has no `host`: the shape of a master secret the service manages."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None  # parse says what is wrong
    return value if isinstance(value, dict) and not value.get("host") else None
